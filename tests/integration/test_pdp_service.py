"""The PDP as a real process with a real OPA: decisions, ids, cache, auth, ops endpoints.

The proxy side is the real :class:`PdpClient`; the PDP is ``python -m pgwarden pdp``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pgwarden.pdp import opa_supervisor
from pgwarden.pdp.config import load_config
from pgwarden.pdp.evaluation import OpaTarget
from pgwarden.pdp.harness import PdpProcess, write_example_policy
from pgwarden.pdp.server import Pdp
from pgwarden.proxy.decision import Action, Identity, SessionFacts, Statement
from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig, decision_ids
from pgwarden.stack.process import free_port, poll_until
from pgwarden.v1 import decision_pb2 as pb
from pgwarden.v1 import decision_pb2_grpc as pb_grpc

REPORTING = Identity("agent:reporting", "https://idp.example", ("analytics",), "jwt", {})
STRANGER = Identity("agent:stranger", "https://idp.example", ("other",), "jwt", {})


def session(sid: str | None = None) -> SessionFacts:
    return SessionFacts(sid or uuid.uuid4().hex, "edge-1", "10.0.0.7", "shop", "psql", True, "")


def statement(command: str, *, fingerprint: str | None = None) -> Statement:
    return Statement.of(
        {
            "fingerprint": fingerprint or uuid.uuid4().hex[:16],
            "sql_normalized": f"{command} something",
            "command": command,
            "protocol": "extended",
            "read_only": command == "SELECT",
            "relations": [
                {"schema": "public", "name": "customers", "kind": "table", "access": "read"}
            ],
            "columns": [],
            "outputs": [],
            "star": [],
            "functions": [],
            "copy": None,
            "limit": None,
            "has_where": False,
            "set": None,
            "nested": [],
            "unresolved": False,
        }
    )


@pytest.fixture(scope="module")
def pdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PdpProcess]:
    root = tmp_path_factory.mktemp("pdp-service")
    policies = write_example_policy(root / "policies")
    with PdpProcess(policies=policies, log_dir=root / "logs") as process:
        yield process


@pytest.fixture
async def client(pdp: PdpProcess) -> AsyncIterator[PdpClient]:
    config = PdpClientConfig((pdp.address,), deadline_s=2.0, token=pdp.token)
    async with PdpClient(config, proxy_id="edge-1") as c:
        yield c


def records_for(pdp: PdpProcess, fingerprint: str) -> list[dict[str, Any]]:
    return [r for r in pdp.log_records("decision") if r.get("fingerprint") == fingerprint]


def wait_for_records(pdp: PdpProcess, fingerprint: str, count: int) -> list[dict[str, Any]]:
    poll_until(
        lambda: len(records_for(pdp, fingerprint)) >= count, timeout_s=10, what="PDP log lines"
    )
    return records_for(pdp, fingerprint)


async def test_deny_from_rego_rule_has_reason_and_logged_decision_id(
    pdp: PdpProcess, client: PdpClient
) -> None:
    s = statement("DELETE")
    [decision] = await client.decide(REPORTING, session(), [s], in_transaction=False)
    assert decision.action is Action.DENY
    assert decision.reasons == ("deletes are not allowed",)
    assert decision.code == ""
    assert not decision.permits
    assert len(decision.decision_id) == 32
    assert decision.revision
    [record] = wait_for_records(pdp, str(s.facts["fingerprint"]), 1)
    assert record["decision_id"] == decision.decision_id
    assert record["action"] == "deny"
    assert record["code"] == ""
    assert record["subject"] == "agent:reporting"
    assert record["revision"] == decision.revision
    assert isinstance(record["latency_us"], int)
    assert "sql_normalized" not in record
    assert pdp.token is not None
    assert pdp.token not in json.dumps(pdp.log_records())


async def test_decision_ids_travel_in_trailing_metadata(pdp: PdpProcess) -> None:
    request = pb.DecideRequest(
        identity=pb.Identity(subject="agent:reporting"),
        statements=[
            pb.StatementRequest(statement=pb.StatementFacts(command="SELECT")),
            pb.StatementRequest(statement=pb.StatementFacts(command="DELETE")),
        ],
    )
    async with grpc.aio.insecure_channel(pdp.address) as channel:
        call = pb_grpc.DecisionServiceStub(channel).Decide(
            request, metadata=(("authorization", f"Bearer {pdp.token}"),), timeout=5
        )
        response = await call
        trailer = await call.trailing_metadata()
    assert decision_ids(trailer) == [d.decision_id for d in response.decisions]
    assert [d.action for d in response.decisions] == [pb.ACTION_ALLOW, pb.ACTION_DENY]


async def test_allow_carries_mask_and_row_limit(client: PdpClient) -> None:
    [decision] = await client.decide(
        REPORTING, session(), [statement("SELECT")], in_transaction=False
    )
    assert decision.action is Action.ALLOW
    assert decision.mask == {"public.customers.email": "partial_email"}
    assert decision.row_limit == 1000
    assert decision.cache_ttl_s == 60
    assert decision.permits


async def test_deny_require_approval_until_approved(client: PdpClient) -> None:
    [decision] = await client.decide(
        REPORTING, session(), [statement("DROP")], in_transaction=False
    )
    assert decision.action is Action.REQUIRE_APPROVAL
    assert not decision.permits
    assert decision.refusal_message() == "statement requires approval: DDL needs a DBA"


@pytest.mark.parametrize("command", ["INSERT", "VACUUM"])
async def test_deny_invalid_decisions(pdp: PdpProcess, client: PdpClient, command: str) -> None:
    """INSERT: an unknown action; VACUUM: conflicting complete rules (several results)."""
    s = statement(command)
    [decision] = await client.decide(REPORTING, session(), [s], in_transaction=False)
    assert decision.action is Action.DENY
    assert decision.code == "invalid_decision"
    assert not decision.permits
    assert "invalid_decision" in decision.refusal_message()
    [record] = wait_for_records(pdp, str(s.facts["fingerprint"]), 1)
    assert record["code"] == "invalid_decision"
    assert record["decision_id"] == decision.decision_id


async def test_policy_dry_run_lets_the_statement_through(client: PdpClient) -> None:
    [decision] = await client.decide(
        REPORTING, session(), [statement("TRUNCATE")], in_transaction=False
    )
    assert decision.action is Action.DENY
    assert decision.dry_run
    assert decision.permits
    assert decision.reasons == ("would be denied",)


async def test_batch_is_decided_in_one_call_in_order(pdp: PdpProcess, client: PdpClient) -> None:
    commands = ["SELECT", "DELETE", "DROP", "INSERT", "TRUNCATE", "OTHER"]
    statements = [statement(c) for c in commands]
    calls = client.pdp_calls
    decisions = await client.decide(REPORTING, session(), statements, in_transaction=True)
    assert client.pdp_calls == calls + 1
    assert [d.action for d in decisions] == [
        Action.ALLOW,
        Action.DENY,
        Action.REQUIRE_APPROVAL,
        Action.DENY,
        Action.DENY,
        Action.DENY,
    ]
    assert [d.code for d in decisions] == ["", "", "", "invalid_decision", "", ""]
    assert len({d.decision_id for d in decisions}) == len(commands)
    for s, d in zip(statements, decisions, strict=True):
        [record] = wait_for_records(pdp, str(s.facts["fingerprint"]), 1)
        assert record["decision_id"] == d.decision_id


async def test_batch_with_conflicting_rule_isolates_the_invalid_one(client: PdpClient) -> None:
    decisions = await client.decide(
        REPORTING, session(), [statement("SELECT"), statement("VACUUM")], in_transaction=False
    )
    assert [(d.action, d.code) for d in decisions] == [
        (Action.ALLOW, ""),
        (Action.DENY, "invalid_decision"),
    ]


async def test_open_session(client: PdpClient) -> None:
    grant = await client.open_session(REPORTING, session())
    assert grant.allowed
    assert grant.upstream_role == "reporting"
    assert len(grant.decision_id) == 32
    refused = await client.open_session(STRANGER, session())
    assert not refused.allowed
    assert refused.upstream_role == ""
    assert refused.reasons == ("identity not admitted",)


async def test_repeated_statement_is_answered_from_cache(
    pdp: PdpProcess, client: PdpClient
) -> None:
    s = statement("SELECT")
    facts = session()
    first = await client.decide(REPORTING, facts, [s], in_transaction=False)
    hits = client.cache.hits
    for _ in range(5):
        again = await client.decide(REPORTING, facts, [s], in_transaction=False)
        assert again[0] is first[0]
    assert client.cache.hits == hits + 5
    # Another decision after them, so the log has caught up when it appears.
    marker = statement("SELECT")
    await client.decide(REPORTING, facts, [marker], in_transaction=False)
    wait_for_records(pdp, str(marker.facts["fingerprint"]), 1)
    assert len(records_for(pdp, str(s.facts["fingerprint"]))) == 1
    # in_transaction is part of the input document: a different key.
    await client.decide(REPORTING, facts, [s], in_transaction=True)
    assert len(wait_for_records(pdp, str(s.facts["fingerprint"]), 2)) == 2


async def test_an_identity_scoped_decision_serves_every_session_of_the_identity(
    pdp: PdpProcess, client: PdpClient
) -> None:
    """cache_scope "identity": another connection of the same identity (other session id,
    other client address) is answered from the cache; anything else in the input still
    makes its own key, and session-scoped decisions stay with their session."""
    begin, select = statement("BEGIN"), statement("SELECT")
    first = session()
    [decision] = await client.decide(REPORTING, first, [begin], in_transaction=False)
    assert (decision.action, decision.cache_scope) == (Action.ALLOW, "identity")
    await client.decide(REPORTING, first, [select], in_transaction=False)
    calls = client.pdp_calls
    second = SessionFacts(uuid.uuid4().hex, "edge-1", "10.9.9.9", "shop", "psql", True, "")
    assert client.decide_now(REPORTING, second, [begin], in_transaction=False) == [decision]
    client.forget_session(first)  # the first connection ends: the shared entry stays
    assert await client.decide(REPORTING, second, [begin], in_transaction=False) == [decision]
    assert client.pdp_calls == calls
    assert client.decide_now(REPORTING, second, [select], in_transaction=False) is None
    other_database = SessionFacts(uuid.uuid4().hex, "edge-1", "10.0.0.7", "crm", "psql", True, "")
    other_group = Identity("agent:reporting", "https://idp.example", ("etl",), "jwt", {})
    for identity, facts, in_transaction in (
        (REPORTING, other_database, False),
        (other_group, second, False),
        (REPORTING, second, True),
    ):
        assert client.decide_now(identity, facts, [begin], in_transaction=in_transaction) is None
        await client.decide(identity, facts, [begin], in_transaction=in_transaction)
    assert client.pdp_calls == calls + 3
    wait_for_records(pdp, str(begin.facts["fingerprint"]), 4)


async def test_ttl_zero_decision_is_asked_every_time(pdp: PdpProcess, client: PdpClient) -> None:
    s = statement("UPDATE")
    facts = session()
    ids = set()
    for _ in range(3):
        [decision] = await client.decide(REPORTING, facts, [s], in_transaction=False)
        assert decision.action is Action.ALLOW
        assert decision.cache_ttl_s == 0
        ids.add(decision.decision_id)
    assert len(ids) == 3
    assert len(wait_for_records(pdp, str(s.facts["fingerprint"]), 3)) == 3


async def test_deny_unauthenticated_calls(pdp: PdpProcess) -> None:
    config = PdpClientConfig((pdp.address,), deadline_s=2.0, token="wrong-token")
    async with PdpClient(config) as intruder:
        [decision] = await intruder.decide(
            REPORTING, session(), [statement("SELECT")], in_transaction=False
        )
        grant = await intruder.open_session(REPORTING, session())
    assert decision.action is Action.DENY
    assert decision.code == "pdp_unauthenticated"
    assert not grant.allowed
    assert "pdp_unauthenticated" in grant.reasons[0]
    async with grpc.aio.insecure_channel(pdp.address) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Decide(pb.DecideRequest(), timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.WatchRevisions(pb.WatchRevisionsRequest(), timeout=5):
                pass
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # The health service stays open to load balancers.
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_decision_service(pdp: PdpProcess) -> None:
    async with grpc.aio.insecure_channel(pdp.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        responses = stub.ServerReflectionInfo(
            ask(), metadata=(("authorization", f"Bearer {pdp.token}"),), timeout=5
        )
        names = [s.name async for r in responses for s in r.list_services_response.service]
    assert "pgwarden.v1.DecisionService" in names
    assert "grpc.health.v1.Health" in names


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_ops_endpoints(pdp: PdpProcess, client: PdpClient) -> None:
    await client.decide(REPORTING, session(), [statement("DELETE")], in_transaction=False)
    assert (await asyncio.to_thread(http_get, f"{pdp.http_url}/healthz"))[0] == 200
    status, body = await asyncio.to_thread(http_get, f"{pdp.http_url}/readyz")
    ready = json.loads(body)
    assert status == 200
    assert ready["ready"] is True
    assert ready["revision"] == client.cache.revision
    status, text = await asyncio.to_thread(http_get, f"{pdp.http_url}/metrics")
    assert status == 200
    assert 'pgwarden_pdp_decisions_total{action="deny",code="",dry_run="false"}' in text
    assert "pgwarden_pdp_decide_seconds_bucket" in text
    assert f'pgwarden_pdp_revision_info{{revision="{ready["revision"]}"}} 1' in text


async def test_client_metrics_export(client: PdpClient) -> None:
    facts, s = session(), statement("SELECT")
    for _ in range(4):
        await client.decide(REPORTING, facts, [s], in_transaction=False)
    stats = client.stats()
    assert stats["cache_hits"] == 3
    assert stats["cache_misses"] == 1
    assert stats["cache_hit_ratio"] == 0.75
    text = client.metrics_text()
    assert "pgwarden_proxy_decision_cache_hit_ratio 0.75" in text
    assert 'pgwarden_proxy_decisions_total{source="pdp",code=""} 1' in text
    assert "pgwarden_proxy_pdp_decide_seconds_count 1" in text


def test_sigterm_stops_gracefully_with_its_opa(tmp_path: Path) -> None:
    policies = write_example_policy(tmp_path / "policies")
    process = PdpProcess(policies=policies, log_dir=tmp_path / "logs").start()
    [started] = process.log_records("opa_started")
    assert process.process.stop() == 0
    events = [r["event"] for r in process.log_records()]
    assert events[-2:] == ["stopping", "stopped"]
    opa_alive: Callable[[], bool] = lambda: Path(f"/proc/{started['pid']}").exists()  # noqa: E731
    poll_until(lambda: not opa_alive(), timeout_s=10, what="OPA child exit")


async def test_the_pdp_holds_its_ports_before_it_picks_one_for_opa(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPA's port is the OS's pick of a free one; the ports in the PDP's config are free
    too until the PDP binds them, so the PDP binds them first (a CI run once lost its
    gRPC port to its own OPA: "Address already in use")."""
    process = PdpProcess(policies=write_example_policy(tmp_path / "policies"), log_dir=tmp_path)
    ours = (process.port, process.http_port)
    free_when_opa_port_picked: list[list[int]] = []

    def picking(host: str = "127.0.0.1") -> int:
        free_when_opa_port_picked.append([p for p in ours if not bound(host, p)])
        return free_port(host)

    monkeypatch.setattr(opa_supervisor, "free_port", picking)
    pdp = Pdp(load_config(process.config_path))
    await pdp.start()
    try:
        assert pdp.ready
    finally:
        await pdp.stop()
    assert free_when_opa_port_picked == [[]]


