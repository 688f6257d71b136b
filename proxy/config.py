"""``pgwarden proxy --config FILE``: the proxy's configuration (TOML), validated at start-up.
Every key is documented in ``docs/configuration.md``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pgwarden.config import ConfigError, Section, load_toml
from pgwarden.proxy.audit import AuditConfig
from pgwarden.proxy.auth.config import AuthConfig
from pgwarden.proxy.masking import DETECTORS, MASK_FUNCTIONS
from pgwarden.proxy.pdp_config import PdpClientConfig
from pgwarden.proxy.upstream import UpstreamTarget

SSLMODES = ("disable", "require", "verify-ca", "verify-full")
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
# Analysis runs on the event loop, about 2 us per byte of SQL (a 3 MB INSERT ... VALUES
# took 6.5 s): 256 KiB holds the proxy's other sessions for half a second at most.
DEFAULT_MAX_STATEMENT_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``[tls]``: TLS termination for agents."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class LocalDecisions:
    """``[decision] mode = "local"``: in-process allow-all with a deny-list (tests, dev)."""

    upstream_role: str
    audit_file: Path
    deny: tuple[str, ...] = ()
    mask: Mapping[str, str] = field(default_factory=dict)
    row_limit: int | None = None
    detect: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The validated proxy configuration."""

    source: str
    listen_host: str
    listen_port: int
    proxy_id: str
    upstream: UpstreamTarget
    roles: Mapping[str, str | None]
    auth: AuthConfig
    decisions: LocalDecisions | PdpClientConfig
    tls: TlsConfig | None = None
    require_tls: bool = False
    allow_plaintext_loopback: bool = False
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_statement_bytes: int = DEFAULT_MAX_STATEMENT_BYTES
    startup_timeout_s: float = 10.0
    idle_timeout_s: float = 0.0
    shutdown_grace_s: float = 30.0
    catalog_ttl_s: float = 60.0
    mask_hash_key: bytes | None = None
    audit: AuditConfig | None = None

    @classmethod
    def load(cls, path: Path) -> ProxyConfig:
        return cls.from_mapping(load_toml(path), source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, source: str) -> ProxyConfig:
        root = Section(data, source=source)
        base = Path(source).parent

        proxy = root.section("proxy")
        listen = proxy.get("listen", str, "127.0.0.1")
        port = _port(proxy, "port", 6432)
        proxy_id = proxy.get("proxy_id", str, "proxy")
        max_size = proxy.get("max_message_size", int, DEFAULT_MAX_MESSAGE_SIZE)
        if not 1024 <= max_size <= 1 << 30:
            raise proxy.error("max_message_size", "must be between 1024 and 1073741824 bytes")
        max_statement = proxy.get(
            "max_statement_bytes", int, min(DEFAULT_MAX_STATEMENT_BYTES, max_size)
        )
        if not 1024 <= max_statement <= max_size:
            raise proxy.error(
                "max_statement_bytes", f"must be between 1024 and max_message_size ({max_size})"
            )
        startup_timeout = _seconds(proxy, "startup_timeout_s", 10.0, allow_zero=False)
        idle_timeout = _seconds(proxy, "idle_timeout_s", 0.0, allow_zero=True)
        grace = _seconds(proxy, "shutdown_grace_s", 30.0, allow_zero=True)
        catalog_ttl = _seconds(proxy, "catalog_ttl_s", 60.0, allow_zero=False)
        key_file = proxy.optional("mask_hash_key_file", str)
        mask_key = None
        if key_file is not None:
            path = base / key_file
            try:
                mask_key = path.read_bytes().strip()
            except OSError as exc:
                raise proxy.error(
                    "mask_hash_key_file", f"cannot read {path}: {exc.strerror}"
                ) from None
            if len(mask_key) < 16:
                raise proxy.error("mask_hash_key_file", "the key must have at least 16 bytes")
        proxy.reject_unknown()

        tls_section = root.section("tls")
        tls = None
        if tls_section.data:
            cert = _existing_file(tls_section, "cert_file", base)
            key = _existing_file(tls_section, "key_file", base)
            tls = TlsConfig(cert, key)
        require_tls = tls_section.get("require", bool, False)
        loopback = tls_section.get("allow_plaintext_loopback", bool, False)
        if require_tls and tls is None:
            raise tls_section.error("require", "needs cert_file and key_file")
        tls_section.reject_unknown()

        up = root.section("upstream", required=True)
        sslmode = up.get("sslmode", str, "disable")
        if sslmode not in SSLMODES:
            raise up.error("sslmode", f"must be one of {', '.join(SSLMODES)}")
        ca = up.optional("ca_file", str)
        target = UpstreamTarget(
            host=up.get("host", str, required=True),
            port=_port(up, "port", 5432),
            sslmode=sslmode,
            ca_file=str(base / ca) if ca else None,
            connect_timeout_s=_seconds(up, "connect_timeout_s", 5.0, allow_zero=False),
        )
        roles = _roles(up.section("roles", required=True))
        up.reject_unknown()

        auth = AuthConfig.from_section(root.section("auth", required=True))

        dec = root.section("decision", required=True)
        mode = dec.get("mode", str, required=True)
        decisions: LocalDecisions | PdpClientConfig
        if mode == "local":
            decisions = _local_decisions(dec, roles, base)
        elif mode == "pdp":
            decisions = PdpClientConfig.from_section(
                dec.section("pdp", required=True), base_dir=base
            )
        else:
            raise dec.error("mode", f"unknown mode {mode!r} (expected 'local' or 'pdp')")
        dec.reject_unknown()
        audit = AuditConfig.from_section(root.section("audit"), base_dir=base)
        root.reject_unknown()

        return cls(
            source=source,
            listen_host=listen,
            listen_port=port,
            proxy_id=proxy_id,
            upstream=target,
            roles=roles,
            auth=auth,
            decisions=decisions,
            tls=tls,
            require_tls=require_tls,
            allow_plaintext_loopback=loopback,
            max_message_size=max_size,
            max_statement_bytes=max_statement,
            startup_timeout_s=startup_timeout,
            idle_timeout_s=idle_timeout,
            shutdown_grace_s=grace,
            catalog_ttl_s=catalog_ttl,
            mask_hash_key=mask_key,
            audit=audit,
        )


