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
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pgwarden.proxy.decision import Action, Decision, Statement
from pgwarden.proxy.masking import MaskKey, RowMask, parse_row_description, plan_row_mask
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer

_LENGTH = struct.Struct("!i")
REFUSED_SQLSTATE = "42501"  # insufficient_privilege
LIMIT_SQLSTATE = "54000"  # program_limit_exceeded: a row limit, a statement too long

# Server message types, as ints (indexing bytes gives ints).
_DATA_ROW, _COPY_DATA = ord("D"), ord("d")
_ROW_DESCRIPTION, _NO_DATA = ord("T"), ord("n")
_READY_FOR_QUERY, _ERROR = ord("Z"), ord("E")
_COMMAND_COMPLETE, _PORTAL_SUSPENDED, _EMPTY_QUERY = ord("C"), ord("s"), ord("I")
_COPY_DONE = ord("c")
_CONFIRMATIONS = frozenset({ord("1"), ord("2")})  # ParseComplete, BindComplete
_PARAMETER_STATUS = ord("S")
# Client encodings whose bytes the proxy reads as the server does: it decodes SQL as UTF-8.
# Under others a multibyte character can end in the byte of a backslash (GBK, SJIS, BIG5)
# or spell other characters (LATIN1).
_READ_ENCODINGS = frozenset({"UTF8", "SQL_ASCII"})
_ROW_TYPES = frozenset({_DATA_ROW, _COPY_DATA})
# Client packets the fast lane takes whole, without the frame buffer: what libpq sends
# for each execution of a prepared statement (Bind, Describe portal, Execute, Sync) and
# for each extended-protocol query (the same after a Parse).
_FAST_SHAPES = frozenset({b"BDES", b"PBDES"})
_FAST_FIRST = frozenset({b"B", b"P"})  # a Query, say, is not even scanned
_INSPECTED = frozenset(
    {
        _ROW_DESCRIPTION,
        _NO_DATA,
        _READY_FOR_QUERY,
        _ERROR,
        _COMMAND_COMPLETE,
        _PORTAL_SUSPENDED,
        _EMPTY_QUERY,
        _COPY_DONE,
        _PARAMETER_STATUS,
    }
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the proxy itself refuses a statement before any decision (e.g. it does not
    parse, or it uses a protocol feature that bypasses SQL inspection)."""

    sqlstate: str
    message: str


class Analyzed(Protocol):
    """An analyzed statement: what is decided (``statement``), whatever else the
    analyzer keeps with it (handed back in :meth:`StatementAnalyzer.completed`)."""

    @property
    def statement(self) -> Statement: ...


Analysis = Analyzed | Refusal


class StatementAnalyzer(Protocol):
    """What the relay needs from statement analysis."""

    def simple_query(self, sql: str) -> list[Analysis]:
        """The statements of a simple-query string, in order (empty for an empty query)."""
        ...

    def parsed(self, name: str, sql: str) -> None:
        """A Parse of ``sql`` as statement ``name`` went to the server."""
        ...

    def closed(self, name: str) -> None:
        """A Close of statement ``name`` went to the server."""
        ...

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis | None:
        """An extended-protocol execution of ``sql`` (as parsed) with bound parameters;
        None for an empty statement, which runs nothing."""
        ...

    def preparation(self, sql: str) -> Analysis | None:
        """A Parse of ``sql`` that no Execute of its batch follows (a statement prepared
        in a round trip of its own): decided before the server sees it, as an execution
        of it would be; None for an empty statement."""
        ...

    def completed(self, analysis: Analyzed, *, rolled_back: bool = False) -> None:
        """The server completed the statement: apply its session effects
        (``rolled_back``: its CommandComplete said ROLLBACK, as for COMMIT of a failed
        transaction block)."""
        ...

    def ready(self, status: str, *, failed: bool) -> None:
        """ReadyForQuery with transaction ``status``; ``failed``: the server reported an
        error since the last one."""
        ...

    def portal_bound(
        self,
        portal: str,
        sql: str | None,
        params: Sequence[bytes | None],
        param_formats: Sequence[int],
    ) -> None:
        """The server confirmed a Bind of named ``portal`` to ``sql`` (None: a statement
        the client did not Parse, or one not known yet): SQL FETCH can read from it."""
        ...

    def parameter_status(self, name: str, value: str) -> None:
        """The server reported a setting (ParameterStatus: at start and on each change)."""
        ...

    def unknown_portal(self, portal: str) -> Analysis | None:
        """Execute of a portal the client did not Bind (e.g. a SQL-level cursor)."""
        ...

    def unknown_statement(self, name: str) -> Analysis | None:
        """Bind of a statement the client did not Parse (e.g. a SQL-level PREPARE)."""
        ...

    def changes_resolution(self, analysis: Analyzed) -> bool:
        """Whether ``analysis``, once it runs, may change what names resolve to (a change
        of search_path, a transaction end that undoes one, a temporary relation)."""
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
class _BatchExecution:
    origin: int  # first message of its chain (its Parse or Bind when in this batch)
    index: int  # the Execute message; for a preparation, its Parse
    portal: str | None  # None: a preparation (a Parse that no Execute of the batch follows)
    analysis: Analysis


_Name = tuple[str, str]  # ("S", statement) or ("P", portal)
_Bound = tuple[str | None, m.Bind]  # a portal: its statement's SQL (None: not ours), Bind
# What a name holds while the server has not answered the Parse or Bind of an earlier
# segment that sets it; as a statement's SQL, a text no SQL can be (it never holds a NUL).
_UNSETTLED: Any = object()
_UNSETTLED_SQL = "\0unsettled"


@dataclass(slots=True)
class _PendingBatch:
    messages: list[bytes]
    executions: list[_BatchExecution]
    ends_with_sync: bool
    sent: dict[int, tuple[_Name, Any]]  # message index -> the name its Parse/Bind sets
    # The client's packet when it was exactly this batch (the fast lane): forwarded as
    # one buffer when every message of it goes to the server.
    packet: bytes | None = None
    # Execute messages whose statement may change name resolution
    resolution_changes: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class _Denial:
    error: bytes
    sync_seq: int  # resolved by the ReadyForQuery answering this Sync/Query number


@dataclass(frozen=True, slots=True)
class Refused:
    """A statement that never reached the server: refused by the policy (``decision``)
    or by the proxy itself (no decision: it does not parse, or bypasses inspection)."""

    analysis: Analyzed | None
    decision: Decision | None
    sqlstate: str
    message: str


class Execution:
    """One statement sent to the server and what became of it: the rows and bytes the
    client received, how it ended, and the masks and row limit applied on the way."""

    __slots__ = (
        "analysis",
        "bytes_sent",
        "decision",
        "facts",
        "filtering",
        "finished_ns",
        "limit_reached",
        "offset",
        "plan",
        "portal",
        "row_limit",
        "rows",
        "rows_affected",
        "sqlstate",
        "started_ns",
        "status",
    )

    def __init__(self, decision: Decision, analysis: Analyzed, portal: str | None) -> None:
        self.decision = decision
        self.analysis = analysis
        self.facts: Mapping[str, Any] = analysis.statement.facts
        self.portal = portal
        self.row_limit = decision.row_limit
        self.offset = 0  # rows already sent from this portal by earlier Executes
        self.plan: RowMask | None = None
        # Whether rows need a look (masks or a row limit); plain rows pass as bytes.
        self.filtering = self.row_limit is not None or bool(decision.mask or decision.detect)
        self.rows = 0
        self.rows_affected: int | None = None
        self.bytes_sent = 0
        self.sqlstate = ""
        self.limit_reached = False
        self.status = "pending"  # pending, complete, suspended, failed, skipped, interrupted
        self.started_ns = time.monotonic_ns()
        self.finished_ns = 0

    def set_plan(self, plan: RowMask | None) -> None:
        self.plan = plan
        self.filtering = plan is not None or self.row_limit is not None

    @property
    def duration_us(self) -> int:
        return (self.finished_ns - self.started_ns) // 1000


class _Describe:
    """A Describe whose RowDescription/NoData answer is forwarded (the client's) or
    swallowed to plan the masks of the execution that follows (``for_execution``)."""

    __slots__ = ("for_execution",)

    def __init__(self, for_execution: Execution | None) -> None:
        self.for_execution = for_execution


_SYNC = "sync"  # a Query or Sync: answered by ReadyForQuery
_EMPTY = "empty"  # an empty statement: answered by EmptyQueryResponse
_Reply = Execution | _Describe | str


def _unconfirmed_refusal(kind: str, name: str) -> Refusal:
    """The proxy's refusal of a name used before the server confirmed what it holds."""
    message = "its Parse" if kind == "statement" else "its Bind"
    return Refusal(
        REFUSED_SQLSTATE,
        f'pgwarden: {kind} "{name}" is used before the server confirmed {message}, so '
        "what it holds is not known yet; use it after that Sync is answered",
    )


def _copies_in(analysis: Analyzed) -> bool:
    copy = analysis.statement.facts.get("copy")
    return isinstance(copy, Mapping) and copy.get("target") == "stdin"


_EXTENDED_COPY_IN = Refusal(
    REFUSED_SQLSTATE,
    "pgwarden: COPY FROM STDIN is accepted in a simple Query only: in the extended "
    "protocol the server ignores the Sync sent with it",
)


_RESOLUTION_PENDING = Refusal(
    REFUSED_SQLSTATE,
    "pgwarden: a statement is refused while one sent before it that may change what names "
    "refer to (search_path, a transaction end that undoes one, a temporary relation) has not "
    "finished: which relations this one reads is not known yet; send it once that "
    "statement's results are in",
)


def _portal_resolution_refusal(portal: str) -> Refusal:
    return Refusal(
        REFUSED_SQLSTATE,
        f'pgwarden: portal "{portal}" was bound under another search_path than the current '
        "one: the server runs it as it was bound, which the proxy cannot judge now; bind it "
        "again",
    )


def _size_refusal(size: int, limit: int) -> Refusal:
    return Refusal(
        LIMIT_SQLSTATE,
        f"pgwarden: a statement of {size} bytes is longer than the proxy analyzes "
        f"([proxy] max_statement_bytes = {limit}); load bulk data with COPY FROM STDIN, "
        "or send it in smaller statements",
    )


def _encoding_refusal(encoding: str) -> Refusal:
    return Refusal(
        REFUSED_SQLSTATE,
        f"pgwarden: client_encoding is {encoding} in this session, and the proxy reads SQL "
        "as UTF-8: it refuses statements with a backslash or a character outside ASCII "
        "under another encoding; SET client_encoding TO 'UTF8' to send it",
    )


def refusal_error(decision: Decision) -> bytes:
    """(B) The ErrorResponse that tells the client a statement was refused."""
    detail = f"decision_id={decision.decision_id}"
    if decision.code:
        detail += f" code={decision.code}"
    return m.build_error_response(REFUSED_SQLSTATE, decision.refusal_message(), detail=detail)


def row_limit_error(execution: Execution) -> bytes:
    """(B) The ErrorResponse that ends a statement cut by its row limit."""
    return m.build_error_response(
        LIMIT_SQLSTATE,
        f"pgwarden: row limit of {execution.row_limit} rows reached; the rest of the result "
        "was not sent",
        detail=f"decision_id={execution.decision.decision_id}",
        hint="add a LIMIT, or narrow the query with WHERE",
    )


class RelayCore:
    """Both directions of one session after authentication."""

    def __init__(
        self,
        analyzer: StatementAnalyzer,
        *,
        max_message_size: int,
        max_statement_bytes: int | None = None,
        column_name: Callable[[int, int], str | None] = lambda oid, attnum: None,
        mask_key: MaskKey | None = None,
        on_complete: Callable[[Execution], None] | None = None,
        on_refused: Callable[[Refused], None] | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.client = FrameBuffer(max_message_size)
        self.max_message_size = max_message_size
        # Analysis holds the event loop about 2 us per byte: longer SQL is refused.
        self.max_statement_bytes = max_statement_bytes or max_message_size
        self.column_name = column_name
        self.mask_key = mask_key or MaskKey(secrets.token_bytes(32))
        self.on_complete = on_complete
        self.on_refused = on_refused
        self.marker = "pgwarden_refused_" + secrets.token_hex(16)
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.tx_status = "I"
        self.terminated = False
        # Set when a row limit is reached: the session cancels the upstream query.
        self.cancel_requested = False
        # Extended-protocol names the client created, as the server has them: statement
        # -> SQL, portal -> (SQL, Bind). A name changes when the server confirms its Parse
        # or Bind (ParseComplete, BindComplete), in the server's order: one that fails, or
        # is skipped after an error, leaves the name as it was.
        self._statements: dict[str, str] = {}
        self._portals: dict[str, _Bound] = {}
        # Parses and Binds sent and not confirmed yet: (segment, key, value), oldest first.
        self._unconfirmed: deque[tuple[int, _Name, Any]] = deque()
        self._portal_rows: dict[str, int] = {}  # rows sent so far from a suspended portal
        self._batch: list[bytes] = []
        self._batch_executions: list[_BatchExecution] = []
        self._batch_origin: dict[_Name, int] = {}  # ("S"|"P", name) -> index
        # The batch's own Parses and Binds, which its later messages see: key -> value,
        # and message index -> (key, value) for the ones sent.
        self._batch_names: dict[_Name, Any] = {}
        self._batch_sent: dict[int, tuple[_Name, Any]] = {}
        # (index, SQL, why it cannot be read as the server will) of each Parse
        self._batch_parses: list[tuple[int, str, Refusal | None]] = []
        # How the server reads SQL text (from ParameterStatus); the proxy reads it as
        # UTF-8 with standard_conforming_strings on.
        self._conforming_strings = True
        self._client_encoding = "UTF8"
        self._waiting: _PendingQuery | _PendingBatch | None = None
        self._packet: bytes | None = None  # the client packet the fast lane is in
        self._discard_until_sync = False
        self._denials: deque[_Denial] = deque()
        self._syncs_sent = 0
        self._rfq_received = 0
        self._limit_segment = -1  # the segment whose row-limit error the client has
        # Name resolution: the last segment holding a statement that may change it (the
        # change is final at that segment's ReadyForQuery); Execute messages of the batch
        # being read that may change it; the segment each confirmed portal was bound in.
        self._resolution_segment = -1
        self._batch_resolution_changes: set[int] = set()
        self._portal_segments: dict[str, int] = {}
        self._failed = False  # an ErrorResponse since the last ReadyForQuery
        self._last_run_segment = -1  # the segment of the last Execute or Query sent
        self._open_segment = False  # extended-protocol messages sent since the last Sync
        self._copy_in_segment = -1  # the segment of a COPY FROM STDIN the client is feeding
        # What the server will answer, in order (pgdog's state.rs): executions, Describes
        # and Sync boundaries. ``_head`` caches the first entry when it is an Execution.
        self._replies: deque[_Reply] = deque()
        self._head: Execution | None = None
        # Server stream scanning state.
        self._server_partial = b""
        self._server_skip = 0

    @property
    def in_transaction(self) -> bool:
        return self.tx_status != "I"

    def parameter_status(self, name: str, value: str) -> None:
        """A setting the server reported, at start or when it changed."""
        if name == "standard_conforming_strings":
            self._conforming_strings = value == "on"
        elif name == "client_encoding":
            self._client_encoding = value
        self.analyzer.parameter_status(name, value)

    def _oversize(self, sql: str) -> Refusal | None:
        """The refusal of SQL longer than the proxy analyzes (None: it is not): a character
        takes 1 to 4 bytes, so only a long text is encoded to count them."""
        if len(sql) * 4 <= self.max_statement_bytes:
            return None
        size = len(sql.encode())
        return (
            _size_refusal(size, self.max_statement_bytes)
            if size > self.max_statement_bytes
            else None
        )

    def _unsettled(self) -> bool:
        """Whether statements sent have not all been followed by a ReadyForQuery: the
        server reports a changed setting (ParameterStatus) only just before one."""
        return bool(self._replies) or self._last_run_segment >= self._rfq_received

    def _unreadable(self, sql: str, *, pipelined: bool) -> Refusal | None:
        """Why the server might read ``sql`` otherwise than the proxy did (None: it will
        not). Only a backslash (or, under another client encoding, a character outside
        ASCII) can make the difference; ``pipelined``: statements sent before it have not
        finished, and one of them could change these settings first."""
        encoding = self._client_encoding
        if "\\" in sql:
            if encoding not in _READ_ENCODINGS:
                return _encoding_refusal(encoding)
            if not self._conforming_strings:
                return Refusal(
                    REFUSED_SQLSTATE,
                    "pgwarden: standard_conforming_strings is off in this session, so the "
                    "server would not read the backslashes of this statement as the proxy "
                    "does; RESET standard_conforming_strings to send it",
                )
            if pipelined:
                return Refusal(
                    REFUSED_SQLSTATE,
                    "pgwarden: a statement with a backslash is refused while statements sent "
                    "before it have not finished: one of them could change how the server "
                    "reads it (standard_conforming_strings, client_encoding); send it once "
                    "their results are in",
                )
        elif encoding not in _READ_ENCODINGS and not sql.isascii():
            return _encoding_refusal(encoding)
        return None

    # -- client -> server --------------------------------------------------------------------

    def client_data(self, data: bytes) -> DecisionRequest | None:
        """Feed bytes from the client; returns a request when decisions are needed first."""
        if (
            data[:1] in _FAST_FIRST
            and self._waiting is None
            and not self._batch
            and not self._discard_until_sync
            and not self.terminated
            and not self.client.pending
        ):
            frames = self._whole_batch(data)
            if frames is not None:
                # The fast lane: the same handlers as below, without the frame buffer.
                self._packet = data
                request = None
                try:
                    for raw in frames:
                        request = self._on_extended(raw[:1], raw[5:], raw)
                finally:
                    self._packet = None
                return request
        self.client.feed(data)
        return None if self._waiting else self._drain_client()

    def _whole_batch(self, data: bytes) -> list[bytes] | None:
        """The messages of ``data`` when it is exactly one of the fast lane's shapes
        (whole, valid lengths); None for anything else (the frame buffer handles it)."""
        n, pos = len(data), 0
        frames: list[bytes] = []
        while pos < n:
            if n - pos < 5 or len(frames) == 5:
                return None
            (length,) = _LENGTH.unpack_from(data, pos + 1)
            end = pos + 1 + length
            if length < 4 or length > self.max_message_size or end > n:
                return None
            frames.append(data[pos:end])
            pos = end
        if bytes([raw[0] for raw in frames]) not in _FAST_SHAPES:
            return None
        return frames

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
            raw = self.client.next_frame()
            if raw is None:
                return None
            request = self._client_message(raw[:1], raw)
            if request is not None:
                return request
        return None

    def _client_message(self, type_: bytes, raw: bytes) -> DecisionRequest | None:
        body = raw[5:]
        if self._discard_until_sync:
            # After a refusal in the extended protocol, PostgreSQL discards until Sync.
            if type_ == b"S":
                self._discard_until_sync = self._open_segment = False
                self._send_sync(raw)
            elif type_ == b"X":
                self._terminate(raw)
            return None
        if self._copy_in_segment >= 0:
            # COPY FROM STDIN: the server ignores Sync and Flush, and any other message
            # would end the copy with an error and go unanswered.
            if type_ in b"dcf":
                if type_ != b"d":
                    self._copy_in_segment = -1
                self.to_server.append(raw)
                return None
            if type_ in b"SH":
                return None
            if type_ == b"X":
                self._terminate(raw)
                return None
            raise m.ProtocolViolation(
                "only CopyData, CopyDone or CopyFail may follow COPY FROM STDIN"
            )
        if type_ in b"QF" and (self._batch or self._open_segment):
            if self._batch or self._replies:
                # Extended-protocol messages before it are unanswered: after an error
                # among them the server would skip it, without a ReadyForQuery.
                raise m.ProtocolViolation(
                    f"{'Query' if type_ == b'Q' else 'FunctionCall'} sent before the "
                    "extended-protocol messages before it were answered: send Sync first"
                )
            self._open_segment = False  # the server runs it; its ReadyForQuery ends them
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
            message = (
                "pgwarden: the FunctionCall protocol message is not allowed: it would "
                "bypass statement inspection; call the function from SQL instead"
            )
            self._refuse([], self._proxy_refusal(None, Refusal(REFUSED_SQLSTATE, message)), True)
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
        self._expect(_SYNC)

    def _expect(self, reply: _Reply) -> None:
        if not self._replies and isinstance(reply, Execution):
            self._start(reply)
        self._replies.append(reply)

    def _start(self, execution: Execution) -> None:
        """``execution`` is the next the server answers: a portal read in chunks (Execute
        with max_rows) shares one row limit, counted from the rows of the chunks before."""
        self._head = execution
        if execution.portal is not None:
            execution.offset = self._portal_rows.get(execution.portal, 0)

    def _unmaskable(self, analysis: Analyzed, decision: Decision) -> Decision | None:
        """A refusal when the decision asks for masks the proxy cannot apply (COPY
        streams rows the proxy does not split into columns): fail closed."""
        if (decision.mask or decision.detect) and analysis.statement.facts.get("copy"):
            return Decision(
                Action.DENY,
                (
                    "masking is required for columns of this result and cannot be applied to "
                    "COPY output; select the rows instead",
                ),
                decision.decision_id,
                code="masking_unsupported",
            )
        return None

    # Simple query ---------------------------------------------------------------------------

    def _on_query(self, raw: bytes, query: m.Query) -> DecisionRequest | None:
        unreadable = self._unreadable(query.sql, pipelined=self._unsettled())
        unreadable = self._oversize(query.sql) or unreadable
        if unreadable is None and self._rfq_received <= self._resolution_segment:
            unreadable = _RESOLUTION_PENDING
        if unreadable is not None:
            self._refuse([], self._proxy_refusal(None, unreadable), True)
            return None
        analyses = self.analyzer.simple_query(query.sql)
        for a in analyses:
            if isinstance(a, Refusal):
                self._refuse([], self._proxy_refusal(None, a), True)
                return None
        if not analyses:  # empty query: the server answers EmptyQueryResponse
            self.to_server.append(raw)
            self._expect(_EMPTY)
            self._syncs_sent += 1
            self._expect(_SYNC)
            return None
        self._waiting = _PendingQuery(raw, analyses)
        return DecisionRequest([a.statement for a in analyses if not isinstance(a, Refusal)])

    def _finish_query(self, pending: _PendingQuery, decisions: list[Decision]) -> None:
        statements = [a for a in pending.analyses if not isinstance(a, Refusal)]
        for statement, decision in zip(statements, decisions, strict=True):
            refused = decision if not decision.permits else self._unmaskable(statement, decision)
            if refused is not None:
                self._refuse([], self._policy_refusal(statement, refused), True)
                return
        self.to_server.append(pending.raw)
        self._last_run_segment = self._syncs_sent
        for statement, decision in zip(statements, decisions, strict=True):
            if self.analyzer.changes_resolution(statement):
                self._resolution_segment = self._syncs_sent
            self._expect(Execution(decision, statement, None))
            if _copies_in(statement):
                self._copy_in_segment = self._syncs_sent
        self._syncs_sent += 1
        self._expect(_SYNC)

    # Extended protocol ----------------------------------------------------------------------

    def _on_extended(self, type_: bytes, body: bytes, raw: bytes) -> DecisionRequest | None:
        index = len(self._batch)
        self._batch.append(raw)
        if type_ == b"P":  # Parse
            parse = m.parse_parse(body)
            key = ("S", parse.name)
            self._batch_names[key] = parse.sql
            self._batch_sent[index] = (key, parse.sql)
            self._batch_origin[key] = index
            pipelined = bool(self._batch_executions) or self._unsettled()
            unreadable = self._oversize(parse.sql) or self._unreadable(
                parse.sql, pipelined=pipelined
            )
            self._batch_parses.append((index, parse.sql, unreadable))
        elif type_ == b"B":  # Bind
            bind = m.parse_bind(body)
            key = ("S", bind.statement)
            sql = self._holding(key)
            bound = (_UNSETTLED_SQL if sql is _UNSETTLED else sql, bind)
            portal = ("P", bind.portal)
            self._batch_names[portal] = bound
            self._batch_sent[index] = (portal, bound)
            self._batch_origin[portal] = self._batch_origin.get(key, index)
        elif type_ == b"E":  # Execute
            execute = m.parse_execute(body)
            origin = self._batch_origin.get(("P", execute.portal), index)
            analysis = self._analyze_execute(execute)
            if analysis is not None and not isinstance(analysis, Refusal):
                if _copies_in(analysis):
                    analysis = _EXTENDED_COPY_IN
                elif (
                    self._batch_resolution_changes or self._rfq_received <= self._resolution_segment
                ):
                    # analyzed under names that a statement before it may change
                    analysis = _RESOLUTION_PENDING
                elif self.analyzer.changes_resolution(analysis):
                    self._batch_resolution_changes.add(index)
            if analysis is not None:
                self._batch_executions.append(
                    _BatchExecution(origin, index, execute.portal, analysis)
                )
        elif type_ == b"C":  # Close
            # Forgotten at once: a name the server may still have is then not ours to
            # decide by, which is the safe side.
            close = m.parse_close(body)
            self._batch_names.pop((close.kind, close.name), None)
            if close.kind == "S":
                self._statements.pop(close.name, None)
                self.analyzer.closed(close.name)
            else:
                self._portals.pop(close.name, None)
                self._portal_segments.pop(close.name, None)
        elif type_ == b"D":  # Describe
            m.parse_describe(body)
        elif type_ in b"HS":  # Flush, Sync
            return self._end_batch(ends_with_sync=type_ == b"S")
        return None

    def _analyze_execute(self, execute: m.Execute) -> Analysis | None:
        bound: _Bound | None = self._holding(("P", execute.portal))
        if bound is _UNSETTLED:
            return _unconfirmed_refusal("portal", execute.portal)
        if bound is None:
            return self.analyzer.unknown_portal(execute.portal)
        sql, bind = bound
        if sql is None:
            return self.analyzer.unknown_statement(bind.statement)
        if sql == _UNSETTLED_SQL:
            return _unconfirmed_refusal("statement", bind.statement)
        oversize = self._oversize(sql)
        if oversize is not None:
            return oversize
        if self._portal_segments.get(
            execute.portal, self._resolution_segment + 1
        ) <= self._resolution_segment and self._bound_before(("P", execute.portal)):
            # The server runs the portal as its Bind resolved it: a statement sent in its
            # segment or later may have changed what its names refer to since.
            return _portal_resolution_refusal(execute.portal)
        return self.analyzer.execution(sql, bind.params, bind.param_formats)

    def _bound_before(self, key: _Name) -> bool:
        """Whether ``key`` holds what the server confirmed (not a Parse or Bind of this
        batch or one sent and not answered yet)."""
        return key not in self._batch_names and all(name != key for _, name, _ in self._unconfirmed)

    def _holding(self, key: _Name) -> Any:
        """What ``key`` holds for the message being read: the batch's own Parse or Bind
        of it; else one sent earlier in this segment and not confirmed yet (should it
        fail, the server skips the rest of the segment, this message included); else what
        the server confirmed. _UNSETTLED while a Parse or Bind of an earlier segment
        that sets it has no answer: that segment may have failed, and this one will run."""
        value = self._batch_names.get(key)
        if value is not None:
            return value
        for segment, name, pending in reversed(self._unconfirmed):
            if name == key:
                return pending if segment == self._syncs_sent else _UNSETTLED
        kind, name = key
        return (self._statements if kind == "S" else self._portals).get(name)

    def _end_batch(self, *, ends_with_sync: bool) -> DecisionRequest | None:
        executions = self._batch_executions
        if self._batch_parses:
            executions = self._with_preparations(executions)
        batch = _PendingBatch(
            self._batch, executions, ends_with_sync, self._batch_sent, self._packet
        )
        if self._batch_resolution_changes:
            batch.resolution_changes = frozenset(self._batch_resolution_changes)
            self._batch_resolution_changes.clear()
        self._open_segment = not ends_with_sync
        self._batch, self._batch_executions, self._batch_sent = [], [], {}
        self._batch_origin.clear()
        self._batch_names.clear()
        self._batch_parses.clear()
        if not batch.executions:
            self._forward(batch, batch.messages, {})
            if batch.ends_with_sync:
                self._syncs_sent += 1
                self._expect(_SYNC)
            return None
        self._waiting = batch
        return DecisionRequest(
            [e.analysis.statement for e in batch.executions if not isinstance(e.analysis, Refusal)]
        )

    def _with_preparations(self, executions: list[_BatchExecution]) -> list[_BatchExecution]:
        """``executions`` and, in message order, a decision for each Parse of the batch
        that none of them starts from (the server must not parse, and describe, a
        statement the policy refuses, even one it never executes), and the refusal of
        each Parse the server could read otherwise than the proxy."""
        started = {e.origin for e in executions}
        preparations = []
        for index, sql, unreadable in self._batch_parses:
            # A Parse the server could read otherwise is refused, executed or not.
            analysis: Analysis | None = unreadable
            if analysis is None and index not in started:
                analysis = self.analyzer.preparation(sql)
            if analysis is not None:
                preparations.append(_BatchExecution(index, index, None, analysis))
        if not preparations:
            return executions
        return sorted(executions + preparations, key=lambda check: check.index)

    def _finish_batch(self, batch: _PendingBatch, decisions: list[Decision]) -> None:
        answers = iter(decisions)
        allowed: dict[int, tuple[Analyzed, Decision]] = {}
        for execution in batch.executions:
            analysis = execution.analysis
            if isinstance(analysis, Refusal):
                error = self._proxy_refusal(None, analysis)
            else:
                decision = next(answers)
                refused = decision if not decision.permits else self._unmaskable(analysis, decision)
                if refused is None:
                    if execution.portal is not None:
                        allowed[execution.index] = (analysis, decision)
                    continue
                error = self._policy_refusal(analysis, refused)
            self._forward(batch, batch.messages[: execution.origin], allowed)
            self._refuse([], error, batch.ends_with_sync)
            return
        self._forward(batch, batch.messages, allowed)
        if batch.ends_with_sync:
            self._syncs_sent += 1
            self._expect(_SYNC)

    def _forward(
        self,
        batch: _PendingBatch,
        messages: list[bytes],
        allowed: dict[int, tuple[Analyzed, Decision]],
    ) -> None:
        """Send batch messages (up to, not including, a final Sync's bookkeeping) and
        expect their replies: a Describe's answer, an Execute's result."""
        portals = {e.index: e.portal for e in batch.executions if e.portal is not None}
        whole = batch.packet if messages is batch.messages else None
        if whole is not None and any(d.mask or d.detect for _, d in allowed.values()):
            whole = None  # a Describe of ours goes before an Execute: message by message
        sent, segment = batch.sent, self._syncs_sent
        for index, raw in enumerate(messages):
            kind = raw[:1]
            if index in sent:  # Parse, Bind: the name changes once the server confirms
                self._unconfirmed.append((segment, *sent[index]))
            elif kind == b"D":
                self._expect(_Describe(None))
            elif kind == b"E" and index not in allowed:
                self._expect(_EMPTY)  # an empty statement: nothing was decided
            elif kind == b"E":
                self._last_run_segment = segment
                statement, decision = allowed[index]
                execution = Execution(decision, statement, portals[index])
                if index in batch.resolution_changes:
                    self._resolution_segment = segment
                if decision.mask or decision.detect:
                    # Ask for the portal's RowDescription ourselves, to plan the masks.
                    self.to_server.append(m.build_describe("P", portals[index]))
                    self._expect(_Describe(execution))
                self._expect(execution)
            if whole is None:
                self.to_server.append(raw)
        if whole is not None:
            self.to_server.append(whole)

    # Refusal --------------------------------------------------------------------------------

    def _policy_refusal(self, analysis: Analyzed, decision: Decision) -> bytes:
        """(B) The client's ErrorResponse for a refused decision; the refusal is reported."""
        if self.on_refused is not None:
            self.on_refused(
                Refused(analysis, decision, REFUSED_SQLSTATE, decision.refusal_message())
            )
        return refusal_error(decision)

    def _proxy_refusal(self, analysis: Analyzed | None, refusal: Refusal) -> bytes:
        """(B) The client's ErrorResponse for the proxy's own refusal; it is reported."""
        if self.on_refused is not None:
            self.on_refused(Refused(analysis, None, refusal.sqlstate, refusal.message))
        return m.build_error_response(refusal.sqlstate, refusal.message)

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

        Rows pass through as the bytes they arrived in, counted, unless their statement
        has masks or a row limit; only the few messages that end results or carry
        descriptions are looked into.
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
            type_ = data[pos]
            (length,) = _LENGTH.unpack_from(data, pos + 1)
            if length < 4:
                raise m.ProtocolViolation(f"server sent an invalid message length {length}")
            total = length + 1
            head = self._head
            if type_ in _ROW_TYPES and (head is None or not head.filtering):
                if head is not None:
                    head.rows += 1
                    head.bytes_sent += total
                if n - pos >= total:
                    pos += total
                else:
                    self._server_skip = total - (n - pos)
                    pos = n
                continue
            if type_ in _CONFIRMATIONS:  # no body: nothing to cut out
                if n - pos < total:
                    break
                self._confirm()
                pos += total
                continue
            if type_ in _INSPECTED or type_ in _ROW_TYPES:
                if length > self.max_message_size:
                    raise m.ProtocolViolation(f"server message of {length} bytes is too large")
                if n - pos < total:
                    break
                replacement = self._server_message(type_, data[pos : pos + total])
                if replacement is not None:
                    if start < pos:
                        out.append(data[start:pos])
                    if replacement:
                        out.append(replacement)
                    start = pos + total
                pos += total
                continue
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

    def _server_message(self, type_: int, raw: bytes) -> bytes | None:
        """One whole server message; returns its replacement (b"" drops it) or None."""
        body = raw[5:]
        if type_ in _ROW_TYPES:
            return self._filtered_row(type_, raw)
        if type_ in (_ROW_DESCRIPTION, _NO_DATA):
            return self._description(type_, body)
        if type_ == _READY_FOR_QUERY:
            self.tx_status = m.parse_ready_for_query(body)
            self._rfq_received += 1
            while self._denials and self._denials[0].sync_seq < self._rfq_received:
                self._denials.popleft()  # the server failed earlier; PostgreSQL would too
            unconfirmed = self._unconfirmed
            while unconfirmed and unconfirmed[0][0] < self._rfq_received:
                unconfirmed.popleft()  # sent after an error of its segment: skipped
            self._end_segment()
            if 0 <= self._copy_in_segment < self._rfq_received:
                self._copy_in_segment = -1  # the COPY failed before the client finished it
            self.analyzer.ready(self.tx_status, failed=self._failed)
            self._failed = False
            if self.tx_status == "I" and self._portals:
                # Portals live until their transaction ends; the name may be a cursor's next.
                self._portals.clear()
                self._portal_rows.clear()
            return None
        if type_ == _PARAMETER_STATUS:
            status = m.parse_parameter_status(body)
            self.parameter_status(status.name, status.value)
            return None
        if type_ == _ERROR:
            return self._error(body)
        if type_ == _EMPTY_QUERY and self._replies and self._replies[0] is _EMPTY:
            self._pop_reply()
            return None
        head = self._head
        if head is None:
            return None
        if type_ == _COMMAND_COMPLETE:
            tag = body.rstrip(b"\0").rsplit(b" ", 1)
            if len(tag) == 2 and tag[1].isdigit():
                head.rows_affected = int(tag[1])
            return self._finish(head, "complete", rolled_back=tag[0] == b"ROLLBACK")
        if type_ == _PORTAL_SUSPENDED:
            return self._finish(head, "suspended")
        if type_ == _EMPTY_QUERY:
            return self._finish(head, "complete")
        if type_ == _COPY_DONE and head.limit_reached:
            return b""
        return None

    def _filtered_row(self, type_: int, raw: bytes) -> bytes | None:
        head = self._head
        assert head is not None
        if head.limit_reached:
            return b""
        if head.row_limit is not None and head.offset + head.rows >= head.row_limit:
            head.limit_reached = True
            self.cancel_requested = True
            return b""
        head.rows += 1
        if head.plan is not None and type_ == _DATA_ROW:
            raw = m.frame(b"D", head.plan.apply(raw[5:]))
            head.bytes_sent += len(raw)
            return raw
        head.bytes_sent += len(raw)
        return None

    def _description(self, type_: int, body: bytes) -> bytes | None:
        reply = self._replies[0] if self._replies else None
        if isinstance(reply, _Describe):
            self._pop_reply()
            target = reply.for_execution
            if target is None:
                return None  # the client's own Describe
            target.set_plan(self._plan(target, body) if type_ == _ROW_DESCRIPTION else None)
            return b""  # ours: the client did not ask for it
        if (
            isinstance(reply, Execution)
            and type_ == _ROW_DESCRIPTION
            and (reply.decision.mask or reply.decision.detect)
        ):
            reply.set_plan(self._plan(reply, body))
        return None

    def _plan(self, execution: Execution, body: bytes) -> RowMask | None:
        outputs = execution.facts.get("outputs")
        return plan_row_mask(
            parse_row_description(body),
            execution.decision.mask,
            column_name=self.column_name,
            outputs=outputs if isinstance(outputs, list) else None,
            key=self.mask_key,
            detect=execution.decision.detect,
        )

    def _confirm(self) -> None:
        """ParseComplete or BindComplete: the oldest Parse or Bind sent took effect."""
        if not self._unconfirmed:
            raise m.ProtocolViolation("server confirmed a Parse or Bind that was not sent")
        segment, (kind, name), value = self._unconfirmed.popleft()
        if kind == "S":
            self._statements[name] = value
            self.analyzer.parsed(name, value)
        else:
            self._portals[name] = value
            self._portal_rows.pop(name, None)
            self._portal_segments[name] = segment
            if name:
                sql, bind = value
                known = None if sql == _UNSETTLED_SQL else sql
                self.analyzer.portal_bound(name, known, bind.params, bind.param_formats)

    def _error(self, body: bytes) -> bytes | None:
        self._failed = True
        if self._open_segment and self._syncs_sent == self._rfq_received:
            # The server skips the client's messages until its Sync: so does the relay.
            self._discard_until_sync = True
        # The server skips the rest of the segment: its Parses and Binds never happen.
        unconfirmed, segment = self._unconfirmed, self._rfq_received
        while unconfirmed and unconfirmed[0][0] <= segment:
            unconfirmed.popleft()
        replacement: bytes | None = None
        if self._denials and self.marker.encode() in body:
            replacement = self._denials.popleft().error  # ours: the refused statement
        if self._head is None:
            # An error before the first pending Execute's result (a Bind that fails, e.g.
            # a parameter of the wrong type or constant folding of 1/0 at planning; or a
            # Describe) is that execution's failure, not a reason to call it skipped.
            while self._replies and self._replies[0] is not _SYNC:
                if isinstance(self._replies[0], Execution):
                    break
                self._pop_reply()
        head = self._head
        if head is not None:
            head.sqlstate = m.parse_error_response(body).sqlstate
            limit_error = self._finish(head, "failed")
            if limit_error is not None:
                replacement = limit_error  # e.g. 57014 from our cancel
        # After an error the server skips everything up to Sync.
        while self._replies and self._replies[0] is not _SYNC:
            self._skip(self._pop_reply())
        return replacement

    def _finish(
        self, execution: Execution, status: str, *, rolled_back: bool = False
    ) -> bytes | None:
        """``execution`` ended with ``status``; when its row limit was reached, returns
        the row-limit error that replaces the message that ended it (b"": dropped)."""
        if status == "complete":
            self.analyzer.completed(execution.analysis, rolled_back=rolled_back)
        if execution.portal is not None:
            if status == "suspended":
                self._portal_rows[execution.portal] = execution.offset + execution.rows
            else:
                self._portal_rows.pop(execution.portal, None)
        limit_error = None
        if execution.limit_reached:
            if self._limit_segment == self._rfq_received:
                # The client has this segment's row-limit error (the later chunks of a
                # portal, Executes with max_rows, share the limit): for it, the server
                # skipped the rest of the segment.
                status, limit_error = "skipped", b""
            else:
                self._limit_segment = self._rfq_received
                limit_error = row_limit_error(execution)
        execution.status = status
        execution.finished_ns = time.monotonic_ns()
        self._pop_reply()
        if self.on_complete is not None:
            self.on_complete(execution)
        return limit_error

    def abandon(self) -> None:
        """The session ended with replies outstanding (the client or the server went
        away): report the statement in progress as ``interrupted``, with the rows and
        bytes it had sent, and those behind it as ``skipped``."""
        interrupted = False
        while self._replies:
            reply = self._pop_reply()
            if not isinstance(reply, Execution):
                continue
            if interrupted:
                self._skip(reply)
                continue
            interrupted = True
            reply.status = "interrupted"
            reply.finished_ns = time.monotonic_ns()
            if self.on_complete is not None:
                self.on_complete(reply)

    def _skip(self, reply: _Reply) -> None:
        if isinstance(reply, Execution):
            reply.status = "skipped"
            reply.finished_ns = time.monotonic_ns()
            if self.on_complete is not None:
                self.on_complete(reply)

    def _pop_reply(self) -> _Reply:
        reply = self._replies.popleft()
        head = self._replies[0] if self._replies else None
        if isinstance(head, Execution):
            self._start(head)
        else:
            self._head = None
        return reply

    def _end_segment(self) -> None:
        """ReadyForQuery: everything up to its Sync boundary is answered."""
        while self._replies:
            reply = self._pop_reply()
            if reply is _SYNC:
                return
            self._skip(reply)