def bound(host: str, port: int) -> bool:
    """Whether something holds ``host:port`` (a bind to it fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def test_a_killed_pdps_snapshot_is_removed_when_a_pdp_starts(tmp_path: Path) -> None:
    """SIGKILL leaves the policy copies and OPA's socket behind; the next PDP to start
    removes them (and keeps its own until it stops)."""
    policies = write_example_policy(tmp_path / "policies")
    killed = PdpProcess(policies=policies, log_dir=tmp_path / "killed").start()
    [started] = killed.log_records("opa_started")
    left = Path(started["socket"]).parents[1]  # <state dir>/<snapshot>/opa.sock
    killed.kill()
    assert (left / "owner").exists()
    with PdpProcess(policies=policies, log_dir=tmp_path / "next") as successor:
        [swept] = successor.log_records("snapshots_swept")
        assert swept["directories"] >= 1
        assert not left.exists()
        [own] = successor.log_records("opa_started")
        own_dir = Path(own["socket"]).parents[1]
        assert own_dir.exists()
    assert not own_dir.exists()


async def test_audit_records_are_acknowledged_once_durable(
    pdp: PdpProcess, client: PdpClient
) -> None:
    [decision] = await client.decide(
        REPORTING, session("s-exec"), [statement("SELECT")], in_transaction=False
    )
    records = [
        pb.AuditRecord(
            record_id=uuid.uuid4().hex,
            kind=pb.AUDIT_KIND_STATEMENT,
            session_id="s-exec",
            decision=pb.AuditDecision(decision_id=decision.decision_id),
            outcome=pb.AuditOutcome(rows=42, bytes_sent=4096, duration_us=850),
        ),
        pb.AuditRecord(
            record_id=uuid.uuid4().hex,
            kind=pb.AUDIT_KIND_STATEMENT,
            session_id="s-exec",
            decision=pb.AuditDecision(decision_id=decision.decision_id),
            outcome=pb.AuditOutcome(sqlstate="57014"),
        ),
    ]
    assert await client.report_executions(records) == 2
    assert await client.report_executions([]) == 0
    stored = [
        json.loads(line)
        for line in (pdp.log_dir / "audit.jsonl").read_text().splitlines()
        if decision.decision_id in line
    ]
    assert [(r["outcome"]["rows"], r["outcome"]["sqlstate"]) for r in stored] == [
        (42, ""),
        (0, "57014"),
    ]


async def test_watch_revisions_announces_the_revision_on_subscription(pdp: PdpProcess) -> None:
    async with grpc.aio.insecure_channel(pdp.address) as channel:
        stream = pb_grpc.DecisionServiceStub(channel).WatchRevisions(
            pb.WatchRevisionsRequest(proxy_id="edge-9"),
            metadata=(("authorization", f"Bearer {pdp.token}"),),
        )
        first = await stream.read()
        stream.cancel()
    [revision] = [r["revision"] for r in pdp.log_records("revision")]
    assert first.revision == revision


async def test_non_ascii_input_reaches_the_policy_and_comes_back(client: PdpClient) -> None:
    name = "rapport-été ✓ 報告"
    facts = SessionFacts(uuid.uuid4().hex, "edge-1", "10.0.0.7", "shop", name, True, "")
    [decision] = await client.decide(REPORTING, facts, [statement("LISTEN")], in_transaction=False)
    assert decision.code == ""
    assert decision.reasons == (f"application {name} may not LISTEN",)


def file_mode(path: Path) -> int:
    return path.stat().st_mode


async def test_supervised_opa_answers_decisions_on_its_unix_socket(pdp: PdpProcess) -> None:
    """The PDP's decision queries go to the Unix socket of its OPA (owner-only), not TCP:
    a target whose TCP port has nothing behind it still gets the real OPA's decisions."""
    [started] = pdp.log_records("opa_started")
    socket_path = Path(started["socket"])
    mode = file_mode(socket_path)
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    target = await OpaTarget.open(
        f"http://127.0.0.1:{free_port()}", "r", timeout_s=2.0, unix_socket=str(socket_path)
    )
    try:
        answer = await target.query("decision", {"statement": {"command": "DELETE"}})
    finally:
        await target.close()
    assert answer["result"]["reasons"] == ["deletes are not allowed"]


