"""OPA for the PDP: a supervised child process (default) or an external server.

Supervised: the PDP copies the policy directory into a snapshot, hashes the snapshot's
content into the *revision*, and starts ``opa run --server`` on the snapshot. When the
directory changes it starts a second OPA on the new snapshot, switches decisions to it
once it answers (blue/green: never a half-loaded policy), pushes the new revision to every
proxy and stops the old one. A policy that does not compile never replaces a working one.
When the OPA in force dies it is restarted on the same snapshot with exponential backoff;
meanwhile decisions fail closed with ``opa_unavailable``.

External: decisions go to ``url``; the revision is a digest of the policy modules and the
``data.data`` document that OPA reports, checked every ``watch_interval_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pgwarden.pdp.config import OpaConfig
from pgwarden.pdp.evaluation import Evaluator, OpaTarget
from pgwarden.pdp.log import log_event
from pgwarden.stack.opa import find_opa
from pgwarden.stack.process import free_port

POLICY_SUFFIXES = (".rego", ".json", ".yaml", ".yml")
STARTUP_TIMEOUT_S = 15.0
# sockaddr_un holds 108 bytes with the final NUL; a longer path (a deep TMPDIR) means TCP.
UNIX_SOCKET_PATH_MAX = 107
# The old OPA keeps answering in-flight requests for this long after a switch.
RETIRE_AFTER_S = 2.0
# A child that lived this long before dying resets the restart backoff.
STABLE_AFTER_S = 10.0
# Each supervisor's snapshots live in one directory of the system's temporary directory,
# with a file naming the PDP process that owns it (see sweep_dead_snapshots).
SNAPSHOT_PREFIX = "pgwarden-pdp-opa-"
OWNER_FILE = "owner"


def _die_with_parent_hook() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that makes OPA die with the PDP (PR_SET_PDEATHSIG), so a
    crashed or killed PDP never leaves its OPA behind. Resolved before fork: the child
    only makes the one system call."""
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, 9

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigkill)

    return hook


_DIE_WITH_PARENT = _die_with_parent_hook()


def _loaded(path: Path) -> bool:
    name = path.name
    return (
        name.endswith(POLICY_SUFFIXES)
        and not name.endswith("_test.rego")
        and not any(part.startswith(".") for part in path.parts)
    )


