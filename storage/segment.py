"""One segment: a `.log` file of RecordBatch v2 bytes exactly as fetched, plus its sparse indexes.

A segment knows its bytes and indexes; the partition log decides when to roll, what to delete, and holds the
lock. Reads walk batch headers (never records) from the position an index lookup gives.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

from storage.errors import StorageError
from storage.fileutil import atomic_write
from storage.index import SegmentIndex
from storage.record_batch import (
    CRC_START,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    MIN_BATCH_LENGTH,
)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
INT32_MAX = 2**31 - 1

_PREFIX = struct.Struct(">qi")  # baseOffset, batchLength
_LAST_OFFSET_DELTA = struct.Struct(">i")  # at +23
_LOD_AT = 23
_NEED = 27  # bytes of header a read walk needs: up to the end of lastOffsetDelta
SCAN_CHUNK = 1024 * 1024  # recovery and scans read this much at a time
READ_SLACK = 64 * 1024  # extra bytes a fetch reads past max_bytes so the index-to-batch walk rarely re-reads


def segment_prefix(directory: str, base_offset: int) -> str:
    return os.path.join(directory, f"{base_offset:020d}")


@dataclass(slots=True)
class Segment:
    base_offset: int
    prefix: str  # path without suffix
    fd: int  # -1 once closed
    size: int  # bytes in the .log file
    next_offset: int  # one past the last offset this segment covers
    max_timestamp: int = -1
    offset_of_max_timestamp: int = -1
    index: SegmentIndex | None = None  # None: not loaded (sealed segments load lazily)
    bytes_since_index: int = 0
    rolling_basis_ms: int = -1  # segment.ms counts from here: max timestamp of the first batch
    sealed: bool = False

    @property
    def log_path(self) -> str:
        return self.prefix + LOG_SUFFIX

    @property
    def index_path(self) -> str:
        return self.prefix + INDEX_SUFFIX

    @property
    def time_index_path(self) -> str:
        return self.prefix + TIME_INDEX_SUFFIX

    @classmethod
    def create(cls, directory: str, base_offset: int) -> Segment:
        prefix = segment_prefix(directory, base_offset)
        # O_APPEND: after a truncation the next write lands at the new end without a seek.
        fd = os.open(prefix + LOG_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        return cls(base_offset, prefix, fd, 0, base_offset, index=SegmentIndex())

    @classmethod
    def open_existing(cls, directory: str, base_offset: int, writable: bool) -> Segment:
        prefix = segment_prefix(directory, base_offset)
        flags = os.O_RDWR | os.O_APPEND if writable else os.O_RDONLY
        fd = os.open(prefix + LOG_SUFFIX, flags)
        size = os.fstat(fd).st_size
        return cls(base_offset, prefix, fd, size, base_offset)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    # -- indexes ----------------------------------------------------------------------------------------------
    def track_batch(self, base: int, pos: int, size: int, max_ts: int, interval: int) -> None:
        """Index bookkeeping for one batch at `pos`. The append hot path inlines this same rule."""
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
            self.offset_of_max_timestamp = base
        if self.bytes_since_index > interval:
            index = self.index
            assert index is not None
            index.append(base - self.base_offset, pos)
            index.maybe_append_time(self.max_timestamp, self.offset_of_max_timestamp - self.base_offset)
            self.bytes_since_index = 0
        self.bytes_since_index += size

    def seal_time_index(self) -> None:
        """Add the final time entry, so the last entry on disk is the segment's largest timestamp."""
        if self.index is not None and self.max_timestamp >= 0:
            self.index.maybe_append_time(self.max_timestamp, self.offset_of_max_timestamp - self.base_offset)

    def write_index_files(self) -> None:
        """Atomic replace, no fsync: index files are derived data; the flusher syncs sealed ones."""
        index = self.index
        if index is None:
            return
        atomic_write(self.index_path, index.offset_index_bytes(), durable=False)
        atomic_write(self.time_index_path, index.time_index_bytes(), durable=False)

    def load_index(self) -> SegmentIndex | None:
        """Read and sanity-check this sealed segment's index files; None when they must be rebuilt."""
        try:
            with open(self.index_path, "rb") as f:
                offset_data = f.read()
            with open(self.time_index_path, "rb") as f:
                time_data = f.read()
        except FileNotFoundError:
            return None
        # The active segment's end is not known before its tail is scanned: bound it by what an index can hold.
        max_rel = max(0, self.next_offset - 1 - self.base_offset) if self.sealed else INT32_MAX
        return SegmentIndex.from_bytes(offset_data, time_data, self.size, max_rel)

    def rebuild_index(self, interval: int) -> None:
        """Rebuild the indexes and the max timestamp by walking every header (no CRC: sealed data was
        checked when it was written or recovered)."""
        self.index = SegmentIndex()
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self.bytes_since_index = 0
        scanner = BatchScanner(self.fd, 0, self.size, expected_offset=self.base_offset, segment_base=self.base_offset,
                               check_crc=False)
        for pos, h in scanner:
            self.track_batch(h[0], pos, LOG_OVERHEAD + h[1], h[8], interval)
        if scanner.error is not None:
            raise StorageError(f"segment {self.log_path} is corrupt at byte {scanner.valid_end}: {scanner.error}")
        self.seal_time_index()

    # -- reads ------------------------------------------------------------------------------------------------
    def read(self, offset: int, max_bytes: int, limit: int, min_one: bool) -> tuple[memoryview | None, bool]:
        """Whole batches from the one holding `offset` (or the first after it, across a compaction gap).

        Stops before a batch whose last offset is >= `limit`, and before max_bytes unless `min_one` lets the first
        batch through alone. Returns (bytes or None, whether the read reached the end of this segment, so a
        caller with budget left may continue into the next one). One pread normally covers the walk and data.
        """
        index = self.index
        assert index is not None
        fd = self.fd
        size = self.size
        rel = offset - self.base_offset
        pos = index.lookup(rel)[1] if rel > 0 else 0
        budget = max(0, max_bytes)
        want = budget + READ_SLACK
        buf = b""
        buf_start = pos
        # Phase 1: walk headers from the indexed position to the first batch with lastOffset >= offset.
        while True:
            if pos >= size:
                return None, True
            rp = pos - buf_start
            if rp + _NEED > len(buf):
                buf = os.pread(fd, min(want, size - pos), pos)
                buf_start, rp = pos, 0
                if len(buf) < _NEED:
                    raise StorageError(f"{self.log_path}: short batch header at byte {pos}")
            base, blen = _PREFIX.unpack_from(buf, rp)
            if blen < MIN_BATCH_LENGTH:
                raise StorageError(f"{self.log_path}: corrupt batch length {blen} at byte {pos}")
            last = base + _LAST_OFFSET_DELTA.unpack_from(buf, rp + _LOD_AT)[0]
            if last >= offset:
                break
            pos += LOG_OVERHEAD + blen
        if last >= limit:
            return None, False
        first_end = pos + LOG_OVERHEAD + blen
        if first_end - pos > budget and not min_one:
            return None, False
        cap = pos + max(budget, first_end - pos)  # the byte budget of this read
        want_end = min(cap, size)
        if buf_start + len(buf) < want_end:
            buf = os.pread(fd, want_end - pos, pos)
            buf_start = pos
            if len(buf) < first_end - pos:
                raise StorageError(f"{self.log_path}: batch at byte {pos} runs past the end of the file")
        # Phase 2: take following whole batches while they fit the budget and stay below `limit`.
        blen_buf = len(buf)
        p = first_end
        while p < want_end:
            rp = p - buf_start
            if rp + _NEED > blen_buf:
                break
            nbase, nlen = _PREFIX.unpack_from(buf, rp)
            nend = p + LOG_OVERHEAD + nlen
            if nlen < MIN_BATCH_LENGTH or nend > want_end:
                break
            if nbase + _LAST_OFFSET_DELTA.unpack_from(buf, rp + _LOD_AT)[0] >= limit:
                return memoryview(buf)[pos - buf_start : p - buf_start], False
            p = nend
        return memoryview(buf)[pos - buf_start : p - buf_start], p >= size

    def position_of(self, offset: int) -> tuple[int, int]:
        """(byte position, base offset) of the first batch whose last offset >= `offset`; (size, offset) if none."""
        index = self.index
        assert index is not None
        rel = offset - self.base_offset
        pos = index.lookup(rel)[1] if rel > 0 else 0
        for p, h in BatchScanner(self.fd, pos, self.size, expected_offset=-1, segment_base=self.base_offset,
                                 check_crc=False):
            if h[0] + h[6] >= offset:
                return p, h[0]
        return self.size, offset

    def iter_headers_from(self, pos: int) -> Iterator[tuple[int, tuple]]:
        return iter(BatchScanner(self.fd, pos, self.size, expected_offset=-1, segment_base=self.base_offset,
                                 check_crc=False))

    def read_batch(self, pos: int, size: int) -> bytes:
        data = os.pread(self.fd, size, pos)
        if len(data) != size:
            raise StorageError(f"{self.log_path}: short read of batch at byte {pos}")
        return data


