"""Log compaction (cleanup.policy=compact): keep the latest record per key. The one place records are decoded.

One pass:
 1. Cleanable range: sealed segments from the log start up to the first one that is too recent
    (min.compaction.lag.ms) or reaches `upper_bound` (the high watermark). The active segment is never touched.
 2. Key map (key -> latest offset) over the dirty part, from the cleaner checkpoint on, bounded by
    `max_map_bytes` (whole segments; the rest waits for the next pass).
 3. Rewrite every cleanable segment up to the end of the mapped part, grouping neighbours into one segment of
    at most segment.bytes. A record is kept when no later record has its key; a tombstone is kept until
    delete.retention.ms after the pass that first kept it (Kafka's delete-horizon batch flag, KIP-534).
    Batches keep their base offset and lastOffsetDelta; records keep their offsets; untouched batches are
    copied byte for byte; control batches are kept as they are.
    A batch left with no records is DROPPED: its offsets become a gap, which reads skip (a fetch returns the
    next batch; Kafka clients advance by the batch's next offset). We do not keep Kafka's empty batch for the
    producer's last sequence: the log keeps no producer state, and an idle producer's state expires anyway.
    Records without a key are dropped, as Kafka's cleaner does (a compacted topic needs keys).
 4. Crash-safe swap: write `<base>.log.cleaned` (+ `.index.cleaned`, `.timeindex.cleaned`, and
    `.replaces.cleaned` listing the replaced base offsets), fsync; rename all to `.swap`, the `.log` last (the
    commit point); rename the old segments to `.deleted`; rename the `.swap` files into place; unlink. Recovery
    (`recover_interrupted_swaps`) discards `.cleaned` files and finishes any `.swap`.
I/O is throttled to `bytes_per_second` (reads plus writes). Safe to run in a worker thread: it reads on its
own descriptors and takes the log's lock only to snapshot and to swap, checking nothing moved meanwhile.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.errors import StorageError
from storage.fileutil import (
    fsync_dir,
    read_offset_checkpoint,
    write_all,
    write_offset_checkpoint,
)
from storage.index import SegmentIndex
from storage.record_batch import (
    ATTR_CONTROL,
    LOG_OVERHEAD,
    decode_records,
    delete_horizon_of,
    parse_header,
    rebuild_batch,
)
from storage.segment import (
    INDEX_SUFFIX,
    INT32_MAX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    BatchScanner,
    Segment,
    segment_prefix,
)

if TYPE_CHECKING:
    from storage.log import PartitionLog

log = logging.getLogger("tidelog.storage")

CLEANED = ".cleaned"
SWAP = ".swap"
REPLACES_SUFFIX = ".replaces"
DEFAULT_MAX_MAP_BYTES = 64 * 1024 * 1024
_MAP_ENTRY_OVERHEAD = 100  # rough bytes per dict entry beyond the key itself
_WRITE_BUFFER = 1024 * 1024
_SWAP_RE = re.compile(r"^(\d{20})\.log\.swap$")
NO_TOMBSTONES = 2**63 - 1


@dataclass(slots=True)
class CompactionStats:
    segments_cleaned: int = 0  # old segments replaced
    segments_written: int = 0  # cleaned segments written
    bytes_read: int = 0
    bytes_written: int = 0
    records_removed: int = 0
    tombstones_removed: int = 0
    batches_removed: int = 0
    cleaned_up_to: int = -1  # new cleaner checkpoint (first offset not yet cleaned)
    aborted: str | None = None  # why the pass stopped early (log changed under it, corrupt batch)


class _LogChanged(Exception):
    """A segment the pass reads was truncated or deleted meanwhile (its descriptor sees the same inode)."""


class _Throttle:
    __slots__ = ("bytes_per_second", "clock", "done", "sleep", "start")

    def __init__(self, bytes_per_second: int | None, sleep: Callable[[float], None],
                 clock: Callable[[], float]) -> None:
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self.bytes_per_second = bytes_per_second
        self.sleep = sleep
        self.clock = clock
        self.start = clock()
        self.done = 0

    def add(self, n: int) -> None:
        if self.bytes_per_second is None:
            return
        self.done += n
        ahead = self.done / self.bytes_per_second - (self.clock() - self.start)
        if ahead > 0:
            self.sleep(ahead)


@dataclass(slots=True)
class _Source:
    """A sealed segment as the pass saw it, read through the pass's own descriptor."""

    segment: Segment
    fd: int
    size: int
    base_offset: int
    next_offset: int


