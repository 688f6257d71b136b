"""The proxy's AuditReporter and its spool, with a fake PDP (no network)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from audit_fixtures import (
    IDENTITY,
    SENTINEL,
    SESSION,
    extended_execution,
    select_execution,
)

from pgwarden.config import ConfigError, Section
from pgwarden.proxy.audit import (
    AuditConfig,
    AuditReporter,
    Spool,
    SpoolFull,
    record_count,
)
from pgwarden.proxy.auth.errors import AuthFailure
from pgwarden.proxy.decision import (
    Action,
    Decision,
    SessionGrant,
)
from pgwarden.stack.process import poll_until_async
from pgwarden.v1 import decision_pb2 as pb


class FakePdp:
    """Acknowledges batches while ``up``; keeps every record it acknowledged."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0
        self.records: list[pb.AuditRecord] = []

    async def send(self, request: bytes, count: int) -> int:
        self.calls += 1
        if not self.up:
            return 0
        records = pb.ReportExecutionsRequest.FromString(request).records
        assert len(records) == count
        self.records.extend(records)
        return count


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    await poll_until_async(condition, timeout_s=timeout_s, what="condition")


def config(tmp_path: Path, **overrides: object) -> AuditConfig:
    values: dict[str, object] = {"spool_dir": tmp_path / "spool", "batch_max_delay_s": 0.01}
    values.update(overrides)
    return AuditConfig(**values)  # type: ignore[arg-type]


async def test_allow_statement_record_carries_decision_and_outcome(tmp_path: Path) -> None:
    pdp = FakePdp()
    reporter = await AuditReporter(config(tmp_path), pdp.send, proxy_id="edge-1").start()
    decision = Decision(
        Action.ALLOW,
        ("reads are allowed",),
        "d-1",
        mask={"public.items.name": "redact"},
        row_limit=2,
        revision="rev-9",
    )
    limited = select_execution(rows=5, decision=decision)
    reporter.session_opened(IDENTITY, SESSION, SessionGrant(True, "reporting", ("ok",), "d-s"))
    reporter.statement(IDENTITY, SESSION, limited)
    reporter.statement(IDENTITY, SESSION, extended_execution())
    reporter.session_closed(IDENTITY, SESSION, {"reason": "client_terminate"})
    await reporter.wait_delivered()
    await reporter.close()
    opened, select, update, closed = pdp.records
    assert opened.kind == pb.AUDIT_KIND_SESSION_OPEN
    assert opened.decision.decision_id == "d-s"
    assert select.kind == pb.AUDIT_KIND_STATEMENT
    assert select.identity.subject == "agent:reporting"
    assert list(select.identity.groups) == ["analytics"]
    assert (select.proxy_id, select.session_id, select.database) == ("edge-1", "s-1", "shop")
    assert select.statement.sql == "SELECT id, name FROM items WHERE name <> $1"
    assert not select.statement.sql_has_literals
    assert select.statement.command == "SELECT"
    assert [r.name for r in select.statement.relations] == ["items"]
    assert select.decision.decision_id == "d-1"
    assert dict(select.decision.mask) == {"public.items.name": "redact"}
    assert select.decision.row_limit == 2
    assert select.decision.revision == "rev-9"
    # The row limit cut the result: two rows reached the client, then the limit error.
    assert select.outcome.rows == 2 == limited.rows
    assert select.outcome.bytes_sent == limited.bytes_sent > 0
    assert select.outcome.row_limit_reached
    assert update.outcome.rows_affected == 1
    assert update.statement.protocol == "extended"
    assert closed.session_stats.statements == 2
    assert closed.session_stats.rows == 2
    assert closed.session_stats.reason == "client_terminate"
    assert len({r.record_id for r in pdp.records}) == 4


