"""The relay phase of a proxied session, without I/O: client bytes in, decisions asked
for, bytes out to the server and the client.

How a refusal is enforced. Whatever the protocol, a refused statement never reaches the
server. In its place the relay sends ``Bind`` to a prepared statement that cannot exist
(its name holds a random per-session marker) followed by ``Sync``. The server answers with
an ErrorResponse and enters exactly the state PostgreSQL would be in had the refused
statement failed: an implicit transaction is rolled back, an explicit transaction block is
marked failed (the client then sees 25P02 until ROLLBACK; COMMIT reports ROLLBACK), and in
the extended protocol everything up to Sync is discarded. The relay replaces that one
ErrorResponse, recognised by the marker, with the policy's (SQLSTATE 42501, the reason in
the message, the decision id in the detail) and forwards the server's ReadyForQuery, so
client and server always agree on the transaction status.

A simple-query string holding several statements runs all or nothing: if any of its
statements is refused, none of it is sent.
"""

from __future__ import annotations

import secrets
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pgwarden.proxy.decision import Decision, Statement
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer

_HEADER = struct.Struct("!ci")
REFUSED_SQLSTATE = "42501"  # insufficient_privilege


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the proxy itself refuses a statement before any decision (e.g. it does not
    parse, or it uses a protocol feature that bypasses SQL inspection)."""

    sqlstate: str
    message: str


Analysis = Statement | Refusal


class StatementAnalyzer(Protocol):
    """What the relay needs from statement analysis."""

    def simple_query(self, sql: str) -> list[Analysis]:
        """The statements of a simple-query string, in order (empty for an empty query)."""
        ...

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis:
        """An extended-protocol execution of ``sql`` (as parsed) with bound parameters."""
        ...

    def unknown_portal(self, portal: str) -> Analysis:
        """Execute of a portal the client did not Bind (e.g. a SQL-level cursor)."""
        ...

    def unknown_statement(self, name: str) -> Analysis:
        """Bind of a statement the client did not Parse (e.g. a SQL-level PREPARE)."""
        ...


@dataclass(slots=True)
class DecisionRequest:
    """Statements the relay needs decisions for before it can go on, in order."""

    statements: list[Statement]


@dataclass(slots=True)
class _PendingQuery:
    raw: bytes
    analyses: list[Analysis]


@dataclass(slots=True)
class _PendingBatch:
    messages: list[bytes]
    # (index of the first message of the execution's chain -- its Parse or Bind when they
    # are in this batch -- so a refused statement's text never reaches the server, analysis)
    executions: list[tuple[int, Analysis]]
    ends_with_sync: bool


@dataclass(frozen=True, slots=True)
class _Denial:
    error: bytes
    sync_seq: int  # resolved by the ReadyForQuery answering this Sync/Query number


def refusal_error(decision: Decision) -> bytes:
    """(B) The ErrorResponse that tells the client a statement was refused."""
    detail = f"decision_id={decision.decision_id}"
    if decision.code:
        detail += f" code={decision.code}"
    return m.build_error_response(REFUSED_SQLSTATE, decision.refusal_message(), detail=detail)


class RelayCore:
    """Both directions of one session after authentication."""

    def __init__(self, analyzer: StatementAnalyzer, *, max_message_size: int) -> None:
        self.analyzer = analyzer
        self.client = FrameBuffer(max_message_size)
        self.max_message_size = max_message_size
        self.marker = "pgwarden_refused_" + secrets.token_hex(16)
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.tx_status = "I"
        self.terminated = False
        self.rows_relayed = 0
        # Extended-protocol names the client created: statement -> SQL, portal -> bind.
        self._statements: dict[str, str] = {}
        self._portals: dict[str, tuple[str | None, m.Bind]] = {}
        self._batch: list[bytes] = []
        self._batch_executions: list[tuple[int, Analysis]] = []
        self._batch_origin: dict[tuple[str, str], int] = {}  # ("S"|"P", name) -> index
        self._waiting: _PendingQuery | _PendingBatch | None = None
        self._discard_until_sync = False
        self._denials: deque[_Denial] = deque()
        self._syncs_sent = 0
        self._rfq_received = 0
        # Server stream scanning state.
        self._server_partial = b""
        self._server_skip = 0

    @property
    def in_transaction(self) -> bool:
        return self.tx_status != "I"

    @property
    def waiting(self) -> bool:
        return self._waiting is not None

    # -- client -> server --------------------------------------------------------------------

    def client_data(self, data: bytes) -> DecisionRequest | None:
        """Feed bytes from the client; returns a request when decisions are needed first."""
        self.client.feed(data)
        return None if self._waiting else self._drain_client()

    def resolve(self, decisions: Sequence[Decision]) -> DecisionRequest | None:
        """Apply the decisions for the last request, then go on with buffered client data."""
        pending, self._waiting = self._waiting, None
        if isinstance(pending, _PendingQuery):
            self._finish_query(pending, list(decisions))
        elif isinstance(pending, _PendingBatch):
            self._finish_batch(pending, list(decisions))
        return self._drain_client()

    def _drain_client(self) -> DecisionRequest | None:
        while not self.terminated:
            msg = self.client.next_message()
            if msg is None:
                return None
            request = self._client_message(*msg)
            if request is not None:
                return request
        return None

    def _client_message(self, type_: bytes, body: bytes) -> DecisionRequest | None:
        raw = m.frame(type_, body)
        if self._discard_until_sync:
            # After a refusal in the extended protocol, PostgreSQL discards until Sync.
            if type_ == b"S":
                self._discard_until_sync = False
                self._send_sync(raw)
            elif type_ == b"X":
                self._terminate(raw)
            return None
        if type_ == b"Q":  # Query
            return self._on_query(raw, m.parse_query(body))
        if type_ in b"PBDCEHS":
            return self._on_extended(type_, body, raw)
        if type_ in b"dcf":  # CopyData, CopyDone, CopyFail
            if self._batch:
                self._batch.append(raw)
            else:
                self.to_server.append(raw)
            return None
        if type_ == b"X":  # Terminate
            self._terminate(raw)
            return None
        if type_ == b"F":  # FunctionCall
            refusal = Refusal(
                REFUSED_SQLSTATE,
                "pgwarden: the FunctionCall protocol message is not allowed: it would bypass "
                "statement inspection; call the function from SQL instead",
            )
            self._refuse([], m.build_error_response(refusal.sqlstate, refusal.message), True)
            return None
        if type_ == b"p":
            raise m.ProtocolViolation("unexpected password message after authentication")
        raise m.ProtocolViolation(f"unknown frontend message type {type_!r}")

    def _terminate(self, raw: bytes) -> None:
        self.to_server.append(raw)
        self.terminated = True

    def _send_sync(self, raw: bytes) -> None:
        self.to_server.append(raw)
        self._syncs_sent += 1

    # Simple query ---------------------------------------------------------------------------

    def _on_query(self, raw: bytes, query: m.Query) -> DecisionRequest | None:
        analyses = self.analyzer.simple_query(query.sql)
        for a in analyses:
            if isinstance(a, Refusal):
                self._refuse([], m.build_error_response(a.sqlstate, a.message), True)
                return None
        if not analyses:  # empty query: the server answers EmptyQueryResponse
            self._send_sync(raw)
            return None
        self._waiting = _PendingQuery(raw, analyses)
        return DecisionRequest([a for a in analyses if isinstance(a, Statement)])

    def _finish_query(self, pending: _PendingQuery, decisions: list[Decision]) -> None:
        for decision in decisions:
            if not decision.permits:
                self._refuse([], refusal_error(decision), True)
                return
        self._send_sync(pending.raw)

    # Extended protocol ----------------------------------------------------------------------

    def _on_extended(self, type_: bytes, body: bytes, raw: bytes) -> DecisionRequest | None:
        index = len(self._batch)
        self._batch.append(raw)
        if type_ == b"P":  # Parse
            parse = m.parse_parse(body)
            self._statements[parse.name] = parse.sql
            self._batch_origin["S", parse.name] = index
        elif type_ == b"B":  # Bind
            bind = m.parse_bind(body)
            self._portals[bind.portal] = (self._statements.get(bind.statement), bind)
            origin = self._batch_origin.get(("S", bind.statement), index)
            self._batch_origin["P", bind.portal] = origin
        elif type_ == b"E":  # Execute
            execute = m.parse_execute(body)
            origin = self._batch_origin.get(("P", execute.portal), index)
            self._batch_executions.append((origin, self._analyze_execute(execute)))
        elif type_ == b"C":  # Close
            close = m.parse_close(body)
            (self._statements if close.kind == "S" else self._portals).pop(close.name, None)
        elif type_ == b"D":  # Describe
            m.parse_describe(body)
        elif type_ in b"HS":  # Flush, Sync
            return self._end_batch(ends_with_sync=type_ == b"S")
        return None

    def _analyze_execute(self, execute: m.Execute) -> Analysis:
        bound = self._portals.get(execute.portal)
        if bound is None:
            return self.analyzer.unknown_portal(execute.portal)
        sql, bind = bound
        if sql is None:
            return self.analyzer.unknown_statement(bind.statement)
        return self.analyzer.execution(sql, bind.params, bind.param_formats)

    def _end_batch(self, *, ends_with_sync: bool) -> DecisionRequest | None:
        batch = _PendingBatch(self._batch, self._batch_executions, ends_with_sync)
        self._batch, self._batch_executions = [], []
        self._batch_origin.clear()
        statements = [a for _, a in batch.executions if isinstance(a, Statement)]
        if not statements and not batch.executions:
            self._forward_batch(batch)
            return None
        self._waiting = batch
        return DecisionRequest(statements)

    def _finish_batch(self, batch: _PendingBatch, decisions: list[Decision]) -> None:
        answers = iter(decisions)
        for index, analysis in batch.executions:
            if isinstance(analysis, Refusal):
                error = m.build_error_response(analysis.sqlstate, analysis.message)
            else:
                decision = next(answers)
                if decision.permits:
                    continue
                error = refusal_error(decision)
            self._refuse(batch.messages[:index], error, batch.ends_with_sync)
            return
        self._forward_batch(batch)

    def _forward_batch(self, batch: _PendingBatch) -> None:
        self.to_server.extend(batch.messages)
        if batch.ends_with_sync:
            self._syncs_sent += 1

    # Refusal --------------------------------------------------------------------------------

    def _refuse(self, prefix: list[bytes], error: bytes, ends_with_sync: bool) -> None:
        """Send ``prefix``, then make the server fail in place of the refused statement."""
        self.to_server.extend(prefix)
        self.to_server.append(m.build_bind("", self.marker))
        self._denials.append(_Denial(error, self._syncs_sent))
        if ends_with_sync:
            self._send_sync(m.build_sync())
        else:
            self.to_server.append(m.build_flush())
            self._discard_until_sync = True

    # -- server -> client --------------------------------------------------------------------

    def server_data(self, data: bytes) -> None:
        """Feed bytes from the server; what the client should see goes to ``to_client``.

        Messages pass through as the bytes they arrived in; only ReadyForQuery and (while a
        refusal is outstanding) ErrorResponse are looked into.
        """
        if self._server_partial:
            data = self._server_partial + data
            self._server_partial = b""
        n, pos, start = len(data), 0, 0
        out = self.to_client
        while pos < n:
            if self._server_skip:
                take = min(self._server_skip, n - pos)
                pos += take
                self._server_skip -= take
                continue
            if n - pos < 5:
                break
            type_, length = _HEADER.unpack_from(data, pos)
            if length < 4:
                raise m.ProtocolViolation(f"server sent an invalid message length {length}")
            total = length + 1
            if type_ == b"Z" or (type_ == b"E" and self._denials):
                if length > self.max_message_size:
                    raise m.ProtocolViolation(f"server message of {length} bytes is too large")
                if n - pos < total:
                    break
                replacement = self._inspect(type_, data[pos + 5 : pos + total])
                if replacement is not None:
                    if start < pos:
                        out.append(data[start:pos])
                    out.append(replacement)
                    start = pos + total
                pos += total
                continue
            if type_ == b"D":  # DataRow
                self.rows_relayed += 1
            if n - pos >= total:
                pos += total
            else:
                self._server_skip = total - (n - pos)
                pos = n
        if pos < n:
            self._server_partial = data[pos:]
        if start == 0 and pos == n:
            out.append(data)
        elif start < pos:
            out.append(data[start:pos])

    def _inspect(self, type_: bytes, body: bytes) -> bytes | None:
        if type_ == b"Z":  # ReadyForQuery
            self.tx_status = m.parse_ready_for_query(body)
            self._rfq_received += 1
            while self._denials and self._denials[0].sync_seq < self._rfq_received:
                self._denials.popleft()  # the server failed earlier; PostgreSQL would too
            return None
        # ErrorResponse while a refusal is outstanding: ours if it names the marker.
        if self.marker.encode() in body:
            return self._denials.popleft().error
        return None