def compact_log(
    plog: PartitionLog,
    now_ms: int,
    *,
    bytes_per_second: int | None = None,
    upper_bound: int | None = None,
    max_map_bytes: int = DEFAULT_MAX_MAP_BYTES,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    swap_hook: Callable[[str], None] | None = None,
) -> CompactionStats:
    stats = CompactionStats()
    throttle = _Throttle(bytes_per_second, sleep, clock)
    config = plog.config
    if not config.compact:
        return stats
    # 1. Snapshot the cleanable range under the lock.
    with plog._lock:
        plog._check_writable()
        first_dirty = read_offset_checkpoint(plog.cleaner_checkpoint_path) or 0
        sources: list[_Source] = []
        lag_limit = now_ms - config.min_compaction_lag_ms
        for seg in plog._segments[:-1]:
            if upper_bound is not None and seg.next_offset > upper_bound:
                break
            if config.min_compaction_lag_ms > 0 and seg.max_timestamp > lag_limit:
                break
            sources.append(_Source(seg, os.open(seg.log_path, os.O_RDONLY), seg.size, seg.base_offset,
                                   seg.next_offset))
        horizon = plog.min_tombstone_horizon_ms
        truncations = plog._truncations
    try:
        return _run_pass(plog, sources, first_dirty, horizon, truncations, now_ms, max_map_bytes, stats,
                         throttle, swap_hook)
    except _LogChanged as exc:
        stats.aborted = f"the log changed during compaction ({exc}); nothing swapped in"
        log.info("partition log %s: %s", plog.directory, stats.aborted)
        return stats
    finally:
        for src in sources:
            os.close(src.fd)


def _run_pass(plog: PartitionLog, sources: list[_Source], first_dirty: int, horizon: int | None,
              truncations: int, now_ms: int, max_map_bytes: int, stats: CompactionStats, throttle: _Throttle,
              swap_hook: Callable[[str], None] | None) -> CompactionStats:
    dirty = [s for s in sources if s.next_offset > first_dirty]
    tombstones_due = horizon is None or horizon <= now_ms
    if not sources or (not dirty and not tombstones_due):
        return stats
    # 2. Key map over the dirty part.
    key_map: dict[bytes, int] = {}
    map_bytes = 0
    mapped_end = sources[-1].next_offset if not dirty else dirty[0].base_offset
    for src in dirty:
        map_bytes = _map_segment(src, key_map, map_bytes, stats, throttle)
        mapped_end = src.next_offset
        if map_bytes > max_map_bytes:
            break  # the rest of the dirty part waits for the next pass
    cleaning = [s for s in sources if s.next_offset <= mapped_end]
    # 3. Rewrite, group by group.
    min_horizon = NO_TOMBSTONES
    for group in _group(cleaning, plog.config.segment_bytes):
        result = _clean_group(plog, group, key_map, now_ms, stats, throttle, swap_hook)
        if result is None:
            return stats
        min_horizon = min(min_horizon, result)
    stats.cleaned_up_to = mapped_end
    with plog._lock:
        # A truncation meanwhile may have cut below mapped_end: what is there now is dirty again.
        if plog.closed or plog._truncations != truncations:
            return stats
        if mapped_end > first_dirty:
            write_offset_checkpoint(plog.cleaner_checkpoint_path, mapped_end)
        plog.min_tombstone_horizon_ms = min_horizon
    return stats


