"""Memory of a relaying process with many idle, authenticated client connections."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

import asyncpg
import uvloop

from bench.targets import Endpoint, ProcessStats


@dataclass
class IdleMemory:
    """RSS of one target's process before and while holding ``connections`` idle sessions."""

    target: str
    connections: int
    rss_before_kib: int
    rss_idle_kib: int
    connect_seconds: float

    @property
    def per_connection_kib(self) -> float:
        return (self.rss_idle_kib - self.rss_before_kib) / self.connections

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "per_connection_kib": round(self.per_connection_kib, 2)}


def measure_idle_memory(
    target: str, endpoint: Endpoint, pid: int, connections: int, *, settle_s: float = 2.0
) -> IdleMemory:
    """Open ``connections`` sessions (each authenticated and, through pgwarden, with its
    upstream backend), leave them idle for ``settle_s``, read the process's RSS."""
    return uvloop.run(_measure(target, endpoint, pid, connections, settle_s))


async def _measure(
    target: str, endpoint: Endpoint, pid: int, connections: int, settle_s: float
) -> IdleMemory:
    stats = ProcessStats(pid)
    before = stats.rss_kib()
    # Connect in small waves: through the PDP every new session is a session decision
    # and a cache miss, and 32 at once with policies/ queue past OPA's 200 ms timeout.
    gate = asyncio.Semaphore(8)

    async def connect() -> asyncpg.Connection:
        async with gate:
            session = await asyncpg.connect(
                host=endpoint.host,
                port=endpoint.port,
                user=endpoint.user,
                password=endpoint.password,
                database=endpoint.dbname,
                ssl=False,
                timeout=60,
                statement_cache_size=0,
            )
            # One query, so the session is established end to end (and, through the
            # PDP, its first decision made: in waves, not 1,000 cache misses at once).
            await session.fetchval("SELECT 1")
            return session

    started = time.monotonic()
    sessions = await asyncio.gather(*(connect() for _ in range(connections)))
    connect_seconds = time.monotonic() - started
    try:
        await asyncio.sleep(settle_s)
        idle = stats.rss_kib()
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return IdleMemory(target, connections, before, idle, connect_seconds)