async def test_smoke_with_the_shipped_policy_pack(tmp_path: Path, repo_root: Path) -> None:
    """The shipped pack loads, and its answers pass strict validation."""
    with PdpProcess(policies=repo_root / "policies", log_dir=tmp_path / "logs") as shipped:
        config = PdpClientConfig((shipped.address,), deadline_s=2.0, token=shipped.token)
        async with PdpClient(config) as c:
            [decision] = await c.decide(
                REPORTING, session(), [statement("SELECT")], in_transaction=False
            )
    assert decision.code == ""
    assert decision.revision
    assert len(decision.decision_id) == 32


async def test_decide_now_answers_from_cache_without_waiting(client: PdpClient) -> None:
    facts = session()
    a, b = statement("SELECT"), statement("DELETE")
    calls = client.pdp_calls
    assert client.decide_now(REPORTING, facts, [a], in_transaction=False) is None
    assert client.pdp_calls == calls  # nothing was asked
    # The proxy's pattern: decide_now, then decide on None — one miss, not two.
    misses = client.cache.misses
    first = await client.decide(REPORTING, facts, [a, b], in_transaction=False)
    assert client.cache.misses == misses + 2
    assert client.decide_now(REPORTING, facts, [a], in_transaction=False) == [first[0]]
    assert client.decide_now(REPORTING, facts, [a, b], in_transaction=False) == first
    assert client.decide_now(REPORTING, facts, [a], in_transaction=True) is None
    assert (
        client.decide_now(REPORTING, facts, [a, statement("SELECT")], in_transaction=False) is None
    )
    assert client.pdp_calls == calls + 1


