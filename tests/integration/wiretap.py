"""A wiretap between the suite's clients and a proxy: it relays every byte unchanged and
writes down what each client connection received — per statement, the rows, the bytes of
those rows and how the statement ended — so the proxy's audit trail can be checked against
what the clients actually got (issue #7, acceptance 1), for every statement the
integration suites run.

    python -m tests.integration.wiretap --port P --target HOST:PORT --out FILE
        [--tls-cert CERT --tls-key KEY]

One JSON line per connection, written when it closes. With the proxy's own certificate the
tap terminates TLS and opens TLS to the proxy, so a client that verifies the certificate
still does. :func:`reconcile` compares the lines with the audit records.

The tap reads the protocol on its own (the PostgreSQL docs' message flow, not the proxy's
relay): a Sync or a Query opens a reply segment that the server closes with ReadyForQuery;
a statement ends with CommandComplete, PortalSuspended or an ErrorResponse; after an error
the server skips the rest of its segment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import struct
import sys
import tomllib
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgwarden.pdp.audit.store import read_jsonl_lines
from pgwarden.stack.process import ManagedProcess, free_port, port_accepts

_LENGTH = struct.Struct("!i")
SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102
STARTUP_CODES = {SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST}


_NO_BODY: frozenset[int] = frozenset()
_BODIES = frozenset(range(256)) - frozenset(b"Dd")  # every body but a row's


class _Frames:
    """Splits a byte stream into typed messages without buffering the bodies nobody reads."""

    def __init__(self) -> None:
        self._partial = b""
        self._skip = 0
        self.last_total = 0  # the whole size of the last message returned

    def feed(self, data: bytes, bodies: frozenset[int]) -> Iterator[tuple[int, bytes | None]]:
        """(type, body) per message; body None when its type is not in ``bodies``."""
        if self._skip:
            take = min(self._skip, len(data))
            self._skip -= take
            data = data[take:]
        buf = self._partial + data if self._partial else data
        pos, n = 0, len(buf)
        while n - pos >= 5:
            type_ = buf[pos]
            (length,) = _LENGTH.unpack_from(buf, pos + 1)
            total = length + 1
            if type_ in bodies:
                if n - pos < total:
                    break
                self.last_total = total
                yield type_, buf[pos + 5 : pos + total]
            else:
                self.last_total = total
                yield type_, None
                if n - pos < total:
                    self._skip = total - (n - pos)
                    pos = n
                    break
            pos += total
        self._partial = buf[pos:]


@dataclass
class _Segment:
    """Frontend messages answered by one ReadyForQuery: a Query (or FunctionCall), or
    extended-protocol messages up to a Sync."""

    simple: bool
    executes: int = 0  # Executes the server has not answered yet
    parses: int = 0  # Parses, which the proxy may refuse before any Execute
    failed: bool = False  # an error: the server skips the rest of the segment
    closed: bool = True  # an extended segment stays open until its Sync


@dataclass
class WireView:
    """What one connection's client sent and received, from the bytes alone (no I/O)."""

    port: int = 0  # the tap's port towards the proxy: the proxy's peer port
    kind: str = "none"  # startup, cancel, or none (closed before a startup message)
    tls: bool = False
    ready: bool = False  # the client saw ReadyForQuery after authentication
    fatal: str = ""  # SQLSTATE of a FATAL error the client received
    opaque: str = ""  # why the tap could not read the stream (then nothing is checked)
    events: list[dict[str, Any]] = field(default_factory=list)
    _client_frames: _Frames = field(default_factory=_Frames)
    _server_frames: _Frames = field(default_factory=_Frames)
    _segments: deque[_Segment] = field(default_factory=deque)
    _rows: int = 0
    _bytes: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "kind": self.kind,
            "tls": self.tls,
            "ready": self.ready,
            "fatal": self.fatal,
            "opaque": self.opaque,
            "events": self.events,
        }

    # -- client -> proxy -------------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        """Typed frontend messages, after the startup message: only their types matter."""
        for type_, _ in self._client_frames.feed(data, _NO_BODY):
            self._client_message(bytes((type_,)))

    def _segment(self) -> _Segment:
        if self._segments and not self._segments[-1].closed:
            return self._segments[-1]
        segment = _Segment(simple=False, closed=False)
        self._segments.append(segment)
        return segment

    def _client_message(self, type_: bytes) -> None:
        if type_ in (b"Q", b"F"):  # Query, FunctionCall
            self._segments.append(_Segment(simple=True))
        elif type_ == b"E":  # Execute
            segment = self._segment()
            if not segment.failed:
                segment.executes += 1
        elif type_ == b"S":  # Sync
            self._segment().closed = True
        elif type_ == b"P":  # Parse
            self._segment().parses += 1
        elif type_ in b"BDCH":  # Bind, Describe, Close, Flush
            self._segment()

    # -- proxy -> client -------------------------------------------------------------------

    def server_data(self, data: bytes) -> None:
        for type_, body in self._server_frames.feed(data, _BODIES):
            if body is None:  # DataRow, CopyData: counted whole, never read
                if self.ready:
                    self._rows += 1
                    self._bytes += self._server_frames.last_total
            else:
                self._server_message(type_, body)

    def _server_message(self, type_: int, body: bytes) -> None:
        head = self._segments[0] if self._segments else None
        if type_ == ord("Z"):  # ReadyForQuery
            if not self.ready:
                self.ready = True
            elif self._segments:
                self._segments.popleft()
            self._rows = self._bytes = 0
        elif type_ in (ord("C"), ord("s")):  # CommandComplete, PortalSuspended
            tag = body.rstrip(b"\0").decode("utf-8", "replace") if type_ == ord("C") else ""
            self._event("suspended" if type_ == ord("s") else "complete", tag=tag)
            if head is not None and not head.simple:
                head.executes -= 1
        elif type_ == ord("I"):  # EmptyQueryResponse
            self._event("empty")
            if head is not None and not head.simple:
                head.executes -= 1
        elif type_ == ord("E"):  # ErrorResponse
            fields = _error_fields(body)
            severity = fields.get("V", fields.get("S", ""))
            sqlstate = fields.get("C", "")
            if severity in ("FATAL", "PANIC"):
                self.fatal = sqlstate
            # A protocol violation ends the connection; no statement could be read.
            statement = not (severity == "FATAL" and sqlstate == "08P01")
            # A Parse no Execute follows is decided too: its refusal is a statement's
            # (the policy's, with a decision id, or the proxy's own 42601 for SQL it
            # cannot parse); the server's own error at a Parse is not.
            pending = head is not None and (
                head.simple
                or head.executes > 0
                or (
                    head.parses > 0
                    and ("decision_id=" in fields.get("D", "") or sqlstate == "42601")
                )
            )
            if self.ready and statement and pending:
                decision = fields.get("D", "")
                self._event("error", sqlstate=sqlstate, decision=decision)
            if head is not None and not head.simple:
                head.executes, head.parses, head.failed = 0, 0, True
            self._rows = self._bytes = 0

    def _event(self, kind: str, **extra: str) -> None:
        self.events.append({"k": kind, "rows": self._rows, "bytes": self._bytes, **extra})
        self._rows = self._bytes = 0


