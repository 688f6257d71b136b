"""Loading an upstream database's schema catalog over the proxy's own connection."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from pgwarden.proxy.analysis.catalog import (
    CATALOG_QUERIES,
    CATALOG_SETUP_SQL,
    Catalog,
    load_catalog,
)
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer
from pgwarden.proxy.upstream import UpstreamError, UpstreamTarget, connect_upstream

Row = m.TextRow


async def run_queries(
    target: UpstreamTarget,
    *,
    user: str,
    password: str | None,
    database: str,
    statements: Sequence[str],
    max_message_size: int,
    timeout_s: float = 30.0,
) -> list[list[Row]]:
    """Run ``statements`` in one simple query on a connection of our own; the rows of each
    statement that returns rows, in order. Any server error is an UpstreamError."""
    transport, proto, _ = await connect_upstream(
        target,
        user=user,
        password=password,
        parameters={"database": database},
        max_message_size=max_message_size,
    )
    frames = FrameBuffer(max_message_size)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    results: list[list[Row]] = []
    error: list[m.ErrorResponse] = []

    def on_data(data: bytes) -> None:
        frames.feed(data)
        try:
            while (msg := frames.next_message()) is not None:
                type_, body = msg
                if type_ == b"T":
                    results.append([])
                elif type_ == b"D":
                    results[-1].append(m.parse_data_row(body))
                elif type_ == b"E":
                    error.append(m.parse_error_response(body))
                elif type_ == b"Z" and not done.done():
                    done.set_result(None)
        except (m.ProtocolViolation, IndexError, UnicodeDecodeError) as exc:
            if not done.done():
                done.set_exception(m.ProtocolViolation(f"catalog result: {exc}"))

    def on_lost(exc: Exception | None) -> None:
        if not done.done():
            done.set_exception(UpstreamError("08006", "upstream closed the catalog connection"))

    proto.on_data, proto.on_lost = on_data, on_lost
    try:
        transport.write(m.build_query(";\n".join(statements)))
        await asyncio.wait_for(done, timeout_s)
    finally:
        transport.write(m.build_terminate())
        transport.close()
    if error:
        raise UpstreamError(error[0].sqlstate, f"catalog query failed: {error[0].message}")
    return results


# Catalog rows (view definitions) can be long; this connection is the proxy's own.
CATALOG_MAX_MESSAGE_SIZE = 1 << 30


async def fetch_catalog(
    target: UpstreamTarget,
    *,
    user: str,
    password: str | None,
    database: str,
    max_message_size: int = CATALOG_MAX_MESSAGE_SIZE,
) -> Catalog:
    """The catalog of ``database``, read in one read-only transaction."""
    names = list(CATALOG_QUERIES)
    statements = [
        "BEGIN READ ONLY",
        CATALOG_SETUP_SQL,
        *(CATALOG_QUERIES[n] for n in names),
        "COMMIT",
    ]
    results = await run_queries(
        target,
        user=user,
        password=password,
        database=database,
        statements=statements,
        max_message_size=max_message_size,
    )
    rows: Mapping[str, list[Row]] = dict(zip(names, results, strict=True))
    return load_catalog(rows)
