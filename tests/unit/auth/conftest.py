"""Fixtures for the agent-authentication tests: keys, clocks, an authenticator factory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from auth_tokens import (
    AUDIENCE,
    ISSUER,
    NOW,
    Build,
    FakeClock,
    SigningKey,
    auth_section,
    rsa_key,
    write_jwks,
)

from pgwarden.proxy.auth import AgentAuthenticator, AuthConfig


@pytest.fixture(scope="session")
def rsa_signer() -> SigningKey:
    return rsa_key()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def monotonic() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def build(tmp_path: Path, clock: FakeClock, monotonic: FakeClock, rsa_signer: SigningKey) -> Build:
    """An authenticator trusting ``ISSUER`` with a JWKS file (default: the RSA key);
    keyword arguments override ``[auth]`` keys."""

    def make(*keys: SigningKey | Mapping[str, Any], **values: Any) -> AgentAuthenticator:
        jwks = write_jwks(tmp_path / "jwks.json", *(keys or (rsa_signer,)))
        values.setdefault("audience", AUDIENCE)
        values.setdefault("issuers", [{"issuer": ISSUER, "jwks_file": str(jwks)}])
        config = AuthConfig.from_section(auth_section(tmp_path, **values))
        return AgentAuthenticator(config, clock=clock, monotonic=monotonic)

    return make