async def test_allow_cached_marks_a_decision_the_cache_handed_out_again(tmp_path: Path) -> None:
    """``cached`` is a decision the cache can keep (a TTL, no code) reported before; one
    that the cache never keeps (TTL 0: every local-mode decision) is not remembered, so a
    proxy asking the PDP for every statement keeps no growing list of decision ids."""
    pdp = FakePdp()
    reporter = await AuditReporter(config(tmp_path), pdp.send, proxy_id="edge-1").start()
    kept = Decision(Action.ALLOW, ("ok",), "d-kept", cache_ttl_s=60)
    for _ in range(2):
        reporter.statement(IDENTITY, SESSION, select_execution(decision=kept))
    for n in range(1000):
        asked = Decision(Action.ALLOW, ("ok",), f"d-asked-{n}")  # cache_ttl_s 0
        reporter.statement(IDENTITY, SESSION, select_execution(decision=asked))
    await reporter.wait_delivered()
    await reporter.close()
    assert [r.decision.cached for r in pdp.records[:2]] == [False, True]
    assert not any(r.decision.cached for r in pdp.records[2:])
    assert len(pdp.records) == 1002
    assert list(reporter._seen_decisions) == ["d-kept"]


async def test_deny_sentinel_literal_never_reaches_spool_or_pdp(tmp_path: Path) -> None:
    pdp = FakePdp()
    pdp.up = False  # everything stays in the spool, where we can look at it
    reporter = await AuditReporter(config(tmp_path), pdp.send, proxy_id="edge-1").start()
    reporter.statement(IDENTITY, SESSION, select_execution())
    reporter.statement(IDENTITY, SESSION, extended_execution())
    await reporter.flush()
    spool = (tmp_path / "spool" / "spool.bin").read_bytes()
    assert b"items" in spool
    assert SENTINEL.encode() not in spool
    pdp.up = True
    await reporter.close()
    assert all(SENTINEL not in str(r) for r in pdp.records)
    assert len(pdp.records) == 2


async def test_allow_store_sql_literals_keeps_the_statement_text(tmp_path: Path) -> None:
    pdp = FakePdp()
    reporter = AuditReporter(config(tmp_path, store_sql_literals=True), pdp.send, proxy_id="e")
    await reporter.start()
    reporter.statement(IDENTITY, SESSION, select_execution())
    await reporter.close()
    [record] = pdp.records
    assert SENTINEL in record.statement.sql
    assert record.statement.sql_has_literals


async def test_allow_records_travel_in_batches_not_one_call_each(tmp_path: Path) -> None:
    pdp = FakePdp()
    reporter = AuditReporter(
        config(tmp_path, batch_max_records=100, batch_max_delay_s=0.05), pdp.send, proxy_id="e"
    )
    await reporter.start()
    execution = select_execution()
    for _ in range(1000):
        reporter.statement(IDENTITY, SESSION, execution)
    await reporter.wait_delivered()
    await reporter.close()
    assert len(pdp.records) == 1000
    assert len({r.record_id for r in pdp.records}) == 1000
    assert pdp.calls <= 20


async def test_allow_unreachable_pdp_spools_then_replays_everything(tmp_path: Path) -> None:
    pdp = FakePdp()
    pdp.up = False
    reporter = await AuditReporter(config(tmp_path), pdp.send, proxy_id="e").start()
    execution = select_execution()
    for _ in range(50):
        reporter.statement(IDENTITY, SESSION, execution)
    await until(lambda: reporter.records_spooled == 50 and pdp.calls >= 2)
    assert reporter.durable_ok
    assert reporter.unacknowledged_bytes > 0
    pdp.up = True
    await reporter.wait_delivered()
    assert len(pdp.records) == 50
    assert (tmp_path / "spool" / "spool.bin").stat().st_size == 0
    await reporter.close()


async def test_allow_spool_left_by_a_dead_proxy_is_replayed_by_the_next(tmp_path: Path) -> None:
    down = FakePdp()
    down.up = False
    first = await AuditReporter(config(tmp_path), down.send, proxy_id="e").start()
    for _ in range(30):
        first.statement(IDENTITY, SESSION, select_execution())
    await first.close(timeout_s=0.05)  # the PDP never answered: all 30 stay spooled
    pdp = FakePdp()
    second = await AuditReporter(config(tmp_path), pdp.send, proxy_id="e").start()
    await second.wait_delivered()
    await second.close()
    assert len(pdp.records) == 30
    assert len({r.record_id for r in pdp.records}) == 30


