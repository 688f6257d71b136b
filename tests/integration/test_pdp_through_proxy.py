"""Issue 5, end to end: psql and psycopg → proxy → PDP → OPA (the shipped policy pack) →
PostgreSQL, with the reference scenario."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from pgwarden.stack import local
from pgwarden.stack.postgres import find_bindir
from tests.integration.stack_fixtures import dsn

DECISION_ID = re.compile(r"decision_id=([0-9a-f]{32})")


def decision_lines(stack: local.Stack) -> list[dict[str, object]]:
    return stack.pdp.log_records("decision")


def test_psql_sees_the_rules_reason_and_the_pdp_logged_the_same_decision(
    stack: local.Stack,
) -> None:
    proxy = stack.info["proxy"]
    env = {**os.environ, "PGPASSWORD": stack.info["tokens"]["agent:reporting"]}
    conninfo = (
        f"host={proxy['host']} port={proxy['port']} dbname=shop "
        f"user=agent:reporting sslmode=verify-full sslrootcert={proxy['ca_file']}"
    )
    out = subprocess.run(
        [
            str(find_bindir() / "psql"),
            "-X",
            conninfo,
            "-c",
            "SELECT ssn FROM customers WHERE id = 7 LIMIT 1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "ERROR:  pgwarden:" in out.stderr
    assert "public.customers.ssn is secret" in out.stderr
    decision_id = DECISION_ID.search(out.stderr)
    assert decision_id is not None
    logged = [r for r in decision_lines(stack) if r.get("decision_id") == decision_id[1]]
    assert len(logged) == 1
    assert logged[0]["action"] == "deny"
    assert "ssn" not in json.dumps(logged[0]).replace("public.customers.ssn", "")


def test_repeated_statement_is_answered_from_the_cache(stack: local.Stack) -> None:
    sql = "SELECT status, count(*) FROM orders WHERE customer_id = 17 GROUP BY status LIMIT 10"
    # autocommit: psycopg's implicit BEGIN would change input.session.in_transaction.
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        # prepare=False: psycopg otherwise switches to the extended protocol on the 6th
        # run, and input.statement.protocol is part of the decision's input.
        conn.execute(sql, prepare=False).fetchall()
        fingerprint_lines = len(decision_lines(stack))
        for _ in range(5):
            conn.execute(sql, prepare=False).fetchall()
    assert len(decision_lines(stack)) == fingerprint_lines


def test_a_new_connection_of_the_identity_reuses_the_decisions(stack: local.Stack) -> None:
    """The pack's decisions have cache_scope "identity": a second psycopg connection
    (another session id and client port) runs BEGIN, the SELECT and COMMIT without
    asking the PDP; the first connection asked for the SELECT."""
    alias = f"c_{os.urandom(4).hex()}"  # an output name no other test uses
    sql = f"SELECT id AS {alias} FROM orders WHERE customer_id = %s LIMIT 5"
    with psycopg.connect(dsn(stack, "agent:reporting")) as conn:
        conn.execute(sql, (17,)).fetchall()
    asked = decision_lines(stack)
    with psycopg.connect(dsn(stack, "agent:reporting")) as conn:
        conn.execute(sql, (18,)).fetchall()
    assert decision_lines(stack) == asked
    with psycopg.connect(dsn(stack, "agent:etl")) as conn:  # another identity asks again
        conn.execute(sql, (19,)).fetchall()
    assert len(decision_lines(stack)) > len(asked)


def test_kill_the_pdp_then_bring_it_back(stack: local.Stack) -> None:
    before = stack.cluster.psql("SELECT count(*) FROM orders", dbname="shop")
    with psycopg.connect(dsn(stack, "agent:etl"), autocommit=True) as conn:
        # Not cached yet: every statement below needs the PDP.
        stack.pdp.kill()
        for n in range(3):
            with pytest.raises(errors.InsufficientPrivilege) as info:
                conn.execute(
                    f"INSERT INTO orders (id, customer_id, total, status) "
                    f"VALUES ({90000 + n}, 1, 1.00, 'new')"
                )
            assert "code=pdp_unavailable" in (info.value.diag.message_detail or "")
        assert stack.cluster.psql("SELECT count(*) FROM orders", dbname="shop") == before
        stack.pdp.start()
        # The same session, no reconnect: statements go through again once the proxy's
        # channel has reconnected (a backoff of at most one second).
        sql = "SELECT id FROM orders WHERE id = 3 LIMIT 1"
        stack.pdp.process.wait_ready(lambda: not _refused(conn, sql), timeout_s=10)
    assert stack.pdp.process.exit_message() is None


def test_policy_edit_takes_effect_without_restart(stack: local.Stack, policy_copy: Path) -> None:
    sql = "SELECT id, status FROM orders WHERE id = 5 LIMIT 1"
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        assert conn.execute(sql).fetchall() == [(5, "new")]  # allowed, and now cached
        # Deny everything reporting does by emptying its allowed commands.
        identities = policy_copy / "data" / "identities.json"
        saved = identities.read_text()
        doc = json.loads(saved)
        doc["identities"]["profiles"]["reporting"]["commands"] = []
        identities.write_text(json.dumps(doc))
        try:
            stack.pdp.process.wait_ready(lambda: _refused(conn, sql), timeout_s=10)
        finally:
            identities.write_text(saved)
        stack.pdp.process.wait_ready(lambda: not _refused(conn, sql), timeout_s=10)


def _refused(conn: psycopg.Connection, sql: str) -> bool:
    try:
        conn.execute(sql).fetchall()
    except errors.InsufficientPrivilege:
        return True
    return False


def test_explain_prints_the_input_document_and_the_pdps_decision(stack: local.Stack) -> None:
    postgres = stack.info["postgres"]
    owner_dsn = stack.cluster.dsn("shop", login=stack.cluster.proxy_login)
    assert postgres["port"] == stack.cluster.port
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgwarden",
            "explain",
            "--identity",
            "agent:reporting",
            "--groups",
            "analytics",
            "--database",
            "shop",
            "--dsn",
            owner_dsn,
            "--pdp",
            stack.pdp.address,
            "SELECT * FROM customer_contacts WHERE id = 1 LIMIT 1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PGWARDEN_PDP_TOKEN": stack.pdp.token or ""},
    )
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["statement"]["star"] == ["public.customer_contacts"]
    assert ["public.customers.email"] in [o["sources"] for o in document["statement"]["outputs"]]
    assert document["decision"]["action"] == "allow"
    assert document["decision"]["mask"]["public.customers.email"] == "partial_email"
    assert re.fullmatch(r"[0-9a-f]{32}", document["decision"]["decision_id"])
