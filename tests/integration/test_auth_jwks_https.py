"""JWKS over HTTPS against a real local aiohttp server with a self-signed certificate:
first-use fetch, cache, refresh on an unknown kid, the refresh rate limit, single flight,
and every way a fetch can fail."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

from pgwarden.config import Section
from pgwarden.proxy.auth import AgentAuthenticator, AuthConfig, AuthError, AuthFailure

ISSUER = "https://idp.test"
AUDIENCE = "pgwarden://it"
NOW = 1_800_000_000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Signer:
    kid: str
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    @property
    def jwk(self) -> dict[str, Any]:
        return {**json.loads(RSAAlgorithm.to_jwk(self.private.public_key())), "kid": self.kid}

    def mint(self, sub: str = "agent:etl") -> str:
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": NOW + 300}
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgwarden test IdP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("idp-tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class IdP:
    """The test identity provider: what /jwks.json serves, and how often it was asked."""

    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    status: int = 200
    body: bytes | None = None
    padding: int = 0
    redirect: str | None = None
    hang: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.entered.set()
        if self.hang is not None:
            await self.hang.wait()
        if self.redirect is not None:
            raise web.HTTPFound(self.redirect)
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        document = b" " * self.padding + json.dumps({"keys": self.keys}).encode()
        return web.Response(body=document, status=self.status, content_type="application/json")


@pytest.fixture
async def idp(tls_files: tuple[Path, Path]) -> AsyncIterator[IdP]:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    state = IdP()
    app = web.Application()
    app.router.add_get("/jwks.json", state.handle)
    app.router.add_get("/elsewhere.json", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"https://{host}:{port}/jwks.json"
    yield state
    if state.hang is not None:
        state.hang.set()
    await runner.cleanup()


Make = Callable[..., AgentAuthenticator]


@pytest.fixture
async def make(idp: IdP, tls_files: tuple[Path, Path], tmp_path: Path) -> AsyncIterator[Make]:
    """Authenticators trusting the test IdP over HTTPS; closed after the test."""
    built: list[AgentAuthenticator] = []

    def build(monotonic: Clock | None = None, *, trust: bool = True, **values: Any) -> Any:
        issuer: dict[str, Any] = {"issuer": ISSUER, "jwks_url": idp.url}
        if trust:
            issuer["ca_file"] = str(tls_files[0])
        values = {"audience": AUDIENCE, "issuers": [issuer], **values}
        section = Section(values, source=str(tmp_path / "pgwarden.toml"), prefix="auth")
        authenticator = AgentAuthenticator(
            AuthConfig.from_section(section),
            clock=Clock(NOW),
            monotonic=monotonic or Clock(100.0),
        )
        built.append(authenticator)
        return authenticator

    yield build
    for authenticator in built:
        await authenticator.close()


async def refused(authenticator: AgentAuthenticator, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await authenticator.authenticate(token)
    assert token not in str(info.value)
    return info.value


async def test_keys_are_fetched_on_first_use_then_served_from_the_cache(
    idp: IdP, make: Make
) -> None:
    signer = Signer("k1")
    idp.keys = [signer.jwk]
    authenticator = make()
    assert idp.hits == 0  # nothing fetched at start-up
    for n in range(5):
        identity = await authenticator.authenticate(signer.mint(f"agent:{n}"))
        assert (identity.subject, identity.issuer) == (f"agent:{n}", ISSUER)
    assert idp.hits == 1


async def test_warm_up_fetches_before_the_first_token(idp: IdP, make: Make) -> None:
    signer = Signer("k1")
    idp.keys = [signer.jwk]
    authenticator = make()
    await authenticator.warm_up()
    assert idp.hits == 1
    await authenticator.authenticate(signer.mint())
    assert idp.hits == 1


async def test_unknown_kid_refreshes_once_the_interval_allows(idp: IdP, make: Make) -> None:
    old, new = Signer("k1"), Signer("k2")
    idp.keys = [old.jwk]
    monotonic = Clock(100.0)
    authenticator = make(monotonic, jwks_refresh_interval_s=30)
    await authenticator.authenticate(old.mint())
    assert idp.hits == 1

    idp.keys = [old.jwk, new.jwk]  # the IdP rotates
    err = await refused(authenticator, new.mint())  # within 30 s of the last fetch
    assert err.code is AuthFailure.UNKNOWN_KID
    assert idp.hits == 1

    monotonic.now += 30
    assert (await authenticator.authenticate(new.mint())).subject == "agent:etl"
    assert idp.hits == 2
    await authenticator.authenticate(old.mint())
    assert idp.hits == 2


async def test_random_kids_cannot_hammer_the_idp(idp: IdP, make: Make) -> None:
    signer = Signer("k1")
    idp.keys = [signer.jwk]
    monotonic = Clock(100.0)
    authenticator = make(monotonic, jwks_refresh_interval_s=60)
    await authenticator.authenticate(signer.mint())
    monotonic.now += 60

    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = [
        jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": NOW + 60},
            attacker,
            algorithm="RS256",
            headers={"kid": uuid.uuid4().hex},
        )
        for _ in range(50)
    ]
    errors = await asyncio.gather(
        *(authenticator.authenticate(t) for t in tokens), return_exceptions=True
    )
    assert all(isinstance(e, AuthError) and e.code is AuthFailure.UNKNOWN_KID for e in errors)
    assert idp.hits == 2  # one refresh for fifty unknown kids

    for token in tokens[:10]:
        await refused(authenticator, token)
    assert idp.hits == 2
    monotonic.now += 59.9
    await refused(authenticator, tokens[0])
    assert idp.hits == 2
    monotonic.now += 0.1
    await refused(authenticator, tokens[0])
    assert idp.hits == 3
    assert (await authenticator.authenticate(signer.mint())).subject == "agent:etl"


async def test_concurrent_first_uses_share_one_fetch(idp: IdP, make: Make) -> None:
    signer = Signer("k1")
    idp.keys = [signer.jwk]
    idp.hang = asyncio.Event()
    authenticator = make()
    pending = [asyncio.ensure_future(authenticator.authenticate(signer.mint())) for _ in range(20)]
    await idp.entered.wait()
    idp.hang.set()
    identities = await asyncio.gather(*pending)
    assert {i.subject for i in identities} == {"agent:etl"}
    assert idp.hits == 1


async def test_stale_keys_are_refreshed_in_the_background(idp: IdP, make: Make) -> None:
    old, new = Signer("k1"), Signer("k2")
    idp.keys = [old.jwk]
    monotonic = Clock(100.0)
    authenticator = make(monotonic, jwks_cache_s=300, jwks_refresh_interval_s=30)
    await authenticator.authenticate(old.mint())
    idp.keys = [new.jwk]  # old key revoked at the IdP

    monotonic.now += 300
    await authenticator.authenticate(old.mint())  # stale keys still verify, no waiting
    await authenticator.wait_background()
    assert idp.hits == 2
    assert (await refused(authenticator, old.mint())).code is AuthFailure.UNKNOWN_KID
    assert (await authenticator.authenticate(new.mint())).subject == "agent:etl"
    assert idp.hits == 2


async def test_untrusted_certificate_means_no_keys(idp: IdP, make: Make) -> None:
    signer = Signer("k1")
    idp.keys = [signer.jwk]
    err = await refused(make(trust=False), signer.mint())
    assert (err.code, err.sqlstate) == (AuthFailure.JWKS_UNAVAILABLE, "57P03")
    assert idp.hits == 0  # the TLS handshake failed before any request


async def test_http_error_keeps_the_previous_keys(idp: IdP, make: Make) -> None:
    old, new = Signer("k1"), Signer("k2")
    idp.keys = [old.jwk]
    monotonic = Clock(100.0)
    authenticator = make(monotonic)
    await authenticator.authenticate(old.mint())
    idp.keys, idp.status = [new.jwk], 503
    monotonic.now += 30
    assert (await refused(authenticator, new.mint())).code is AuthFailure.UNKNOWN_KID
    assert idp.hits == 2
    assert (await authenticator.authenticate(old.mint())).subject == "agent:etl"


async def test_first_fetch_failure_is_57P03_and_rate_limited(idp: IdP, make: Make) -> None:
    signer = Signer("k1")
    idp.keys, idp.status = [signer.jwk], 500
    monotonic = Clock(100.0)
    authenticator = make(monotonic)
    for _ in range(3):
        err = await refused(authenticator, signer.mint())
        assert (err.code, err.sqlstate) == (AuthFailure.JWKS_UNAVAILABLE, "57P03")
    assert idp.hits == 1
    idp.status = 200
    monotonic.now += 30
    assert (await authenticator.authenticate(signer.mint())).subject == "agent:etl"
    assert idp.hits == 2


async def test_fetch_timeout(idp: IdP, make: Make) -> None:
    signer = Signer("k1")
    idp.keys = [signer.jwk]
    idp.hang = asyncio.Event()  # never set during the test: the IdP does not answer
    err = await refused(make(jwks_timeout_s=0.2), signer.mint())
    assert err.code is AuthFailure.JWKS_UNAVAILABLE
    assert idp.hits == 1


async def test_redirects_are_not_followed(idp: IdP, make: Make) -> None:
    signer = Signer("k1")
    idp.keys = [signer.jwk]
    idp.redirect = "/elsewhere.json"
    err = await refused(make(), signer.mint())
    assert err.code is AuthFailure.JWKS_UNAVAILABLE
    assert idp.hits == 1


@pytest.mark.parametrize(
    "body",
    [b"[" * 10 + b"]" * 10, b"not json", b'{"keys": []}'],
    ids=["not-an-object", "not-json", "no-keys"],
)
async def test_unusable_documents_are_refused(idp: IdP, make: Make, body: bytes) -> None:
    idp.body = body
    err = await refused(make(), Signer("k1").mint())
    assert err.code is AuthFailure.JWKS_UNAVAILABLE


async def test_jwks_over_one_mib_is_refused(idp: IdP, make: Make) -> None:
    signer = Signer("k1")
    idp.keys = [signer.jwk]
    idp.padding = 1 << 20  # valid JSON, just too large
    assert (await refused(make(), signer.mint())).code is AuthFailure.JWKS_UNAVAILABLE
    idp.padding = (1 << 20) - len(json.dumps({"keys": idp.keys})) - 1
    monotonic_free = make(jwks_refresh_interval_s=0)
    assert (await monotonic_free.authenticate(signer.mint())).subject == "agent:etl"
