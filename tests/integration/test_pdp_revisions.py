"""Policy revisions: an edit on disk reaches OPA and every connected client, no restart."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pgwarden.pdp.harness import PdpProcess, write_example_policy
from pgwarden.proxy.decision import Action, Identity, SessionFacts, Statement
from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig
from pgwarden.stack.process import poll_until, poll_until_async

REPORTING = Identity("agent:reporting", "https://idp.example", ("analytics",), "jwt", {})
SESSION = SessionFacts("s-rev", "edge-1", "10.0.0.7", "shop", "psql", True, "")


def statement(command: str) -> Statement:
    return Statement.of({"fingerprint": uuid.uuid4().hex[:16], "command": command})


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0, what: str
) -> None:
    """Poll an async condition (never a fixed sleep)."""
    await poll_until_async(condition, timeout_s=timeout_s, what=what)


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return write_example_policy(tmp_path / "policies", delete_reason="first reason")


async def test_policy_edit_changes_decisions_and_drops_cached_ones(
    tmp_path: Path, policies: Path
) -> None:
    with PdpProcess(policies=policies, log_dir=tmp_path / "logs") as pdp:
        config = PdpClientConfig((pdp.address,), deadline_s=2.0, token=pdp.token)
        async with PdpClient(config) as client:
            delete = statement("DELETE")
            [before] = await client.decide(REPORTING, SESSION, [delete], in_transaction=False)
            assert before.reasons == ("first reason",)
            assert len(client.cache) == 1
            old_revision = before.revision
            [opa] = pdp.log_records("opa_started")

            # The data file changes: no restart, a new revision, the cache emptied.
            data = policies / "data" / "example" / "data.json"
            data.write_text(json.dumps({"delete_reason": "second reason"}))
            edited = time.monotonic()

            async def revision_changed() -> bool:
                return client.cache.revision not in ("", old_revision)

            await eventually(revision_changed, what="revision pushed to the client")
            pushed_after_s = time.monotonic() - edited
            assert len(client.cache) == 0
            assert client.cache.invalidations == 1
            [after] = await client.decide(REPORTING, SESSION, [delete], in_transaction=False)
            assert after.reasons == ("second reason",)
            assert after.revision == client.cache.revision
            assert after.decision_id != before.decision_id
            assert pdp.process.exit_message() is None  # the PDP never restarted
            revisions = [r["revision"] for r in pdp.log_records("revision")]
            assert revisions == [old_revision, after.revision]
            # Blue/green: a new OPA on the new snapshot, the old one retired.
            pids = [r["pid"] for r in pdp.log_records("opa_started")]
            assert len(pids) == 2
            assert pids[0] == opa["pid"] != pids[1]
            print(f"revision pushed {pushed_after_s * 1000:.0f} ms after the edit")


async def test_broken_policy_keeps_the_revision_in_force(tmp_path: Path, policies: Path) -> None:
    with PdpProcess(policies=policies, log_dir=tmp_path / "logs") as pdp:
        config = PdpClientConfig((pdp.address,), deadline_s=2.0, token=pdp.token)
        async with PdpClient(config) as client:
            [before] = await client.decide(
                REPORTING, SESSION, [statement("DELETE")], in_transaction=False
            )
            rego = policies / "pgwarden" / "decision.rego"
            rego.write_text(rego.read_text() + "\nthis is not rego\n")
            poll_until(
                lambda: bool(pdp.log_records("policy_load_failed")),
                timeout_s=15,
                what="the PDP refusing the broken policy",
            )
            [after] = await client.decide(
                REPORTING, SESSION, [statement("DELETE")], in_transaction=False
            )
            assert after.revision == before.revision
            assert after.reasons == ("first reason",)
            assert after.code == ""


async def test_dry_run_by_config_logs_the_deny_and_lets_it_run(
    tmp_path: Path, policies: Path
) -> None:
    with PdpProcess(policies=policies, log_dir=tmp_path / "logs", dry_run=True) as pdp:
        config = PdpClientConfig((pdp.address,), deadline_s=2.0, token=pdp.token)
        async with PdpClient(config) as client:
            delete, invalid = statement("DELETE"), statement("INSERT")
            decisions = await client.decide(
                REPORTING, SESSION, [delete, invalid], in_transaction=False
            )
        [deny, refused] = decisions
        assert deny.action is Action.DENY
        assert deny.dry_run
        assert deny.permits
        # Fail closed even in dry run: an invalid decision is still a refusal.
        assert refused.code == "invalid_decision"
        assert not refused.permits

        def logged() -> bool:
            return any(
                r["decision_id"] == deny.decision_id and r["dry_run"] and r["action"] == "deny"
                for r in pdp.log_records("decision")
            )

        poll_until(logged, timeout_s=10, what="the dry-run deny in the log")


async def test_broken_policy_at_start_fails_closed_until_fixed(
    tmp_path: Path, policies: Path
) -> None:
    rego = policies / "pgwarden" / "decision.rego"
    good = rego.read_text()
    rego.write_text(good + "\nthis is not rego\n")
    pdp = PdpProcess(policies=policies, log_dir=tmp_path / "logs")
    pdp.process.start()
    try:
        pdp.process.wait_ready(lambda: bool(pdp.log_records("listening")), timeout_s=30)
        assert pdp.log_records("policy_load_failed")
        assert not pdp.is_serving()
        config = PdpClientConfig((pdp.address,), deadline_s=2.0, token=pdp.token)
        async with PdpClient(config) as client:
            [decision] = await client.decide(
                REPORTING, SESSION, [statement("SELECT")], in_transaction=False
            )
            assert decision.code == "opa_unavailable"
            assert not decision.permits
            rego.write_text(good)
            pdp.process.wait_ready(pdp.is_serving, timeout_s=30)
            [decision] = await client.decide(
                REPORTING, SESSION, [statement("SELECT")], in_transaction=False
            )
            assert decision.action is Action.ALLOW
            assert len(pdp.log_records("opa_started")) == 1  # the broken one never started
    finally:
        pdp.stop()
