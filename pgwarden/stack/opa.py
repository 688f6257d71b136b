"""A real OPA server (``opa run --server``) on a free loopback port, loaded with policy
and data paths; ready when its ``/health`` answers 200."""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pgwarden.stack.process import ManagedProcess, StackError, free_port

REPO_BIN = Path(__file__).resolve().parents[2] / ".bin"


def find_opa() -> Path:
    """The pinned OPA from the project's ``.bin`` (scripts/bootstrap), else one on PATH."""
    local = REPO_BIN / "opa"
    if local.is_file():
        return local
    found = shutil.which("opa")
    if found:
        return Path(found)
    raise StackError("opa not found: run scripts/bootstrap (it builds the pinned OPA into .bin/)")


class OpaServer:
    """``opa run --server`` loaded with ``paths``; ``url`` is its REST API base."""

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        port: int | None = None,
        log_dir: Path | None = None,
        watch: bool = False,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="pgwarden-opa-"))
        argv = [
            str(find_opa()),
            "run",
            "--server",
            "--disable-telemetry",
            "--addr",
            f"{self.host}:{self.port}",
            "--log-level",
            "error",
        ]
        if watch:
            argv.append("--watch")
        argv += [str(p) for p in self.paths]
        self.process = ManagedProcess("opa", argv, log_path=self.log_dir / "opa.log")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> OpaServer:
        self.process.start()
        self.process.wait_ready(self.is_ready, timeout_s=30)
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> OpaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
