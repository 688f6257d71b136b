"""Issue 3, acceptance 2: a refused statement gives 42501 with the reason and the decision
id in simple, extended and pipelined modes; the connection stays usable; what follows it
up to Sync is skipped exactly as PostgreSQL skips after an error. Each scenario runs twice
— through the proxy with a refused statement, and direct with a statement that fails on
the server — and the client must observe the same thing."""

from __future__ import annotations

import re

import asyncpg
import psycopg
import pytest
from psycopg import errors

from tests.integration.conftest import TEST_DB, ProxyUnderTest

REFUSED = "SELECT secret FROM forbidden_table"  # on the test deny-list
FAILS = "SELECT 1/0"  # fails on the server
DECISION_ID = re.compile(r"decision_id=[0-9a-f]{32}")


def direct(proxy: ProxyUnderTest) -> str:
    return proxy.cluster.dsn(TEST_DB, login=proxy.cluster.proxy_login) + "?sslmode=disable"


def assert_refusal(exc: BaseException) -> None:
    assert isinstance(exc, errors.InsufficientPrivilege)
    assert exc.sqlstate == "42501"
    assert "forbidden_table" in (exc.diag.message_primary or "")
    assert DECISION_ID.fullmatch(exc.diag.message_detail or "")


@pytest.fixture
def table(proxy: ProxyUnderTest) -> str:
    proxy.cluster.psql(
        "DROP TABLE IF EXISTS marks; CREATE TABLE marks (v text);"
        "ALTER TABLE marks OWNER TO pgwarden_proxy;",
        dbname=TEST_DB,
    )
    return "marks"


def marks(proxy: ProxyUnderTest) -> list[str]:
    out = proxy.cluster.psql("SELECT v FROM marks ORDER BY v", dbname=TEST_DB)
    return out.split()


def test_simple_protocol_refusal(proxy: ProxyUnderTest) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as info:
            conn.execute(REFUSED, prepare=False)
        assert_refusal(info.value)
        # psql-style simple protocol: a multi-statement string is refused whole.
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT 1; " + REFUSED)
        assert conn.execute("SELECT 'usable'").fetchone() == ("usable",)


def test_extended_protocol_refusal(proxy: ProxyUnderTest) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as info:
            conn.execute(REFUSED + " WHERE secret <> %s", ["x"])  # params: extended protocol
        assert_refusal(info.value)
        assert conn.execute("SELECT %s::text", ["usable"]).fetchone() == ("usable",)


async def test_asyncpg_prepared_refusal(proxy: ProxyUnderTest) -> None:
    conn = await asyncpg.connect(proxy.dsn())
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
            await conn.fetch(REFUSED)
        assert DECISION_ID.fullmatch(info.value.detail or "")
        assert await conn.fetchval("SELECT 'usable'") == "usable"
    finally:
        await conn.close()


async def test_a_statement_prepared_on_its_own_is_refused_before_the_server_parses_it(
    proxy: ProxyUnderTest,
) -> None:
    """asyncpg's prepare() is Parse, Describe, Sync: the server would parse the statement
    and describe its columns without any Execute. A refused one never reaches it."""
    conn = await asyncpg.connect(proxy.dsn())
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
            await conn.prepare(REFUSED + " WHERE secret <> $1")
        assert DECISION_ID.fullmatch(info.value.detail or "")
        last = proxy.cluster.psql(f"SELECT query FROM pg_stat_activity WHERE pid = {int(pid)}")
        assert last.strip() == "SELECT pg_backend_pid()"
        prepared = await conn.fetch("SELECT statement FROM pg_prepared_statements")
        assert not [r for r in prepared if REFUSED in r["statement"]]
        # An allowed one is prepared, LIMIT $1 included, and each execution is decided.
        statement = await conn.prepare("SELECT n FROM generate_series(1, 9) n LIMIT $1")
        assert [r["n"] for r in await statement.fetch(2)] == [1, 2]
    finally:
        await conn.close()


def pipeline_scenario(dsn: str, failing: str) -> list[str]:
    """First, failing, third statement in one pipeline (one Sync); what the client sees."""
    seen: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            with conn.pipeline():
                conn.execute("INSERT INTO marks VALUES (%s)", ["first"])
                conn.execute(failing, prepare=False)
                conn.execute("INSERT INTO marks VALUES (%s)", ["third"])
        except psycopg.Error as exc:
            seen.append(type(exc).__name__)
        seen.append(str(conn.execute("SELECT 'after'").fetchone()))
    return seen


@pytest.mark.usefixtures("table")
def test_pipeline_refusal_skips_to_sync_like_postgresql(proxy: ProxyUnderTest) -> None:
    through = pipeline_scenario(proxy.dsn(), REFUSED)
    after_proxy = marks(proxy)
    proxy.cluster.psql("TRUNCATE marks", dbname=TEST_DB)
    direct_seen = pipeline_scenario(direct(proxy), FAILS)
    after_direct = marks(proxy)
    # The error class differs (42501 vs 22012); what ran and what was skipped must not.
    assert through == ["InsufficientPrivilege", "('after',)"]
    assert direct_seen == ["DivisionByZero", "('after',)"]
    assert after_proxy == after_direct


def block_scenario(dsn: str, failing: str) -> list[str]:
    seen: list[str] = []
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO marks VALUES ('in-block')")
        for sql in (failing, "SELECT 1"):
            try:
                conn.execute(sql, prepare=False)
            except psycopg.Error as exc:
                seen.append(f"{exc.sqlstate}")
        seen.append(str(conn.info.transaction_status.name))
        conn.execute("COMMIT")  # in a failed block PostgreSQL rolls back
        seen.append(str(conn.execute("SELECT count(*) FROM marks").fetchone()))
    return seen


@pytest.mark.usefixtures("table")
def test_refusal_inside_a_transaction_block_fails_it_like_postgresql(
    proxy: ProxyUnderTest,
) -> None:
    through = block_scenario(proxy.dsn(), REFUSED)
    direct_seen = block_scenario(direct(proxy), FAILS)
    assert through == ["42501", "25P02", "INERROR", "(0,)"]
    assert direct_seen == ["22012", "25P02", "INERROR", "(0,)"]


@pytest.mark.parametrize("binary", [False, True])
def test_refused_statement_text_never_reaches_the_server(
    proxy: ProxyUnderTest,
    binary: bool,
) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert pid is not None
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(REFUSED, binary=binary, prepare=False)
        last = proxy.cluster.psql(f"SELECT query FROM pg_stat_activity WHERE pid = {int(pid[0])}")
    assert last.strip() == "SELECT pg_backend_pid()"


@pytest.mark.parametrize("prepare", [False, True])
def test_refused_write_never_runs(proxy: ProxyUnderTest, prepare: bool) -> None:
    """A refused write never runs, executed directly or prepared first (psycopg's Parse,
    Sync, then Bind, Execute: both are decided)."""
    count = "SELECT count(*) FROM forbidden_table"
    before = proxy.cluster.psql(count, dbname=TEST_DB)
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        for _ in range(2):  # psycopg prepares on the second run with prepare=True
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("INSERT INTO forbidden_table VALUES (%s)", ["x"], prepare=prepare)
    assert proxy.cluster.psql(count, dbname=TEST_DB) == before
