"""One pgbench run and what it measured: TPS and average latency from pgbench's own report,
p99 from its per-transaction log (``--log``), and the relaying process's CPU time."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.targets import Endpoint, ProcessStats

# pgbench's built-in scripts: read-only (-S) and the default TPC-B-like write mix.
SCRIPTS = {"select": ["-S"], "tpcb": []}
MODES = ("simple", "extended", "prepared")

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Cell:
    """One benchmark configuration, run once per round for every target."""

    script: str
    mode: str
    clients: int

    @property
    def label(self) -> str:
        return f"{self.script} {self.mode} c={self.clients}"


@dataclass
class Sample:
    """One pgbench run against one target."""

    target: str
    round: int
    tps: float
    latency_avg_ms: float
    latency_p99_ms: float
    transactions: int
    failed: int
    # CPU time of the relaying process (proxy, PgBouncer) per transaction, when it has one:
    # in all, and the part spent in the kernel (system time).
    relay_cpu_us_per_tx: float | None
    relay_sys_us_per_tx: float | None
    # CPU time of the PDP behind the relay per transaction (pgwarden in pdp mode: it
    # stores every statement's audit record).
    pdp_cpu_us_per_tx: float | None = None
    # pgbench's first error when some clients aborted (e.g. a fail-closed refusal); the
    # numbers above then cover the transactions that did run.
    error: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class PgbenchError(RuntimeError):
    """pgbench failed; the message holds its output."""


def run_pgbench(
    pgbench: Path,
    endpoint: Endpoint,
    cell: Cell,
    *,
    seconds: float,
    target: str,
    round_: int,
    relay_pid: int | None,
    pdp_pid: int | None = None,
    rate: int = 0,
) -> Sample:
    """Run pgbench for ``seconds`` and parse what it measured."""
    threads = min(cell.clients, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="pgwarden-pgbench-") as logdir:
        argv = [
            str(pgbench),
            *SCRIPTS[cell.script],
            "-n",  # no VACUUM before the run: the harness vacuumed once after -i
            "-M",
            cell.mode,
            "-c",
            str(cell.clients),
            "-j",
            str(threads),
            "-T",
            str(max(1, round(seconds))),
            "--log",
            f"--log-prefix={logdir}/tx",
            *(["-R", str(rate)] if rate else []),  # a fixed rate: CPU per tx at equal load
        ]
        stats = ProcessStats(relay_pid) if relay_pid else None
        pdp = ProcessStats(pdp_pid) if pdp_pid else None
        cpu_before = stats.cpu_seconds() if stats else (0.0, 0.0)
        pdp_before = pdp.cpu_seconds() if pdp else (0.0, 0.0)
        out = subprocess.run(
            argv,
            env={**os.environ, **endpoint.libpq_env()},
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 120,
        )
        cpu_after = stats.cpu_seconds() if stats else None
        pdp_after = pdp.cpu_seconds() if pdp else None
        # Exit code 2: the run went on but some clients were aborted by errors.
        if out.returncode != 0 and not (out.returncode == 2 and _TPS.search(out.stdout)):
            raise PgbenchError(
                f"pgbench {cell.label} against {target} failed ({out.returncode}):\n"
                f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
            )
        latencies = _logged_latencies_us(Path(logdir))
    tps = _match_float(_TPS, out.stdout, "tps")
    avg = _match_float(_LATENCY, out.stdout, "latency average")
    failed_match = _FAILED.search(out.stdout)
    transactions = int(latencies.size)
    return Sample(
        target=target,
        round=round_,
        tps=tps,
        latency_avg_ms=avg,
        latency_p99_ms=float(np.percentile(latencies, 99)) / 1000 if transactions else 0.0,
        transactions=transactions,
        failed=int(failed_match.group(1)) if failed_match else 0,
        relay_cpu_us_per_tx=_per_tx(cpu_before, cpu_after, transactions, system_only=False),
        relay_sys_us_per_tx=_per_tx(cpu_before, cpu_after, transactions, system_only=True),
        pdp_cpu_us_per_tx=_per_tx(pdp_before, pdp_after, transactions, system_only=False),
        error=next((line for line in out.stderr.splitlines() if "error" in line), "")[:300]
        if out.returncode
        else "",
    )


def _per_tx(
    before: tuple[float, float],
    after: tuple[float, float] | None,
    transactions: int,
    *,
    system_only: bool,
) -> float | None:
    """CPU microseconds per transaction between two (user, system) readings."""
    if after is None or not transactions:
        return None
    system = after[1] - before[1]
    spent = system if system_only else system + after[0] - before[0]
    return spent * 1e6 / transactions


def _match_float(pattern: re.Pattern[str], text: str, what: str) -> float:
    match = pattern.search(text)
    if match is None:
        raise PgbenchError(f"pgbench printed no {what}:\n{text[-2000:]}")
    return float(match.group(1))


def _logged_latencies_us(logdir: Path) -> np.ndarray:
    """Latencies (µs) of the successful transactions in pgbench's per-transaction logs
    (one file per thread; the third field is the latency, or a word for a failure)."""
    chunks = []
    for path in logdir.glob("tx.*"):
        column = [line.split(maxsplit=3)[2] for line in path.read_text().splitlines() if line]
        chunks.append(np.array([int(v) for v in column if v.isdigit()], dtype=np.int64))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
