"""Quality gates, run as part of the suite: linters, type checks, policy and proto checks.

Each gate runs the real tool pinned by the project (.venv for Python tools, .bin for the
Go-built OPA, Regal and buf) and fails with the tool's own output.
"""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".bin"
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.gates, pytest.mark.timeout(600)]


def run(argv: list[str | Path], cwd: Path = REPO) -> str:
    out = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_ruff_check() -> None:
    run([VENV_BIN / "ruff", "check", "."])


def test_ruff_format() -> None:
    run([VENV_BIN / "ruff", "format", "--check", "."])


def test_mypy_strict() -> None:
    run([sys.executable, "-m", "mypy"])


def test_opa_fmt() -> None:
    run([BIN / "opa", "fmt", "--list", "--fail", "policies"])


def test_opa_check_strict() -> None:
    run([BIN / "opa", "check", "--strict", "policies"])


def test_opa_test() -> None:
    """Every Rego test passes and covers 100% of each file in policies/pgwarden/."""
    out = run([BIN / "opa", "test", "--coverage", "--threshold", "100", "policies"])
    files = {
        name: report["coverage"]
        for name, report in json.loads(out)["files"].items()
        if name.startswith("policies/pgwarden/")
    }
    assert "policies/pgwarden/decision.rego" in files, f"no coverage for the policy pack: {files}"
    below = {name: pct for name, pct in files.items() if pct < 100}
    assert not below, f"Rego coverage below 100% in policies/pgwarden/: {below}"


def test_regal_lint() -> None:
    run([BIN / "regal", "lint", "policies"])


def test_buf_lint() -> None:
    run([BIN / "buf", "lint"], cwd=REPO / "protos")


def test_generated_grpc_code_is_up_to_date(tmp_path: Path) -> None:
    run([sys.executable, REPO / "scripts" / "gen_protos.py", "--out", tmp_path])
    fresh, committed = tmp_path / "pgwarden" / "v1", REPO / "pgwarden" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    stale = mismatch + errors
    assert not stale, f"pgwarden/v1 is stale for {stale}: run scripts/gen_protos.py"
