"""Compaction: latest per key, tombstones after delete.retention.ms, offsets kept, crash-safe swap."""

from __future__ import annotations

import os

import pytest
from storage_helpers import (
    T0,
    batch,
    batch_bounds,
    kafka_python_records,
    open_log,
    read_all,
    records,
)

from storage import cleaner
from storage.compression import Compression
from storage.record_batch import (
    CONTROL_LEADER_CHANGE,
    build_control_batch,
    iter_headers,
)

DAY = 86_400_000


def _compacted(path, **kw):
    cfg = {"cleanup_policy": "compact", "segment_bytes": 700, "index_interval_bytes": 100, "delete_retention_ms": DAY}
    cfg.update(kw)
    return open_log(path, **cfg)


def _write_updates(log, rounds, keys=5, compression=Compression.NONE, epoch=0):
    """`rounds` batches, each updating every key: value = b"<key>@<round>"."""
    for r in range(rounds):
        log.append(batch([b"k%d@%d" % (k, r) for k in range(keys)], keys=[b"k%d" % k for k in range(keys)],
                         ts=T0 + r, compression=compression), leader_epoch=epoch, now_ms=T0)


def _by_offset(data):
    return {r.offset: (r.key, r.value) for r in records(data)}


@pytest.mark.parametrize("codec", [Compression.NONE, Compression.LZ4, Compression.ZSTD])
def test_keeps_latest_per_key_preserves_offsets_and_the_active_segment(tmp_path, codec):
    log = _compacted(tmp_path)
    _write_updates(log, 30, compression=codec)
    bases = log.segment_base_offsets
    assert len(bases) > 4
    original = _by_offset(read_all(log))
    active_base = bases[-1]
    active_before = bytes(log.read(active_base, 1 << 20))
    stats = log.compact(T0 + 10)
    assert stats.aborted is None and stats.segments_cleaned == len(bases) - 1
    after = read_all(log)
    kept = _by_offset(after)
    # Every surviving record is the original record at its original offset.
    assert all(original[o] == kv for o, kv in kept.items())
    # Below the active segment each key appears once, with its latest offset there.
    cleaned = {o: kv for o, kv in kept.items() if o < active_base}
    latest = {}
    for o, (k, _v) in sorted(original.items()):
        if o < active_base:
            latest[k] = o
    assert sorted(cleaned) == sorted(latest.values())
    # The active segment is byte-for-byte untouched.
    assert bytes(log.read(active_base, 1 << 20)) == active_before
    assert log.segment_base_offsets[-1] == active_base
    # Batches keep base offset and lastOffsetDelta (all 5-record batches span 5 offsets).
    assert all(last - base == 4 for base, last in batch_bounds(after))
    # kafka-python parses the rewritten batches (CRCs valid, timestamps right).
    parsed = kafka_python_records(after)
    assert [(o, k, v) for o, _ts, k, v, _e in parsed] == [(o, *kept[o]) for o in sorted(kept)]
    assert all(ts == T0 + int(v.split(b"@")[1]) for _o, ts, _k, v, _e in parsed)
    # Reads across the gaps: any offset returns the first batch at or after it.
    for offset in range(log.log_start_offset, log.log_end_offset):
        first = batch_bounds(log.read(offset, 1))[0]
        assert first[1] >= offset and not any(first[0] > o >= offset for o in kept)
    # The result survives a reopen.
    log.close()
    log = _compacted(tmp_path)
    assert read_all(log) == after


def test_small_cleaned_segments_are_merged(tmp_path):
    log = _compacted(tmp_path)
    _write_updates(log, 30)
    n = len(log.segment_base_offsets)
    log.compact(T0)  # groups by the sizes before cleaning: nothing merges yet
    assert len(log.segment_base_offsets) == n
    _write_updates(log, 5)
    log.roll()
    log.compact(T0)  # the cleaned segments are small now: neighbours merge into one
    assert len(log.segment_base_offsets) < n - 1 and log.segment_base_offsets[0] == 0
    assert {r.key for r in records(read_all(log))} == {b"k%d" % k for k in range(5)}


def test_tombstones_are_kept_until_delete_retention_ms_after_the_first_clean(tmp_path):
    log = _compacted(tmp_path, delete_retention_ms=1000)
    _write_updates(log, 8, keys=3)
    log.append(batch([None], keys=[b"k1"], ts=T0 + 100), leader_epoch=0, now_ms=T0)  # delete k1
    log.roll()
    _write_updates(log, 1, keys=1)  # something in the active segment
    log.compact(T0 + 5000)  # first clean: the tombstone stays, with a horizon of now + 1000
    keys = {r.key: r.value for r in records(read_all(log))}
    assert keys[b"k1"] is None
    assert log.compact(T0 + 5999).tombstones_removed == 0
    assert {r.key: r.value for r in records(read_all(log))}[b"k1"] is None
    stats = log.compact(T0 + 6001)
    assert stats.tombstones_removed == 1
    remaining = records(read_all(log))
    assert b"k1" not in {r.key for r in remaining}
    assert {r.key for r in remaining} == {b"k0", b"k2"}


def test_a_superseded_tombstone_goes_at_once(tmp_path):
    log = _compacted(tmp_path)
    log.append(batch([b"a"], keys=[b"k"]), leader_epoch=0, now_ms=T0)
    log.append(batch([None], keys=[b"k"]), leader_epoch=0, now_ms=T0)
    log.append(batch([b"b"], keys=[b"k"]), leader_epoch=0, now_ms=T0)
    log.roll()
    log.compact(T0)
    assert [(r.offset, r.value) for r in records(read_all(log))] == [(2, b"b")]