def policy_files(root: Path) -> dict[str, bytes]:
    """The files OPA loads from ``root`` (Rego without tests, JSON/YAML data), by path."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and _loaded(relative):
            files[relative.as_posix()] = path.read_bytes()
    return files


def directory_signature(root: Path) -> tuple[tuple[str, int, int, int], ...]:
    """A cheap change detector: path, size, mtime and inode of every loaded file."""
    entries = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if _loaded(relative):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                entries.append((relative.as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sorted(entries))


def revision_of(files: Mapping[str, bytes]) -> str:
    """The revision: a digest of every loaded file's path and content."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(files):
        content = files[name]
        h.update(f"{name}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()


class RevisionFeed:
    """The revision in force; WatchRevisions streams wait on it."""

    def __init__(self) -> None:
        self.revision = ""
        self.closed = False
        self._changed = asyncio.Event()
        self.listeners: list[Callable[[str], None]] = []

    def close(self) -> None:
        """Wake every watcher so streams end before a graceful stop."""
        self.closed = True
        self._changed.set()

    def publish(self, revision: str) -> None:
        if revision == self.revision:
            return
        self.revision = revision
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self.listeners:
            listener(revision)

    async def next_after(self, seen: str) -> str | None:
        """The revision as soon as it differs from ``seen``; None once the feed is closed."""
        while self.revision == seen and not self.closed:
            await self._changed.wait()
        return None if self.closed else self.revision


@dataclass(eq=False)  # identity: kept in sets
class OpaChild:
    # subprocess.Popen, not asyncio's: uvloop's spawn loses PR_SET_PDEATHSIG.
    process: subprocess.Popen[bytes]
    target: OpaTarget
    directory: Path
    started: float

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def unix_socket_in(directory: Path) -> str | None:
    """Where OPA's Unix socket goes in ``directory``; None when the path is too long for
    one (then decisions go over TCP)."""
    path = directory / "opa.sock"
    return str(path) if len(os.fsencode(path)) <= UNIX_SOCKET_PATH_MAX else None


def _bound(socket_path: str | None) -> bool:
    """OPA listens on its Unix socket (or was started without one)."""
    return socket_path is None or os.path.exists(socket_path)


def _process_identity(pid: int) -> str | None:
    """``pid``, its start time (field 22 of /proc/PID/stat, clock ticks since boot: a
    reused pid has another) and its PID namespace; None when there is no such process (or
    no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
    started = stat[stat.rindex(")") + 2 :].split()[19]  # fields[0] is field 3
    return f"{pid} {started} {namespace}"


def sweep_dead_snapshots(directory: Path) -> int:
    """Remove the snapshot directories in ``directory`` whose PDP is gone, and say how many.

    A PDP that stops removes its own; one that was killed (SIGKILL, the OOM killer) leaves
    its policy copies and its OPA's socket behind, and every restart would add one more.
    A directory is removed only when it is ours (same user, not a symlink) and its owner
    file names a process of our PID namespace that no longer runs: one being created has no
    owner file yet, and a PDP in another namespace (a container sharing the directory)
    cannot be judged from here. Without /proc, nothing is swept."""
    ours = _process_identity(os.getpid())
    if ours is None:
        return 0
    namespace = ours.rsplit(" ", 1)[1]
    try:
        with os.scandir(directory) as listing:
            entries = [e for e in listing if e.name.startswith(SNAPSHOT_PREFIX)]
    except OSError:
        return 0  # best effort: a directory we may not list is left as it is
    swept = 0
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            owner = (Path(entry.path) / OWNER_FILE).read_text().strip()
            pid, _, owner_namespace = owner.split(" ")
            alive = _process_identity(int(pid)) == owner
        except (OSError, ValueError):
            continue
        if owner_namespace == namespace and not alive:
            shutil.rmtree(entry.path, ignore_errors=True)
            swept += 1
    return swept


class PolicyLoadError(Exception):
    """OPA did not start on a snapshot; the message has the end of its log."""


class OpaSupervisor:
    """Runs our own OPA on snapshots of ``config.policies`` (see the module docstring)."""

    def __init__(self, config: OpaConfig, evaluator: Evaluator, feed: RevisionFeed) -> None:
        assert config.policies is not None
        self.config = config
        self.root = config.policies
        self.binary = config.binary or find_opa()
        self.evaluator = evaluator
        self.feed = feed
        temporary = Path(tempfile.gettempdir())
        swept = sweep_dead_snapshots(temporary)
        if swept:
            log_event("snapshots_swept", directories=swept, directory=str(temporary))
        self.state_dir = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX, dir=temporary))
        (self.state_dir / OWNER_FILE).write_text(f"{_process_identity(os.getpid()) or ''}\n")
        self.child: OpaChild | None = None
        self.files: dict[str, bytes] = {}
        self.signature: tuple[tuple[str, int, int, int], ...] = ()
        self.restarts = 0
        self.load_failures = 0
        self._spawned = 0
        self._retry_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: set[OpaChild] = set()

    @property
    def opa_pid(self) -> int | None:
        return self.child.process.pid if self.child and self.child.alive else None

    async def start(self) -> None:
        await self._reload()
        self._task = asyncio.create_task(self._supervise(), name="opa-supervisor")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._retiring):
            task.cancel()
        for child in list(self._retired):
            await self._terminate(child)
        if self.child:
            await self._terminate(self.child)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- the loop ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = self.config.restart_backoff_s
        while True:
            child = self.child
            if child is not None and not child.alive:
                lived = time.monotonic() - child.started
                if lived >= STABLE_AFTER_S:
                    backoff = self.config.restart_backoff_s
                log_event(
                    "opa_exited",
                    level="error",
                    pid=child.process.pid,
                    returncode=child.process.returncode,
                    restart_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.restart_backoff_max_s)
                try:
                    await self._switch(await self._spawn(self.files, revision_of(self.files)))
                    self.restarts += 1
                except PolicyLoadError as exc:
                    log_event("opa_restart_failed", level="error", error=str(exc))
                continue
            try:
                await self._reload()
            except OSError as exc:  # e.g. a file vanished mid-scan: try again next tick
                self.signature = ()
                log_event("policy_scan_failed", level="warning", error=str(exc))
            except Exception as exc:  # the supervisor must outlive anything it meets
                log_event("supervisor_error", level="error", error=repr(exc))
            await asyncio.sleep(self.config.watch_interval_s)

    async def _reload(self) -> None:
        """Start OPA on the directory's content when it changed (or nothing runs yet)."""
        signature = directory_signature(self.root)
        if signature == self.signature and (
            self.child is not None or time.monotonic() < self._retry_at
        ):
            return
        files = policy_files(self.root)
        revision = revision_of(files)
        self.signature = signature
        if self.child is not None and revision == self.child.target.revision:
            return
        try:
            child = await self._spawn(files, revision)
        except PolicyLoadError as exc:
            self.load_failures += 1
            # Same content again only after a while (nothing runs yet, it may be transient).
            self._retry_at = time.monotonic() + self.config.restart_backoff_max_s
            log_event("policy_load_failed", level="error", revision=revision, error=str(exc))
            return
        self.files = files
        await self._switch(child)

    # -- children ----------------------------------------------------------------------

    async def _spawn(self, files: Mapping[str, bytes], revision: str) -> OpaChild:
        self._spawned += 1
        directory = self.state_dir / f"{self._spawned:04d}-{revision}"
        for name, content in files.items():
            path = directory / "policies" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        (directory / "policies").mkdir(parents=True, exist_ok=True)
        port = free_port()
        log_path = directory / "opa.log"
        # Decisions go to a Unix socket beside the snapshot (cheaper than loopback TCP, see
        # opa_http); health checks and the policy listing (aiohttp) to the TCP port.
        socket_path = unix_socket_in(directory)
        addresses = ["--addr", f"127.0.0.1:{port}"]
        if socket_path is not None:
            addresses += ["--addr", f"unix://{socket_path}", "--unix-socket-perm", "600"]
        argv = [
            str(self.binary),
            "run",
            "--server",
            "--skip-version-check",
            *addresses,
            "--log-level",
            "error",
            str(directory / "policies"),
        ]
        # A higher GOGC trades some memory for fewer Go collections: p99 at ~0.5 ms, not 2.
        env = {**os.environ, "GOGC": str(self.config.gogc)}
        try:
            with log_path.open("wb") as log:
                # Popen, not asyncio: uvloop's spawn loses PR_SET_PDEATHSIG; fork+exec ~1 ms.
                process = subprocess.Popen(  # noqa: ASYNC220
                    argv,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=_DIE_WITH_PARENT,  # noqa: PLW1509 (one prctl call, resolved earlier)
                )
        except OSError as exc:  # the binary vanished, no memory, ...
            shutil.rmtree(directory, ignore_errors=True)
            raise PolicyLoadError(f"OPA could not be started: {exc}") from exc
        target = await OpaTarget.open(
            f"http://127.0.0.1:{port}",
            revision,
            timeout_s=self.config.timeout_s,
            unix_socket=socket_path,
        )
        child = OpaChild(process, target, directory, time.monotonic())
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not await target.healthy() or not _bound(socket_path):
            if not child.alive or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:].strip()
                await self._terminate(child)
                raise PolicyLoadError(f"OPA did not start on revision {revision}: {tail}")
            await asyncio.sleep(0.01)
        await target.warm_up()  # before this instance answers any statement
        log_event(
            "opa_started", pid=process.pid, url=target.url, socket=socket_path, revision=revision
        )
        return child

    async def _switch(self, child: OpaChild) -> None:
        old, self.child = self.child, child
        self.evaluator.target = child.target
        if old is None or old.target.revision != child.target.revision:
            log_event("revision", revision=child.target.revision, files=len(self.files))
        self.feed.publish(child.target.revision)
        if old is not None:
            self._retired.add(old)
            task = asyncio.create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, child: OpaChild) -> None:
        await asyncio.sleep(RETIRE_AFTER_S)
        await self._terminate(child)
        self._retired.discard(child)

    async def _terminate(self, child: OpaChild) -> None:
        if child.alive:
            child.process.terminate()
            try:
                await asyncio.to_thread(child.process.wait, 5)
            except subprocess.TimeoutExpired:
                child.process.kill()
                await asyncio.to_thread(child.process.wait)
        await child.target.close()
        shutil.rmtree(child.directory, ignore_errors=True)


