"""pgwarden's own processes (proxy, PDP) started as a user would: ``python -m pgwarden``
with a config file; ready when the listening port accepts connections."""

from __future__ import annotations

import sys
from pathlib import Path

from pgwarden.stack.process import ManagedProcess, port_accepts


class PgwardenProcess(ManagedProcess):
    """``python -m pgwarden COMMAND --config FILE``, ready when ``host:port`` accepts."""

    def __init__(self, command: str, config: Path, *, host: str, port: int, log_path: Path) -> None:
        super().__init__(
            f"pgwarden {command}",
            [sys.executable, "-m", "pgwarden", command, "--config", str(config)],
            log_path=log_path,
        )
        self.host = host
        self.port = port

    def start_and_wait(self, timeout_s: float = 30.0) -> PgwardenProcess:
        self.start()
        self.wait_ready(lambda: port_accepts(self.host, self.port), timeout_s=timeout_s)
        return self
