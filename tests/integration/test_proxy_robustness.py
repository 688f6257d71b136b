"""Issue 3: TLS and startup corners, malformed and oversized input, timeouts, graceful
shutdown, and memory under a slow reader, all against the real proxy process."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.proxy.protocol import messages as m
from pgwarden.stack.certs import write_self_signed
from pgwarden.stack.postgres import PostgresCluster
from pgwarden.stack.process import port_accepts
from tests.integration.conftest import TEST_DB, ProxyUnderTest
from tests.integration.rawpg import RawClient


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_proxy(
    make_proxy: Callable[..., ProxyUnderTest], certificate: tuple[Path, Path]
) -> ProxyUnderTest:
    cert, key = certificate
    return make_proxy(
        f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nrequire = true\n', name="tls-proxy"
    )


def test_tls_is_terminated_and_verified_by_the_client(
    tls_proxy: ProxyUnderTest,
    certificate: tuple[Path, Path],
) -> None:
    dsn = tls_proxy.dsn(sslmode="verify-full", sslrootcert=str(certificate[0]))
    with psycopg.connect(dsn.replace("127.0.0.1", "localhost")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (100,)


def test_require_tls_refuses_plaintext(tls_proxy: ProxyUnderTest) -> None:
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        psycopg.connect(tls_proxy.dsn(sslmode="disable")).close()


def test_plaintext_from_loopback_when_explicitly_allowed(
    make_proxy: Callable[..., ProxyUnderTest],
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    proxy = make_proxy(
        f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nrequire = true\n'
        "allow_plaintext_loopback = true\n",
        name="loopback-proxy",
    )
    with psycopg.connect(proxy.dsn(sslmode="disable")) as conn:
        assert not conn.pgconn.ssl_in_use


def test_gssenc_request_is_refused_cleanly_and_startup_goes_on(proxy: ProxyUnderTest) -> None:
    with RawClient(proxy.host, proxy.port) as c:
        c.send((8).to_bytes(4, "big") + m.GSSENC_REQUEST_CODE.to_bytes(4, "big"))
        assert c.recv_byte() == b"N"
        types = c.login("agent", proxy.tokens["agent:reporting"], TEST_DB)
    assert types[0] == b"R"
    assert types[-1] == b"Z"


def test_newer_minor_version_gets_negotiate_protocol_version(proxy: ProxyUnderTest) -> None:
    with RawClient(proxy.host, proxy.port) as c:
        c.send(
            m.build_startup_message(
                {"user": "a", "database": TEST_DB, "_pq_.future": "1"}, version=(3 << 16) | 2
            )
        )
        msg = c.read()
        assert msg is not None
        assert msg[0] == b"v"
        assert msg[1] == (0).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"_pq_.future\0"
        assert c.answer_password(proxy.tokens["agent:reporting"])[-1] == b"Z"


@pytest.mark.parametrize(
    ("params", "phrase", "code"),
    [
        ({"options": "-c role=postgres"}, "'options' is not allowed", "parameter_refused"),
        (
            {"standard_conforming_strings": "off"},
            "'standard_conforming_strings' is not allowed",
            "parameter_refused",
        ),
        (
            {"replication": "database"},
            "replication connections are not allowed",
            "replication_refused",
        ),
    ],
)
def test_startup_parameters_that_bypass_inspection_are_refused_and_audited(
    proxy: ProxyUnderTest,
    params: dict[str, str],
    phrase: str,
    code: str,
) -> None:
    def refusals() -> list[dict[str, Any]]:
        return [r for r in proxy.audit_records() if r["kind"] == "auth_refused"]

    before = len(refusals())
    with RawClient(proxy.host, proxy.port) as c:
        c.send(m.build_startup_message({"user": "a", "database": TEST_DB, **params}))
        err = c.error()
        assert c.read() is None
    assert err.fields["S"] == "FATAL"
    assert phrase in err.message
    proxy.process.wait_ready(lambda: len(refusals()) > before)
    [record] = refusals()[before:]
    assert record["auth"]["code"] == code
    assert record["auth"]["sqlstate"] == err.sqlstate
    assert record["client_port"] > 0


def upstream_backends(proxy: ProxyUnderTest) -> int:
    out = proxy.cluster.psql(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE usename = 'pgwarden_proxy' AND backend_type = 'client backend'"
    )
    return int(out)


def test_malformed_input_is_fatal_and_closes_the_upstream(proxy: ProxyUnderTest) -> None:
    before = upstream_backends(proxy)
    with RawClient(proxy.host, proxy.port) as c:
        c.login("a", proxy.tokens["agent:reporting"], TEST_DB)
        proxy.cluster.server.wait_ready(lambda: upstream_backends(proxy) == before + 1)
        c.send(b"\x01\x00\x00\x00\x08junk")
        err = c.error()
        assert c.read() is None
    assert (err.fields["S"], err.sqlstate) == ("FATAL", "08P01")
    proxy.cluster.server.wait_ready(lambda: upstream_backends(proxy) == before)


def test_oversized_message_is_fatal(make_proxy: Callable[..., ProxyUnderTest]) -> None:
    small = make_proxy("", name="small-proxy", proxy_settings="max_message_size = 4096\n")
    with RawClient(small.host, small.port) as c:
        c.login("a", small.tokens["agent:reporting"], TEST_DB)
        c.send(m.build_query("SELECT '" + "x" * 10000 + "'"))
        err = c.error()
    assert err.sqlstate == "08P01"
    assert "exceeds the maximum of 4096" in err.message
    # The session's audit record says why the proxy ended it.
    small.process.wait_ready(
        lambda: any(r["kind"] == "session_close" for r in small.audit_records())
    )
    [closed] = [r for r in small.audit_records() if r["kind"] == "session_close"]
    assert closed["session_stats"]["reason"].startswith("FATAL 08P01: protocol violation")


def test_a_statement_longer_than_the_proxy_analyzes_is_refused_and_the_session_goes_on(
    proxy: ProxyUnderTest,
) -> None:
    """256 KiB by default: analysis holds the proxy's event loop about 2 us per byte."""
    values = ",".join(f"({i})" for i in range(40000))  # 278,893 bytes of SQL
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f"SELECT count(*) FROM (VALUES {values}) v(a)")
        assert caught.value.sqlstate == "54000"
        assert "max_statement_bytes = 262144" in str(caught.value)
        half = ",".join(f"({i})" for i in range(20000))
        assert conn.execute(f"SELECT count(*) FROM (VALUES {half}) v(a)").fetchone() == (20000,)


