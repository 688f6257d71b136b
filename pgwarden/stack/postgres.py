"""A throwaway PostgreSQL cluster: initdb in a temporary directory, a free port on
loopback, the unix socket beside the data, SCRAM-SHA-256 over TCP, removed at the end."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pgwarden.stack.certs import write_self_signed
from pgwarden.stack.process import ManagedProcess, StackError, free_port

PROXY_ROLE = "pgwarden_proxy"
SUPERUSER = "postgres"
INSTALL_HINT = (
    "install the PostgreSQL server package (Debian/Ubuntu: apt-get install postgresql), "
    "or put the directory holding initdb and postgres on PATH"
)


def find_bindir() -> Path:
    """The newest PostgreSQL bin directory holding both ``initdb`` and ``postgres``."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    for name in ("initdb", "postgres"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found).resolve().parent)
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for d in candidates:
        if (d / "initdb").is_file() and (d / "postgres").is_file():
            return d
    raise StackError(f"PostgreSQL server binaries not found: {INSTALL_HINT}")


def _server_user() -> str | None:
    """The OS user that runs initdb/postgres: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as: "
            + INSTALL_HINT
        ) from None
    return "postgres"


@dataclass(frozen=True)
class Login:
    """Credentials of a login role over TCP."""

    user: str
    password: str


class PostgresCluster:
    """A throwaway cluster. ``start()`` runs initdb and the server; ``stop()`` removes it all."""

    def __init__(
        self, base_dir: Path | None = None, *, port: int | None = None, keep: bool = False
    ) -> None:
        self.bindir = find_bindir()
        self.os_user = _server_user()
        self._own_dir = base_dir is None
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="pgwarden-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.keep = keep
        self.proxy_login = Login(PROXY_ROLE, secrets.token_urlsafe(18))
        self.server = ManagedProcess(
            "postgres",
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                f"listen_addresses={self.host}",
            ],
            log_path=self.base_dir / "postgres.log",
            user=self.os_user,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PostgresCluster:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)
        if self.os_user:
            shutil.chown(self.base_dir, self.os_user, self.os_user)
            reachable = subprocess.run(
                ["test", "-w", str(self.base_dir)], user=self.os_user, check=False
            )
            if reachable.returncode != 0:
                raise StackError(
                    f"PostgreSQL runs as the '{self.os_user}' user, who cannot reach "
                    f"{self.base_dir}: choose a directory whose parents it may traverse "
                    "(e.g. under /var/lib or /tmp)"
                )
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
            self._enable_tls()
        self.server.start()
        self.server.wait_ready(self.is_ready, timeout_s=60)
        self._ensure_proxy_role()
        return self

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
        self.server.stop(signal.SIGINT, grace_s=30)
        if self._own_dir and not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connecting ------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", login: Login | None = None) -> str:
        """A libpq URI: TCP with ``login``'s password, else the superuser over the socket."""
        if login is None:
            return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port}"
        return f"postgresql://{login.user}:{login.password}@{self.host}:{self.port}/{dbname}"

    def is_ready(self) -> bool:
        out = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                "-q",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
            ],
            check=False,
            capture_output=True,
        )
        return out.returncode == 0

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket (SQL on stdin, never in argv)."""
        out = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                dbname,
            ],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise StackError(f"psql failed on {dbname}: {out.stderr.strip()}")
        return out.stdout

    def create_database(self, name: str, owner: str = SUPERUSER) -> None:
        self.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')

    # -- internals -------------------------------------------------------------------------

    def _initdb(self) -> None:
        out = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            user=self.os_user,
        )
        if out.returncode != 0:
            raise StackError(f"initdb failed: {out.stderr.strip() or out.stdout.strip()}")
        # Throwaway cluster: durability is not needed, speed and visibility are.
        settings = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "password_encryption": "'scram-sha-256'",
            "log_connections": "on",
            "log_disconnections": "on",
            "log_line_prefix": "'%m [%p] %u@%d '",
            "shared_buffers": "128MB",
        }
        with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        # Local socket: trust, for the harness's superuser. TCP: SCRAM only, never trust.
        hba = (
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        (self.data_dir / "pg_hba.conf").write_text(hba)

    @property
    def tls_cert(self) -> Path:
        """The server's self-signed certificate: the CA for ``sslmode=verify-full``."""
        return self.data_dir / "server.crt"

    def _enable_tls(self) -> None:
        cert, key = write_self_signed(self.data_dir / "tls")
        shutil.move(cert, self.tls_cert)
        shutil.move(key, self.data_dir / "server.key")
        if self.os_user:
            for f in (self.tls_cert, self.data_dir / "server.key", self.data_dir / "tls"):
                shutil.chown(f, self.os_user, self.os_user)
        with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write("ssl = on\n")

    def _ensure_proxy_role(self) -> None:
        password = self.proxy_login.password.replace("'", "''")
        self.psql(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PROXY_ROLE}') "
            f"THEN CREATE ROLE {PROXY_ROLE} LOGIN; END IF; END $$;\n"
            f"ALTER ROLE {PROXY_ROLE} PASSWORD '{password}';\n"
        )