def test_min_compaction_lag_and_upper_bound_leave_recent_segments_alone(tmp_path):
    log = _compacted(tmp_path, min_compaction_lag_ms=50)
    _write_updates(log, 30)  # batch r has timestamp T0 + r
    before = _by_offset(read_all(log))
    log.compact(T0 + 40)  # only segments whose newest record is older than T0 - 10 + ... : none (T0+40-50 < T0)
    assert _by_offset(read_all(log)) == before
    bases = log.segment_base_offsets
    stats = log.compact(T0 + 10**6, upper_bound=bases[2])  # the high watermark: only segments wholly below
    assert stats.segments_cleaned == 2
    assert {o: kv for o, kv in _by_offset(read_all(log)).items() if o >= bases[2]} == {
        o: kv for o, kv in before.items() if o >= bases[2]}


def test_control_batches_kept_null_keys_dropped_records_keep_offsets(tmp_path):
    log = _compacted(tmp_path)
    log.append_replicated(build_control_batch(CONTROL_LEADER_CHANGE, b"x", timestamp=T0, partition_leader_epoch=1),
                          now_ms=T0)
    log.append(batch([b"v1", b"nokey", b"v2"], keys=[b"a", None, b"b"]), leader_epoch=1, now_ms=T0)
    log.append(batch([b"v3"], keys=[b"a"]), leader_epoch=1, now_ms=T0)
    log.roll()
    log.compact(T0)
    data = read_all(log)
    heads = [h for _p, h in iter_headers(data)]
    assert heads[0].is_control and heads[0].base_offset == 0
    assert [(r.offset, r.key) for r in records(data)] == [(3, b"b"), (4, b"a")]
    assert [(h.base_offset, h.last_offset, h.records_count) for h in heads[1:]] == [(1, 3, 1), (4, 4, 1)]


def test_throttle_paces_io(tmp_path):
    log = _compacted(tmp_path)
    _write_updates(log, 30)
    slept = []
    clock = [0.0]

    def sleep(s):
        slept.append(s)
        clock[0] += s

    stats = log.compact(T0, bytes_per_second=10_000, sleep=sleep, clock=lambda: clock[0])
    total = stats.bytes_read + stats.bytes_written
    assert total > 0 and sum(slept) == pytest.approx(total / 10_000, rel=0.01)


def test_log_changes_during_compaction_abort_the_swap(tmp_path, monkeypatch):
    log = _compacted(tmp_path)
    _write_updates(log, 30)
    original = read_all(log)
    real = cleaner._clean_batch
    calls = []

    def truncating(*args, **kwargs):
        if not calls:
            log.truncate_to(5)  # the log moves under the pass (reentrant lock: same thread here)
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cleaner, "_clean_batch", truncating)
    stats = log.compact(T0)
    assert stats.aborted is not None and stats.segments_cleaned == 0
    assert read_all(log) == original[: len(read_all(log))] and log.log_end_offset == 5
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".cleaned", ".swap"))]


@pytest.mark.parametrize("stage, committed", [("cleaned", False), ("swap", True), ("deleted", True)])
def test_interrupted_swap_is_finished_or_discarded_on_open(tmp_path, stage, committed):
    log = _compacted(tmp_path)
    _write_updates(log, 30)
    log.flush()
    original = read_all(log)

    def crash(at):
        if at == stage:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        log.compact(T0, swap_hook=crash)
    left = os.listdir(tmp_path)
    assert any(n.endswith(".cleaned" if not committed else ".swap") for n in left)
    # The process "dies" here: reopen from disk.
    for seg in log._segments:
        seg.close()
    reopened = _compacted(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".cleaned", ".swap", ".deleted"))]
    data = read_all(reopened)
    if committed:
        # The first group was swapped in: its keys are deduplicated; the rest is untouched.
        assert len(data) < len(original)
        kept = _by_offset(data)
        assert all(_by_offset(original)[o] == kv for o, kv in kept.items())
        assert max(kept) == max(_by_offset(original))
    else:
        assert data == original
    # And a full pass still works afterwards.
    reopened.compact(T0)
    final = _by_offset(read_all(reopened))
    expected = _by_offset(original)
    active_base = reopened.segment_base_offsets[-1]
    assert {kv[0] for o, kv in final.items() if o < active_base} == {b"k%d" % k for k in range(5)}
    assert all(expected[o] == kv for o, kv in final.items())


def test_a_follower_replicates_a_compacted_log_with_gaps(tmp_path):
    leader = _compacted(tmp_path / "leader")
    for epoch in (1, 2):
        _write_updates(leader, 10, epoch=epoch)
        leader.append(batch([b"e%d" % epoch], keys=[b"other"]), leader_epoch=epoch, now_ms=T0)
    leader.roll()
    leader.compact(T0)
    follower = _compacted(tmp_path / "follower")
    offset = 0
    for _ in range(1000):
        if offset >= leader.log_end_offset:
            break
        data = bytes(leader.read(offset, 500))
        # A strict follower refuses a run that starts past its end; with allow_gaps it takes it as Kafka does.
        if batch_bounds(data)[0][0] != follower.log_end_offset:
            with pytest.raises(ValueError):
                follower.append_replicated(data, now_ms=T0)
        follower.append_replicated(data, now_ms=T0, allow_gaps=True)
        offset = follower.log_end_offset
    assert read_all(follower) == read_all(leader)
    assert follower.log_end_offset == leader.log_end_offset
    # Epochs whose every batch was compacted away cannot reach the follower; for the data it holds, the
    # epochs (Raft terms) agree with the leader's.
    assert follower.latest_epoch == leader.latest_epoch == 2
    for base, last in batch_bounds(read_all(follower)):
        assert follower.epoch_for_offset(last) == leader.epoch_for_offset(last)
