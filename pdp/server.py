"""The PDP's gRPC service (``grpc.aio``): DecisionService, auth, health, reflection.

``pgwarden pdp --config FILE`` runs :func:`serve`: OPA (supervised or external), the gRPC
server, the optional ops HTTP server, and a graceful stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hmac
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pgwarden.config import ConfigError
from pgwarden.pdp.audit.records import stored_documents
from pgwarden.pdp.audit.store import AuditStoreError, AuditWriter, open_store
from pgwarden.pdp.config import AuthConfig, PdpConfig, load_config
from pgwarden.pdp.evaluation import Evaluator
from pgwarden.pdp.log import log_event
from pgwarden.pdp.metrics import Counter, Gauge, Histogram, render
from pgwarden.pdp.opa_supervisor import ExternalOpa, OpaSupervisor, RevisionFeed
from pgwarden.pdp.request import decision_inputs, session_input
from pgwarden.pdp.response import decision_message, with_dry_run
from pgwarden.proxy.decision import new_decision_id
from pgwarden.v1 import decision_pb2 as pb
from pgwarden.v1 import decision_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
DECISION_IDS_KEY = "pgwarden-decision-ids"
STREAM_ACCEPTED_KEY = "pgwarden-stream-accepted"  # DecideStream's first header
HEALTH_PREFIX = "/grpc.health.v1.Health/"
_ACTION_NAMES = {
    pb.ACTION_ALLOW: "allow",
    pb.ACTION_DENY: "deny",
    pb.ACTION_REQUIRE_APPROVAL: "require_approval",
}


@dataclass
class PdpMetrics:
    decisions: Counter = field(
        default_factory=lambda: Counter(
            "pgwarden_pdp_decisions_total",
            "Statement decisions by action and code (code empty: the policy decided).",
            ("action", "code", "dry_run"),
        )
    )
    sessions: Counter = field(
        default_factory=lambda: Counter(
            "pgwarden_pdp_sessions_total",
            "OpenSession answers by outcome and code.",
            ("allowed", "code"),
        )
    )
    decide_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "pgwarden_pdp_decide_seconds", "Decide call latency inside the PDP, per batch."
        )
    )
    opa_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "pgwarden_pdp_opa_seconds", "OPA evaluation latency (one request or one batch)."
        )
    )
    batch_size: Histogram = field(
        default_factory=lambda: Histogram(
            "pgwarden_pdp_decide_batch_statements",
            "Statements per Decide call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
    )
    executions: Counter = field(
        default_factory=lambda: Counter(
            "pgwarden_pdp_executions_reported_total", "Audit records received from proxies."
        )
    )
    audit_records: Counter = field(
        default_factory=lambda: Counter(
            "pgwarden_pdp_audit_records_total",
            "Audit records made durable (stored) or already held (duplicate: a replay).",
            ("result",),
        )
    )
    audit_failures: Counter = field(
        default_factory=lambda: Counter(
            "pgwarden_pdp_audit_store_failures_total",
            "Report calls refused because the audit store could not make records durable.",
        )
    )
    audit_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "pgwarden_pdp_audit_write_seconds", "Time to make one reported batch durable."
        )
    )
    unauthenticated: Counter = field(
        default_factory=lambda: Counter(
            "pgwarden_pdp_unauthenticated_total", "Calls refused for lack of credentials."
        )
    )
    revision: Gauge = field(
        default_factory=lambda: Gauge(
            "pgwarden_pdp_revision_info", "The policy revision in force (value 1).", ("revision",)
        )
    )
    revision_changes: Counter = field(
        default_factory=lambda: Counter(
            "pgwarden_pdp_revision_changes_total", "Policy revisions put in force."
        )
    )
    opa_restarts: Gauge = field(
        default_factory=lambda: Gauge(
            "pgwarden_pdp_opa_restarts_total", "Restarts of the supervised OPA after a crash."
        )
    )
    policy_load_failures: Gauge = field(
        default_factory=lambda: Gauge(
            "pgwarden_pdp_policy_load_failures_total",
            "Policy changes OPA refused to load (the previous revision stayed in force).",
        )
    )

    def on_revision(self, revision: str) -> None:
        self.revision.values.clear()
        self.revision.set(1, revision)
        self.revision_changes.inc()

    def text(self) -> str:
        return render(
            [
                self.decisions,
                self.sessions,
                self.decide_seconds,
                self.opa_seconds,
                self.batch_size,
                self.executions,
                self.audit_records,
                self.audit_failures,
                self.audit_seconds,
                self.unauthenticated,
                self.revision,
                self.revision_changes,
                self.opa_restarts,
                self.policy_load_failures,
            ]
        )


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    """Request → input documents → OPA → validated decisions with ids and revision."""

    def __init__(
        self,
        evaluator: Evaluator,
        feed: RevisionFeed,
        metrics: PdpMetrics,
        *,
        dry_run: bool,
        audit: AuditWriter | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.feed = feed
        self.metrics = metrics
        self.dry_run = dry_run
        self.audit = audit

    async def OpenSession(
        self, request: pb.OpenSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.OpenSessionResponse:
        started = time.perf_counter()
        decision, revision = await self.evaluator.open_session(session_input(request))
        decision_id = new_decision_id()
        session_id = request.session.id or uuid.uuid4().hex
        context.set_trailing_metadata(((DECISION_IDS_KEY, decision_id),))
        latency = time.perf_counter() - started
        self.metrics.sessions.inc(str(decision.allowed).lower(), decision.code)
        log_event(
            "session",
            decision_id=decision_id,
            allowed=decision.allowed,
            code=decision.code,
            subject=request.identity.subject,
            session_id=session_id,
            upstream_role=decision.upstream_role,
            reasons=list(decision.reasons),
            revision=revision,
            latency_us=round(latency * 1e6),
        )
        return pb.OpenSessionResponse(
            allowed=decision.allowed,
            upstream_role=decision.upstream_role,
            session_id=session_id,
            reasons=decision.reasons,
            decision_id=decision_id,
            revision=revision,
            code=decision.code,
        )

    async def Decide(
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecideResponse:
        response = await self._decide(request)
        context.set_trailing_metadata(
            ((DECISION_IDS_KEY, ",".join(m.decision_id for m in response.decisions)),)
        )
        return response

    async def DecideStream(
        self,
        request_iterator: AsyncIterator[pb.DecideStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.DecideStreamResponse]:
        """Decide each request as it arrives, concurrently; send each answer when it is
        ready (from here: a gRPC call takes one message write at a time)."""
        # Headers now: the proxy waits for them (or for a refusal) before its first write.
        await context.send_initial_metadata(((STREAM_ACCEPTED_KEY, "1"),))
        answers: asyncio.Queue[pb.DecideStreamResponse | None] = asyncio.Queue()

        async def answer(item: pb.DecideStreamRequest) -> None:
            try:
                response = await self._decide(item.request)
            except Exception as exc:  # an answer without decisions: the proxy refuses
                log_event("decide_failed", level="error", error=repr(exc))
                response = pb.DecideResponse()
            answers.put_nowait(
                pb.DecideStreamResponse(request_id=item.request_id, response=response)
            )

        async def read() -> None:
            deciding: set[asyncio.Task[None]] = set()
            try:
                async for item in request_iterator:
                    task = asyncio.create_task(answer(item))
                    deciding.add(task)
                    task.add_done_callback(deciding.discard)
                await asyncio.gather(*deciding)
            finally:
                answers.put_nowait(None)

        reading = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _decide(self, request: pb.DecideRequest) -> pb.DecideResponse:
        started = time.perf_counter()
        documents = decision_inputs(request)
        decisions, revision = await self.evaluator.decide(documents) if documents else ([], "")
        self.metrics.opa_seconds.observe(time.perf_counter() - started)
        if self.dry_run:
            decisions = [with_dry_run(d) for d in decisions]
        messages = [decision_message(d, new_decision_id(), revision) for d in decisions]
        latency = time.perf_counter() - started
        self.metrics.decide_seconds.observe(latency)
        self.metrics.batch_size.observe(len(messages))
        latency_us = round(latency * 1e6)
        subject = request.identity.subject
        for message, statement in zip(messages, request.statements, strict=True):
            action = _ACTION_NAMES.get(message.action, "deny")
            self.metrics.decisions.inc(action, message.code, str(message.dry_run).lower())
            log_event(
                "decision",
                decision_id=message.decision_id,
                action=action,
                code=message.code,
                dry_run=message.dry_run,
                subject=subject,
                session_id=request.session.id,
                fingerprint=statement.statement.fingerprint,
                reasons=list(message.reasons),
                revision=revision,
                latency_us=latency_us,
            )
        return pb.DecideResponse(decisions=messages)

    async def ReportExecutions(
        self,
        request_iterator: AsyncIterator[pb.ReportExecutionsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.ReportExecutionsResponse:
        """Make every batch of audit records durable (chained, idempotent by record id);
        answer only then. A store failure fails the call: nothing is acknowledged, the
        proxy keeps the records in its spool and sends them again."""
        accepted = duplicates = 0
        async for batch in request_iterator:
            if not batch.records:
                continue
            documents = stored_documents(batch.records)
            self.metrics.executions.inc(amount=len(documents))
            started = time.perf_counter()
            try:
                if self.audit is None:
                    raise AuditStoreError("no audit store")
                stored = await self.audit.write(documents)
            except AuditStoreError as exc:
                self.metrics.audit_failures.inc()
                log_event("audit_report_refused", level="error", error=str(exc))
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "pgwarden PDP: the audit store cannot make records durable [audit_unavailable]",
                )
                raise  # abort raises; this keeps type checkers sure nothing falls through
            self.metrics.audit_seconds.observe(time.perf_counter() - started)
            self.metrics.audit_records.inc("stored", amount=stored)
            self.metrics.audit_records.inc("duplicate", amount=len(documents) - stored)
            accepted += len(documents)
            duplicates += len(documents) - stored
        return pb.ReportExecutionsResponse(accepted=accepted, duplicates=duplicates)

    async def WatchRevisions(
        self, request: pb.WatchRevisionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchRevisionsResponse]:
        revision = self.feed.revision
        log_event("revision_watch", proxy_id=request.proxy_id, revision=revision)
        yield pb.WatchRevisionsResponse(revision=revision)
        while (changed := await self.feed.next_after(revision)) is not None:
            revision = changed
            yield pb.WatchRevisionsResponse(revision=revision)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without an accepted bearer token (the health service is exempt, so
    load balancers can probe it). With mutual TLS the handshake already proved the peer."""

    def __init__(self, auth: AuthConfig, metrics: PdpMetrics) -> None:
        self.tokens = [t.encode() for t in auth.tokens]
        self.metrics = metrics

    def _authenticated(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        if not self.tokens:
            return True
        for key, value in metadata or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() != "bearer":
                    return False
                offered = token.strip().encode()
                return any(hmac.compare_digest(offered, t) for t in self.tokens)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        if self._authenticated(handler_call_details.invocation_metadata):
            return handler
        self.metrics.unauthenticated.inc()
        log_event("unauthenticated", level="warning", method=handler_call_details.method)
        return _refusing(handler)


def _refusing(handler: Any) -> Any:
    """A handler of the same kind as ``handler`` that aborts with UNAUTHENTICATED."""
    message = "pgwarden PDP: missing or invalid credentials [pdp_unauthenticated]"

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    for attribute, make in kinds.items():
        if getattr(handler, attribute) is not None:
            return make(
                refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _server_credentials(auth: AuthConfig) -> Any:
    assert auth.tls_cert is not None
    assert auth.tls_key is not None
    root = auth.client_ca.read_bytes() if auth.client_ca else None
    return grpc.ssl_server_credentials(
        [(auth.tls_key.read_bytes(), auth.tls_cert.read_bytes())],
        root_certificates=root,
        require_client_auth=root is not None,
    )


class Pdp:
    """A running PDP: OPA, gRPC server, health and the optional ops HTTP server."""

    def __init__(self, config: PdpConfig) -> None:
        self.config = config
        self.metrics = PdpMetrics()
        self.evaluator = Evaluator()
        self.feed = RevisionFeed()
        self.feed.listeners.append(self.metrics.on_revision)
        self.opa: OpaSupervisor | ExternalOpa = (
            OpaSupervisor(config.opa, self.evaluator, self.feed)
            if config.opa.mode == "supervised"
            else ExternalOpa(config.opa, self.evaluator, self.feed)
        )
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(interceptors=[AuthInterceptor(config.auth, self.metrics)])
        self.audit = AuditWriter(
            open_store(config.audit), max_batch_records=config.audit.max_batch_records
        )
        self.servicer = DecisionServicer(
            self.evaluator, self.feed, self.metrics, dry_run=config.dry_run, audit=self.audit
        )
        self.port = 0
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self._http: Any = None

    async def start(self) -> None:
        await self._set_serving(False)
        await self.audit.start()  # recover the store (torn tail, chain head) before serving
        pb_grpc.add_DecisionServiceServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        auth = self.config.auth
        if auth.tls_cert is not None:
            self.port = self.server.add_secure_port(self.config.listen, _server_credentials(auth))
        else:
            self.port = self.server.add_insecure_port(self.config.listen)
        if self.config.http_listen:
            from pgwarden.pdp.http import start_ops_server  # noqa: PLC0415 (aiohttp web)

            self._http = await start_ops_server(self, self.config.http_listen)
        # Our ports are bound (add_*_port binds) before OPA's free port is picked, which
        # could otherwise be the one the config names, free until we bind it.
        await self.opa.start()
        await self.server.start()
        await self.check_ready()
        self._tasks.append(asyncio.create_task(self._watch_readiness(), name="readiness"))
        log_event(
            "listening",
            grpc=self.config.listen,
            port=self.port,
            http=self.config.http_listen,
            tls=auth.tls_cert is not None,
            mutual_tls=auth.mutual_tls,
            opa=self.config.opa.mode,
            revision=self.feed.revision,
            dry_run=self.config.dry_run,
        )

    async def check_ready(self) -> bool:
        """Ready: OPA answers its health check and a policy revision is loaded."""
        target = self.evaluator.target
        ready = bool(target and target.revision and await target.healthy())
        if isinstance(self.opa, OpaSupervisor):
            self.metrics.opa_restarts.set(self.opa.restarts)
            self.metrics.policy_load_failures.set(self.opa.load_failures)
        if ready != self.ready:
            await self._set_serving(ready)
        return ready

    async def _set_serving(self, ready: bool) -> None:
        self.ready = ready
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def _watch_readiness(self) -> None:
        while True:
            await asyncio.sleep(self.config.opa.watch_interval_s)
            await self.check_ready()

    async def stop(self) -> None:
        log_event("stopping", grace_s=self.config.grace_s)
        self.feed.close()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.grace_s)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.cleanup()
        await self.audit.close()
        await self.opa.stop()
        log_event("stopped")


async def serve(config: PdpConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pdp = Pdp(config)
    try:
        await pdp.start()
        # Everything allocated so far lives as long as the process: keep it out of the
        # collector's way, so per-request collections stay short (steadier p99).
        gc.collect()
        gc.freeze()
        await stop.wait()
    finally:
        await pdp.stop()


def run_command(args: argparse.Namespace) -> int:
    """Run the policy decision point (gRPC DecisionService, ops HTTP) until SIGTERM."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"pgwarden pdp: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop  # noqa: PLC0415

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    try:
        runner(serve(config))
    except (OSError, RuntimeError) as exc:  # e.g. a listen address in use
        log_event("start_failed", level="error", error=str(exc))
        print(f"pgwarden pdp: {exc}", file=sys.stderr)
        return 1
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``pgwarden pdp --config FILE`` on the CLI's subparsers."""
    command = subparsers.add_parser("pdp", help=run_command.__doc__)
    command.add_argument("--config", type=Path, required=True, help="PDP config file (TOML)")
    command.set_defaults(func=run_command)