def _map_segment(src: _Source, key_map: dict[bytes, int], map_bytes: int, stats: CompactionStats,
                 throttle: _Throttle) -> int:
    scanner = BatchScanner(src.fd, 0, src.size, expected_offset=-1, segment_base=src.base_offset, check_crc=False)
    for pos, h in scanner:
        size = LOG_OVERHEAD + h[1]
        stats.bytes_read += size
        throttle.add(size)
        if h[5] & ATTR_CONTROL or h[12] == 0:
            continue
        data = _pread_batch(src, size, pos)
        for record in decode_records(data, parse_header(data)):
            key = record.key
            if key is None:
                continue
            if key not in key_map:
                map_bytes += len(key) + _MAP_ENTRY_OVERHEAD
            key_map[key] = record.offset
    if scanner.error is not None:
        _check_unchanged(src)
        raise StorageError(f"compaction: segment {src.segment.log_path} is corrupt at byte "
                           f"{scanner.valid_end}: {scanner.error}")
    return map_bytes


def _pread_batch(src: _Source, size: int, pos: int) -> bytes:
    data = os.pread(src.fd, size, pos)
    if len(data) != size:
        raise _LogChanged(f"segment {src.base_offset} shrank")
    return data


def _check_unchanged(src: _Source) -> None:
    if os.fstat(src.fd).st_size != src.size or src.segment.fd < 0:
        raise _LogChanged(f"segment {src.base_offset} was truncated or deleted")


def _group(sources: list[_Source], segment_bytes: int) -> list[list[_Source]]:
    """Neighbouring segments whose total size fits segment.bytes (and whose offsets fit int32) become one."""
    groups: list[list[_Source]] = []
    for src in sources:
        if groups:
            g = groups[-1]
            size = sum(s.size for s in g) + src.size
            if size <= segment_bytes and src.next_offset - 1 - g[0].base_offset <= INT32_MAX:
                g.append(src)
                continue
        groups.append([src])
    return groups


