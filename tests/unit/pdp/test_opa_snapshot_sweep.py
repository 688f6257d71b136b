"""Which snapshot directories a starting PDP removes (directories only, no PDP)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pgwarden.pdp.opa_supervisor import (
    OWNER_FILE,
    SNAPSHOT_PREFIX,
    _process_identity,
    sweep_dead_snapshots,
)

OUR_NAMESPACE = os.readlink("/proc/self/ns/pid")


def snapshot(tmp: Path, name: str, owner: str | None) -> Path:
    directory = tmp / f"{SNAPSHOT_PREFIX}{name}"
    (directory / "0001-rev" / "policies").mkdir(parents=True)
    (directory / "0001-rev" / "policies" / "p.rego").write_text("package p\n")
    if owner is not None:
        (directory / OWNER_FILE).write_text(owner + "\n")
    return directory


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_dead_pdps_directory_is_removed(tmp_path: Path, dead_pid: int) -> None:
    dead = snapshot(tmp_path, "dead", f"{dead_pid} 4242 {OUR_NAMESPACE}")
    assert sweep_dead_snapshots(tmp_path) == 1
    assert not dead.exists()


def test_a_reused_pid_does_not_keep_a_dead_pdps_directory(tmp_path: Path) -> None:
    """Our own pid with another start time: the PDP that wrote it is gone."""
    pid, started, namespace = (_process_identity(os.getpid()) or "").split(" ")
    reused = snapshot(tmp_path, "reused", f"{pid} {int(started) - 1} {namespace}")
    assert sweep_dead_snapshots(tmp_path) == 1
    assert not reused.exists()


def test_the_directories_of_running_pdps_are_kept(tmp_path: Path) -> None:
    live = snapshot(tmp_path, "live", _process_identity(os.getpid()))
    assert sweep_dead_snapshots(tmp_path) == 0
    assert (live / "0001-rev" / "policies" / "p.rego").exists()


def test_what_cannot_be_judged_is_kept(tmp_path: Path, dead_pid: int) -> None:
    kept = [
        snapshot(tmp_path, "starting", None),  # no owner file yet
        snapshot(tmp_path, "garbled", "not an owner"),
        snapshot(tmp_path, "other-namespace", f"{dead_pid} 4242 pid:[1]"),
        snapshot(tmp_path.joinpath("elsewhere"), "x", f"{dead_pid} 4242 {OUR_NAMESPACE}").parent,
    ]
    other = tmp_path / "not-a-snapshot"
    other.mkdir()
    (other / OWNER_FILE).write_text(f"{dead_pid} 4242 {OUR_NAMESPACE}\n")
    assert sweep_dead_snapshots(tmp_path) == 0
    assert all(directory.exists() for directory in [*kept, other])


def test_a_symlink_is_not_followed(tmp_path: Path, dead_pid: int) -> None:
    target = snapshot(tmp_path / "target", "dead", f"{dead_pid} 4242 {OUR_NAMESPACE}")
    (tmp_path / f"{SNAPSHOT_PREFIX}link").symlink_to(target)
    assert sweep_dead_snapshots(tmp_path) == 0
    assert (target / "0001-rev" / "policies" / "p.rego").exists()
    assert (tmp_path / f"{SNAPSHOT_PREFIX}link").is_symlink()


def test_a_directory_that_cannot_be_listed_sweeps_nothing(tmp_path: Path) -> None:
    """Best effort: the sweep never stops a PDP from starting."""
    assert sweep_dead_snapshots(tmp_path / "missing") == 0
