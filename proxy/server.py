"""The proxy's asyncio layer: a uvloop ``asyncio.Protocol`` per client connection that
runs startup (TLS, authentication, session admission, the upstream connection) and then
feeds the I/O-free :class:`~pgwarden.proxy.relay.RelayCore` both ways."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
import time
import uuid
from collections.abc import Coroutine
from enum import Enum
from typing import Any, Protocol, cast

from pgwarden.proxy.analysis import AnalyzedStatement, Analyzer, Catalog, CatalogTooLarge
from pgwarden.proxy.analysis.analyzer import DEFAULT_SEARCH_PATH
from pgwarden.proxy.audit import AuditReporter
from pgwarden.proxy.auth.errors import AuthError
from pgwarden.proxy.catalog_loader import fetch_catalog
from pgwarden.proxy.config import ProxyConfig
from pgwarden.proxy.decision import (
    Action,
    Decision,
    DecisionCode,
    DecisionPoint,
    Identity,
    SessionFacts,
    new_decision_id,
)
from pgwarden.proxy.masking import MaskKey, column_namer
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer
from pgwarden.proxy.relay import DecisionRequest, Execution, Refused, RelayCore
from pgwarden.proxy.statements import SYNTAX_ERROR, SessionStatements
from pgwarden.proxy.upstream import UpstreamError, UpstreamProtocol, connect_upstream

log = logging.getLogger("pgwarden.proxy")

# Startup parameters passed on to the upstream. Anything else is refused: `options` and
# GUCs such as `role` or `standard_conforming_strings` would change the session (or how
# its SQL is read) without a statement the policy could see.
FORWARDED_PARAMETERS = frozenset(
    {
        "application_name",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "IntervalStyle",
        "extra_float_digits",
        "search_path",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "lc_messages",
        "datestyle",
        "timezone",
    }
)
NEWEST_MINOR_VERSION = 0
CATALOG_RETRY_S = 5.0
FALSE_WORDS = frozenset({"false", "off", "no", "0"})


class Authenticator(Protocol):
    """What the proxy needs from agent authentication (``pgwarden.proxy.auth``): an
    Identity for a valid token, AuthError (with SQLSTATE and message) otherwise."""

    async def authenticate(self, password: str) -> Identity: ...


class ClientPhase(Enum):
    STARTUP = "startup"
    TLS_HANDSHAKE = "tls_handshake"
    AWAIT_PASSWORD = "await_password"  # noqa: S105 (a phase name, not a secret)
    ESTABLISHING = "establishing"
    RELAY = "relay"
    CLOSED = "closed"


_TRANSITIONS: dict[ClientPhase, frozenset[ClientPhase]] = {
    ClientPhase.STARTUP: frozenset({ClientPhase.TLS_HANDSHAKE, ClientPhase.AWAIT_PASSWORD}),
    ClientPhase.TLS_HANDSHAKE: frozenset({ClientPhase.STARTUP}),
    ClientPhase.AWAIT_PASSWORD: frozenset({ClientPhase.ESTABLISHING}),
    ClientPhase.ESTABLISHING: frozenset({ClientPhase.RELAY}),
    ClientPhase.RELAY: frozenset(),
    ClientPhase.CLOSED: frozenset(),
}


class ProxyServer:
    """Listens for agents; owns the sessions and the cancel keys it handed out."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        authenticator: Authenticator,
        decision_point: DecisionPoint,
        audit: AuditReporter,
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        self.audit = audit
        self.decision_point = decision_point
        # One memoizing analyzer per upstream database, fed that database's catalog.
        self.analyzers: dict[str, Analyzer] = {}
        self.sessions: set[ClientConnection] = set()
        self.cancel_keys: dict[tuple[int, int], ClientConnection] = {}
        self.tls_context: ssl.SSLContext | None = None
        if config.tls is not None:
            self.tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls_context.load_cert_chain(config.tls.cert_file, config.tls.key_file)
        self._server: asyncio.Server | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        # database -> (catalog, valid until (monotonic), load in progress)
        self.catalogs: dict[
            str, tuple[Catalog | None, float, asyncio.Future[Catalog | None] | None]
        ] = {}
        self._catalog_read_at: dict[str, float] = {}  # database -> when its last load ended
        self._catalog_roles: dict[str, str] = {}  # database -> the role that reads it
        self._catalog_stale: set[str] = set()  # changed while a load was in progress
        self._refresher: asyncio.Task[None] | None = None
        self.mask_key = MaskKey(config.mask_hash_key or secrets.token_bytes(32))

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientConnection(self),
            self.config.listen_host,
            self.config.listen_port,
            reuse_address=True,
            backlog=1024,
        )
        log.info("listening", extra={"event": "listening", "port": self.port})
        self._refresher = asyncio.create_task(self._refresh_catalogs(), name="catalog-refresh")

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting; let sessions finish within the grace period; then end them."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        if self._refresher is not None:
            self._refresher.cancel()
        if self._server is not None:
            self._server.close()
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            for session in list(self.sessions):
                session.fatal("57P01", "terminating connection due to administrator command")
        if self._server is not None:
            await self._server.wait_closed()

    async def catalog_for(self, database: str, role: str) -> Catalog | None:
        """The schema catalog of ``database``, read with the proxy's credential. The first
        session of a database waits for it; later ones get the loaded catalog while an
        expired one (TTL, or DDL seen) is reloaded in the background. None (logged) when it
        cannot be read: masking then treats every computed output as fed by masked columns.
        """
        entry = self.catalogs.get(database)
        if entry is None:
            return await asyncio.shield(self._reload_catalog(database, role))
        catalog, valid_until, in_progress = entry
        if in_progress is None and valid_until <= time.monotonic():
            self._reload_catalog(database, role)
        return catalog

    async def _refresh_catalogs(self) -> None:
        """Read again, when it expires, the catalog of each database that sessions are
        using: sessions that live long (a pool) must not keep a catalog older than
        ``catalog_ttl_s``, or a view redefined directly in PostgreSQL would keep its old
        lineage for them (a new session reloads an expired catalog itself)."""
        ttl = self.config.catalog_ttl_s
        while True:
            now = time.monotonic()
            in_use = {s.parameters.get("database") for s in self.sessions if s.upstream_role}
            due = now + ttl
            for database, (_, valid_until, loading) in list(self.catalogs.items()):
                if database not in in_use or loading is not None:
                    continue
                if valid_until <= now:
                    self._reload_catalog(database, self._catalog_roles[database])
                else:
                    due = min(due, valid_until)
            await asyncio.sleep(max(due - now, 0.05))

    def _reload_catalog(self, database: str, role: str) -> asyncio.Future[Catalog | None]:
        self._catalog_roles[database] = role
        previous = self.catalogs.get(database, (None, 0.0, None))[0]
        loading = asyncio.ensure_future(self._load_catalog(database, role))
        self.catalogs[database] = (previous, 0.0, loading)

        def loaded(done: asyncio.Future[Catalog | None]) -> None:
            catalog = None if done.cancelled() or done.exception() else done.result()
            if catalog is not None:
                self.analyzer(database).set_catalog(catalog)
            ttl = self.config.catalog_ttl_s if catalog is not None else CATALOG_RETRY_S
            self.catalogs[database] = (catalog or previous, time.monotonic() + ttl, None)
            self._catalog_read_at[database] = time.monotonic()
            if database in self._catalog_stale:
                self._catalog_stale.discard(database)
                self._reload_catalog(database, role)

        loading.add_done_callback(loaded)
        return loading

    def analyzer(self, database: str) -> Analyzer:
        analyzer = self.analyzers.get(database)
        if analyzer is None:
            analyzer = self.analyzers[database] = Analyzer()
        return analyzer

    def catalog_changed(self, database: str) -> None:
        """DDL went through: read the catalog again now (after the load in progress, when
        there is one: it may have read the schema before the DDL)."""
        entry = self.catalogs.get(database)
        if entry is None:
            return
        if entry[2] is not None:
            self._catalog_stale.add(database)
        else:
            self._reload_catalog(database, self._catalog_roles[database])

    def catalog_missing(self, database: str, role: str) -> None:
        """A refused statement named a relation the catalog does not know: created since
        the catalog was read (a migration's view, DDL that did not go through the proxy),
        or not there at all. Read it again now, so that a retry sees the relation with its
        lineage; at most once every CATALOG_RETRY_S, so that naming relations that do not
        exist cannot keep the proxy reading catalogs."""
        entry = self.catalogs.get(database)
        if entry is None or entry[2] is not None:
            return
        if time.monotonic() - self._catalog_read_at.get(database, 0.0) < CATALOG_RETRY_S:
            return
        self._reload_catalog(database, role)

    async def _load_catalog(self, database: str, role: str) -> Catalog | None:
        try:
            return await fetch_catalog(
                self.config.upstream,
                user=role,
                password=self.config.roles[role],
                database=database,
            )
        except (UpstreamError, CatalogTooLarge, m.ProtocolViolation, OSError, TimeoutError) as exc:
            log.warning(
                "catalog not loaded",
                extra={"event": "catalog_failed", "database": database, "error": str(exc)},
            )
            return None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def added(self, session: ClientConnection) -> None:
        self.sessions.add(session)
        self._idle.clear()

    def removed(self, session: ClientConnection) -> None:
        self.sessions.discard(session)
        if session.key is not None:
            self.cancel_keys.pop(session.key, None)
        if not self.sessions:
            self._idle.set()

    async def cancel(self, process_id: int, secret_key: int) -> None:
        """Forward a client's cancel to the upstream query of that session only."""
        session = self.cancel_keys.get((process_id, secret_key))
        if session is None or session.upstream_key is None:
            log.info("cancel ignored", extra={"event": "cancel_unknown_key"})
            return
        await self.cancel_upstream(session.upstream_key)
        log.info("cancel forwarded", extra={"event": "cancel", "session": session.session_id})

    async def cancel_upstream(self, key: m.BackendKeyData) -> None:
        """Send a CancelRequest for the upstream session with ``key``."""
        target = self.config.upstream
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port), target.connect_timeout_s
            )
        except (OSError, TimeoutError):
            log.warning("cancel failed", extra={"event": "cancel_unreachable"})
            return
        try:
            writer.write(m.build_cancel_request(key.process_id, key.secret_key))
            await writer.drain()
            # The postmaster closes the connection once it has signalled the backend: from
            # then on the cancel can only hit what was running, never a later statement.
            await asyncio.wait_for(reader.read(), target.connect_timeout_s)
        except (OSError, TimeoutError):
            log.warning("cancel not confirmed", extra={"event": "cancel_unconfirmed"})
        finally:
            writer.close()


