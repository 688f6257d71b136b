"""Issue 3, acceptance 1: real clients get the same results through the proxy as direct."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import asyncpg
import psycopg
import pytest
from psycopg import sql

from pgwarden.stack.postgres import PostgresCluster
from tests.integration.conftest import TEST_DB, ProxyUnderTest


def direct_dsn(cluster: PostgresCluster, dbname: str = TEST_DB) -> str:
    return cluster.dsn(dbname, login=cluster.proxy_login)


def run_tool(
    cluster: PostgresCluster,
    tool: str,
    args: list[str],
    *,
    env: dict[str, str],
    stdin: str | None = None,
) -> str:
    out = subprocess.run(
        [str(cluster.bindir / tool), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, f"{tool} {args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def psql_env_direct(cluster: PostgresCluster) -> dict[str, str]:
    return {
        "PGHOST": cluster.host,
        "PGPORT": str(cluster.port),
        "PGUSER": "pgwarden_proxy",
        "PGPASSWORD": cluster.proxy_login.password,
        "PGDATABASE": TEST_DB,
        "PGSSLMODE": "disable",
    }


def psql_env_proxy(proxy: ProxyUnderTest, subject: str = "agent:reporting") -> dict[str, str]:
    return {
        "PGHOST": proxy.host,
        "PGPORT": str(proxy.port),
        "PGUSER": subject,
        "PGPASSWORD": proxy.tokens[subject],
        "PGDATABASE": TEST_DB,
        "PGSSLMODE": "disable",
    }


SCRIPT = """\
\\set ON_ERROR_STOP 1
CREATE TEMP TABLE t (a int, b text);
INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20) g;
SELECT count(*), sum(a) FROM t;
BEGIN;
UPDATE t SET b = 'x' WHERE a < 5;
SELECT a, b FROM t WHERE a < 7 ORDER BY a;
ROLLBACK;
SELECT a, b FROM t WHERE a < 3 ORDER BY a; SELECT 'multi', 2;
"""


def test_psql_command_and_script_match_direct(proxy: ProxyUnderTest) -> None:
    cluster = proxy.cluster
    query = ["-X", "-A", "-c", "SELECT id, name, price FROM items ORDER BY id LIMIT 5"]
    assert run_tool(cluster, "psql", query, env=psql_env_proxy(proxy)) == run_tool(
        cluster, "psql", query, env=psql_env_direct(cluster)
    )
    script = ["-X", "-A", "-f", "-"]
    through = run_tool(cluster, "psql", script, env=psql_env_proxy(proxy), stdin=SCRIPT)
    direct = run_tool(cluster, "psql", script, env=psql_env_direct(cluster), stdin=SCRIPT)
    assert through == direct
    assert "multi|2" in through


def test_psql_copy_both_ways(proxy: ProxyUnderTest, tmp_path: Path) -> None:
    cluster = proxy.cluster
    out_file = tmp_path / "items.csv"
    env = psql_env_proxy(proxy)
    run_tool(cluster, "psql", ["-X", "-c", f"\\copy items TO '{out_file}' CSV"], env=env)
    # No ORDER BY in COPY: other tests update rows, so sort by id before comparing.
    lines = sorted(out_file.read_text().splitlines(), key=lambda line: int(line.split(",")[0]))
    assert len(lines) == 100
    assert lines[0] == "1,item 1,1.50"
    script = (
        f"CREATE TABLE IF NOT EXISTS items_copy (LIKE items);\nTRUNCATE items_copy;\n"
        f"\\copy items_copy FROM '{out_file}' CSV\n"
        "SELECT count(*), sum(price) FROM items_copy;\n"
    )
    result = run_tool(cluster, "psql", ["-X", "-A", "-t", "-f", "-"], env=env, stdin=script)
    assert result.strip().splitlines()[-1] == "100|7575.00"


def test_psycopg_pipeline_binary_cursors_copy(proxy: ProxyUnderTest) -> None:
    def scenario(dsn: str) -> list[object]:
        seen: list[object] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            with conn.pipeline():
                cur1 = conn.execute("SELECT %s::int + 1", [41])
                cur2 = conn.execute("SELECT name FROM items WHERE id = %s", [7])
                cur3 = conn.execute("SELECT count(*) FROM items", binary=True)
            seen += [cur1.fetchone(), cur2.fetchone(), cur3.fetchone()]
            with conn.cursor(binary=True) as cur:
                cur.execute(
                    "SELECT id, price, now() > '2000-01-01'::date FROM items "
                    "WHERE id <= %s ORDER BY id",
                    [3],
                )
                seen.append(cur.fetchall())
            with conn.transaction(), conn.cursor(name="server_side") as named:
                named.itersize = 7
                named.execute("SELECT id FROM items ORDER BY id")
                seen.append(sum(r[0] for r in named))
            with conn.cursor() as cur:
                with cur.copy("COPY (SELECT id, name FROM items WHERE id <= 3) TO STDOUT") as cp:
                    seen.append(b"".join(bytes(b) for b in cp))
                conn.execute("CREATE TEMP TABLE c (a int, b text)")
                with cur.copy("COPY c FROM STDIN") as cp:
                    for i in range(1000):
                        cp.write_row((i, f"row {i}"))
                seen.append(conn.execute("SELECT count(*), sum(a) FROM c").fetchone())
        return seen

    assert scenario(proxy.dsn()) == scenario(direct_dsn(proxy.cluster))


def test_psycopg_listen_notify(proxy: ProxyUnderTest) -> None:
    with (
        psycopg.connect(proxy.dsn(), autocommit=True) as listener,
        psycopg.connect(proxy.dsn(), autocommit=True) as notifier,
    ):
        listener.execute("LISTEN pgwarden_test")
        notifier.execute("SELECT pg_notify('pgwarden_test', 'hello')")
        received = next(listener.notifies(timeout=10))
    assert (received.channel, received.payload) == ("pgwarden_test", "hello")


async def asyncpg_scenario(dsn: str) -> list[object]:
    conn = await asyncpg.connect(dsn)
    try:
        seen: list[object] = []
        stmt = await conn.prepare(
            "SELECT id, name, price, ARRAY[id, id * 2] FROM items "
            "WHERE id = ANY($1::int[]) ORDER BY id"
        )
        seen.append([tuple(r) for r in await stmt.fetch([1, 2, 3])])
        seen.append([tuple(r) for r in await stmt.fetch([50])])
        seen.append(await conn.fetchval("SELECT '{\"a\": [1, 2]}'::jsonb ->> 'a'"))
        await conn.execute("CREATE TEMP TABLE r (a int, b text, c numeric)")
        await conn.copy_records_to_table("r", records=[(i, f"v{i}", i / 4) for i in range(500)])
        seen.append(tuple(await conn.fetchrow("SELECT count(*), sum(a), sum(c) FROM r")))
        with pytest.raises(TimeoutError):
            await conn.execute("SELECT pg_sleep(60)", timeout=0.5)
        seen.append(await conn.fetchval("SELECT 'still usable'"))
        return seen
    finally:
        await conn.close()


# A cancel that does not reach the upstream leaves pg_sleep(60) running: the timeout fails it.
@pytest.mark.timeout(45)
async def test_asyncpg_prepared_binary_copy_and_cancel(proxy: ProxyUnderTest) -> None:
    cluster = proxy.cluster
    through = await asyncpg_scenario(proxy.dsn())
    direct = await asyncpg_scenario(direct_dsn(cluster) + "?sslmode=disable")
    assert through == direct
    # The timeout's cancel reached the upstream: no pg_sleep is still running.
    running = cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE query = "
        "'SELECT pg_sleep(60)' AND state = 'active'"
    )
    assert running.strip() == "0"


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_modes(proxy: ProxyUnderTest, mode: str) -> None:
    cluster = proxy.cluster
    db = f"bench_{mode}"
    cluster.create_database(db, owner="pgwarden_proxy")
    env = {**psql_env_proxy(proxy), "PGDATABASE": db}
    run_tool(cluster, "pgbench", ["-i", "-s", "1", "-q"], env=env)
    out = run_tool(
        cluster, "pgbench", ["-M", mode, "-c", "4", "-j", "2", "-t", "100", "-n"], env=env
    )
    assert "number of transactions actually processed: 400/400" in out
    assert "number of failed transactions: 0" in out
    count = cluster.psql("SELECT count(*) FROM pgbench_history", dbname=db).strip()
    assert count == "400"


def test_pg_dump_and_pg_restore(proxy: ProxyUnderTest, tmp_path: Path) -> None:
    cluster = proxy.cluster
    dump = tmp_path / "proxytest.dump"
    env = psql_env_proxy(proxy)
    run_tool(cluster, "pg_dump", ["-Fc", "-f", str(dump), "-t", "items"], env=env)
    cluster.create_database("restored", owner="pgwarden_proxy")
    run_tool(cluster, "pg_restore", ["--no-owner", "-d", "restored", str(dump)], env=env)
    check = "SELECT count(*), sum(price), md5(string_agg(name, ',' ORDER BY id)) FROM items"
    assert cluster.psql(check, dbname="restored") == cluster.psql(check, dbname=TEST_DB)


def test_same_rows_through_identifier_quoting(proxy: ProxyUnderTest) -> None:
    query = sql.SQL("SELECT {} FROM {} WHERE id < 4 ORDER BY 1").format(
        sql.Identifier("name"), sql.Identifier("items")
    )
    with psycopg.connect(proxy.dsn()) as a, psycopg.connect(direct_dsn(proxy.cluster)) as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()


def test_asyncio_many_sessions_at_once(proxy: ProxyUnderTest) -> None:
    async def one(i: int) -> int:
        conn = await asyncpg.connect(proxy.dsn())
        try:
            value: int = await conn.fetchval("SELECT $1::int * 2", i)
            return value
        finally:
            await conn.close()

    async def many() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(40)))

    assert asyncio.run(many()) == [i * 2 for i in range(40)]


def test_errors_at_bind_are_recorded_as_the_statements_failure(proxy: ProxyUnderTest) -> None:
    """libpq sends Parse/Bind/Describe/Execute/Sync; these fail at Bind (1/0 is folded
    by the planner; 'abc' is no integer), before their Execute runs: the audit trail
    must say failed with the client's SQLSTATE, not skipped."""
    with psycopg.connect(proxy.dsn(application_name="bind-errors"), autocommit=True) as conn:
        for query, params, sqlstate in [
            ("SELECT 1/0", None, "22012"),
            ("SELECT id FROM items WHERE id = %s::int", ["abc"], "22P02"),
        ]:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(query, params)
            assert err.value.sqlstate == sqlstate

    def statements() -> list[dict[str, object]]:
        return [
            r["outcome"]
            for r in proxy.audit_records()
            if r["application_name"] == "bind-errors" and r["kind"] == "statement"
        ]

    proxy.process.wait_ready(lambda: len(statements()) == 2)
    assert [(o["status"], o["sqlstate"]) for o in statements()] == [  # type: ignore[index]
        ("failed", "22012"),
        ("failed", "22P02"),
    ]
