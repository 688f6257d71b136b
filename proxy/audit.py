"""The proxy's side of the audit trail: build one record per execution or event, spool it
durably, deliver it to the PDP, drop it only once the PDP says it is durable there.

The hot path (:meth:`AuditReporter.statement` and friends) only appends a tuple to a list
and never waits: records are built, spooled and sent in batches by two background tasks.

- **Flusher.** Every ``batch_max_delay_ms`` (sooner when ``batch_max_records`` events are
  waiting) it builds the ``pb.AuditRecord`` messages — each gets its own ``record_id`` —
  and appends them to the spool file as one frame, then fsyncs.
- **Sender.** Reads frames from the spool, from the last acknowledged offset on, and sends
  them on ``ReportExecutions`` as the bytes they are (never parsed again); the PDP answers
  once they are durable in its store. The acknowledged offset then moves on; a fully
  acknowledged spool is truncated. While the PDP cannot be reached the spool grows (up to
  ``spool_max_bytes``) and is replayed when it comes back; records are idempotent by
  ``record_id``, so a replay never duplicates.
- **Fail closed.** When records cannot be made durable anywhere (the spool is full, the
  disk fails), :attr:`AuditReporter.durable_ok` turns False; with ``[audit] required`` the
  proxy refuses new statements until it is True again.

Spool format (``spool_dir/spool.bin``): frames of ``b"PGWS"``, length (u32, big endian),
CRC-32 of the payload (u32), payload (a serialized ``pb.ReportExecutionsRequest``). The
acknowledged offset is kept in ``spool_dir/spool.acked``; losing it only causes a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgwarden.config import Section
from pgwarden.pdp.audit.record_ids import new_record_id
from pgwarden.proxy.decision import (
    Action,
    Decision,
    Identity,
    SessionFacts,
    SessionGrant,
)
from pgwarden.v1 import decision_pb2 as pb

log = logging.getLogger("pgwarden.proxy.audit")

FRAME_MAGIC = b"PGWS"
_FRAME_HEAD = struct.Struct("!4sII")
SPOOL_FILE = "spool.bin"
ACKED_FILE = "spool.acked"
SEND_MAX_BYTES = 2 * 1024 * 1024  # frames merged into one ReportExecutions call, at most
FRAME_MAX_BYTES = 1024 * 1024  # records per spool frame, at most (gRPC's limit is 4 MiB)
SQL_MAX_CHARS = 64 * 1024  # longer statement text is cut (marked) in the record
RETRY_S = (0.1, 2.0)
SEEN_DECISIONS_MAX = 100_000
OPEN_SESSIONS_MAX = 100_000
MESSAGE_MEMO_MAX = 10_000  # per-session and per-statement messages kept for reuse

_ACTIONS = {
    Action.ALLOW: pb.ACTION_ALLOW,
    Action.DENY: pb.ACTION_DENY,
    Action.REQUIRE_APPROVAL: pb.ACTION_REQUIRE_APPROVAL,
}

# Event kinds queued by the hot path.
_STATEMENT, _REFUSAL, _OPEN, _CLOSE, _AUTH = range(5)

# ReportExecutionsRequest.records (field 2, length-delimited): the key byte of each record.
_RECORDS_TAG = 2 << 3 | 2

# Delivers one serialized ``pb.ReportExecutionsRequest`` holding ``count`` records.
Send = Callable[[bytes, int], Awaitable[int]]


@dataclass(frozen=True)
class AuditConfig:
    """The proxy's ``[audit]`` table."""

    spool_dir: Path
    spool_max_bytes: int = 256 * 1024 * 1024
    batch_max_records: int = 500
    batch_max_delay_s: float = 0.1
    required: bool = True
    store_sql_literals: bool = False
    report_timeout_s: float = 10.0

    @classmethod
    def from_section(cls, section: Section, *, base_dir: Path | None = None) -> AuditConfig:
        """Read and validate ``[audit]``; relative paths are relative to ``base_dir``
        (default: the config file's folder). Errors name the file and the key."""
        base = base_dir if base_dir is not None else Path(section.source).parent
        spool_dir = (base / section.get("spool_dir", str, "audit-spool")).resolve()
        spool_max = section.get("spool_max_bytes", int, 256 * 1024 * 1024)
        if spool_max < 64 * 1024:
            raise section.error("spool_max_bytes", "must be at least 65536")
        batch_max = section.get("batch_max_records", int, 500)
        if not 1 <= batch_max <= 10_000:
            raise section.error("batch_max_records", "must be between 1 and 10000")
        delay_ms = section.get("batch_max_delay_ms", int, 100)
        if not 1 <= delay_ms <= 60_000:
            raise section.error("batch_max_delay_ms", "must be between 1 and 60000")
        required = section.get("required", bool, True)
        literals = section.get("store_sql_literals", bool, False)
        timeout_ms = section.get("report_timeout_ms", int, 10_000)
        if timeout_ms <= 0:
            raise section.error("report_timeout_ms", "must be a positive number of milliseconds")
        section.reject_unknown()
        return cls(
            spool_dir,
            spool_max,
            batch_max,
            delay_ms / 1000,
            required,
            literals,
            timeout_ms / 1000,
        )