def _clean_group(plog: PartitionLog, group: list[_Source], key_map: dict[bytes, int], now_ms: int,
                 stats: CompactionStats, throttle: _Throttle,
                 hook: Callable[[str], None] | None) -> int | None:
    """Write one cleaned segment for `group` and swap it in. Returns the smallest delete horizon of the
    tombstones it kept (NO_TOMBSTONES if none), or None when the pass must stop (stats.aborted says why)."""
    config = plog.config
    directory = plog.directory
    base = group[0].base_offset
    prefix = segment_prefix(directory, base)
    out = Segment(base, prefix, -1, 0, group[-1].next_offset, index=SegmentIndex())
    interval = config.index_interval_bytes
    delete_retention = config.delete_retention_ms
    min_horizon = NO_TOMBSTONES
    cleaned_path = prefix + LOG_SUFFIX + CLEANED
    fd = os.open(cleaned_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    buffer = bytearray()
    changed = len(group) > 1  # merging segments is a change even when every batch stays
    try:
        for src in group:
            scanner = BatchScanner(src.fd, 0, src.size, expected_offset=-1, segment_base=src.base_offset,
                                   check_crc=True)
            for pos, h in scanner:
                size = LOG_OVERHEAD + h[1]
                stats.bytes_read += size
                throttle.add(size)
                data = _pread_batch(src, size, pos)
                if h[5] & ATTR_CONTROL:
                    kept_bytes: bytes | None = data  # control batches (Raft leader changes, markers) stay
                elif h[12] == 0:
                    kept_bytes = None
                else:
                    kept_bytes, horizon = _clean_batch(data, key_map, now_ms, delete_retention, stats)
                    if horizon is not None:
                        min_horizon = min(min_horizon, horizon)
                if kept_bytes is None:
                    stats.batches_removed += 1
                    changed = True
                    continue
                if kept_bytes is not data:
                    changed = True
                header = parse_header(kept_bytes)
                out.track_batch(header.base_offset, out.size, len(kept_bytes), header.max_timestamp, interval)
                out.size += len(kept_bytes)
                buffer += kept_bytes
                if len(buffer) >= _WRITE_BUFFER:
                    write_all(fd, buffer)
                    throttle.add(len(buffer))
                    stats.bytes_written += len(buffer)
                    buffer.clear()
            if scanner.error is not None:
                _check_unchanged(src)
                stats.aborted = (f"segment {src.segment.log_path} is corrupt at byte {scanner.valid_end}: "
                                 f"{scanner.error}")
                log.error("partition log %s: compaction stopped: %s", directory, stats.aborted)
                _discard(prefix)
                return None
        write_all(fd, buffer)
        throttle.add(len(buffer))
        stats.bytes_written += len(buffer)
        os.fdatasync(fd)
    except BaseException:
        os.close(fd)
        fd = -1
        _discard(prefix)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    if not changed:
        _discard(prefix)  # every batch stayed as it was: keep the old segment, skip the swap
        return min_horizon
    out.seal_time_index()
    index = out.index
    assert index is not None
    _write_durable(prefix + INDEX_SUFFIX + CLEANED, index.offset_index_bytes())
    _write_durable(prefix + TIME_INDEX_SUFFIX + CLEANED, index.time_index_bytes())
    _write_durable(prefix + REPLACES_SUFFIX + CLEANED,
                   "".join(f"{s.base_offset}\n" for s in group).encode("ascii"))
    if not _swap_in(plog, group, out, stats, hook):
        _discard(prefix)
        return None
    stats.segments_cleaned += len(group)
    stats.segments_written += 1
    return min_horizon


def _clean_batch(data: bytes, key_map: dict[bytes, int], now_ms: int, delete_retention_ms: int,
                 stats: CompactionStats) -> tuple[bytes | None, int | None]:
    """Decide one batch: (bytes to keep or None to drop, delete horizon of its kept tombstones or None)."""
    header = parse_header(data)
    horizon = delete_horizon_of(header)
    kept = []
    tombstone_kept = False
    removed = 0
    for record in decode_records(data, header):
        key = record.key
        if key is None:
            removed += 1
            continue
        latest = key_map.get(key)
        if latest is not None and record.offset < latest:
            removed += 1  # superseded by a later record with the same key
            continue
        if record.value is None:
            if horizon is not None and horizon <= now_ms:
                removed += 1
                stats.tombstones_removed += 1
                continue
            tombstone_kept = True
        kept.append(record)
    stats.records_removed += removed
    if not kept:
        return None, None
    new_horizon = (horizon if horizon is not None else now_ms + delete_retention_ms) if tombstone_kept else None
    if removed == 0 and new_horizon == horizon:
        return data, new_horizon  # nothing to change: copy the original bytes
    return rebuild_batch(header, kept, delete_horizon_ms=new_horizon), new_horizon


def _swap_in(plog: PartitionLog, group: list[_Source], out: Segment, stats: CompactionStats,
             hook: Callable[[str], None] | None) -> bool:
    """Commit the cleaned segment in place of `group`, under the log's lock; False if the log moved on.
    `hook(stage)` lets tests simulate a crash at "cleaned" (before the commit), "swap" and "deleted"."""
    directory = plog.directory
    prefix = out.prefix
    with plog._lock, plog._sync_lock:  # _sync_lock: old descriptors get closed (a flush may dup them)
        segs = plog._segments
        # Retention may have deleted segments at the head meanwhile: find the group's current position.
        offset_shift = next((k for k, s in enumerate(segs) if s is group[0].segment), -1)
        still_there = (
            not plog.closed
            and plog._failed is None
            and offset_shift >= 0
            and offset_shift + len(group) < len(segs)  # the last of them is still not the active segment
            and all(segs[offset_shift + k] is src.segment and src.segment.size == src.size and src.segment.sealed
                    for k, src in enumerate(group))
        )
        if not still_there:
            stats.aborted = "the log changed during compaction (truncation, retention or another pass)"
            log.info("partition log %s: %s; cleaned segment discarded", directory, stats.aborted)
            return False
        if hook is not None:
            hook("cleaned")
        for suffix in (REPLACES_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX):  # .log last: the commit
            os.replace(prefix + suffix + CLEANED, prefix + suffix + SWAP)
        fsync_dir(directory)
        if hook is not None:
            hook("swap")
        for src in group:
            old = src.segment
            old.close()
            for path in (old.log_path, old.index_path, old.time_index_path):
                try:
                    os.replace(path, path + ".deleted")
                except FileNotFoundError:
                    pass
        if hook is not None:
            hook("deleted")
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX):
            os.replace(prefix + suffix + SWAP, prefix + suffix)
        os.unlink(prefix + REPLACES_SUFFIX + SWAP)
        for src in group:
            old = src.segment
            for path in (old.log_path, old.index_path, old.time_index_path):
                try:
                    os.unlink(path + ".deleted")
                except FileNotFoundError:
                    pass
        fsync_dir(directory)
        # In memory: the new segment replaces the group.
        new = Segment.open_existing(directory, out.base_offset, writable=True)
        new.next_offset = out.next_offset
        new.max_timestamp, new.offset_of_max_timestamp = out.max_timestamp, out.offset_of_max_timestamp
        new.index = out.index
        new.sealed = True
        assert new.size == out.size
        k = offset_shift
        del segs[k : k + len(group)]
        del plog._bases[k : k + len(group)]
        segs.insert(k, new)
        plog._bases.insert(k, new.base_offset)
        for src in group:
            plog._size_bytes -= src.size
            plog._forget(src.segment)
        plog._size_bytes += new.size
        plog._loaded[new.base_offset] = new
        plog._evict_indexes()
        plog._check_invariants()
    return True


