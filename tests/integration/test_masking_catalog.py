"""Views changed directly in PostgreSQL (as a migration would) after the proxy read the
schema catalog. A new view has no lineage to mask until the proxy knows it: agent:reporting
is refused, the refusal makes the proxy read the catalog again, and a retry returns the
view's e-mails masked. A view dropped and created again over another column is followed
by the sessions already open once the catalog is ``catalog_ttl_s`` old (1 s here). A table
that inherits from customers (a partition is the same in the catalog) holds customers'
rows: it is classified and masked as customers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.stack import local
from tests.integration.stack_fixtures import dsn, running_stack, until_allowed, until_refused

QUERY = "SELECT id, email FROM contact_book WHERE id = 42 LIMIT 1"
UNKNOWN = "public.contact_book is not in the proxy's schema catalog"


@pytest.fixture(scope="module")
def stack(policy_copy: Path) -> Iterator[local.Stack]:
    with running_stack(policy_copy, "catalog_ttl_s = 1") as running:
        yield running


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
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        rows = until_allowed(conn, QUERY, refusals)
    assert rows, "the proxy never read the catalog again"
    assert {(e.sqlstate, UNKNOWN in str(e)) for e in refusals} == {("42501", True)}
    assert refusals  # the first attempt named a relation the proxy did not know
    ((customer, email),) = rows
    assert customer == 42
    assert email != contact_book
    assert email == contact_book[0] + "***@" + contact_book.split("@")[1]


def test_a_view_redefined_over_a_secret_is_followed_by_an_open_session(
    stack: local.Stack,
) -> None:
    """contact_dates returns created_at; dropped and created again, its created_at is the
    SSN. The reporting session that read it before stays open: within catalog_ttl_s the
    proxy follows the new definition, and the secret is refused, not returned."""
    query = "SELECT created_at FROM contact_dates WHERE id = 42 LIMIT 1"
    stack.cluster.psql(
        "CREATE VIEW contact_dates AS SELECT id, created_at FROM customers;"
        " GRANT SELECT ON contact_dates TO shop_reporting",
        dbname="shop",
    )
    try:
        with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
            assert until_allowed(conn, query)  # once the proxy knows the view
            stack.cluster.psql(
                "DROP VIEW contact_dates; CREATE VIEW contact_dates AS"
                " SELECT id, ssn AS created_at FROM customers;"
                " GRANT SELECT ON contact_dates TO shop_reporting",
                dbname="shop",
            )
            refusal = until_refused(conn, query)
        assert "public.customers.ssn is secret and may not be read" in refusal
    finally:
        stack.cluster.psql("DROP VIEW IF EXISTS contact_dates", dbname="shop")


def test_an_inheritance_child_of_customers_is_masked_as_customers(stack: local.Stack) -> None:
    stack.cluster.psql(
        "CREATE TABLE customers_archive (archived_at timestamptz) INHERITS (customers);"
        " INSERT INTO customers_archive SELECT c.*, now() FROM customers c WHERE id = 42;"
        " GRANT SELECT ON customers_archive TO shop_reporting",
        dbname="shop",
    )
    try:
        with psycopg.connect(stack.cluster.dsn("shop")) as direct:
            row = direct.execute("SELECT email FROM customers WHERE id = 42").fetchone()
        assert row is not None
        email = str(row[0])
        with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
            rows = until_allowed(
                conn, "SELECT id, email FROM customers_archive WHERE id = 42 LIMIT 1"
            )
            assert rows == [(42, email[0] + "***@" + email.split("@")[1])]
            secret = "SELECT ssn FROM customers_archive WHERE id = 42 LIMIT 1"
            with pytest.raises(psycopg.Error, match=r"public\.customers\.ssn is secret"):
                conn.execute(secret)
            star = "SELECT * FROM customers_archive WHERE id = 42 LIMIT 1"
            with pytest.raises(psycopg.Error, match="SELECT \\* of classified relation"):
                conn.execute(star)
    finally:
        stack.cluster.psql("DROP TABLE IF EXISTS customers_archive", dbname="shop")
