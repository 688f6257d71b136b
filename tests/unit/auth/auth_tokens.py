"""Keys, JWKS files and token minting for the agent-authentication tests (no network).

A plain module with a name of its own (not imported from ``conftest``), so it cannot
clash with another folder's test helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from pgwarden.config import Section
from pgwarden.proxy.auth import AgentAuthenticator

ISSUER = "https://idp.example"
AUDIENCE = "pgwarden://edge-1"
NOW = 1_800_000_000.0


class FakeClock:
    """A settable clock: ``clock()`` returns ``clock.now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SigningKey:
    """A private key, its public JWK (with ``kid``) and a token minter."""

    def __init__(self, private: Any, public_jwk: dict[str, Any], alg: str, kid: str) -> None:
        self.private = private
        self.alg = alg
        self.kid = kid
        self.jwk = {**public_jwk, "kid": kid}

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        alg: str | None = None,
        headers: Mapping[str, Any] | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "agent:reporting",
            "iat": int(NOW) - 10,
            "exp": int(NOW) + 300,
            "groups": ["analytics"],
        }
        payload.update(claims or {})
        for name in drop:
            payload.pop(name, None)
        head = {"kid": self.kid, **(headers or {})}
        head = {k: v for k, v in head.items() if v is not None}  # {"kid": None}: no kid
        return jwt.encode(payload, self.private, algorithm=alg or self.alg, headers=head)


def rsa_key(kid: str = "rsa-1", alg: str = "RS256") -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return SigningKey(private, public, alg, kid)


def ec_key(kid: str = "ec-1") -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    return SigningKey(private, public, "ES256", kid)


def ed_key(kid: str = "ed-1") -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    public = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    return SigningKey(private, public, "EdDSA", kid)


def write_jwks(path: Path, *keys: SigningKey | Mapping[str, Any]) -> Path:
    jwks = [k.jwk if isinstance(k, SigningKey) else dict(k) for k in keys]
    path.write_text(json.dumps({"keys": jwks}))
    return path


def auth_section(tmp_path: Path, **values: Any) -> Section:
    """An ``[auth]`` section as the config loader would hand it over."""
    return Section(values, source=str(tmp_path / "pgwarden.toml"), prefix="auth")


Build = Callable[..., AgentAuthenticator]  # the ``build`` fixture
