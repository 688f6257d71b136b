"""The proxy's own connection to the upstream PostgreSQL: connect (optionally over TLS),
authenticate with the proxy's credential for the chosen role, then relay."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

from pgwarden.proxy.auth.errors import UpstreamAuthError
from pgwarden.proxy.auth.scram import ScramClient, md5_password_payload
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where and how to reach the upstream server."""

    host: str
    port: int
    sslmode: str = "disable"  # disable | require | verify-ca | verify-full
    ca_file: str | None = None
    connect_timeout_s: float = 5.0

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context for ``sslmode``, shared by every upstream connection:
        building one costs ~0.9 ms of the event loop with a CA file and ~30 ms with the
        system's CA store. Built again when the CA file changes on disk (a rotated CA
        applies to the next connections, as with libpq, which reads it per connection)."""
        if self.sslmode == "disable":
            return None
        key = (self.sslmode, self.ca_file, _file_version(self.ca_file))
        ctx = _ssl_contexts.get(key)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.sslmode == "require":
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            elif self.sslmode == "verify-ca":
                ctx.check_hostname = False
            if len(_ssl_contexts) >= SSL_CONTEXTS_MAX:
                _ssl_contexts.clear()
            _ssl_contexts[key] = ctx
        return ctx


# Contexts by (sslmode, CA file, the file's version): a proxy has one upstream; the bound
# only matters when its CA file keeps changing.
SSL_CONTEXTS_MAX = 8
_ssl_contexts: dict[tuple[str, str | None, tuple[int, int, int] | None], ssl.SSLContext] = {}


def _file_version(path: str | None) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of ``path``: another file or other content means another
    version. None without a file (or when it cannot be read: building the context then
    raises what it raised before)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(slots=True)
class UpstreamReady:
    """What the server said during startup: parameters, its cancel key, the tx status,
    and the search path the session starts with."""

    parameters: dict[str, str] = field(default_factory=dict)
    key: m.BackendKeyData | None = None
    tx_status: str = "I"
    notices: list[bytes] = field(default_factory=list)
    search_path: str | None = None


class UpstreamError(Exception):
    """The upstream could not be reached or refused the proxy; ``sqlstate`` for the client."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


