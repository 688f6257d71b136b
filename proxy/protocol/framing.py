"""Cutting a byte stream into protocol messages, with a bound on message size."""

from __future__ import annotations

import struct

from pgwarden.proxy.protocol.messages import ProtocolViolation

_LEN = struct.Struct("!i")
_HEADER = struct.Struct("!ci")


class FrameBuffer:
    """Accumulates bytes from one peer and returns whole messages, in order.

    A declared length below the minimum or above ``max_message_size`` is a
    :class:`ProtocolViolation`: the peer is either broken or hostile, and buffering what it
    announced would let it make us hold unbounded memory.
    """

    __slots__ = ("_buf", "_pos", "max_message_size")

    def __init__(self, max_message_size: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_message_size = max_message_size

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned as messages."""
        return len(self._buf) - self._pos

    def next_startup(self) -> bytes | None:
        """The next untyped startup-phase packet's body (after its length word), if whole."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        (length,) = _LEN.unpack_from(buf, pos)
        if length < 8 or length > min(self.max_message_size, 10000):
            raise ProtocolViolation(f"invalid startup packet length {length}")
        if len(buf) - pos < length:
            return None
        self._pos = pos + length
        return bytes(buf[pos + 4 : pos + length])

    def next_message(self) -> tuple[bytes, bytes] | None:
        """The next typed message as (type byte, body), if whole."""
        raw = self.next_frame()
        return None if raw is None else (raw[:1], raw[5:])

    def next_frame(self) -> bytes | None:
        """The next typed message whole (type byte, length, body), if whole: what a relay
        forwards, without cutting the body out and framing it again."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            return None
        _, length = _HEADER.unpack_from(buf, pos)
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length}")
        if length > self.max_message_size:
            raise ProtocolViolation(
                f"message of {length} bytes exceeds the maximum of {self.max_message_size}"
            )
        end = pos + 1 + length
        if len(buf) < end:
            return None
        self._pos = end
        return bytes(buf[pos:end])

    def take_rest(self) -> bytes:
        """Everything not yet returned (e.g. bytes that arrived before a TLS upgrade)."""
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return rest