async def test_decide_stream_answers_each_request_by_its_id(pdp: PdpProcess) -> None:
    def request(command: str) -> pb.DecideRequest:
        facts = pb.StatementFacts(command=command)
        return pb.DecideRequest(
            identity=pb.Identity(subject="agent:reporting"),
            statements=[pb.StatementRequest(statement=facts)],
        )

    async with grpc.aio.insecure_channel(pdp.address) as channel:
        call = pb_grpc.DecisionServiceStub(channel).DecideStream(
            metadata=(("authorization", f"Bearer {pdp.token}"),), timeout=10
        )
        for request_id, command in ((7, "SELECT"), (8, "DELETE"), (9, "SELECT")):
            await call.write(
                pb.DecideStreamRequest(request_id=request_id, request=request(command))
            )
        await call.done_writing()
        answers = {item.request_id: item.response async for item in call}
    assert {k: [d.action for d in v.decisions] for k, v in answers.items()} == {
        7: [pb.ACTION_ALLOW],
        8: [pb.ACTION_DENY],
        9: [pb.ACTION_ALLOW],
    }


async def test_concurrent_sessions_get_their_own_decisions(client: PdpClient) -> None:
    commands = ["SELECT", "DELETE", "DROP"] * 10
    decisions = await asyncio.gather(
        *(
            client.decide(REPORTING, session(), [statement(c)], in_transaction=False)
            for c in commands
        )
    )
    expected = {"SELECT": Action.ALLOW, "DELETE": Action.DENY, "DROP": Action.REQUIRE_APPROVAL}
    assert [d.action for [d] in decisions] == [expected[c] for c in commands]