class UpstreamProtocol(asyncio.Protocol):
    """Startup and authentication, then every byte goes to ``on_data``."""

    def __init__(self, user: str, password: str | None, max_message_size: int) -> None:
        self.user = user
        self.password = password
        self.frames = FrameBuffer(max_message_size)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[UpstreamReady] = asyncio.get_running_loop().create_future()
        self.info = UpstreamReady()
        self.on_data: Callable[[bytes], None] | None = None
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.on_pause: Callable[[bool], None] | None = None
        self._scram: ScramClient | None = None
        self.ssl_answer: asyncio.Future[bytes] | None = None
        self._asked_search_path = False

    # asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.ssl_answer is not None:  # the one-byte answer to SSLRequest
            answer, self.ssl_answer = self.ssl_answer, None
            answer.set_result(data)
            return
        if self.on_data is not None:
            self.on_data(data)
            return
        self.frames.feed(data)
        try:
            while not self.ready.done() and (msg := self.frames.next_message()) is not None:
                self._startup_message(*msg)
        except (m.ProtocolViolation, UpstreamAuthError, UpstreamError) as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(UpstreamError("08006", "upstream closed the connection"))
        if self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(True)

    def resume_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(False)

    # startup ----------------------------------------------------------------------------------

    def start(self, parameters: Mapping[str, str]) -> None:
        assert self.transport is not None
        self.transport.write(m.build_startup_message({"user": self.user, **parameters}))

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def _startup_message(self, type_: bytes, body: bytes) -> None:
        if type_ == b"R":  # Authentication*
            self._authentication(m.parse_authentication(body))
        elif type_ == b"S":  # ParameterStatus
            p = m.parse_parameter_status(body)
            self.info.parameters[p.name] = p.value
        elif type_ == b"K":  # BackendKeyData
            self.info.key = m.parse_backend_key_data(body)
        elif type_ == b"Z":  # ReadyForQuery
            self.info.tx_status = m.parse_ready_for_query(body)
            if not self._asked_search_path:
                # Names resolve under the search path the session starts with: set for the
                # role or the database (ALTER ROLE ... SET search_path) or by the client's
                # startup packet, which the server does not report. Ask it once.
                self._asked_search_path = True
                self._write(m.build_query("SHOW search_path"))
                return
            self.ready.set_result(self.info)
            rest = self.frames.take_rest()
            if rest and self.on_data is not None:
                self.on_data(rest)
        elif type_ == b"E":  # ErrorResponse
            err = m.parse_error_response(body)
            raise UpstreamError(
                err.sqlstate or "08006", f"upstream refused the connection: {err.message}"
            )
        elif type_ == b"D" and self._asked_search_path:  # DataRow: SHOW search_path
            (self.info.search_path,) = m.parse_data_row(body)
        elif type_ in b"TC" and self._asked_search_path:  # RowDescription, CommandComplete
            pass
        elif type_ == b"N":  # NoticeResponse
            self.info.notices.append(m.frame(type_, body))
        elif type_ == b"v":  # NegotiateProtocolVersion: we ask for 3.0 only; nothing to do
            pass
        else:
            raise m.ProtocolViolation(f"unexpected upstream message {type_!r} during startup")

    def _authentication(self, auth: m.Authentication) -> None:
        if auth.code == m.AUTH_OK:
            if self._scram is not None and not self._scram.done:
                raise UpstreamAuthError(
                    "scram_incomplete", "upstream accepted before proving it knows the password"
                )
            return
        if self.password is None:
            raise UpstreamAuthError(
                "no_password",
                f"upstream asks for a password for role {self.user!r} and none is configured",
            )
        if auth.code == m.AUTH_SASL:
            mechanisms = m.parse_sasl_mechanisms(auth.data)
            self._scram = ScramClient(self.user, self.password)
            mechanism, payload = self._scram.initial_response(mechanisms)
            self._write(m.build_sasl_initial_response(mechanism, payload))
        elif auth.code == m.AUTH_SASL_CONTINUE and self._scram is not None:
            self._write(m.build_password_message(self._scram.handle_continue(auth.data)))
        elif auth.code == m.AUTH_SASL_FINAL and self._scram is not None:
            self._scram.handle_final(auth.data)
        elif auth.code == m.AUTH_MD5:
            self._write(
                m.build_password_message(
                    md5_password_payload(self.user, self.password, auth.data[:4])
                )
            )
        elif auth.code == m.AUTH_CLEARTEXT:
            self._write(m.build_password_message(self.password.encode() + b"\0"))
        else:
            raise UpstreamAuthError(
                "unsupported_auth", f"upstream asks for unsupported authentication {auth.code}"
            )

    def _fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


async def connect_upstream(
    target: UpstreamTarget,
    *,
    user: str,
    password: str | None,
    parameters: Mapping[str, str],
    max_message_size: int,
) -> tuple[asyncio.Transport, UpstreamProtocol, UpstreamReady]:
    """Open, secure and authenticate a connection; raise UpstreamError on any failure."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(target.connect_timeout_s):
            transport, proto = await loop.create_connection(
                lambda: UpstreamProtocol(user, password, max_message_size), target.host, target.port
            )
            ctx = target.ssl_context()
            if ctx is not None:
                transport = await _start_tls(loop, transport, proto, ctx, target)
                proto.transport = transport
            proto.start(parameters)
            info = await proto.ready
    except TimeoutError:
        raise UpstreamError("08001", "upstream connection timed out") from None
    except OSError as exc:
        raise UpstreamError("08001", f"cannot reach upstream: {exc.strerror or exc}") from None
    except UpstreamAuthError as exc:
        raise UpstreamError("08001", f"upstream authentication failed: {exc.message}") from None
    return transport, proto, info


async def _start_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    proto: UpstreamProtocol,
    ctx: ssl.SSLContext,
    target: UpstreamTarget,
) -> asyncio.Transport:
    proto.ssl_answer = loop.create_future()
    transport.write(m.build_ssl_request())
    reply = await proto.ssl_answer
    if reply[:1] != b"S" or len(reply) != 1:
        raise UpstreamError("08001", "upstream does not accept TLS (sslmode requires it)")
    tls = await loop.start_tls(transport, proto, ctx, server_hostname=target.host)
    if tls is None:
        raise UpstreamError("08001", "TLS handshake with upstream failed")
    return tls