def _write_durable(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _discard(prefix: str) -> None:
    for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, REPLACES_SUFFIX):
        try:
            os.unlink(prefix + suffix + CLEANED)
        except FileNotFoundError:
            pass


def recover_interrupted_swaps(directory: str) -> None:
    """On open: discard uncommitted `.cleaned` files, finish committed `.swap`s, remove `.deleted` leftovers."""
    names = sorted(os.listdir(directory))
    actions: list[str] = []
    for name in names:
        if name.endswith(CLEANED):
            os.unlink(os.path.join(directory, name))
            actions.append(f"discarded {name}")
    for name in names:
        m = _SWAP_RE.match(name)
        if not m:
            continue
        base = int(m.group(1))
        prefix = segment_prefix(directory, base)
        replaced = _read_replaces(prefix + REPLACES_SUFFIX + SWAP)
        if replaced is None:
            log.warning("partition log %s: swap of segment %d lost its list of replaced segments; "
                        "replacing only segment %d", directory, base, base)
            replaced = [base]
        for old_base in replaced:
            old_prefix = segment_prefix(directory, old_base)
            for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                try:
                    os.unlink(old_prefix + suffix)
                except FileNotFoundError:
                    pass
        os.replace(prefix + LOG_SUFFIX + SWAP, prefix + LOG_SUFFIX)
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            # Present: the commit stopped before moving it; absent: open rebuilds the missing index.
            if os.path.exists(prefix + suffix + SWAP):
                os.replace(prefix + suffix + SWAP, prefix + suffix)
        actions.append(f"finished the swap of segment {base} (replacing {replaced})")
    for name in os.listdir(directory):
        if name.endswith((SWAP, ".deleted")):
            os.unlink(os.path.join(directory, name))
    if actions:
        fsync_dir(directory)
        log.info("partition log %s: interrupted compaction recovered: %s", directory, "; ".join(actions))


def _read_replaces(path: str) -> list[int] | None:
    try:
        with open(path, "rb") as f:
            text = f.read(1024 * 1024).decode("ascii")
        return [int(line) for line in text.split()]
    except (OSError, ValueError, UnicodeDecodeError):
        return None