async def test_deny_full_spool_turns_durable_off_until_the_pdp_drains_it(tmp_path: Path) -> None:
    pdp = FakePdp()
    pdp.up = False
    reporter = AuditReporter(
        config(tmp_path, spool_max_bytes=64 * 1024, batch_max_records=50), pdp.send, proxy_id="e"
    )
    await reporter.start()
    execution = select_execution()
    count = 0
    while reporter.durable_ok:
        for _ in range(50):
            reporter.statement(IDENTITY, SESSION, execution)
        count += 50
        await reporter.flush()
        assert count < 10_000
    assert reporter.pending > 0  # held in memory, not lost
    assert reporter.spool_failures >= 1
    pdp.up = True
    await until(lambda: reporter.durable_ok)
    await reporter.wait_delivered()
    await reporter.close()
    assert len(pdp.records) == count
    assert len({r.record_id for r in pdp.records}) == count


async def test_allow_refusal_and_auth_records(tmp_path: Path) -> None:
    pdp = FakePdp()
    reporter = await AuditReporter(config(tmp_path), pdp.send, proxy_id="edge-1").start()
    facts = select_execution().facts
    deny = Decision(Action.DENY, ("no", "[pdp_unavailable]"), "d-x", code="pdp_unavailable")
    reporter.refusal(IDENTITY, SESSION, deny, facts, "42501")
    reporter.refusal(IDENTITY, SESSION, deny, None, "42601")
    reporter.auth_refused(
        "10.0.0.9",
        50123,
        AuthFailure.BAD_SIGNATURE,
        "28P01",
        {"issuer": "https://idp"},
        session_id="s9",
    )
    await reporter.close()
    refusal, unparsed, auth = pdp.records
    assert refusal.kind == pb.AUDIT_KIND_REFUSAL
    assert refusal.decision.action == pb.ACTION_DENY
    assert refusal.decision.code == "pdp_unavailable"
    assert refusal.statement.fingerprint
    assert not unparsed.HasField("statement")
    # The same refusal object twice: no cache answered (the cache keeps no refusal).
    assert not unparsed.decision.cached
    assert auth.kind == pb.AUDIT_KIND_AUTH_REFUSED
    assert (auth.client_addr, auth.client_port, auth.session_id) == ("10.0.0.9", 50123, "s9")
    assert (refusal.outcome.status, refusal.outcome.sqlstate) == ("refused", "42501")
    assert unparsed.outcome.sqlstate == "42601"
    assert (auth.auth.code, auth.auth.sqlstate) == ("bad_signature", "28P01")
    assert dict(auth.auth.context) == {"issuer": "https://idp"}


def test_deny_torn_spool_frame_is_cut_and_full_spool_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 64 * 1024)
    spool.open()
    spool.append(b"one")
    spool.append(b"two")
    spool.close()
    with (tmp_path / "spool.bin").open("ab") as f:
        f.write(b"PGWS\0\0\0\x10")  # a crash in the middle of the third frame
    again = Spool(tmp_path, 64 * 1024)
    again.open()
    payloads, end = again.read(0, 1 << 20)
    assert payloads == [b"one", b"two"]
    assert end == again.size
    again.acknowledge(end)
    assert again.size == 0
    with pytest.raises(SpoolFull):
        again.append(b"x" * 70_000)
    again.close()