class ClientConnection(asyncio.Protocol):
    """One agent connection: startup, then relay."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.config = server.config
        self.phase = ClientPhase.STARTUP
        self.frames = FrameBuffer(self.config.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._fatal_reason = ""  # why the proxy ended the session, for its audit record
        self.tls = False
        self.session_id = uuid.uuid4().hex
        self.parameters: dict[str, str] = {}
        self.identity: Identity | None = None
        self.facts: SessionFacts | None = None
        self.relay: RelayCore | None = None
        self.upstream: asyncio.Transport | None = None
        self.upstream_key: m.BackendKeyData | None = None
        self.upstream_role = ""
        self.key: tuple[int, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._paused_for_decision = False
        self._paused_for_upstream = False
        self._paused_for_cancel = False
        self._admitted = False
        self._audit_required = self.config.audit is None or self.config.audit.required

    # -- phases ----------------------------------------------------------------------------

    def _set_phase(self, phase: ClientPhase) -> None:
        if phase is not ClientPhase.CLOSED and phase not in _TRANSITIONS[self.phase]:
            raise RuntimeError(f"illegal client phase change {self.phase} -> {phase}")
        self.phase = phase

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "local"
        self.peer_port = int(peer[1]) if isinstance(peer, tuple) else 0
        self.server.added(self)
        self._timer = asyncio.get_running_loop().call_later(
            self.config.startup_timeout_s, self._startup_timed_out
        )

    def data_received(self, data: bytes) -> None:
        try:
            if self.phase is ClientPhase.RELAY:
                self._touch()
                assert self.relay is not None
                request = self.relay.client_data(data)
                self._flush()
                if request is not None:
                    self._decide(request)
                return
            self.frames.feed(data)
            self._startup()
        except m.ProtocolViolation as exc:
            log.warning(
                "protocol violation",
                extra={
                    "event": "protocol_violation",
                    "session": self.session_id,
                    "error": str(exc),
                },
            )
            self.fatal("08P01", f"protocol violation: {exc}")

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = ClientPhase.CLOSED
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.write(m.build_terminate())
            self.upstream.close()
        if self.relay is not None:
            self.relay.abandon()  # statements cut off by the end of the session
        if self._admitted and self.identity is not None and self.facts is not None:
            reason = self._fatal_reason or (
                "client closed" if exc is None else f"connection lost: {exc}"
            )
            self.server.audit.session_closed(self.identity, self.facts, {"reason": reason})
        if self.facts is not None:
            self.server.decision_point.forget_session(self.facts)
        self.server.removed(self)

    def pause_writing(self) -> None:
        # The client reads slower than the server writes: stop reading from the server.
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    # -- errors ----------------------------------------------------------------------------

    def fatal(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        """(B) A FATAL ErrorResponse, then close the client and its upstream."""
        self._fatal_reason = f"FATAL {sqlstate}: {message}"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                m.build_error_response(sqlstate, message, severity="FATAL", detail=detail)
            )
            self.transport.close()
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.close()
        self.phase = ClientPhase.CLOSED

    def _startup_timed_out(self) -> None:
        if self.phase is ClientPhase.RELAY:
            return
        message = "pgwarden: startup and authentication did not finish in time"
        if self._admitted:  # its session_close record says why it ended
            self.fatal("08006", message)
        else:
            self._refuse_startup("startup_timeout", "08006", message)

    def _touch(self) -> None:
        """Traffic in either direction: restart the idle-session timer."""
        if not self.config.idle_timeout_s:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            self.config.idle_timeout_s, self._idle_timed_out
        )

    def _idle_timed_out(self) -> None:
        self.fatal("57P05", "terminating connection due to idle-session timeout")

    # -- startup ---------------------------------------------------------------------------

    def _startup(self) -> None:
        while self.phase in (ClientPhase.STARTUP, ClientPhase.AWAIT_PASSWORD):
            if self.phase is ClientPhase.AWAIT_PASSWORD:
                msg = self.frames.next_message()
                if msg is None:
                    return
                self._password(*msg)
                continue
            body = self.frames.next_startup()
            if body is None:
                return
            packet = m.parse_startup_packet(body)
            if isinstance(packet, m.SSLRequest):
                self._ssl_request()
            elif isinstance(packet, m.GSSENCRequest):
                self._write(b"N")  # GSSAPI encryption is not offered; the client goes on
            elif isinstance(packet, m.CancelRequest):
                # Owned by the server: closing this connection must not cancel the cancel.
                self.server.spawn(self.server.cancel(packet.process_id, packet.secret_key))
                self.phase = ClientPhase.CLOSED
                assert self.transport is not None
                self.transport.close()
            else:
                self._startup_message(packet)

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def _ssl_request(self) -> None:
        if self.tls:
            raise m.ProtocolViolation("SSLRequest on an encrypted connection")
        if self.server.tls_context is None:
            self._write(b"N")
            return
        if self.frames.pending:
            # Bytes sent before the handshake would be read as if encrypted (CVE-2021-23214).
            raise m.ProtocolViolation("unencrypted data after SSLRequest")
        self._write(b"S")
        self._set_phase(ClientPhase.TLS_HANDSHAKE)
        self._spawn(self._start_tls())

    async def _start_tls(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        assert self.server.tls_context is not None
        try:
            tls = await loop.start_tls(
                self.transport, self, self.server.tls_context, server_side=True
            )
        except (OSError, ssl.SSLError) as exc:
            log.info("tls handshake failed", extra={"event": "tls_failed", "error": str(exc)})
            self.transport.close()
            return
        if tls is None:
            return
        self.transport = tls
        self.tls = True
        self._set_phase(ClientPhase.STARTUP)

    def _startup_message(self, packet: m.StartupMessage) -> None:
        if not self.tls and self.config.require_tls and not self._plaintext_allowed():
            self._refuse_startup(
                "tls_required",
                "28000",
                "pgwarden requires TLS: connect with sslmode=require or stricter",
            )
            return
        params = dict(packet.parameters)
        protocol_options = sorted(k for k in params if k.startswith("_pq_."))
        if packet.version & 0xFFFF > NEWEST_MINOR_VERSION or protocol_options:
            self._write(m.build_negotiate_protocol_version(NEWEST_MINOR_VERSION, protocol_options))
        for k in protocol_options:
            del params[k]
        if params.get("replication", "false").lower() not in FALSE_WORDS:
            self._refuse_startup(
                "replication_refused",
                "28000",
                "pgwarden: replication connections are not allowed: they "
                "bypass statement inspection",
            )
            return
        params.pop("replication", None)
        user = params.pop("user", "")
        if not user:
            self._refuse_startup(
                "no_user", "28000", "no PostgreSQL user name specified in startup packet"
            )
            return
        database = params.pop("database", "") or user
        refused = sorted(k for k in params if k not in FORWARDED_PARAMETERS)
        if refused:
            self._refuse_startup(
                "parameter_refused",
                "42501",
                f"pgwarden: startup parameter {refused[0]!r} is not allowed: "
                "it would change the session without a statement the policy can see",
                {"parameter": refused[0]},
            )
            return
        self.parameters = {"database": database, **params}
        self._requested_user = user
        self._write(m.build_authentication(m.AUTH_CLEARTEXT))
        self._set_phase(ClientPhase.AWAIT_PASSWORD)

    def _refuse_startup(
        self, code: str, sqlstate: str, message: str, context: dict[str, str] | None = None
    ) -> None:
        """A connection refused before authentication: logged, audited, FATAL."""
        log.info(
            "connection refused",
            extra={"event": "startup_refused", "code": code, "peer": self.peer, **(context or {})},
        )
        self.server.audit.auth_refused(
            self.peer, self.peer_port, code, sqlstate, context, session_id=self.session_id
        )
        self.fatal(sqlstate, message)

    def _plaintext_allowed(self) -> bool:
        if not self.config.allow_plaintext_loopback:
            return False
        try:
            return ipaddress.ip_address(self.peer).is_loopback
        except ValueError:
            return self.peer == "local"

    def _password(self, type_: bytes, body: bytes) -> None:
        if type_ != b"p":
            raise m.ProtocolViolation(f"expected a password message, got {type_!r}")
        token = body[:-1] if body.endswith(b"\0") else body
        self._set_phase(ClientPhase.ESTABLISHING)
        self._spawn(self._establish(token.decode(errors="replace")))

    async def _establish(self, token: str) -> None:
        """Authenticate, admit, connect upstream; any unexpected failure is fatal for
        this client only (fail closed), never a hang."""
        try:
            await self._establish_session(token)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "session start failed",
                extra={"event": "internal_error", "session": self.session_id},
            )
            self.fatal("XX000", "pgwarden: internal error while starting the session")

    async def _establish_session(self, token: str) -> None:
        try:
            identity = await self.server.authenticator.authenticate(token)
        except AuthError as exc:
            log.info(
                "authentication refused",
                extra={
                    "event": "auth_refused",
                    "code": str(exc.code),
                    "peer": self.peer,
                    "session": self.session_id,
                    **exc.context,
                },
            )
            self.server.audit.auth_refused(
                self.peer,
                self.peer_port,
                exc.code,
                exc.sqlstate,
                exc.context,
                session_id=self.session_id,
                database=self.parameters.get("database", ""),
            )
            self.fatal(exc.sqlstate, exc.message)
            return
        self.identity = identity
        facts = SessionFacts(
            id=self.session_id,
            proxy_id=self.config.proxy_id,
            client_addr=self.peer,
            database=self.parameters["database"],
            application_name=self.parameters.get("application_name", ""),
            tls=self.tls,
            requested_user=self._requested_user,
            client_port=self.peer_port,
        )
        self.facts = facts
        grant = await self.server.decision_point.open_session(identity, facts)
        self.server.audit.session_opened(identity, facts, grant)
        self._admitted = grant.allowed
        if not grant.allowed:
            reasons = "; ".join(grant.reasons) or "no policy admits this identity"
            self.fatal(
                "28000",
                f"pgwarden: session refused for {identity.subject}: {reasons}",
                detail=f"decision_id={grant.decision_id}",
            )
            return
        if grant.upstream_role not in self.config.roles:
            self.fatal(
                "28000", f"pgwarden: no upstream credential for role {grant.upstream_role!r}"
            )
            return
        await self._connect_upstream(grant.upstream_role)

    async def _connect_upstream(self, role: str) -> None:
        self.upstream_role = role
        params = dict(self.parameters)
        database = self.parameters["database"]
        catalog = await self.server.catalog_for(database, role)
        try:
            transport, proto, info = await connect_upstream(
                self.config.upstream,
                user=role,
                password=self.config.roles[role],
                parameters=params,
                max_message_size=self.config.max_message_size,
            )
        except UpstreamError as exc:
            log.warning(
                "upstream connection failed",
                extra={
                    "event": "upstream_failed",
                    "session": self.session_id,
                    "error": exc.message,
                },
            )
            self.fatal(exc.sqlstate, f"pgwarden: {exc.message}")
            return
        if self.phase is ClientPhase.CLOSED:
            transport.close()
            return
        self.upstream = transport
        self.upstream_key = info.key
        analyzer = self.server.analyzer(database)
        state = analyzer.new_session(
            user=role,
            search_path=info.search_path or self.parameters.get("search_path", DEFAULT_SEARCH_PATH),
        )
        relay = RelayCore(
            SessionStatements(analyzer, state),
            max_message_size=self.config.max_message_size,
            max_statement_bytes=self.config.max_statement_bytes,
            column_name=column_namer(catalog),
            mask_key=self.server.mask_key,
            on_complete=self._executed,
            on_refused=self._refused,
        )
        relay.tx_status = info.tx_status
        for name, value in info.parameters.items():
            relay.parameter_status(name, value)
        self.relay = relay
        self._attach(proto)
        self._hand_out_cancel_key()
        out = [m.build_authentication(m.AUTH_OK)]
        out += [m.build_parameter_status(k, v) for k, v in info.parameters.items()]
        out += info.notices
        assert self.key is not None
        out.append(m.build_backend_key_data(*self.key))
        out.append(m.build_ready_for_query(info.tx_status))
        assert self.transport is not None
        self.transport.writelines(out)
        self._set_phase(ClientPhase.RELAY)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._touch()
        log.info(
            "session open",
            extra={
                "event": "session_open",
                "session": self.session_id,
                "role": role,
                "subject": self.identity.subject if self.identity else "",
            },
        )
        rest = self.frames.take_rest()
        if rest:
            self.data_received(rest)

    def _attach(self, proto: UpstreamProtocol) -> None:
        proto.on_data = self._server_data
        proto.on_lost = self._upstream_lost
        proto.on_pause = self._upstream_paused

    def _hand_out_cancel_key(self) -> None:
        while True:
            key = (secrets.randbits(31), secrets.randbits(31))
            if key not in self.server.cancel_keys:
                break
        self.key = key
        self.server.cancel_keys[key] = self

    # -- relay -----------------------------------------------------------------------------

    def _server_data(self, data: bytes) -> None:
        assert self.relay is not None
        try:
            self.relay.server_data(data)
        except m.ProtocolViolation as exc:
            log.error(
                "upstream protocol violation",
                extra={"event": "upstream_protocol_violation", "error": str(exc)},
            )
            self.fatal("08P01", "pgwarden: the upstream server broke the protocol")
            return
        self._touch()
        self._flush()

    def _upstream_lost(self, exc: Exception | None) -> None:
        if self.phase is ClientPhase.RELAY and self.transport is not None:
            if self.relay is not None and self.relay.terminated:
                self.transport.close()
            else:
                self.fatal("08006", "pgwarden: the upstream server closed the connection")

    def _upstream_paused(self, paused: bool) -> None:
        # The server reads slower than the client writes: stop reading from the client.
        self._paused_for_upstream = paused
        self._update_client_reading()

    async def _cancel_for_row_limit(self, key: m.BackendKeyData) -> None:
        try:
            await self.server.cancel_upstream(key)
        finally:
            self._paused_for_cancel = False
            self._update_client_reading()

    def _update_client_reading(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._paused_for_decision or self._paused_for_upstream or self._paused_for_cancel:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _refused(self, refused: Refused) -> None:
        assert self.identity is not None
        assert self.facts is not None
        decision = refused.decision
        if decision is None:  # the proxy's own refusal: say why, without the SQL's text
            reason = (
                "the statement does not parse"
                if refused.sqlstate == SYNTAX_ERROR
                else refused.message
            )
            decision = Decision(Action.DENY, (reason,), new_decision_id(), code="proxy_refused")
        facts = refused.analysis.statement.facts if refused.analysis is not None else None
        self.server.audit.refusal(self.identity, self.facts, decision, facts, refused.sqlstate)
        if facts is not None and any(
            relation.get("kind") == "unknown" for relation in facts.get("relations") or ()
        ):
            self.server.catalog_missing(self.parameters["database"], self.upstream_role)

    def _executed(self, execution: Execution) -> None:
        assert self.identity is not None
        assert self.facts is not None
        self.server.audit.statement(self.identity, self.facts, execution)
        analysis = execution.analysis
        if (
            execution.status == "complete"
            and isinstance(analysis, AnalyzedStatement)
            and analysis.changes_catalog
        ):
            self.server.catalog_changed(self.parameters["database"])

    def _flush(self) -> None:
        relay = self.relay
        assert relay is not None
        if relay.cancel_requested:
            # A row limit was reached: stop the server producing the rest.
            relay.cancel_requested = False
            if self.upstream_key is not None:
                # Hold the client's next statements until the cancel has been delivered, so
                # a late cancel cannot hit them.
                self._paused_for_cancel = True
                self._update_client_reading()
                self._spawn(self._cancel_for_row_limit(self.upstream_key))
        if relay.to_server and self.upstream is not None:
            self.upstream.writelines(relay.to_server)
            relay.to_server.clear()
        if relay.to_client and self.transport is not None:
            self.transport.writelines(relay.to_client)
            relay.to_client.clear()
        if relay.terminated and self.upstream is not None:
            self.upstream.close()

    def _decide(self, request: DecisionRequest | None) -> None:
        """Resolve decision requests synchronously while the answers are at hand (the
        cached hot path); otherwise pause the client and await them in a task."""
        relay, identity, facts = self.relay, self.identity, self.facts
        assert relay is not None
        assert identity is not None
        assert facts is not None
        point = self.server.decision_point
        while request is not None:
            decisions = point.decide_now(
                identity, facts, request.statements, in_transaction=relay.in_transaction
            )
            if self._audit_required and not self.server.audit.durable_ok:
                # Nothing runs that the audit trail could not record (fail closed).
                decisions = [_audit_unavailable() for _ in request.statements]
            if decisions is None:
                self._paused_for_decision = True
                self._update_client_reading()
                self._spawn(self._decide_loop(request))
                return
            request = relay.resolve(decisions)
            self._flush()

    async def _decide_loop(self, request: DecisionRequest) -> None:
        relay, identity, facts = self.relay, self.identity, self.facts
        assert relay is not None
        assert identity is not None
        assert facts is not None
        try:
            decisions = await self.server.decision_point.decide(
                identity, facts, request.statements, in_transaction=relay.in_transaction
            )
            if self._audit_required and not self.server.audit.durable_ok:
                decisions = [_audit_unavailable() for _ in request.statements]
            self._paused_for_decision = False
            self._update_client_reading()
            next_request = relay.resolve(decisions)
            self._flush()
            self._decide(next_request)
        except m.ProtocolViolation as exc:
            self.fatal("08P01", f"protocol violation: {exc}")


def _audit_unavailable() -> Decision:
    return Decision(
        Action.DENY,
        ("the audit trail cannot record statements right now",),
        new_decision_id(),
        code=DecisionCode.AUDIT_UNAVAILABLE,
    )
