"""``pgwarden audit verify | query | tail`` on what a real PDP stored, in a file and in a
table: tampering is named at its first broken link; filters select what they say."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig
from pgwarden.stack.postgres import PostgresCluster
from pgwarden.v1 import decision_pb2 as pb
from tests.integration.test_audit_trail import AuditStoreUnderTest, audited_pdp

SUBJECTS = ("agent:reporting", "agent:etl")


def record(n: int) -> pb.AuditRecord:
    """Record n: even ones by agent:reporting (allowed reads of customers), odd ones by
    agent:etl (denied deletes from orders)."""
    reporting = n % 2 == 0
    return pb.AuditRecord(
        record_id=f"rec-{n:03d}-{uuid.uuid4().hex[:8]}",
        kind=pb.AUDIT_KIND_STATEMENT if reporting else pb.AUDIT_KIND_REFUSAL,
        time_unix_us=1_795_000_000_000_000 + n * 1_000_000,
        proxy_id="edge-1",
        session_id=f"s-{n % 3}",
        identity=pb.Identity(subject=SUBJECTS[n % 2], groups=["g"]),
        database="shop",
        statement=pb.AuditStatement(
            command="SELECT" if reporting else "DELETE",
            sql="SELECT email FROM customers" if reporting else "DELETE FROM orders",
            relations=[
                pb.Relation(
                    schema="public",
                    name="customers" if reporting else "orders",
                    kind="table",
                    access="read" if reporting else "write",
                )
            ],
        ),
        decision=pb.AuditDecision(
            decision_id=f"d-{n}", action=pb.ACTION_ALLOW if reporting else pb.ACTION_DENY
        ),
        outcome=pb.AuditOutcome(status="complete", rows=n, bytes_sent=10 * n)
        if reporting
        else None,
    )


def pgwarden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgwarden", "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(params=["jsonl", "postgres"])
def filled_store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_cluster: PostgresCluster
) -> tuple[AuditStoreUnderTest, list[str]]:
    """20 records written by a real PDP process through the real client."""
    store = AuditStoreUnderTest(request.param, pg_cluster, tmp_path / "trail" / "audit.jsonl")
    if store.kind == "postgres":
        store.database = f"audit_{uuid.uuid4().hex[:12]}"
        pg_cluster.create_database(store.database)
    records = [record(n) for n in range(1, 21)]
    pdp = audited_pdp(tmp_path, store.audit_table("pdp-cli"))

    async def report() -> int:
        config = PdpClientConfig((pdp.address,), deadline_s=10.0, token=pdp.token)
        async with PdpClient(config) as client:
            return await client.report_executions(records)

    with pdp:
        assert asyncio.run(report()) == 20
    store.config_path = pdp.config_path  # type: ignore[attr-defined]
    return store, [r.record_id for r in records]


def source(store: AuditStoreUnderTest) -> list[str]:
    if store.kind == "jsonl":
        return ["--file", str(store.path)]
    return ["--dsn", store.dsn]


def tamper_modify(store: AuditStoreUnderTest, seq: int) -> None:
    """Lower the row count of one record, as someone hiding an export would."""
    if store.kind == "jsonl":
        lines = store.path.read_text().splitlines()
        document = json.loads(lines[seq - 1])
        document["outcome"]["rows"] = 0
        lines[seq - 1] = json.dumps(document, sort_keys=True, separators=(",", ":"))
        store.path.write_text("\n".join(lines) + "\n")
    else:
        store.cluster.psql(
            "UPDATE pgwarden_audit SET record = jsonb_set(record, '{outcome,rows}', '0') "
            f"WHERE seq = {seq}",
            store.database,
        )


def tamper_delete(store: AuditStoreUnderTest, seq: int) -> None:
    if store.kind == "jsonl":
        lines = store.path.read_text().splitlines()
        del lines[seq - 1]
        store.path.write_text("\n".join(lines) + "\n")
    else:
        store.cluster.psql(f"DELETE FROM pgwarden_audit WHERE seq = {seq}", store.database)


def test_verify_passes_an_intact_trail(filled_store: tuple[AuditStoreUnderTest, list[str]]) -> None:
    store, _ = filled_store
    result = pgwarden("verify", *source(store))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20 records, every link intact" in result.stdout
    assert "chain pdp-cli: 20 records" in result.stdout


def test_verify_reads_the_store_a_pdp_config_names(
    filled_store: tuple[AuditStoreUnderTest, list[str]],
) -> None:
    store, ids = filled_store
    config = str(store.config_path)  # type: ignore[attr-defined]
    result = pgwarden("verify", "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20 records, every link intact" in result.stdout
    result = pgwarden("query", "--config", config, "--format", "json", "--limit", "2")
    assert [json.loads(line)["record_id"] for line in result.stdout.splitlines()] == ids[:2]


def test_verify_names_a_modified_record(
    filled_store: tuple[AuditStoreUnderTest, list[str]],
) -> None:
    store, ids = filled_store
    tamper_modify(store, 8)
    result = pgwarden("verify", *source(store), "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    [broken] = report["breaks"]
    assert (broken["seq"], broken["record_id"]) == (8, ids[7])
    assert broken["problem"].startswith("modified")
    text = pgwarden("verify", *source(store)).stdout
    assert f"first broken link at record 8 (replica 'pdp-cli' seq 8 record_id {ids[7]})" in text


def test_verify_names_a_deleted_record(
    filled_store: tuple[AuditStoreUnderTest, list[str]],
) -> None:
    store, ids = filled_store
    tamper_delete(store, 12)
    result = pgwarden("verify", *source(store))
    assert result.returncode == 1
    assert (
        f"first broken link at record 12 (replica 'pdp-cli' seq 13 record_id {ids[12]}): "
        "1 record(s) missing before it (seq 12): deleted"
    ) in result.stdout


def test_verify_with_a_recorded_head_catches_deletion_from_the_end(
    filled_store: tuple[AuditStoreUnderTest, list[str]],
) -> None:
    store, _ = filled_store
    head = json.loads(pgwarden("verify", *source(store), "--format", "json").stdout)["heads"]
    recorded = f"pdp-cli:20:{head['pdp-cli']['hash']}"
    assert pgwarden("verify", *source(store), "--head", recorded).returncode == 0
    tamper_delete(store, 20)
    assert pgwarden("verify", *source(store)).returncode == 0  # no later link reveals it
    result = pgwarden("verify", *source(store), "--head", recorded)
    assert result.returncode == 1
    assert "ends at seq 19, before the recorded head seq 20" in result.stdout


def test_query_filters_by_identity_action_relation_and_time(
    filled_store: tuple[AuditStoreUnderTest, list[str]],
) -> None:
    store, ids = filled_store

    def query(*filters: str) -> list[str]:
        result = pgwarden("query", *source(store), "--format", "json", *filters)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["record_id"] for line in result.stdout.splitlines()]

    assert query() == ids
    assert query("--subject", "agent:etl") == ids[0::2]
    assert query("--action", "allow") == ids[1::2]
    assert query("--relation", "public.orders") == ids[0::2]
    assert query("--relation", "customers", "--kind", "statement") == ids[1::2]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_795_000_005))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_795_000_010))
    assert query("--since", since, "--until", until) == ids[4:9]
    assert query("--session", "s-0", "--subject", "agent:reporting") == [ids[5], ids[11], ids[17]]
    assert query("--since", "1h") == []  # these records are older than an hour


def test_tail_prints_the_last_records_as_a_table(
    filled_store: tuple[AuditStoreUnderTest, list[str]],
) -> None:
    store, _ = filled_store
    result = pgwarden("tail", *source(store), "-n", "3", "--subject", "agent:reporting")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "TIME",
        "KIND",
        "SUBJECT",
        "ACTION",
        "COMMAND",
        "RELATIONS",
        "ROWS",
        "BYTES",
    ]
    assert [row.split()[-2:] for row in rows] == [["16", "160"], ["18", "180"], ["20", "200"]]
    assert all("public.customers" in row for row in rows)


def test_usage_errors_exit_2() -> None:
    assert pgwarden("verify").returncode == 2
    assert pgwarden("verify", "--file", "/nonexistent/audit.jsonl").returncode == 2
    result = pgwarden("query", "--file", "/dev/null", "--since", "yesterday")
    assert result.returncode == 2
    assert "not a time" in result.stderr
