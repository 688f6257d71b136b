"""The audit trail end to end: a real PDP process (with its ``[audit]`` store), the real
proxy server in this process in PDP mode with an :class:`AuditReporter` wired in the way
docs/audit.md tells the proxy to, and raw protocol clients that count what they receive."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.pdp.audit.chain import Verification, verify
from pgwarden.pdp.audit.record_ids import new_record_id
from pgwarden.pdp.audit.store import read_jsonl_lines
from pgwarden.pdp.harness import PdpProcess
from pgwarden.proxy.audit import AuditConfig, AuditReporter
from pgwarden.proxy.auth.agent import AgentAuthenticator
from pgwarden.proxy.auth.dev_tokens import issue_dev_token
from pgwarden.proxy.config import ProxyConfig
from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.server import ProxyServer
from pgwarden.stack.postgres import PostgresCluster
from pgwarden.stack.process import StackError, free_port, poll_until_async
from pgwarden.v1 import decision_pb2 as pb
from tests.integration.rawpg import RawClient
from tests.integration.wiretap import WiretapProcess, jsonl_records, reconcile

SENTINEL = "zq-sentinel-5d2e91"

POLICY = """\
# METADATA
# title: audit trail tests
package pgwarden

default decision := {
	"action": "deny",
	"reasons": ["no rule allows this statement"],
	"cache_ttl_s": 60,
}

decision := {"action": "allow", "reasons": ["reads"], "row_limit": 20, "cache_ttl_s": 60} if {
	input.statement.command == "SELECT"
	not forbidden
}

decision := {"action": "allow", "reasons": ["updates of items"], "cache_ttl_s": 60} if {
	input.statement.command == "UPDATE"
}

decision := {"action": "allow", "reasons": ["exports of items"], "cache_ttl_s": 60} if {
	input.statement.command == "COPY"
}

forbidden if {
	some relation in input.statement.relations
	relation.name == "forbidden_table"
}

default session := {"allowed": false, "upstream_role": "", "reasons": ["identity not admitted"]}

session := {"allowed": true, "upstream_role": "pgwarden_proxy", "reasons": ["analytics"]} if {
	"analytics" in input.identity.groups
}
"""


def write_policy(root: Path) -> Path:
    (root / "pgwarden").mkdir(parents=True, exist_ok=True)
    (root / "pgwarden" / "decision.rego").write_text(POLICY)
    return root


def audited_pdp(root: Path, audit: dict[str, Any], *, port: int | None = None) -> PdpProcess:
    """A PDP process whose config has an ``[audit]`` table."""
    process = PdpProcess(policies=write_policy(root / "policies"), log_dir=root / "pdp", port=port)
    lines = ["", "[audit]"] + [f"{k} = {json.dumps(v)}" for k, v in audit.items()]
    with process.config_path.open("a") as f:
        f.write("\n".join(lines) + "\n")
    return process


@dataclass
class AuditStoreUnderTest:
    """The PDP's store in a test: a JSON Lines file or a table in its own database."""

    kind: str
    cluster: PostgresCluster
    path: Path
    database: str = ""

    def audit_table(self, replica_id: str) -> dict[str, Any]:
        if self.kind == "jsonl":
            return {"path": str(self.path), "replica_id": replica_id}
        return {"store": "postgres", "dsn": self.dsn, "replica_id": replica_id}

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.database)

    def lines(self) -> list[tuple[int, str]]:
        if self.kind == "jsonl":
            return list(read_jsonl_lines(self.path)) if self.path.exists() else []
        try:
            out = self.cluster.psql(
                "SELECT record::text FROM pgwarden_audit ORDER BY replica_id, seq", self.database
            )
        except StackError:  # the PDP has not created the table yet
            return []
        return list(enumerate((line for line in out.splitlines() if line), start=1))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(text) for _, text in self.lines()]

    def verify(self) -> Verification:
        return verify(self.lines())

    def text(self) -> str:
        """Everything the store holds, for looking for what must not be there."""
        if self.kind == "jsonl":
            return self.path.read_text()
        return self.cluster.psql("SELECT t::text FROM pgwarden_audit t", self.database)


@pytest.fixture(params=["jsonl", "postgres"])
def audit_store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_cluster: PostgresCluster
) -> AuditStoreUnderTest:
    store = AuditStoreUnderTest(request.param, pg_cluster, tmp_path / "trail" / "audit.jsonl")
    if store.kind == "postgres":
        store.database = f"audit_{uuid.uuid4().hex[:12]}"
        pg_cluster.create_database(store.database)
    return store


