"""A view over a classified table created after the proxy read the schema catalog (as a
migration run directly against PostgreSQL would): until the proxy knows it, its columns
have no lineage to mask, so agent:reporting is refused; the refusal makes the proxy read
the catalog again, and a retry then returns the view's e-mails masked."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from pgwarden.stack import local
from tests.integration.stack_fixtures import dsn

QUERY = "SELECT id, email FROM contact_book WHERE id = 42 LIMIT 1"
UNKNOWN = "public.contact_book is not in the proxy's schema catalog"


@pytest.fixture
def contact_book(stack: local.Stack) -> Iterator[str]:
    # The proxy read the catalog when its first session began; this view is newer.
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        conn.execute("SELECT 1")
    stack.cluster.psql(
        "CREATE VIEW contact_book AS SELECT id, email, ssn FROM customers;"
        " GRANT SELECT ON contact_book TO shop_reporting",
        dbname="shop",
    )
    with psycopg.connect(stack.cluster.dsn("shop")) as direct:
        row = direct.execute("SELECT email FROM customers WHERE id = 42").fetchone()
    assert row is not None
    yield str(row[0])
    stack.cluster.psql("DROP VIEW contact_book", dbname="shop")


def test_a_view_created_after_the_catalog_is_refused_then_masked(
    stack: local.Stack, contact_book: str
) -> None:
    refusals: list[psycopg.Error] = []
    rows: list[tuple[object, ...]] = []
    deadline = time.monotonic() + 20  # the proxy reads a catalog at most every 5 s
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        while not rows and time.monotonic() < deadline:
            try:
                rows = conn.execute(QUERY).fetchall()
            except psycopg.Error as exc:
                refusals.append(exc)
                time.sleep(0.05)
    assert rows, "the proxy never read the catalog again"
    assert {(e.sqlstate, UNKNOWN in str(e)) for e in refusals} == {("42501", True)}
    assert refusals  # the first attempt named a relation the proxy did not know
    ((customer, email),) = rows
    assert customer == 42
    assert email != contact_book
    assert email == contact_book[0] + "***@" + contact_book.split("@")[1]
