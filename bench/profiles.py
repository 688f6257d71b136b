"""Where the proxy's time goes: py-spy samples of the proxy process under pgbench, and a
summary of the functions that took it (own time and time including callees)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.pgbench import Cell, Sample, run_pgbench
from bench.targets import Endpoint

PY_SPY = Path(sys.executable).parent / "py-spy"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass
class Profile:
    """One profile: the run it was taken under and the files it wrote."""

    cell: Cell
    sample: Sample
    samples: int
    collapsed: Path
    summary: Path


def record_profile(
    pgbench: Path,
    endpoint: Endpoint,
    cell: Cell,
    *,
    pid: int,
    seconds: int,
    out_dir: Path,
    target: str,
) -> Profile:
    """Sample ``pid`` with py-spy (Python and native frames) while pgbench runs ``cell``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{target}-{cell.script}-{cell.mode}-c{cell.clients}"
    collapsed = out_dir / f"{stem}.collapsed.txt"
    spy = subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--native",
            "--rate",
            "250",
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(collapsed),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    result: list[Sample] = []
    # pgbench runs a little longer than py-spy samples, so every sample is under load.
    worker = threading.Thread(
        target=lambda: result.append(
            run_pgbench(
                pgbench,
                endpoint,
                cell,
                seconds=seconds + 2,
                target=target,
                round_=0,
                relay_pid=pid,
            )
        )
    )
    worker.start()
    spy_output, _ = spy.communicate(timeout=seconds + 60)
    worker.join()
    if spy.returncode != 0 or not collapsed.is_file():
        raise RuntimeError(f"py-spy failed ({spy.returncode}):\n{spy_output[-2000:]}")
    stacks = _read_collapsed(collapsed)
    summary = out_dir / f"{stem}.md"
    summary.write_text(summarize(stacks, title=f"{target}: pgbench {cell.label}", run=result[0]))
    return Profile(cell, result[0], sum(stacks.values()), collapsed, summary)


def _read_collapsed(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(_frame_name(f) for f in stack.split(";"))] += int(count)
    return stacks


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``; native frames keep their
    library name; bare addresses become ``[native]``."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    func, file = match.group("func"), Path(match.group("file")).name
    if func.startswith("0x"):
        return f"[native] ({file})"
    return f"{func} ({file})"


# Where a sample's time goes, judged from its innermost frames: a system call on top of
# the stack is the kernel's (on loopback, a socket write also delivers the data to the
# receiver); otherwise the innermost frame of one of pgwarden's modules names the area.
SYSCALL_AREAS = {
    "write": "kernel: socket writes (incl. loopback delivery)",
    "writev": "kernel: socket writes (incl. loopback delivery)",
    "sendmsg": "kernel: socket writes (incl. loopback delivery)",
    "read": "kernel: socket reads",
    "recv": "kernel: socket reads",
    "recvmsg": "kernel: socket reads",
    "epoll_pwait": "kernel: epoll",
    "epoll_wait": "kernel: epoll",
    "getrandom": "kernel: getrandom (uuid4, secrets)",
}
_ANALYSIS = "statement analysis (pglast, memo, digests)"
_DECISIONS = "decision point (local decisions, ids, digests)"
MODULE_AREAS = {
    "statements.py": _ANALYSIS,
    "analyzer.py": _ANALYSIS,
    "sqltext.py": _ANALYSIS,
    "facts.py": _ANALYSIS,
    "document.py": _ANALYSIS,
    "commands.py": _ANALYSIS,
    "decision.py": _DECISIONS,
    "decision_cache.py": _DECISIONS,
    "pdp_client.py": _DECISIONS,
    "relay.py": "relay core (framing, message parsing, batching)",
    "framing.py": "relay core (framing, message parsing, batching)",
    "messages.py": "relay core (framing, message parsing, batching)",
    "server.py": "asyncio glue in server.py (flush, pause/resume, decide task)",
    "upstream.py": "asyncio glue in server.py (flush, pause/resume, decide task)",
}
OTHER_AREA = "event loop and interpreter (uvloop, asyncio tasks, scheduling)"


def _area(stack: tuple[str, ...]) -> str:
    leaf = stack[-1].split(" ", 1)[0]
    if leaf in SYSCALL_AREAS:
        return SYSCALL_AREAS[leaf]
    for frame in reversed(stack):
        file = frame.rsplit("(", 1)[-1].rstrip(")")
        if file in MODULE_AREAS:
            return MODULE_AREAS[file]
    return OTHER_AREA


def summarize(stacks: Counter[tuple[str, ...]], *, title: str, run: Sample, top: int = 25) -> str:
    """A Markdown summary: time by area, and the functions with the most samples on top of
    the stack (own time) and anywhere in it (inclusive; the event loop's scaffolding, in
    nearly every sample, is left out)."""
    total = sum(stacks.values()) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for stack, count in stacks.items():
        own[stack[-1]] += count
        areas[_area(stack)] += count
        for name in set(stack):
            inclusive[name] += count
    cpu, kernel = run.relay_cpu_us_per_tx or 0.0, run.relay_sys_us_per_tx or 0.0
    python_total = sum(n for name, n in areas.items() if not name.startswith("kernel")) or 1
    lines = [
        f"# Profile: {title}",
        "",
        f"py-spy --native, {total} samples of the proxy while it was running. Under "
        f"profiling: {run.tps:,.0f} TPS; proxy CPU {cpu:.1f} µs per transaction, of which "
        f"{kernel:.1f} µs in the kernel (from /proc: the reliable split). py-spy pauses the "
        "process to sample it, which lands disproportionately on system calls: read the "
        "kernel rows below as where the process waits, and the other rows, renormalized in "
        "the last column, as how the Python time divides.",
        "",
        "## By area",
        "",
        "| share of samples | share of Python samples | area |",
        "| ---: | ---: | --- |",
    ]
    for name, n in areas.most_common():
        python_share = "" if name.startswith("kernel") else f"{100 * n / python_total:.1f}%"
        lines.append(f"| {100 * n / total:.1f}% | {python_share} | {name} |")
    lines += ["", "## Own time", "", "| share | function |", "| ---: | --- |"]
    lines += [f"| {100 * n / total:.1f}% | `{name}` |" for name, n in own.most_common(top)]
    lines += ["", "## Inclusive time", "", "| share | function |", "| ---: | --- |"]
    scaffolding = {name for name, n in inclusive.items() if n >= 0.95 * total}
    shown = [(name, n) for name, n in inclusive.most_common() if name not in scaffolding]
    lines += [f"| {100 * n / total:.1f}% | `{name}` |" for name, n in shown[:top]]
    return "\n".join(lines) + "\n"