@dataclass
class AuditedProxy:
    """The in-process proxy, reached through a wiretap (``port``)."""

    server: ProxyServer
    reporter: AuditReporter
    client: PdpClient
    token: str
    spool_dir: Path
    database: str
    tap: WiretapProcess

    @property
    def port(self) -> int:
        return self.tap.port

    def reconcile(self, records: list[dict[str, Any]]) -> list[str]:
        """Stop the tap, then compare what its clients received with ``records``."""
        self.tap.stop()
        return reconcile(self.tap.connections(), records)


@contextmanager
def proxy_config(
    tmp: Path, cluster: PostgresCluster, pdp: PdpProcess, database: str
) -> Iterator[tuple[ProxyConfig, str]]:
    tokens_file = tmp / "dev_tokens.toml"
    token = issue_dev_token(tokens_file, "agent:reporting", ["analytics"])
    path = tmp / "proxy.toml"
    path.write_text(
        f'[proxy]\nlisten = "127.0.0.1"\nport = {free_port()}\nproxy_id = "audit-proxy"\n'
        f'[upstream]\nhost = "{cluster.host}"\nport = {cluster.port}\n'
        f'[upstream.roles.pgwarden_proxy]\npassword = "{cluster.proxy_login.password}"\n'
        f'[decision]\nmode = "pdp"\n[decision.pdp]\nendpoints = ["{pdp.address}"]\n'
        f'token = "{pdp.token}"\ndeadline_ms = 2000\n'
        f'[auth]\ndev_tokens_file = "{tokens_file}"\n'
    )
    yield ProxyConfig.load(path), token


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def start_audited_proxy(
    monkeypatch: pytest.MonkeyPatch, pg_cluster: PostgresCluster, proxy_db: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[AuditedProxy]]]:
    """Start the in-process proxy (PDP mode, its own audit reporter with a quick batch
    delay) in front of a PDP process."""
    started: list[tuple[AuditedProxy, AgentAuthenticator]] = []

    async def start(pdp: PdpProcess, **audit: Any) -> AuditedProxy:
        with proxy_config(tmp_path, pg_cluster, pdp, proxy_db) as (config, token):
            assert isinstance(config.decisions, PdpClientConfig)
            client = await PdpClient(config.decisions, proxy_id=config.proxy_id).start()
            spool_dir = tmp_path / "spool"
            reporter = AuditReporter(
                AuditConfig(spool_dir=spool_dir, **{"batch_max_delay_s": 0.02, **audit}),
                functools.partial(client.report_serialized, timeout_s=5.0),
                proxy_id=config.proxy_id,
            )
            await reporter.start()
            authenticator = AgentAuthenticator(config.auth)
            server = ProxyServer(
                config, authenticator=authenticator, decision_point=client, audit=reporter
            )
            await authenticator.warm_up()
            await server.start()
        tap = WiretapProcess(tmp_path, ("127.0.0.1", server.port))
        await asyncio.to_thread(tap.start_and_wait)
        proxy = AuditedProxy(server, reporter, client, token, spool_dir, proxy_db, tap)
        started.append((proxy, authenticator))
        return proxy

    yield start
    for proxy, authenticator in started:
        proxy.tap.process.stop()
        await proxy.server.shutdown(1.0)
        await proxy.reporter.close(timeout_s=1.0)
        await proxy.client.close()
        await authenticator.close()


async def until(condition: Callable[[], bool], timeout_s: float = 30, what: str = "") -> None:
    """Poll ``condition`` (never a sleep as synchronisation: a poll with a deadline)."""
    await poll_until_async(condition, timeout_s=timeout_s, what=what or "condition")


@dataclass
class Received:
    """What a client received for one statement: DataRows and their bytes, the end."""

    rows: int = 0
    bytes: int = 0
    sqlstate: str = ""
    tag: str = ""


def results(messages: list[tuple[bytes, bytes]]) -> list[Received]:
    out: list[Received] = []
    current = Received()
    for type_, body in messages:
        if type_ == b"D":
            current.rows += 1
            current.bytes += 5 + len(body)
        elif type_ in (b"C", b"E", b"I"):
            if type_ == b"E":
                current.sqlstate = m.parse_error_response(body).sqlstate
            if type_ == b"C":
                current.tag = body.rstrip(b"\0").decode()
            out.append(current)
            current = Received()
    return out


