"""The cost of a new session: connect, one statement, disconnect, through pgwarden and direct.

    .venv/bin/python -m bench.connect [--connections 200] [--rounds 3]

Agents that open a connection per job (CI steps, serverless functions, an LLM tool call)
pay the session's start every time. This starts the demo's stack (``pgwarden up
--detach``: PostgreSQL with the reference ``shop`` database, the PDP and its OPA with
``policies/``, a proxy with TLS and development tokens) and opens, one after the other,
``--connections`` psycopg sessions per round, each running one ``SELECT`` and closing:
as ``agent:reporting`` through the proxy (TLS verify-full, token as the password) and as
its upstream role ``shop_reporting`` directly to PostgreSQL (TLS verify-full, SCRAM),
rounds alternating. Reports per path the connect latency (until the session is ready)
and the whole session's, p50 and p99 (median of the rounds, with their spread), and the
CPU time per session of the proxy and of the PDP, from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import psycopg

from bench.pdp_bench import percentile
from bench.targets import ProcessStats

STATEMENT = "SELECT id, email FROM customers WHERE id = %s LIMIT 10"
PATHS = ("pgwarden", "direct")


def conninfo(state: Path) -> dict[str, dict[str, Any]]:
    """psycopg keyword arguments for each path, from the stack's own files."""
    stack = json.loads((state / "stack.json").read_text())
    proxy = stack["proxy"]
    upstream = tomllib.loads((state / "proxy.toml").read_text())["upstream"]
    return {
        "pgwarden": {
            "host": proxy["host"],
            "port": proxy["port"],
            "dbname": proxy["database"],
            "user": "agent:reporting",
            "password": stack["tokens"]["agent:reporting"],
            "sslmode": "verify-full",
            "sslrootcert": proxy["ca_file"],
        },
        "direct": {
            "host": upstream["host"],
            "port": upstream["port"],
            "dbname": proxy["database"],
            "user": "shop_reporting",
            "password": upstream["roles"]["shop_reporting"]["password"],
            "sslmode": "verify-full",
            "sslrootcert": upstream["ca_file"],
        },
    }


def sessions(kwargs: dict[str, Any], count: int) -> tuple[list[float], list[float]]:
    """Connect latencies and whole-session latencies of ``count`` sessions in a row."""
    connects, wholes = [], []
    for i in range(count):
        started = time.perf_counter()
        with psycopg.connect(**kwargs) as connection:
            ready = time.perf_counter()
            connection.execute(STATEMENT, (i % 50 + 1,)).fetchall()
        wholes.append(time.perf_counter() - started)
        connects.append(ready - started)
    return connects, wholes


def measure(state: Path, *, connections: int, rounds: int) -> dict[str, Any]:
    stack = json.loads((state / "stack.json").read_text())
    processes = {name: ProcessStats(stack["pids"][name]) for name in ("proxy", "pdp")}
    kwargs = conninfo(state)
    for path in PATHS:  # TLS session caches, the PDP's compiled queries, the catalog
        sessions(kwargs[path], 10)
    out: dict[str, Any] = {"connections": connections, "rounds": rounds}
    figures: dict[str, dict[str, list[float]]] = {path: {} for path in PATHS}
    for round_ in range(rounds):
        for path in PATHS[round_ % 2 :] + PATHS[: round_ % 2]:
            before = {name: sum(p.cpu_seconds()) for name, p in processes.items()}
            connects, wholes = sessions(kwargs[path], connections)
            spent = {name: sum(p.cpu_seconds()) - before[name] for name, p in processes.items()}
            rows = figures[path]
            for key, value in (
                ("connect_p50_ms", statistics.median(connects)),
                ("connect_p99_ms", percentile(connects, 0.99)),
                ("session_p50_ms", statistics.median(wholes)),
                ("session_p99_ms", percentile(wholes, 0.99)),
            ):
                rows.setdefault(key, []).append(round(value * 1e3, 2))
            for name, seconds in spent.items():
                rows.setdefault(f"cpu_{name}_ms", []).append(round(seconds / connections * 1e3, 2))
    for path, rows in figures.items():
        out[path] = {key: {"median": statistics.median(v), "rounds": v} for key, v in rows.items()}
    return out


def markdown(result: dict[str, Any]) -> str:
    def cell(path: str, key: str) -> str:
        figure = result[path][key]
        low, high = min(figure["rounds"]), max(figure["rounds"])
        return f"{figure['median']:.2f} ({low:.2f}-{high:.2f})"

    lines = [
        f"{result['rounds']} rounds of {result['connections']} sessions per path (connect, "
        f"one SELECT, close), load {result['load_before']:.2f} → {result['load_after']:.2f}",
        "",
        "| path | connect p50 ms | connect p99 ms | session p50 ms | session p99 ms "
        "| proxy CPU ms/session | PDP CPU ms/session |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in PATHS:
        keys = ("connect_p50_ms", "connect_p99_ms", "session_p50_ms", "session_p99_ms")
        lines.append(
            f"| {path} | "
            + " | ".join(cell(path, k) for k in keys)
            + f" | {cell(path, 'cpu_proxy_ms')} | {cell(path, 'cpu_pdp_ms')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200, help="sessions per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path")
    args = parser.parse_args()
    pgwarden = [sys.executable, "-m", "pgwarden"]
    # Made by `up` itself: PostgreSQL's user must be able to reach it (a mkdtemp
    # directory is the invoking user's only).
    state = Path(tempfile.gettempdir()) / f"pgwarden-connect-bench-{os.getpid()}"
    subprocess.run(
        [*pgwarden, "up", "--detach", "--state-dir", str(state)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        load_before = os.getloadavg()[0]
        result = measure(state, connections=args.connections, rounds=args.rounds)
        result |= {"load_before": load_before, "load_after": os.getloadavg()[0]}
    finally:
        subprocess.run([*pgwarden, "down", "--state-dir", str(state)], check=False)
        shutil.rmtree(state, ignore_errors=True)
    print(markdown(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
