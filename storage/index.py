"""Sparse per-segment indexes, held in memory as arrays and written as Kafka-layout files.

`.index`     8-byte entries: relative offset int32, file position int32 (big-endian), one every
             index.interval.bytes of log. Our entry names the BASE offset of the batch at that position, so the
             batch found by a lookup always starts at or before any offset it is asked for.
`.timeindex` 12-byte entries: timestamp int64, relative offset int32: "up to and including the batch at this
             offset, the largest timestamp seen is this one". Appended at index points when the maximum grew,
             and once more when the segment is sealed, so the last entry is the segment's max timestamp.
"""

from __future__ import annotations

import bisect
import struct
import sys
from array import array

OFFSET_ENTRY = struct.Struct(">ii")
TIME_ENTRY = struct.Struct(">qi")
# Kafka's default segment.index.bytes (10 MiB) worth of entries: the active segment rolls when full, which
# bounds the memory of any one index whatever index.interval.bytes is.
MAX_INDEX_ENTRIES = 10 * 1024 * 1024 // OFFSET_ENTRY.size
_LITTLE = sys.byteorder == "little"


class SegmentIndex:
    __slots__ = ("positions", "rel_offsets", "timestamps", "ts_rel_offsets")

    def __init__(self) -> None:
        self.rel_offsets = array("i")  # strictly increasing
        self.positions = array("i")  # strictly increasing
        self.timestamps = array("q")  # strictly increasing
        self.ts_rel_offsets = array("i")  # non-decreasing

    def __len__(self) -> int:
        return len(self.rel_offsets)

    @property
    def full(self) -> bool:
        return len(self.rel_offsets) >= MAX_INDEX_ENTRIES

    def append(self, rel_offset: int, position: int) -> None:
        assert not self.rel_offsets or (rel_offset > self.rel_offsets[-1] and position > self.positions[-1])
        self.rel_offsets.append(rel_offset)
        self.positions.append(position)

    def maybe_append_time(self, timestamp: int, rel_offset: int) -> None:
        if timestamp >= 0 and (not self.timestamps or timestamp > self.timestamps[-1]):
            self.timestamps.append(timestamp)
            self.ts_rel_offsets.append(rel_offset)

    def lookup(self, rel_offset: int) -> tuple[int, int]:
        """(relative offset, position) of the last entry at or before `rel_offset`; (0, 0) when none."""
        i = bisect.bisect_right(self.rel_offsets, rel_offset) - 1
        if i < 0:
            return 0, 0
        return self.rel_offsets[i], self.positions[i]

    def time_lookup(self, timestamp: int) -> int:
        """Relative offset of the last entry whose timestamp is < `timestamp` (every batch up to that one is
        older than the target, so a scan may start there); -1 when the scan must start at the segment start."""
        i = bisect.bisect_left(self.timestamps, timestamp) - 1
        return self.ts_rel_offsets[i] if i >= 0 else -1

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0

    @property
    def last_rel_offset(self) -> int:
        return self.rel_offsets[-1] if self.rel_offsets else 0

    @property
    def max_timestamp(self) -> tuple[int, int]:
        """(timestamp, relative offset) of the last time entry; (-1, -1) when empty."""
        if not self.timestamps:
            return -1, -1
        return self.timestamps[-1], self.ts_rel_offsets[-1]

    def truncate(self, rel_offset: int) -> None:
        """Drop entries for batches at or after `rel_offset` (the log was cut there)."""
        i = bisect.bisect_left(self.rel_offsets, rel_offset)
        del self.rel_offsets[i:], self.positions[i:]
        j = bisect.bisect_left(self.ts_rel_offsets, rel_offset)
        del self.timestamps[j:], self.ts_rel_offsets[j:]

    # -- files ------------------------------------------------------------------------------------------------
    def offset_index_bytes(self) -> bytes:
        pairs = array("i", bytes(8 * len(self.rel_offsets)))
        pairs[0::2] = self.rel_offsets
        pairs[1::2] = self.positions
        if _LITTLE:
            pairs.byteswap()
        return pairs.tobytes()

    def time_index_bytes(self) -> bytes:
        return b"".join(TIME_ENTRY.pack(t, r) for t, r in zip(self.timestamps, self.ts_rel_offsets))

    @classmethod
    def from_bytes(cls, offset_data: bytes, time_data: bytes, segment_size: int, max_rel_offset: int) -> SegmentIndex | None:
        """Parse and sanity-check index files; None when they cannot be trusted (the caller rebuilds them)."""
        if len(offset_data) % OFFSET_ENTRY.size or len(time_data) % TIME_ENTRY.size:
            return None
        if len(offset_data) // OFFSET_ENTRY.size > MAX_INDEX_ENTRIES:
            return None
        index = cls()
        pairs = array("i")
        pairs.frombytes(offset_data)
        if _LITTLE:
            pairs.byteswap()
        index.rel_offsets = pairs[0::2]
        index.positions = pairs[1::2]
        for t, r in TIME_ENTRY.iter_unpack(time_data):
            index.timestamps.append(t)
            index.ts_rel_offsets.append(r)
        if not index._sane(segment_size, max_rel_offset):
            return None
        return index

    def _sane(self, segment_size: int, max_rel_offset: int) -> bool:
        rel, pos = self.rel_offsets, self.positions
        for i in range(1, len(rel)):
            if rel[i] <= rel[i - 1] or pos[i] <= pos[i - 1]:
                return False
        if rel and (rel[0] < 0 or pos[0] < 0 or rel[-1] > max_rel_offset or pos[-1] >= segment_size):
            return False
        ts, trel = self.timestamps, self.ts_rel_offsets
        for i in range(1, len(ts)):
            if ts[i] <= ts[i - 1] or trel[i] < trel[i - 1]:
                return False
        return not (trel and (trel[0] < 0 or trel[-1] > max_rel_offset))
