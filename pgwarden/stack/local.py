"""``pgwarden up``: the whole reference scenario on one machine, from embedded defaults.

A throwaway PostgreSQL with the ``shop`` database, the PDP supervising OPA with the shipped
policy pack, and a proxy with TLS (a self-signed certificate) and development tokens for
the three identities. Everything lives in one state directory; ``stack.json`` in it says
how to reach each part and holds the process ids that ``pgwarden down`` stops.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgwarden.pdp.harness import PdpProcess
from pgwarden.proxy.auth.dev_tokens import issue_dev_token
from pgwarden.stack import scenario
from pgwarden.stack.certs import write_self_signed
from pgwarden.stack.pgwarden_process import PgwardenProcess
from pgwarden.stack.postgres import PostgresCluster
from pgwarden.stack.process import ManagedProcess, StackError, free_port, poll_until

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
IDENTITIES: dict[str, list[str]] = {
    "agent:reporting": ["analytics"],
    "agent:etl": ["etl"],
    "human:dba": ["dba"],
}


def default_state_dir() -> Path:
    """The user's data directory; for root /var/lib/pgwarden, since PostgreSQL then runs
    as the ``postgres`` user, who cannot enter /root."""
    if os.geteuid() == 0:
        return Path("/var/lib/pgwarden")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pgwarden"


@dataclass
class Stack:
    """The running parts; ``info`` is what goes into ``stack.json``."""

    state_dir: Path
    cluster: PostgresCluster
    pdp: PdpProcess
    proxy: PgwardenProcess
    info: dict[str, Any]

    def processes(self) -> list[ManagedProcess]:
        return [self.proxy, self.pdp.process, self.cluster.server]

    def stop(self) -> None:
        """Stop the proxy, the PDP (and its OPA), then PostgreSQL; keep the state."""
        self.proxy.stop()
        self.pdp.stop()
        self.cluster.server.stop(signal.SIGINT, grace_s=30)
        (self.state_dir / "stack.json").unlink(missing_ok=True)


def start(
    state_dir: Path,
    *,
    proxy_port: int | None = None,
    policies: Path = POLICIES,
    proxy_settings: str = "",
) -> Stack:
    """Start everything; return when every part answers. On failure nothing is left
    running. ``proxy_settings``: more keys for the proxy's ``[proxy]`` table (TOML lines)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_file = state_dir / "stack.json"
    if stack_file.exists() and _alive(json.loads(stack_file.read_text())):
        raise StackError(
            f"a stack is already running from {state_dir}: pgwarden down --state-dir {state_dir}"
        )
    started: list[ManagedProcess] = []
    try:
        cluster = PostgresCluster(state_dir / "postgres", keep=True)
        cluster.start()
        started.append(cluster.server)
        logins = scenario.create_roles(cluster)
        if not scenario.shop_exists(cluster):
            scenario.create_shop(cluster)

        pdp = PdpProcess(policies=policies, log_dir=state_dir / "pdp")
        pdp.start()
        started.append(pdp.process)

        tokens_file = state_dir / "dev_tokens.toml"
        tokens_file.unlink(missing_ok=True)
        tokens = {s: issue_dev_token(tokens_file, s, g) for s, g in IDENTITIES.items()}
        tokens["agent:intruder"] = issue_dev_token(tokens_file, "agent:intruder", ["intruders"])
        cert, key = _certificate(state_dir / "tls")
        port = proxy_port or free_port()
        config = _write_proxy_config(
            state_dir,
            cluster=cluster,
            logins=logins,
            pdp=pdp,
            tokens_file=tokens_file,
            cert=cert,
            key=key,
            port=port,
            settings=proxy_settings,
        )
        proxy = PgwardenProcess(
            "proxy", config, host="127.0.0.1", port=port, log_path=state_dir / "proxy.log"
        )
        proxy.start_and_wait()
        started.append(proxy)
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    info = {
        "proxy": {
            "host": "127.0.0.1",
            "port": port,
            "database": scenario.DATABASE,
            "ca_file": str(cert),
            "log": str(state_dir / "proxy.log"),
        },
        "pdp": {"address": pdp.address, "http": pdp.http_url, "log": str(pdp.log_path)},
        "postgres": {
            "host": cluster.host,
            "port": cluster.port,
            "socket_dir": str(cluster.socket_dir),
        },
        "audit": {"file": str(pdp.log_dir / "audit.jsonl"), "pdp_log": str(pdp.log_path)},
        "tokens": tokens,
        "pids": {"proxy": proxy.pid, "pdp": pdp.process.pid, "postgres": cluster.server.pid},
    }
    stack_file.write_text(json.dumps(info, indent=2) + "\n")
    stack_file.chmod(0o600)  # it holds the development tokens
    return Stack(state_dir, cluster, pdp, proxy, info)


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    return write_self_signed(directory)


def _write_proxy_config(
    state_dir: Path,
    *,
    cluster: PostgresCluster,
    logins: dict[str, Any],
    pdp: PdpProcess,
    tokens_file: Path,
    cert: Path,
    key: Path,
    port: int,
    settings: str = "",
) -> Path:
    roles = "".join(
        f'[upstream.roles.{name}]\npassword = "{login.password}"\n\n'
        for name, login in logins.items()
    )
    config = state_dir / "proxy.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1"\nport = {port}\nproxy_id = "local"\n{settings}\n\n'
        f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nrequire = true\n\n'
        f'[upstream]\nhost = "{cluster.host}"\nport = {cluster.port}\n'
        f'sslmode = "verify-full"\nca_file = "{cluster.tls_cert}"\n\n{roles}'
        f'[decision]\nmode = "pdp"\n\n[decision.pdp]\nendpoints = ["{pdp.address}"]\n'
        f'token = "{pdp.token}"\n'
        # A first decision compiles OPA's query; on a busy laptop that can pass the
        # production default of 250 ms, and the tour should not fail on it.
        "deadline_ms = 2000\n\n"
        f'[auth]\ndev_tokens_file = "{tokens_file}"\n'
    )
    config.chmod(0o600)
    return config


def _alive(info: dict[str, Any]) -> bool:
    return any(_pid_alive(pid) for pid in info.get("pids", {}).values())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_detached(state_dir: Path, timeout_s: float = 30.0) -> list[str]:
    """``pgwarden down``: stop what ``stack.json`` names; return what was stopped."""
    stack_file = state_dir / "stack.json"
    if not stack_file.exists():
        raise StackError(f"no running stack in {state_dir} (no stack.json)")
    info = json.loads(stack_file.read_text())
    stopped = []
    # Proxy first (sessions end), then the PDP (it stops its OPA), then PostgreSQL.
    for name, sig in (
        ("proxy", signal.SIGTERM),
        ("pdp", signal.SIGTERM),
        ("postgres", signal.SIGINT),
    ):
        pid = info["pids"].get(name)
        if pid is None or not _pid_alive(pid):
            continue
        os.kill(pid, sig)
        try:
            _wait_exit(name, pid, timeout_s)
        except StackError:
            os.kill(pid, signal.SIGKILL)
            _wait_exit(name, pid, 5.0)
        stopped.append(name)
    stack_file.unlink()
    return stopped


def _wait_exit(name: str, pid: int, timeout_s: float) -> None:
    poll_until(lambda: not _pid_alive(pid), timeout_s=timeout_s, what=f"{name} (pid {pid}) to exit")
