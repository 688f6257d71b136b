"""A running reference-scenario stack (``pgwarden.stack.local``) for end-to-end tests."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg

from pgwarden.stack import local
from pgwarden.stack.process import poll_until
from tests.integration.wiretap import WiretapProcess, jsonl_records, reconcile


def stack_state_dir() -> Path:
    """A state directory PostgreSQL's own user can reach when the tests run as root."""
    base = Path(tempfile.mkdtemp(prefix="pgwarden-stack-", dir="/tmp"))
    base.chmod(0o711)
    return base


def dsn(stack: local.Stack, subject: str, **params: str) -> str:
    proxy = stack.info["proxy"]
    extra = "".join(f" {k}={v}" for k, v in params.items())
    return (
        f"host={proxy['host']} port={proxy['port']} dbname={proxy['database']} "
        f"user={subject} password={stack.info['tokens'][subject]} sslmode=verify-full "
        f"sslrootcert={proxy['ca_file']}{extra}"
    )


async def asyncpg_connect(stack: local.Stack, subject: str) -> asyncpg.Connection:
    """An asyncpg session through the stack's proxy as ``subject`` (TLS, verified)."""
    proxy = stack.info["proxy"]
    return await asyncpg.connect(
        host=proxy["host"],
        port=proxy["port"],
        user=subject,
        password=stack.info["tokens"][subject],
        database=proxy["database"],
        ssl=ssl.create_default_context(cafile=proxy["ca_file"]),
    )


@contextlib.contextmanager
def running_stack(policy_copy: Path, proxy_settings: str = "") -> Iterator[local.Stack]:
    """The reference scenario behind a wiretap (``proxy_settings``: more ``[proxy]`` keys);
    once stopped, its audit store must hold every statement its clients saw end, once."""
    base = stack_state_dir()
    running = local.start(base / "state", policies=policy_copy, proxy_settings=proxy_settings)
    proxy = running.info["proxy"]
    tls = (running.state_dir / "tls" / "cert.pem", running.state_dir / "tls" / "key.pem")
    tap = WiretapProcess(base, (proxy["host"], proxy["port"]), tls=tls)
    try:
        tap.start_and_wait()
        # The tests reach the proxy through the tap.
        running.info = {**running.info, "proxy": {**proxy, "port": tap.port}}
        yield running
    finally:
        running.stop()
        tap.stop()
    # Every statement the clients saw end is in the PDP's audit store, once.
    audit = Path(running.info["audit"]["file"])
    records = jsonl_records(audit)
    problems = reconcile(tap.connections(), records)
    shutil.rmtree(base, ignore_errors=True)
    assert not problems, f"{audit} against {tap.out}:\n" + "\n".join(problems)


def until_allowed(
    conn: psycopg.Connection, query: str, refusals: list[psycopg.Error] | None = None
) -> list[tuple[object, ...]]:
    """The rows of ``query`` once the proxy allows it (it may first refuse a relation its
    catalog does not know yet, and read the catalog again; at most every 5 s); the
    refusals met on the way are added to ``refusals``."""
    rows: list[list[tuple[object, ...]]] = []

    def allowed() -> bool:
        try:
            rows.append(conn.execute(query).fetchall())
        except psycopg.Error as exc:
            if refusals is not None:
                refusals.append(exc)
            return False
        return True

    poll_until(allowed, timeout_s=20, what=f"the proxy allowing {query}")
    return rows[0]


def until_refused(conn: psycopg.Connection, query: str) -> str:
    """The error of ``query`` once the proxy refuses it."""
    errors: list[str] = []

    def refused() -> bool:
        try:
            conn.execute(query).fetchall()
        except psycopg.Error as exc:
            errors.append(str(exc))
            return True
        return False

    poll_until(refused, timeout_s=20, what=f"the proxy refusing {query}")
    return errors[0]