async def test_a_pdp_without_decide_stream_is_asked_with_unary_decide(pdp: PdpProcess) -> None:
    """An older PDP release: DecideStream is UNIMPLEMENTED; Decide works."""

    class OlderPdp(pb_grpc.DecisionServiceServicer):
        def __init__(self, upstream: Any) -> None:
            self.upstream = upstream
            self.calls = 0

        async def Decide(
            self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
        ) -> pb.DecideResponse:
            self.calls += 1
            response: pb.DecideResponse = await self.upstream.Decide(
                request, metadata=(("authorization", f"Bearer {pdp.token}"),), timeout=5
            )
            return response

    async with grpc.aio.insecure_channel(pdp.address) as channel:
        older = OlderPdp(pb_grpc.DecisionServiceStub(channel))
        server = grpc.aio.server()
        pb_grpc.add_DecisionServiceServicer_to_server(older, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            config = PdpClientConfig((f"127.0.0.1:{port}",), deadline_s=5.0)
            async with PdpClient(config, proxy_id="edge-1") as old_client:
                for command, action in (("SELECT", Action.ALLOW), ("DELETE", Action.DENY)):
                    [decision] = await old_client.decide(
                        REPORTING, session(), [statement(command)], in_transaction=False
                    )
                    assert (decision.action, decision.code) == (action, "")
        finally:
            await server.stop(None)
    assert older.calls == 2