class BatchScanner:
    """Iterate (position, header tuple) over [start, end) of a segment file, in bounded chunks.

    Stops at the first batch that is not well formed (short, bad magic or length, offsets going backwards, CRC
    mismatch when `check_crc`); then `error` says why and `valid_end` / `next_offset` say where the valid
    data ends. Header tuple fields follow record_batch.HEADER: 0 baseOffset, 1 batchLength, 2 leaderEpoch,
    3 magic, 4 crc, 5 attributes, 6 lastOffsetDelta, 7 baseTimestamp, 8 maxTimestamp, ... 12 recordsCount.
    """

    __slots__ = (
        "_expected",
        "check_crc",
        "end",
        "error",
        "fd",
        "next_offset",
        "segment_base",
        "start",
        "valid_end",
    )

    def __init__(self, fd: int, start: int, end: int, *, expected_offset: int, segment_base: int,
                 check_crc: bool) -> None:
        self.fd = fd
        self.start = start
        self.end = end
        self.check_crc = check_crc
        self.segment_base = segment_base
        self._expected = expected_offset  # -1: do not check offsets
        self.valid_end = start
        self.next_offset = expected_offset
        self.error: str | None = None

    def __iter__(self) -> Iterator[tuple[int, tuple]]:
        fd, end = self.fd, self.end
        pos = self.start
        buf = b""
        buf_start = pos
        while pos < end:
            if end - pos < HEADER_SIZE:
                self.error = f"{end - pos} trailing bytes, shorter than a batch header"
                return
            rp = pos - buf_start
            if rp + HEADER_SIZE > len(buf):
                buf = os.pread(fd, min(SCAN_CHUNK, end - pos), pos)
                buf_start, rp = pos, 0
                if len(buf) < HEADER_SIZE:
                    self.error = "short read"
                    return
            h = HEADER.unpack_from(buf, rp)
            base, blen, magic, lod = h[0], h[1], h[3], h[6]
            size = LOG_OVERHEAD + blen
            if magic != MAGIC:
                self.error = f"bad magic {magic}"
                return
            if blen < MIN_BATCH_LENGTH:
                self.error = f"bad batch length {blen}"
                return
            if pos + size > end:
                self.error = f"batch of {size} bytes runs past the end of the file ({end - pos} bytes left)"
                return
            if lod < 0 or h[12] < 0:
                self.error = "negative offset delta or record count"
                return
            if self._expected >= 0 and base < self._expected:
                self.error = f"batch base offset {base} goes back (expected >= {self._expected})"
                return
            if base + lod - self.segment_base > INT32_MAX or base < self.segment_base:
                self.error = f"batch offsets {base}..{base + lod} do not fit segment {self.segment_base}"
                return
            if self.check_crc and self._crc(buf, buf_start, pos, size) != h[4]:
                self.error = f"CRC-32C mismatch in batch at offset {base}"
                return
            yield pos, h
            pos += size
            self.valid_end = pos
            if self._expected >= 0:
                self._expected = base + lod + 1
            self.next_offset = base + lod + 1

    def _crc(self, buf: bytes, buf_start: int, pos: int, size: int) -> int:
        rp = pos - buf_start
        if rp + size <= len(buf):
            return crc32c.crc32c(memoryview(buf)[rp + CRC_START : rp + size])
        # A batch larger than the chunk: CRC it piecewise so memory stays bounded.
        value = 0
        p = pos + CRC_START
        stop = pos + size
        while p < stop:
            piece = os.pread(self.fd, min(SCAN_CHUNK, stop - p), p)
            if not piece:
                return -1
            value = crc32c.crc32c(piece, value)
            p += len(piece)
        return value
