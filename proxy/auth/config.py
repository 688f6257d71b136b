"""The ``[auth]`` section: how agents prove who they are (documented key by key in
``docs/configuration.md``). Shape and values are checked here; the files it names (JWKS,
CA, development tokens) are read when the authenticator is built, with errors that still
name the key and the config file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pgwarden.config import ConfigError, Section

# Asymmetric signature algorithms only: a JWKS holds public keys, and an HMAC "secret"
# taken from a public key is the classic algorithm-confusion forgery (RFC 8725 §2.1).
SUPPORTED_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
DEFAULT_ALGORITHMS = ("RS256", "ES256")
MAX_LEEWAY_S = 300


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted token issuer (``[[auth.issuers]]``) and where its public keys live."""

    issuer: str
    jwks_file: Path | None
    jwks_url: str | None
    ca_file: Path | None
    source: str  # the config file, for errors
    key: str  # the dotted key of this table, e.g. ``auth.issuers[0]``


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The validated ``[auth]`` section."""

    audience: str | None
    issuers: tuple[IssuerConfig, ...]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_s: int = 30
    groups_claim: str = "groups"
    claims_allowlist: tuple[str, ...] = ()
    jwks_timeout_s: float = 5.0
    jwks_refresh_interval_s: float = 30.0
    jwks_cache_s: float = 3600.0
    dev_tokens_file: Path | None = None
    source: str = "<config>"
    key: str = "auth"

    @classmethod
    def from_section(cls, section: Section) -> AuthConfig:
        """Validate ``[auth]``; relative paths are relative to the config file's folder."""
        base = Path(section.source).parent
        audience = section.optional("audience", str)
        if audience is not None and not audience.strip():
            raise section.error("audience", "must not be empty")

        algorithms = _strings(section, "algorithms", list(DEFAULT_ALGORITHMS))
        if not algorithms:
            raise section.error("algorithms", "must list at least one algorithm")
        for alg in algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                why = (
                    "symmetric (HMAC) and 'none' algorithms are never accepted"
                    if alg.lower() == "none" or alg.upper().startswith("HS")
                    else "not a supported algorithm"
                )
                raise section.error(
                    "algorithms", f"{alg!r}: {why}; choose from {', '.join(SUPPORTED_ALGORITHMS)}"
                )

        leeway_s = section.get("leeway_s", int, 30)
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise section.error("leeway_s", f"must be between 0 and {MAX_LEEWAY_S} seconds")

        groups_claim = section.get("groups_claim", str, "groups")
        if not groups_claim:
            raise section.error("groups_claim", "must not be empty")
        claims_allowlist = _strings(section, "claims_allowlist", [])

        jwks_timeout_s = _seconds(section, "jwks_timeout_s", 5.0, low=0.001, high=60.0)
        refresh_s = _seconds(section, "jwks_refresh_interval_s", 30.0, low=0.0, high=86400.0)
        cache_s = _seconds(section, "jwks_cache_s", 3600.0, low=1.0, high=7 * 86400.0)

        issuers = _issuers(section, base)
        dev_file = section.optional("dev_tokens_file", str)
        if dev_file is not None and not dev_file:
            raise section.error("dev_tokens_file", "must not be empty")
        if issuers and audience is None:
            raise section.error("audience", "is required when issuers are configured")
        if not issuers and dev_file is None:
            raise section.error(
                "issuers", "configure at least one issuer (or dev_tokens_file for development)"
            )
        section.reject_unknown()
        return cls(
            audience=audience,
            issuers=issuers,
            algorithms=tuple(dict.fromkeys(algorithms)),
            leeway_s=leeway_s,
            groups_claim=groups_claim,
            claims_allowlist=tuple(dict.fromkeys(claims_allowlist)),
            jwks_timeout_s=jwks_timeout_s,
            jwks_refresh_interval_s=refresh_s,
            jwks_cache_s=cache_s,
            dev_tokens_file=None if dev_file is None else base / dev_file,
            source=section.source,
            key=section.prefix or "auth",
        )

    def error(self, name: str, problem: str) -> ConfigError:
        """A ConfigError for one of this section's keys (used once files are read)."""
        return ConfigError(self.source, f"{self.key}.{name}", problem)


def _issuers(section: Section, base: Path) -> tuple[IssuerConfig, ...]:
    raw = section.get("issuers", list, [])
    issuers: list[IssuerConfig] = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        key = f"{section.key('issuers')}[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(section.source, key, "must be a table ([[auth.issuers]])")
        sub = Section(table, source=section.source, prefix=key)
        issuer = sub.get("issuer", str, required=True)
        if not issuer:
            raise sub.error("issuer", "must not be empty")
        if issuer in seen:
            raise sub.error("issuer", f"{issuer!r} is configured twice")
        seen.add(issuer)
        jwks_file = sub.optional("jwks_file", str)
        jwks_url = sub.optional("jwks_url", str)
        ca_file = sub.optional("ca_file", str)
        if (jwks_file is None) == (jwks_url is None):
            raise sub.error("jwks_file", "set exactly one of jwks_file and jwks_url")
        if jwks_url is not None:
            parts = urlsplit(jwks_url)
            if parts.scheme != "https" or not parts.hostname:
                raise sub.error("jwks_url", "must be an https:// URL")
        if ca_file is not None and jwks_url is None:
            raise sub.error("ca_file", "only applies to jwks_url")
        sub.reject_unknown()
        issuers.append(
            IssuerConfig(
                issuer=issuer,
                jwks_file=None if jwks_file is None else base / jwks_file,
                jwks_url=jwks_url,
                ca_file=None if ca_file is None else base / ca_file,
                source=section.source,
                key=key,
            )
        )
    return tuple(issuers)


def _strings(section: Section, name: str, default: list[str]) -> list[str]:
    values = section.get(name, list, default)
    for value in values:
        if not isinstance(value, str) or not value:
            raise section.error(name, "must be a list of non-empty strings")
    return [str(v) for v in values]


def _seconds(section: Section, name: str, default: float, *, low: float, high: float) -> float:
    """A duration in seconds: TOML integer or float."""
    raw = section.data.get(name)
    value: float = (
        section.get(name, int, 0)
        if isinstance(raw, int) and not isinstance(raw, bool)
        else section.get(name, float, default)
    )
    if not low <= value <= high:
        raise section.error(name, f"must be between {low:g} and {high:g} seconds")
    return float(value)
