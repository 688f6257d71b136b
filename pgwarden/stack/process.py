"""A child process with a log file, readiness by polling, and a clean stop."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

POLL_INTERVAL_S = 0.02


class StackError(RuntimeError):
    """A stack component could not be started or stopped; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_accepts(host: str, port: int) -> bool:
    """Whether a TCP connect to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def poll_until(
    condition: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``condition`` until it holds; raise StackError naming ``what`` after ``timeout_s``.

    ``alive`` returns a message when the thing being waited for has died, which ends the
    wait at once instead of at the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        died = alive()
        if died is not None:
            raise StackError(f"{what}: {died}")
        if time.monotonic() >= deadline:
            raise StackError(f"{what}: not ready after {timeout_s:g}s")
        time.sleep(POLL_INTERVAL_S)


async def poll_until_async(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout_s: float, what: str
) -> None:
    """:func:`poll_until` for asyncio code: the condition may be a coroutine function, and
    the event loop runs between polls."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise StackError(f"{what}: not reached after {timeout_s:g}s")
        await asyncio.sleep(POLL_INTERVAL_S)


class ManagedProcess:
    """A child process whose output goes to ``log_path``; stopped with a signal, then killed."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self._require().pid

    def start(self) -> ManagedProcess:
        if self._proc is not None and self._proc.poll() is None:
            raise StackError(f"{self.name} is already running (pid {self._proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                start_new_session=True,
            )
        return self

    def exit_message(self) -> str | None:
        """None while running; otherwise how it ended, with the end of its log."""
        proc = self._require()
        code = proc.poll()
        if code is None:
            return None
        return f"{self.name} exited with code {code}; last log lines:\n{self.log_tail()}"

    def wait_ready(self, condition: Callable[[], bool], *, timeout_s: float = 30.0) -> None:
        poll_until(condition, timeout_s=timeout_s, what=self.name, alive=self.exit_message)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def send_signal(self, sig: signal.Signals) -> None:
        proc = self._require()
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, *, grace_s: float = 10.0) -> int:
        """Send ``sig``, wait up to ``grace_s``, then SIGKILL; return the exit code."""
        proc = self._require()
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        proc = self._require()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise StackError(f"{self.name} was never started")
        return self._proc
