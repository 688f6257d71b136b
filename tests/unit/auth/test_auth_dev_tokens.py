"""Development tokens: stored hashed, issued by a helper, mapped to an identity."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from auth_tokens import Build, SigningKey, auth_section

from pgwarden.config import ConfigError
from pgwarden.proxy.auth import (
    DEV_ISSUER,
    AgentAuthenticator,
    AuthConfig,
    AuthError,
    AuthFailure,
    DevTokens,
    issue_dev_token,
    new_dev_token,
)
from pgwarden.proxy.decision import Identity


def dev_only(tmp_path: Path, path: Path) -> AgentAuthenticator:
    return AgentAuthenticator(
        AuthConfig.from_section(auth_section(tmp_path, dev_tokens_file=str(path)))
    )


async def test_issued_token_authenticates_and_only_its_digest_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "dev.toml"
    reporting = issue_dev_token(path, "agent:reporting", ["analytics"])
    etl = issue_dev_token(path, "agent:etl", ["etl", "writers"])
    assert reporting != etl
    content = path.read_text()
    assert reporting not in content
    assert etl not in content
    assert hashlib.sha256(reporting.encode()).hexdigest() in content
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    authenticator = dev_only(tmp_path, path)
    assert await authenticator.authenticate(reporting) == Identity(
        subject="agent:reporting",
        issuer=DEV_ISSUER,
        groups=("analytics",),
        auth_method="dev_token",
    )
    assert (await authenticator.authenticate(etl)).groups == ("etl", "writers")


async def test_the_stored_digest_is_not_a_credential(tmp_path: Path) -> None:
    path = tmp_path / "dev.toml"
    token = issue_dev_token(path, "agent:reporting")
    digest = hashlib.sha256(token.encode()).hexdigest()
    with pytest.raises(AuthError) as info:
        await dev_only(tmp_path, path).authenticate(digest)
    assert info.value.code is AuthFailure.UNKNOWN_DEV_TOKEN


async def test_unknown_dev_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "dev.toml"
    issue_dev_token(path, "agent:reporting")
    wrong = "pgw_dev_" + "A" * 43
    with pytest.raises(AuthError) as info:
        await dev_only(tmp_path, path).authenticate(wrong)
    assert (info.value.code, info.value.sqlstate) == (AuthFailure.UNKNOWN_DEV_TOKEN, "28P01")
    assert wrong not in str(info.value)
    assert wrong not in info.value.message


async def test_dev_tokens_and_jwts_work_side_by_side(
    tmp_path: Path, build: Build, rsa_signer: SigningKey
) -> None:
    path = tmp_path / "dev.toml"
    token = issue_dev_token(path, "human:dba", ["dba"])
    authenticator = build(dev_tokens_file=str(path))
    assert (await authenticator.authenticate(token)).auth_method == "dev_token"
    assert (await authenticator.authenticate(rsa_signer.mint())).auth_method == "jwt"
    with pytest.raises(AuthError) as info:
        await authenticator.authenticate("pgw_dev_unknown")
    assert info.value.code is AuthFailure.MALFORMED_TOKEN


def test_new_dev_token_entry_round_trips_through_the_file(tmp_path: Path) -> None:
    token, entry = new_dev_token('agent:"quoted"\\name', ["a b", "é"])
    assert token.startswith("pgw_dev_")
    assert len(token) > 40
    path = tmp_path / "dev.toml"
    path.write_text(entry.to_toml())
    identity = DevTokens.load(path).lookup(token)
    assert identity is not None
    assert (identity.subject, identity.groups) == ('agent:"quoted"\\name', ("a b", "é"))


@pytest.mark.parametrize(
    ("content", "key", "fragment"),
    [
        ("[[tokens]]\nsha256 = 'abc'\nsubject = 's'\n", "tokens[0].sha256", "64 lowercase hex"),
        (f"[[tokens]]\nsha256 = '{'a' * 64}'\n", "tokens[0].subject", "is required"),
        (f"[[tokens]]\nsha256 = '{'a' * 64}'\nsubject = ''\n", "tokens[0].subject", "empty"),
        (
            f"[[tokens]]\nsha256 = '{'a' * 64}'\nsubject = 's'\ngroups = [1]\n",
            "tokens[0].groups",
            "non-empty strings",
        ),
        (
            f"[[tokens]]\nsha256 = '{'a' * 64}'\nsubject = 's'\ntoken = 'x'\n",
            "tokens[0].token",
            "unknown key",
        ),
        (
            f"[[tokens]]\nsha256 = '{'a' * 64}'\nsubject = 's'\n" * 2,
            "tokens[1].sha256",
            "listed twice",
        ),
        ("tokens = 3\n", "tokens", "must be list"),
        ("tokens = [\n", "", "not valid TOML"),
    ],
)
def test_bad_dev_tokens_file_names_the_file_and_key(
    tmp_path: Path, content: str, key: str, fragment: str
) -> None:
    path = tmp_path / "dev.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        dev_only(tmp_path, path)
    assert info.value.source == str(path)
    assert info.value.key == key
    assert fragment in str(info.value)


@pytest.mark.parametrize(("subject", "groups"), [("", []), ("s", [""])])
def test_new_dev_token_rejects_empty_names(subject: str, groups: list[str]) -> None:
    with pytest.raises(ValueError, match="must"):
        new_dev_token(subject, groups)
