"""Shared helpers of the storage tests (module name unique across tests/: no __init__ packages here)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from kafka.record import MemoryRecords

from storage.compression import Compression
from storage.config import LogConfig
from storage.log import PartitionLog
from storage.record_batch import (
    Record,
    RecordInput,
    build_batch,
    iter_headers,
    iter_records,
)

T0 = 1_700_000_000_000  # a fixed "now" (ms): tests never read the clock


def batch(
    values: Sequence[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    ts: int | Sequence[int] = T0,
    compression: Compression = Compression.NONE,
    **kwargs: object,
) -> bytes:
    """A producer batch (base offset 0, epoch -1) of `values`, keys k0.. unless given."""
    if keys is None:
        keys = [b"k%d" % i for i in range(len(values))]
    stamps = [ts] * len(values) if isinstance(ts, int) else list(ts)
    return build_batch(
        [RecordInput(k, v, t) for k, v, t in zip(keys, values, stamps)], compression=compression, **kwargs
    )


def values_batch(start: int, n: int, *, size: int = 10, ts: int = T0) -> bytes:
    """n records whose values encode their sequence number (start..start+n-1), padded to `size` bytes."""
    return batch([str(start + i).encode().ljust(size, b".") for i in range(n)], ts=ts)


def open_log(path: os.PathLike[str] | str, now_ms: int = T0, **config: object) -> PartitionLog:
    return PartitionLog.open(str(path), LogConfig(**config), now_ms=now_ms)  # type: ignore[arg-type]


def records(data: bytes | memoryview) -> list[Record]:
    return list(iter_records(bytes(data)))


def offsets(data: bytes | memoryview) -> list[int]:
    return [r.offset for r in records(data)]


def batch_bounds(data: bytes | memoryview) -> list[tuple[int, int]]:
    """(base offset, last offset) of each batch."""
    return [(h.base_offset, h.last_offset) for _pos, h in iter_headers(bytes(data))]


def kafka_python_records(data: bytes | memoryview) -> list[tuple[int, int, bytes | None, bytes | None, int]]:
    """Parse with kafka-python (checking every batch CRC): (offset, timestamp, key, value, leader epoch)."""
    out = []
    for b in MemoryRecords(bytes(data)):
        assert b.validate_crc(), f"kafka-python rejects the CRC of batch {b.base_offset}"
        for r in b:
            out.append((r.offset, r.timestamp, r.key, r.value, b.leader_epoch))
    return out


def read_all(log: PartitionLog, upper_bound: int | None = None) -> bytes:
    """Every readable batch, following reads until the end (each read returns whole batches)."""
    out = bytearray()
    offset = log.log_start_offset
    end = log.log_end_offset if upper_bound is None else upper_bound
    for _ in range(100_000):
        if offset >= end:
            break
        data = log.read(offset, 1 << 20, upper_bound=upper_bound)
        if not data:
            break
        out += data
        offset = batch_bounds(data)[-1][1] + 1
    return bytes(out)


def log_config(**kw: object) -> LogConfig:
    return LogConfig(**kw)  # type: ignore[arg-type]
