"""Framing: protobuf's delimited form, a base-128 varint length followed by the message bytes.

The decoder is fed whatever the transport delivers and hands back whole frames, so it is tested
without a socket. A length above the limit is refused before its body is read, so a garbage
prefix (say, from something that is not a sidecar) cannot make the client buffer unbounded memory.
"""

from __future__ import annotations

from .errors import ProtocolError

__all__ = ["encode_varint", "decode_varint", "encode_frame", "FrameDecoder"]

_MAX_VARINT_BYTES = 10


def encode_varint(value: int) -> bytes:
    """The base-128 varint encoding of a non-negative int below 2**64."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | bytearray, pos: int = 0) -> tuple[int, int] | None:
    """Decodes a varint at ``buf[pos:]``: ``(value, next_pos)``, or ``None`` if it is incomplete.

    Raises ProtocolError for a varint longer than 10 bytes or above 2**64 - 1.
    """
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        if i == _MAX_VARINT_BYTES - 1 and byte > 1:
            raise ProtocolError("frame length prefix is not a valid varint (above 2**64 - 1)")
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ProtocolError("frame length prefix is not a valid varint (longer than 10 bytes)")


def encode_frame(message_bytes: bytes) -> bytes:
    """One frame holding an encoded message."""
    return encode_varint(len(message_bytes)) + message_bytes


class FrameDecoder:
    """Splits a byte stream into frames; refuses lengths above ``max_frame_bytes``."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Adds bytes from the stream; returns the frames they complete, in order."""
        self._buf += data
        frames = []
        pos = 0
        while True:
            prefix = decode_varint(self._buf, pos)
            if prefix is None:
                break
            length, body = prefix
            if length > self.max_frame_bytes:
                raise ProtocolError(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes} bytes"
                )
            if len(self._buf) - body < length:
                break
            frames.append(bytes(self._buf[body : body + length]))
            pos = body + length
        if pos:
            del self._buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buf)

    def finish(self) -> None:
        """Declares the end of the stream; raises ProtocolError if it cut a frame short."""
        if self._buf:
            raise ProtocolError(f"stream ended inside a frame ({len(self._buf)} bytes buffered)")
