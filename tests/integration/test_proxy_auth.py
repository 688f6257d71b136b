"""Issue 3, acceptance 4: bad tokens are refused (28P01/28000 with a clear message) and
the upstream never sees a connection for them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer
from tests.integration.conftest import ProxyUnderTest

ISSUER = "https://idp.test"
AUDIENCE = "pgwarden-test"


class Issuer:
    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
        self.jwks_file = directory / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [jwk]}))

    def token(self, *, key: rsa.RSAPrivateKey | None = None, **claims: object) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "agent:reporting",
            "groups": ["analytics"],
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def jwt_proxy(make_proxy: Callable[..., ProxyUnderTest], issuer: Issuer) -> ProxyUnderTest:
    auth = (
        f'audience = "{AUDIENCE}"\nleeway_s = 5\n\n'
        f'[[auth.issuers]]\nissuer = "{ISSUER}"\njwks_file = "{issuer.jwks_file}"\n'
    )
    return make_proxy(name="jwt-proxy", auth=auth)


def connections_seen_upstream(proxy: ProxyUnderTest) -> int:
    return (
        (proxy.cluster.base_dir / "postgres.log")
        .read_text()
        .count("connection authorized: user=pgwarden_proxy")
    )


def connect(proxy: ProxyUnderTest, token: str) -> None:
    dsn = f"host={proxy.host} port={proxy.port} dbname=proxytest user=agent sslmode=disable"
    with psycopg.connect(dsn, password=token) as conn:
        conn.execute("SELECT 1")


def alg_none(issuer: Issuer) -> str:
    now = int(time.time())
    return jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "agent:reporting", "exp": now + 300},
        None,
        algorithm="none",
    )


def hmac_with_public_key(issuer: Issuer) -> str:
    # Algorithm confusion: HS256 keyed with the issuer's public key bytes.
    import base64
    import hashlib
    import hmac

    pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")  # noqa: E731
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64(
        json.dumps(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "agent:reporting", "exp": now + 300}
        ).encode()
    )
    signature = b64(hmac.new(pem, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


BAD_TOKENS: dict[str, tuple[Callable[[Issuer], str], str, str]] = {
    "expired": (
        lambda i: i.token(exp=int(time.time()) - 60, iat=int(time.time()) - 600),
        "28P01",
        "expired",
    ),
    "not yet valid": (lambda i: i.token(nbf=int(time.time()) + 600), "28P01", "not valid yet"),
    "wrong audience": (lambda i: i.token(aud="someone-else"), "28P01", "audience"),
    "wrong signature": (lambda i: i.token(key=i.other_key), "28P01", "signature"),
    "alg none": (alg_none, "28P01", "algorithm"),
    "hmac with the public key": (hmac_with_public_key, "28P01", "algorithm"),
    "unknown issuer": (lambda i: i.token(iss="https://evil.test"), "28000", "issuer"),
    "garbage": (lambda i: "not-a-token", "28P01", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_is_refused_before_any_upstream_connection(
    jwt_proxy: ProxyUnderTest,
    issuer: Issuer,
    case: str,
) -> None:
    make_token, sqlstate, phrase = BAD_TOKENS[case]
    token = make_token(issuer)
    before = connections_seen_upstream(jwt_proxy)
    with pytest.raises(psycopg.OperationalError) as info:
        connect(jwt_proxy, token)
    message = str(info.value)
    assert phrase.lower() in message.lower()
    assert token not in message
    assert connections_seen_upstream(jwt_proxy) == before
    assert token not in jwt_proxy.process.log_path.read_text()
    fatal = raw_login(jwt_proxy, token)
    assert (fatal.fields["S"], fatal.sqlstate) == ("FATAL", sqlstate)
    assert connections_seen_upstream(jwt_proxy) == before


def raw_login(proxy: ProxyUnderTest, token: str) -> m.ErrorResponse:
    """Log in speaking the protocol by hand, to read the FATAL's exact SQLSTATE."""
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
        s.sendall(m.build_startup_message({"user": "agent", "database": "proxytest"}))
        frames = FrameBuffer(1 << 16)
        while True:
            msg = frames.next_message()
            if msg is None:
                data = s.recv(4096)
                assert data, "proxy closed without an ErrorResponse"
                frames.feed(data)
                continue
            type_, body = msg
            if type_ == b"R":
                assert m.parse_authentication(body).code == m.AUTH_CLEARTEXT
                s.sendall(m.build_password_message(token.encode() + b"\0"))
            else:
                assert type_ == b"E"
                return m.parse_error_response(body)


def test_valid_token_gets_in(jwt_proxy: ProxyUnderTest, issuer: Issuer) -> None:
    before = connections_seen_upstream(jwt_proxy)
    connect(jwt_proxy, issuer.token())
    assert connections_seen_upstream(jwt_proxy) > before


def test_dev_token_of_another_proxy_is_refused(
    jwt_proxy: ProxyUnderTest, proxy: ProxyUnderTest
) -> None:
    with pytest.raises(psycopg.OperationalError, match=r"password authentication failed|token"):
        connect(jwt_proxy, proxy.tokens["agent:reporting"])
