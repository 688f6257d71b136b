"""Names resolved when the server resolves them. A schema ``staging`` holds an unclassified
``customers`` table beside the classified ``public.customers``: a statement the proxy judges
under one search path and the server runs under the other reads public.customers unmasked.
Each way of getting there is run directly first (to show the server reads
public.customers), then through the real proxy as agent:reporting, where it is refused."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import psycopg
import pytest

from pgwarden.stack import local
from tests.integration.stack_fixtures import asyncpg_connect, dsn, until_allowed

QUERY = "SELECT email FROM customers WHERE id = 42 LIMIT 1"
STAGED = "staging@example.com"


@pytest.fixture(scope="module")
def clear_email(stack: local.Stack) -> Iterator[str]:
    stack.cluster.psql(
        "CREATE SCHEMA staging; GRANT USAGE ON SCHEMA staging TO shop_reporting;"
        " CREATE TABLE staging.customers (id int, email text);"
        f" INSERT INTO staging.customers VALUES (42, '{STAGED}');"
        " GRANT SELECT ON staging.customers TO shop_reporting",
        dbname="shop",
    )
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        # until the proxy's catalog has the new table
        assert until_allowed(conn, "SELECT email FROM staging.customers LIMIT 1") == [(STAGED,)]
    with psycopg.connect(stack.cluster.dsn("shop")) as direct:
        row = direct.execute("SELECT email FROM public.customers WHERE id = 42").fetchone()
    assert row is not None
    yield str(row[0])
    stack.cluster.psql("DROP SCHEMA staging CASCADE", dbname="shop")


def test_an_execute_under_another_search_path_than_its_prepare_is_refused(
    stack: local.Stack, clear_email: str
) -> None:
    script = [
        "SET search_path = staging",
        f"PREPARE p AS {QUERY}",
        "SET search_path = public",
    ]
    with psycopg.connect(stack.cluster.dsn("shop"), autocommit=True) as direct:
        for sql in script:
            direct.execute(sql)
        # The server analyzes p again under the new path: public.customers.
        assert direct.execute("EXECUTE p").fetchall() == [(clear_email,)]
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        for sql in script:
            conn.execute(sql)
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("EXECUTE p")
        assert caught.value.sqlstate == "42501"
        assert "EXECUTE could not be resolved" in str(caught.value)
        # PREPAREd again under the path it runs under, it is judged and masked.
        conn.execute(f"PREPARE q AS {QUERY}")
        assert conn.execute("EXECUTE q").fetchall() != [(clear_email,)]


async def portal_bound_then_moved(connection: asyncpg.Connection) -> list[tuple[object, ...]]:
    """A cursor (a named portal) bound under public, read after SET LOCAL staging."""
    async with connection.transaction():
        await connection.execute("SET LOCAL search_path = public")
        cursor = await (await connection.prepare(QUERY)).cursor()
        await connection.execute("SET LOCAL search_path = staging")
        return [tuple(r) for r in await cursor.fetch(1)]


async def test_a_portal_bound_under_another_search_path_is_refused(
    stack: local.Stack, clear_email: str
) -> None:
    direct = await asyncpg.connect(stack.cluster.dsn("shop"))
    try:
        assert await portal_bound_then_moved(direct) == [(clear_email,)]  # as bound
    finally:
        await direct.close()
    conn = await asyncpg_connect(stack, "agent:reporting")
    try:
        with pytest.raises(asyncpg.PostgresError, match="was bound under another search_path"):
            await portal_bound_then_moved(conn)
    finally:
        await conn.close()


def pipelined(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    conn.execute("SET search_path = staging")
    with conn.pipeline():
        conn.execute("SET search_path = public")
        cursor = conn.execute(QUERY)
    return cursor.fetchall()


def test_a_statement_pipelined_behind_a_change_of_search_path_is_refused(
    stack: local.Stack, clear_email: str
) -> None:
    with psycopg.connect(stack.cluster.dsn("shop"), autocommit=True) as direct:
        assert pipelined(direct) == [(clear_email,)]  # the SET ran first
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match="may change what names refer to"):
            pipelined(conn)
        # Sent once the SET's results are in, it is judged under public and masked.
        (masked,) = conn.execute(QUERY).fetchall()
        assert masked != (clear_email,)
        assert str(masked[0]).endswith("@" + clear_email.split("@")[1])


@pytest.mark.usefixtures("clear_email")
@pytest.mark.parametrize(
    ("setting", "expected"), [("public", "masked"), ("staging, public", STAGED)]
)
def test_a_session_starts_under_the_search_path_its_role_has(
    stack: local.Stack, clear_email: str, setting: str, expected: str
) -> None:
    """ALTER ROLE ... SET search_path decides where a session's names start: the server
    does not report it. With the role at "public" and a schema named after the role
    (the default path's "$user") holding another customers, the proxy judged
    shop_reporting.customers and the server read public.customers, unmasked."""
    stack.cluster.psql(
        "CREATE SCHEMA shop_reporting; GRANT USAGE ON SCHEMA shop_reporting TO shop_reporting;"
        " CREATE TABLE shop_reporting.customers (id int, email text);"
        " INSERT INTO shop_reporting.customers VALUES (42, 'own@example.com');"
        " GRANT SELECT ON shop_reporting.customers TO shop_reporting;"
        f" ALTER ROLE shop_reporting IN DATABASE shop SET search_path = {setting}",
        dbname="shop",
    )
    try:
        with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
            # until the proxy's catalog has the new schema
            until_allowed(conn, "SELECT email FROM shop_reporting.customers LIMIT 1")
        with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
            (email,) = conn.execute(QUERY).fetchall()
        if expected == "masked":
            assert email[0] == clear_email[0] + "***@" + clear_email.split("@")[1]
        else:
            assert email == (expected,)
    finally:
        stack.cluster.psql(
            "ALTER ROLE shop_reporting IN DATABASE shop RESET search_path;"
            " DROP SCHEMA shop_reporting CASCADE",
            dbname="shop",
        )