def _port(section: Section, name: str, default: int) -> int:
    value = section.get(name, int, default)
    if not 0 <= value <= 65535:
        raise section.error(name, "must be a TCP port (0-65535)")
    return value


def _seconds(section: Section, name: str, default: float, *, allow_zero: bool) -> float:
    value = section.number(name, default)
    if value < 0 or (value == 0 and not allow_zero):
        raise section.error(name, "must be positive" if not allow_zero else "must be >= 0")
    return value


def _existing_file(section: Section, name: str, base: Path) -> Path:
    path = base / section.get(name, str, required=True)
    if not path.is_file():
        raise section.error(name, f"file not found: {path}")
    return path


def _roles(section: Section) -> dict[str, str | None]:
    """``[upstream.roles.NAME]``: the proxy's credential for each upstream role, from
    ``password``, ``password_file`` or ``password_env`` (none: trust authentication)."""
    if not section.data:
        raise ConfigError(section.source, section.prefix, "define at least one role")
    roles: dict[str, str | None] = {}
    for name in list(section.data):
        role = section.section(name)
        sources = [k for k in ("password", "password_file", "password_env") if k in role.data]
        if len(sources) > 1:
            raise role.error(sources[1], f"give only one of {', '.join(sources)}")
        password: str | None = None
        if "password" in role.data:
            password = role.get("password", str)
        elif "password_file" in role.data:
            path = Path(section.source).parent / role.get("password_file", str)
            try:
                password = path.read_text().strip()
            except OSError as exc:
                raise role.error("password_file", f"cannot read {path}: {exc.strerror}") from None
        elif "password_env" in role.data:
            var = role.get("password_env", str)
            if var not in os.environ:
                raise role.error("password_env", f"environment variable {var} is not set")
            password = os.environ[var]
        role.reject_unknown()
        roles[name] = password
    return roles


def _local_decisions(dec: Section, roles: Mapping[str, str | None], base: Path) -> LocalDecisions:
    role = dec.get("upstream_role", str, required=True)
    audit_file = base / dec.get("audit_file", str, "audit.jsonl")
    if role not in roles:
        raise dec.error("upstream_role", f"role {role!r} has no [upstream.roles] entry")
    deny = dec.get("deny", list, [])
    if not all(isinstance(p, str) for p in deny):
        raise dec.error("deny", "must be a list of strings")
    mask_section = dec.section("mask")
    mask = {}
    for column in list(mask_section.data):
        function = mask_section.get(column, str)
        if function not in MASK_FUNCTIONS:
            raise mask_section.error(column, f"must be one of {', '.join(MASK_FUNCTIONS)}")
        mask[column] = function
    row_limit = dec.optional("row_limit", int)
    if row_limit is not None and row_limit < 0:
        raise dec.error("row_limit", "must be >= 0")
    detect = dec.get("detect", list, [])
    for name in detect:
        if name not in DETECTORS:
            raise dec.error("detect", f"unknown detector {name!r} (one of {', '.join(DETECTORS)})")
    return LocalDecisions(role, audit_file, tuple(deny), mask, row_limit, tuple(detect))
