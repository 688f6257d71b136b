"""The decision path's HTTP/1.1 client for OPA's data API: ``POST /v1/data/<rule>``.

Every cache miss of every proxy is one such request, so it has to be cheap. An aiohttp
request (opa-python-client's transport, which the PDP keeps for its health checks and its
policy listing) costs about 440 µs p50 / 800 µs p99 against OPA on loopback on the
development machine; the same request written on a kept-alive connection and its answer
read with ``asyncio`` streams costs about 200 µs / 450 µs (bench/pdp_bench.py, docs/
performance.md "Decisions"). This client does only that: a small pool of persistent
connections, Content-Length or chunked answers, one timeout per request, and one retry on
a fresh connection when a pooled one turns out to have been closed by OPA (a query has no
side effects, so sending it again is safe). For the OPA the PDP supervises, the connections
go to a Unix domain socket: a round trip there costs 30-50 µs less at the p50 than over
loopback TCP, with 10-15 % less CPU in this process (bench/opa_transport.py, docs/
performance.md "Decisions").
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass


class OpaHttpError(Exception):
    """No usable answer: ``timeout`` when none came in time, else the connection failed or
    the answer could not be read (``kind``: the exception's class name)."""

    def __init__(self, kind: str, *, timeout: bool = False) -> None:
        super().__init__(kind)
        self.kind = kind
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes


class _StaleConnection(Exception):
    """A pooled connection was closed by the server before it answered."""


class OpaDataClient:
    """POSTs JSON to one OPA over a pool of kept-alive connections."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        token: str | None = None,
        timeout_s: float,
        pool_max: int = 32,
        unix_socket: str | None = None,
    ) -> None:
        """``unix_socket``: connect there instead of to ``host``:``port`` (which then only
        names the server in the Host header)."""
        self.host = host
        self.port = port
        self.unix_socket = unix_socket
        self.timeout_s = timeout_s
        self.pool_max = pool_max
        self._tls = ssl.create_default_context() if tls else None
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._headers = (
            f"Host: {host}:{port}\r\nContent-Type: application/json\r\n{auth}"
        ).encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._closed = False

    async def post(self, path: str, body: bytes) -> HttpAnswer:
        request = b"".join(
            (
                f"POST {path} HTTP/1.1\r\n".encode(),
                self._headers,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                while self._idle:
                    connection = self._idle.pop()
                    try:
                        return await self._exchange(connection, request, reused=True)
                    except _StaleConnection:
                        continue  # closed while idle: try the next, then a new one
                return await self._exchange(await self._connect(), request, reused=False)
        except TimeoutError:
            raise OpaHttpError("TimeoutError", timeout=True) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise OpaHttpError(type(exc).__name__) from exc

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix_socket is not None:
            return await asyncio.open_unix_connection(self.unix_socket)
        return await asyncio.open_connection(
            self.host, self.port, ssl=self._tls, server_hostname=self.host if self._tls else None
        )

    async def _exchange(
        self,
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        request: bytes,
        *,
        reused: bool,
    ) -> HttpAnswer:
        reader, writer = connection
        keep = False
        try:
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                if reused and not getattr(exc, "partial", b""):
                    raise _StaleConnection from exc
                raise
            answer, keep = await read_answer(reader, head)
            return answer
        finally:
            if keep and not self._closed and len(self._idle) < self.pool_max:
                self._idle.append(connection)
            else:
                writer.close()


async def read_answer(reader: asyncio.StreamReader, head: bytes) -> tuple[HttpAnswer, bool]:
    """The answer whose status line and headers are ``head``, and whether the connection
    can carry another request."""
    status_line, *lines = head[:-4].split(b"\r\n")
    version, status, *_ = status_line.split(b" ", 2)
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            body += (await reader.readexactly(size + 2))[:-2]
        return HttpAnswer(int(status), bytes(body)), keep
    length = headers.get(b"content-length")
    if length is None:  # the body runs to the end of the connection
        return HttpAnswer(int(status), await reader.read()), False
    return HttpAnswer(int(status), await reader.readexactly(int(length))), keep
