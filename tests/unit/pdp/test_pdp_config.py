"""PDP and PDP-client configuration: validated with errors naming the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgwarden.config import ConfigError, Section
from pgwarden.pdp.config import load_config
from pgwarden.proxy.pdp_client import PdpClientConfig


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    path = tmp_path / "pdp.toml"
    path.write_text(text)
    return path


GOOD = """
[pdp]
listen = "127.0.0.1:6000"
dry_run = true
[pdp.http]
listen = "127.0.0.1:6001"
[pdp.auth]
tokens = ["t1"]
[pdp.opa]
policies = "policies"
timeout_ms = 100
"""


def test_allow_good_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.listen == "127.0.0.1:6000"
    assert config.http_listen == "127.0.0.1:6001"
    assert config.dry_run
    assert config.auth.tokens == frozenset({"t1"})
    assert config.opa.mode == "supervised"
    assert config.opa.policies == (tmp_path / "policies").resolve()
    assert config.opa.timeout_s == 0.1


def test_token_file(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("# proxies\nalpha\n\nbeta\n")
    text = GOOD.replace('tokens = ["t1"]', 'token_file = "tokens"')
    assert load_config(write(tmp_path, text)).auth.tokens == frozenset({"alpha", "beta"})


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('listen = "127.0.0.1:6000"', 'listen = "nowhere"', "pdp.listen"),
        ("dry_run = true", 'dry_run = "yes"', "pdp.dry_run"),
        ('tokens = ["t1"]', "tokens = []", "pdp.auth.tokens"),
        ('tokens = ["t1"]', 'tokens = [""]', "pdp.auth.tokens"),
        ('tokens = ["t1"]', 'tokens = ["t1"]\nclient_ca = "pdp.toml"', "pdp.auth.client_ca"),
        ('policies = "policies"', 'policies = "missing"', "pdp.opa.policies"),
        ('policies = "policies"', 'mode = "external"', "pdp.opa.url"),
        ('policies = "policies"', 'mode = "sidecar"', "pdp.opa.mode"),
        ("timeout_ms = 100", "timeout_ms = 0", "pdp.opa.timeout_ms"),
        ("timeout_ms = 100", "timeout_ms = 0.5", "pdp.opa.timeout_ms"),
        ("timeout_ms = 100", "timeout = 100", "pdp.opa.timeout"),
        ("[pdp.http]", "[pdp.htp]", "pdp.htp"),
    ],
)
def test_deny_bad_config_naming_the_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert str(path) in str(info.value)


def test_deny_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "none.toml")


def client_section(data: dict[str, object]) -> Section:
    return Section(data, source="proxy.toml", prefix="proxy.pdp")


def test_allow_client_config(tmp_path: Path) -> None:
    section = client_section({"endpoints": ["a:1", "b:2"], "deadline_ms": 100, "token": "t"})
    config = PdpClientConfig.from_section(section, base_dir=tmp_path)
    assert config.endpoints == ("a:1", "b:2")
    assert config.deadline_s == 0.1
    assert config.token == "t"
    assert config.cache_max_entries == 100_000
    (tmp_path / "tok").write_text("secret\n")
    section = client_section({"endpoints": ["a:1"], "token_file": "tok"})
    assert PdpClientConfig.from_section(section, base_dir=tmp_path).token == "secret"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"token": "t"}, "proxy.pdp.endpoints"),
        ({"endpoints": [], "token": "t"}, "proxy.pdp.endpoints"),
        ({"endpoints": ["nohost"], "token": "t"}, "proxy.pdp.endpoints"),
        ({"endpoints": ["a:1"], "token": "t", "deadline_ms": 0}, "proxy.pdp.deadline_ms"),
        ({"endpoints": ["a:1"]}, "proxy.pdp.token"),
        ({"endpoints": ["a:1"], "token": "t", "token_file": "x"}, "proxy.pdp.token_file"),
        ({"endpoints": ["a:1"], "token": "t", "ca_file": "none.pem"}, "proxy.pdp.ca_file"),
        (
            {"endpoints": ["a:1"], "token": "t", "cache_max_entries": -1},
            "proxy.pdp.cache_max_entries",
        ),
        ({"endpoints": ["a:1"], "token": "t", "deadline": 5}, "proxy.pdp.deadline"),
    ],
)
def test_deny_bad_client_config(tmp_path: Path, data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        PdpClientConfig.from_section(client_section(data), base_dir=tmp_path)
    assert info.value.key == key


def test_cli_refuses_a_bad_config_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pgwarden.cli import main

    path = write(tmp_path, GOOD.replace('tokens = ["t1"]', "tokens = 3"))
    assert main(["pdp", "--config", str(path)]) == 2
    assert f"{path}: pdp.auth.tokens: must be list" in capsys.readouterr().err
