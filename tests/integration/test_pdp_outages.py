"""Fail closed: a dead, frozen or unreachable PDP or OPA refuses statements with its own
code, and the same client object works again once the part is back."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pgwarden.pdp.harness import PdpProcess, write_example_policy
from pgwarden.proxy.decision import Action, Decision, Identity, SessionFacts, Statement
from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig
from pgwarden.stack.opa import OpaServer
from pgwarden.stack.process import free_port, poll_until, poll_until_async

REPORTING = Identity("agent:reporting", "https://idp.example", ("analytics",), "jwt", {})
SESSION = SessionFacts("s-outage", "edge-1", "10.0.0.7", "shop", "psql", True, "")
DEADLINE_S = 0.25


def statement(command: str = "SELECT") -> Statement:
    """A fresh statement: never in the cache, so every decide asks the PDP."""
    return Statement.of({"fingerprint": uuid.uuid4().hex[:16], "command": command})


async def decide_timed(client: PdpClient) -> tuple[Decision, float]:
    started = time.monotonic()
    [decision] = await client.decide(REPORTING, SESSION, [statement()], in_transaction=False)
    return decision, time.monotonic() - started


async def until_allowed(client: PdpClient, *, timeout_s: float = 20.0) -> Decision:
    """Poll until the PDP answers again (the channel reconnects on its own)."""
    last: list[Decision] = []

    async def allowed() -> bool:
        decision, _ = await decide_timed(client)
        last[:] = [decision]
        return decision.action is Action.ALLOW

    await poll_until_async(allowed, timeout_s=timeout_s, what="the PDP answering again")
    return last[0]


def readyz_status(pdp: PdpProcess) -> int:
    try:
        with urllib.request.urlopen(f"{pdp.http_url}/readyz", timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return write_example_policy(tmp_path / "policies")


def client_for(*pdps: PdpProcess | str, token: str | None) -> PdpClient:
    addresses = tuple(p if isinstance(p, str) else p.address for p in pdps)
    return PdpClient(PdpClientConfig(addresses, deadline_s=DEADLINE_S, token=token))


async def test_kill_pdp_refuses_within_deadline_then_resumes(
    tmp_path: Path, policies: Path
) -> None:
    pdp = PdpProcess(policies=policies, log_dir=tmp_path / "logs").start()
    try:
        async with client_for(pdp, token=pdp.token) as client:
            assert (await decide_timed(client))[0].action is Action.ALLOW
            pdp.kill()
            decision, elapsed = await decide_timed(client)
            assert decision.action is Action.DENY
            assert decision.code == "pdp_unavailable"
            assert not decision.permits
            assert "[pdp_unavailable]" in decision.refusal_message()
            assert elapsed < 5 * DEADLINE_S
            grant = await client.open_session(REPORTING, SESSION)
            assert not grant.allowed
            assert "pdp_unavailable" in grant.reasons[0]
            assert client.stats()["refusals"]["pdp_unavailable"] >= 2

            pdp.start()  # same port, same config
            decision = await until_allowed(client)
            assert decision.code == ""
            assert (await client.open_session(REPORTING, SESSION)).allowed
    finally:
        pdp.stop()


async def test_failover_to_the_next_endpoint(tmp_path: Path, policies: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with PdpProcess(policies=policies, log_dir=tmp_path / "logs") as pdp:
        async with client_for(dead, pdp, token=pdp.token) as client:
            decision, elapsed = await decide_timed(client)
            assert decision.action is Action.ALLOW
            assert elapsed < 5 * DEADLINE_S
            assert client._preferred == 1
            assert (await decide_timed(client))[0].action is Action.ALLOW


async def test_silent_endpoint_fails_over_within_the_deadline(
    tmp_path: Path, policies: Path
) -> None:
    """A host that accepts TCP but never speaks HTTP/2 (no reset to fail fast on): the
    connection attempt times out (100 ms) inside the deadline and the call fails over;
    afterwards the client prefers the endpoint that is connected."""
    with socket.socket() as silent, PdpProcess(policies=policies, log_dir=tmp_path / "l") as pdp:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        async with client_for(address, pdp, token=pdp.token) as client:
            for _ in range(3):
                decision, elapsed = await decide_timed(client)
                assert decision.action is Action.ALLOW
                assert elapsed < 5 * DEADLINE_S
            assert client._preferred == 1


async def test_frozen_pdp_times_out_then_resumes(tmp_path: Path, policies: Path) -> None:
    with PdpProcess(policies=policies, log_dir=tmp_path / "logs") as pdp:
        async with client_for(pdp, token=pdp.token) as client:
            assert (await decide_timed(client))[0].action is Action.ALLOW
            pdp.process.send_signal(signal.SIGSTOP)
            try:
                decision, elapsed = await decide_timed(client)
            finally:
                pdp.process.send_signal(signal.SIGCONT)
            assert decision.code == "pdp_timeout"
            assert not decision.permits
            assert elapsed < 5 * DEADLINE_S
            await until_allowed(client)


async def test_external_opa_killed_refuses_then_resumes(
    tmp_path: Path, policies: Path, start_opa: Callable[..., OpaServer]
) -> None:
    opa = start_opa(policies)
    with PdpProcess(opa_url=opa.url, log_dir=tmp_path / "logs") as pdp:
        async with client_for(pdp, token=pdp.token) as client:
            before = await until_allowed(client)
            assert before.revision
            opa.process.kill()
            decision, elapsed = await decide_timed(client)
            assert decision.action is Action.DENY
            assert decision.code == "opa_unavailable"
            assert not decision.permits
            assert elapsed < 5 * DEADLINE_S
            # Operations see it too: /readyz 503 and gRPC health NOT_SERVING.
            assert readyz_status(pdp) == 503
            poll_until(lambda: not pdp.is_serving(), timeout_s=10, what="NOT_SERVING")
            opa.start()  # same port, same policies
            after = await until_allowed(client)
            assert after.revision == before.revision
            assert readyz_status(pdp) == 200


async def test_frozen_external_opa_times_out(
    tmp_path: Path, policies: Path, start_opa: Callable[..., OpaServer]
) -> None:
    opa = start_opa(policies)
    with PdpProcess(
        opa_url=opa.url, log_dir=tmp_path / "logs", extra_opa={"timeout_ms": 100}
    ) as pdp:
        config = PdpClientConfig((pdp.address,), deadline_s=2.0, token=pdp.token)
        async with PdpClient(config) as client:
            await until_allowed(client)
            opa.process.send_signal(signal.SIGSTOP)
            try:
                [decision] = await client.decide(
                    REPORTING, SESSION, [statement()], in_transaction=False
                )
            finally:
                opa.process.send_signal(signal.SIGCONT)
            assert decision.code == "opa_timeout"
            assert not decision.permits
            await until_allowed(client)


async def test_supervised_opa_crash_is_restarted(tmp_path: Path, policies: Path) -> None:
    with PdpProcess(policies=policies, log_dir=tmp_path / "logs") as pdp:
        async with client_for(pdp, token=pdp.token) as client:
            before = await until_allowed(client)
            [first] = pdp.log_records("opa_started")
            os.kill(first["pid"], signal.SIGKILL)
            poll_until(
                lambda: len(pdp.log_records("opa_started")) == 2,
                timeout_s=15,
                what="OPA restarted by the PDP",
            )
            [exited] = pdp.log_records("opa_exited")
            assert exited["pid"] == first["pid"]
            after = await until_allowed(client)
            assert after.revision == before.revision  # same snapshot, same revision
            assert len(pdp.log_records("revision")) == 1  # a restart is not a new revision
            assert pdp.process.exit_message() is None


async def test_mutual_tls_without_tokens(tmp_path: Path, policies: Path) -> None:
    tls = write_test_pki(tmp_path / "pki")
    ca, server_cert, server_key, client_cert, client_key, other_cert, other_key = tls
    pdp = PdpProcess(
        policies=policies,
        log_dir=tmp_path / "logs",
        tls=(server_cert, server_key, ca, client_cert, client_key),
    )
    with pdp:
        config = PdpClientConfig(
            (pdp.address,),
            deadline_s=2.0,
            ca_file=ca,
            cert_file=client_cert,
            key_file=client_key,
            server_name="pdp.test",
        )
        async with PdpClient(config) as client:
            assert (await decide_timed(client))[0].action is Action.ALLOW
        # A certificate from another CA: the handshake fails, nothing is decided.
        stranger = PdpClientConfig(
            (pdp.address,),
            deadline_s=2.0,
            ca_file=ca,
            cert_file=other_cert,
            key_file=other_key,
            server_name="pdp.test",
        )
        async with PdpClient(stranger) as client:
            decision, _ = await decide_timed(client)
        assert decision.code == "pdp_unavailable"
        assert not decision.permits
        # No client certificate at all.
        anonymous = PdpClientConfig(
            (pdp.address,), deadline_s=2.0, ca_file=ca, server_name="pdp.test"
        )
        async with PdpClient(anonymous) as client:
            decision, _ = await decide_timed(client)
        assert decision.code == "pdp_unavailable"


def write_test_pki(root: Path) -> tuple[Path, ...]:
    """A CA, a server certificate for pdp.test, a client certificate of that CA and one
    of another CA (cryptography, a pgwarden dependency)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    root.mkdir(parents=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def issue(
        ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], cn: str, server: bool
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca[1].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False
            )
        return key, builder.sign(ca[0], hashes.SHA256())

    ca = make_ca("pgwarden test CA")
    other_ca = make_ca("another CA")
    server = issue(ca, "pdp.test", True)
    client = issue(ca, "proxy edge-1", False)
    other = issue(other_ca, "intruder", False)
    return (
        write_cert(ca[1], root / "ca.crt"),
        write_cert(server[1], root / "server.crt"),
        write_key(server[0], root / "server.key"),
        write_cert(client[1], root / "client.crt"),
        write_key(client[0], root / "client.key"),
        write_cert(other[1], root / "other.crt"),
        write_key(other[0], root / "other.key"),
    )
