"""The [auth] section: defaults, relative paths, and errors that name the key and the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from auth_tokens import AUDIENCE, ISSUER, auth_section

from pgwarden.config import ConfigError, Section
from pgwarden.proxy.auth import AgentAuthenticator, AuthConfig

REPO = Path(__file__).resolve().parents[3]
ALL_KEYS = {
    "audience",
    "algorithms",
    "leeway_s",
    "groups_claim",
    "claims_allowlist",
    "jwks_timeout_s",
    "jwks_refresh_interval_s",
    "jwks_cache_s",
    "dev_tokens_file",
    "issuers",
    "issuer",
    "jwks_file",
    "jwks_url",
    "ca_file",
}


def minimal(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "audience": AUDIENCE,
        "issuers": [{"issuer": ISSUER, "jwks_file": "jwks.json"}],
    }
    base.update(values)
    return base


def test_defaults(tmp_path: Path) -> None:
    config = AuthConfig.from_section(auth_section(tmp_path, **minimal()))
    assert config.audience == AUDIENCE
    assert config.algorithms == ("RS256", "ES256")
    assert config.leeway_s == 30
    assert config.groups_claim == "groups"
    assert config.claims_allowlist == ()
    assert config.jwks_timeout_s == 5.0
    assert config.jwks_refresh_interval_s == 30.0
    assert config.jwks_cache_s == 3600.0
    assert config.dev_tokens_file is None
    (issuer,) = config.issuers
    assert (issuer.issuer, issuer.jwks_url, issuer.ca_file) == (ISSUER, None, None)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    values = minimal(
        dev_tokens_file="dev/tokens.toml",
        issuers=[
            {"issuer": ISSUER, "jwks_file": "keys/jwks.json"},
            {"issuer": "https://b", "jwks_url": "https://b/jwks", "ca_file": "/etc/ca.pem"},
        ],
    )
    section = Section(values, source=str(tmp_path / "conf" / "pgwarden.toml"), prefix="auth")
    config = AuthConfig.from_section(section)
    assert config.issuers[0].jwks_file == tmp_path / "conf" / "keys" / "jwks.json"
    assert config.issuers[1].ca_file == Path("/etc/ca.pem")
    assert config.dev_tokens_file == tmp_path / "conf" / "dev" / "tokens.toml"


def test_durations_accept_integers_and_floats(tmp_path: Path) -> None:
    config = AuthConfig.from_section(
        auth_section(tmp_path, **minimal(jwks_timeout_s=2, jwks_refresh_interval_s=0.5))
    )
    assert (config.jwks_timeout_s, config.jwks_refresh_interval_s) == (2.0, 0.5)


def test_dev_tokens_alone_need_no_issuer_nor_audience(tmp_path: Path) -> None:
    config = AuthConfig.from_section(auth_section(tmp_path, dev_tokens_file="dev.toml"))
    assert config.issuers == ()
    assert config.audience is None


@pytest.mark.parametrize(
    ("values", "key", "fragment"),
    [
        (minimal(algorithms=["HS256"]), "auth.algorithms", "never accepted"),
        (minimal(algorithms=["RS256", "none"]), "auth.algorithms", "never accepted"),
        (minimal(algorithms=["RS1"]), "auth.algorithms", "not a supported algorithm"),
        (minimal(algorithms=[]), "auth.algorithms", "at least one"),
        (minimal(algorithms="RS256"), "auth.algorithms", "must be list"),
        (minimal(leeway_s=301), "auth.leeway_s", "between 0 and 300"),
        (minimal(leeway_s=-1), "auth.leeway_s", "between 0 and 300"),
        (minimal(leeway_s=True), "auth.leeway_s", "must be int"),
        (minimal(leeway_s="30"), "auth.leeway_s", "must be int"),
        (minimal(groups_claim=""), "auth.groups_claim", "must not be empty"),
        (minimal(claims_allowlist=["ok", 3]), "auth.claims_allowlist", "non-empty strings"),
        (minimal(jwks_timeout_s=0), "auth.jwks_timeout_s", "between"),
        (minimal(jwks_timeout_s="5"), "auth.jwks_timeout_s", "must be float"),
        (minimal(jwks_cache_s=0.5), "auth.jwks_cache_s", "between"),
        (minimal(audience=""), "auth.audience", "must not be empty"),
        ({"issuers": minimal()["issuers"]}, "auth.audience", "required when issuers"),
        ({"audience": AUDIENCE}, "auth.issuers", "at least one issuer"),
        (minimal(issuers=["x"]), "auth.issuers[0]", "must be a table"),
        (minimal(issuers=[{"jwks_file": "j"}]), "auth.issuers[0].issuer", "is required"),
        (minimal(issuers=[{"issuer": ISSUER}]), "auth.issuers[0].jwks_file", "exactly one"),
        (
            minimal(issuers=[{"issuer": ISSUER, "jwks_file": "j", "jwks_url": "https://x/j"}]),
            "auth.issuers[0].jwks_file",
            "exactly one",
        ),
        (
            minimal(issuers=[{"issuer": ISSUER, "jwks_url": "http://idp/jwks"}]),
            "auth.issuers[0].jwks_url",
            "https://",
        ),
        (
            minimal(issuers=[{"issuer": ISSUER, "jwks_file": "j", "ca_file": "ca.pem"}]),
            "auth.issuers[0].ca_file",
            "only applies to jwks_url",
        ),
        (
            minimal(issuers=[{"issuer": ISSUER, "jwks_file": "a"}] * 2),
            "auth.issuers[1].issuer",
            "configured twice",
        ),
        (
            minimal(issuers=[{"issuer": ISSUER, "jwks_file": "a", "jwks": "b"}]),
            "auth.issuers[0].jwks",
            "unknown key",
        ),
        (minimal(audiance="typo"), "auth.audiance", "unknown key"),
    ],
)
def test_errors_name_the_key_and_the_file(
    tmp_path: Path, values: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        AuthConfig.from_section(auth_section(tmp_path, **values))
    assert info.value.key == key
    assert info.value.source == str(tmp_path / "pgwarden.toml")
    assert str(info.value).startswith(f"{tmp_path / 'pgwarden.toml'}: {key}: ")
    assert fragment in str(info.value)


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    values = minimal(
        issuers=[{"issuer": ISSUER, "jwks_url": "https://idp/jwks", "ca_file": "nope.pem"}]
    )
    config = AuthConfig.from_section(auth_section(tmp_path, **values))
    with pytest.raises(ConfigError, match=r"auth\.issuers\[0\]\.ca_file: cannot load CA file"):
        AgentAuthenticator(config)


def test_missing_dev_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    config = AuthConfig.from_section(auth_section(tmp_path, dev_tokens_file="absent.toml"))
    with pytest.raises(ConfigError, match=r"pgwarden\.toml: auth\.dev_tokens_file: .*absent"):
        AgentAuthenticator(config)


def test_documented_example_is_a_valid_config(tmp_path: Path) -> None:
    """The example in docs/configuration.md parses and every key it uses is documented."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    section = doc.split("## [auth]", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    data = tomllib.loads(example.group(1))
    source = tmp_path / "pgwarden.toml"
    config = AuthConfig.from_section(Section(data, source=str(source)).section("auth"))
    assert config.issuers
    key_tables = section.split("### What is checked", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", key_tables, re.MULTILINE))
    used = set(data["auth"]) | {k for i in data["auth"].get("issuers", []) for k in i}
    assert used <= documented
    assert documented == ALL_KEYS
