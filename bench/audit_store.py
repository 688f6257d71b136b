"""The PDP's CPU per stored audit record, without gRPC.

    .venv/bin/python -m bench.audit_store [--records 20000] [--batch 500] [--profile]

Builds the records of a ``pgbench -S`` load the way the proxy does (``AuditReporter``'s
own batching: 8 sessions, one memoized statement, cached decisions), serializes them as
the spool frames the proxy sends, parses them back as the PDP's gRPC layer does, and
feeds every batch through what ``ReportExecutions`` does with it: ``stored_documents``
(``record_document`` for each record, with shared parts), then ``JsonlStore.append``
(chain, canonical JSON, one write and fsync per batch) to a file in a temporary folder.
Prints the CPU microseconds per record of the whole path and of its two parts (best of
5 rounds; each round stores into a fresh file). ``--profile`` adds a cProfile listing of
one round.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from pgwarden.pdp.audit.config import AuditStoreConfig
from pgwarden.pdp.audit.records import stored_documents
from pgwarden.pdp.audit.store import JsonlStore
from pgwarden.proxy.audit import _STATEMENT, AuditConfig, AuditReporter
from pgwarden.proxy.decision import Action, Decision, Identity, SessionFacts, new_decision_id
from pgwarden.v1 import decision_pb2 as pb

SESSIONS = 8
FACTS = {
    "fingerprint": "2a6e7b1c9d0f4e35",
    "sql_normalized": "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "command": "SELECT",
    "protocol": "extended",
    "relations": [
        {"schema": "public", "name": "pgbench_accounts", "kind": "table", "access": "read"}
    ],
}


def spool_frames(records: int, batch: int, spool_dir: Path) -> list[bytes]:
    """``ReportExecutionsRequest`` payloads as the proxy's flusher builds them."""
    reporter = AuditReporter(
        AuditConfig(spool_dir, batch_max_records=batch), _never_sent, proxy_id="edge-1"
    )
    identity = Identity("agent:bench", "https://idp.example", ("bench",), "jwt", {})
    sessions = [
        SessionFacts(f"s-{i}", "edge-1", "10.0.0.7", "bench", "pgbench", True, "bench", 40000 + i)
        for i in range(SESSIONS)
    ]
    decisions = [
        Decision(Action.ALLOW, ("bench reads are allowed",), new_decision_id(), revision="r1")
        for _ in sessions
    ]
    now_ns = time.time_ns()
    events = []
    for n in range(records):
        i = n % SESSIONS
        execution = SimpleNamespace(
            facts=FACTS,
            analysis=SimpleNamespace(sql=None),
            decision=decisions[i],
            status="complete",
            rows=1,
            rows_affected=1,
            bytes_sent=31,
            sqlstate="",
            limit_reached=False,
            started_ns=now_ns + n * 140_000,
            finished_ns=now_ns + n * 140_000 + 95_000,
        )
        events.append((_STATEMENT, execution.finished_ns, identity, sessions[i], execution))
    return [payload for payload, _ in reporter._frames(events)]


async def _never_sent(request: bytes, count: int) -> int:
    return 0


def store_round(frames: list[bytes], folder: Path, n: int) -> tuple[float, float]:
    """CPU seconds of ``record_document`` and of ``JsonlStore.append`` for every frame."""
    batches = [pb.ReportExecutionsRequest.FromString(f) for f in frames]
    store = JsonlStore(AuditStoreConfig(path=folder / f"audit-{n}.jsonl", replica_id="pdp-a"))

    async def run() -> tuple[float, float]:
        await store.open()
        documents_s = append_s = 0.0
        for batch in batches:
            started = time.process_time()
            documents = stored_documents(batch.records)
            built = time.process_time()
            await store.append(documents)
            documents_s += built - started
            append_s += time.process_time() - built
        await store.close()
        return documents_s, append_s

    return asyncio.run(run())


def best_of(rounds: int, measure: Callable[[int], tuple[float, float]]) -> tuple[float, float]:
    results = [measure(n) for n in range(rounds)]
    return min(results, key=sum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="records per proxy frame")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        folder = Path(tmp)
        frames = spool_frames(args.records, args.batch, folder / "spool")
        documents_s, append_s = best_of(5, lambda n: store_round(frames, folder, n))
        per = 1e6 / args.records
        print(
            f"{args.records} records in batches of {args.batch}: "
            f"{(documents_s + append_s) * per:.1f} µs CPU/record "
            f"(record_document {documents_s * per:.1f}, JsonlStore.append {append_s * per:.1f})"
        )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            store_round(frames, folder, 99)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
