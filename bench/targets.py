"""What the benchmark measures against: the harness's PostgreSQL cluster, and the targets
a client can reach it through (direct, PgBouncer, pgwarden).

A target is started once per run and gives an :class:`Endpoint` (where pgbench and the
memory probe connect) and, when it is a process of its own, that process's pid (for RSS,
CPU time and profiles). Adding a target is a class with ``start``/``stop`` and an entry in
:data:`TARGETS`. The pgwarden proxy's decision point is the only thing that differs between
pgwarden variants: :class:`PgwardenTarget` takes its ``[decision]`` section, upstream roles
(and any processes behind them) from :meth:`PgwardenTarget.decision_config`;
:class:`PgwardenPdpTarget` starts the PDP and its OPA there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from pgwarden.pdp.harness import PdpProcess
from pgwarden.proxy.auth.dev_tokens import issue_dev_token
from pgwarden.stack.pgwarden_process import PgwardenProcess
from pgwarden.stack.postgres import PROXY_ROLE, PostgresCluster
from pgwarden.stack.process import ManagedProcess, StackError, free_port, port_accepts

# The policy pack's identities may use the database "shop" only (policies/data/).
BENCH_DB = "shop"
PGBOUNCER = "/usr/sbin/pgbouncer"
# Room for 1,000 idle sessions (each with its own upstream backend) plus the pgbench clients.
MAX_CONNECTIONS = 2300
# The identity pgbench and the memory probe present to pgwarden (a development token).
BENCH_SUBJECT = "agent:bench"
POLICIES = Path(__file__).resolve().parent.parent / "policies"


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects: libpq parameters (TCP on loopback, no TLS)."""

    host: str
    port: int
    user: str
    password: str
    dbname: str = BENCH_DB

    def libpq_env(self) -> dict[str, str]:
        """The environment that points libpq (pgbench, psql) here; the password never
        appears on a command line."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.dbname,
            "PGSSLMODE": "disable",
            "PGAPPNAME": "pgwarden-bench",
        }


class BenchCluster:
    """The harness's PostgreSQL: a throwaway cluster with a ``bench`` database owned by the
    proxy's role, initialised by ``pgbench -i`` (direct), and room for 1,000+ sessions."""

    def __init__(self, workdir: Path, *, scale: int) -> None:
        self.scale = scale
        self.cluster = PostgresCluster(workdir / "postgres")
        self.pgbench = self.cluster.bindir / "pgbench"
        self._logins: dict[str, str] = {}

    def start(self) -> BenchCluster:
        cluster = self.cluster.start()
        cluster.psql(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
        cluster.psql("ALTER SYSTEM SET log_connections = off")
        cluster.psql("ALTER SYSTEM SET log_disconnections = off")
        # max_connections takes a restart.
        cluster.server.stop(signal.SIGINT, grace_s=30)
        cluster.server.start()
        cluster.server.wait_ready(cluster.is_ready, timeout_s=60)
        cluster.create_database(BENCH_DB, owner=PROXY_ROLE)
        env = {**os.environ, **self.direct().libpq_env()}
        out = subprocess.run(
            [str(self.pgbench), "-i", "-q", "-s", str(self.scale)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise StackError(f"pgbench -i failed: {out.stderr.strip()}")
        cluster.psql("VACUUM ANALYZE", dbname=BENCH_DB)
        return self

    def stop(self) -> None:
        self.cluster.stop()

    def direct(self) -> Endpoint:
        login = self.cluster.proxy_login
        return Endpoint(self.cluster.host, self.cluster.port, login.user, login.password)

    def server_version(self) -> str:
        return self.cluster.psql("SHOW server_version").strip()

    def login_role(self, name: str) -> str:
        """A login role with a fresh password and the bench tables' privileges (it is a
        member of the role that owns them); returns the password. Created once: every
        target that asks for it again (several pdp targets) gets the same password."""
        if name not in self._logins:
            password = secrets.token_urlsafe(18)
            self.cluster.psql(
                f"CREATE ROLE {name} LOGIN PASSWORD '{password}';\nGRANT {PROXY_ROLE} TO {name};\n"
            )
            self._logins[name] = password
        return self._logins[name]


class Target(Protocol):
    """A way to reach the bench database."""

    name: str
    description: str

    def start(self, db: BenchCluster, workdir: Path) -> Endpoint: ...

    def stop(self) -> None: ...

    @property
    def pid(self) -> int | None:
        """The process that relays the traffic, when there is one of its own."""
        ...

    @property
    def pdp_pid(self) -> int | None:
        """The PDP process behind the relay, when there is one (its CPU is counted apart:
        on this machine it shares the cores with everything else)."""
        ...


class DirectTarget:
    """pgbench straight to PostgreSQL over loopback TCP."""

    name = "direct"
    description = "PostgreSQL directly (TCP, SCRAM)"

    def start(self, db: BenchCluster, workdir: Path) -> Endpoint:
        return db.direct()

    def stop(self) -> None:
        pass

    @property
    def pid(self) -> int | None:
        return None

    pdp_pid = None


@dataclass
class PgBouncerTarget:
    """PgBouncer (the Debian package) in session mode, SCRAM both ways."""

    name: str = "pgbouncer"
    description: str = "PgBouncer, session pooling"
    process: ManagedProcess | None = None

    def start(self, db: BenchCluster, workdir: Path) -> Endpoint:
        if not Path(PGBOUNCER).is_file():
            raise StackError(f"{PGBOUNCER} not found: run scripts/bootstrap (it installs it)")
        home = workdir / "pgbouncer"
        home.mkdir(parents=True, exist_ok=True)
        upstream = db.direct()
        port = free_port()
        (home / "userlist.txt").write_text(f'"{upstream.user}" "{upstream.password}"\n')
        (home / "userlist.txt").chmod(0o600)
        (home / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{BENCH_DB} = host={upstream.host} port={upstream.port} dbname={BENCH_DB}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {home / 'userlist.txt'}\n"
            "pool_mode = session\n"
            "max_client_conn = 2000\n"
            "default_pool_size = 1100\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        # PgBouncer refuses to run as root; run it as the cluster's server user then.
        user = db.cluster.os_user
        if user:
            for path in (home, home / "userlist.txt", home / "pgbouncer.ini"):
                shutil.chown(path, user, user)
        self.process = ManagedProcess(
            "pgbouncer",
            [PGBOUNCER, str(home / "pgbouncer.ini")],
            log_path=home / "pgbouncer.log",
            user=user,
        )
        self.process.start()
        self.process.wait_ready(lambda: port_accepts("127.0.0.1", port), timeout_s=30)
        return Endpoint("127.0.0.1", port, upstream.user, upstream.password)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    pdp_pid = None


@dataclass
class UvloopRelayTarget:
    """A bare uvloop relay (``bench/uvloop_relay.py``): the floor for a relay in Python."""

    name: str = "uvloop-relay"
    description: str = "bare uvloop asyncio.Protocol relay, bytes only (bench/uvloop_relay.py)"
    process: ManagedProcess | None = None

    def start(self, db: BenchCluster, workdir: Path) -> Endpoint:
        upstream = db.direct()
        port = free_port()
        self.process = ManagedProcess(
            "uvloop-relay",
            [
                sys.executable,
                "-m",
                "bench.uvloop_relay",
                str(port),
                upstream.host,
                str(upstream.port),
            ],
            log_path=workdir / "uvloop-relay.log",
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.process.start()
        self.process.wait_ready(lambda: port_accepts("127.0.0.1", port), timeout_s=30)
        return Endpoint("127.0.0.1", port, upstream.user, upstream.password)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    pdp_pid = None


@dataclass
class PgwardenTarget:
    """The pgwarden proxy (``python -m pgwarden proxy``), a development token as the
    password. ``pythonpath`` runs the proxy from another source tree (a patched copy),
    so a proposed change is measured against the current code in the same run."""

    name: str = "pgwarden"
    description: str = 'pgwarden proxy, [decision] mode = "local" (in-process allow-all)'
    pythonpath: str | None = None
    subject: str = BENCH_SUBJECT
    groups: tuple[str, ...] = ("bench",)
    process: PgwardenProcess | None = None
    pdp: PdpProcess | None = None

    def decision_config(self, db: BenchCluster, workdir: Path) -> tuple[str, dict[str, str]]:
        """The proxy's ``[decision]`` section, and the upstream roles (name, password)
        its decisions may choose."""
        section = f'[decision]\nmode = "local"\nupstream_role = "{PROXY_ROLE}"\n'
        return section, {PROXY_ROLE: db.direct().password}

    def start(self, db: BenchCluster, workdir: Path) -> Endpoint:
        home = workdir / self.name
        home.mkdir(parents=True, exist_ok=True)
        tokens_file = home / "dev_tokens.toml"
        token = issue_dev_token(tokens_file, self.subject, self.groups)
        port = free_port()
        upstream = db.direct()
        decision, roles = self.decision_config(db, workdir)
        config = home / "proxy.toml"
        config.write_text(
            f'[proxy]\nlisten = "127.0.0.1"\nport = {port}\nproxy_id = "bench"\n\n'
            f'[upstream]\nhost = "{upstream.host}"\nport = {upstream.port}\n\n'
            + "".join(f'[upstream.roles.{r}]\npassword = "{p}"\n\n' for r, p in roles.items())
            + f'{decision}\n[auth]\ndev_tokens_file = "{tokens_file}"\n'
        )
        process = PgwardenProcess(
            "proxy", config, host="127.0.0.1", port=port, log_path=home / "proxy.log"
        )
        if self.pythonpath:
            # python -m puts the working directory first on sys.path: start it there.
            process.env = {**os.environ, "PYTHONPATH": self.pythonpath}
            process.cwd = Path(self.pythonpath)
        self.process = process
        process.start_and_wait()
        return Endpoint("127.0.0.1", port, self.subject, token)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self.pdp is not None:
            self.pdp.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def pdp_pid(self) -> int | None:
        return self.pdp.process.pid if self.pdp is not None else None


@dataclass
class PgwardenPdpTarget(PgwardenTarget):
    """pgwarden enforcing the policy pack: proxy -> PDP (``pgwarden pdp``) -> OPA loaded
    with ``policies/``, as ``human:dba`` (the profile that may run every pgbench
    statement; it connects as ``shop_dba``). Repeated statements are answered by the
    proxy's decision cache, warmed by the warm-up runs."""

    name: str = "pgwarden-pdp"
    description: str = "pgwarden proxy -> PDP -> OPA with policies/ (human:dba), decision cache"
    subject: str = "human:dba"
    groups: tuple[str, ...] = ("dba",)

    def decision_config(self, db: BenchCluster, workdir: Path) -> tuple[str, dict[str, str]]:
        # Fail-closed deadlines: 2 s in the proxy and 1.9 s for the PDP's OPA queries, not
        # the defaults of 250 and 200 ms. A new session's first statements are cache misses
        # (the cache key includes the session), and 64 sessions' misses at once on two
        # shared cores queue up in OPA; this measures throughput, not the deadlines
        # (docs/performance.md, "The pdp target at 64 clients").
        self.pdp = PdpProcess(
            policies=POLICIES, log_dir=workdir / self.name / "pdp", extra_opa={"timeout_ms": 1900}
        ).start()
        section = (
            f'[decision]\nmode = "pdp"\n\n[decision.pdp]\nendpoints = ["{self.pdp.address}"]\n'
            f'token = "{self.pdp.token}"\ndeadline_ms = 2000\n'
        )
        return section, {"shop_dba": db.login_role("shop_dba")}


TARGETS: dict[str, Callable[[], Target]] = {
    "direct": DirectTarget,
    "pgbouncer": PgBouncerTarget,
    "uvloop-relay": UvloopRelayTarget,
    "pgwarden": PgwardenTarget,
    "pgwarden-pdp": PgwardenPdpTarget,
}


def make_target(spec: str) -> Target:
    """A name from :data:`TARGETS`, or ``NAME=PYTHONPATH``: a pgwarden proxy
    named NAME run from another source tree (e.g. ``pgwarden-patched=/tmp/proto``), in
    ``local`` mode; ``pdp:NAME=PYTHONPATH`` the same as the ``pgwarden-pdp`` target (its
    own PDP and OPA, from this tree; the proxy from the other)."""
    if "=" in spec:
        name, path = spec.split("=", 1)
        pdp = name.startswith("pdp:")
        name = name.removeprefix("pdp:")
        if not (Path(path) / "pgwarden" / "__init__.py").is_file():
            raise SystemExit(f"target {spec!r}: {path}/pgwarden/__init__.py not found")
        if pdp:
            return PgwardenPdpTarget(
                name=name,
                description=f"pgwarden proxy from {path} -> PDP -> OPA with policies/",
                pythonpath=str(Path(path).resolve()),
            )
        return PgwardenTarget(
            name=name,
            description=f"pgwarden proxy from {path}, local decisions",
            pythonpath=str(Path(path).resolve()),
        )
    if spec not in TARGETS:
        raise SystemExit(f"unknown target {spec!r}: one of {', '.join(TARGETS)} or NAME=PATH")
    return TARGETS[spec]()


class ProcessStats:
    """RSS and CPU time of a process, from /proc."""

    CLOCK_TICKS: ClassVar[int] = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise StackError(f"no VmRSS for pid {self.pid}")

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU time so far: the process's own code, and the kernel's work
        for it (system calls; on loopback a socket write also delivers to the receiver)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
        return int(fields[11]) / self.CLOCK_TICKS, int(fields[12]) / self.CLOCK_TICKS
