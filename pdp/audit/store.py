"""Audit stores: an append-only JSON Lines file (embedded default) and a PostgreSQL table.

Both are idempotent by ``record_id`` (a replay after a lost acknowledgement stores
nothing twice) and number every new record in this replica's hash chain
(:mod:`pgwarden.pdp.audit.chain`). :class:`AuditWriter` sits in front of a store and
writes whatever arrived meanwhile as one batch (one write, one fsync or one transaction),
so many proxies reporting at once share the cost of making records durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from pgwarden.pdp.audit.chain import ChainHead
from pgwarden.pdp.audit.config import AuditStoreConfig
from pgwarden.pdp.audit.record_ids import RecordIdIndex, RecordKey
from pgwarden.pdp.log import log_event


class AuditStoreError(Exception):
    """Records could not be made durable; nothing of the batch is acknowledged."""


class AuditStore(Protocol):
    replica_id: str

    async def open(self) -> None: ...

    async def append(self, documents: Sequence[dict[str, Any]]) -> list[bool]:
        """Chain and store ``documents`` durably; per document, True when it was stored
        now, False when the store already held its ``record_id``. Raise AuditStoreError
        when nothing can be guaranteed."""
        ...

    async def close(self) -> None: ...


def _now_us() -> int:
    return time.time_ns() // 1000


# -- JSON Lines ------------------------------------------------------------------------------


def read_jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each non-empty line of an audit file."""
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            text = line.rstrip("\n")
            if text.strip():
                yield number, text


