"""PartitionRaftLog: the Raft core's Storage over an on-disk PartitionLog (docs/cluster-design.md).

The Raft index space is Kafka offsets. Each stored RecordBatch is one entry:
  * DATA: the batch bytes; persisting stamps baseOffset and partitionLeaderEpoch (= term) in place,
    outside the CRC, and appends with ``append_replicated`` (no CRC work, no copy beyond the one join).
  * NOOP <-> a control batch LEADER_CHANGE (empty value); CONFIG <-> a control batch KRAFT_VOTERS whose
    value is ``Configuration.encode()``. Both carry timestamp 0, so every replica writes identical bytes.
  * LOG_START (DeleteRecords): a DATA entry to the core, holding a control batch of tidelog's own type
    CONTROL_LOG_START whose value is the new log start offset (consumers skip it like any control batch).
    Every replica applies it once committed (``apply_log_start``): records before that offset are deleted
    (whole segments, the log start checkpoint) and the snapshot point moves to the last entry boundary below
    it, as retention does. A side index in raft-meta, written before the batch is appended, lists the
    LOG_START entries not yet applied, so a restart applies a committed one whose effect a crash lost.

Compaction gaps: the compactor drops batches that became empty, so a compacted log has offset gaps. An
entry's ``index`` is the previous entry's ``last_index + 1`` (it covers the gap before its batch) and its
``last_index`` is the batch's last offset; a DATA entry is written at base ``last_index - lastOffsetDelta``
with ``allow_gaps=True``. So entry boundaries are batch ends on every replica, whatever was compacted.

Raft metadata of the log lives next to it in ``raft-meta`` (rewritten atomically, rarely): the snapshot
point (index, term, configuration, opaque data: the storage layer keeps no term below its log start), the
CONFIG entries after it (a side index, so restart needs no log scan; each is checked against the log on
open), the LOG_START entries not yet applied (likewise) and the boundaries retention or DeleteRecords may move
the log start to. Write-ahead order: meta before the log change
it describes (a CONFIG batch is never on disk unknown to meta; a snapshot is redone on open if the log change
did not happen).

The hard state (term, vote, commit) is not kept here: the host stores every group's in one shared file and
hands it over with ``set_hard_state`` before building the RaftNode.

Threads: the event loop reads (the core's Storage calls) and calls ``prepare_append``/``finish_append``;
``execute`` (truncate, meta, append, fsync) runs in a worker thread while the group takes no input, so the
in-memory state only changes on the loop.
"""

from __future__ import annotations

import json
import os
import struct
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter

import crc32c

from storage.config import LogConfig
from storage.errors import StorageError as LogStorageError
from storage.fileutil import atomic_write
from storage.log import PartitionLog
from storage.record_batch import (
    ATTR_CONTROL,
    CONTROL_KRAFT_VOTERS,
    CONTROL_LEADER_CHANGE,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    build_control_batch,
    control_type_of,
    decode_records,
    parse_header,
    stamp_batch,
)

from .storage import CompactedError, entries_between
from .types import Configuration, Entry, EntryKind, HardState, Snapshot

META_FILE = "raft-meta"
_META_MAGIC = b"TLRM"
_META_HEAD = struct.Struct(">4sII")  # magic, crc32c(json + data), json length
_LOD = struct.Struct(">i")  # lastOffsetDelta at +23
_LENGTH = struct.Struct(">i")  # batchLength at +8
_OFFSET = struct.Struct(">q")  # baseOffset at +0
_LAST = itemgetter(1)
_INDEX = attrgetter("index")
_DATA = EntryKind.DATA
_NOOP = EntryKind.NOOP
_CONFIG = EntryKind.CONFIG
# DeleteRecords' control record type: tidelog's own, outside Kafka's (0..6); clients skip control batches.
CONTROL_LOG_START = 0x544C
_LOG_START_VALUE = struct.Struct(">hq")  # version 0, the new log start offset
MAX_PENDING_LOG_STARTS = 64  # LOG_START entries not yet applied: a leader proposes no more (one at a time)
TAIL_SPANS = 8192  # recent entry spans kept in memory: term()/entry_span() near the tail never touch disk
CACHE_BYTES = 2 << 20  # recent entries kept in memory (as written): committed-entry delivery and follower
# catch-up near the tail read no disk

