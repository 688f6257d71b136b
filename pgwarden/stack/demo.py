"""``pgwarden demo``: a scripted tour against a stack started by ``pgwarden up``, with
psql as the client, printing each step as the user would type and see it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pgwarden.stack.postgres import find_bindir
from pgwarden.stack.process import StackError, poll_until


@dataclass
class Step:
    title: str
    subject: str
    sql: str
    expect: str  # a phrase the output must contain for the step to show what it claims
    command: str = ""
    output: str = ""
    ok: bool = False


STEPS = (
    Step(
        "An allowed query: the DBA reads one customer",
        "human:dba",
        "SELECT id, full_name, email, phone FROM customers WHERE id = 42 LIMIT 1;",
        "@example.",
    ),
    Step(
        "The same query as agent:reporting: PII masked on the wire",
        "agent:reporting",
        "SELECT id, full_name, email, phone FROM customers WHERE id = 42 LIMIT 1;",
        "***@example.",
    ),
    Step(
        "A bulk export is refused, with the policy's reason",
        "agent:reporting",
        "COPY customers TO STDOUT;",
        "ERROR:  pgwarden:",
    ),
    Step(
        "A row limit stops a bulk read (no silent truncation)",
        "agent:reporting",
        "SELECT id, status, total FROM orders;",
        "row limit of 1000 rows reached",
    ),
    Step(
        "An identity that no policy admits cannot even open a session",
        "agent:intruder",
        "SELECT 1;",
        "session refused",
    ),
)


def load_stack(state_dir: Path) -> dict[str, Any]:
    stack_file = state_dir / "stack.json"
    if not stack_file.exists():
        raise StackError(
            f"no running stack in {state_dir}: start one with "
            f"pgwarden up --detach --state-dir {state_dir}"
        )
    info: dict[str, Any] = json.loads(stack_file.read_text())
    return info


AUDIT_TIMEOUT_S = 15.0
DECISION_ID = re.compile(r"decision_id=([0-9a-f]{32})")


def run(state_dir: Path) -> list[Step]:
    info = load_stack(state_dir)
    proxy = info["proxy"]
    psql = str(find_bindir() / "psql")
    steps = []
    for template in STEPS:
        step = Step(**asdict(template))
        conninfo = (
            f"host={proxy['host']} port={proxy['port']} dbname={proxy['database']} "
            f"user={step.subject} sslmode=verify-full sslrootcert={proxy['ca_file']}"
        )
        step.command = f'PGPASSWORD=<{step.subject} token> psql "{conninfo}" -c "{step.sql}"'
        env = {
            **os.environ,
            "PGPASSWORD": info["tokens"][step.subject],
            "PGAPPNAME": "pgwarden-demo",
        }
        out = subprocess.run(
            [psql, "-X", conninfo, "-c", step.sql],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        text = (out.stdout + out.stderr).rstrip()
        lines = text.splitlines()
        step.output = "\n".join(lines[:12] + (["..."] if len(lines) > 12 else []))
        step.ok = step.expect in text
        steps.append(step)
    steps += audit_steps(info, steps)
    return steps


def audit_steps(info: dict[str, Any], steps: list[Step]) -> list[Step]:
    """The audit trail's records of the tour, and its hash chain checked."""
    audit_file = Path(info["audit"]["file"])
    wanted = {m for s in steps for m in DECISION_ID.findall(s.output)}

    def recorded() -> bool:
        try:
            text = audit_file.read_text()
        except FileNotFoundError:
            return False
        return all(decision_id in text for decision_id in wanted)

    poll_until(recorded, timeout_s=AUDIT_TIMEOUT_S, what="the tour's audit records")
    pgwarden = [sys.executable, "-m", "pgwarden", "audit"]
    out = []
    for title, args, expect in (
        (
            "The audit trail of all of it (newest last)",
            ["tail", "--file", str(audit_file), "-n", str(2 * len(steps) + 4)],
            "refusal",
        ),
        (
            "Nobody edited it: the hash chain is intact",
            ["verify", "--file", str(audit_file)],
            "every link intact",
        ),
    ):
        done = subprocess.run(
            [*pgwarden, *args], capture_output=True, text=True, timeout=60, check=False
        )
        text = (done.stdout + done.stderr).rstrip()
        out.append(
            Step(
                title,
                "",
                "",
                expect,
                command="pgwarden audit " + " ".join(args),
                output=text,
                ok=done.returncode == 0 and expect in text,
            )
        )
    return out


def show(steps: list[Step], info: dict[str, Any]) -> str:
    out = []
    for number, step in enumerate(steps, 1):
        mark = "ok" if step.ok else "UNEXPECTED"
        out += [f"== {number}. {step.title} [{mark}]", f"$ {step.command}", step.output, ""]
    out.append(
        f"Decisions are logged in {info['pdp']['log']}; the audit trail is {info['audit']['file']}"
    )
    return "\n".join(out)