class SpoolFull(Exception):
    """The spool has no room for a batch."""


class Spool:
    """The durable local queue of audit batches (append + fsync, read back, truncate)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.path = directory / SPOOL_FILE
        self.acked_path = directory / ACKED_FILE
        self.max_bytes = max_bytes
        self.size = 0
        self.acked = 0
        self._fd = -1

    def open(self) -> None:
        """Open (or create) the spool; keep every whole frame, cut a torn last one."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        length = os.fstat(self._fd).st_size
        offset = 0
        while offset < length:
            end = self._frame_end(offset, length)
            if end is None:
                log.warning(
                    "audit spool: torn or corrupt frame dropped",
                    extra={"event": "audit_spool_torn", "offset": offset, "bytes": length - offset},
                )
                os.ftruncate(self._fd, offset)
                os.fsync(self._fd)
                break
            offset = end
        self.size = offset
        self.acked = 0
        with contextlib.suppress(OSError, ValueError):
            acked = int(self.acked_path.read_text().strip() or 0)
            if 0 <= acked <= self.size and self._is_boundary(acked):
                self.acked = acked

    def _frame_end(self, offset: int, length: int) -> int | None:
        head = os.pread(self._fd, _FRAME_HEAD.size, offset)
        if len(head) < _FRAME_HEAD.size:
            return None
        magic, size, crc = _FRAME_HEAD.unpack(head)
        end: int = offset + _FRAME_HEAD.size + size
        if magic != FRAME_MAGIC or end > length:
            return None
        if zlib.crc32(os.pread(self._fd, size, offset + _FRAME_HEAD.size)) != crc:
            return None
        return end

    def _is_boundary(self, target: int) -> bool:
        offset = 0
        while offset < target:
            end = self._frame_end(offset, self.size)
            if end is None:
                return False
            offset = end
        return offset == target

    def append(self, payload: bytes) -> None:
        """Append one frame and fsync it (blocking: run in a thread)."""
        frame = _FRAME_HEAD.pack(FRAME_MAGIC, len(payload), zlib.crc32(payload)) + payload
        if self.size + len(frame) > self.max_bytes:
            raise SpoolFull(f"spool holds {self.size} of {self.max_bytes} bytes")
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)  # never leave half a frame behind
            raise
        self.size += len(frame)

    def read(self, offset: int, max_bytes: int) -> tuple[list[bytes], int]:
        """Payloads of whole frames from ``offset`` (at least one, up to about
        ``max_bytes``) and the offset after the last one."""
        payloads: list[bytes] = []
        total = 0
        while offset < self.size and (not payloads or total < max_bytes):
            magic, size, crc = _FRAME_HEAD.unpack(os.pread(self._fd, _FRAME_HEAD.size, offset))
            payload = os.pread(self._fd, size, offset + _FRAME_HEAD.size)
            if magic != FRAME_MAGIC or zlib.crc32(payload) != crc:
                raise OSError(f"audit spool frame at {offset} is corrupt")
            payloads.append(payload)
            total += size
            offset += _FRAME_HEAD.size + size
        return payloads, offset

    def acknowledge(self, offset: int) -> None:
        """Everything before ``offset`` is durable at the PDP; empty the spool when all is."""
        self.acked = offset
        if self.acked >= self.size:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self.size = self.acked = 0
        # Not fsynced: losing the offset only makes the PDP see (and skip) duplicates.
        self.acked_path.write_text(str(self.acked))

    def compact(self) -> None:
        """Move the unacknowledged tail to the start of a fresh file (the sender keeps up
        but the spool was never empty at the moment it caught up)."""
        tail = os.pread(self._fd, self.size - self.acked, self.acked)
        temporary = self.directory / (SPOOL_FILE + ".tmp")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            os.write(fd, tail)
            os.fsync(fd)
            os.replace(temporary, self.path)
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd = fd
        self.size, self.acked = len(tail), 0
        self.acked_path.write_text("0")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _SessionTally:
    __slots__ = ("bytes_sent", "opened_ns", "refusals", "rows", "statements")

    def __init__(self, opened_ns: int) -> None:
        self.opened_ns = opened_ns
        self.statements = 0
        self.refusals = 0
        self.rows = 0
        self.bytes_sent = 0