def _error_fields(body: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


# -- the relay ------------------------------------------------------------------------------


class Wiretap:
    """Accepts clients on ``port`` and relays each to ``target`` through a :class:`WireView`."""

    def __init__(
        self, target: tuple[str, int], out: str, tls: tuple[str, str] | None = None
    ) -> None:
        self.target = target
        self.out = open(out, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.server_tls: ssl.SSLContext | None = None
        self.client_tls: ssl.SSLContext | None = None
        if tls is not None:
            self.server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.server_tls.load_cert_chain(*tls)
            self.client_tls = ssl.create_default_context()
            self.client_tls.check_hostname = False
            self.client_tls.verify_mode = ssl.CERT_NONE  # the client verifies the tap
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        view = WireView()
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            view.port = up_writer.get_extra_info("sockname")[1]
            if await self._startup(view, reader, writer, up_reader, up_writer):
                await asyncio.gather(
                    _pump(reader, up_writer, view.client_data if not view.opaque else None),
                    _pump(up_reader, writer, view.server_data if not view.opaque else None),
                )
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.out.write(json.dumps(view.summary()) + "\n")
            self.out.flush()
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self.handlers.discard(task)

    async def _startup(
        self,
        view: WireView,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """The untyped start of a connection; False when it ended there."""
        while True:
            head = await _first(reader.readexactly(8), up_reader)
            if head is None:
                return False
            length, code = struct.unpack("!ii", head)
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                up_writer.write(head)
                await up_writer.drain()
                answer = await up_reader.readexactly(1)
                if answer == b"S" and code == SSL_REQUEST:
                    if self.server_tls is None or self.client_tls is None:
                        view.opaque = "TLS without the proxy's certificate"
                        writer.write(answer)
                        return True
                    await up_writer.start_tls(self.client_tls)
                    writer.write(answer)
                    await writer.drain()
                    await writer.start_tls(self.server_tls)
                    view.tls = True
                else:
                    writer.write(answer)
                    await writer.drain()
                continue
            rest = await reader.readexactly(length - 8)
            up_writer.write(head + rest)
            await up_writer.drain()
            if code == CANCEL_REQUEST:
                view.kind, view.opaque = "cancel", "cancel request"
            else:
                view.kind = "startup"
            return True

    async def close(self) -> None:
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        self.out.close()


async def _first(read: Any, up_reader: asyncio.StreamReader) -> bytes | None:
    """The client's next bytes, or None when the proxy hangs up first (e.g. a startup
    timeout) — the server speaks first only to close."""
    client = asyncio.ensure_future(read)
    upstream = asyncio.ensure_future(up_reader.read(1))
    done, _ = await asyncio.wait({client, upstream}, return_when=asyncio.FIRST_COMPLETED)
    if client in done:
        upstream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upstream
        return client.result()  # type: ignore[no-any-return]
    client.cancel()
    with contextlib.suppress(asyncio.CancelledError, asyncio.IncompleteReadError):
        await client
    return None


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, observe: Any | None
) -> None:
    try:
        while data := await reader.read(65536):
            if observe is not None:
                observe(data)
            writer.write(data)
            await writer.drain()
    finally:
        if writer.can_write_eof() and not writer.is_closing():
            with contextlib.suppress(OSError):
                writer.write_eof()
        else:
            writer.close()


async def _serve(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    tap = Wiretap((host, int(port)), args.out, tls)
    server = await asyncio.start_server(tap.handle, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await tap.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="the proxy, HOST:PORT")
    parser.add_argument("--out", required=True, help="JSON Lines, one per connection")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    asyncio.run(_serve(parser.parse_args()))


class WiretapProcess:
    """The tap as a child process in front of ``target``; its lines go to ``base/wiretap.jsonl``."""

    def __init__(
        self, base: Path, target: tuple[str, int], *, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.port = free_port()
        self.out = base / "wiretap.jsonl"
        argv = [sys.executable, "-m", "tests.integration.wiretap", "--port", str(self.port)]
        argv += ["--target", f"{target[0]}:{target[1]}", "--out", str(self.out)]
        if tls is not None:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        root = Path(__file__).resolve().parents[2]
        self.process = ManagedProcess("wiretap", argv, log_path=base / "wiretap.log", cwd=root)

    def start_and_wait(self) -> None:
        self.process.start()
        self.process.wait_ready(lambda: port_accepts("127.0.0.1", self.port))

    def stop(self) -> None:
        code = self.process.stop()
        assert code == 0, self.process.exit_message()

    def connections(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]


def proxy_certificate(config: Path) -> tuple[Path, Path] | None:
    """The certificate and key of a proxy config's ``[tls]``, for the tap to present."""
    tls = tomllib.loads(config.read_text()).get("tls")
    return (Path(tls["cert_file"]), Path(tls["key_file"])) if tls else None


# -- reconciliation ----------------------------------------------------------------------------


def _affected(tag: str) -> int | None:
    last = tag.rsplit(" ", 1)[-1]
    return int(last) if " " in tag and last.isdigit() else None


def jsonl_records(path: Path) -> list[dict[str, Any]]:
    """The records of an audit trail file (JSON Lines), for :func:`reconcile`; none when
    there is no file."""
    if not path.exists():
        return []
    return [json.loads(text) for _, text in read_jsonl_lines(path)]


def reconcile(
    connections: Iterable[Mapping[str, Any]], records: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Problems found comparing what clients received (the tap's lines) with the audit
    records of one proxy: an empty list when every statement a client saw end is recorded
    exactly once with the rows and bytes the client got, and nothing else is."""
    problems: list[str] = []
    sessions: dict[str, list[Mapping[str, Any]]] = {}
    opened: dict[int, deque[str]] = {}
    auth_refused: Counter[int] = Counter()
    for record in records:
        kind = record["kind"]
        if kind == "auth_refused":
            auth_refused[record.get("client_port", 0)] += 1
            continue
        sessions.setdefault(record["session_id"], []).append(record)
        if kind == "session_open":
            opened.setdefault(record.get("client_port", 0), deque()).append(record["session_id"])
    seen: set[str] = set()
    for conn in connections:
        if conn["kind"] != "startup" or conn["opaque"]:
            continue
        port = conn["port"]
        queue = opened.get(port)
        if not conn["ready"]:
            if auth_refused[port]:
                auth_refused[port] -= 1
            elif queue:
                seen.add(queue.popleft())  # admitted or refused, then it ended
            elif conn["fatal"]:
                problems.append(f"port {port}: connection refused ({conn['fatal']}), unrecorded")
            continue
        if not queue:
            problems.append(f"port {port}: a session the client used has no session_open")
            continue
        session_id = queue.popleft()
        seen.add(session_id)
        problems += [
            f"session {session_id} (port {port}): {p}"
            for p in _reconcile_session(conn["events"], sessions[session_id])
        ]
    for session_id in sessions.keys() - seen:
        problems.append(f"session {session_id}: recorded, but no client connection had it")
    return problems


def _reconcile_session(
    events: list[Mapping[str, Any]], records: list[Mapping[str, Any]]
) -> list[str]:
    problems: list[str] = []
    kinds = Counter(r["kind"] for r in records)
    if kinds["session_open"] != 1 or kinds["session_close"] != 1:
        problems.append(f"session records: {dict(kinds)}")
    # Statements that ended normally, in order: rows, bytes and the CommandComplete count.
    received = [
        (e["k"], e["rows"], e["bytes"], _affected(e.get("tag", "")))
        for e in events
        if e["k"] in ("complete", "suspended")
    ]
    recorded = [
        (
            r["outcome"]["status"],
            r["outcome"]["rows"],
            r["outcome"]["bytes_sent"],
            r["outcome"]["rows_affected"],
        )
        for r in records
        if r["kind"] == "statement"
        and r["outcome"]["status"] in ("complete", "suspended")
        and not r["outcome"]["row_limit_reached"]
    ]
    if received != recorded:
        problems.append(f"completed statements: client got {received}, audit has {recorded}")
    # Statements that ended in an error the client saw (failed, cut by a row limit, refused).
    errors_received = Counter(
        (e["rows"], e["bytes"], e["sqlstate"]) for e in events if e["k"] == "error"
    )
    errors_recorded = Counter(
        (
            r["outcome"]["rows"],
            r["outcome"]["bytes_sent"],
            "54000" if r["outcome"]["row_limit_reached"] else r["outcome"]["sqlstate"],
        )
        for r in records
        if r["kind"] == "refusal"
        or (
            r["kind"] == "statement"
            and r["outcome"]["status"] != "skipped"
            and (r["outcome"]["status"] == "failed" or r["outcome"]["row_limit_reached"])
        )
    )
    if errors_received != errors_recorded:
        problems.append(
            f"statements that ended in an error: client got {sorted(errors_received.items())}, "
            f"audit has {sorted(errors_recorded.items())}"
        )
    return problems


if __name__ == "__main__":
    main()