_NOOP_TEMPLATE = build_control_batch(CONTROL_LEADER_CHANGE, b"", timestamp=0)


def log_start_batch(offset: int) -> bytes:
    """The LOG_START entry's batch (propose it spanning one offset): "records before ``offset`` are deleted".
    Timestamp 0, so every replica stores identical bytes."""
    assert offset >= 0
    return build_control_batch(CONTROL_LOG_START, _LOG_START_VALUE.pack(0, offset), timestamp=0)


def log_start_of(data: bytes | bytearray | memoryview) -> int | None:
    """The offset a LOG_START batch carries; None for any other batch (a header byte for those)."""
    if len(data) < HEADER_SIZE or not data[22] & ATTR_CONTROL:  # attributes: int16 at 21, control bit 0x20
        return None
    try:
        records = decode_records(data, parse_header(data))
    except (ValueError, struct.error, IndexError):  # not ours to judge here: the log validates what it appends
        return None
    if len(records) != 1 or control_type_of(records[0].key) != CONTROL_LOG_START:
        return None
    value = records[0].value or b""
    if len(value) != _LOG_START_VALUE.size:
        return None
    version, offset = _LOG_START_VALUE.unpack(value)
    return offset if version == 0 and offset >= 0 else None


class RaftLogCorrupt(LogStorageError):
    """raft-meta is unreadable or inconsistent with the log: refuse to start rather than guess terms."""


def is_one_batch(data: bytes | bytearray | memoryview, max_last_offset_delta: int, *, exact: bool = False) -> bool:
    """Header check of a DATA entry: exactly one magic-2 batch whose offsets fit in the entry (a fresh batch
    spans it exactly, ``exact``; a compacted one may start later). The CRC is checked when the log appends."""
    if len(data) < HEADER_SIZE or data[16] != MAGIC:
        return False
    length = _LENGTH.unpack_from(data, 8)[0]
    lod = _LOD.unpack_from(data, 23)[0]
    return length + LOG_OVERHEAD == len(data) and 0 <= lod <= max_last_offset_delta and (
        not exact or lod == max_last_offset_delta)


def _last_batch_pos(buf: bytes) -> int:
    pos = last = 0
    while pos + HEADER_SIZE <= len(buf):
        last = pos
        pos += _LENGTH.unpack_from(buf, pos + 8)[0] + LOG_OVERHEAD
    return last


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class AppendPlan:
    """What one Ready asks of this log: built on the loop, executed in a worker thread, then applied."""

    snapshot: Snapshot | None = None
    truncate_at: int | None = None
    buf: bytearray | None = None
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    configs: list[Entry] | None = None  # the new side index when it changed
    log_starts: list[tuple[int, int, int]] | None = None  # the new LOG_START side index when it changed
    write_meta: bool = False
    cached: list[Entry] = field(default_factory=list)  # the entries as written (data: views of buf)
    last_index: int = -1  # of the appended entries


