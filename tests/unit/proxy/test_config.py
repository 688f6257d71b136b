"""The proxy configuration: the documented example loads, every key is documented, and
errors name the file and the key."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest

from pgwarden.config import ConfigError
from pgwarden.proxy.config import ProxyConfig

REPO = Path(__file__).resolve().parents[3]
DOC = (REPO / "docs" / "configuration.md").read_text()
EXAMPLE = tomllib.loads(re.search(r"```toml\n(.*?)```", DOC, re.DOTALL).group(1))  # type: ignore[union-attr]


def load(tmp_path: Path, data: dict[str, object]) -> ProxyConfig:
    for name in ("server.crt", "server.key", "etl.password"):
        (tmp_path / name).write_text("x")
    return ProxyConfig.from_mapping(data, source=str(tmp_path / "proxy.toml"))


def test_documented_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_REPORTING_PASSWORD", "s3cret")
    config = load(tmp_path, EXAMPLE)
    assert (config.listen_port, config.upstream.sslmode, config.require_tls) == (
        6432,
        "verify-full",
        True,
    )
    assert config.roles == {"shop_reporting": "s3cret", "shop_etl": "x"}


@pytest.mark.parametrize("section", ["proxy", "tls", "upstream", "decision"])
def test_every_key_of_the_example_is_documented(section: str) -> None:
    text = DOC.split(f"## [{section}]", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE))
    used = {k for k, v in EXAMPLE[section].items() if not isinstance(v, dict)}
    assert used <= documented


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["upstream"].update(sslmode="prefer"), r"upstream\.sslmode: must be one of"),
        (lambda d: d["proxy"].update(port=70000), r"proxy\.port: must be a TCP port"),
        (lambda d: d["proxy"].update(prot=1), r"proxy\.prot: unknown key"),
        (lambda d: d["decision"].update(upstream_role="nobody"), r"decision\.upstream_role"),
        (lambda d: d["tls"].update(cert_file="missing.pem"), r"tls\.cert_file: file not found"),
        (
            lambda d: d["upstream"]["roles"]["shop_etl"].update(password="p"),
            r"upstream\.roles\.shop_etl\.password_file: give only one",
        ),
        (
            lambda d: d["proxy"].update(startup_timeout_s=True),
            r"startup_timeout_s: must be a number",
        ),
        (lambda d: d["proxy"].update(catalog_ttl_s=0), r"proxy\.catalog_ttl_s: must be positive"),
        (
            lambda d: d["proxy"].update(max_statement_bytes=1 << 30),
            r"proxy\.max_statement_bytes: must be between 1024 and max_message_size",
        ),
    ],
)
def test_errors_name_file_and_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: object,
    message: str,
) -> None:
    monkeypatch.setenv("PGWARDEN_REPORTING_PASSWORD", "s3cret")
    data = copy.deepcopy(EXAMPLE)
    change(data)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message) as info:
        load(tmp_path, data)
    assert str(info.value).startswith(str(tmp_path / "proxy.toml"))
