"""Cursors and prepared statements under the shipped policy pack, through the real proxy
as agent:reporting: a read is judged where its rows come back. DECLARE and PREPARE only
name a query; FETCH and EXECUTE are bounded (or not) by the rows they return — the
FETCH count, never more than the cursor query's LIMIT, and EXECUTE's LIMIT argument —
exactly as the SELECT they run would be."""

from __future__ import annotations

import psycopg
import pytest

from pgwarden.stack import local
from tests.integration.stack_fixtures import asyncpg_connect, dsn

CLEAR_EMAIL = "radia.allen42@example.com"  # customer 42's, masked for agent:reporting
READ = "SELECT id, email FROM customers WHERE id < 100 ORDER BY id"


def refusal(conn: psycopg.Connection, sql: str) -> str:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == "42501", caught.value
    return caught.value.diag.message_primary or ""


def assert_masked(rows: list[tuple[object, ...]]) -> None:
    assert rows
    assert CLEAR_EMAIL not in repr(rows)


def test_psycopg_server_side_cursors_read_bounded_rows(stack: local.Stack) -> None:
    with psycopg.connect(dsn(stack, "agent:reporting")) as conn:
        with conn.cursor("batches") as cur:  # DECLARE, then FETCH FORWARD 10, then 100
            cur.execute(f"{READ} LIMIT 50")
            first = cur.fetchmany(10)
            rest = list(cur)
        assert [row[0] for row in first + rest] == list(range(1, 51))
        assert_masked(first + rest)
        with conn.cursor("everything") as cur:  # FETCH FORWARD ALL of LIMIT $2, bound to 30
            query = "SELECT id, email FROM customers WHERE id < %s ORDER BY id LIMIT %s"
            cur.execute(query, (100, 30))
            rows = cur.fetchall()
        assert len(rows) == 30
        assert_masked(rows)
        conn.rollback()
        with conn.cursor("unbounded") as cur:  # no LIMIT: FETCH ALL returns every match
            cur.execute(READ)
            with pytest.raises(psycopg.Error) as caught:
                cur.fetchall()
        assert caught.value.sqlstate == "42501"
        assert "unbounded read (no LIMIT)" in str(caught.value)


def test_sql_cursors_are_judged_at_fetch(stack: local.Stack) -> None:
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        conn.execute(f"DECLARE k CURSOR WITH HOLD FOR {READ}")
        rows = conn.execute("FETCH 10 FROM k").fetchall()
        assert [row[0] for row in rows] == list(range(1, 11))
        assert_masked(rows)
        assert "unbounded read (no LIMIT)" in refusal(conn, "FETCH ALL FROM k")
        assert "unbounded read (LIMIT 5000 above 100)" in refusal(conn, "FETCH 5000 FROM k")
        assert conn.execute("MOVE 20 IN k").statusmessage == "MOVE 20"
        assert conn.execute("FETCH 1 FROM k").fetchall()[0][0] == 31
        conn.execute("CLOSE k")
        # No WHERE: every customer, however few rows each FETCH returns.
        conn.execute("DECLARE everyone CURSOR WITH HOLD FOR SELECT id, email FROM customers")
        assert "unbounded read (no WHERE clause)" in refusal(conn, "FETCH 10 FROM everyone")
        conn.execute("CLOSE everyone")


def test_sql_prepared_statements_are_judged_at_execute(stack: local.Stack) -> None:
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        conn.execute(
            "PREPARE q(int, int) AS"
            " SELECT id, email FROM customers WHERE id < $1 ORDER BY id LIMIT $2"
        )
        rows = conn.execute("EXECUTE q(100, 10)").fetchall()
        assert [row[0] for row in rows] == list(range(1, 11))
        assert_masked(rows)
        assert "unbounded read (LIMIT 5000 above 100)" in refusal(conn, "EXECUTE q(100, 5000)")
        conn.execute(f"PREPARE all_of_them AS {READ}")
        assert "unbounded read (no LIMIT)" in refusal(conn, "EXECUTE all_of_them")


async def test_asyncpg_cursor_reads_in_prefetched_batches(stack: local.Stack) -> None:
    conn = await asyncpg_connect(stack, "agent:reporting")
    try:
        async with conn.transaction():
            query = "SELECT id, email FROM customers WHERE id < $1 ORDER BY id LIMIT 50"
            rows = [tuple(r) async for r in conn.cursor(query, 100, prefetch=20)]
        assert [row[0] for row in rows] == list(range(1, 51))
        assert_masked(rows)
    finally:
        await conn.close()
