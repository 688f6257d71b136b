"""The ``[decision.pdp]`` table of the proxy's config (see :mod:`pgwarden.proxy.pdp_client`),
apart from the client so that reading a config does not import grpc."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgwarden.config import Section


@dataclass(frozen=True)
class PdpClientConfig:
    endpoints: tuple[str, ...]
    deadline_s: float = 0.25
    token: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    cache_max_entries: int = 100_000
    watch_revisions: bool = True

    @classmethod
    def from_section(cls, section: Section, *, base_dir: Path) -> PdpClientConfig:
        """Read and validate a config table; errors name the file and the dotted key."""
        endpoints = section.get("endpoints", list, required=True)
        if not endpoints or not all(
            isinstance(e, str) and e.rpartition(":")[2].isdigit() for e in endpoints
        ):
            raise section.error("endpoints", "must be a non-empty list of host:port strings")
        deadline_ms = section.get("deadline_ms", int, 250)
        if deadline_ms <= 0:
            raise section.error("deadline_ms", "must be a positive number of milliseconds")
        token = section.optional("token", str)
        token_file = section.optional("token_file", str)
        if token is not None and token_file is not None:
            raise section.error("token_file", "set token or token_file, not both")
        if token_file is not None:
            try:
                token = (base_dir / token_file).read_text().strip()
            except OSError as exc:
                raise section.error("token_file", str(exc)) from None
        paths: dict[str, Path | None] = {}
        for name in ("ca_file", "cert_file", "key_file"):
            value = section.optional(name, str)
            path = None if value is None else (base_dir / value).resolve()
            if path is not None and not path.is_file():
                raise section.error(name, f"{path} is not a file")
            paths[name] = path
        if (paths["cert_file"] is None) != (paths["key_file"] is None):
            raise section.error("cert_file", "cert_file and key_file go together")
        if paths["cert_file"] is not None and paths["ca_file"] is None:
            raise section.error("ca_file", "mutual TLS needs ca_file (the PDP's CA)")
        server_name = section.optional("server_name", str)
        cache_max = section.get("cache_max_entries", int, 100_000)
        if cache_max < 0:
            raise section.error("cache_max_entries", "must be >= 0")
        watch = section.get("watch_revisions", bool, True)
        section.reject_unknown()
        if token is None and paths["cert_file"] is None:
            raise section.error("token", "the PDP needs credentials: token, token_file or mTLS")
        return cls(
            tuple(endpoints),
            deadline_ms / 1000,
            token,
            paths["ca_file"],
            paths["cert_file"],
            paths["key_file"],
            server_name,
            cache_max,
            watch,
        )
