"""``bench/run`` (``python -m bench``): PostgreSQL direct, through PgBouncer and through
pgwarden, measured in the same run in interleaved rounds.

Starts its own PostgreSQL cluster (pgbench -i), PgBouncer (session mode) and pgwarden proxy,
then for every pgbench script (-S and the TPC-B-like default), protocol mode and client
count runs each target once per round, rotating the targets' order each round. Then
decision latency (a cache miss: proxy client → PDP → OPA, with the example policy and with
policies/; a hit) and PDP decisions per second (bench/pdp_bench.py), the 1M-row bulk read,
the RSS of each relaying process with 1,000 idle authenticated connections, and py-spy
profiles of the proxy under pgbench -S at 8 clients in each protocol mode.

Writes ``bench/results/<run id>.json``, the chart ``bench/results/throughput.png``, the
profiles under ``bench/results/profiles/``, and regenerates the generated blocks of the
"Throughput", "Memory" and "Decisions" sections of docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg

from bench import report
from bench.bulk import PgwardenMaskedTarget, create_bulk_table, read_once, result_megabytes
from bench.memory import measure_idle_memory
from bench.pdp_bench import measure_decisions
from bench.pgbench import MODES, SCRIPTS, Cell, PgbenchError, run_pgbench
from bench.profiles import record_profile
from bench.targets import PGBOUNCER, BenchCluster, Endpoint, PgwardenTarget, Target, make_target

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"


def _csv(kind: type, choices: Sequence[str] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        items = [kind(x) for x in text.split(",") if x]
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"{item!r}: one of {', '.join(choices)}")
        return items

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=int, default=2, help="seconds per pgbench run")
    p.add_argument(
        "--rate",
        type=int,
        default=0,
        help="pgbench -R: transactions per second for every target (0: as fast as they go); "
        "compares CPU per transaction at the same load",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per configuration")
    p.add_argument("--clients", type=_csv(int), default=[1, 8, 64], help="client counts")
    p.add_argument("--modes", type=_csv(str, MODES), default=list(MODES), help="-M modes")
    p.add_argument(
        "--scripts", type=_csv(str, list(SCRIPTS)), default=list(SCRIPTS), help="pgbench scripts"
    )
    p.add_argument(
        "--targets",
        type=_csv(str),
        default=["direct", "pgbouncer", "pgwarden", "pgwarden-pdp"],
        help="targets; NAME=PATH adds a pgwarden proxy run from the source tree PATH "
        "(a patched copy) to compare with in the same run, in local mode; pdp:NAME=PATH "
        "the same behind its own PDP, as pgwarden-pdp",
    )
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor")
    p.add_argument(
        "--bulk-rounds",
        type=int,
        default=3,
        help="interleaved rounds of the 1M-row bulk read (0: skip)",
    )
    p.add_argument(
        "--idle-connections", type=int, default=1000, help="idle sessions for RSS (0: skip)"
    )
    p.add_argument(
        "--decision-misses",
        type=int,
        default=3000,
        help="cache misses timed one at a time for decision latency (0: skip)",
    )
    p.add_argument(
        "--decisions-only",
        action="store_true",
        help="measure only decision latency and PDP decisions/s (about a minute)",
    )
    p.add_argument(
        "--profile-seconds", type=int, default=6, help="py-spy seconds per mode (0: skip)"
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    p.add_argument(
        "--no-docs", action="store_true", help="do not regenerate docs/performance.md's tables"
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: regenerate the tables, chart and docs from an earlier run",
    )
    return p.parse_args(argv)


def machine(load_before: float) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    os_name = platform.system()
    release = Path("/etc/os-release")
    if release.is_file():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    bouncer = subprocess.run([PGBOUNCER, "--version"], capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem_kib / 1024 / 1024,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": version("uvloop"),
        "pgbouncer": bouncer.stdout.split("\n", 1)[0].removeprefix("PgBouncer ").strip(),
        "load_before": load_before,
        "pgwarden_commit": commit.stdout.strip() or "unknown",
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_decisions(args: argparse.Namespace) -> dict[str, Any]:
    """``--decisions-only``: a run with the decision measures and nothing else."""
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "run_id": run_id,
        "machine": machine(os.getloadavg()[0]),
        "throughput": [],
        "memory": [],
        "bulk": [],
        "failures": [],
        "decisions": measure_decisions(misses=args.decision_misses or 3000),
    }
    results["machine"]["load_after"] = os.getloadavg()[0]
    results["checks"] = report.check_targets(results)
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine(os.getloadavg()[0])
    targets: list[Target] = [make_target(spec) for spec in args.targets]
    cells = [
        Cell(script, mode, clients)
        for script, mode, clients in itertools.product(args.scripts, args.modes, args.clients)
    ]
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-bench-"))
    workdir.chmod(0o755)  # PostgreSQL and PgBouncer may run as another user (see targets)
    db = BenchCluster(workdir, scale=args.scale)
    log(
        f"run {run_id}: {len(cells)} configurations x {len(targets)} targets x {args.rounds} rounds"
    )
    db.start()
    info["postgresql"] = db.server_version()
    endpoints: dict[str, Endpoint] = {}
    started: list[Target] = []
    results: dict[str, Any] = {
        "run_id": run_id,
        "machine": info,
        "throughput": [],
        "memory": [],
        "bulk": [],
        "failures": [],
    }
    try:
        for target in targets:
            endpoints[target.name] = target.start(db, workdir)
            started.append(target)
            # Warm up: connections, PostgreSQL's buffers, the proxy's statement memo.
            for mode in args.modes:
                run_pgbench(
                    db.pgbench,
                    endpoints[target.name],
                    Cell("select", mode, 8),
                    seconds=1,
                    target=target.name,
                    round_=-1,
                    relay_pid=target.pid,
                )
            log(f"started and warmed up {target.name}")
        samples: dict[Cell, list[dict[str, Any]]] = {cell: [] for cell in cells}
        # A failed run is recorded and left out; the rest of the run goes on.
        failures: list[str] = results["failures"]
        for round_ in range(args.rounds):
            for i, cell in enumerate(cells):
                shift = (round_ + i) % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    try:
                        sample = run_pgbench(
                            db.pgbench,
                            endpoints[target.name],
                            cell,
                            seconds=args.duration,
                            target=target.name,
                            round_=round_,
                            relay_pid=target.pid,
                            pdp_pid=target.pdp_pid,
                            rate=args.rate,
                        )
                    except PgbenchError as exc:
                        failures.append(f"{cell.label}, {target.name}, round {round_ + 1}: {exc}")
                        log(f"{cell.label} against {target.name} failed: {exc}")
                        continue
                    samples[cell].append(sample.to_json())
                log(
                    f"round {round_ + 1}/{args.rounds} {cell.label}: "
                    + ", ".join(
                        f"{s['target']} {s['tps']:,.0f}" for s in samples[cell][-len(targets) :]
                    )
                )
        names = [t.name for t in targets]
        for cell in cells:
            results["throughput"].append(
                {
                    "script": cell.script,
                    "mode": cell.mode,
                    "clients": cell.clients,
                    "samples": samples[cell],
                    "summary": report.summarize_cell(samples[cell], names),
                }
            )
        # Before the bulk reads and the idle sessions: a thousand backends exiting keep the
        # machine busy for a while after, and the miss latency is the most sensitive figure.
        if args.decision_misses:
            log("decision latency and PDP decisions/s")
            results["decisions"] = measure_decisions(misses=args.decision_misses)
            log(
                f"decisions: miss p50 {results['decisions']['miss_p50_us']:.0f} µs, p99 "
                f"{results['decisions']['miss_p99_us']:.0f} µs; hit p50 "
                f"{results['decisions']['hit_now_p50_us']} µs"
            )
        if args.bulk_rounds:
            results["bulk"] = measure_bulk(db, workdir, endpoints, args.bulk_rounds)
        if args.idle_connections:
            for target in targets:
                if target.pid is None:
                    continue
                try:
                    mem = measure_idle_memory(
                        target.name, endpoints[target.name], target.pid, args.idle_connections
                    )
                except (OSError, asyncpg.PostgresError) as exc:
                    results["failures"].append(f"memory, {target.name}: {exc!r}")
                    log(f"memory of {target.name} not measured: {exc!r}")
                    continue
                results["memory"].append(mem.to_json())
                log(
                    f"{target.name}: {mem.rss_idle_kib / 1024:.1f} MiB RSS with "
                    f"{mem.connections} idle connections"
                )
        results["profiles"] = []
        if args.profile_seconds:
            for target in targets:
                if not isinstance(target, PgwardenTarget) or target.pid is None:
                    continue
                for mode in args.modes:
                    try:
                        profile = record_profile(
                            db.pgbench,
                            endpoints[target.name],
                            Cell("select", mode, 8),
                            pid=target.pid,
                            seconds=args.profile_seconds,
                            out_dir=args.results / "profiles",
                            target=target.name,
                        )
                    except (OSError, RuntimeError) as exc:
                        results["failures"].append(f"profile, {target.name} {mode}: {exc!r}")
                        log(f"profile of {target.name} {mode} not taken: {exc!r}")
                        continue
                    results["profiles"].append(
                        {
                            "target": target.name,
                            "mode": mode,
                            "samples": profile.samples,
                            "tps_under_profiler": profile.sample.tps,
                            "summary": os.path.relpath(profile.summary, ROOT),
                        }
                    )
                    log(f"profiled {target.name} {mode}: {profile.summary}")
    finally:
        for target in reversed(started):
            target.stop()
        db.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_after"] = os.getloadavg()[0]
    results["settings"] = {
        "duration_s": args.duration,
        "rate": args.rate,
        "rounds": args.rounds,
        "scale": args.scale,
        "scripts": args.scripts,
        "modes": args.modes,
        "clients": args.clients,
        "targets": [{"name": t.name, "description": t.description} for t in targets],
        "idle_connections": args.idle_connections,
    }
    results["checks"] = report.check_targets(results)
    return results


def publish(results: dict[str, Any], args: argparse.Namespace) -> Path:
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{results['run_id']}.json"
    if args.report is None:
        out.write_text(json.dumps(results, indent=1) + "\n")
    decisions = results.get("decisions")
    decisions_md = report.decisions_markdown(decisions) if decisions else ""
    if not results["throughput"]:  # --decisions-only
        (args.results / f"{results['run_id']}.md").write_text(
            decisions_md + "\n" + report.checks_markdown(results["checks"])
        )
        if not args.no_docs and decisions:
            update_decisions_doc(results, out)
        return out
    report.chart(results, args.results / "throughput.png")
    tables = report.throughput_markdown(results)
    (args.results / f"{results['run_id']}.md").write_text(
        report.machine_markdown(results)
        + "\n"
        + tables
        + "\n"
        + report.bulk_markdown(results)
        + "\n"
        + report.memory_markdown(results)
        + "\n"
        + decisions_md
        + "\n"
        + report.checks_markdown(results["checks"])
    )
    if not args.no_docs and decisions:
        update_decisions_doc(results, out)
    if not args.no_docs:
        chart_link = os.path.relpath(args.results / "throughput.png", DOC.parent)
        json_link = os.path.relpath(out, DOC.parent)
        report.update_section(
            DOC,
            "## Throughput",
            "throughput",
            report.machine_markdown(results)
            + f"\nRaw numbers: [{out.name}]({json_link}).\n\n"
            + f"![TPS per configuration]({chart_link})\n\n"
            + tables
            + "\n### Bulk read\n\n"
            + report.bulk_markdown(results)
            + "\nIssue 9's targets measured by this run:\n\n"
            + report.checks_markdown(results["checks"])
            + "".join(f"\n- failed, left out: {f}" for f in results.get("failures", [])),
            intro="Reproduce with `bench/run` (about 12 minutes on 2 cores; `bench/run --help` "
            "for longer rounds, other client counts, or `--targets` with `uvloop-relay`, a "
            "bare uvloop relay that is the floor for any relay written in Python). It starts "
            "its own PostgreSQL (`pgbench -i`), PgBouncer (session mode), OPA, PDP and "
            "pgwarden proxies, runs every configuration against every target in interleaved "
            "rounds, and writes `bench/results/<run>.json`, this section's tables and chart, "
            "and py-spy profiles of the proxy under `pgbench -S` at 8 clients "
            "(`bench/results/profiles/`).",
        )
        report.update_section(
            DOC,
            "## Memory",
            "memory",
            report.memory_markdown(results),
            intro="RSS of the relaying process (from `/proc/PID/status`) before and while "
            "holding idle sessions, each authenticated and with its upstream connection "
            "open (it answered one `SELECT 1`). Measured by `bench/run` after the "
            "throughput rounds.",
            after="## Throughput",
        )
    return out


def update_decisions_doc(results: dict[str, Any], out: Path) -> None:
    json_link = os.path.relpath(out, DOC.parent)
    report.update_section(
        DOC,
        "## Decisions",
        "decisions",
        f"Run `{results['run_id']}` (pgwarden `{results['machine']['pgwarden_commit']}`, raw "
        f"numbers: [{out.name}]({json_link})): " + report.decisions_markdown(results["decisions"]),
        intro="Measured by `bench/run` (or alone: `bench/run --decisions-only`).",
        after="## Memory",
    )


def measure_bulk(
    db: BenchCluster, workdir: Path, endpoints: dict[str, Endpoint], rounds: int
) -> list[dict[str, Any]]:
    """The 1M-row read: direct, through pgwarden, through pgwarden masking one column;
    interleaved rounds, the order rotated each round."""
    create_bulk_table(db)
    rows, megabytes = result_megabytes(db)
    masked = PgwardenMaskedTarget()
    paths = {"direct": db.direct(), "pgwarden-masked": masked.start(db, workdir)}
    if "pgwarden" in endpoints:
        paths["pgwarden"] = endpoints["pgwarden"]
    names = list(paths)
    reads: list[dict[str, Any]] = []
    try:
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                read = read_once(db, name, paths[name], rows, megabytes)
                reads.append({**read.to_json(), "round": round_})
            log(
                f"bulk round {round_ + 1}/{rounds}: "
                + ", ".join(f"{r['target']} {r['mb_per_s']:.0f} MB/s" for r in reads[-len(names) :])
            )
    finally:
        masked.stop()
    return reads


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        results = json.loads(args.report.read_text())
    else:
        results = run_decisions(args) if args.decisions_only else run(args)
    out = publish(results, args)
    if results["throughput"]:
        print(report.throughput_markdown(results))
        print(report.bulk_markdown(results))
        print(report.memory_markdown(results))
    if results.get("decisions"):
        print(report.decisions_markdown(results["decisions"]))
    print(report.checks_markdown(results["checks"]))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
