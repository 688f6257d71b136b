"""Agent authentication with workload tokens: claims to Identity, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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
    ec_key,
    ed_key,
    rsa_key,
    write_jwks,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from pgwarden.config import ConfigError
from pgwarden.proxy.auth import AgentAuthenticator, AuthError, AuthFailure
from pgwarden.proxy.decision import Identity


async def refused(authenticator: AgentAuthenticator, token: str) -> AuthError:
    """The AuthError for ``token``, checked to carry no part of the token."""
    with pytest.raises(AuthError) as info:
        await authenticator.authenticate(token)
    err = info.value
    signature = token.rsplit(".", 1)[-1]
    for text in (str(err), repr(err), err.message, json.dumps(dict(err.context))):
        assert token not in text
        if len(signature) > 8:
            assert signature not in text
    # No chained PyJWT exception (whose text a traceback would show) rides along.
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__
    return err


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


def claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "agent:reporting",
        "exp": int(NOW) + 300,
        **extra,
    }


# -- accepted tokens ---------------------------------------------------------------------------


async def test_valid_token_becomes_identity_with_only_allowlisted_claims(
    build: Build, rsa_signer: SigningKey
) -> None:
    authenticator = build(claims_allowlist=["tenant", "absent"])
    token = rsa_signer.mint({"tenant": "shop", "email": "a@example.com", "groups": ["a", "b"]})
    identity = await authenticator.authenticate(token)
    assert identity == Identity(
        subject="agent:reporting",
        issuer=ISSUER,
        groups=("a", "b"),
        auth_method="jwt",
        claims={"tenant": "shop"},
    )


async def test_groups_from_configured_claim_as_space_separated_string(
    build: Build, rsa_signer: SigningKey
) -> None:
    authenticator = build(groups_claim="scope")
    identity = await authenticator.authenticate(rsa_signer.mint({"scope": "etl  read etl"}))
    assert identity.groups == ("etl", "read")


async def test_missing_groups_claim_means_no_groups(build: Build, rsa_signer: SigningKey) -> None:
    identity = await build().authenticate(rsa_signer.mint(drop=("groups",)))
    assert identity.groups == ()


@pytest.mark.parametrize("groups", [{"a": 1}, [1, 2], ["ok", ""], 7])
async def test_groups_claim_of_wrong_type_is_refused(
    build: Build, rsa_signer: SigningKey, groups: object
) -> None:
    err = await refused(build(), rsa_signer.mint({"groups": groups}))
    assert err.code is AuthFailure.INVALID_CLAIM


@pytest.mark.parametrize(
    ("signer", "alg"),
    [(ec_key(), "ES256"), (rsa_key("ps", "PS256"), "PS256"), (ed_key(), "EdDSA")],
    ids=["ES256", "PS256", "EdDSA"],
)
async def test_other_asymmetric_algorithms_verify(
    build: Build, signer: SigningKey, alg: str
) -> None:
    authenticator = build(signer, algorithms=[alg])
    identity = await authenticator.authenticate(signer.mint({"sub": f"agent:{alg}"}))
    assert identity.subject == f"agent:{alg}"


async def test_audience_list_containing_ours_is_accepted(
    build: Build, rsa_signer: SigningKey
) -> None:
    identity = await build().authenticate(rsa_signer.mint({"aud": ["other", AUDIENCE]}))
    assert identity.subject == "agent:reporting"


async def test_token_without_kid_uses_the_issuers_only_key(
    build: Build, rsa_signer: SigningKey
) -> None:
    token = rsa_signer.mint(headers={"kid": None})
    assert "kid" not in json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert (await build().authenticate(token)).subject == "agent:reporting"


async def test_time_claims_use_the_leeway(
    build: Build, rsa_signer: SigningKey, clock: FakeClock
) -> None:
    authenticator = build(leeway_s=30)
    token = rsa_signer.mint({"exp": int(NOW), "nbf": int(NOW) + 20})
    clock.now = NOW + 29  # expired 29 s ago: within the leeway; nbf is in the past
    assert (await authenticator.authenticate(token)).subject == "agent:reporting"
    clock.now = NOW + 30  # exactly the leeway: expired
    assert (await refused(authenticator, token)).code is AuthFailure.TOKEN_EXPIRED
    clock.now = NOW - 11  # nbf 31 s ahead: beyond the leeway
    assert (await refused(authenticator, token)).code is AuthFailure.TOKEN_NOT_YET_VALID
    clock.now = NOW - 9  # nbf 29 s ahead: within the leeway
    assert (await authenticator.authenticate(token)).subject == "agent:reporting"


# -- refused tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "drop", "code"),
    [
        ({"exp": int(NOW) - 31}, (), AuthFailure.TOKEN_EXPIRED),
        ({"nbf": int(NOW) + 31}, (), AuthFailure.TOKEN_NOT_YET_VALID),
        ({"iat": int(NOW) + 31}, (), AuthFailure.TOKEN_NOT_YET_VALID),
        ({"aud": "pgwarden://another-proxy"}, (), AuthFailure.WRONG_AUDIENCE),
        ({"aud": ["a", "b"]}, (), AuthFailure.WRONG_AUDIENCE),
        ({}, ("aud",), AuthFailure.MISSING_CLAIM),
        ({}, ("exp",), AuthFailure.MISSING_CLAIM),
        ({}, ("sub",), AuthFailure.MISSING_CLAIM),
        ({}, ("iss",), AuthFailure.MISSING_CLAIM),
        ({"sub": ""}, (), AuthFailure.INVALID_CLAIM),
        ({"exp": "tomorrow"}, (), AuthFailure.INVALID_CLAIM),
        ({"exp": True}, (), AuthFailure.INVALID_CLAIM),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "issued-in-the-future",
        "wrong-audience",
        "audience-list-without-ours",
        "missing-aud",
        "missing-exp",
        "missing-sub",
        "missing-iss",
        "empty-sub",
        "exp-not-a-number",
        "exp-boolean",
    ],
)
async def test_claim_problems_are_refused_with_28P01(
    build: Build,
    rsa_signer: SigningKey,
    changes: dict[str, Any],
    drop: tuple[str, ...],
    code: AuthFailure,
) -> None:
    err = await refused(build(leeway_s=30), rsa_signer.mint(changes, drop=drop))
    assert err.code is code
    assert err.sqlstate == "28P01"


async def test_wrong_audience_message_names_the_expected_one(
    build: Build, rsa_signer: SigningKey
) -> None:
    err = await refused(build(), rsa_signer.mint({"aud": "elsewhere"}))
    assert AUDIENCE in err.message


async def test_signature_by_another_key_with_the_same_kid_is_refused(
    build: Build, rsa_signer: SigningKey
) -> None:
    forger = rsa_key(kid=rsa_signer.kid)
    err = await refused(build(), forger.mint())
    assert (err.code, err.sqlstate) == (AuthFailure.BAD_SIGNATURE, "28P01")


async def test_tampered_payload_is_refused(build: Build, rsa_signer: SigningKey) -> None:
    header, _, signature = rsa_signer.mint().split(".")
    forged_payload = b64(json.dumps(claims(sub="human:dba", groups=["dba"])).encode())
    err = await refused(build(), f"{header}.{forged_payload}.{signature}")
    assert err.code is AuthFailure.BAD_SIGNATURE


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
async def test_alg_none_is_refused(build: Build, rsa_signer: SigningKey, alg: str) -> None:
    token = unsigned({"alg": alg, "typ": "JWT", "kid": rsa_signer.kid}, claims()) + "."
    err = await refused(build(), token)
    assert (err.code, err.sqlstate) == (AuthFailure.ALG_NOT_ALLOWED, "28P01")


async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    build: Build, rsa_signer: SigningKey
) -> None:
    # The classic algorithm confusion: the attacker HMACs with the *public* key as secret.
    public_pem = rsa_signer.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": rsa_signer.kid}, claims())
    mac = hmac.digest(public_pem, signing_input.encode(), hashlib.sha256)
    token = f"{signing_input}.{b64(mac)}"
    authenticator = build(algorithms=["RS256", "ES256", "PS256"])
    err = await refused(authenticator, token)
    assert (err.code, err.sqlstate) == (AuthFailure.ALG_NOT_ALLOWED, "28P01")
    # Even past the allow-list, the RSA key is bound to RSA algorithms only.
    keys = authenticator.issuer_keys(ISSUER).current
    assert keys is not None
    assert keys.find(rsa_signer.kid, "HS256") is None
    assert {alg for _, alg in keys.keys} <= {"RS256", "PS256"}


async def test_algorithm_outside_the_allow_list_is_refused(build: Build) -> None:
    signer = rsa_key(kid="rsa-384", alg="RS384")
    err = await refused(build(signer), signer.mint())
    assert err.code is AuthFailure.ALG_NOT_ALLOWED


async def test_unknown_issuer_is_refused_with_28000(build: Build, rsa_signer: SigningKey) -> None:
    err = await refused(build(), rsa_signer.mint({"iss": "https://evil.example"}))
    assert (err.code, err.sqlstate) == (AuthFailure.UNKNOWN_ISSUER, "28000")
    assert err.context["issuer"] == "https://evil.example"


async def test_unknown_kid_is_refused(build: Build, rsa_signer: SigningKey) -> None:
    stranger = rsa_key(kid="rsa-unknown")
    err = await refused(build(rsa_signer), stranger.mint())
    assert (err.code, err.sqlstate) == (AuthFailure.UNKNOWN_KID, "28P01")


async def test_ec_token_naming_an_rsa_kid_is_refused(build: Build, rsa_signer: SigningKey) -> None:
    ec = ec_key(kid="ec-1")
    token = ec.mint(headers={"kid": rsa_signer.kid})
    err = await refused(build(rsa_signer, ec, algorithms=["RS256", "ES256"]), token)
    assert err.code is AuthFailure.KEY_ALG_MISMATCH


async def test_weak_rsa_key_never_verifies(build: Build) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa_key(kid="weak")
    weak.private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    weak.jwk = {**json.loads(RSAAlgorithm.to_jwk(weak.private.public_key())), "kid": "weak"}
    with pytest.warns(UserWarning, match="key"):  # PyJWT warns when *signing* with it
        token = weak.mint()
    err = await refused(build(weak), token)
    assert (err.code, err.sqlstate) == (AuthFailure.INVALID_TOKEN, "28P01")


async def test_key_that_names_its_alg_verifies_only_that_alg(build: Build) -> None:
    signer = rsa_key(kid="rs-only", alg="PS256")
    signer.jwk["alg"] = "RS256"
    err = await refused(build(signer, algorithms=["RS256", "PS256"]), signer.mint())
    assert err.code is AuthFailure.KEY_ALG_MISMATCH


async def test_token_without_kid_is_refused_when_the_issuer_has_several_keys(
    build: Build, rsa_signer: SigningKey
) -> None:
    authenticator = build(rsa_signer, rsa_key(kid="rsa-2"))
    err = await refused(authenticator, rsa_signer.mint(headers={"kid": None}))
    assert err.code is AuthFailure.MISSING_KID


@pytest.mark.parametrize(
    "token",
    ["not-a-jwt", "a.b.c", "...", "eyJhbGciOiJSUzI1NiJ9.e30.%%%%", "x" * 20000, "\0.\0.\0"],
    ids=["word", "garbage-segments", "empty-segments", "bad-base64", "too-long", "nul"],
)
async def test_malformed_tokens_are_refused(build: Build, token: str) -> None:
    err = await refused(build(), token)
    assert (err.code, err.sqlstate) == (AuthFailure.MALFORMED_TOKEN, "28P01")


async def test_empty_password_is_refused(build: Build) -> None:
    with pytest.raises(AuthError) as info:
        await build().authenticate("")
    assert info.value.code is AuthFailure.MALFORMED_TOKEN


# -- the issuer's key set ----------------------------------------------------------------------


async def test_jwks_symmetric_encryption_and_broken_keys_are_never_used(
    build: Build, rsa_signer: SigningKey
) -> None:
    oct_key = {"kty": "oct", "kid": "hmac", "k": b64(b"secret-secret-secret-secret-32by")}
    enc_key = {**rsa_key(kid="enc").jwk, "use": "enc"}
    odd = [
        {"kid": "no-kty"},
        {"kty": "EC", "crv": "P-999", "kid": "odd-curve", "x": "AA", "y": "AA"},
        {**rsa_key(kid="x").jwk, "kid": 7},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
    ]
    authenticator = build(rsa_signer, oct_key, enc_key, *odd)
    keys = authenticator.issuer_keys(ISSUER).current
    assert keys is not None
    assert keys.kids == frozenset({rsa_signer.kid})


async def test_jwks_private_members_are_not_loaded(build: Build) -> None:
    signer = rsa_key(kid="leaky")
    signer.jwk = {**json.loads(RSAAlgorithm.to_jwk(signer.private)), "kid": "leaky"}
    assert "d" in signer.jwk
    authenticator = build(signer)
    keys = authenticator.issuer_keys(ISSUER).current
    assert keys is not None
    key = keys.find("leaky", "RS256")
    assert key is not None
    assert isinstance(key.key, RSAPublicKey)
    assert (await authenticator.authenticate(signer.mint())).subject == "agent:reporting"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"keys": "nope"}', "not a JWKS"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "no usable signature key"),
    ],
)
def test_bad_jwks_file_is_a_config_error_naming_key_and_file(
    tmp_path: Path, build: Build, content: str, problem: str
) -> None:
    jwks = tmp_path / "bad.json"
    jwks.write_text(content)
    with pytest.raises(ConfigError) as info:
        build(issuers=[{"issuer": ISSUER, "jwks_file": str(jwks)}])
    assert info.value.key == "auth.issuers[0].jwks_file"
    assert info.value.source == str(tmp_path / "pgwarden.toml")
    assert str(jwks) in str(info.value)
    assert problem in str(info.value)


def test_jwks_file_over_one_mib_is_a_config_error(tmp_path: Path, build: Build) -> None:
    jwks = tmp_path / "huge.json"
    jwks.write_text(" " * (1 << 20) + json.dumps({"keys": [rsa_key().jwk]}))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        build(issuers=[{"issuer": ISSUER, "jwks_file": str(jwks)}])


def test_missing_jwks_file_is_a_config_error(tmp_path: Path, build: Build) -> None:
    with pytest.raises(ConfigError, match=r"auth\.issuers\[0\]\.jwks_file: .*missing\.json"):
        build(issuers=[{"issuer": ISSUER, "jwks_file": str(tmp_path / "missing.json")}])


async def test_unknown_kid_rereads_the_jwks_file_at_most_once_per_interval(
    tmp_path: Path, build: Build, rsa_signer: SigningKey, monotonic: FakeClock
) -> None:
    authenticator = build(rsa_signer, jwks_refresh_interval_s=30)
    keys = authenticator.issuer_keys(ISSUER)
    rotated = rsa_key(kid="rsa-2")
    write_jwks(tmp_path / "jwks.json", rsa_signer, rotated)

    assert (await authenticator.authenticate(rotated.mint())).subject == "agent:reporting"
    assert keys.fetches == 1

    stranger = rsa_key(kid="random-kid")
    for _ in range(5):
        assert (await refused(authenticator, stranger.mint())).code is AuthFailure.UNKNOWN_KID
    assert keys.fetches == 1  # rate-limited: no re-read

    monotonic.now += 30
    assert (await refused(authenticator, stranger.mint())).code is AuthFailure.UNKNOWN_KID
    assert keys.fetches == 2


async def test_stale_keys_still_verify_and_are_replaced_in_the_background(
    tmp_path: Path, build: Build, rsa_signer: SigningKey, monotonic: FakeClock
) -> None:
    authenticator = build(rsa_signer, jwks_cache_s=600)
    keys = authenticator.issuer_keys(ISSUER)
    successor = rsa_key(kid="rsa-2")
    write_jwks(tmp_path / "jwks.json", successor)  # the IdP revoked rsa-1

    await authenticator.authenticate(rsa_signer.mint())
    await authenticator.wait_background()
    assert keys.fetches == 0  # not stale yet: no I/O

    monotonic.now += 600
    assert (await authenticator.authenticate(rsa_signer.mint())).subject == "agent:reporting"
    await authenticator.wait_background()
    assert keys.fetches == 1
    assert (await refused(authenticator, rsa_signer.mint())).code is AuthFailure.UNKNOWN_KID
    assert (await authenticator.authenticate(successor.mint())).subject == "agent:reporting"
    await authenticator.close()
