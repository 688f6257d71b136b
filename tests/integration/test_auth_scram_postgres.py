"""The SCRAM-SHA-256 client against a real PostgreSQL: just the startup and the SASL
exchange over a raw socket, as the proxy's upstream connection speaks them."""

from __future__ import annotations

import secrets
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from pgwarden.proxy.auth import ScramClient, UpstreamAuthError
from pgwarden.stack.postgres import PostgresCluster

AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 10, 11, 12


class Wire:
    """The few PostgreSQL messages this test needs, over a blocking socket."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.sock = socket.create_connection((cluster.host, cluster.port), timeout=10)

    def close(self) -> None:
        self.sock.close()

    def startup(self, user: str) -> None:
        params = b"".join(
            k.encode() + b"\0" + v.encode() + b"\0"
            for k, v in (("user", user), ("database", "postgres"))
        )
        body = struct.pack("!i", 196608) + params + b"\0"  # StartupMessage, protocol 3.0
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)

    def send(self, type_: bytes, body: bytes) -> None:
        self.sock.sendall(type_ + struct.pack("!i", len(body) + 4) + body)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "server closed the connection"
            data += chunk
        return data

    def receive(self) -> tuple[bytes, bytes]:
        type_ = self._exactly(1)
        (length,) = struct.unpack("!i", self._exactly(4))
        return type_, self._exactly(length - 4)

    def authentication(self) -> tuple[int, bytes]:
        """The next Authentication* (B) message: its code and data."""
        type_, body = self.receive()
        if type_ == b"E":
            raise ServerError(error_fields(body))
        assert type_ == b"R", f"expected Authentication, got {type_!r}"
        (code,) = struct.unpack_from("!i", body)
        return code, body[4:]


class ServerError(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", ""))
        self.fields = fields


def error_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse (B) fields by their one-letter code."""
    return {f[:1].decode(): f[1:].decode() for f in body.split(b"\0") if f}


def scram_login(cluster: PostgresCluster, user: str, password: str) -> ScramClient:
    """Startup + SASL with our client; returns it once AuthenticationOk arrived."""
    wire = Wire(cluster)
    try:
        wire.startup(user)
        code, data = wire.authentication()
        assert code == AUTH_SASL
        mechanisms = [m.decode() for m in data.split(b"\0") if m]
        client = ScramClient(user, password)
        mechanism, first = client.initial_response(mechanisms)
        # SASLInitialResponse: mechanism, then the length-prefixed client-first-message.
        wire.send(b"p", mechanism.encode() + b"\0" + struct.pack("!i", len(first)) + first)
        code, data = wire.authentication()
        assert code == AUTH_SASL_CONTINUE
        wire.send(b"p", client.handle_continue(data))  # SASLResponse
        code, data = wire.authentication()
        assert code == AUTH_SASL_FINAL
        client.handle_final(data)
        assert client.done
        code, _ = wire.authentication()
        assert code == AUTH_OK
        wire.send(b"X", b"")  # Terminate
        return client
    finally:
        wire.close()


def test_scram_reaches_authentication_ok(pg_cluster: PostgresCluster) -> None:
    login = pg_cluster.proxy_login
    assert scram_login(pg_cluster, login.user, login.password).done


def test_wrong_password_gets_the_servers_error(pg_cluster: PostgresCluster) -> None:
    with pytest.raises(ServerError) as info:
        scram_login(pg_cluster, pg_cluster.proxy_login.user, "wrong-" + secrets.token_hex(8))
    assert info.value.fields["S"] == "FATAL"
    assert info.value.fields["C"] == "28P01"
    assert "password authentication failed" in info.value.fields["M"]


@pytest.fixture
def role_with_password(pg_cluster: PostgresCluster) -> Iterator[Callable[[str], str]]:
    """A throwaway login role whose password holds characters SASLprep changes."""
    created: list[str] = []

    def make(password: str) -> str:
        name = f"auth_scram_{secrets.token_hex(4)}"
        pg_cluster.psql(
            f"SET client_encoding = 'UTF8';\nCREATE ROLE {name} LOGIN PASSWORD $pw${password}$pw$;"
        )
        created.append(name)
        return name

    yield make
    for name in created:
        pg_cluster.psql(f"DROP ROLE IF EXISTS {name};")


@pytest.mark.parametrize(
    ("password", "same", "different"),
    [
        ("pässwörd", "pa\u0308sswo\u0308rd", "passwort"),  # NFKC composes the umlauts
        ("soft\u00adhyphen", "softhyphen", "soft-hyphen"),  # mapped to nothing
        ("roman-\u2168", "roman-IX", "roman-9"),  # NFKC compatibility
        ("nbsp\u00a0space", "nbsp space", "nbspspace"),  # non-ASCII space
        ("bidi\u200emark", None, "bidimark"),  # prohibited: the raw bytes count
    ],
    ids=["nfkc-compose", "mapped-to-nothing", "nfkc-compat", "non-ascii-space", "prohibited"],
)
def test_non_ascii_passwords_match_the_servers_saslprep(
    pg_cluster: PostgresCluster,
    role_with_password: Callable[[str], str],
    password: str,
    same: str | None,
    different: str,
) -> None:
    user = role_with_password(password)
    assert scram_login(pg_cluster, user, password).done
    if same is not None:
        assert scram_login(pg_cluster, user, same).done
    with pytest.raises(ServerError, match="password authentication failed"):
        scram_login(pg_cluster, user, different)


def test_server_final_from_an_impostor_is_refused(pg_cluster: PostgresCluster) -> None:
    """The real server's continue message, but a final signature from somebody else."""
    login = pg_cluster.proxy_login
    wire = Wire(pg_cluster)
    try:
        wire.startup(login.user)
        _, data = wire.authentication()
        client = ScramClient(login.user, login.password)
        mechanism, first = client.initial_response([m.decode() for m in data.split(b"\0") if m])
        wire.send(b"p", mechanism.encode() + b"\0" + struct.pack("!i", len(first)) + first)
        _, server_first = wire.authentication()
        wire.send(b"p", client.handle_continue(server_first))
        code, server_final = wire.authentication()
        assert code == AUTH_SASL_FINAL
        tampered = server_final[:-4] + (b"AAA=" if not server_final.endswith(b"AAA=") else b"BBB=")
        with pytest.raises(UpstreamAuthError) as info:
            client.handle_final(tampered)
        assert info.value.code == "scram_server_signature_mismatch"
        assert not client.done
    finally:
        wire.close()
