"""Decision latency and PDP throughput: client → PDP → OPA (miss) and the client's cache (hit).

    .venv/bin/python -m bench.pdp_bench [--misses 3000] [--rounds 5] [--hits 200000] [--seconds 5]

Starts two real PDPs (``python -m pgwarden pdp``), each with its supervised OPA: one on the
example policy of ``pgwarden.pdp.harness`` (a few rules: the floor of the path), one on the
shipped policy pack ``policies/`` (what a deployment evaluates). Then, in this process on
uvloop, a real ``PdpClient`` per PDP:
- miss: a statement the cache has never seen, decided by the PDP (one stream message, one
  OPA query), one at a time; the misses are timed in ``--rounds`` blocks that alternate
  between the two PDPs (order rotated each round), so load from other processes on this
  shared machine falls on both alike; with the CPU time each process (client, PDP, OPA)
  spent per miss, from /proc: far steadier than wall-clock latency when the CPUs are shared;
- hit: the same statement again, answered by the decision cache;
- throughput: N concurrent callers asking the PDP (misses) for ``--seconds``, with batches
  of 1 and of 8 statements, against each PDP.
Prints a Markdown table. ``bench/run`` runs the same measurement (``measure_decisions``)
and writes it into docs/performance.md, section "Decisions".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench.report import decisions_markdown
from bench.targets import ProcessStats
from pgwarden.pdp.harness import PdpProcess, write_example_policy
from pgwarden.proxy.decision import Identity, SessionFacts, Statement
from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig

ROOT = Path(__file__).resolve().parent.parent
POLICY_PACK = ROOT / "policies"
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


@dataclass
class Subject:
    """One PDP under measurement, its client, and what its misses cost."""

    pdp: PdpProcess
    client: PdpClient
    processes: dict[str, ProcessStats]  # client (this process), pdp, opa
    times: list[float] = field(default_factory=list)
    refused: int = 0  # misses the PDP or the client refused (e.g. opa_timeout), still timed
    round_p99: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, pdp: PdpProcess) -> Subject:
        config = PdpClientConfig((pdp.address,), deadline_s=1.0, token=pdp.token)
        with urllib.request.urlopen(f"{pdp.http_url}/readyz", timeout=5) as response:  # noqa: S310
            opa_pid = json.load(response)["opa_pid"]
        processes = {
            "client": ProcessStats(os.getpid()),
            "pdp": ProcessStats(pdp.process.pid),
            "opa": ProcessStats(opa_pid),
        }
        return cls(pdp, PdpClient(config, proxy_id="bench"), processes)

    def cpu(self) -> dict[str, float]:
        return {name: sum(p.cpu_seconds()) for name, p in self.processes.items()}

    async def time_misses(self, statements: Sequence[Statement]) -> None:
        """Decide ``statements`` one at a time; keep each latency and the CPU time spent.
        A refusal is timed like a decision and counted (a timeout under heavy load from
        other processes must not end the run)."""
        before = self.cpu()
        times = []
        for s in statements:
            started = time.perf_counter()
            [decision] = await self.client.decide(IDENTITY, SESSION, [s], in_transaction=False)
            times.append(time.perf_counter() - started)
            self.refused += decision.code != ""
        for name, seconds in self.cpu().items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + seconds - before[name]
        self.times += times
        self.round_p99.append(percentile(times, 0.99))

    def miss_figures(self, inside: dict[str, float]) -> dict[str, Any]:
        times = self.times
        return {
            "miss_p50_us": _us(statistics.median(times)),
            "miss_p90_us": _us(percentile(times, 0.90)),
            "miss_p99_us": _us(percentile(times, 0.99)),
            "miss_p999_us": _us(percentile(times, 0.999)),
            "miss_mean_us": _us(statistics.fmean(times)),
            "miss_p99_rounds_us": [_us(t) for t in self.round_p99],
            "miss_refused": self.refused,
            "pdp_handler_mean_us": _us(inside["decide_sum"] / max(1, inside["decide_count"])),
            "opa_mean_us": _us(inside["opa_sum"] / max(1, inside["opa_count"])),
            **{f"cpu_{name}_us": _us(s / len(times)) for name, s in self.cpu_s.items()},
        }


async def measure(
    example: PdpProcess,
    pack: PdpProcess,
    *,
    misses: int,
    rounds: int,
    hits: int,
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    """Every figure of the "Decisions" table, in µs and decisions per second: at the top
    level for the example policy, under ``policy_pack`` for policies/."""
    subjects = {"example": Subject.of(example), "policy_pack": Subject.of(pack)}
    per_round = max(1, misses // rounds)
    out: dict[str, Any] = {
        "misses": per_round * rounds,
        "rounds": rounds,
        "hits": hits,
        "concurrency": concurrency,
    }
    async with contextlib.AsyncExitStack() as stack:
        for subject in subjects.values():
            await stack.enter_async_context(subject.client)
            # Warm up: channel, decision stream, OPA connection pool, PDP code paths.
            for _ in range(300):
                await subject.client.decide(
                    IDENTITY, SESSION, [Statement.of(facts())], in_transaction=False
                )
        statements = {name: [Statement.of(facts()) for _ in range(misses)] for name in subjects}
        # The bench's own statements live to the end: out of the collector's way, as the
        # PDP does with its start-up objects. Otherwise one full collection walks them all
        # in the middle of the timed misses (150 ms seen here), an artefact of the bench.
        gc.collect()
        gc.freeze()
        before = {name: await asyncio.to_thread(pdp_metrics, s.pdp) for name, s in subjects.items()}
        names = list(subjects)
        for round_ in range(rounds):
            block = slice(round_ * per_round, (round_ + 1) * per_round)
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                await subjects[name].time_misses(statements[name][block])
        for name, subject in subjects.items():
            after = await asyncio.to_thread(pdp_metrics, subject.pdp)
            inside = {k: after[k] - before[name][k] for k in after}
            figures = subject.miss_figures(inside)
            if name == "example":
                out |= figures
            else:
                out[name] = figures
        out |= await measure_hits(subjects["example"].client, statements["example"][0], hits)
        for name, subject in subjects.items():
            rates: dict[str, Any] = {}
            for batch in (1, 8):
                rate, refused = await throughput(subject.client, concurrency, batch, seconds)
                rates[f"decisions_per_s_batch{batch}"] = round(rate)
                rates[f"refused_batch{batch}"] = refused
            if name == "example":
                out |= rates
            else:
                out[name] |= rates
    return out


async def measure_hits(client: PdpClient, hot: Statement, hits: int) -> dict[str, float]:
    """A cached decision, through ``decide`` and through ``decide_now``, and the timer."""
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
    return {
        "hit_p50_us": _us(statistics.median(times)),
        "hit_p99_us": _us(percentile(times, 0.99)),
        "hit_now_p50_us": _us(statistics.median(now)),
        "hit_now_p99_us": _us(percentile(now, 0.99)),
        "timer_p50_us": _us(statistics.median(empty)),
    }


def measure_decisions(
    *,
    misses: int = 3000,
    rounds: int = 5,
    hits: int = 200_000,
    seconds: float = 5.0,
    concurrency: int = 8,
) -> dict[str, Any]:
    """Start a PDP with its OPA on the example policy and one on policies/, and
    :func:`measure` them."""
    root = Path(tempfile.mkdtemp(prefix="pgwarden-pdp-bench-"))
    load_before = os.getloadavg()[0]
    try:
        example = write_example_policy(root / "policies")
        with (
            PdpProcess(policies=example, log_dir=root / "example") as example_pdp,
            PdpProcess(policies=POLICY_PACK, log_dir=root / "policy-pack") as pack_pdp,
        ):
            out = uvloop.run(
                measure(
                    example_pdp,
                    pack_pdp,
                    misses=misses,
                    rounds=rounds,
                    hits=hits,
                    seconds=seconds,
                    concurrency=concurrency,
                )
            )
    finally:
        gc.unfreeze()
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
    parser.add_argument("--misses", type=int, default=3000, help="misses per PDP")
    parser.add_argument("--rounds", type=int, default=5, help="blocks of misses per PDP")
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    decisions = measure_decisions(
        misses=args.misses,
        rounds=args.rounds,
        hits=args.hits,
        seconds=args.seconds,
        concurrency=args.concurrency,
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {sys.platform}"
    )
    print(decisions_markdown(decisions))


if __name__ == "__main__":
    main()
