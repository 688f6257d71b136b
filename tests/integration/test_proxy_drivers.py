"""Drivers of other languages through the proxy, the PDP and the shipped policy pack:
node-postgres (with pg-cursor and pg-query-stream), postgres.js and pgjdbc, each in its
own protocol modes (tests/clients/; scripts/bootstrap installs them). Each program checks
what its driver sees — masked values, refusals with their SQLSTATE, a connection that goes
on after them, cursors, streams, pipelines, batches — and prints what passed and failed.
The ``stack`` fixture reconciles every statement the programs saw with the audit trail."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pgwarden.stack import local

CLIENTS = Path(__file__).resolve().parents[1] / "clients"


def run_client(stack: local.Stack, tmp_path: Path, argv: list[str], *, cwd: Path) -> list[str]:
    """Run a client program against ``stack``; the names of its checks, all passed."""
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(stack.info))
    out = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, "PGWARDEN_STACK": str(stack_file)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = out.stdout.strip().splitlines()
    assert lines, f"no report (exit {out.returncode}):\n{out.stderr[-3000:]}"
    report = json.loads(lines[-1])
    assert report["failed"] == [], "\n".join(report["failed"])
    assert out.returncode == 0, out.stderr[-3000:]
    passed: list[str] = report["passed"]
    return passed


@pytest.mark.timeout(300)
def test_node_postgres_cursors_streams_and_refusals(stack: local.Stack, tmp_path: Path) -> None:
    passed = run_client(stack, tmp_path, ["node", "pg_client.js"], cwd=CLIENTS / "node")
    assert len(passed) == 10, passed


@pytest.mark.timeout(300)
def test_postgres_js_pipelines_prepared_and_unnamed(stack: local.Stack, tmp_path: Path) -> None:
    passed = run_client(stack, tmp_path, ["node", "postgresjs_client.js"], cwd=CLIENTS / "node")
    assert len(passed) == 14, passed
    assert "prepared: a refusal in the middle of a pipeline fails only its query" in passed


@pytest.mark.timeout(300)
def test_pgjdbc_in_every_query_mode(stack: local.Stack, tmp_path: Path) -> None:
    java = CLIENTS / "java"
    passed = run_client(
        stack,
        tmp_path,
        ["java", "-cp", str(java / "lib" / "pgjdbc.jar"), str(java / "PgjdbcClient.java")],
        cwd=java,
    )
    # 10 checks in each of pgjdbc's five modes (default, extendedForPrepared,
    # prepareThreshold=1 and -1, simple).
    assert len(passed) == 50, passed
    assert "?preferQueryMode=simple a batch with a refused statement" in passed
