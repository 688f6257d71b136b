"""Issue 3, acceptance 3: a client cancel cancels its own upstream query, and a cancel
with another session's key or a made-up key cancels nothing."""

from __future__ import annotations

import socket
import threading

import psycopg
import pytest

from pgwarden.proxy.protocol import messages as m
from tests.integration.conftest import ProxyUnderTest


def send_cancel(proxy: ProxyUnderTest, pid: int, secret: int) -> None:
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
        s.sendall(m.build_cancel_request(pid, secret))
        assert s.recv(1) == b""  # the proxy closes without answering, as PostgreSQL does


def upstream_pid(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]


def log_count(proxy: ProxyUnderTest, event: str) -> int:
    return proxy.process.log_path.read_text().count(f'"event": "{event}"')


@pytest.mark.timeout(60)
def test_own_cancel_stops_the_query(proxy: ProxyUnderTest) -> None:
    with psycopg.connect(proxy.dsn()) as conn:
        errors: list[BaseException] = []

        def sleep() -> None:
            try:
                conn.execute("SELECT pg_sleep(30)")
            except psycopg.errors.QueryCanceled as exc:
                errors.append(exc)

        worker = threading.Thread(target=sleep)
        worker.start()
        proxy.cluster.server.wait_ready(lambda: active_sleeps(proxy) == 1, timeout_s=10)
        conn.cancel()
        worker.join(20)
        assert not worker.is_alive()
        assert len(errors) == 1
        assert "canceling statement due to user request" in str(errors[0])
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def active_sleeps(proxy: ProxyUnderTest) -> int:
    out = proxy.cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
        "AND query LIKE 'SELECT pg_sleep(%'"
    )
    return int(out.strip())


@pytest.mark.timeout(60)
def test_foreign_and_made_up_keys_cancel_nothing(proxy: ProxyUnderTest) -> None:
    with psycopg.connect(proxy.dsn()) as busy, psycopg.connect(proxy.dsn()) as other:
        result: list[object] = []
        worker = threading.Thread(
            target=lambda: result.append(busy.execute("SELECT pg_sleep(2), 'done'").fetchone())
        )
        worker.start()
        proxy.cluster.server.wait_ready(lambda: active_sleeps(proxy) == 1, timeout_s=10)
        ignored_before = log_count(proxy, "cancel_unknown_key")
        other.cancel()  # the other session's own (valid) key: cancels nothing running
        send_cancel(proxy, 12345, 67890)  # made up
        # The proxy's cancel keys are not the upstream's: sending the upstream pid is
        # just another made-up key.
        send_cancel(proxy, upstream_pid(other), 0)
        proxy.process.wait_ready(
            lambda: log_count(proxy, "cancel_unknown_key") == ignored_before + 2, timeout_s=10
        )
        worker.join(20)
        assert result == [("", "done")]
