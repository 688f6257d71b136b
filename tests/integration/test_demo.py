"""Issue 10: ``pgwarden up --detach``, ``pgwarden demo`` and ``pgwarden down``, as a user
runs them: real PostgreSQL, PDP, OPA with the shipped policy pack, and the proxy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.wiretap import WiretapProcess, jsonl_records, reconcile


def pgwarden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgwarden", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def state() -> Iterator[Path]:
    """A state directory PostgreSQL's own user can reach when the tests run as root."""
    base = Path(tempfile.mkdtemp(prefix="pgwarden-stack-", dir="/tmp"))
    base.chmod(0o711)
    yield base / "state"
    shutil.rmtree(base)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.timeout(300)
def test_up_demo_down(state: Path) -> None:
    up = pgwarden("up", "--detach", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    tap: WiretapProcess | None = None
    try:
        info = json.loads((state / "stack.json").read_text())
        assert set(info["tokens"]) >= {"agent:reporting", "agent:etl", "human:dba"}
        assert Path(info["proxy"]["ca_file"]).is_file()
        assert oct((state / "stack.json").stat().st_mode & 0o777) == "0o600"

        # The tour's psql sessions go through the suite's wiretap (it presents the
        # proxy's certificate): what they received is reconciled with the audit trail.
        stack_file = state / "stack.json"
        proxy = info["proxy"]
        tap = WiretapProcess(
            state.parent,
            (proxy["host"], proxy["port"]),
            tls=(state / "tls" / "cert.pem", state / "tls" / "key.pem"),
        )
        tap.start_and_wait()
        stack_file.write_text(json.dumps({**info, "proxy": {**proxy, "port": tap.port}}))
        try:
            tour = pgwarden("demo", "--state-dir", str(state), "--json")
        finally:
            stack_file.write_text(json.dumps(info))
        steps = {s["title"]: s for s in json.loads(tour.stdout)}
        assert tour.returncode == 0, tour.stdout
    finally:
        down = pgwarden("down", "--state-dir", str(state))
        if tap is not None:
            tap.stop()
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(str(state)) == []
    assert not (state / "stack.json").exists()
    audit = Path(info["audit"]["file"])
    records = jsonl_records(audit)
    assert tap is not None
    sessions = [c for c in tap.connections() if c["kind"] == "startup"]
    assert len(sessions) == len(steps) - 2  # each psql step; the last two read the file
    assert reconcile(tap.connections(), records) == []

    dba = steps["An allowed query: the DBA reads one customer"]["output"]
    assert "@example." in dba
    assert "***@example." not in dba
    masked = steps["The same query as agent:reporting: PII masked on the wire"]["output"]
    assert "***@example." in masked
    assert "[redacted]" in masked
    email = next(w for w in dba.split() if "@example." in w)
    assert email not in masked
    export = steps["A bulk export is refused, with the policy's reason"]["output"]
    assert "COPY public.customers TO STDOUT exports data" in export
    assert "decision_id=" in export
    limit = steps["A row limit stops a bulk read (no silent truncation)"]["output"]
    assert "row limit of 1000 rows reached" in limit
    intruder = steps["An identity that no policy admits cannot even open a session"]["output"]
    assert "session refused for agent:intruder" in intruder
    trail = steps["The audit trail of all of it (newest last)"]["output"]
    assert "refusal" in trail
    assert "session_open   agent:intruder   deny" in trail
    assert "1000" in trail  # the rows sent before the row limit stopped the read
    assert "every link intact" in steps["Nobody edited it: the hash chain is intact"]["output"]


def test_demo_without_a_stack_says_how_to_start_one(tmp_path: Path) -> None:
    tour = pgwarden("demo", "--state-dir", str(tmp_path))
    assert tour.returncode == 1
    assert "pgwarden up --detach --state-dir" in tour.stderr


def test_state_is_reused_on_the_next_start(state: Path) -> None:
    for _ in range(2):
        assert pgwarden("up", "--detach", "--state-dir", str(state)).returncode == 0
        try:
            assert (state / "postgres" / "data" / "PG_VERSION").exists()
        finally:
            assert pgwarden("down", "--state-dir", str(state)).returncode == 0
    assert os.listdir(state / "postgres" / "data")
