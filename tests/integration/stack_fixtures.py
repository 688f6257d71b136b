"""A running reference-scenario stack (``pgwarden.stack.local``) for end-to-end tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pgwarden.stack import local


def stack_state_dir() -> Path:
    """A state directory PostgreSQL's own user can reach when the tests run as root."""
    base = Path(tempfile.mkdtemp(prefix="pgwarden-stack-", dir="/tmp"))
    base.chmod(0o711)
    return base


def dsn(stack: local.Stack, subject: str, **params: str) -> str:
    proxy = stack.info["proxy"]
    extra = "".join(f" {k}={v}" for k, v in params.items())
    return (
        f"host={proxy['host']} port={proxy['port']} dbname={proxy['database']} "
        f"user={subject} password={stack.info['tokens'][subject]} sslmode=verify-full "
        f"sslrootcert={proxy['ca_file']}{extra}"
    )
