"""The proxy's client of the central PDP: a :class:`DecisionPoint` over gRPC.

- One ``grpc.aio`` channel per PDP endpoint; calls go to the endpoint that last answered
  and fail over to the next on UNAVAILABLE, all within one deadline (default 250 ms).
- Decisions travel on one long-lived ``DecideStream`` per endpoint (a message on an open
  stream costs about half a unary call: most of a cache miss), matched to their request by
  id; a stream that breaks fails its waiting requests and the next request opens a new
  one. A PDP without DecideStream (an older release) is asked with unary ``Decide``.
- A :class:`DecisionCache` in front: a hit costs a few dict operations; the cache follows
  the policy revision the PDP streams (``WatchRevisions``) and the one each decision carries.
- Fail closed: every failure is a refusal with its own code (``pdp_unavailable``,
  ``pdp_timeout``, ``pdp_unauthenticated``, or the PDP's ``opa_unavailable``,
  ``opa_timeout``, ``invalid_decision``); nothing raises to the proxy.
- Channels reconnect on their own with a short backoff: when a PDP comes back, the same
  client object works again; clients of the proxy never reconnect.

Config (a TOML table, e.g. ``[proxy.pdp]``; see :meth:`PdpClientConfig.from_section`)::

    endpoints = ["pdp-1:50051", "pdp-2:50051"]
    deadline_ms = 250
    token = "…"            # or token_file = "pdp.token": sent as `authorization: Bearer`
    ca_file = "ca.crt"     # TLS to the PDP; with cert_file + key_file: mutual TLS
    cert_file = "proxy.crt"
    key_file = "proxy.key"
    server_name = "pdp.internal"   # TLS name override, when endpoints are IPs
    cache_max_entries = 100000     # 0 disables the cache
    watch_revisions = true
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct

from pgwarden.pdp.metrics import Counter, Gauge, Histogram, render
from pgwarden.proxy.decision import (
    CONNECTION_FACTS,
    Action,
    Decision,
    DecisionCode,
    DecisionPoint,
    Identity,
    SessionFacts,
    SessionGrant,
    Statement,
    digest_of,
    new_decision_id,
)
from pgwarden.proxy.decision_cache import DecisionCache
from pgwarden.proxy.pdp_config import PdpClientConfig as PdpClientConfig  # noqa: PLC0414 (re-export)
from pgwarden.v1 import decision_pb2 as pb
from pgwarden.v1 import decision_pb2_grpc as pb_grpc

DECISION_IDS_KEY = "pgwarden-decision-ids"
STREAM_ACCEPTED_KEY = "pgwarden-stream-accepted"  # DecideStream's first header
# Reconnect quickly after a PDP restart (gRPC's default backoff grows to two minutes).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]
WATCH_BACKOFF_S = (0.1, 2.0)
SESSION_KEYS_MAX = 8192
REPORT_EXECUTIONS = "/pgwarden.v1.DecisionService/ReportExecutions"
FACTS_MEMO_MAX = 8192

_ACTIONS = {
    pb.ACTION_ALLOW: Action.ALLOW,
    pb.ACTION_DENY: Action.DENY,
    pb.ACTION_REQUIRE_APPROVAL: Action.REQUIRE_APPROVAL,
}
_PROTOCOLS = {
    "simple": pb.PROTOCOL_SIMPLE,
    "extended": pb.PROTOCOL_EXTENDED,
}
_STATUS_CODES = {
    grpc.StatusCode.UNAVAILABLE: DecisionCode.PDP_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: DecisionCode.PDP_TIMEOUT,
    grpc.StatusCode.UNAUTHENTICATED: DecisionCode.PDP_UNAUTHENTICATED,
}
_USABLE = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE)
_MESSAGES = {
    DecisionCode.PDP_UNAVAILABLE: "the policy decision point is unavailable",
    DecisionCode.PDP_TIMEOUT: "the policy decision point did not answer in time",
    DecisionCode.PDP_UNAUTHENTICATED: "the policy decision point refused the proxy's credentials",
    DecisionCode.INVALID_DECISION: "the policy decision point sent an invalid answer",
    DecisionCode.ANALYSIS_FAILED: "session or statement facts do not match the decision contract",
}


class PdpError(Exception):
    def __init__(
        self, code: DecisionCode, detail: str = "", *, unimplemented: bool = False
    ) -> None:
        super().__init__(detail or code.value)
        self.code = code
        self.unimplemented = unimplemented  # the PDP does not know the method


def _rpc_error(address: str, exc: grpc.aio.AioRpcError) -> PdpError:
    return _status_error(address, exc.code(), exc.details())


def _status_error(address: str, code: grpc.StatusCode, details: str | None) -> PdpError:
    return PdpError(
        _STATUS_CODES.get(code, DecisionCode.PDP_UNAVAILABLE),
        f"{address}: {code.name} {details}",
        unimplemented=code is grpc.StatusCode.UNIMPLEMENTED,
    )


class _DecisionStream:
    """One ``DecideStream`` call: requests written one at a time (a gRPC call takes one
    message write at a time), answers handed to their request by id. When the call ends,
    every request still waiting fails with its status; ``error`` says the stream is done."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...], address: str) -> None:
        self.call = stub.DecideStream(metadata=metadata)
        self.address = address
        self.error: PdpError | None = None
        self._accepted = False
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[pb.DecideResponse]] = {}
        self._writing = asyncio.Lock()
        self._reader = asyncio.create_task(self._read(), name=f"pdp-decisions-{address}")

    async def decide(self, request: pb.DecideRequest) -> pb.DecideResponse:
        """The answer to ``request``; raises PdpError (or AioRpcError from the write)."""
        if self.error is not None:
            raise self.error
        if not self._accepted:
            # The PDP accepts the stream with a header of its own, or ends the call at once
            # (refused credentials; an older PDP without DecideStream): wait for one or the
            # other before writing, since a write on a call that just ended loses its
            # status (gRPC reports INTERNAL).
            headers = await self.call.initial_metadata()
            if (STREAM_ACCEPTED_KEY, "1") not in tuple(headers or ()):
                raise await self._ended()  # code() waits for the end of the call
            self._accepted = True
        request_id = next(self._ids)
        answer: asyncio.Future[pb.DecideResponse] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        try:
            async with self._writing:
                await self.call.write(
                    pb.DecideStreamRequest(request_id=request_id, request=request)
                )
            return await answer
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
            # The call ended under the write (the PDP went away): the reader has its status.
            await asyncio.wait({self._reader})
            raise self._failure() from None
        finally:
            self._waiting.pop(request_id, None)
            if answer.done() and not answer.cancelled():
                answer.exception()  # seen: when it is an error, it was raised another way

    def _failure(self) -> PdpError:
        return self.error or PdpError(DecisionCode.PDP_UNAVAILABLE, f"{self.address}: ended")

    async def _ended(self) -> PdpError:
        """The error a call that has ended stands for, from its status."""
        return _status_error(self.address, await self.call.code(), await self.call.details())

    async def _read(self) -> None:
        error = PdpError(DecisionCode.PDP_UNAVAILABLE, f"{self.address}: decision stream ended")
        try:
            async for item in self.call:
                answer = self._waiting.get(item.request_id)
                if answer is not None and not answer.done():
                    answer.set_result(item.response)
        except grpc.aio.AioRpcError as exc:
            error = _rpc_error(self.address, exc)
        finally:
            self.error = error
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(error)

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@dataclass
class _Endpoint:
    address: str
    channel: grpc.aio.Channel
    stub: Any  # DecisionServiceAsyncStub
    stream: _DecisionStream | None = None
    unary_only: bool = False  # the PDP does not implement DecideStream

    def __post_init__(self) -> None:
        # ReportExecutions with requests that are serialized already (the audit spool's
        # frames): no serializer, the bytes go out as they are.
        self.report_serialized = self.channel.stream_unary(
            REPORT_EXECUTIONS,
            request_serializer=None,
            response_deserializer=pb.ReportExecutionsResponse.FromString,
        )