class JsonlStore:
    """One append-only file per replica: each line the canonical JSON of one chained
    record. ``fsync``: ``always`` (after every record), ``batch`` (once per batch, before
    the acknowledgement), ``interval`` (every ``fsync_interval_s``; an acknowledged record
    survives a PDP crash but not a crash of the machine within that interval)."""

    def __init__(self, config: AuditStoreConfig) -> None:
        self.path = config.path
        self.replica_id = config.chain_id
        self.fsync = config.fsync
        self.fsync_interval_s = config.fsync_interval_s
        self.head = ChainHead()
        self.record_ids = RecordIdIndex()
        self._fd = -1
        self._size = 0
        self._dirty = False
        self._syncer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await asyncio.to_thread(self._recover)
        if self.fsync == "interval":
            self._syncer = asyncio.create_task(self._sync_periodically(), name="audit-fsync")

    def _recover(self) -> None:
        """Read what the file holds (ids, this replica's head); cut a torn last line (a
        crash in the middle of a write: that batch was never acknowledged)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            end = 0
            torn = 0
            with open(fd, "rb", closefd=False) as f:
                for line in f:  # streamed: the file may be large
                    if not line.endswith(b"\n"):
                        torn = len(line)
                        break
                    end += len(line)
                    self._remember(line)
            if torn:
                os.ftruncate(fd, end)
                os.fsync(fd)
                log_event("audit_torn_tail", level="warning", path=str(self.path), bytes=torn)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = end
        log_event(
            "audit_store_opened",
            store="jsonl",
            path=str(self.path),
            records=len(self.record_ids),
            record_id_runs=self.record_ids.runs(),
            replica_id=self.replica_id,
            head_seq=self.head.seq,
        )

    def _remember(self, line: bytes) -> None:
        try:
            document = orjson.loads(line)  # 9 µs a record line, not 16: the start reads them all
        except ValueError:
            return  # `pgwarden audit verify` reports it; the chain goes on
        if not isinstance(document, dict):
            return
        self.record_ids.add(str(document.get("record_id", "")))
        if document.get("replica_id") == self.replica_id:
            seq, digest = document.get("seq"), document.get("hash")
            if isinstance(seq, int) and isinstance(digest, str) and seq > self.head.seq:
                self.head = ChainHead(seq, digest)

    async def append(self, documents: Sequence[dict[str, Any]]) -> list[bool]:
        if self._fd < 0:
            raise AuditStoreError("the audit file is not open")
        head = ChainHead(self.head.seq, self.head.hash)
        index = self.record_ids
        fresh: dict[RecordKey, None] = {}  # in order: the index keeps runs of consecutive ids
        flags: list[bool] = []
        lines: list[bytes] = []
        stored_at = _now_us()
        for document in documents:
            key = index.key(document["record_id"])
            if key in fresh or index.holds(key):
                flags.append(False)
                continue
            fresh[key] = None
            document["stored_at_us"] = stored_at
            lines.append(head.link_canonical(document, self.replica_id) + b"\n")
            flags.append(True)
        if lines:
            try:
                await asyncio.to_thread(self._write, lines)
            except OSError as exc:
                raise AuditStoreError(f"{self.path}: {exc}") from exc
            self.head = head
            for key in fresh:
                index.add_key(key)
        return flags

    def _write(self, lines: list[bytes]) -> None:
        try:
            if self.fsync == "always":
                for line in lines:
                    _write_all(self._fd, line)
                    os.fsync(self._fd)
            else:
                _write_all(self._fd, b"".join(lines))
                if self.fsync == "batch":
                    os.fsync(self._fd)
                else:
                    self._dirty = True
        except OSError:
            # A short write (disk full) must not leave half a line for the next batch.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += sum(len(line) for line in lines)

    async def _sync_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_interval_s)
            if self._dirty and self._fd >= 0:
                self._dirty = False
                try:
                    await asyncio.to_thread(os.fsync, self._fd)
                except OSError as exc:
                    log_event("audit_fsync_failed", level="error", error=str(exc))

    async def close(self) -> None:
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# -- PostgreSQL ------------------------------------------------------------------------------


def _asyncpg() -> Any:
    """asyncpg, imported on first use: only the PostgreSQL store and the CLI need it."""
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

    return asyncpg


def quote_table(table: str) -> str:
    """``schema.table`` (already validated as identifiers) → a quoted SQL name."""
    return ".".join(f'"{part}"' for part in table.split("."))


def table_ddl(table: str) -> list[str]:
    """The audit table and its indexes. Query columns are generated from the stored
    record, so they can never disagree with what the chain covers."""
    name = quote_table(table)
    index = table.replace(".", "_")
    return [
        f"""CREATE TABLE IF NOT EXISTS {name} (
            replica_id text NOT NULL,
            seq bigint NOT NULL,
            record_id text NOT NULL UNIQUE,
            hash text NOT NULL,
            record jsonb NOT NULL,
            time_us bigint GENERATED ALWAYS AS ((record->>'time_us')::bigint) STORED,
            kind text GENERATED ALWAYS AS (record->>'kind') STORED,
            subject text GENERATED ALWAYS AS (record->'identity'->>'subject') STORED,
            action text GENERATED ALWAYS AS (record->'decision'->>'action') STORED,
            PRIMARY KEY (replica_id, seq)
        )""",
        f'CREATE INDEX IF NOT EXISTS "{index}_time" ON {name} (time_us)',
        f'CREATE INDEX IF NOT EXISTS "{index}_subject" ON {name} (subject, time_us)',
    ]


def _lock_key(table: str, replica_id: str) -> int:
    digest = hashlib.blake2b(f"{table}\0{replica_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresStore:
    """A table in a database of the operator's choice, written from a connection pool.

    Each batch is one transaction: a transaction-scoped advisory lock on this replica's
    chain, the chain's head read from the table, the ids the table already holds left
    out, the rest inserted with COPY. Two processes that share a replica id therefore
    still build one unbroken chain, and a record sent to two replicas (a failover after
    a lost acknowledgement) is stored once: the loser of that race retries its batch.
    """

    RETRIES = 3

    def __init__(self, config: AuditStoreConfig) -> None:
        self.dsn = config.dsn
        self.table = config.table
        self.replica_id = config.chain_id
        self.pool_max_size = config.pool_max_size
        self._name = quote_table(config.table)
        self._lock = _lock_key(config.table, self.replica_id)
        self._pool: Any = None

    async def open(self) -> None:
        asyncpg = _asyncpg()

        try:
            await self._ensure_pool()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The PDP starts anyway: reports fail (UNAVAILABLE), proxies spool and retry.
            log_event("audit_store_unavailable", level="error", error=str(exc))
        log_event(
            "audit_store_opened", store="postgres", table=self.table, replica_id=self.replica_id
        )

    async def _ensure_pool(self) -> Any:
        """The pool, created (with the table) on first use or after a failed start."""
        asyncpg = _asyncpg()

        if self._pool is None:
            pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_max_size, command_timeout=30
            )
            try:
                async with pool.acquire() as conn:
                    for statement in table_ddl(self.table):
                        await conn.execute(statement)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        return self._pool

    async def append(self, documents: Sequence[dict[str, Any]]) -> list[bool]:
        asyncpg = _asyncpg()

        for attempt in range(self.RETRIES):
            try:
                pool = await self._ensure_pool()
                async with pool.acquire() as conn, conn.transaction():
                    return await self._append(conn, documents)
            except asyncpg.UniqueViolationError:
                if attempt == self.RETRIES - 1:
                    raise AuditStoreError("record ids keep colliding") from None
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise AuditStoreError(f"{self.table}: {exc}") from exc
        raise AuditStoreError("unreachable")  # pragma: no cover

    async def _append(self, conn: Any, documents: Sequence[dict[str, Any]]) -> list[bool]:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock)
        ids = [d["record_id"] for d in documents]
        held = {
            row[0]
            for row in await conn.fetch(
                f"SELECT record_id FROM {self._name} WHERE record_id = ANY($1::text[])",  # noqa: S608
                ids,
            )
        }
        row = await conn.fetchrow(
            # The table name is a validated identifier (config), never client input.
            f"SELECT seq, hash FROM {self._name} WHERE replica_id = $1 "  # noqa: S608
            "ORDER BY seq DESC LIMIT 1",
            self.replica_id,
        )
        head = ChainHead(row[0], row[1]) if row is not None else ChainHead()
        flags: list[bool] = []
        rows: list[tuple[str, int, str, str, str]] = []
        stored_at = _now_us()
        for document in documents:
            record_id = document["record_id"]
            if record_id in held:
                flags.append(False)
                continue
            held.add(record_id)
            document["stored_at_us"] = stored_at
            text = head.link_canonical(document, self.replica_id).decode()
            rows.append((self.replica_id, head.seq, record_id, head.hash, text))
            flags.append(True)
        if rows:
            schema, _, table = self.table.rpartition(".")
            await conn.copy_records_to_table(
                table,
                schema_name=schema or None,
                records=rows,
                columns=["replica_id", "seq", "record_id", "hash", "record"],
            )
        return flags

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def open_store(config: AuditStoreConfig) -> JsonlStore | PostgresStore:
    return PostgresStore(config) if config.store == "postgres" else JsonlStore(config)


# -- group commit ----------------------------------------------------------------------------


class AuditWriter:
    """Writes records handed in by concurrent ``ReportExecutions`` calls together: one
    store append (one fsync / one transaction) for everything that arrived meanwhile."""

    def __init__(self, store: AuditStore, *, max_batch_records: int = 5000) -> None:
        self.store = store
        self.max_batch_records = max_batch_records
        self.stored = 0
        self.duplicates = 0
        self.failures = 0
        self._queue: asyncio.Queue[tuple[list[dict[str, Any]], asyncio.Future[int]] | None] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.open()
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def write(self, documents: list[dict[str, Any]]) -> int:
        """Make ``documents`` durable; returns how many were new (the rest were already
        stored). Raises AuditStoreError when they could not be made durable."""
        if not documents:
            return 0
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((documents, future))
        return await future

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            pending = [first]
            count = len(first[0])
            while count < self.max_batch_records and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True  # write what came before the stop, then end
                    break
                pending.append(item)
                count += len(item[0])
            await self._write_batch(pending)

    async def _write_batch(
        self, pending: list[tuple[list[dict[str, Any]], asyncio.Future[int]]]
    ) -> None:
        batch = [d for documents, _ in pending for d in documents]
        try:
            flags = await self.store.append(batch)
        except Exception as exc:  # whatever it is, nothing of the batch is acknowledged
            self.failures += 1
            log_event("audit_store_failed", level="error", error=str(exc), records=len(batch))
            error = exc if isinstance(exc, AuditStoreError) else AuditStoreError(str(exc))
            for _, future in pending:
                if not future.done():
                    future.set_exception(error)
            return
        position = 0
        for documents, future in pending:
            new = sum(flags[position : position + len(documents)])
            position += len(documents)
            self.stored += new
            self.duplicates += len(documents) - new
            if not future.done():
                future.set_result(new)

    async def close(self) -> None:
        if self._task is not None:
            # Write what is queued, then stop; a batch is never cut in the middle.
            await self._queue.put(None)
            await self._task
            self._task = None
        await self.store.close()


async def read_table(
    dsn: str,
    table: str,
    *,
    where: str = "",
    params: Sequence[Any] = (),
    order: str = "",
    limit: int | None = None,
) -> AsyncIterator[tuple[int, str]]:
    """``(row number, record JSON)`` from an audit table, streamed with a cursor."""
    asyncpg = _asyncpg()

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            sql = f"SELECT record::text FROM {quote_table(table)}"  # noqa: S608
            if where:
                sql += f" WHERE {where}"
            sql += f" ORDER BY {order or 'replica_id, seq'}"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            number = 0
            async for row in conn.cursor(sql, *params):
                number += 1
                yield number, row[0]
    finally:
        await conn.close()
