"""PartitionLog: one partition's log of segment files holding Kafka RecordBatch v2 bytes as on the wire.

Directory layout:
  00000000000000000000.log / .index / .timeindex   segments, named by base offset
  leader-epoch-checkpoint                          epoch -> start offset (Kafka's text format)
  log-start-offset-checkpoint                      set by DeleteRecords
  recovery-point-offset-checkpoint                 segments below it were fsynced whole (data and indexes)
  cleaner-offset-checkpoint                        compaction: first offset not yet cleaned
  .clean-shutdown                                  written by close(), removed by open()

Threads: the event loop calls append/read/truncate/retention; `flush()` may run in a worker thread and
`compact()` in another. One lock guards the segment list and the offsets; fsyncs and compaction I/O run
outside it, on duplicated file descriptors, so a concurrent deletion never pulls a descriptor from under them.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.config import LogConfig
from storage.epoch_cache import LeaderEpochCache
from storage.errors import (
    OffsetOutOfRangeError,
    StaleLeaderEpochError,
    StorageError,
    UnexpectedAppendOffsetError,
)
from storage.fileutil import (
    atomic_write,
    fsync_dir,
    fsync_path,
    read_offset_checkpoint,
    write_all,
    write_offset_checkpoint,
)
from storage.index import SegmentIndex
from storage.record_batch import (
    ATTR_TIMESTAMP_TYPE,
    HEADER,
    LOG_OVERHEAD,
    decode_records,
    parse_header,
    set_log_append_time,
    validate_batches_raw,
)
from storage.segment import (
    INDEX_SUFFIX,
    INT32_MAX,
    TIME_INDEX_SUFFIX,
    BatchScanner,
    Segment,
)

if TYPE_CHECKING:
    from storage.cleaner import CompactionStats

log = logging.getLogger("tidelog.storage")

CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
EPOCH_CHECKPOINT_FILE = "leader-epoch-checkpoint"
LOG_START_CHECKPOINT_FILE = "log-start-offset-checkpoint"
RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
CLEANER_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
DELETED_SUFFIX = ".deleted"

# Sealed segments load their indexes on first use; at most this many stay loaded (the active one always is).
MAX_LOADED_INDEXES = 16
# Sanity bound on a replicated batch: the leader accepted it under max.message.bytes, which may since have
# been lowered, so a follower must not reject it; this only stops garbage from claiming gigabytes.
REPLICATED_BATCH_LIMIT = 64 * 1024 * 1024

_SEGMENT_RE = re.compile(r"^(\d{20})\.log$")
_STAMP = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch: bytes 0..16, outside the CRC


@dataclass(slots=True)
class AppendResult:
    base_offset: int  # offset of the first record appended
    last_offset: int  # offset of the last record appended
    max_timestamp: int  # largest batch maxTimestamp (after LogAppendTime stamping)
    log_append_time: int  # now_ms when the topic uses LogAppendTime, else -1 (Kafka's ProduceResponse field)
    batch_count: int
    size_bytes: int


class PartitionLog:
    """See docs/storage-contract.md. Build with `PartitionLog.open`."""

    def __init__(self, directory: str, config: LogConfig) -> None:
        self.directory = directory
        self._config = config
        # Lock order: _lock, then _sync_lock. The loop's appends and reads take only _lock; flush() (a worker
        # thread) takes only _sync_lock, which guards what a flush touches: descriptors being closed, the
        # durable offset, the truncation count and the checkpoints. So a flush never waits behind a busy loop.
        self._lock = threading.RLock()
        self._sync_lock = threading.RLock()
        self._flush_lock = threading.Lock()  # one flush at a time
        self._segments: list[Segment] = []
        self._bases: list[int] = []  # base offsets of _segments, for bisect
        self._loaded: OrderedDict[int, Segment] = OrderedDict()  # sealed segments with loaded indexes (LRU)
        self._unsynced: list[Segment] = []  # sealed segments whose data/indexes are not yet fsynced
        self._epochs = LeaderEpochCache(os.path.join(directory, EPOCH_CHECKPOINT_FILE))
        self._log_start_offset = 0
        self._log_end_offset = 0
        self._durable_end_offset = 0
        self._recovery_point = 0
        self._size_bytes = 0
        self._truncations = 0  # bumped by every truncation: a flush that straddles one claims nothing
        self._dir_dirty = False  # a segment was created since the last directory fsync
        self._closed = False
        self._failed: str | None = None  # set when an fsync or write failed: the log refuses further writes
        # Compaction state (see storage/cleaner.py).
        self.cleaner_checkpoint_path = os.path.join(directory, CLEANER_CHECKPOINT_FILE)
        self.min_tombstone_horizon_ms: int | None = None  # None: unknown (after open), so one clean pass runs

    # ---------------------------------------------------------------------------------------------------------
    # Properties

    @property
    def config(self) -> LogConfig:
        return self._config

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def durable_end_offset(self) -> int:
        return self._durable_end_offset

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    @property
    def latest_epoch(self) -> int:
        return self._epochs.latest_epoch

    @property
    def epoch_entries(self) -> list[tuple[int, int]]:
        """(epoch, start offset) pairs of the leader-epoch cache, oldest first."""
        with self._lock:
            return self._epochs.snapshot()

    @property
    def segment_base_offsets(self) -> list[int]:
        with self._lock:
            return list(self._bases)

    @property
    def closed(self) -> bool:
        return self._closed

    def update_config(self, config: LogConfig) -> None:
        """Apply an alter-config; new sizes and intervals take effect from the next append or roll."""
        with self._lock:
            self._config = config

    # ---------------------------------------------------------------------------------------------------------
    # Open and recovery

    @classmethod
    def open(cls, directory: str, config: LogConfig, *, now_ms: int) -> PartitionLog:
        os.makedirs(directory, exist_ok=True)
        self = cls(directory, config)
        self._recover(now_ms)
        return self

    def _recover(self, now_ms: int) -> None:
        from storage.cleaner import recover_interrupted_swaps

        d = self.directory
        marker = os.path.join(d, CLEAN_SHUTDOWN_FILE)
        clean = os.path.exists(marker)
        recover_interrupted_swaps(d)
        bases = self._list_segment_files()
        start_ckpt = read_offset_checkpoint(os.path.join(d, LOG_START_CHECKPOINT_FILE))
        recovery_point = read_offset_checkpoint(os.path.join(d, RECOVERY_POINT_FILE)) or 0
        epochs_ok = self._epochs.load()
        if not bases:
            bases = [start_ckpt or 0]
            Segment.create(d, bases[0]).close()
            self._epochs.clear()
            epochs_ok = True
            clean = True
        for i, base in enumerate(bases):
            seg = Segment.open_existing(d, base, writable=True)
            seg.next_offset = bases[i + 1] if i + 1 < len(bases) else base
            seg.sealed = i + 1 < len(bases)
            self._segments.append(seg)
            self._bases.append(base)
        scanned: list[tuple[int, int]] = []  # (epoch, base offset) of every CRC-checked batch, in order
        scan_from: int | None = None  # first offset CRC-checked by this recovery
        i = 0
        while i < len(self._segments):
            seg = self._segments[i]
            last = i == len(self._segments) - 1
            full_scan = (not clean and seg.base_offset >= recovery_point) or (last and not clean)
            if not full_scan:
                if not self._load_sealed_or_tail(seg, last, scanned):
                    full_scan = True
                elif last and scan_from is None:
                    scan_from = seg.base_offset + (seg.index.last_rel_offset if seg.index else 0)
            if full_scan:
                if scan_from is None:
                    scan_from = seg.base_offset
                seg.index = SegmentIndex()
                seg.max_timestamp = seg.offset_of_max_timestamp = -1
                seg.bytes_since_index = 0
                cut = self._scan_into(seg, 0, scanned)
                if cut is not None:
                    self._cut_tail(i, cut)
                    break
                if seg.sealed:
                    seg.seal_time_index()
                    seg.write_index_files()
            i += 1
        active = self._segments[-1]
        active.sealed = False
        if active.index is None:
            loaded = active.load_index()
            active.index = loaded if loaded is not None else SegmentIndex()
        active.write_index_files()  # rebuilt or scanned: put the recovered state on disk too
        self._log_end_offset = active.next_offset
        self._size_bytes = sum(s.size for s in self._segments)
        if active.size > 0:
            # The first append's time is not on disk; its batch's timestamp is the closest record of it (exact
            # with LogAppendTime). Never later than now, so a restart cannot postpone a roll.
            first = parse_header(active.read_batch(0, HEADER.size))
            ts = first.max_timestamp
            active.rolling_basis_ms = min(ts, now_ms) if ts >= 0 else now_ms
        for seg in self._segments[:-1]:
            if seg.index is not None:
                self._loaded[seg.base_offset] = seg
        self._evict_indexes()
        # Log start: the DeleteRecords checkpoint, never below the first segment.
        self._log_start_offset = max(start_ckpt or 0, self._segments[0].base_offset)
        if self._log_start_offset > self._log_end_offset:
            # Data up to the checkpointed log start was lost (a crash after DeleteRecords beyond the durable end).
            log.warning("partition log %s: log start %d is past the recovered end %d; starting empty at %d",
                        d, self._log_start_offset, self._log_end_offset, self._log_start_offset)
            self._reset_to(self._log_start_offset)
        # Epoch cache: the checkpoint, cut to the recovered end, then what the CRC scan saw.
        if not epochs_ok and scan_from == self._segments[0].base_offset:
            self._epochs.clear()  # this recovery CRC-checked every batch: the scan is the history
            for epoch, base in scanned:
                if epoch > self._epochs.latest_epoch:
                    self._epochs.assign(epoch, base)
        elif not epochs_ok:
            log.info("partition log %s: rebuilding the leader-epoch cache from batch headers", d)
            self._epochs.clear()
            self._rebuild_epochs_from_headers()
        else:
            self._epochs.truncate_from_end(self._log_end_offset)
            if scan_from is not None:
                self._epochs.truncate_from_end(scan_from)
            for epoch, base in scanned:
                if epoch > self._epochs.latest_epoch:
                    self._epochs.assign(epoch, base)
        self._epochs.truncate_from_start(self._log_start_offset)
        if self._epochs.dirty or not epochs_ok:
            self._epochs.write()
        # Everything on disk is now checked; make it durable so durable_end_offset can start at the end.
        for seg in self._segments:
            if seg.base_offset >= recovery_point or not clean:
                os.fdatasync(seg.fd)
        self._recovery_point = active.base_offset
        write_offset_checkpoint(os.path.join(d, RECOVERY_POINT_FILE), self._recovery_point)
        if os.path.exists(marker):
            os.unlink(marker)
        fsync_dir(d)
        self._durable_end_offset = self._log_end_offset
        self._check_invariants()

    def _list_segment_files(self) -> list[int]:
        bases = []
        logs = set()
        names = os.listdir(self.directory)
        for name in names:
            m = _SEGMENT_RE.match(name)
            if m:
                bases.append(int(m.group(1)))
                logs.add(m.group(1))
        for name in names:
            stem, _, suffix = name.partition(".")
            if ("." + suffix) in (INDEX_SUFFIX, TIME_INDEX_SUFFIX) and stem.isdigit() and stem not in logs:
                os.unlink(os.path.join(self.directory, name))  # index of a deleted segment
            elif name.endswith(".tmp"):
                os.unlink(os.path.join(self.directory, name))  # an atomic_write that never got renamed
        bases.sort()
        return bases

    def _load_sealed_or_tail(self, seg: Segment, last: bool, scanned: list[tuple[int, int]]) -> bool:
        """Trust a segment written before a clean shutdown (or below the recovery point): read its indexes.
        For the last segment also CRC-check the tail after the last index entry. False: scan it whole."""
        index_ok = os.path.exists(seg.index_path) and os.path.exists(seg.time_index_path)
        if index_ok:
            ts_size = os.path.getsize(seg.time_index_path)
            index_ok = ts_size % 12 == 0 and os.path.getsize(seg.index_path) % 8 == 0
        if not last:
            if not index_ok:
                log.info("partition log %s: rebuilding missing or damaged index of segment %d",
                         self.directory, seg.base_offset)
                seg.rebuild_index(self._config.index_interval_bytes)
                seg.write_index_files()
                return True
            seg.max_timestamp, seg.offset_of_max_timestamp = self._read_last_time_entry(seg)
            return True
        index = seg.load_index() if index_ok else None
        if index is None:
            if seg.size == 0:
                return False  # a new, empty segment: nothing to rebuild, nothing to say
            log.info("partition log %s: rebuilding missing or damaged index of active segment %d",
                     self.directory, seg.base_offset)
            return False
        seg.index = index
        ts, rel = index.max_timestamp
        seg.max_timestamp = ts
        seg.offset_of_max_timestamp = seg.base_offset + rel if rel >= 0 else -1
        seg.bytes_since_index = 0
        start = index.last_position
        cut = self._scan_into(seg, start, scanned, expected=seg.base_offset + index.last_rel_offset)
        if cut is not None:
            self._cut_tail(len(self._segments) - 1, cut)
        return True

    def _read_last_time_entry(self, seg: Segment) -> tuple[int, int]:
        size = os.path.getsize(seg.time_index_path)
        if size == 0:
            return -1, -1
        with open(seg.time_index_path, "rb") as f:
            f.seek(size - 12)
            ts, rel = struct.unpack(">qi", f.read(12))
        return ts, seg.base_offset + rel

    def _scan_into(self, seg: Segment, start: int, scanned: list[tuple[int, int]],
                   expected: int | None = None) -> tuple[int, int, str] | None:
        """CRC-check batches from `start` to the end of the file, rebuilding index entries as it goes.
        Returns None when all is valid, else (byte position, offset, reason) of the first bad batch."""
        interval = self._config.index_interval_bytes
        size = os.fstat(seg.fd).st_size
        scanner = BatchScanner(seg.fd, start, size, expected_offset=expected if expected is not None else seg.base_offset,
                               segment_base=seg.base_offset, check_crc=True)
        next_offset = expected if expected is not None else seg.base_offset
        for pos, h in scanner:
            seg.track_batch(h[0], pos, LOG_OVERHEAD + h[1], h[8], interval)
            scanned.append((h[2], h[0]))
            next_offset = h[0] + h[6] + 1
        seg.size = scanner.valid_end
        if not seg.sealed or scanner.error is not None:
            seg.next_offset = next_offset if scanner.valid_end > 0 else seg.base_offset
        if scanner.error is not None:
            return scanner.valid_end, seg.next_offset, scanner.error
        return None

    def _cut_tail(self, i: int, cut: tuple[int, int, str]) -> None:
        """Recovery found a torn or corrupt batch in segment i: drop it and everything after. One log line."""
        position, offset, reason = cut
        seg = self._segments[i]
        removed = os.fstat(seg.fd).st_size - position
        os.ftruncate(seg.fd, position)
        seg.size = position
        seg.sealed = False
        seg.next_offset = offset
        for later in self._segments[i + 1 :]:
            removed += later.size
            self._delete_segment_files(later)
        del self._segments[i + 1 :], self._bases[i + 1 :]
        log.warning(
            "partition log %s: recovery cut the log at offset %d (segment %s, byte position %d): %s; "
            "removed %d bytes",
            self.directory, offset, os.path.basename(seg.log_path), position, reason, removed,
        )

    def _rebuild_epochs_from_headers(self) -> None:
        """The epoch checkpoint was lost or damaged: read every batch header once (no CRC, no records)."""
        for seg in self._segments:
            for _pos, h in seg.iter_headers_from(0):
                if h[2] > self._epochs.latest_epoch:
                    self._epochs.assign(h[2], h[0])

    def _reset_to(self, offset: int) -> None:
        for seg in self._segments:
            self._delete_segment_files(seg)
        self._segments.clear()
        self._bases.clear()
        self._loaded.clear()
        self._unsynced.clear()
        seg = Segment.create(self.directory, offset)
        self._segments.append(seg)
        self._bases.append(offset)
        self._log_end_offset = offset
        self._size_bytes = 0
        self._epochs.clear()
        self._dir_dirty = True

    # ---------------------------------------------------------------------------------------------------------
    # Append

    def append(self, buf: bytes | bytearray | memoryview, *, leader_epoch: int, now_ms: int) -> AppendResult:
        """Leader path: validate (CRC, framing; never records), assign offsets from the log end, stamp the
        leader epoch (and LogAppendTime if configured), write. No fsync. A bytearray is stamped in place, so
        the caller can replicate the very bytes that were appended; other buffers are copied once."""
        config = self._config
        headers = validate_batches_raw(buf, max_batch_bytes=config.max_message_bytes, from_producer=True)
        data = buf if type(buf) is bytearray else bytearray(buf)
        with self._lock:
            self._check_writable()
            if leader_epoch < 0 or leader_epoch < self._epochs.latest_epoch:
                raise StaleLeaderEpochError(
                    f"leader epoch {leader_epoch} is older than the log's latest epoch {self._epochs.latest_epoch}"
                )
            base = self._log_end_offset
            count = 0
            for h in headers:
                count += h[12]  # == lastOffsetDelta + 1 for produced batches (validated)
            seg = self._segment_for(base, base + count - 1, len(data), now_ms)
            log_append_time = now_ms if config.log_append_time else -1
            run_max_ts, size = self._append_run(seg, data, headers, base, leader_epoch, log_append_time)
            if leader_epoch != self._epochs.latest_epoch:
                self._epochs.assign(leader_epoch, base)
            return AppendResult(base, self._log_end_offset - 1, run_max_ts, log_append_time, len(headers), size)

    def append_replicated(self, buf: bytes | bytearray | memoryview, *, now_ms: int,
                          allow_gaps: bool = False) -> AppendResult:
        """Follower / Raft path: batches already carry offsets and epochs. The first base offset must equal
        the log end offset (with `allow_gaps`, be >= it, as Kafka followers accept runs from a compacted
        leader). CRC checked, nothing restamped, nothing copied."""
        config = self._config
        headers = validate_batches_raw(buf, max_batch_bytes=max(config.max_message_bytes, REPLICATED_BATCH_LIMIT),
                                       from_producer=False)
        with self._lock:
            self._check_writable()
            leo = self._log_end_offset
            first = headers[0][0]
            if first != leo and not (allow_gaps and first > leo):
                raise UnexpectedAppendOffsetError(
                    f"replicated batches start at offset {first} but the log end offset is {leo}"
                )
            expected = first
            latest_epoch = epoch = self._epochs.latest_epoch
            new_epochs: list[tuple[int, int]] = []
            for h in headers:
                base = h[0]
                if base != expected and not (allow_gaps and base > expected):
                    raise UnexpectedAppendOffsetError(
                        f"replicated batch at offset {base} does not follow offset {expected - 1}"
                    )
                if h[2] != epoch and h[2] >= 0:
                    if h[2] < epoch:
                        raise StaleLeaderEpochError(
                            f"replicated batch at offset {base} has leader epoch {h[2]}, older than {epoch}: "
                            "truncate first"
                        )
                    epoch = h[2]
                    new_epochs.append((epoch, base))
                expected = base + h[6] + 1
            seg = self._segment_for(first, expected - 1, len(buf), now_ms)
            if expected - 1 - seg.base_offset > INT32_MAX:
                raise StorageError("a replicated run spans more than 2^31 offsets; send it in smaller runs")
            run_max_ts, size = self._append_run(seg, buf, headers, first, None, -1)
            for e, base in new_epochs:
                if e > latest_epoch:
                    self._epochs.assign(e, base)
            log_append_time = run_max_ts if headers[-1][5] & ATTR_TIMESTAMP_TYPE else -1
            return AppendResult(first, expected - 1, run_max_ts, log_append_time, len(headers), size)

    def _append_run(self, seg: Segment, data: bytes | bytearray | memoryview, headers: list[tuple[int, ...]],
                    first_offset: int, leader_epoch: int | None, log_append_time: int) -> tuple[int, int]:
        """The per-batch loop of both append paths, then the write. With `leader_epoch` (leader path) each
        batch is stamped with its offset and the epoch (outside the CRC) and, when `log_append_time` >= 0,
        LogAppendTime; without it (replicated) the batches' own offsets count. Keeps the sparse indexes.
        Locals and bound methods only: this runs once per batch on the produce path.
        Returns (largest batch timestamp, bytes written)."""
        index = seg.index
        assert index is not None
        saved = (seg.max_timestamp, seg.offset_of_max_timestamp, seg.bytes_since_index, len(index),
                 len(index.timestamps))
        rel_add, pos_add = index.rel_offsets.append, index.positions.append
        ts_add, ts_rel_add = index.timestamps.append, index.ts_rel_offsets.append
        last_indexed_ts = index.timestamps[-1] if index.timestamps else -1
        interval = self._config.index_interval_bytes
        seg_base = seg.base_offset
        start_pos = pos = seg.size
        since = seg.bytes_since_index
        max_ts = seg.max_timestamp
        off_max = seg.offset_of_max_timestamp
        run_max_ts = -1
        stamp = leader_epoch is not None
        pack = _STAMP.pack_into
        offset = first_offset
        for h in headers:
            blen = h[1]
            if stamp:
                pack(data, pos - start_pos, offset, blen, leader_epoch)
                if log_append_time >= 0:
                    set_log_append_time(data, pos - start_pos, blen + LOG_OVERHEAD, log_append_time)
                    ts = log_append_time
                else:
                    ts = h[8]
            else:
                offset = h[0]
                ts = h[8]
            if ts > run_max_ts:
                run_max_ts = ts
                if ts > max_ts:
                    max_ts = ts
                    off_max = offset
            if since > interval:
                rel_add(offset - seg_base)
                pos_add(pos)
                if max_ts > last_indexed_ts:
                    ts_add(max_ts)
                    ts_rel_add(off_max - seg_base)
                    last_indexed_ts = max_ts
                since = 0
            since += blen + LOG_OVERHEAD
            pos += blen + LOG_OVERHEAD
            offset += h[6] + 1
        self._write(seg, data, saved)
        seg.max_timestamp, seg.offset_of_max_timestamp, seg.bytes_since_index = max_ts, off_max, since
        seg.size = pos
        seg.next_offset = offset
        self._size_bytes += pos - start_pos
        assert offset > self._log_end_offset, "offsets only grow"
        self._log_end_offset = offset
        return run_max_ts, pos - start_pos

    def _segment_for(self, first_offset: int, last_offset: int, size: int, now_ms: int) -> Segment:
        """The active segment, rolled first when this append would overflow it (size, age, offsets, index)."""
        seg = self._segments[-1]
        config = self._config
        if size > INT32_MAX:
            raise StorageError(f"an append of {size} bytes exceeds the 2 GiB segment position limit")
        if seg.size > 0 and (
            seg.size + size > config.segment_bytes
            or seg.size + size > INT32_MAX
            or last_offset - seg.base_offset > INT32_MAX
            or now_ms - seg.rolling_basis_ms > config.segment_ms
            or (seg.index is not None and seg.index.full)
        ):
            seg = self._roll(first_offset)
        if seg.size == 0:
            seg.rolling_basis_ms = now_ms  # segment.ms counts broker time from the segment's first append
        return seg

    def _write(self, seg: Segment, data: bytes | bytearray | memoryview,
               saved: tuple[int, int, int, int, int]) -> None:
        try:
            write_all(seg.fd, data)
        except OSError as exc:
            # Undo the index entries and the partial write so the log is unchanged; if even that fails the
            # file's state is unknown and the log goes offline.
            index = seg.index
            assert index is not None
            seg.max_timestamp, seg.offset_of_max_timestamp, seg.bytes_since_index, n_entries, n_time = saved
            del index.rel_offsets[n_entries:], index.positions[n_entries:]
            del index.timestamps[n_time:], index.ts_rel_offsets[n_time:]
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError:
                self._failed = f"write failed and could not be undone: {exc}"
            raise StorageError(f"write to {seg.log_path} failed: {exc}") from exc

    def roll_if_due(self, now_ms: int) -> bool:
        """Age-based roll (segment.ms) for a partition that receives no appends. True when it rolled."""
        with self._lock:
            self._check_writable()
            seg = self._segments[-1]
            if seg.size > 0 and now_ms - seg.rolling_basis_ms > self._config.segment_ms:
                self._roll(self._log_end_offset)
                return True
            return False

    def roll(self) -> None:
        """Seal the active segment now (if it holds anything)."""
        with self._lock:
            self._check_writable()
            if self._segments[-1].size > 0:
                self._roll(self._log_end_offset)

    def _roll(self, new_base: int) -> Segment:
        old = self._segments[-1]
        assert new_base >= old.next_offset, "offsets only grow"
        try:
            seg = Segment.create(self.directory, new_base)  # first: if this fails nothing has changed
        except OSError as exc:
            raise StorageError(f"cannot create the segment for offset {new_base} in {self.directory}: {exc}") \
                from exc
        old.seal_time_index()
        old.write_index_files()
        old.sealed = True
        old.next_offset = new_base
        self._unsynced.append(old)  # before publishing the new segment: flush() relies on this order
        self._loaded[old.base_offset] = old
        self._evict_indexes()
        self._segments.append(seg)
        self._bases.append(new_base)
        self._dir_dirty = True
        return seg

    # ---------------------------------------------------------------------------------------------------------
    # Reads

    def read(self, offset: int, max_bytes: int, *, upper_bound: int | None = None) -> bytes | memoryview:
        """Whole batches starting with the batch that CONTAINS `offset` (after a compaction gap, the first batch
        past it). At least one batch, even if larger than max_bytes; never a batch whose last offset is >=
        `upper_bound`. b"" at the log end; OffsetOutOfRangeError outside [log_start_offset, log_end_offset]."""
        with self._lock:
            leo = self._log_end_offset
            if offset == leo:
                return b""
            if offset < self._log_start_offset or offset > leo:
                raise OffsetOutOfRangeError(offset, self._log_start_offset, leo)
            limit = leo if upper_bound is None or upper_bound > leo else upper_bound
            if offset >= limit:
                return b""
            segments = self._segments
            i = max(0, bisect.bisect_right(self._bases, offset) - 1)
            parts: list[memoryview] = []
            budget = max_bytes
            while i < len(segments):
                seg = segments[i]
                self._ensure_index(seg)
                chunk, reached_end = seg.read(offset, budget, limit, not parts)
                if chunk is not None:
                    parts.append(chunk)
                    budget -= len(chunk)
                if not reached_end or budget <= 0:
                    break
                i += 1
                if i < len(segments):
                    offset = segments[i].base_offset
            if not parts:
                return b""
            return parts[0] if len(parts) == 1 else b"".join(parts)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp >= `timestamp_ms` (Kafka ListOffsets), found
        through the time index; only the candidate batch is decoded. None when every record is older."""
        with self._lock:
            log_start = self._log_start_offset
            i = max(0, bisect.bisect_right(self._bases, log_start) - 1)
            for seg in self._segments[i:]:
                if seg.max_timestamp < timestamp_ms:
                    continue
                self._ensure_index(seg)
                index = seg.index
                assert index is not None
                rel = index.time_lookup(timestamp_ms)
                pos = index.lookup(rel)[1] if rel > 0 else 0
                for p, h in seg.iter_headers_from(pos):
                    # h[8] maxTimestamp, h[12] recordsCount; skip batches wholly before the log start.
                    if h[8] < timestamp_ms or h[0] + h[6] < log_start or h[12] == 0:
                        continue
                    size = LOG_OVERHEAD + h[1]
                    data = seg.read_batch(p, size)
                    for record in decode_records(data, parse_header(data)):
                        if record.timestamp >= timestamp_ms and record.offset >= log_start:
                            return record.offset, record.timestamp
            return None

    def _ensure_index(self, seg: Segment) -> None:
        if seg.index is None:
            index = seg.load_index()
            if index is None:
                log.info("partition log %s: rebuilding damaged index of segment %d", self.directory, seg.base_offset)
                seg.rebuild_index(self._config.index_interval_bytes)
                seg.write_index_files()
            else:
                seg.index = index
        if seg.sealed:
            self._loaded[seg.base_offset] = seg
            self._loaded.move_to_end(seg.base_offset)
            self._evict_indexes()

    def _evict_indexes(self) -> None:
        while len(self._loaded) > MAX_LOADED_INDEXES:
            _base, seg = self._loaded.popitem(last=False)
            if seg.sealed:
                seg.index = None

    # ---------------------------------------------------------------------------------------------------------
    # Leader epochs

    def epoch_for_offset(self, offset: int) -> int:
        """Leader epoch (Raft term) of the batch holding `offset`; -1 for batches written without one."""
        with self._lock:
            if offset < self._log_start_offset or offset >= self._log_end_offset:
                raise OffsetOutOfRangeError(offset, self._log_start_offset, self._log_end_offset)
            return self._epochs.epoch_for_offset(offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka OffsetForLeaderEpoch: (largest epoch <= `epoch`, its end offset); (-1, -1) if unknown."""
        with self._lock:
            return self._epochs.end_offset_for(epoch, self._log_end_offset)

    # ---------------------------------------------------------------------------------------------------------
    # Truncation, retention, DeleteRecords

    def truncate_to(self, offset: int) -> None:
        """Drop every batch at and after `offset`, which must be a batch boundary (or inside a compaction gap).
        Synchronous and durable: the cut is fsynced and the epoch cache rewritten before this returns."""
        with self._lock:
            self._check_writable()
            if offset >= self._log_end_offset:
                return
            if offset < self._log_start_offset:
                raise OffsetOutOfRangeError(offset, self._log_start_offset, self._log_end_offset)
            i = max(0, bisect.bisect_right(self._bases, offset) - 1)
            seg = self._segments[i]
            self._ensure_index(seg)
            pos, batch_base = seg.position_of(offset)
            if pos < seg.size and batch_base < offset:
                raise ValueError(f"offset {offset} is inside the batch starting at {batch_base}; truncate at a batch "
                                 "boundary")
            with self._sync_lock:
                removed_segments = self._segments[i + 1 :]
                for later in removed_segments:
                    self._size_bytes -= later.size
                    self._forget(later)
                    self._delete_segment_files(later)
                del self._segments[i + 1 :], self._bases[i + 1 :]
                self._truncate_segment(seg, pos, offset)
                self._truncations += 1
                self._log_end_offset = offset
                self._durable_end_offset = min(self._durable_end_offset, offset)
                try:
                    os.fdatasync(seg.fd)
                    if removed_segments:
                        fsync_dir(self.directory)
                    if self._epochs.truncate_from_end(offset):
                        self._epochs.write()
                    cleaned_to = read_offset_checkpoint(self.cleaner_checkpoint_path)
                    if cleaned_to is not None and cleaned_to > offset:
                        write_offset_checkpoint(self.cleaner_checkpoint_path, offset)  # new data there is dirty
                    if self._recovery_point > seg.base_offset:
                        self._recovery_point = seg.base_offset
                        write_offset_checkpoint(os.path.join(self.directory, RECOVERY_POINT_FILE), seg.base_offset)
                except OSError as exc:
                    self._failed = f"fsync after truncation failed: {exc}"
                    raise StorageError(self._failed) from exc
                self._check_invariants()

    def _truncate_segment(self, seg: Segment, pos: int, offset: int) -> None:
        """Cut `seg` at byte `pos`; fix its indexes, max timestamp and index bookkeeping; make it active."""
        index = seg.index
        assert index is not None
        self._size_bytes -= seg.size - pos
        os.ftruncate(seg.fd, pos)
        seg.size = pos
        index.truncate(offset - seg.base_offset)
        ts, rel = index.max_timestamp
        seg.max_timestamp = ts
        seg.offset_of_max_timestamp = seg.base_offset + rel if rel >= 0 else -1
        last_pos = index.last_position
        # Batches after the last index entry may hold a larger timestamp than the last time entry: rescan them
        # (a bounded walk: at most index.interval.bytes plus one batch).
        for _p, h in seg.iter_headers_from(last_pos):
            if h[8] > seg.max_timestamp:
                seg.max_timestamp, seg.offset_of_max_timestamp = h[8], h[0]
        seg.bytes_since_index = pos - last_pos
        seg.next_offset = offset
        if pos == 0:
            seg.rolling_basis_ms = -1
        seg.sealed = False
        self._loaded.pop(seg.base_offset, None)
        if seg in self._unsynced:
            self._unsynced.remove(seg)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop the whole log and restart it empty at `offset` (a follower far behind the leader's log start,
        or a Raft snapshot install)."""
        with self._lock, self._sync_lock:
            self._check_writable()
            self._reset_to(offset)
            self._log_start_offset = offset
            self._durable_end_offset = offset
            self._truncations += 1
            write_offset_checkpoint(os.path.join(self.directory, LOG_START_CHECKPOINT_FILE), offset)
            self._epochs.write()
            if os.path.exists(self.cleaner_checkpoint_path):
                write_offset_checkpoint(self.cleaner_checkpoint_path, offset)
            self._recovery_point = offset
            write_offset_checkpoint(os.path.join(self.directory, RECOVERY_POINT_FILE), offset)
            fsync_dir(self.directory)
            self._dir_dirty = False
            self._check_invariants()

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole segments (never the active one): those wholly below the log start, then, for
        cleanup.policy=delete, those whose largest timestamp is older than retention.ms and the oldest ones
        while the log exceeds retention.bytes. Advances the log start. Returns the number of segments deleted."""
        with self._lock:
            self._check_open()
            config = self._config
            segs = self._segments
            doomed = 0
            while doomed + 1 < len(segs) and segs[doomed + 1].base_offset <= self._log_start_offset:
                doomed += 1
            if config.delete:
                if config.retention_ms >= 0:
                    while doomed + 1 < len(segs) and now_ms - segs[doomed].max_timestamp > config.retention_ms:
                        doomed += 1
                if config.retention_bytes >= 0:
                    remaining = self._size_bytes - sum(s.size for s in segs[:doomed])
                    while doomed + 1 < len(segs) and remaining - segs[doomed].size >= config.retention_bytes:
                        remaining -= segs[doomed].size
                        doomed += 1
            if doomed == 0:
                return 0
            with self._sync_lock:
                self._delete_oldest(doomed)
            return doomed

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: make `offset` the log start (offsets below become unreadable; whole segments below it
        are deleted now). Returns the new log start offset (Kafka's low watermark)."""
        with self._lock, self._sync_lock:
            self._check_writable()
            if offset > self._log_end_offset or offset < 0:
                raise OffsetOutOfRangeError(offset, self._log_start_offset, self._log_end_offset)
            if offset <= self._log_start_offset:
                return self._log_start_offset
            self._log_start_offset = offset
            self._durable_end_offset = max(self._durable_end_offset, offset)
            write_offset_checkpoint(os.path.join(self.directory, LOG_START_CHECKPOINT_FILE), offset)
            if self._epochs.truncate_from_start(offset):
                self._epochs.write()
            doomed = 0
            while doomed + 1 < len(self._segments) and self._segments[doomed + 1].base_offset <= offset:
                doomed += 1
            if doomed:
                self._delete_oldest(doomed)
            self._check_invariants()
            return self._log_start_offset

    def _delete_oldest(self, count: int) -> None:
        doomed = self._segments[:count]
        del self._segments[:count], self._bases[:count]
        for seg in doomed:
            self._size_bytes -= seg.size
            self._forget(seg)
            self._delete_segment_files(seg)
        new_start = self._segments[0].base_offset
        if new_start > self._log_start_offset:
            self._log_start_offset = new_start
            self._durable_end_offset = max(self._durable_end_offset, new_start)
            if self._epochs.truncate_from_start(new_start):
                self._epochs.dirty = True  # written by the next flush; recovery re-derives it anyway
        self._check_invariants()

    def _forget(self, seg: Segment) -> None:
        self._loaded.pop(seg.base_offset, None)
        if seg in self._unsynced:
            self._unsynced.remove(seg)

    def _delete_segment_files(self, seg: Segment) -> None:
        """Rename to .deleted first (a crash mid-way leaves files recovery knows to remove), then unlink."""
        with self._sync_lock:  # a flush may be about to dup this descriptor
            seg.close()
        for path in (seg.log_path, seg.index_path, seg.time_index_path):
            try:
                os.replace(path, path + DELETED_SUFFIX)
            except FileNotFoundError:
                continue
        for path in (seg.log_path, seg.index_path, seg.time_index_path):
            try:
                os.unlink(path + DELETED_SUFFIX)
            except FileNotFoundError:
                pass

    # ---------------------------------------------------------------------------------------------------------
    # Durability

    def flush(self) -> int:
        """fsync everything written so far; returns the new durable_end_offset. Safe in a worker thread while
        the event loop appends: only offsets written before the fsync started become durable."""
        with self._flush_lock:
            self._check_writable()
            with self._sync_lock:
                # Order matters against a concurrent roll (which queues the old segment in _unsynced before it
                # publishes the new one): end offset, then the active segment, then the sealed ones.
                end = self._log_end_offset
                generation = self._truncations
                active = self._segments[-1]
                sealed = list(self._unsynced)
                if end == self._durable_end_offset and not sealed and not self._dir_dirty and not self._epochs.dirty:
                    return end  # nothing written since the last flush (a timer-driven poll, a second waiter)
                fds = [os.dup(s.fd) for s in sealed if s.fd >= 0]
                fds.append(os.dup(active.fd))
                index_paths = [p for s in sealed for p in (s.index_path, s.time_index_path)]
                dir_dirty, self._dir_dirty = self._dir_dirty, False
                epochs = None
                if self._epochs.dirty:
                    self._epochs.dirty = False  # before the snapshot: a concurrent assign stays dirty
                    epochs = self._epochs.snapshot()
                recovery_point = active.base_offset
            try:
                for fd in fds:
                    os.fdatasync(fd)
                for path in index_paths:
                    fsync_path(path)
                if dir_dirty:
                    fsync_dir(self.directory)
            except OSError as exc:
                # After a failed fsync the page cache state is unknown (the kernel may have dropped the dirty
                # pages): never retry and pretend; take the log offline.
                self._failed = f"fsync failed: {exc}"
                raise StorageError(f"flush of {self.directory} failed: {exc}") from exc
            finally:
                for fd in fds:
                    os.close(fd)
            with self._sync_lock:
                for s in sealed:
                    try:
                        self._unsynced.remove(s)
                    except ValueError:
                        pass  # deleted or truncated meanwhile
                if generation != self._truncations:
                    # A truncation ran meanwhile and wrote its own checkpoints; ours describe the old tail.
                    if epochs is not None:
                        self._epochs.dirty = True
                    return self._durable_end_offset
                try:
                    # Rare writes (a new epoch, a roll); under _sync_lock they stay ordered with truncate_to's.
                    # The epoch file first: recovery trusts it for everything below the recovery point.
                    if epochs is not None:
                        self._epochs.write(epochs)
                    if recovery_point != self._recovery_point:
                        write_offset_checkpoint(os.path.join(self.directory, RECOVERY_POINT_FILE), recovery_point)
                        self._recovery_point = recovery_point
                except OSError as exc:
                    self._failed = f"checkpoint write failed: {exc}"
                    raise StorageError(f"flush of {self.directory} failed: {exc}") from exc
                self._durable_end_offset = max(self._durable_end_offset, end)
                assert self._durable_end_offset <= self._log_end_offset
                return self._durable_end_offset

    def close(self) -> None:
        """Flush, write the active segment's indexes, leave the clean-shutdown marker, close files."""
        with self._lock:
            if self._closed:
                return
            failed = self._failed
        flush_error: StorageError | None = None
        if failed is None:
            try:
                self.flush()
            except StorageError as exc:
                flush_error, failed = exc, str(exc)  # still close the files; no clean-shutdown marker
        with self._lock, self._sync_lock:
            active = self._segments[-1]
            if failed is None:
                active.seal_time_index()
                active.write_index_files()
                fsync_path(active.index_path)
                fsync_path(active.time_index_path)
                if self._epochs.dirty:
                    self._epochs.write()
                atomic_write(os.path.join(self.directory, CLEAN_SHUTDOWN_FILE), b"", durable=True)
            for seg in self._segments:
                seg.close()
            self._closed = True
        if flush_error is not None:
            raise flush_error

    # ---------------------------------------------------------------------------------------------------------
    # Compaction (storage/cleaner.py does the work)

    def compact(self, now_ms: int, *, bytes_per_second: int | None = None, upper_bound: int | None = None,
                **kwargs: object) -> CompactionStats:
        """cleanup.policy=compact: keep the latest record per key in the sealed segments below `upper_bound`
        (pass the high watermark). Safe to run in a worker thread; I/O throttled to `bytes_per_second`."""
        from storage.cleaner import compact_log

        return compact_log(self, now_ms, bytes_per_second=bytes_per_second, upper_bound=upper_bound,
                           **kwargs)  # type: ignore[arg-type]

    # ---------------------------------------------------------------------------------------------------------
    # Helpers

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"partition log {self.directory} is closed")

    def _check_writable(self) -> None:
        if self._closed:
            raise StorageError(f"partition log {self.directory} is closed")
        if self._failed is not None:
            raise StorageError(f"partition log {self.directory} is offline: {self._failed}")

    def _check_invariants(self) -> None:
        assert self._log_start_offset <= self._durable_end_offset <= self._log_end_offset, (
            self._log_start_offset, self._durable_end_offset, self._log_end_offset)
        assert self._bases == sorted(self._bases) and len(self._bases) == len(self._segments)
        assert self._segments[-1].next_offset == self._log_end_offset

    def __repr__(self) -> str:
        return (f"PartitionLog({self.directory!r}, start={self._log_start_offset}, end={self._log_end_offset}, "
                f"durable={self._durable_end_offset}, segments={len(self._segments)})")