class ClientMetrics:
    """The client's statistics, exported in Prometheus text format by the proxy."""

    def __init__(self) -> None:
        self.decisions = Counter(
            "pgwarden_proxy_decisions_total",
            "Statement decisions by source (cache or pdp) and code.",
            ("source", "code"),
        )
        self.refusals = Counter(
            "pgwarden_proxy_pdp_refusals_total",
            "Statements refused without a policy decision, by code.",
            ("code",),
        )
        self.latency = Histogram(
            "pgwarden_proxy_pdp_decide_seconds", "Decide round trips to the PDP (cache misses)."
        )
        self.session_latency = Histogram(
            "pgwarden_proxy_pdp_open_session_seconds", "OpenSession round trips to the PDP."
        )
        self.sessions = Counter(
            "pgwarden_proxy_sessions_total", "Sessions asked for, by outcome.", ("allowed",)
        )
        self.revision_changes = Counter(
            "pgwarden_proxy_revision_changes_total", "Policy revision changes seen."
        )
        self.cache_hits = Gauge("pgwarden_proxy_decision_cache_hits_total", "Cache hits.")
        self.cache_misses = Gauge("pgwarden_proxy_decision_cache_misses_total", "Cache misses.")
        self.cache_hit_ratio = Gauge(
            "pgwarden_proxy_decision_cache_hit_ratio", "Hits / lookups since start."
        )
        self.cache_entries = Gauge("pgwarden_proxy_decision_cache_entries", "Cached decisions.")