def test_function_call_message_is_refused_and_the_session_goes_on(proxy: ProxyUnderTest) -> None:
    with RawClient(proxy.host, proxy.port) as c:
        c.login("a", proxy.tokens["agent:reporting"], TEST_DB)
        # FunctionCall of oid 1598 (random()), no arguments, text result.
        c.send(m.frame(b"F", (1598).to_bytes(4, "big") + b"\0\0\0\0\0\0"))
        replies = c.read_until(b"Z")
        assert [t for t, _ in replies] == [b"E", b"Z"]
        err = m.parse_error_response(replies[0][1])
        assert err.sqlstate == "42501"
        assert "FunctionCall" in err.message
        c.send(m.build_query("SELECT 1"))
        assert [t for t, _ in c.read_until(b"Z")] == [b"T", b"D", b"C", b"Z"]


def test_startup_timeout(make_proxy: Callable[..., ProxyUnderTest]) -> None:
    quick = make_proxy("", name="quick-proxy", proxy_settings="startup_timeout_s = 0.5\n")
    with RawClient(quick.host, quick.port) as c:
        c.send(m.build_startup_message({"user": "a", "database": TEST_DB}))
        err = c.error()  # no password is ever sent
    assert err.sqlstate == "08006"
    assert "did not finish in time" in err.message
    quick.process.wait_ready(lambda: bool(quick.audit_records()))
    [refused] = quick.audit_records()
    assert (refused["kind"], refused["auth"]["code"]) == ("auth_refused", "startup_timeout")


def test_idle_timeout(make_proxy: Callable[..., ProxyUnderTest]) -> None:
    idle = make_proxy("", name="idle-proxy", proxy_settings="idle_timeout_s = 0.5\n")
    with RawClient(idle.host, idle.port) as c:
        c.login("a", idle.tokens["agent:reporting"], TEST_DB)
        err = c.error()
    assert err.sqlstate == "57P05"


