"""Masks and row limits enforced on the wire by the real proxy, seen by psycopg (text
format) and asyncpg (binary format). The decisions come from the proxy's local decision
point here; tests/integration/test_masking_corpus.py drives the same engine from the
policy pack."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import psycopg
import pytest
from psycopg import errors

from tests.integration.conftest import TEST_DB, ProxyUnderTest

SECRET_EMAIL = "zelda.sentinel@example.org"
SECRET_CARD = "4111111111119876"


@pytest.fixture(scope="module")
def people(proxy_db: str, make_proxy: Callable[..., ProxyUnderTest]) -> ProxyUnderTest:
    proxy = make_proxy(
        '[decision.mask]\n"public.people.email" = "partial_email"\n'
        '"public.people.card" = "last4"\n"public.people.born" = "null"\n',
        name="masking-proxy",
    )
    proxy.cluster.psql(
        "SET ROLE pgwarden_proxy; DROP TABLE IF EXISTS people;"
        "CREATE TABLE people (id int PRIMARY KEY, email text, card varchar(19), born date,"
        " nick text);"
        f"INSERT INTO people VALUES (1, '{SECRET_EMAIL}', '{SECRET_CARD}', '1990-01-02', 'z'),"
        " (2, NULL, NULL, NULL, 'n');",
        dbname=TEST_DB,
    )
    return proxy


def test_text_format_masks(people: ProxyUnderTest) -> None:
    with psycopg.connect(people.dsn()) as conn:
        rows = conn.execute(
            "SELECT id, email, card, born, nick FROM people ORDER BY id", prepare=False
        ).fetchall()
    assert rows == [
        (1, "z***@example.org", "************9876", None, "z"),
        (2, None, None, None, "n"),
    ]


def test_binary_format_masks_extended_protocol(people: ProxyUnderTest) -> None:
    with psycopg.connect(people.dsn()) as conn:
        rows = conn.execute(
            "SELECT email, card, born FROM people WHERE id = %s", [1], binary=True
        ).fetchall()
    assert rows == [("z***@example.org", "************9876", None)]


async def test_asyncpg_binary_masks(people: ProxyUnderTest) -> None:
    conn = await asyncpg.connect(people.dsn())
    try:
        stmt = await conn.prepare("SELECT email, card, born, id FROM people ORDER BY id")
        rows = [tuple(r) for r in await stmt.fetch()]
        rows_again = [tuple(r) for r in await stmt.fetch()]  # executed without a Describe
    finally:
        await conn.close()
    assert (
        rows
        == rows_again
        == [("z***@example.org", "************9876", None, 1), (None, None, None, 2)]
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT lower(email) FROM people",
        "SELECT email || '' FROM people",
        "SELECT people FROM people",
        "SELECT row_to_json(p) FROM people p",
        "SELECT email::bytea FROM people",
        "SELECT string_agg(email, ',') FROM people",
        "SELECT (SELECT email FROM people WHERE id = 1)",
        "WITH c AS (SELECT card AS x FROM people) SELECT x FROM c",
    ],
)
def test_derived_outputs_never_show_the_value(people: ProxyUnderTest, sql: str) -> None:
    with psycopg.connect(people.dsn()) as conn:
        try:
            received = repr(conn.execute(sql).fetchall())
        except errors.InsufficientPrivilege:
            received = "refused"
    assert "zelda" not in received
    assert SECRET_CARD not in received


def test_copy_is_refused_when_masks_apply(people: ProxyUnderTest) -> None:
    def copy_out(cur: psycopg.Cursor[tuple[object, ...]]) -> list[object]:
        with cur.copy("COPY people TO STDOUT") as copy:
            return list(copy)

    with (
        psycopg.connect(people.dsn()) as conn,
        conn.cursor() as cur,
        pytest.raises(errors.InsufficientPrivilege, match="cannot be applied to COPY"),
    ):
        copy_out(cur)


@pytest.fixture(scope="module")
def limited(proxy_db: str, make_proxy: Callable[..., ProxyUnderTest]) -> ProxyUnderTest:
    return make_proxy(name="limit-proxy", decision_settings="row_limit = 5\n")


def assert_limit_error(exc: BaseException) -> None:
    assert isinstance(exc, psycopg.Error)
    assert exc.sqlstate == "54000"
    assert "row limit of 5 rows reached" in str(exc)


def test_row_limit_simple_protocol(limited: ProxyUnderTest) -> None:
    with psycopg.connect(limited.dsn(), autocommit=True) as conn:
        assert len(conn.execute("SELECT * FROM items LIMIT 5", prepare=False).fetchall()) == 5
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT * FROM items", prepare=False).fetchall()
        assert_limit_error(info.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_row_limit_extended_protocol(limited: ProxyUnderTest) -> None:
    with psycopg.connect(limited.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT * FROM items WHERE id > %s", [0], binary=True).fetchall()
        assert_limit_error(info.value)


def test_row_limit_with_a_server_side_cursor(limited: ProxyUnderTest) -> None:
    with psycopg.connect(limited.dsn()) as conn, conn.cursor(name="big") as cur:
        cur.execute("SELECT id FROM items ORDER BY id")
        with pytest.raises(psycopg.Error) as info:
            cur.fetchmany(50)
        assert_limit_error(info.value)


async def test_row_limit_asyncpg_cursor_reads_in_chunks(limited: ProxyUnderTest) -> None:
    conn = await asyncpg.connect(limited.dsn())
    got: list[int] = []

    async def read_all() -> None:
        async with conn.transaction():
            async for record in conn.cursor("SELECT id FROM items ORDER BY id", prefetch=2):
                got.append(record["id"])

    try:
        with pytest.raises(asyncpg.PostgresError) as info:
            await read_all()
        assert info.value.sqlstate == "54000"
    finally:
        await conn.close()
    assert got == [1, 2, 3, 4]  # chunks of 2 from one portal: the limit counts them all


@pytest.fixture(scope="module")
def detecting(proxy_db: str, make_proxy: Callable[..., ProxyUnderTest]) -> ProxyUnderTest:
    return make_proxy(
        name="detect-proxy", decision_settings='detect = ["email", "card_number", "ssn"]\n'
    )


def test_detectors_redact_unclassified_text_in_both_formats(detecting: ProxyUnderTest) -> None:
    sql = (
        "SELECT 'write to ' || %s || ' or call' AS note, %s::text AS card, "
        "%s AS ssn, 'order 4111111111111112' AS not_a_card"
    )
    params = ["zed@example.net", "4000 0566 5566 5556", "987-65-4329"]
    with psycopg.connect(detecting.dsn()) as conn:
        text_rows = conn.execute(sql, params).fetchall()
        binary_rows = conn.execute(sql, params, binary=True).fetchall()
    assert (
        text_rows
        == binary_rows
        == [("write to [redacted] or call", "[redacted]", "[redacted]", "order 4111111111111112")]
    )
