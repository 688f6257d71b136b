"""The upstream TLS context: built once per sslmode and CA file, again when the file changes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from pgwarden.proxy import upstream
from pgwarden.proxy.upstream import SSL_CONTEXTS_MAX, UpstreamTarget
from pgwarden.stack.certs import write_self_signed


@pytest.fixture(autouse=True)
def no_shared_contexts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "_ssl_contexts", {})


def target(sslmode: str, ca_file: Path | None) -> UpstreamTarget:
    return UpstreamTarget("db.test", 5432, sslmode, str(ca_file) if ca_file else None)


def test_connections_share_one_context(tmp_path: Path) -> None:
    cert, _ = write_self_signed(tmp_path)
    first = target("verify-full", cert).ssl_context()
    assert first is not None
    assert target("verify-full", cert).ssl_context() is first
    assert first.check_hostname
    assert first.verify_mode == ssl.CERT_REQUIRED


def test_a_rotated_ca_file_gives_a_new_context(tmp_path: Path) -> None:
    cert, _ = write_self_signed(tmp_path / "old")
    rotated = tmp_path / "ca.pem"
    rotated.write_bytes(cert.read_bytes())
    before = target("verify-full", rotated).ssl_context()
    new_cert, _ = write_self_signed(tmp_path / "new", "other.test")
    rotated.write_bytes(new_cert.read_bytes() + cert.read_bytes())  # a CA bundle in rotation
    after = target("verify-full", rotated).ssl_context()
    assert after is not before
    assert after is not None
    assert len(after.get_ca_certs()) == 2


def test_each_mode_keeps_its_own_checks(tmp_path: Path) -> None:
    cert, _ = write_self_signed(tmp_path)
    require = target("require", cert).ssl_context()
    verify_ca = target("verify-ca", cert).ssl_context()
    assert require is not None
    assert verify_ca is not None
    assert (require.check_hostname, require.verify_mode) == (False, ssl.CERT_NONE)
    assert (verify_ca.check_hostname, verify_ca.verify_mode) == (False, ssl.CERT_REQUIRED)
    assert target("disable", cert).ssl_context() is None


def test_a_missing_ca_file_fails_every_time(tmp_path: Path) -> None:
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            target("verify-full", tmp_path / "missing.pem").ssl_context()
    assert upstream._ssl_contexts == {}


def test_the_contexts_are_bounded(tmp_path: Path) -> None:
    cert, _ = write_self_signed(tmp_path)
    for i in range(SSL_CONTEXTS_MAX * 2):
        copy = tmp_path / f"ca-{i}.pem"
        copy.write_bytes(cert.read_bytes())
        target("verify-full", copy).ssl_context()
    assert 0 < len(upstream._ssl_contexts) <= SSL_CONTEXTS_MAX