def extended(sql: str, *params: str) -> bytes:
    return (
        m.build_parse("", sql)
        + m.build_bind("", "", [p.encode() for p in params])
        + m.build_execute("")
        + m.build_sync()
    )


def pdp_metrics(pdp: PdpProcess) -> str:
    with urllib.request.urlopen(pdp.http_url + "/metrics", timeout=10) as response:  # noqa: S310
        text: str = response.read().decode()
    return text


def statement_records(records: list[dict[str, Any]], session_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r["session_id"] == session_id and r["kind"] != "session_open"]


# -- acceptance 1 and 4: every statement once, counts as received, no literal anywhere ---


async def test_every_statement_is_recorded_once_with_what_the_client_received(
    tmp_path: Path,
    audit_store: AuditStoreUnderTest,
    start_audited_proxy: Callable[..., Awaitable[AuditedProxy]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pdp = audited_pdp(tmp_path, audit_store.audit_table("pdp-e2e"))
    with pdp:
        proxy = await start_audited_proxy(pdp)

        def client() -> list[Received]:
            with RawClient("127.0.0.1", proxy.port) as c:
                c.login("agent:reporting", proxy.token, proxy.database)
                received: list[Received] = []
                for payload in (
                    m.build_query(
                        f"SELECT id, name FROM items WHERE name <> '{SENTINEL}' AND id <= 10 "
                        "ORDER BY id"
                    ),
                    extended(
                        "SELECT id, name, price FROM items WHERE name <> $1 ORDER BY id", SENTINEL
                    ),
                    extended(
                        "UPDATE items SET price = price WHERE name <> $1 AND id <= 4", SENTINEL
                    ),
                    m.build_query(f"SELECT * FROM forbidden_table WHERE secret = '{SENTINEL}'"),
                    m.build_query("SELECT 1/0"),
                    m.build_query("SELECT 1 AS a; SELECT 'two' AS b"),
                ):
                    c.send(payload)
                    received += results(c.read_until(b"Z"))
                c.send(m.build_terminate())
                return received

        received = await asyncio.to_thread(client)
        await until(lambda: proxy.server.sessions == set(), what="session closed")
        await asyncio.wait_for(proxy.reporter.wait_delivered(), 30)
        stored = audit_store.records()

    [opened] = [r for r in stored if r["kind"] == "session_open"]
    session_id = opened["session_id"]
    records = statement_records(stored, session_id)
    assert [r["kind"] for r in records] == [
        "statement",
        "statement",
        "statement",
        "refusal",
        "statement",
        "statement",
        "statement",
        "session_close",
    ]
    # What each client statement received, against its record.
    select, limited, update, refused, failed, one, two, closed = records
    assert [(x.rows, x.bytes) for x in received] == [
        (10, select["outcome"]["bytes_sent"]),
        (20, limited["outcome"]["bytes_sent"]),
        (0, 0),
        (0, 0),
        (0, 0),
        (1, one["outcome"]["bytes_sent"]),
        (1, two["outcome"]["bytes_sent"]),
    ]
    for record, got in zip(
        [select, limited, update, failed, one, two],
        [received[i] for i in (0, 1, 2, 4, 5, 6)],
        strict=True,
    ):
        assert record["outcome"]["rows"] == got.rows
        assert record["outcome"]["bytes_sent"] == got.bytes
    assert select["outcome"]["rows_affected"] == 10
    assert select["statement"]["sql"].endswith("WHERE name <> $1 AND id <= $2 ORDER BY id")
    assert limited["outcome"]["row_limit_reached"]
    assert limited["decision"]["row_limit"] == 20
    assert received[1].sqlstate == "54000"
    assert update["outcome"]["rows_affected"] == 4
    assert received[2].tag == "UPDATE 4"
    assert update["statement"]["protocol"] == "extended"
    assert refused["decision"]["action"] == "deny"
    assert refused["decision"]["reasons"] == ["no rule allows this statement"]
    assert refused["statement"]["relations"][0]["name"] == "forbidden_table"
    assert received[3].sqlstate == "42501"
    assert failed["outcome"]["sqlstate"] == "22012" == received[4].sqlstate
    assert closed["session_stats"]["statements"] == 6
    assert closed["session_stats"]["refusals"] == 1
    assert closed["session_stats"]["rows"] == 32
    for record in records:
        assert record["identity"]["subject"] == "agent:reporting"
        assert record["identity"]["groups"] == ["analytics"]
        assert record["proxy_id"] == "audit-proxy"
        assert record["database"] == proxy.database
        assert record["replica_id"] == "pdp-e2e"
    assert len({r["record_id"] for r in stored}) == len(stored)
    assert audit_store.verify().ok
    assert proxy.reconcile(stored) == []
    # The ended session left nothing memoized behind, in the PDP client or the reporter.
    assert proxy.client.stats()["sessions_memoized"] == 0
    assert proxy.client.stats()["cache_entries"] == 0  # its decisions went with it
    assert proxy.reporter.stats()["sessions_memoized"] == 0
    # Acceptance 4: the sentinel (a WHERE literal and a Bind parameter) is nowhere.
    places = {
        "audit store": audit_store.text(),
        "PDP log": pdp.log_path.read_text(),
        "spool": "".join(p.read_bytes().decode("latin-1") for p in proxy.spool_dir.iterdir()),
        "proxy log": "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records),
    }
    for place, text in places.items():
        assert SENTINEL not in text, place
    assert "items" in places["audit store"]


# -- acceptance 2: kill -9 of the PDP in the middle of a load -----------------------------


async def test_kill_9_of_the_pdp_mid_load_keeps_every_statement_exactly_once(
    tmp_path: Path,
    audit_store: AuditStoreUnderTest,
    start_audited_proxy: Callable[..., Awaitable[AuditedProxy]],
) -> None:
    total, hold_at = 1000, 700
    pdp = audited_pdp(tmp_path, audit_store.audit_table("pdp-k"))
    pdp.start()
    try:
        proxy = await start_audited_proxy(pdp)
        killed = threading.Event()
        done = [0]

        def load() -> None:
            with RawClient("127.0.0.1", proxy.port) as c:
                c.login("agent:reporting", proxy.token, proxy.database)
                for i in range(total):
                    if i == hold_at:  # make sure part of the load runs with the PDP dead
                        assert killed.wait(60)
                    c.send(extended("SELECT id, name FROM items WHERE id = $1", str(i % 100 + 1)))
                    [got] = results(c.read_until(b"Z"))
                    assert (got.rows, got.sqlstate) == (1, ""), got
                    done[0] += 1
                c.send(m.build_terminate())

        loader = asyncio.ensure_future(asyncio.to_thread(load))
        # Kill while statements flow and batches are being written.
        await until(lambda: proxy.reporter.records_acked >= 100, what="a first acknowledgement")
        pdp.kill()  # SIGKILL, whatever it was writing
        killed_at = done[0]
        killed_with = len(audit_store.lines())
        killed.set()
        await loader  # the rest runs on cached decisions while the PDP is dead
        await until(lambda: proxy.reporter.send_failures > 0, what="a failed delivery")
        assert proxy.reporter.durable_ok  # spooled: durable on the proxy
        await asyncio.to_thread(pdp.start)
        await until(lambda: proxy.server.sessions == set(), what="session closed")
        await asyncio.wait_for(proxy.reporter.wait_delivered(), 60)
        metrics = await asyncio.to_thread(pdp_metrics, pdp)
    finally:
        pdp.stop()
    if audit_store.kind == "jsonl":  # what the restarted PDP keeps of the ids it read back
        reopened = pdp.log_records("audit_store_opened")[-1]
        assert reopened["records"] >= 100  # at least what was acknowledged before the kill
        assert reopened["record_id_runs"] == 1
    assert 0 < killed_at < hold_at
    stored = audit_store.records()
    statements = [r for r in stored if r["kind"] == "statement"]
    assert killed_with < total
    assert done[0] == total
    assert len(statements) == total
    assert len({r["record_id"] for r in statements}) == total
    assert len({r["record_id"] for r in stored}) == len(stored)
    assert [r["outcome"]["rows"] for r in statements] == [1] * total
    result = audit_store.verify()
    assert result.ok, result.breaks
    assert result.heads["pdp-k"].seq == len(stored)
    assert proxy.reconcile(stored) == []
    assert 'pgwarden_pdp_audit_records_total{result="stored"}' in metrics


async def test_replay_after_a_lost_acknowledgement_stores_nothing_twice(tmp_path: Path) -> None:
    """The PDP made a batch durable, then died before its answer arrived: the proxy sends
    the same records again to the restarted PDP, which stores none of them twice."""
    audit_file = tmp_path / "audit.jsonl"
    pdp = audited_pdp(tmp_path, {"path": str(audit_file), "replica_id": "pdp-r"})
    records = [
        pb.AuditRecord(
            record_id=new_record_id(),  # as the proxy mints them
            kind=pb.AUDIT_KIND_SESSION_OPEN,
            time_unix_us=time.time_ns() // 1000,
            session_id="s-replay",
            identity=pb.Identity(subject="agent:etl"),
        )
        for _ in range(50)
    ]
    with pdp:
        config = PdpClientConfig((pdp.address,), deadline_s=5.0, token=pdp.token)
        async with PdpClient(config) as client:
            assert await client.report_executions(records[:30]) == 30
            pdp.kill()
            assert await client.report_executions(records) == 0  # unreachable: kept
            await asyncio.to_thread(pdp.start)
            accepted = [0]

            async def resend() -> None:  # the channel reconnects with a short backoff
                accepted[0] = await client.report_executions(records)

            deadline = time.monotonic() + 30
            while not accepted[0]:
                assert time.monotonic() < deadline
                await resend()
                await asyncio.sleep(0.02)  # poll interval while the channel reconnects
            assert accepted[0] == 50
            metrics = await asyncio.to_thread(pdp_metrics, pdp)
        reopened = pdp.log_records("audit_store_opened")[-1]
    # The restarted PDP read the 30 ids back and keeps them as one run of counters.
    assert (reopened["records"], reopened["record_id_runs"]) == (30, 1)
    stored = jsonl_records(audit_file)
    assert [r["record_id"] for r in stored] == [r.record_id for r in records]
    assert verify(read_jsonl_lines(audit_file)).ok
    assert 'pgwarden_pdp_audit_records_total{result="duplicate"} 30' in metrics
    assert 'pgwarden_pdp_audit_records_total{result="stored"} 20' in metrics


async def test_postgres_store_unreachable_refuses_reports_until_it_is_back(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    """The PDP starts without its audit database; reports fail (nothing acknowledged, so
    proxies keep spooling) and succeed once the database exists."""
    database = f"audit_{uuid.uuid4().hex[:12]}"  # not created yet
    pdp = audited_pdp(
        tmp_path, {"store": "postgres", "dsn": pg_cluster.dsn(database), "replica_id": "pdp-pg"}
    )
    records = [
        pb.AuditRecord(
            record_id=uuid.uuid4().hex,
            kind=pb.AUDIT_KIND_SESSION_CLOSE,
            time_unix_us=time.time_ns() // 1000,
            session_id="s-down",
            identity=pb.Identity(subject="agent:etl"),
            session_stats=pb.AuditSessionStats(statements=3),
        )
        for _ in range(10)
    ]
    with pdp:
        config = PdpClientConfig((pdp.address,), deadline_s=10.0, token=pdp.token)
        async with PdpClient(config) as client:
            assert await client.report_executions(records) == 0
            await asyncio.to_thread(pg_cluster.create_database, database)
            assert await client.report_executions(records) == 10
            assert await client.report_executions(records) == 10  # all duplicates now
        events = [r["event"] for r in pdp.log_records()]
    assert "audit_store_unavailable" in events
    assert "audit_report_refused" in events
    store = AuditStoreUnderTest("postgres", pg_cluster, tmp_path / "unused", database)
    stored = store.records()
    assert [r["record_id"] for r in stored] == [r.record_id for r in records]
    assert stored[0]["session_stats"]["statements"] == 3
    assert store.verify().ok


async def test_audit_required_refuses_statements_while_records_cannot_be_made_durable(
    tmp_path: Path, start_audited_proxy: Callable[..., Awaitable[AuditedProxy]]
) -> None:
    """PDP dead and the spool full: new statements are refused (fail closed) until the
    PDP is back and has drained the spool; every statement and refusal is recorded once."""
    audit_file = tmp_path / "audit.jsonl"
    pdp = audited_pdp(tmp_path, {"path": str(audit_file), "replica_id": "pdp-full"})
    pdp.start()
    try:
        proxy = await start_audited_proxy(pdp, spool_max_bytes=64 * 1024, batch_max_records=20)

        with RawClient("127.0.0.1", proxy.port) as c:
            await asyncio.to_thread(c.login, "agent:reporting", proxy.token, proxy.database)

            async def run_one(i: int) -> Received:
                query = extended("SELECT id, name FROM items WHERE id = $1", str(i % 100 + 1))
                await asyncio.to_thread(c.send, query)
                [got] = results(await asyncio.to_thread(c.read_until, b"Z"))
                return got

            assert (await run_one(0)).rows == 1  # the decision is cached from here on
            await until(lambda: proxy.reporter.records_acked >= 2, what="first delivery")
            pdp.kill()
            ran = 1
            refused: Received | None = None
            for i in range(1, 5000):
                got = await run_one(i)
                if got.sqlstate:
                    refused = got
                    break
                ran += 1
                if i % 20 == 0:
                    await proxy.reporter.flush()  # lets the spool fill at the load's pace
            assert refused is not None
            assert refused.sqlstate == "42501"
            assert not proxy.reporter.durable_ok
            await asyncio.to_thread(pdp.start)
            await until(lambda: proxy.reporter.durable_ok, what="spool drained")
            assert (await run_one(1)).rows == 1
            ran += 1
            await asyncio.to_thread(c.send, m.build_terminate())
        await until(lambda: proxy.server.sessions == set(), what="session closed")
        await asyncio.wait_for(proxy.reporter.wait_delivered(), 60)
    finally:
        pdp.stop()
    stored = jsonl_records(audit_file)
    kinds = [r["kind"] for r in stored]
    assert kinds.count("statement") == ran
    assert kinds.count("refusal") == 1
    [refusal] = [r for r in stored if r["kind"] == "refusal"]
    assert refusal["decision"]["code"] == "audit_unavailable"
    assert len({r["record_id"] for r in stored}) == len(stored)
    assert proxy.reconcile(stored) == []
    assert verify(read_jsonl_lines(audit_file)).ok


async def test_psycopg_executions_pipelines_and_copy_are_recorded_once(
    tmp_path: Path, start_audited_proxy: Callable[..., Awaitable[AuditedProxy]]
) -> None:
    """A real driver: extended protocol, executemany in pipeline mode, an explicit
    pipeline, COPY TO STDOUT; rows (and COPY bytes) as the client received them."""
    audit_file = tmp_path / "audit.jsonl"
    pdp = audited_pdp(tmp_path, {"path": str(audit_file), "replica_id": "pdp-psycopg"})
    with pdp:
        proxy = await start_audited_proxy(pdp)
        dsn = (
            f"host=127.0.0.1 port={proxy.port} dbname={proxy.database} user=agent:reporting "
            f"password={proxy.token} sslmode=disable application_name=audit-psycopg"
        )

        def client() -> dict[str, Any]:
            got: dict[str, Any] = {}
            with psycopg.connect(dsn, autocommit=True) as conn:
                got["select"] = conn.execute(
                    "SELECT id FROM items WHERE id <= %s AND name <> %s", (5, SENTINEL)
                ).fetchall()
                with conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE items SET price = price WHERE id = %s AND name <> %s",
                        [(1, SENTINEL), (2, SENTINEL), (3, SENTINEL)],
                    )
                with conn.pipeline():
                    first = conn.execute("SELECT id FROM items WHERE id = %s", (1,))
                    second = conn.execute("SELECT id FROM items WHERE id <= %s", (2,))
                got["pipeline"] = [first.fetchall(), second.fetchall()]
                chunks = []
                with (
                    conn.cursor() as cur,
                    cur.copy("COPY (SELECT id, name FROM items WHERE id <= 7) TO STDOUT") as copy,
                ):
                    while data := copy.read():
                        chunks.append(bytes(data))
                got["copy"] = chunks
            return got

        got = await asyncio.to_thread(client)
        await until(lambda: proxy.server.sessions == set(), what="session closed")
        await asyncio.wait_for(proxy.reporter.wait_delivered(), 30)
    stored = [r for r in jsonl_records(audit_file) if r["application_name"] == "audit-psycopg"]
    statements = [r for r in stored if r["kind"] == "statement"]
    assert [(r["statement"]["command"], r["outcome"]["rows"]) for r in statements] == [
        ("SELECT", len(got["select"])),
        ("UPDATE", 0),
        ("UPDATE", 0),
        ("UPDATE", 0),
        ("SELECT", len(got["pipeline"][0])),
        ("SELECT", len(got["pipeline"][1])),
        ("COPY", len(got["copy"])),
    ]
    assert [r["outcome"]["rows_affected"] for r in statements[1:4]] == [1, 1, 1]
    assert statements[-1]["outcome"]["bytes_sent"] == sum(5 + len(c) for c in got["copy"])
    assert len(got["copy"]) == 7
    assert [r["kind"] for r in stored] == ["session_open"] + ["statement"] * 7 + ["session_close"]
    assert SENTINEL not in audit_file.read_text()
    assert verify(read_jsonl_lines(audit_file)).ok
    assert proxy.reconcile(jsonl_records(audit_file)) == []
