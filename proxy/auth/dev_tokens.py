"""Development tokens: static bearer tokens for a laptop or a demo, never for production.

The file (TOML) stores only the SHA-256 of each token, so reading it does not reveal a
usable credential::

    [[tokens]]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    subject = "agent:reporting"
    groups = ["analytics"]

:func:`issue_dev_token` creates a fresh random token and appends its entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgwarden.config import ConfigError, Section, load_toml
from pgwarden.proxy.decision import Identity

DEV_ISSUER = "pgwarden:dev-tokens"
DEV_AUTH_METHOD = "dev_token"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def token_digest(token: str) -> str:
    """The stored form of a development token: SHA-256 of its UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DevToken:
    """One development token's entry: its digest and the identity it stands for."""

    sha256: str
    subject: str
    groups: tuple[str, ...] = ()

    def identity(self) -> Identity:
        return Identity(
            subject=self.subject,
            issuer=DEV_ISSUER,
            groups=self.groups,
            auth_method=DEV_AUTH_METHOD,
        )

    def to_toml(self) -> str:
        """The entry as a ``[[tokens]]`` TOML table (JSON strings are valid TOML strings)."""
        groups = ", ".join(json.dumps(g) for g in self.groups)
        return (
            "[[tokens]]\n"
            f"sha256 = {json.dumps(self.sha256)}\n"
            f"subject = {json.dumps(self.subject)}\n"
            f"groups = [{groups}]\n"
        )


class DevTokens:
    """The development tokens of one file, looked up by digest."""

    def __init__(self, entries: Mapping[str, DevToken]) -> None:
        self._by_digest = dict(entries)

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, token: str) -> Identity | None:
        entry = self._by_digest.get(token_digest(token))
        return None if entry is None else entry.identity()

    @classmethod
    def load(cls, path: Path) -> DevTokens:
        """Read and validate the file; every error is a ConfigError naming it and the key."""
        section = Section(load_toml(path), source=str(path))
        tokens = section.get("tokens", list, [])
        section.reject_unknown()
        entries: dict[str, DevToken] = {}
        for i, table in enumerate(tokens):
            key = f"tokens[{i}]"
            if not isinstance(table, dict):
                raise ConfigError(str(path), key, "must be a table ([[tokens]])")
            sub = Section(table, source=str(path), prefix=key)
            digest = sub.get("sha256", str, required=True)
            if not _HEX64.fullmatch(digest):
                raise sub.error("sha256", "must be 64 lowercase hex digits (SHA-256 of the token)")
            if digest in entries:
                raise sub.error("sha256", "the same token is listed twice")
            subject = sub.get("subject", str, required=True)
            if not subject:
                raise sub.error("subject", "must not be empty")
            groups = sub.get("groups", list, [])
            if not all(isinstance(g, str) and g for g in groups):
                raise sub.error("groups", "must be a list of non-empty strings")
            sub.reject_unknown()
            entries[digest] = DevToken(digest, subject, tuple(groups))
        return cls(entries)


def new_dev_token(subject: str, groups: Sequence[str] = ()) -> tuple[str, DevToken]:
    """A fresh random token (256 bits, URL-safe) and the entry that stores its digest."""
    if not subject:
        raise ValueError("subject must not be empty")
    if not all(isinstance(g, str) and g for g in groups):
        raise ValueError("groups must be non-empty strings")
    token = "pgw_dev_" + secrets.token_urlsafe(32)
    return token, DevToken(token_digest(token), subject, tuple(groups))


def issue_dev_token(path: Path, subject: str, groups: Sequence[str] = ()) -> str:
    """Create a token for ``subject``, append its entry to ``path`` (created with mode
    0600 if missing) and return the token — the only time it exists in clear."""
    token, entry = new_dev_token(subject, groups)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        if f.tell() > 0:
            f.write("\n")
        f.write(entry.to_toml())
    return token