class PdpClient:
    """Implements ``pgwarden.proxy.decision.DecisionPoint`` against PDP replicas."""

    def __init__(self, config: PdpClientConfig, *, proxy_id: str = "") -> None:
        self.config = config
        self.proxy_id = proxy_id
        self.cache = DecisionCache(config.cache_max_entries)
        self.metrics = ClientMetrics()
        self.pdp_calls = 0
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {config.token}"),) if config.token else ()
        )
        self._endpoints = [self._open(address) for address in config.endpoints]
        self._preferred = 0
        # id(session) → (session, identity, key, key in transaction, pb identity,
        # pb session, pb session in transaction); the objects are kept so ids stay unique.
        self._sessions: dict[int, tuple[Any, ...]] = {}
        self._facts: dict[bytes, pb.StatementFacts] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._revision_event = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def _open(self, address: str) -> _Endpoint:
        options = list(CHANNEL_OPTIONS)
        if self.config.server_name:
            options.append(("grpc.ssl_target_name_override", self.config.server_name))
        if self.config.ca_file is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self.config.ca_file.read_bytes(),
                private_key=self.config.key_file.read_bytes() if self.config.key_file else None,
                certificate_chain=(
                    self.config.cert_file.read_bytes() if self.config.cert_file else None
                ),
            )
            channel = grpc.aio.secure_channel(address, credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(address, options=options)
        return _Endpoint(address, channel, pb_grpc.DecisionServiceStub(channel))

    async def start(self) -> PdpClient:
        """Subscribe to policy revisions (cache invalidation); returns self."""
        if self.config.watch_revisions and self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch_revisions(), name="pdp-revisions")
        return self

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        for endpoint in self._endpoints:
            if endpoint.stream is not None:
                await endpoint.stream.close()
            await endpoint.channel.close()

    async def __aenter__(self) -> PdpClient:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def forget_session(self, session: SessionFacts) -> None:
        """Drop what was memoized for a session that ended (the proxy calls it when the
        client goes away; otherwise ended sessions hold ~2 KiB each until the memo's
        bound pushes them out), and its cached decisions, which no other session's key
        can match."""
        memo = self._sessions.pop(id(session), None)
        if memo is not None and memo[0] is session:
            self.cache.forget((memo[2][0], memo[3][0]))

    # -- DecisionPoint -----------------------------------------------------------------

    async def open_session(self, identity: Identity, session: SessionFacts) -> SessionGrant:
        started = time.perf_counter()
        try:
            memo = self._session_memo(identity, session)
            request = pb.OpenSessionRequest(identity=memo[4], session=memo[5])
            response, _ = await self._call("OpenSession", request)
        except (TypeError, ValueError) as exc:  # claims that are not JSON values
            return self._refuse_session(PdpError(DecisionCode.ANALYSIS_FAILED, str(exc)))
        except PdpError as exc:
            return self._refuse_session(exc)
        self.metrics.session_latency.observe(time.perf_counter() - started)
        self._see_revision(response.revision)
        allowed = bool(response.allowed and response.upstream_role)
        self.metrics.sessions.inc(str(allowed).lower())
        return SessionGrant(
            allowed,
            response.upstream_role if allowed else "",
            tuple(response.reasons),
            response.decision_id,
        )

    def _memo(self, identity: Identity, session: SessionFacts) -> tuple[Any, ...]:
        """This session's digests and messages, computed once per session."""
        memo = self._sessions.get(id(session))
        if memo is None or memo[0] is not session or memo[1] is not identity:
            memo = self._session_memo(identity, session)
        return memo

    def decide_now(
        self,
        identity: Identity,
        session: SessionFacts,
        statements: Sequence[Statement],
        *,
        in_transaction: bool,
    ) -> list[Decision] | None:
        """The decisions when all are cached (no task, no await), else None."""
        try:
            memo = self._memo(identity, session)
        except (TypeError, ValueError) as exc:  # claims that are not JSON values
            return self._refuse(DecisionCode.ANALYSIS_FAILED, len(statements), str(exc))
        session_key, shared_key = memo[3] if in_transaction else memo[2]
        cache = self.cache
        if len(statements) == 1:  # the hot path
            digest = statements[0].digest
            hit = cache.get(shared_key, digest) or cache.get(session_key, digest)
            return None if hit is None else [hit]
        found = []
        for statement in statements:
            digest = statement.digest
            decision = cache.peek(shared_key, digest) or cache.peek(session_key, digest)
            if decision is None:
                return None
            found.append(decision)
        cache.hits += len(found)
        return found

    async def decide(
        self,
        identity: Identity,
        session: SessionFacts,
        statements: Sequence[Statement],
        *,
        in_transaction: bool,
    ) -> list[Decision]:
        try:
            memo = self._memo(identity, session)
        except (TypeError, ValueError) as exc:  # claims that are not JSON values
            return self._refuse(DecisionCode.ANALYSIS_FAILED, len(statements), str(exc))
        keys: tuple[bytes, bytes] = memo[3] if in_transaction else memo[2]
        session_key, shared_key = keys
        cache = self.cache
        if len(statements) == 1:  # the hot path: one statement, usually cached
            digest = statements[0].digest
            hit = cache.get(shared_key, digest) or cache.get(session_key, digest)
            if hit is not None:
                return [hit]
            return await self._decide_remote(memo, keys, statements, in_transaction)
        hits = [
            cache.get(shared_key, s.digest) or cache.get(session_key, s.digest) for s in statements
        ]
        missing = [s for s, h in zip(statements, hits, strict=True) if h is None]
        if not missing:
            return [h for h in hits if h is not None]
        fresh = iter(await self._decide_remote(memo, keys, missing, in_transaction))
        return [h if h is not None else next(fresh) for h in hits]

    async def report_executions(
        self, records: Sequence[pb.AuditRecord], *, timeout_s: float | None = None
    ) -> int:
        """Send a batch of audit records on one ``ReportExecutions`` stream; returns how
        many the PDP made durable (all of them), or 0 when it could not be reached or its
        audit store failed: the caller keeps the batch and sends it again (records are
        idempotent by ``record_id``). ``timeout_s`` replaces the decision deadline (a
        store may take longer than a decision). Never raises."""
        if not records:
            return 0
        request = pb.ReportExecutionsRequest(records=records).SerializeToString()
        return await self.report_serialized(request, len(records), timeout_s=timeout_s)

    async def report_serialized(
        self, request: bytes, count: int, *, timeout_s: float | None = None
    ) -> int:
        """:meth:`report_executions` for a batch serialized already (a
        ``pb.ReportExecutionsRequest`` of ``count`` records, as the audit spool holds
        it): the bytes are sent as they are, never parsed and built again."""

        async def requests() -> Any:
            yield request

        async def invoke(endpoint: _Endpoint, remaining: float) -> Any:
            return await endpoint.report_serialized(
                requests(), timeout=remaining, metadata=self._metadata
            )

        try:
            response = await self._failover(invoke, timeout_s)
        except PdpError:
            return 0
        accepted: int = response.accepted
        return accepted if accepted == count else 0

    # -- internals ---------------------------------------------------------------------

    def _session_memo(self, identity: Identity, session: SessionFacts) -> tuple[Any, ...]:
        """Digests and messages of the identity and session, computed once per session.
        The cache keys, per value of ``in_transaction``: (the session's, the one shared by
        the identity's sessions for decisions of cache_scope "identity": the same digest
        without the connection's own facts, in a key space of its own)."""
        identity_doc = identity.document()
        keys = []
        for t in (False, True):
            document = session.document(in_transaction=t)
            shared = {k: v for k, v in document.items() if k not in CONNECTION_FACTS}
            keys.append(
                (
                    digest_of({"identity": identity_doc, "session": document}),
                    digest_of(
                        {"cache_scope": "identity", "identity": identity_doc, "session": shared}
                    ),
                )
            )
        claims = Struct()
        claims.update(dict(identity.claims))
        pb_identity = pb.Identity(
            subject=identity.subject,
            issuer=identity.issuer,
            groups=identity.groups,
            auth_method=identity.auth_method,
            claims=claims,
        )
        sessions = [
            pb.Session(
                id=session.id,
                proxy_id=session.proxy_id,
                client_addr=session.client_addr,
                database=session.database,
                application_name=session.application_name,
                tls=session.tls,
                in_transaction=t,
                requested_user=session.requested_user,
            )
            for t in (False, True)
        ]
        memo = (session, identity, keys[0], keys[1], pb_identity, sessions[0], sessions[1])
        if len(self._sessions) >= SESSION_KEYS_MAX:
            del self._sessions[next(iter(self._sessions))]
        self._sessions[id(session)] = memo
        return memo

    def _statement_message(self, statement: Statement) -> pb.StatementFacts:
        message = self._facts.get(statement.digest)
        if message is None:
            message = facts_message(statement.facts)
            if len(self._facts) >= FACTS_MEMO_MAX:
                del self._facts[next(iter(self._facts))]
            self._facts[statement.digest] = message
        return message

    async def _decide_remote(
        self,
        memo: tuple[Any, ...],
        keys: tuple[bytes, bytes],
        statements: Sequence[Statement],
        in_transaction: bool,
    ) -> list[Decision]:
        """Ask the PDP; keep each decision under the key its cache_scope allows: the
        session's (``keys[0]``) or the one shared by the identity's sessions."""
        try:
            request = pb.DecideRequest(
                identity=memo[4],
                session=memo[6] if in_transaction else memo[5],
                statements=[
                    pb.StatementRequest(statement=self._statement_message(s)) for s in statements
                ],
            )
        except (TypeError, ValueError) as exc:
            return self._refuse(DecisionCode.ANALYSIS_FAILED, len(statements), str(exc))
        self.cache.note_misses(len(statements))
        started = time.perf_counter()
        try:
            response = await self._failover(lambda e, t: self._decide_on(e, t, request))
        except PdpError as exc:
            return self._refuse(exc.code, len(statements))
        self.metrics.latency.observe(time.perf_counter() - started)
        if len(response.decisions) != len(statements):
            return self._refuse(DecisionCode.INVALID_DECISION, len(statements))
        decisions = [_decision_of(m) for m in response.decisions]
        if response.decisions:
            self._see_revision(response.decisions[0].revision)
        cache = self.cache
        session_key, shared_key = keys
        for statement, decision in zip(statements, decisions, strict=True):
            key = shared_key if decision.cache_scope == "identity" else session_key
            cache.put(key, statement.digest, decision)
            self.metrics.decisions.inc("pdp", decision.code)
        return decisions

    def _refuse_session(self, error: PdpError) -> SessionGrant:
        self.metrics.refusals.inc(error.code.value)
        self.metrics.sessions.inc("false")
        reason = f"{_MESSAGES[error.code]} [{error.code.value}]"
        return SessionGrant(False, "", (reason,), new_decision_id())

    def _refuse(self, code: DecisionCode, count: int, detail: str = "") -> list[Decision]:
        self.metrics.refusals.inc(code.value, amount=count)
        self.metrics.decisions.inc("client", code.value, amount=count)
        reason = f"{_MESSAGES[code]} [{code.value}]"
        if detail and code is DecisionCode.ANALYSIS_FAILED:
            reason = f"{_MESSAGES[code]}: {detail} [{code.value}]"
        return [
            Decision(Action.DENY, (reason,), new_decision_id(), code=code.value)
            for _ in range(count)
        ]

    async def _call(self, method: str, request: Any) -> tuple[Any, Any]:
        """Call the unary ``method`` on the preferred endpoint, failing over on
        UNAVAILABLE, all within the config's deadline; raise PdpError."""

        async def unary(endpoint: _Endpoint, remaining: float) -> tuple[Any, Any]:
            call = getattr(endpoint.stub, method)(
                request, timeout=remaining, metadata=self._metadata
            )
            return await call, call

        result: tuple[Any, Any] = await self._failover(unary)
        return result

    async def _decide_on(
        self, endpoint: _Endpoint, remaining: float, request: pb.DecideRequest
    ) -> pb.DecideResponse:
        """``request`` on the endpoint's decision stream (opened when there is none)."""
        if endpoint.unary_only:
            response: pb.DecideResponse = await endpoint.stub.Decide(
                request, timeout=remaining, metadata=self._metadata
            )
            return response
        stream = endpoint.stream
        if stream is None or stream.error is not None:
            stream = endpoint.stream = _DecisionStream(
                endpoint.stub, self._metadata, endpoint.address
            )
        try:
            async with asyncio.timeout(remaining):
                return await stream.decide(request)
        except TimeoutError:
            raise PdpError(
                DecisionCode.PDP_TIMEOUT, f"{endpoint.address}: no decision in time"
            ) from None
        except PdpError as exc:
            if exc.unimplemented:
                endpoint.unary_only = True
                return await self._decide_on(endpoint, remaining, request)
            raise

    async def _failover(
        self,
        invoke: Callable[[_Endpoint, float], Awaitable[Any]],
        deadline_s: float | None = None,
    ) -> Any:
        """``invoke`` the preferred endpoint, the next ones on UNAVAILABLE, all within one
        deadline (``deadline_s``, default the config's); raise PdpError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (deadline_s or self.config.deadline_s)
        count = len(self._endpoints)
        error = PdpError(DecisionCode.PDP_UNAVAILABLE)
        self.pdp_calls += 1
        first = self._preferred if count == 1 else self._first_endpoint()
        for attempt in range(count):
            index = (first + attempt) % count
            remaining = deadline - loop.time()
            if remaining <= 0:
                error = PdpError(DecisionCode.PDP_TIMEOUT)
                break
            endpoint = self._endpoints[index]
            try:
                result = await invoke(endpoint, remaining)
            except grpc.aio.AioRpcError as exc:
                error = _rpc_error(endpoint.address, exc)
            except PdpError as exc:
                error = exc
            except Exception as exc:  # whatever else: refuse, never raise to the proxy
                error = PdpError(DecisionCode.PDP_UNAVAILABLE, repr(exc))
                break
            else:
                self._preferred = index
                return result
            if error.code is not DecisionCode.PDP_UNAVAILABLE:
                break
            # UNAVAILABLE: the next endpoint, within the same deadline
        raise error

    def _first_endpoint(self) -> int:
        """The preferred endpoint, unless its channel is not connected and another one is:
        a host that vanished without a reset would otherwise eat the whole deadline."""
        preferred = self._preferred
        if self._endpoints[preferred].channel.get_state() in _USABLE:
            return preferred
        for offset in range(1, len(self._endpoints)):
            index = (preferred + offset) % len(self._endpoints)
            if self._endpoints[index].channel.get_state() in _USABLE:
                return index
        return preferred

    def _see_revision(self, revision: str) -> None:
        if revision and self.cache.set_revision(revision):
            self.metrics.revision_changes.inc()
            self._revision_event.set()
            self._revision_event = asyncio.Event()

    async def wait_revision(self, revision: str) -> None:
        """Wait until the client knows ``revision`` (for tests and tooling)."""
        while self.cache.revision != revision:
            await self._revision_event.wait()

    async def _watch_revisions(self) -> None:
        backoff = WATCH_BACKOFF_S[0]
        attempt = 0
        while True:
            endpoint = self._endpoints[(self._preferred + attempt) % len(self._endpoints)]
            try:
                stream = endpoint.stub.WatchRevisions(
                    pb.WatchRevisionsRequest(proxy_id=self.proxy_id), metadata=self._metadata
                )
                async for message in stream:
                    backoff = WATCH_BACKOFF_S[0]
                    self._see_revision(message.revision)
            except grpc.aio.AioRpcError:
                attempt += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF_S[1])

    # -- statistics --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        cache = self.cache
        return {
            "cache_hits": cache.hits,
            "cache_misses": cache.misses,
            "cache_hit_ratio": cache.hit_ratio,
            "cache_entries": len(cache),
            "cache_evictions": cache.evictions,
            "cache_invalidations": cache.invalidations,
            "revision": cache.revision,
            "pdp_calls": self.pdp_calls,
            "sessions_memoized": len(self._sessions),
            "refusals": {labels[0]: int(v) for labels, v in self.metrics.refusals.values.items()},
        }

    def metrics_text(self) -> str:
        """The client's metrics in Prometheus text format, for the proxy's /metrics."""
        m = self.metrics
        # Hits are counted by the cache alone, to keep the hit path minimal.
        m.decisions.values[("cache", "")] = float(self.cache.hits)
        m.cache_hits.set(self.cache.hits)
        m.cache_misses.set(self.cache.misses)
        m.cache_hit_ratio.set(self.cache.hit_ratio)
        m.cache_entries.set(len(self.cache))
        return render(
            [
                m.decisions,
                m.refusals,
                m.latency,
                m.session_latency,
                m.sessions,
                m.revision_changes,
                m.cache_hits,
                m.cache_misses,
                m.cache_hit_ratio,
                m.cache_entries,
            ]
        )


_FACT_KEYS = frozenset(pb.StatementFacts.DESCRIPTOR.fields_by_name)


def facts_message(facts: Mapping[str, Any]) -> pb.StatementFacts:
    """Statement facts (``input.statement``) → ``pb.StatementFacts``, strictly: an unknown
    key or a wrong type raises ValueError/TypeError (the statement is then refused)."""
    unknown = set(facts) - _FACT_KEYS
    if unknown:
        raise ValueError(f"unknown statement fact {sorted(unknown)[0]!r}")
    message = pb.StatementFacts(
        fingerprint=facts.get("fingerprint", ""),
        sql_normalized=facts.get("sql_normalized", ""),
        command=facts.get("command", ""),
        protocol=_PROTOCOLS.get(facts.get("protocol", ""), pb.PROTOCOL_UNSPECIFIED),
        read_only=facts.get("read_only", False),
        relations=[pb.Relation(**r) for r in facts.get("relations", ())],
        columns=[pb.ColumnUse(**c) for c in facts.get("columns", ())],
        outputs=[pb.Output(**o) for o in facts.get("outputs", ())],
        star=facts.get("star", ()),
        functions=facts.get("functions", ()),
        has_where=facts.get("has_where", False),
        nested=[facts_message(n) for n in facts.get("nested", ())],
        unresolved=facts.get("unresolved", False),
    )
    if facts.get("copy") is not None:
        message.copy.CopyFrom(pb.Copy(**facts["copy"]))
    if facts.get("limit") is not None:
        message.limit = facts["limit"]
    if facts.get("set") is not None:
        message.set.CopyFrom(pb.SetCommand(**facts["set"]))
    return message


def _decision_of(message: pb.Decision) -> Decision:
    action = _ACTIONS.get(message.action)
    if action is None:
        return Decision(
            Action.DENY,
            (f"{_MESSAGES[DecisionCode.INVALID_DECISION]} [invalid_decision]",),
            message.decision_id or new_decision_id(),
            revision=message.revision,
            code=DecisionCode.INVALID_DECISION.value,
        )
    return Decision(
        action,
        tuple(message.reasons),
        message.decision_id,
        mask=dict(message.mask),
        row_limit=message.row_limit if message.HasField("row_limit") else None,
        cache_ttl_s=message.cache_ttl_s,
        dry_run=message.dry_run and not message.code,
        revision=message.revision,
        code=message.code,
        detect=tuple(message.detect),
        cache_scope="identity" if message.cache_scope == pb.CACHE_SCOPE_IDENTITY else "session",
    )


def decision_ids(metadata: Iterable[tuple[str, str]] | None) -> list[str]:
    """The decision ids of a call's trailing metadata, in request order."""
    for key, value in metadata or ():
        if key == DECISION_IDS_KEY:
            return value.split(",") if value else []
    return []


def _conforms(client: PdpClient) -> DecisionPoint:
    """mypy checks here that PdpClient implements the proxy's DecisionPoint protocol."""
    return client
