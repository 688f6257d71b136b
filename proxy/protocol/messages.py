"""One type per protocol message, named as in the PostgreSQL documentation
("Message Formats"), with ``parse_…`` for messages we read and ``build_…`` for messages we
write. (F) marks frontend (client) messages, (B) backend (server) messages.

Bodies are the bytes after the type byte and length word. Every parser raises
:class:`ProtocolViolation` on malformed input and nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HEADER = struct.Struct("!ci")


class ProtocolViolation(Exception):
    """Input that breaks the protocol; the connection that sent it is closed (SQLSTATE 08P01)."""


# -- low-level readers --------------------------------------------------------------------


class _Reader:
    """Sequential reads from one message body; any overrun is a ProtocolViolation."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf = bytes(buf)
        self.pos = 0

    def cstring(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("unterminated string in message")
        raw = self.buf[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid UTF-8 in message string") from None

    def int32(self) -> int:
        if self.pos + 4 > len(self.buf):
            raise ProtocolViolation("message too short")
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def int16(self) -> int:
        if self.pos + 2 > len(self.buf):
            raise ProtocolViolation("message too short")
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ProtocolViolation("message too short")
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ProtocolViolation("message too short")
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def rest(self) -> bytes:
        v = self.buf[self.pos :]
        self.pos = len(self.buf)
        return v

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolViolation("trailing bytes in message")


def frame(type_: bytes, body: bytes) -> bytes:
    """A typed message: type byte, length (including itself), body."""
    return _HEADER.pack(type_, len(body) + 4) + body


def _cstr(s: str) -> bytes:
    return s.encode() + b"\0"


# -- startup-phase messages (no type byte) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """(F) Protocol version and connection parameters (user, database, options, ...)."""

    version: int
    parameters: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """(F) Ask to switch the connection to TLS."""


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """(F) Ask to switch the connection to GSSAPI encryption."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """(F) Cancel the query running in the session identified by its backend key."""

    process_id: int
    secret_key: int


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def parse_startup_packet(body: bytes | memoryview) -> StartupPacket:
    """(F) Whatever a client may send first: StartupMessage, SSLRequest, GSSENCRequest or
    CancelRequest (``body`` excludes the length word)."""
    r = _Reader(body)
    code = r.int32()
    if code == SSL_REQUEST_CODE:
        r.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid, key = r.int32(), r.int32()
        r.end()
        return CancelRequest(pid, key)
    if code >> 16 != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        name = r.cstring()
        if not name:
            break
        params[name] = r.cstring()
    r.end()
    return StartupMessage(code, params)


def build_startup_message(parameters: Mapping[str, str], version: int = PROTOCOL_3_0) -> bytes:
    """(F) StartupMessage, with its length word."""
    body = _I32.pack(version) + b"".join(_cstr(k) + _cstr(v) for k, v in parameters.items())
    body += b"\0"
    return _I32.pack(len(body) + 4) + body


def build_ssl_request() -> bytes:
    """(F) SSLRequest, with its length word."""
    return _I32.pack(8) + _I32.pack(SSL_REQUEST_CODE)


def build_cancel_request(process_id: int, secret_key: int) -> bytes:
    """(F) CancelRequest, with its length word."""
    return (
        _I32.pack(16)
        + _I32.pack(CANCEL_REQUEST_CODE)
        + _I32.pack(process_id)
        + _I32.pack(secret_key)
    )


# -- frontend messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """(F) Simple query: one string that may hold several statements."""

    sql: str


@dataclass(frozen=True, slots=True)
class Parse:
    """(F) Prepare ``sql`` as statement ``name`` ("" is the unnamed statement)."""

    name: str
    sql: str
    param_types: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Bind:
    """(F) Bind parameters to statement ``statement`` into portal ``portal``."""

    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Describe:
    """(F) Describe a statement (kind ``S``) or a portal (kind ``P``)."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Execute:
    """(F) Run portal ``portal``, returning at most ``max_rows`` rows (0: all)."""

    portal: str
    max_rows: int


@dataclass(frozen=True, slots=True)
class Close:
    """(F) Close a statement (kind ``S``) or a portal (kind ``P``)."""

    kind: str
    name: str


def parse_query(body: bytes | memoryview) -> Query:
    """(F) Query."""
    r = _Reader(body)
    q = Query(r.cstring())
    r.end()
    return q


def parse_parse(body: bytes | memoryview) -> Parse:
    """(F) Parse."""
    r = _Reader(body)
    name, sql = r.cstring(), r.cstring()
    n = r.int16()
    if n < 0:
        raise ProtocolViolation("negative parameter type count")
    types = tuple(r.int32() for _ in range(n))
    r.end()
    return Parse(name, sql, types)


def _cstring_at(buf: bytes, pos: int) -> tuple[str, int]:
    """The NUL-terminated UTF-8 string at ``pos`` and the position after it."""
    end = buf.find(b"\0", pos)
    if end < 0:
        raise ProtocolViolation("unterminated string in message")
    try:
        return buf[pos:end].decode(), end + 1
    except UnicodeDecodeError:
        raise ProtocolViolation("invalid UTF-8 in message string") from None


def _int16s_at(buf: bytes, pos: int, what: str) -> tuple[tuple[int, ...], int]:
    """A count (int16) then that many int16s, and the position after them."""
    (n,) = _I16.unpack_from(buf, pos)
    if n < 0:
        raise ProtocolViolation(f"negative {what} count")
    pos += 2
    return (struct.unpack_from(f"!{n}h", buf, pos) if n else ()), pos + 2 * n


def parse_bind(body: bytes | memoryview) -> Bind:
    """(F) Bind."""
    # The hot path of every extended-protocol execution: struct reads on one buffer
    # instead of a _Reader call per field; same checks, same errors.
    buf = bytes(body)
    portal, pos = _cstring_at(buf, 0)
    statement, pos = _cstring_at(buf, pos)
    try:
        formats, pos = _int16s_at(buf, pos, "format")
        (np_,) = _I16.unpack_from(buf, pos)
        if np_ < 0:
            raise ProtocolViolation("negative parameter count")
        pos += 2
        params: list[bytes | None] = []
        for _ in range(np_):
            (size,) = _I32.unpack_from(buf, pos)
            pos += 4
            if size == -1:
                params.append(None)
                continue
            if size < 0 or pos + size > len(buf):
                raise ProtocolViolation("message too short")
            params.append(buf[pos : pos + size])
            pos += size
        results, pos = _int16s_at(buf, pos, "result format")
    except struct.error:
        raise ProtocolViolation("message too short") from None
    if pos != len(buf):
        raise ProtocolViolation("trailing bytes in message")
    return Bind(portal, statement, formats, tuple(params), results)


def parse_describe(body: bytes | memoryview) -> Describe:
    """(F) Describe."""
    buf = bytes(body)
    if not buf:
        raise ProtocolViolation("message too short")
    kind = chr(buf[0])
    if kind not in "SP":
        raise ProtocolViolation(f"invalid Describe kind {kind!r}")
    name, pos = _cstring_at(buf, 1)
    if pos != len(buf):
        raise ProtocolViolation("trailing bytes in message")
    return Describe(kind, name)


def parse_execute(body: bytes | memoryview) -> Execute:
    """(F) Execute."""
    buf = bytes(body)
    portal, pos = _cstring_at(buf, 0)
    if pos + 4 > len(buf):
        raise ProtocolViolation("message too short")
    if pos + 4 < len(buf):
        raise ProtocolViolation("trailing bytes in message")
    (max_rows,) = _I32.unpack_from(buf, pos)
    return Execute(portal, max_rows)


def parse_close(body: bytes | memoryview) -> Close:
    """(F) Close."""
    r = _Reader(body)
    kind = chr(r.byte())
    if kind not in "SP":
        raise ProtocolViolation(f"invalid Close kind {kind!r}")
    c = Close(kind, r.cstring())
    r.end()
    return c


def build_query(sql: str) -> bytes:
    """(F) Query."""
    return frame(b"Q", _cstr(sql))


def build_parse(name: str, sql: str, param_types: Sequence[int] = ()) -> bytes:
    """(F) Parse."""
    body = _cstr(name) + _cstr(sql) + _I16.pack(len(param_types))
    body += b"".join(_I32.pack(t) for t in param_types)
    return frame(b"P", body)


def build_bind(
    portal: str,
    statement: str,
    params: Sequence[bytes | None] = (),
    param_formats: Sequence[int] = (),
    result_formats: Sequence[int] = (),
) -> bytes:
    """(F) Bind."""
    body = _cstr(portal) + _cstr(statement)
    body += _I16.pack(len(param_formats)) + b"".join(_I16.pack(f) for f in param_formats)
    body += _I16.pack(len(params))
    for p in params:
        body += _I32.pack(-1) if p is None else _I32.pack(len(p)) + p
    body += _I16.pack(len(result_formats)) + b"".join(_I16.pack(f) for f in result_formats)
    return frame(b"B", body)


def build_describe(kind: str, name: str) -> bytes:
    """(F) Describe."""
    return frame(b"D", kind.encode() + _cstr(name))


def build_execute(portal: str, max_rows: int = 0) -> bytes:
    """(F) Execute."""
    return frame(b"E", _cstr(portal) + _I32.pack(max_rows))


def build_close(kind: str, name: str) -> bytes:
    """(F) Close."""
    return frame(b"C", kind.encode() + _cstr(name))


def build_sync() -> bytes:
    """(F) Sync."""
    return b"S\0\0\0\x04"


def build_flush() -> bytes:
    """(F) Flush."""
    return b"H\0\0\0\x04"


def build_terminate() -> bytes:
    """(F) Terminate."""
    return b"X\0\0\0\x04"


def build_password_message(data: bytes) -> bytes:
    """(F) PasswordMessage (also SASLInitialResponse and SASLResponse bodies)."""
    return frame(b"p", data)


def build_sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    """(F) SASLInitialResponse."""
    return frame(b"p", _cstr(mechanism) + _I32.pack(len(data)) + data)


# -- backend messages ------------------------------------------------------------------------

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True, slots=True)
class Authentication:
    """(B) An Authentication* message: ``code`` says which; ``data`` is the rest."""

    code: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    """(B) The key that cancels this session's queries."""

    process_id: int
    secret_key: int


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    """(B) A run-time parameter's current value."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """(B) An error (or, as NoticeResponse, a notice): fields by their one-letter codes."""

    fields: Mapping[str, str]

    @property
    def sqlstate(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")


def parse_authentication(body: bytes | memoryview) -> Authentication:
    """(B) AuthenticationOk, ...CleartextPassword, ...MD5Password, ...SASL, ...SASLContinue,
    ...SASLFinal."""
    r = _Reader(body)
    return Authentication(r.int32(), r.rest())


def parse_sasl_mechanisms(data: bytes) -> list[str]:
    """(B) The mechanism list of AuthenticationSASL."""
    r = _Reader(data)
    out: list[str] = []
    while True:
        m = r.cstring()
        if not m:
            return out
        out.append(m)


def parse_backend_key_data(body: bytes | memoryview) -> BackendKeyData:
    """(B) BackendKeyData."""
    r = _Reader(body)
    k = BackendKeyData(r.int32(), r.int32())
    r.end()
    return k


def parse_parameter_status(body: bytes | memoryview) -> ParameterStatus:
    """(B) ParameterStatus."""
    r = _Reader(body)
    p = ParameterStatus(r.cstring(), r.cstring())
    r.end()
    return p


def parse_error_response(body: bytes | memoryview) -> ErrorResponse:
    """(B) ErrorResponse or NoticeResponse."""
    r = _Reader(body)
    fields: dict[str, str] = {}
    while True:
        code = r.byte()
        if code == 0:
            break
        fields[chr(code)] = r.cstring()
    r.end()
    return ErrorResponse(fields)


TextRow = tuple[str | None, ...]


def parse_data_row(body: bytes) -> TextRow:
    """(B) DataRow in text format: one str (or None for NULL) per column."""
    count = int.from_bytes(body[:2], "big", signed=True)
    pos = 2
    values: list[str | None] = []
    for _ in range(count):
        size = int.from_bytes(body[pos : pos + 4], "big", signed=True)
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[pos : pos + size].decode())
            pos += size
    return tuple(values)


def parse_ready_for_query(body: bytes | memoryview) -> str:
    """(B) ReadyForQuery: the transaction status, ``I`` idle, ``T`` in a block, ``E`` failed."""
    if len(body) != 1:
        raise ProtocolViolation("message too short" if not body else "trailing bytes in message")
    status = chr(body[0])
    if status not in "ITE":
        raise ProtocolViolation(f"invalid transaction status {status!r}")
    return status


def build_authentication(code: int, data: bytes = b"") -> bytes:
    """(B) Authentication*."""
    return frame(b"R", _I32.pack(code) + data)


def build_backend_key_data(process_id: int, secret_key: int) -> bytes:
    """(B) BackendKeyData."""
    return frame(b"K", _I32.pack(process_id) + _I32.pack(secret_key))


def build_parameter_status(name: str, value: str) -> bytes:
    """(B) ParameterStatus."""
    return frame(b"S", _cstr(name) + _cstr(value))


def build_ready_for_query(status: str) -> bytes:
    """(B) ReadyForQuery."""
    return frame(b"Z", status.encode())


def build_error_response(
    sqlstate: str,
    message: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    """(B) ErrorResponse."""
    fields: list[tuple[bytes, str]] = [
        (b"S", severity),
        (b"V", severity),
        (b"C", sqlstate),
        (b"M", message),
    ]
    if detail:
        fields.append((b"D", detail))
    if hint:
        fields.append((b"H", hint))
    return frame(b"E", b"".join(k + _cstr(v) for k, v in fields) + b"\0")


def build_negotiate_protocol_version(newest_minor: int, unsupported: Iterable[str]) -> bytes:
    """(B) NegotiateProtocolVersion."""
    options = list(unsupported)
    body = _I32.pack(newest_minor) + _I32.pack(len(options))
    body += b"".join(_cstr(o) for o in options)
    return frame(b"v", body)
