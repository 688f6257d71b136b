"""The PDP's decision query to its supervised OPA: loopback TCP against the Unix socket.

    .venv/bin/python -m bench.opa_transport [--queries 3000] [--rounds 3] [--pack]

Starts a real PDP (``python -m pgwarden pdp``) with its supervised OPA on the example policy
of ``pgwarden.pdp.harness`` (``--pack``: on ``policies/``), reads from the PDP's
``opa_started`` log record where that OPA listens (its TCP URL and its Unix socket), and
then, in this process on uvloop, sends the PDP's own decision query (``OpaTarget.query``,
the bench's typical statement as the input document) over each transport in turn:
``--rounds`` blocks of ``--queries`` sequential queries per transport, alternating, so load
from other processes falls on both alike. Reports per transport the latency p50/p99 (the
median of the rounds' figures and their spread) and the CPU time per query of this process
and of OPA, from /proc. The example policy keeps OPA's evaluation small, so what differs is
the transport. This is the A/B behind the Unix socket in docs/performance.md "Decisions".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvloop

from bench.pdp_bench import IDENTITY, POLICY_PACK, SESSION, facts, percentile
from bench.targets import ProcessStats
from pgwarden.pdp.evaluation import DECISION_RULE, OpaTarget
from pgwarden.pdp.harness import PdpProcess, write_example_policy
from pgwarden.pdp.request import context_document

TRANSPORTS = ("tcp", "unix")


def decision_input() -> dict[str, Any]:
    """The document the PDP posts to OPA for the bench's typical statement."""
    return {
        "identity": IDENTITY.document(),
        "session": SESSION.document(in_transaction=False),
        "statement": facts(),
        "context": context_document(),
    }


def opa_of(pdp: PdpProcess) -> tuple[str, str, int]:
    """The supervised OPA's URL, Unix socket and pid."""
    [started] = pdp.log_records("opa_started")[-1:]
    if not started.get("socket"):
        raise SystemExit(f"the PDP's OPA has no Unix socket (path too long?): {started}")
    with urllib.request.urlopen(f"{pdp.http_url}/readyz", timeout=5) as response:  # noqa: S310
        opa_pid = int(json.load(response)["opa_pid"])
    return str(started["url"]), str(started["socket"]), opa_pid


async def measure(
    url: str, socket: str, opa_pid: int, *, queries: int, rounds: int
) -> dict[str, Any]:
    """``rounds`` blocks of ``queries`` per transport, alternating."""
    processes = {"client": ProcessStats(os.getpid()), "opa": ProcessStats(opa_pid)}
    targets = {
        "tcp": await OpaTarget.open(url, "bench", timeout_s=2.0),
        "unix": await OpaTarget.open(url, "bench", timeout_s=2.0, unix_socket=socket),
    }
    documents = [decision_input() for _ in range(queries)]
    times: dict[str, list[list[float]]] = {name: [] for name in TRANSPORTS}
    cpu: dict[str, dict[str, float]] = {name: dict.fromkeys(processes, 0.0) for name in TRANSPORTS}
    try:
        for target in targets.values():  # connection, OPA's compiled query
            for document in documents[:300]:
                await target.query(DECISION_RULE, document)
        for round_ in range(rounds):
            for name in TRANSPORTS[round_ % 2 :] + TRANSPORTS[: round_ % 2]:
                before = {p: sum(s.cpu_seconds()) for p, s in processes.items()}
                block = []
                for document in documents:
                    started = time.perf_counter()
                    await targets[name].query(DECISION_RULE, document)
                    block.append(time.perf_counter() - started)
                for p, s in processes.items():
                    cpu[name][p] += sum(s.cpu_seconds()) - before[p]
                times[name].append(block)
    finally:
        for target in targets.values():
            await target.close()
    return {
        "queries": queries,
        "rounds": rounds,
        **{
            name: {
                "p50_us_rounds": [round(statistics.median(b) * 1e6) for b in times[name]],
                "p99_us_rounds": [round(percentile(b, 0.99) * 1e6) for b in times[name]],
                **{
                    f"cpu_{p}_us": round(s / (queries * rounds) * 1e6, 1)
                    for p, s in cpu[name].items()
                },
            }
            for name in TRANSPORTS
        },
    }


def markdown(result: dict[str, Any]) -> str:
    def spread(values: list[int]) -> str:
        return f"{statistics.median(values):,.0f} ({min(values):,}-{max(values):,})"

    lines = [
        f"{result['rounds']} rounds of {result['queries']:,} queries per transport, "
        f"load {result['load_before']:.2f} → {result['load_after']:.2f}",
        "",
        "| transport | p50 µs (rounds) | p99 µs (rounds) | client CPU/query µs "
        "| OPA CPU/query µs |",
        "|---|---|---|---|---|",
    ]
    for name in TRANSPORTS:
        r = result[name]
        lines.append(
            f"| {name} | {spread(r['p50_us_rounds'])} | {spread(r['p99_us_rounds'])} "
            f"| {r['cpu_client_us']} | {r['cpu_opa_us']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3000, help="queries per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per transport")
    parser.add_argument("--pack", action="store_true", help="OPA on policies/, not the example")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgwarden-opa-transport-") as tmp:
        root = Path(tmp)
        policies = POLICY_PACK if args.pack else write_example_policy(root / "policies")
        load_before = os.getloadavg()[0]
        with PdpProcess(policies=policies, log_dir=root / "pdp") as pdp:
            url, socket, opa_pid = opa_of(pdp)
            result = uvloop.run(
                measure(url, socket, opa_pid, queries=args.queries, rounds=args.rounds)
            )
        result |= {"load_before": load_before, "load_after": os.getloadavg()[0]}
    print(markdown(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
