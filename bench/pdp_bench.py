"""Decision latency and PDP throughput: client → PDP → OPA (miss) and the client's cache (hit).

    .venv/bin/python -m bench.pdp_bench [--misses 3000] [--hits 200000] [--seconds 5]

Starts a real PDP (``python -m pgwarden pdp``) with its supervised OPA on the example policy
of ``pgwarden.pdp.harness``, then, in this process on uvloop, a real ``PdpClient``:
- miss: a statement the cache has never seen, decided by the PDP (one gRPC call, one OPA
  query), sequentially, one at a time;
- hit: the same statement again, answered by the decision cache;
- throughput: N concurrent callers asking the PDP (misses) for ``--seconds``, with batches
  of 1 and of 8 statements.
Prints a Markdown table. ``bench/run`` runs the same measurement (``measure_decisions``)
and writes it into docs/performance.md, section "Decisions".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import uvloop

from bench.report import decisions_markdown
from pgwarden.pdp.harness import PdpProcess, write_example_policy
from pgwarden.proxy.decision import Identity, SessionFacts, Statement
from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig

IDENTITY = Identity("agent:reporting", "https://idp.example", ("analytics",), "jwt", {})
SESSION = SessionFacts("bench", "edge-1", "10.0.0.7", "shop", "bench", True, "")


def facts(command: str = "SELECT") -> dict[str, object]:
    """Facts of a typical small statement (the shape the analyzer produces)."""
    return {
        "fingerprint": uuid.uuid4().hex[:16],
        "sql_normalized": "SELECT id, email FROM public.customers WHERE id = $1",
        "command": command,
        "protocol": "extended",
        "read_only": True,
        "relations": [{"schema": "public", "name": "customers", "kind": "table", "access": "read"}],
        "columns": [
            {"relation": "public.customers", "column": "id", "usage": "output"},
            {"relation": "public.customers", "column": "email", "usage": "output"},
            {"relation": "public.customers", "column": "id", "usage": "filter"},
        ],
        "outputs": [
            {"name": "id", "sources": ["public.customers.id"], "direct": True},
            {"name": "email", "sources": ["public.customers.email"], "direct": True},
        ],
        "star": [],
        "functions": [],
        "copy": None,
        "limit": None,
        "has_where": True,
        "set": None,
        "nested": [],
        "unresolved": False,
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 2)


async def measure(
    pdp: PdpProcess, *, misses: int, hits: int, seconds: float, concurrency: int
) -> dict[str, Any]:
    """Every figure of the "Decisions" table, in µs and decisions per second."""
    config = PdpClientConfig((pdp.address,), deadline_s=1.0, token=pdp.token)
    out: dict[str, Any] = {"misses": misses, "hits": hits, "concurrency": concurrency}
    async with PdpClient(config, proxy_id="bench") as client:
        # Warm up: channel, OPA connection pool, PDP code paths.
        for _ in range(300):
            await client.decide(IDENTITY, SESSION, [Statement.of(facts())], in_transaction=False)

        statements = [Statement.of(facts()) for _ in range(misses)]
        times: list[float] = []
        before_metrics = await asyncio.to_thread(pdp_metrics, pdp)
        for s in statements:
            started = time.perf_counter()
            [decision] = await client.decide(IDENTITY, SESSION, [s], in_transaction=False)
            times.append(time.perf_counter() - started)
            assert decision.code == "", decision
        after_metrics = await asyncio.to_thread(pdp_metrics, pdp)
        inside = {k: after_metrics[k] - before_metrics[k] for k in after_metrics}
        out |= {
            "miss_p50_us": _us(statistics.median(times)),
            "miss_p90_us": _us(percentile(times, 0.90)),
            "miss_p99_us": _us(percentile(times, 0.99)),
            "miss_p999_us": _us(percentile(times, 0.999)),
            "miss_mean_us": _us(statistics.fmean(times)),
            "pdp_handler_mean_us": _us(inside["decide_sum"] / max(1, inside["decide_count"])),
            "opa_mean_us": _us(inside["opa_sum"] / max(1, inside["opa_count"])),
        }

        hot = statements[0]
        await client.decide(IDENTITY, SESSION, [hot], in_transaction=False)
        before = client.pdp_calls
        clock = time.perf_counter
        decide = client.decide
        times = []
        for _ in range(hits):
            started = clock()
            await decide(IDENTITY, SESSION, [hot], in_transaction=False)
            times.append(clock() - started)
        assert client.pdp_calls == before, "hits must not call the PDP"
        now: list[float] = []
        decide_now = client.decide_now
        for _ in range(hits):
            started = clock()
            decide_now(IDENTITY, SESSION, [hot], in_transaction=False)
            now.append(clock() - started)
        # The same loop with no work inside: the timer's own cost, reported, not subtracted.
        empty: list[float] = []
        for _ in range(hits):
            started = clock()
            empty.append(clock() - started)
        out |= {
            "hit_p50_us": _us(statistics.median(times)),
            "hit_p99_us": _us(percentile(times, 0.99)),
            "hit_now_p50_us": _us(statistics.median(now)),
            "hit_now_p99_us": _us(percentile(now, 0.99)),
            "timer_p50_us": _us(statistics.median(empty)),
        }
        for batch in (1, 8):
            rate, refused = await throughput(client, concurrency, batch, seconds)
            out[f"decisions_per_s_batch{batch}"] = round(rate)
            out[f"refused_batch{batch}"] = refused
    return out


def measure_decisions(
    *, misses: int = 3000, hits: int = 200_000, seconds: float = 5.0, concurrency: int = 8
) -> dict[str, Any]:
    """Start a PDP with its OPA on the example policy and :func:`measure` it."""
    root = Path(tempfile.mkdtemp(prefix="pgwarden-pdp-bench-"))
    load_before = os.getloadavg()[0]
    try:
        policies = write_example_policy(root / "policies")
        with PdpProcess(policies=policies, log_dir=root / "logs") as pdp:
            out = uvloop.run(
                measure(pdp, misses=misses, hits=hits, seconds=seconds, concurrency=concurrency)
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out | {"load_before": load_before, "load_after": os.getloadavg()[0]}


def pdp_metrics(pdp: PdpProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{pdp.http_url}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()

    def value(name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return {
        "decide_sum": value("pgwarden_pdp_decide_seconds_sum"),
        "decide_count": value("pgwarden_pdp_decide_seconds_count"),
        "opa_sum": value("pgwarden_pdp_opa_seconds_sum"),
        "opa_count": value("pgwarden_pdp_opa_seconds_count"),
    }


async def throughput(
    client: PdpClient, concurrency: int, batch: int, seconds: float
) -> tuple[float, int]:
    """Policy decisions per second (refusals of the PDP or client not counted), and how
    many such refusals there were."""
    stop = time.monotonic() + seconds
    done = refused = 0

    async def caller() -> None:
        nonlocal done, refused
        while time.monotonic() < stop:
            statements = [Statement.of(facts()) for _ in range(batch)]
            decisions = await client.decide(IDENTITY, SESSION, statements, in_transaction=False)
            ok = sum(1 for d in decisions if not d.code)
            done += ok
            refused += len(decisions) - ok

    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done / (time.monotonic() - started), refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", type=int, default=3000)
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    decisions = measure_decisions(
        misses=args.misses, hits=args.hits, seconds=args.seconds, concurrency=args.concurrency
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {sys.platform}"
    )
    print(decisions_markdown(decisions))


if __name__ == "__main__":
    main()