def test_graceful_shutdown(make_proxy: Callable[..., ProxyUnderTest]) -> None:
    proxy = make_proxy("", name="shutdown-proxy", proxy_settings="shutdown_grace_s = 30\n")
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait_ready(lambda: not port_accepts(proxy.host, proxy.listen_port))
        # The session that was open keeps working during the grace period.
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)
    proxy.process.wait_ready(lambda: proxy.process.exit_message() is not None)
    assert proxy.process.stop() == 0


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


# Bytes of a one-gigabyte result: 1,000,000 rows of 1,000 characters.
ROWS, WIDTH = 1_000_000, 1000
MEMORY_BOUND_KIB = 32 * 1024  # docs/proxy.md: growth of the proxy's peak RSS per reader


@pytest.mark.timeout(300)
def test_slow_reader_of_one_gigabyte_keeps_proxy_memory_bounded(
    make_proxy: Callable[..., ProxyUnderTest],
) -> None:
    proxy = make_proxy("", name="bulk-proxy")
    with RawClient(proxy.host, proxy.port, timeout_s=60) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.login("a", proxy.tokens["agent:reporting"], TEST_DB)
        baseline = vm_kib(proxy.process.pid, "VmHWM")
        c.send(m.build_query(f"SELECT repeat('x', {WIDTH}) FROM generate_series(1, {ROWS})"))
        c.frames.feed(c.sock.recv(65536))
        # Stop reading: the server keeps producing, the proxy must stop reading from it.
        samples: list[int] = []

        def settled() -> bool:
            samples.append(vm_kib(proxy.process.pid, "VmRSS"))
            return len(samples) > 50 and len(set(samples[-50:])) == 1

        proxy.process.wait_ready(settled, timeout_s=60)
        paused_rss = samples[-1]
        rows = size = 0
        while True:  # now read everything as fast as we can
            msg = c.read()
            assert msg is not None
            if msg[0] == b"D":
                size += len(msg[1])
                rows += 1
            elif msg[0] == b"Z":
                break
        peak = vm_kib(proxy.process.pid, "VmHWM")
    assert (rows, size) == (ROWS, ROWS * (WIDTH + 6))  # 6: column count and value length
    assert paused_rss - baseline < MEMORY_BOUND_KIB
    assert peak - baseline < MEMORY_BOUND_KIB, f"peak grew by {peak - baseline} KiB"


@pytest.mark.parametrize("sslmode", ["require", "verify-full"])
def test_upstream_over_tls(
    make_proxy: Callable[..., ProxyUnderTest], pg_cluster: PostgresCluster, sslmode: str
) -> None:
    settings = f'sslmode = "{sslmode}"\nca_file = "{pg_cluster.tls_cert}"\n'
    proxy = make_proxy(name=f"upstream-tls-{sslmode}", upstream_settings=settings)
    with psycopg.connect(proxy.dsn()) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)


def test_upstream_verify_full_refuses_an_unknown_ca(
    make_proxy: Callable[..., ProxyUnderTest],
    certificate: tuple[Path, Path],
) -> None:
    settings = f'sslmode = "verify-full"\nca_file = "{certificate[0]}"\n'
    proxy = make_proxy(name="upstream-bad-ca", upstream_settings=settings)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(proxy.dsn()).close()


def test_a_client_that_drops_mid_result_leaves_a_record_of_what_it_was_sent(
    proxy: ProxyUnderTest,
) -> None:
    with RawClient(proxy.host, proxy.port) as c:
        c.login("a", proxy.tokens["agent:reporting"], TEST_DB, application_name="dropper")
        c.send(m.build_query("SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g"))
        received = 0
        while received < 1000:  # read some rows, then hang up without a word
            message = c.read()
            assert message is not None
            received += message[0] == b"D"

    def interrupted() -> list[dict[str, Any]]:
        return [
            r
            for r in proxy.audit_records()
            if r["application_name"] == "dropper" and r["kind"] == "statement"
        ]

    proxy.process.wait_ready(lambda: bool(interrupted()))
    [record] = interrupted()
    assert record["outcome"]["status"] == "interrupted"
    assert received <= record["outcome"]["rows"] < 1_000_000
    assert record["outcome"]["bytes_sent"] >= received * 115  # DataRow of (int, 100 chars)
