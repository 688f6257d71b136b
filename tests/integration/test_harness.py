"""The harness's real parts answer as the rest of the suite expects."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from opa_client.opa_async import AsyncOpaClient

from pgwarden.stack.opa import OpaServer
from pgwarden.stack.postgres import PostgresCluster


def test_proxy_role_connects_over_tcp_with_scram(pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(pg_cluster.dsn(login=pg_cluster.proxy_login)) as conn:
        row = conn.execute("SELECT current_user, inet_server_addr() IS NOT NULL").fetchone()
    assert row == ("pgwarden_proxy", True)
    stored = pg_cluster.psql(
        "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'pgwarden_proxy'"
    )
    assert stored.strip() == "SCRAM-SHA-256$"


def test_tcp_refuses_a_wrong_password(pg_cluster: PostgresCluster) -> None:
    bad = pg_cluster.dsn(login=type(pg_cluster.proxy_login)("pgwarden_proxy", "wrong"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad).close()


def test_tcp_has_no_trust_rule(pg_cluster: PostgresCluster) -> None:
    rules = pg_cluster.psql(
        "SELECT type || ' ' || auth_method FROM pg_hba_file_rules ORDER BY line_number"
    )
    lines = rules.splitlines()
    assert "host trust" not in lines
    assert "host scram-sha-256" in lines


async def test_opa_decides_through_the_async_python_client(
    start_opa: Callable[..., OpaServer],
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "decision.rego").write_text(
        "package pgwarden\n\n"
        'decision := {"action": "deny", "reasons": ["copy to stdout"]} if {\n'
        '\tinput.statement.command == "COPY"\n}\n\n'
        'decision := {"action": "allow", "reasons": []} if {\n'
        '\tinput.statement.command != "COPY"\n}\n'
    )
    opa = start_opa(policy)
    async with AsyncOpaClient(host=opa.host, port=opa.port, retries=0, timeout=5) as client:
        deny = await client.query_rule(
            {"statement": {"command": "COPY"}}, package_path="pgwarden", rule_name="decision"
        )
        allow = await client.query_rule(
            {"statement": {"command": "SELECT"}}, package_path="pgwarden", rule_name="decision"
        )
    assert deny["result"] == {"action": "deny", "reasons": ["copy to stdout"]}
    assert allow["result"] == json.loads('{"action": "allow", "reasons": []}')