def test_allow_audit_config_from_section(tmp_path: Path) -> None:
    section = Section(
        {"spool_dir": "spool", "batch_max_records": 200, "batch_max_delay_ms": 50},
        source=str(tmp_path / "proxy.toml"),
        prefix="audit",
    )
    config = AuditConfig.from_section(section)
    assert config.spool_dir == tmp_path / "spool"
    assert config.batch_max_records == 200
    assert config.batch_max_delay_s == 0.05
    assert config.required
    assert not config.store_sql_literals


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"spool_max_bytes": 10}, "audit.spool_max_bytes"),
        ({"batch_max_records": 0}, "audit.batch_max_records"),
        ({"batch_max_delay_ms": 0}, "audit.batch_max_delay_ms"),
        ({"required": "yes"}, "audit.required"),
        ({"spool": "x"}, "audit.spool"),
    ],
)
def test_deny_bad_audit_config_names_the_key(
    tmp_path: Path, values: dict[str, object], key: str
) -> None:
    section = Section(values, source=str(tmp_path / "proxy.toml"), prefix="audit")
    with pytest.raises(ConfigError) as error:
        AuditConfig.from_section(section)
    assert error.value.key == key


async def test_deny_disk_error_turns_durable_off_until_writes_work_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pdp = FakePdp()
    reporter = await AuditReporter(config(tmp_path), pdp.send, proxy_id="e").start()
    original = reporter.spool.append

    def failing(payload: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reporter.spool, "append", failing)
    reporter.statement(IDENTITY, SESSION, select_execution())
    await reporter.flush()
    assert not reporter.durable_ok
    assert "No space left" in reporter.last_error
    monkeypatch.setattr(reporter.spool, "append", original)
    await until(lambda: reporter.durable_ok)
    await reporter.wait_delivered()
    await reporter.close()
    assert len(pdp.records) == 1


async def test_allow_local_store_keeps_a_chained_trail_without_a_pdp(tmp_path: Path) -> None:
    from pgwarden.pdp.audit.chain import verify
    from pgwarden.pdp.audit.store import read_jsonl_lines
    from pgwarden.proxy.audit import LocalAuditStore

    path = tmp_path / "local" / "audit.jsonl"
    store = await LocalAuditStore(path, replica_id="edge-1").start()
    reporter = await AuditReporter(config(tmp_path), store.send, proxy_id="edge-1").start()
    reporter.statement(IDENTITY, SESSION, select_execution())
    reporter.statement(IDENTITY, SESSION, extended_execution())
    await reporter.close()
    await store.close()
    lines = list(read_jsonl_lines(path))
    assert len(lines) == 2
    assert verify(lines).ok
    assert SENTINEL not in path.read_text()


def test_record_count_reads_the_length_prefixes_of_a_serialized_batch() -> None:
    records = [pb.AuditRecord(record_id=str(i), database="x" * (i * 50)) for i in range(7)]
    request = pb.ReportExecutionsRequest(records=records).SerializeToString()
    assert record_count(request) == 7  # lengths of one and of two varint bytes
    assert record_count(b"") == 0
    for broken in (request[:-1], request + b"\x12", b"\x0a\x00", b"\x12\xff"):
        with pytest.raises(ValueError, match="spooled batch"):
            record_count(broken)


async def test_allow_an_ended_or_refused_session_leaves_nothing_memoized(tmp_path: Path) -> None:
    pdp = FakePdp()
    reporter = await AuditReporter(config(tmp_path), pdp.send, proxy_id="edge-1").start()
    refused = dataclasses.replace(SESSION, id="s-refused")
    reporter.session_opened(IDENTITY, SESSION, SessionGrant(True, "reporting", (), "d-1"))
    reporter.statement(IDENTITY, SESSION, select_execution())
    reporter.session_opened(IDENTITY, refused, SessionGrant(False, "", ("no",), "d-2"))
    await reporter.flush()
    assert reporter.stats()["sessions_memoized"] == 1  # the open session's
    reporter.session_closed(IDENTITY, SESSION, {"reason": "client closed"})
    await reporter.close()
    assert reporter.stats()["sessions_memoized"] == 0
    assert [r.kind for r in pdp.records] == [
        pb.AUDIT_KIND_SESSION_OPEN,
        pb.AUDIT_KIND_STATEMENT,
        pb.AUDIT_KIND_SESSION_OPEN,
        pb.AUDIT_KIND_SESSION_CLOSE,
    ]
    assert pdp.records[-1].session_id == SESSION.id  # the template it used was its own