class ExternalOpa:
    """An OPA someone else runs; the revision is computed from what it reports."""

    def __init__(self, config: OpaConfig, evaluator: Evaluator, feed: RevisionFeed) -> None:
        self.config = config
        self.evaluator = evaluator
        self.feed = feed
        self.target: OpaTarget | None = None
        self.opa_pid: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.target = await OpaTarget.open(
            self.config.url, "", timeout_s=self.config.timeout_s, token=self.config.token
        )
        await self._check()
        self._task = asyncio.create_task(self._watch(), name="opa-external-watch")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.target:
            await self.target.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.watch_interval_s)
            await self._check()

    async def _check(self) -> None:
        assert self.target is not None
        try:
            revision = await self._revision(self.target)
        except Exception as exc:  # OPA down: keep the last revision, decisions fail closed
            log_event("opa_unreachable", level="warning", error=type(exc).__name__)
            if self.evaluator.target is None:
                self.evaluator.target = self.target
            return
        if revision != self.target.revision or self.evaluator.target is None:
            # Same connection pool, new revision label: decisions in flight keep theirs.
            self.target = OpaTarget(self.target.url, revision, self.target.client, self.target.data)
            await self.target.warm_up()
            self.evaluator.target = self.target
            self.feed.publish(revision)
            log_event("revision", revision=revision)

    @staticmethod
    async def _revision(target: OpaTarget) -> str:
        """A digest of every policy module's source and of ``data.data`` as OPA reports them
        (one GET /v1/policies, whose listing carries each module's raw text)."""
        client = target.client
        h = hashlib.blake2b(digest_size=8)
        async with client._request("GET", f"{client.root_url}/policies") as response:
            response.raise_for_status()
            listing = await response.json()
        for module in sorted(listing.get("result", []), key=lambda m: str(m.get("id"))):
            raw = str(module.get("raw", ""))
            h.update(f"{module.get('id')}\0{len(raw)}\0{raw}".encode())
        async with client._request("GET", f"{client.root_url}/data/data") as response:
            response.raise_for_status()
            data = await response.json()
        h.update(json.dumps(data.get("result"), sort_keys=True).encode())
        return h.hexdigest()
