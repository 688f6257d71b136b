"""The PDP's ``[audit]`` table: where and how audit records are stored.

```toml
[audit]
store = "jsonl"               # "jsonl" (default, embedded) or "postgres"
replica_id = "pdp-a"          # this replica's chain (default: the host name)
path = "audit.jsonl"          # jsonl: the file (relative to the config file)
fsync = "batch"               # jsonl: "always" | "batch" | "interval"
fsync_interval_ms = 1000      # jsonl, fsync = "interval"
dsn_env = "PGWARDEN_AUDIT_DSN"  # postgres: an environment variable holding the DSN
dsn = "postgresql://…"        # postgres: or the DSN itself
table = "pgwarden_audit"      # postgres: table (optionally schema.table), created if missing
pool_max_size = 4             # postgres: connections in the pool
max_batch_records = 5000      # records written (and fsynced) together at most
```
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from pgwarden.config import Section

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
FSYNC_POLICIES = ("always", "batch", "interval")


@dataclass(frozen=True)
class AuditStoreConfig:
    store: str = "jsonl"
    replica_id: str = ""
    path: Path = Path("audit.jsonl")
    fsync: str = "batch"
    fsync_interval_s: float = 1.0
    dsn: str = ""
    table: str = "pgwarden_audit"
    pool_max_size: int = 4
    max_batch_records: int = 5000

    @property
    def chain_id(self) -> str:
        return self.replica_id or socket.gethostname()


def parse_audit_section(section: Section, base: Path) -> AuditStoreConfig:
    """Validate ``[audit]``; errors name the key and the file."""
    store = section.get("store", str, "jsonl")
    if store not in ("jsonl", "postgres"):
        raise section.error("store", f"must be 'jsonl' or 'postgres', got {store!r}")
    replica_id = section.get("replica_id", str, "") or socket.gethostname()
    if not replica_id.strip() or len(replica_id) > 200:
        raise section.error("replica_id", "must be a non-empty string of at most 200 chars")
    path = (base / section.get("path", str, "audit.jsonl")).resolve()
    fsync = section.get("fsync", str, "batch")
    if fsync not in FSYNC_POLICIES:
        raise section.error("fsync", f"must be one of {', '.join(FSYNC_POLICIES)}")
    interval_ms = section.get("fsync_interval_ms", int, 1000)
    if interval_ms <= 0:
        raise section.error("fsync_interval_ms", "must be a positive number of milliseconds")
    dsn = section.optional("dsn", str)
    dsn_env = section.optional("dsn_env", str)
    if dsn is not None and dsn_env is not None:
        raise section.error("dsn_env", "set dsn or dsn_env, not both")
    if dsn_env is not None:
        dsn = os.environ.get(dsn_env)
        if not dsn:
            raise section.error("dsn_env", f"environment variable {dsn_env} is not set")
    table = section.get("table", str, "pgwarden_audit")
    if not _TABLE.match(table):
        raise section.error("table", "must be an identifier or schema.identifier")
    pool_max = section.get("pool_max_size", int, 4)
    if not 1 <= pool_max <= 100:
        raise section.error("pool_max_size", "must be between 1 and 100")
    max_batch = section.get("max_batch_records", int, 5000)
    if max_batch <= 0:
        raise section.error("max_batch_records", "must be positive")
    section.reject_unknown()
    if store == "postgres" and not dsn:
        raise section.error("dsn", "store 'postgres' needs dsn or dsn_env")
    return AuditStoreConfig(
        store=store,
        replica_id=replica_id,
        path=path,
        fsync=fsync,
        fsync_interval_s=interval_ms / 1000,
        dsn=dsn or "",
        table=table,
        pool_max_size=pool_max,
        max_batch_records=max_batch,
    )
