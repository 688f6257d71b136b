"""The PDP's configuration file (TOML), validated at start-up; errors name key and file.

```toml
[pdp]
listen = "127.0.0.1:50051"      # gRPC address (host:port)
grace_ms = 5000                 # SIGTERM: finish in-flight calls for this long
dry_run = false                 # true: policy denies are logged but statements run

[pdp.http]                      # optional ops server: /healthz /readyz /metrics
listen = "127.0.0.1:9181"

[pdp.auth]                      # at least one of tokens / token_file / client_ca
tokens = ["…"]                  # bearer tokens accepted from proxies
token_file = "pdp.tokens"       # or one token per line in a file
tls_cert = "pdp.crt"            # server certificate and key: TLS on the gRPC port
tls_key = "pdp.key"
client_ca = "ca.crt"            # mutual TLS: proxies must present a certificate of this CA

[pdp.opa]
mode = "supervised"             # "supervised": run our own OPA; "external": use `url`
policies = "../policies"        # supervised: the policy and data directory to load
binary = "/path/to/opa"         # supervised: default .bin/opa, else opa on PATH
url = "http://127.0.0.1:8181"   # external: OPA's REST API
token = "…"                     # external: bearer token for OPA, if it wants one
timeout_ms = 200                # per OPA request (below the proxies' deadline)
watch_interval_ms = 200         # how often the policy directory (or external OPA) is checked
restart_backoff_ms = 100        # supervised: first restart delay after a crash (doubles)
restart_backoff_max_ms = 5000
gogc = 400                      # supervised: OPA's GOGC (fewer Go collections, steadier p99)

[audit]                         # optional: the audit store (docs/audit.md)
store = "jsonl"                 # or "postgres" (dsn / dsn_env, table)
path = "audit.jsonl"
fsync = "batch"                 # "always" | "batch" | "interval"
replica_id = "pdp-a"            # this replica's hash chain (default: the host name)
```
Relative paths are relative to the config file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pgwarden.config import ConfigError, Section, load_toml
from pgwarden.pdp.audit.config import AuditStoreConfig, parse_audit_section


@dataclass(frozen=True)
class AuthConfig:
    tokens: frozenset[str] = frozenset()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None

    @property
    def mutual_tls(self) -> bool:
        return self.client_ca is not None


@dataclass(frozen=True)
class OpaConfig:
    mode: str = "supervised"
    policies: Path | None = None
    binary: Path | None = None
    url: str = ""
    token: str | None = None
    timeout_s: float = 0.2
    watch_interval_s: float = 0.2
    restart_backoff_s: float = 0.1
    restart_backoff_max_s: float = 5.0
    gogc: int = 400


@dataclass(frozen=True)
class PdpConfig:
    listen: str = "127.0.0.1:50051"
    grace_s: float = 5.0
    dry_run: bool = False
    http_listen: str | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    opa: OpaConfig = field(default_factory=OpaConfig)
    source: str = ""
    audit: AuditStoreConfig = field(default_factory=AuditStoreConfig)


def _address(section: Section, name: str, default: str | None) -> str | None:
    value = section.optional(name, str) if default is None else section.get(name, str, default)
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise section.error(name, f"must be host:port, got {value!r}")
    return value


def _positive_ms(section: Section, name: str, default: int) -> float:
    value = section.get(name, int, default)
    if value <= 0:
        raise section.error(name, "must be a positive number of milliseconds")
    return value / 1000


def _path(section: Section, name: str, base: Path, *, exists: bool = True) -> Path | None:
    value = section.optional(name, str)
    if value is None:
        return None
    path = (base / value).resolve()
    if exists and not path.exists():
        raise section.error(name, f"{path} does not exist")
    return path


def _auth(section: Section, base: Path) -> AuthConfig:
    tokens = section.get("tokens", list, [])
    if not all(isinstance(t, str) and t for t in tokens):
        raise section.error("tokens", "must be a list of non-empty strings")
    token_file = _path(section, "token_file", base)
    if token_file is not None:
        lines = token_file.read_text().splitlines()
        tokens = tokens + [t.strip() for t in lines if t.strip() and not t.startswith("#")]
    tls_cert = _path(section, "tls_cert", base)
    tls_key = _path(section, "tls_key", base)
    client_ca = _path(section, "client_ca", base)
    section.reject_unknown()
    if (tls_cert is None) != (tls_key is None):
        raise section.error("tls_key" if tls_key is None else "tls_cert", "needs the other too")
    if client_ca is not None and tls_cert is None:
        raise section.error("client_ca", "mutual TLS needs tls_cert and tls_key")
    if not tokens and client_ca is None:
        raise section.error(
            "tokens", "no authentication: set tokens, token_file, or client_ca (mutual TLS)"
        )
    return AuthConfig(frozenset(tokens), tls_cert, tls_key, client_ca)


def _opa(section: Section, base: Path) -> OpaConfig:
    mode = section.get("mode", str, "supervised")
    if mode not in ("supervised", "external"):
        raise section.error("mode", f"must be 'supervised' or 'external', got {mode!r}")
    policies = _path(section, "policies", base)
    binary = _path(section, "binary", base)
    url = section.get("url", str, "")
    token = section.optional("token", str)
    opa = OpaConfig(
        mode=mode,
        policies=policies,
        binary=binary,
        url=url,
        token=token,
        timeout_s=_positive_ms(section, "timeout_ms", 200),
        watch_interval_s=_positive_ms(section, "watch_interval_ms", 200),
        restart_backoff_s=_positive_ms(section, "restart_backoff_ms", 100),
        restart_backoff_max_s=_positive_ms(section, "restart_backoff_max_ms", 5000),
        gogc=section.get("gogc", int, 400),
    )
    section.reject_unknown()
    if opa.gogc <= 0:
        raise section.error("gogc", "must be a positive percentage")
    if mode == "supervised" and policies is None:
        raise section.error("policies", "is required when mode is 'supervised'")
    if mode == "supervised" and policies is not None and not policies.is_dir():
        raise section.error("policies", f"{policies} is not a directory")
    if mode == "external" and not url.startswith(("http://", "https://")):
        raise section.error("url", "an http(s) URL is required when mode is 'external'")
    return opa


def parse_config(data: dict[str, object], *, source: str, base: Path) -> PdpConfig:
    root = Section(data, source=source)
    pdp = root.section("pdp", required=True)
    audit = parse_audit_section(root.section("audit"), base)
    root.reject_unknown()
    listen = _address(pdp, "listen", "127.0.0.1:50051")
    assert listen is not None
    grace_s = pdp.get("grace_ms", int, 5000) / 1000
    dry_run = pdp.get("dry_run", bool, False)
    http = pdp.section("http")
    http_listen = _address(http, "listen", None)
    http.reject_unknown()
    auth = _auth(pdp.section("auth", required=True), base)
    opa = _opa(pdp.section("opa", required=True), base)
    pdp.reject_unknown()
    return PdpConfig(listen, grace_s, dry_run, http_listen, auth, opa, source, audit)


def load_config(path: Path) -> PdpConfig:
    """Read and validate ``path``; raise ConfigError naming the key and the file."""
    data = load_toml(path)
    try:
        return parse_config(data, source=str(path), base=path.resolve().parent)
    except OSError as exc:
        raise ConfigError(str(path), "", str(exc)) from None
