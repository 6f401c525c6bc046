"""Compression codecs of Kafka record batches (attributes bits 0-2).

Only clients (and the compactor) ever call these: the broker passes compressed batches through untouched.
Framing follows what Kafka's Java client writes and reads:
  gzip   RFC 1952 gzip stream
  snappy xerial "SnappyOutputStream" framing when writing; raw snappy or xerial framing when reading
  lz4    the LZ4 frame format (independent 64 KiB blocks, no content checksum), as Kafka's Lz4BlockOutputStream
  zstd   a zstd frame (content size may be absent: librdkafka streams it)
"""

from __future__ import annotations

import enum
import gzip
import struct
import zlib

import cramjam
import lz4.frame
import zstandard


class Compression(enum.IntEnum):
    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4

    @classmethod
    def parse(cls, name: str | int | "Compression") -> "Compression":
        """Accept 'lz4', 'LZ4', 3 or Compression.LZ4 (Kafka's `compression.type` spellings)."""
        if isinstance(name, Compression):
            return name
        if isinstance(name, int):
            return cls(name)
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown compression {name!r}: expected one of none, gzip, snappy, lz4, zstd") from None


class DecompressionError(ValueError):
    """The compressed payload of a batch could not be decoded."""


# Decompressing a hostile batch must not exhaust memory.
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024  # the block size Kafka's client uses

_zstd_compressor = zstandard.ZstdCompressor(level=3)
_zstd_decompressor = zstandard.ZstdDecompressor()


def compress(codec: Compression, data: bytes) -> bytes:
    if codec == Compression.NONE:
        return data
    if codec == Compression.GZIP:
        return gzip.compress(data, compresslevel=6, mtime=0)
    if codec == Compression.SNAPPY:
        out = [_XERIAL_HEADER]
        view = memoryview(data)
        for start in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK]))
            out.append(struct.pack(">i", len(block)))
            out.append(block)
        return b"".join(out)
    if codec == Compression.LZ4:
        return lz4.frame.compress(
            data,
            block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False,
            content_checksum=False,
            store_size=False,
        )
    if codec == Compression.ZSTD:
        return _zstd_compressor.compress(data)
    raise ValueError(f"unsupported compression codec {codec}")


def decompress(codec: Compression, data: bytes | memoryview) -> bytes:
    try:
        if codec == Compression.NONE:
            return bytes(data)
        if codec == Compression.GZIP:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(data, MAX_DECOMPRESSED_BYTES)
            if d.unconsumed_tail:
                raise DecompressionError("gzip payload exceeds the decompression limit")
            return out
        if codec == Compression.SNAPPY:
            return _snappy_decompress(bytes(data))
        if codec == Compression.LZ4:
            d = lz4.frame.LZ4FrameDecompressor()
            out = d.decompress(bytes(data), max_length=MAX_DECOMPRESSED_BYTES)
            if not d.eof and len(out) >= MAX_DECOMPRESSED_BYTES:
                raise DecompressionError("lz4 payload exceeds the decompression limit")
            return out
        if codec == Compression.ZSTD:
            d = _zstd_decompressor.decompressobj()
            out = d.decompress(bytes(data))
            if len(out) > MAX_DECOMPRESSED_BYTES:
                raise DecompressionError("zstd payload exceeds the decompression limit")
            return out
    except DecompressionError:
        raise
    except Exception as exc:  # each library raises its own type; callers want one
        raise DecompressionError(f"{codec.name.lower()} payload is corrupt: {exc}") from exc
    raise DecompressionError(f"unsupported compression codec {int(codec)}")


def _snappy_decompress(data: bytes) -> bytes:
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(cramjam.snappy.decompress_raw(data))
    out = []
    total = 0
    pos = len(_XERIAL_HEADER)
    while pos < len(data):
        if pos + 4 > len(data):
            raise DecompressionError("truncated xerial snappy block header")
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if size < 0 or pos + size > len(data):
            raise DecompressionError("truncated xerial snappy block")
        block = bytes(cramjam.snappy.decompress_raw(data[pos : pos + size]))
        total += len(block)
        if total > MAX_DECOMPRESSED_BYTES:
            raise DecompressionError("snappy payload exceeds the decompression limit")
        out.append(block)
        pos += size
    return b"".join(out)