class PartitionRaftLog:
    """Storage protocol (cluster.raft.storage.Storage) + the write side the host drives."""

    def __init__(self, log: PartitionLog, *, bootstrap: Configuration | None = None,
                 cache_bytes: int = CACHE_BYTES) -> None:
        self.log = log
        self.directory = log.directory
        self._meta_path = os.path.join(log.directory, META_FILE)
        self._hard_state = HardState()
        self._tail: list[tuple[int, int, int]] = []  # (index, last_index, term), contiguous to the end
        self._candidates: dict[int, tuple[int, int]] = {}  # segment base -> (boundary below it, its term)
        self._control_cache: dict[bytes, bytes] = {}
        self._cache: list[Entry] = []  # recent entries, contiguous up to the last index
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        # LOG_START entries after the snapshot point not yet applied: (index, term, new log start offset).
        self._log_starts: list[tuple[int, int, int]] = []
        meta = self._read_meta()
        if meta is None:
            if log.log_end_offset != log.log_start_offset:
                raise RaftLogCorrupt(f"{self.directory}: the log holds data but has no {META_FILE}")
            cfg = bootstrap if bootstrap is not None else Configuration()
            self._snap = Snapshot(log.log_start_offset - 1, 0, cfg)
            self._configs: list[Entry] = []
            self._write_meta()
        else:
            self._snap, self._configs, self._candidates, self._log_starts = meta
            self._recover()
        self._hard_state = HardState(self._snap.term, None, self._snap.index)

    @classmethod
    def open(cls, directory: str, config: LogConfig | None = None, *, bootstrap: Configuration | None = None,
             cache_bytes: int = CACHE_BYTES) -> PartitionRaftLog:
        return cls(PartitionLog.open(directory, config or LogConfig(), now_ms=_now_ms()), bootstrap=bootstrap,
                   cache_bytes=cache_bytes)

    def close(self) -> None:
        self.log.close()

    # =========================================================================================
    # Storage protocol (read side, event loop)
    # =========================================================================================

    def hard_state(self) -> HardState:
        return self._hard_state

    def config_entries(self) -> list[Entry]:
        return list(self._configs)

    def first_index(self) -> int:
        return self._snap.index + 1

    def last_index(self) -> int:
        return self.log.log_end_offset - 1 if self.log.log_end_offset > self._snap.index + 1 else self._snap.index

    def snapshot(self) -> Snapshot:
        return self._snap

    def term(self, index: int) -> int | None:
        snap = self._snap
        if index == snap.index:
            return snap.term
        if index < snap.index or index > self.last_index():
            return None
        tail = self._tail
        if tail and index >= tail[0][0]:
            t = tail[-1]
            if index >= t[0]:
                return t[2]
            return tail[bisect_left(tail, index, key=_LAST)][2]
        return self._header_at(index)[2]

    def entry_span(self, index: int) -> tuple[int, int, int] | None:
        if index <= self._snap.index or index > self.last_index():
            return None
        tail = self._tail
        if tail and index >= tail[0][0]:
            return tail[bisect_left(tail, index, key=_LAST)]
        base, last, term = self._header_at(index)
        return (self._entry_start(base), last, term)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo < self.first_index():
            raise CompactedError(lo)
        limit = min(hi, self.last_index() + 1)
        if lo >= limit:
            return []
        cache = self._cache
        if cache and lo >= cache[0].index:
            return entries_between(self._cache, lo, limit, max_bytes)
        log = self.log
        out: list[Entry] = []
        total = 0  # of Entry.size, the core's measure (MemoryStorage's cap, exactly)
        index = lo
        unpack = HEADER.unpack_from
        while index < limit:
            # Stored control batches are larger than their Entry.size: read again while the cap allows.
            buf = log.read(max(index, log.log_start_offset), max(1, max_bytes - total), upper_bound=limit)
            view = memoryview(buf)
            pos, end = 0, len(view)
            if end < HEADER_SIZE:
                break
            while pos + HEADER_SIZE <= end:
                h = unpack(view, pos)
                size = h[1] + LOG_OVERHEAD
                last_offset = h[0] + h[6]
                if not out:
                    assert h[0] >= lo, f"entries() from {lo}, inside the batch at {h[0]}: not an entry start"
                if h[5] & ATTR_CONTROL:
                    kind, data = self._decode_control(view[pos:pos + size])
                else:
                    kind, data = _DATA, view[pos:pos + size]
                e = Entry(h[2], index, last_offset, kind, data)
                total += e.size
                if out and total > max_bytes:
                    return out
                out.append(e)
                index = last_offset + 1
                pos += size
        return out

    # -- helpers --------------------------------------------------------------------------------

    def _decode_control(self, batch: memoryview) -> tuple[EntryKind, bytes | memoryview]:
        header = parse_header(batch)
        records = decode_records(batch, header)
        if len(records) == 1:
            ctype = control_type_of(records[0].key)
            if ctype == CONTROL_LEADER_CHANGE:
                return _NOOP, b""
            if ctype == CONTROL_KRAFT_VOTERS:
                return _CONFIG, records[0].value or b""
        return _DATA, batch  # transaction markers and other control batches are the runtime's data

    def _header_at(self, offset: int) -> tuple[int, int, int]:
        """(base, last offset, epoch) of the batch holding ``offset``, or of the first batch after the
        compaction gap holding it (that batch's entry covers the gap)."""
        log = self.log
        buf = log.read(max(offset, log.log_start_offset), 1)
        if len(buf) < HEADER_SIZE:
            raise RaftLogCorrupt(f"{self.directory}: no batch at or after offset {offset}")
        h = HEADER.unpack_from(buf, 0)
        return h[0], h[0] + h[6], h[2]

    def _entry_start(self, base: int) -> int:
        """Start of the entry whose batch begins at ``base``: ``base`` unless a compaction gap precedes it,
        then the offset after the previous batch (binary search with one read per probe)."""
        lo = max(self.first_index(), self.log.log_start_offset)
        if base <= lo:
            return min(self.first_index(), base)
        if self._header_at(base - 1)[0] != base:
            return base  # base - 1 lies in a batch: no gap
        hi = base - 1  # in the gap; find the smallest offset that still is
        while lo < hi:
            mid = (lo + hi) // 2
            if self._header_at(mid)[0] == base:
                hi = mid
            else:
                lo = mid + 1
        return lo if lo > max(self.first_index(), self.log.log_start_offset) else self.first_index()

    def _boundary_before(self, base: int) -> tuple[int, int]:
        """(index, term) of the last entry boundary below ``base``: where a log start at ``base`` puts the
        snapshot point so that every replica still agrees on entry boundaries."""
        start = self._entry_start(base)
        if start <= self.first_index():
            return self._snap.index, self._snap.term
        return start - 1, self._header_at(start - 1)[2]

    def config_at(self, index: int) -> Configuration:
        cfg = self._snap.configuration
        for e in self._configs:
            if e.index > index:
                break
            cfg = Configuration.decode(e.data)
        return cfg

    # =========================================================================================
    # Write side (the host; also a MemoryStorage-like synchronous API for tests)
    # =========================================================================================

    def bootstrap(self, configuration: Configuration) -> bool:
        """Give a brand-new log (never written, empty configuration) its first configuration. A log that
        has one, or any entry, keeps its own. Replicas joining an existing group bootstrap with none."""
        snap = self._snap
        if (not configuration.members or snap.term != 0 or snap.configuration.members or self._configs
                or self.last_index() != snap.index):
            return False
        self._snap = Snapshot(snap.index, 0, configuration, snap.data)
        self._write_meta()
        return True

    def set_hard_state(self, hard_state: HardState) -> None:
        """The host's hard-state store is the durable copy; this is what the core reads at start."""
        self._hard_state = hard_state

    def prepare_append(self, entries: Sequence[Entry], snapshot: Snapshot | None = None) -> AppendPlan:
        """Build the write for one Ready (event loop): stamped batch bytes joined into one buffer."""
        plan = AppendPlan(snapshot=snapshot)
        if snapshot is not None:
            plan.write_meta = True
        if not entries:
            return plan
        start = entries[0].index
        last = snapshot.index if snapshot is not None else self.last_index()
        configs = [] if snapshot is not None else self._configs
        log_starts = [] if snapshot is not None else self._log_starts
        if snapshot is not None and self._log_starts:
            plan.log_starts = log_starts
        if start <= last:
            assert snapshot is None
            assert start >= self.first_index(), f"cannot rewrite compacted offset {start}"
            plan.truncate_at = start
            if configs and configs[-1].index >= start:
                configs = [e for e in configs if e.index < start]
                plan.configs = configs
            if log_starts and log_starts[-1][0] >= start:
                log_starts = [x for x in log_starts if x[0] < start]
                plan.log_starts = log_starts
        else:
            assert start == last + 1, f"gap in the log: {start} after {last}"
        parts: list[bytes | memoryview] = []
        stamps: list[tuple[int, int]] = []  # (base offset, term) per part
        spans = plan.spans
        for e in entries:
            kind = e.kind
            if kind is _DATA:
                data = e.data
                if not is_one_batch(data, e.last_index - e.index):
                    raise ValueError(f"entry {e.index}..{e.last_index} does not hold one record batch that fits it")
                lod = _LOD.unpack_from(data, 23)[0]
                parts.append(data)
                stamps.append((e.last_index - lod, e.term))
                if data[22] & ATTR_CONTROL:  # a header byte: data batches cost nothing more here
                    offset = log_start_of(data)
                    if offset is not None:  # bounded by the leader (MAX_PENDING_LOG_STARTS before proposing)
                        log_starts = plan.log_starts = [*log_starts, (e.index, e.term, offset)]
                        plan.write_meta = True
            elif kind is _NOOP:
                parts.append(_NOOP_TEMPLATE)
                stamps.append((e.index, e.term))
            else:
                value = bytes(e.data)
                batch = self._control_cache.get(value)
                if batch is None:
                    batch = build_control_batch(CONTROL_KRAFT_VOTERS, value, timestamp=0)
                    if len(self._control_cache) < 64:
                        self._control_cache[value] = batch
                parts.append(batch)
                stamps.append((e.index, e.term))
                if plan.configs is None:
                    plan.configs = list(configs)
                plan.configs.append(Entry(e.term, e.index, e.last_index, _CONFIG, value))
                plan.write_meta = True
            spans.append((e.index, e.last_index, e.term))
        buf = bytearray().join(parts)
        view = memoryview(buf)
        pos = 0
        cached = plan.cached
        for e, part, (base, term) in zip(entries, parts, stamps):
            n = len(part)
            stamp_batch(buf, pos, base, term)
            cached.append(e if e.kind is not _DATA else Entry(e.term, e.index, e.last_index, _DATA, view[pos:pos + n]))
            pos += n
        plan.buf = buf
        plan.last_index = entries[-1].last_index
        return plan

    def write(self, plan: AppendPlan) -> None:
        """The writes of a plan, no fsync (event loop): snapshot install and truncation (both durable at
        once), meta, one append of every new batch. Raises storage.errors.StorageError or OSError."""
        log = self.log
        if plan.snapshot is not None:
            snap = plan.snapshot
            self._write_meta(snap, [] if plan.configs is None else plan.configs, {},
                             [] if plan.log_starts is None else plan.log_starts)
            log.truncate_fully_and_start_at(snap.index + 1)
        if plan.truncate_at is not None:
            log.truncate_to(max(plan.truncate_at, log.log_start_offset))
        if plan.write_meta and plan.snapshot is None and (plan.configs is not None or plan.log_starts is not None):
            # Before the CONFIG / LOG_START batch exists.
            self._write_meta(self._snap, self._configs if plan.configs is None else plan.configs, self._candidates,
                             self._log_starts if plan.log_starts is None else plan.log_starts)
        if plan.buf is not None:
            log.append_replicated(plan.buf, now_ms=_now_ms(), allow_gaps=True)

    def sync(self) -> int:
        """fsync what was written (any thread; PartitionLog.flush). Returns the durable end offset."""
        return self.log.flush()

    def execute(self, plan: AppendPlan) -> None:
        """write + sync in the calling thread."""
        self.write(plan)
        if plan.buf is not None:
            self.sync()

    def finish_append(self, plan: AppendPlan) -> None:
        """Apply a plan's in-memory effects (event loop, after execute succeeded)."""
        if plan.snapshot is not None:
            self._snap = plan.snapshot
            self._configs = []
            self._candidates = {}
            self._log_starts = []
            self._tail = []
            self._cache = []
            self._cache_bytes = 0
        tail = self._tail
        cache = self._cache
        if plan.truncate_at is not None:
            del tail[bisect_left(tail, plan.truncate_at, key=itemgetter(0)):]
            cut = bisect_left(cache, plan.truncate_at, key=_INDEX)
            if cut < len(cache):
                self._cache_bytes -= sum(e.size for e in cache[cut:])
                del cache[cut:]
        if plan.configs is not None:
            self._configs = plan.configs
        if plan.log_starts is not None:
            self._log_starts = plan.log_starts
        if plan.spans:
            if not tail or tail[-1][1] + 1 != plan.spans[0][0]:
                tail.clear()  # not contiguous with the tail: restart it here
            tail.extend(plan.spans)
            if len(tail) > 2 * TAIL_SPANS:
                del tail[:-TAIL_SPANS]
        if plan.cached and self._cache_limit > 0:
            if not cache or cache[-1].last_index + 1 != plan.cached[0].index:
                cache.clear()
                self._cache_bytes = 0
            cache.extend(plan.cached)
            self._cache_bytes += sum(e.size for e in plan.cached)
            if self._cache_bytes > self._cache_limit:
                drop = 0
                nbytes = self._cache_bytes
                while drop < len(cache) - 1 and nbytes > self._cache_limit:
                    nbytes -= cache[drop].size
                    drop += 1
                del cache[:drop]
                self._cache_bytes = nbytes

    # MemoryStorage-style API (tests, tools): each call is durable when it returns.

    def append(self, entries: Sequence[Entry]) -> None:
        plan = self.prepare_append(entries)
        self.execute(plan)
        self.finish_append(plan)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot from the leader: the log restarts empty at snapshot.index + 1."""
        assert snapshot.index >= self._snap.index
        plan = self.prepare_append((), snapshot)
        self.execute(plan)
        self.finish_append(plan)

    def compact(self, snapshot: Snapshot) -> None:
        """Drop the log up to snapshot.index (made by RaftNode.compact; data is the controller's state)."""
        if snapshot.index <= self._snap.index:
            return
        assert snapshot.index <= self.last_index()
        configs = [e for e in self._configs if e.index > snapshot.index]
        log_starts = [x for x in self._log_starts if x[0] > snapshot.index]
        self._write_meta(snapshot, configs, self._candidates, log_starts)
        self._snap, self._configs, self._log_starts = snapshot, configs, log_starts
        self.log.delete_records_before(min(snapshot.index + 1, self.log.log_end_offset))
        self._trim_front(snapshot.index + 1)

    def _trim_front(self, first: int) -> None:
        del self._tail[:bisect_left(self._tail, first, key=itemgetter(0))]
        cut = bisect_left(self._cache, first, key=_INDEX)
        if cut:
            self._cache_bytes -= sum(e.size for e in self._cache[:cut])
            del self._cache[:cut]

    def apply_retention(self, now_ms: int, applied_index: int) -> int:
        """Time/size retention (PartitionLog.apply_retention) kept Raft-safe: runs only when every sealed
        segment is applied, and records where the snapshot point goes for each possible new log start
        before deleting anything. Returns the number of segments deleted."""
        log = self.log
        bases = log.segment_base_offsets
        if len(bases) < 2 or bases[-1] > applied_index + 1:
            return 0
        first = self.first_index()
        # Recomputed each time: compaction may have emptied the batch that ended a segment.
        candidates = {b: self._boundary_before(self._header_at(b)[0]) for b in bases[1:] if b > first}
        if candidates != self._candidates:
            self._write_meta(self._snap, self._configs, candidates)
            self._candidates = candidates
        deleted = log.apply_retention(now_ms)
        if deleted:
            self._adopt_log_start()
        return deleted

    def _adopt_log_start(self) -> bool:
        """Move the snapshot point to the boundary recorded for the current log start. Returns whether it
        moved (meta written)."""
        start = self.log.log_start_offset
        point = self._candidates.get(start)
        if point is None or point[0] <= self._snap.index:
            return False
        index, term = point
        snap = Snapshot(index, term, self.config_at(index))
        configs = [e for e in self._configs if e.index > index]
        candidates = {b: p for b, p in self._candidates.items() if b > start}
        log_starts = [x for x in self._log_starts if x[0] > index]
        self._write_meta(snap, configs, candidates, log_starts)
        self._snap, self._configs, self._candidates, self._log_starts = snap, configs, candidates, log_starts
        self._trim_front(index + 1)
        return True

    # -- DeleteRecords ------------------------------------------------------------------------------

    def log_start_due(self, applied_index: int) -> bool:
        """Whether a LOG_START entry at or below ``applied_index`` waits for ``apply_log_start``."""
        starts = self._log_starts
        return bool(starts) and starts[0][0] <= applied_index

    @property
    def pending_log_starts(self) -> int:
        return len(self._log_starts)

    def apply_log_start(self, applied_index: int) -> int:
        """Apply the LOG_START entries at or below ``applied_index`` (committed and handed to the state
        machine): the log start becomes the largest offset they carry (it never goes back), records before it
        are deleted and the snapshot point moves to the last entry boundary below the batch holding it (so
        every replica keeps the same entry boundaries; followers behind it get a snapshot, then this entry).
        Write-ahead like retention: the boundary for the new log start is in raft-meta before the log changes,
        and the entries leave the side index only after. Returns the log start offset."""
        log = self.log
        due = [x for x in self._log_starts if x[0] <= applied_index]
        if not due:
            return log.log_start_offset
        rest = [x for x in self._log_starts if x[0] > applied_index]
        target = max(offset for _i, _t, offset in due)
        # An entry deletes only records before it: it was proposed at or above the high watermark it checked.
        assert target <= due[-1][0] < log.log_end_offset, f"LOG_START {target} beyond its entry {due[-1][0]}"
        if target > log.log_start_offset:
            point = self._boundary_before(self._header_at(target)[0])
            candidates = {**self._candidates, target: point}
            self._write_meta(self._snap, self._configs, candidates, self._log_starts)
            self._candidates = candidates
            log.delete_records_before(target)
            assert log.log_start_offset == target
        self._log_starts = rest
        if not self._adopt_log_start():
            self._write_meta()
        return log.log_start_offset

    # =========================================================================================
    # raft-meta
    # =========================================================================================

    def _write_meta(self, snap: Snapshot | None = None, configs: list[Entry] | None = None,
                    candidates: dict[int, tuple[int, int]] | None = None,
                    log_starts: list[tuple[int, int, int]] | None = None) -> None:
        snap = self._snap if snap is None else snap
        configs = self._configs if configs is None else configs
        candidates = self._candidates if candidates is None else candidates
        log_starts = self._log_starts if log_starts is None else log_starts
        doc = {
            "version": 1,
            "snapshot": [snap.index, snap.term, sorted(snap.configuration.voters),
                         sorted(snap.configuration.learners)],
            "configs": [[e.index, e.term, bytes(e.data).decode()] for e in configs],
            "candidates": [[b, i, t] for b, (i, t) in sorted(candidates.items())],
            "log_starts": [list(x) for x in log_starts],
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        data = bytes(snap.data)
        head = _META_HEAD.pack(_META_MAGIC, crc32c.crc32c(body + data), len(body))
        atomic_write(self._meta_path, head + body + data, durable=True)

    def _read_meta(self) -> tuple[Snapshot, list[Entry], dict[int, tuple[int, int]], list[tuple[int, int, int]]] | None:
        try:
            with open(self._meta_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            magic, crc, n = _META_HEAD.unpack_from(raw, 0)
            body = raw[_META_HEAD.size:_META_HEAD.size + n]
            data = raw[_META_HEAD.size + n:]
            if magic != _META_MAGIC or crc32c.crc32c(body + data) != crc or len(body) != n:
                raise ValueError("bad magic or checksum")
            doc = json.loads(body)
            index, term, voters, learners = doc["snapshot"]
            snap = Snapshot(index, term, Configuration(frozenset(voters), frozenset(learners)), data)
            configs = [Entry(t, i, i, _CONFIG, c.encode()) for i, t, c in doc["configs"]]
            candidates = {b: (i, t) for b, i, t in doc["candidates"]}
            log_starts = [(int(i), int(t), int(o)) for i, t, o in doc.get("log_starts", ())]  # older files: none
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            # atomic_write never leaves a torn file: this is corruption, and guessing terms is unsafe.
            raise RaftLogCorrupt(f"{self._meta_path} is unreadable: {exc}") from exc
        return snap, configs, candidates, log_starts

    def _recover(self) -> None:
        """Bring the log in line with raft-meta after a crash between a meta write and the log change."""
        log = self.log
        snap = self._snap
        if log.log_start_offset < snap.index + 1:
            # A snapshot install or compaction whose log change did not happen (meta is written first).
            if log.log_end_offset > snap.index and self._header_at(snap.index)[2] == snap.term:
                log.delete_records_before(snap.index + 1)
            else:
                log.truncate_fully_and_start_at(snap.index + 1)
        else:
            self._adopt_log_start()  # retention deleted segments but the new snapshot point was not written
            snap = self._snap
        # CONFIG side index: keep the entries the log really holds (a crash may have lost their batch).
        kept = []
        for e in self._configs:
            if e.index <= snap.index or e.index > self.last_index():
                continue
            base, last, term = self._header_at(e.index)
            if base != e.index or last != e.index or term != e.term:
                continue
            entries = self.entries(e.index, e.index + 1, 1)
            if entries and entries[0].kind is _CONFIG and bytes(entries[0].data) == bytes(e.data):
                kept.append(e)
        starts = [x for x in self._log_starts if self._holds_log_start(*x)]
        if kept != self._configs or starts != self._log_starts:
            self._configs = kept
            self._log_starts = starts
            self._write_meta()

    def _holds_log_start(self, index: int, term: int, offset: int) -> bool:
        """Whether the log holds that LOG_START entry (its meta record is written before the batch)."""
        if index <= self._snap.index or index > self.last_index() or index < self.log.log_start_offset:
            return False
        if self._header_at(index) != (index, index, term):
            return False
        entries = self.entries(index, index + 1, 1)
        return bool(entries) and entries[0].kind is _DATA and log_start_of(entries[0].data) == offset

    def stored_bytes(self, start: int | None = None, upto: int | None = None) -> bytes:
        """The stored batches (stamped, as on disk) of offsets ``start``..``upto`` (default: the whole Raft
        log). For comparing replicas byte for byte (tests, tools); reads everything into memory."""
        log = self.log
        offset = max(self.first_index() if start is None else start, log.log_start_offset)
        end = self.last_index() if upto is None else min(upto, self.last_index())
        out = bytearray()
        while offset <= end:
            chunk = bytes(log.read(offset, 4 << 20, upper_bound=end + 1))
            if not chunk:
                break
            out += chunk
            last = _last_batch_pos(chunk)
            offset = _OFFSET.unpack_from(chunk, last)[0] + _LOD.unpack_from(chunk, last + 23)[0] + 1
        return bytes(out)

    def __repr__(self) -> str:
        return (f"PartitionRaftLog({self.directory!r}, first={self.first_index()}, last={self.last_index()}, "
                f"snapshot=({self._snap.index}, {self._snap.term}))")