class AuditReporter:
    """Builds, spools and delivers the proxy's audit records.

    ``send`` delivers a batch (the spool's frames, serialized) and returns how many records
    the PDP made durable (0 on any failure); in production it is
    ``PdpClient.report_serialized`` (bound with the configured ``report_timeout_s``).
    """

    def __init__(self, config: AuditConfig, send: Send, *, proxy_id: str) -> None:
        self.config = config
        self.send = send
        self.proxy_id = proxy_id
        self.spool = Spool(config.spool_dir, config.spool_max_bytes)
        self._durable_ok = True
        self._pending: list[tuple[Any, ...]] = []
        # Frames built but not yet spooled (spool full, disk error): (payload, records).
        self._held: list[tuple[bytes, int]] = []
        self._wake = asyncio.Event()
        self._spooled = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen_decisions: OrderedDict[str, None] = OrderedDict()
        self._sessions: dict[str, _SessionTally] = {}
        # Messages reused across records: (object, message) by the object's id.
        self._templates: dict[int, tuple[SessionFacts, Identity, pb.AuditRecord]] = {}
        self._statement_messages: dict[int, tuple[Mapping[str, Any], pb.AuditStatement, int]] = {}
        self._decision_messages: dict[int, tuple[Decision, pb.AuditDecision]] = {}
        self.records_built = 0
        self.records_spooled = 0
        self.records_acked = 0
        self.send_failures = 0
        self.spool_failures = 0
        self.last_error = ""

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> AuditReporter:
        """Open the spool (raises OSError when it cannot be used) and start delivering,
        replaying whatever an earlier run left unacknowledged."""
        await asyncio.to_thread(self.spool.open)
        if self.spool.acked < self.spool.size:
            log.info(
                "audit spool replay",
                extra={"event": "audit_spool_replay", "bytes": self.spool.size - self.spool.acked},
            )
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="audit-flush"),
            asyncio.create_task(self._send_loop(), name="audit-send"),
        ]
        self._spooled.set()
        return self

    async def close(self, *, timeout_s: float = 5.0) -> None:
        """Spool what is pending, try to deliver the spool for ``timeout_s``, stop.
        Whatever is still unacknowledged stays in the spool for the next start."""
        await self.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.wait_delivered()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await asyncio.to_thread(self.spool.close)

    @property
    def durable_ok(self) -> bool:
        """False while records cannot be made durable anywhere (spool full or failing):
        with ``required``, the proxy refuses new statements."""
        return self._durable_ok

    @property
    def pending(self) -> int:
        """Events and records not yet in the spool."""
        return len(self._pending) + sum(count for _, count in self._held)

    @property
    def unacknowledged_bytes(self) -> int:
        return self.spool.size - self.spool.acked

    async def flush(self) -> None:
        """Spool everything reported so far (tests, shutdown)."""
        await self._flush()

    async def wait_delivered(self) -> None:
        """Until everything reported so far is spooled and acknowledged by the PDP."""
        while self.pending or self.unacknowledged_bytes:
            if self.pending:
                await self._flush()
            self._spooled.set()
            await asyncio.sleep(0.01)

    # -- hot path (never waits) --------------------------------------------------------

    def statement(self, identity: Identity, session: SessionFacts, execution: Any) -> None:
        """A statement went to the server and finished (``RelayCore``'s ``on_complete``):
        ``execution`` is a ``relay.Execution`` (decision, facts, analysis, rows,
        rows_affected, bytes_sent, sqlstate, limit_reached, status, started/finished)."""
        self._queue((_STATEMENT, time.time_ns(), identity, session, execution))

    def refusal(
        self,
        identity: Identity,
        session: SessionFacts,
        decision: Decision,
        facts: Mapping[str, Any] | None,
        sqlstate: str,
    ) -> None:
        """A statement was refused (by the policy, the PDP, or the proxy itself) and never
        reached the server; ``facts`` are its statement facts (None when it did not parse),
        ``sqlstate`` the error the client got."""
        self._queue((_REFUSAL, time.time_ns(), identity, session, decision, facts, sqlstate))

    def session_opened(
        self, identity: Identity, session: SessionFacts, grant: SessionGrant | None = None
    ) -> None:
        """A session was admitted (``grant`` allowed) or refused at admission."""
        self._queue((_OPEN, time.time_ns(), identity, session, grant))

    def session_closed(
        self, identity: Identity, session: SessionFacts, stats: Mapping[str, Any] | None = None
    ) -> None:
        """A session ended. The reporter tallies statements, refusals, rows and bytes
        itself; ``stats`` may add ``reason`` (and override any tally)."""
        self._queue((_CLOSE, time.time_ns(), identity, session, dict(stats or {})))

    def auth_refused(
        self,
        peer: str,
        port: int,
        code: str,
        sqlstate: str,
        context: Mapping[str, str] | None = None,
        *,
        session_id: str = "",
        database: str = "",
    ) -> None:
        """An authentication was refused: ``code`` (``AuthError.code``), the SQLSTATE the
        client got and the error's non-secret ``context``. The token is never passed."""
        self._queue(
            (
                _AUTH,
                time.time_ns(),
                peer,
                port,
                str(code),
                sqlstate,
                dict(context or {}),
                session_id,
                database,
            )
        )

    def _queue(self, event: tuple[Any, ...]) -> None:
        pending = self._pending
        pending.append(event)
        if len(pending) >= self.config.batch_max_records:
            self._wake.set()

    # -- building records --------------------------------------------------------------

    def _session_template(self, identity: Identity, session: SessionFacts) -> pb.AuditRecord:
        """A record holding only the fields every record of this session repeats."""
        memo = self._templates.get(id(session))
        if memo is not None and memo[0] is session and memo[1] is identity:
            return memo[2]
        template = pb.AuditRecord(
            proxy_id=session.proxy_id or self.proxy_id,
            session_id=session.id,
            database=session.database,
            client_addr=session.client_addr,
            client_port=session.client_port,
            application_name=session.application_name,
        )
        template.identity.CopyFrom(
            pb.Identity(
                subject=identity.subject,
                issuer=identity.issuer,
                groups=identity.groups,
                auth_method=identity.auth_method,
            )
        )
        _remember(self._templates, id(session), (session, identity, template))
        return template

    def _build(self, record: pb.AuditRecord, event: tuple[Any, ...]) -> int:
        """Fill ``record`` (already in its batch: no copy) from a queued event; returns
        an estimate of its size in bytes."""
        kind = event[0]
        record.record_id = new_record_id()  # consecutive: stores keep them as ranges
        if kind == _AUTH:
            _, now_ns, peer, port, code, sqlstate, context, session_id, database = event
            record.kind = pb.AUDIT_KIND_AUTH_REFUSED
            record.time_unix_us = now_ns // 1000
            record.proxy_id = self.proxy_id
            record.session_id = session_id
            record.client_addr = peer
            record.client_port = port
            record.database = database
            record.auth.code = code
            record.auth.sqlstate = sqlstate
            record.auth.context.update(context)
            return 300
        identity: Identity = event[2]
        session: SessionFacts = event[3]
        # The session's fields (identity included) come from a record filled once per
        # session: one C-level merge instead of eight field assignments per record.
        record.MergeFrom(self._session_template(identity, session))
        record.time_unix_us = event[1] // 1000
        tally = self._sessions.get(session.id)
        sql_chars = 0
        if kind == _STATEMENT:
            execution = event[4]
            record.kind = pb.AUDIT_KIND_STATEMENT
            duration_ns = max(0, execution.finished_ns - execution.started_ns)
            record.time_unix_us = (event[1] - duration_ns) // 1000  # when it was sent
            sql_chars = self._statement(
                record, execution.facts, getattr(execution.analysis, "sql", None)
            )
            self._decision(record, execution.decision)
            outcome = record.outcome
            outcome.status = execution.status
            outcome.rows = execution.rows
            if execution.rows_affected is not None:
                outcome.rows_affected = execution.rows_affected
            outcome.bytes_sent = execution.bytes_sent
            outcome.duration_us = duration_ns // 1000
            outcome.sqlstate = execution.sqlstate
            outcome.row_limit_reached = execution.limit_reached
            if tally is not None:
                tally.statements += 1
                tally.rows += execution.rows
                tally.bytes_sent += execution.bytes_sent
        elif kind == _REFUSAL:
            record.kind = pb.AUDIT_KIND_REFUSAL
            if event[5] is not None:
                sql_chars = self._statement(record, event[5], None)
            self._decision(record, event[4])
            record.outcome.status = "refused"
            record.outcome.sqlstate = event[6]
            if tally is not None:
                tally.refusals += 1
        elif kind == _OPEN:
            record.kind = pb.AUDIT_KIND_SESSION_OPEN
            grant: SessionGrant | None = event[4]
            if grant is not None:
                record.decision.decision_id = grant.decision_id
                record.decision.action = pb.ACTION_ALLOW if grant.allowed else pb.ACTION_DENY
                record.decision.reasons.extend(grant.reasons)
            if grant is not None and not grant.allowed:
                self._templates.pop(id(session), None)  # refused: no record follows
            if grant is None or grant.allowed:
                if len(self._sessions) >= OPEN_SESSIONS_MAX:
                    del self._sessions[next(iter(self._sessions))]
                self._sessions[session.id] = _SessionTally(event[1])
        else:
            record.kind = pb.AUDIT_KIND_SESSION_CLOSE
            stats: dict[str, Any] = event[4]
            self._sessions.pop(session.id, None)
            totals = record.session_stats
            if tally is not None:
                totals.statements = tally.statements
                totals.refusals = tally.refusals
                totals.rows = tally.rows
                totals.bytes_sent = tally.bytes_sent
                totals.duration_us = (event[1] - tally.opened_ns) // 1000
            for name in ("statements", "refusals", "rows", "bytes_sent", "duration_us"):
                if isinstance(stats.get(name), int):
                    setattr(totals, name, stats[name])
            totals.reason = str(stats.get("reason", ""))
            # Its last record: the session's template (~2 KiB) is not needed again.
            self._templates.pop(id(session), None)
        return 400 + sql_chars

    def _statement(
        self, record: pb.AuditRecord, facts: Mapping[str, Any], raw_sql: str | None
    ) -> int:
        """Fill the record's statement; returns the length of its SQL (for the batch's
        size estimate: reading it back from the record costs more than the rest)."""
        if self.config.store_sql_literals and raw_sql is not None:
            return self._fill_statement(record.statement, facts, raw_sql)
        # Without literals the message depends on the facts alone, which the analyzer's
        # memo hands out as the same object for every execution of a statement.
        memo = self._statement_messages.get(id(facts))
        if memo is None or memo[0] is not facts:
            message = pb.AuditStatement()
            memo = (facts, message, self._fill_statement(message, facts, None))
            _remember(self._statement_messages, id(facts), memo)
        record.statement.CopyFrom(memo[1])
        return memo[2]

    def _fill_statement(
        self, statement: pb.AuditStatement, facts: Mapping[str, Any], raw_sql: str | None
    ) -> int:
        statement.fingerprint = str(facts.get("fingerprint", ""))
        if self.config.store_sql_literals and raw_sql is not None:
            sql = raw_sql
            statement.sql_has_literals = True
        else:
            sql = str(facts.get("sql_normalized", ""))
        if len(sql) > SQL_MAX_CHARS:
            sql = sql[:SQL_MAX_CHARS] + " …[truncated]"
        statement.sql = sql
        statement.command = str(facts.get("command", ""))
        statement.protocol = str(facts.get("protocol", ""))
        for relation in facts.get("relations", ()) or ():
            statement.relations.add(
                schema=str(relation.get("schema", "")),
                name=str(relation.get("name", "")),
                kind=str(relation.get("kind", "")),
                access=str(relation.get("access", "")),
            )
        return len(sql)

    def _decision(self, record: pb.AuditRecord, decision: Decision) -> None:
        message = record.decision
        seen = self._seen_decisions
        memo = self._decision_messages.get(id(decision))
        if memo is not None and memo[0] is decision:
            message.CopyFrom(memo[1])
        else:
            _fill_decision(message, decision)
            if decision.decision_id in seen:
                # Seen twice: a decision the cache hands out again; keep its message.
                kept = pb.AuditDecision()
                kept.CopyFrom(message)
                _remember(self._decision_messages, id(decision), (decision, kept))
        # A decision id seen before: the proxy's decision cache answered.
        if decision.decision_id in seen:
            message.cached = True
            seen.move_to_end(decision.decision_id)
        elif decision.cacheable:
            # Only the cache hands a decision out again: remembering every decision id of
            # a policy that says TTL 0, or of local mode, held up to 100,000 ids (~18 MiB).
            seen[decision.decision_id] = None
            if len(seen) > SEEN_DECISIONS_MAX:
                seen.popitem(last=False)

    # -- spooling ----------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.batch_max_delay_s)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            if self._pending:
                events, self._pending = self._pending, []
                self._held.extend(self._frames(events))
                self.records_built += len(events)
            while self._held:
                payload, count = self._held[0]
                try:
                    await asyncio.to_thread(self.spool.append, payload)
                except (OSError, SpoolFull) as exc:
                    self.spool_failures += 1
                    self.last_error = str(exc)
                    if self._durable_ok:
                        log.error(
                            "audit records cannot be made durable",
                            extra={"event": "audit_not_durable", "error": str(exc)},
                        )
                    self._durable_ok = False
                    return
                del self._held[0]
                self.records_spooled += count
                self._spooled.set()
            if not self._durable_ok:
                log.info("audit spool writable again", extra={"event": "audit_durable"})
            self._durable_ok = True

    def _frames(self, events: list[tuple[Any, ...]]) -> list[tuple[bytes, int]]:
        """Serialized batches of records: at most ``batch_max_records`` and about
        FRAME_MAX_BYTES each (gRPC refuses messages over 4 MiB)."""
        frames: list[tuple[bytes, int]] = []
        request = pb.ReportExecutionsRequest()
        size = 0
        for event in events:
            record = request.records.add()
            try:
                size += self._build(record, event)
            except Exception:  # a bug must not lose the other records
                del request.records[-1]
                log.exception("audit record not built", extra={"event": "audit_bug"})
                continue
            if len(request.records) >= self.config.batch_max_records or size >= FRAME_MAX_BYTES:
                frames.append((request.SerializeToString(), len(request.records)))
                request = pb.ReportExecutionsRequest()
                size = 0
        if request.records:
            frames.append((request.SerializeToString(), len(request.records)))
        return frames

    # -- delivery ----------------------------------------------------------------------

    async def _send_loop(self) -> None:
        backoff = RETRY_S[0]
        while True:
            await self._spooled.wait()
            self._spooled.clear()
            while self.spool.acked < self.spool.size:
                request, count = b"", 0
                end = self.spool.acked
                try:
                    async with self._lock:
                        payloads, end = await asyncio.to_thread(
                            self.spool.read, self.spool.acked, SEND_MAX_BYTES
                        )
                    # Concatenated messages are one message with all their records, in
                    # order: the frames go out as the bytes they are in the spool.
                    request = b"".join(payloads)
                    count = record_count(request)
                except Exception as exc:  # unreadable spool: retry, never skip records
                    self.last_error = str(exc)
                    log.error(
                        "audit spool unreadable",
                        extra={"event": "audit_spool_unreadable", "error": str(exc)},
                    )
                    count = 0
                try:
                    accepted = await self.send(request, count) if count else 0
                except Exception as exc:  # a sender must not stop delivery for good
                    log.warning(
                        "audit delivery failed",
                        extra={"event": "audit_send_failed", "error": str(exc)},
                    )
                    accepted = 0
                if not count or accepted != count:
                    self.send_failures += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._spooled.wait(), backoff)
                    self._spooled.clear()
                    backoff = min(backoff * 2, RETRY_S[1])
                    continue
                backoff = RETRY_S[0]
                self.records_acked += count
                async with self._lock:
                    await asyncio.to_thread(self._acknowledge, end)
            if not self._durable_ok and self._held:
                self._wake.set()  # room again: spool what was held back

    def _acknowledge(self, end: int) -> None:
        spool = self.spool
        spool.acknowledge(end)
        if spool.acked and spool.acked >= spool.max_bytes // 4:
            spool.compact()

    # -- statistics --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "durable_ok": self._durable_ok,
            "pending": self.pending,
            "records_built": self.records_built,
            "records_spooled": self.records_spooled,
            "records_acked": self.records_acked,
            "spool_bytes": self.spool.size,
            "unacknowledged_bytes": self.unacknowledged_bytes,
            "send_failures": self.send_failures,
            "spool_failures": self.spool_failures,
            "sessions_memoized": len(self._templates),
        }

    def metrics_text(self) -> str:
        """Prometheus text (format 0.0.4) for the proxy's /metrics."""
        s = self.stats()
        lines = []
        for name, value, kind, help_text in (
            (
                "pgwarden_proxy_audit_durable",
                int(s["durable_ok"]),
                "gauge",
                "1 while records can be made durable.",
            ),
            (
                "pgwarden_proxy_audit_records_spooled_total",
                s["records_spooled"],
                "counter",
                "Records written to the spool.",
            ),
            (
                "pgwarden_proxy_audit_records_acked_total",
                s["records_acked"],
                "counter",
                "Records the PDP made durable.",
            ),
            (
                "pgwarden_proxy_audit_spool_bytes",
                s["spool_bytes"],
                "gauge",
                "Size of the spool file.",
            ),
            (
                "pgwarden_proxy_audit_unacknowledged_bytes",
                s["unacknowledged_bytes"],
                "gauge",
                "Spooled bytes the PDP has not acknowledged.",
            ),
            (
                "pgwarden_proxy_audit_send_failures_total",
                s["send_failures"],
                "counter",
                "Failed deliveries (retried).",
            ),
            (
                "pgwarden_proxy_audit_spool_failures_total",
                s["spool_failures"],
                "counter",
                "Batches the spool could not take.",
            ),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"


def _fill_decision(message: pb.AuditDecision, decision: Decision) -> None:
    """The record's decision, without ``cached`` (which depends on the record)."""
    message.decision_id = decision.decision_id
    message.action = _ACTIONS.get(decision.action, pb.ACTION_DENY)
    message.reasons.extend(decision.reasons)
    for column, function in decision.mask.items():
        message.mask[column] = str(function)
    if decision.row_limit is not None:
        message.row_limit = decision.row_limit
    message.dry_run = decision.dry_run
    message.revision = decision.revision
    message.code = decision.code


def record_count(request: bytes) -> int:
    """The records in a serialized ``pb.ReportExecutionsRequest``, counted from their
    length prefixes without parsing them; ValueError when it is not one."""
    count = pos = 0
    size = len(request)
    while pos < size:
        if request[pos] != _RECORDS_TAG:
            raise ValueError(f"not a record at byte {pos} of a spooled batch")
        pos += 1
        length = shift = 0
        while True:  # the record's length: a varint
            if pos >= size or shift > 28:
                raise ValueError("truncated record length in a spooled batch")
            byte = request[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        pos += length
        count += 1
    if pos != size:
        raise ValueError("truncated record in a spooled batch")
    return count


def _remember(memo: dict[int, Any], key: int, value: Any) -> None:
    """Keep ``value`` in a bounded memo keyed by an object's id (the value holds the
    object, so the id cannot be reused while the entry lives)."""
    if len(memo) >= MESSAGE_MEMO_MAX:
        memo.clear()
    memo[key] = value


class LocalAuditStore:
    """The audit trail without a PDP (``[decision] mode = "local"``, development): the
    PDP's own chained JSON Lines store, in this process. ``send`` is the reporter's
    delivery function: it answers once the records are durable in the file."""

    def __init__(self, path: Path, *, replica_id: str, fsync: str = "batch") -> None:
        from pgwarden.pdp.audit.config import AuditStoreConfig  # noqa: PLC0415
        from pgwarden.pdp.audit.store import AuditWriter, JsonlStore  # noqa: PLC0415

        self.writer = AuditWriter(
            JsonlStore(AuditStoreConfig(path=path, fsync=fsync, replica_id=replica_id))
        )

    async def start(self) -> LocalAuditStore:
        await self.writer.start()
        return self

    async def send(self, request: bytes, count: int) -> int:
        from pgwarden.pdp.audit.records import stored_documents  # noqa: PLC0415
        from pgwarden.pdp.audit.store import AuditStoreError  # noqa: PLC0415

        records = pb.ReportExecutionsRequest.FromString(request).records
        try:
            await self.writer.write(stored_documents(records))
        except AuditStoreError:
            return 0
        return len(records) if len(records) == count else 0

    async def close(self) -> None:
        await self.writer.close()
