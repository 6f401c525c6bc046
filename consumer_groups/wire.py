"""Big-endian primitives shared by the two tiny binary formats here (ConsumerProtocol bytes and the
`__consumer_offsets` records): int16-length strings, int32-length bytes and arrays."""

from __future__ import annotations

import struct


class WireFormatError(ValueError):
    """Truncated or malformed bytes."""


class ByteReader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise WireFormatError(f"truncated at byte {self.pos}")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise WireFormatError(f"bad length {size} at byte {self.pos}")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def string(self) -> str:
        value = self.nullable_string()
        if value is None:
            raise WireFormatError(f"null string at byte {self.pos - 2}")
        return value

    def nullable_string(self) -> str | None:
        size = self.take(">h")
        if size == -1:
            return None
        try:
            return self.raw(size).decode()
        except UnicodeDecodeError as exc:
            raise WireFormatError(f"string is not UTF-8: {exc}") from None

    def nullable_bytes(self) -> bytes | None:
        size = self.take(">i")
        return None if size == -1 else self.raw(size)

    def count(self) -> int:
        n = self.take(">i")
        if n < 0 or n > len(self.data) - self.pos:  # every element takes at least one byte
            raise WireFormatError(f"bad array length {n} at byte {self.pos - 4}")
        return n

    def remaining(self) -> int:
        return len(self.data) - self.pos


def pack_string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    if len(raw) > 0x7FFF:
        raise WireFormatError(f"string of {len(raw)} bytes does not fit an int16 length")
    return struct.pack(">h", len(raw)) + raw


def pack_bytes(b: bytes | None) -> bytes:
    return struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b
