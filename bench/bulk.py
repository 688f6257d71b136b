"""Bulk read: one 1,000,000-row result (``SELECT id, email FROM bulk``, ~45 MB on the
wire) read with psql into /dev/null — directly, through pgwarden, and through pgwarden
masking one column (``public.bulk.email`` with ``partial_email``). psql (libpq) reads at
C speed, so the time measures the path, not a Python client."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.targets import BENCH_DB, BenchCluster, Endpoint, PgwardenTarget
from pgwarden.stack.postgres import PROXY_ROLE

BULK_ROWS = 1_000_000
BULK_SQL = "SELECT id, email FROM bulk"
MASK = '[decision.mask]\n"public.bulk.email" = "partial_email"\n'


def create_bulk_table(db: BenchCluster, rows: int = BULK_ROWS) -> None:
    db.cluster.psql(
        f"SET ROLE {PROXY_ROLE}; DROP TABLE IF EXISTS bulk;"
        "CREATE TABLE bulk (id integer PRIMARY KEY, email text NOT NULL);"
        f"INSERT INTO bulk SELECT g, 'user' || g || '@example.com' "
        f"FROM generate_series(1, {rows}) g; ANALYZE bulk;",
        dbname=BENCH_DB,
    )


class PgwardenMaskedTarget(PgwardenTarget):
    """The local-mode proxy with one masked column (bulk reads only)."""

    name = "pgwarden-masked"
    description = "pgwarden proxy, local mode, public.bulk.email masked with partial_email"

    def decision_config(self, db: BenchCluster, workdir: Path) -> tuple[str, dict[str, str]]:
        section, roles = super().decision_config(db, workdir)
        return section + MASK, roles


@dataclass
class BulkRead:
    target: str
    rows: int
    megabytes: float
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.megabytes / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "rows": self.rows,
            "megabytes": self.megabytes,
            "seconds": self.seconds,
            "mb_per_s": self.mb_per_s,
        }


def result_megabytes(db: BenchCluster) -> tuple[int, float]:
    """Rows and megabytes on the wire of the unmasked result (DataRow framing included:
    7 bytes a row and 4 a value), counted by the server."""
    psql = str(db.cluster.bindir / "psql")
    env = {**os.environ, **db.direct().libpq_env()}
    query = (
        f"SELECT count(*), sum(octet_length(id::text) + octet_length(email)) FROM ({BULK_SQL}) b"
    )
    out = subprocess.run(
        [psql, "-X", "-A", "-t", "-c", query],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.strip()
    rows, payload = (int(v) for v in out.split("|"))
    return rows, (payload + rows * (7 + 2 * 4)) / 1e6


def read_once(
    db: BenchCluster, name: str, endpoint: Endpoint, rows: int, megabytes: float
) -> BulkRead:
    """Time one full read of the result into /dev/null with psql."""
    psql = str(db.cluster.bindir / "psql")
    env = {**os.environ, **endpoint.libpq_env()}
    started = time.perf_counter()
    subprocess.run(
        [psql, "-X", "-A", "-t", "-o", os.devnull, "-c", BULK_SQL],
        env=env,
        capture_output=True,
        check=True,
        timeout=300,
    )
    return BulkRead(name, rows, megabytes, time.perf_counter() - started)
