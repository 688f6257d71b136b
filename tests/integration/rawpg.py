"""A minimal hand-driven PostgreSQL client for tests that need exact protocol control."""

from __future__ import annotations

import socket
import ssl

from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer


class RawClient:
    """Speak the protocol message by message; every read has a socket timeout."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout_s
        )
        self.frames = FrameBuffer(1 << 30)

    def close(self) -> None:
        self.sock.close()

    def start_tls(self, ca_file: str, server_hostname: str) -> None:
        """SSLRequest, then TLS with the server's certificate verified against ``ca_file``."""
        self.send(m.build_ssl_request())
        assert self.recv_byte() == b"S"
        context = ssl.create_default_context(cafile=ca_file)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_byte(self) -> bytes:
        return self.sock.recv(1)

    def read(self) -> tuple[bytes, bytes] | None:
        """The next message, or None when the peer closed the connection."""
        while (msg := self.frames.next_message()) is None:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.frames.feed(data)
        return msg

    def read_until(self, type_: bytes) -> list[tuple[bytes, bytes]]:
        out = []
        while True:
            msg = self.read()
            assert msg is not None, f"connection closed before {type_!r}; got {out}"
            out.append(msg)
            if msg[0] == type_:
                return out

    def login(self, user: str, token: str, database: str, **params: str) -> list[bytes]:
        """Startup and cleartext password; the message types up to ReadyForQuery."""
        self.send(m.build_startup_message({"user": user, "database": database, **params}))
        return self.answer_password(token)

    def answer_password(self, token: str) -> list[bytes]:
        msg = self.read()
        assert msg is not None
        assert msg[0] == b"R", msg
        assert m.parse_authentication(msg[1]).code == m.AUTH_CLEARTEXT
        self.send(m.build_password_message(token.encode() + b"\0"))
        return [t for t, _ in self.read_until(b"Z")]

    def error(self) -> m.ErrorResponse:
        """Read until an ErrorResponse and return it."""
        for type_, body in iter(self.read, None):
            if type_ == b"E":
                return m.parse_error_response(body)
        raise AssertionError("connection closed without an ErrorResponse")
