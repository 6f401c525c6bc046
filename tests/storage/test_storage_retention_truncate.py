"""Retention by time and size, DeleteRecords, and truncate_to (Raft's log truncation)."""

from __future__ import annotations

import os

import pytest
from storage_helpers import T0, batch_bounds, offsets, open_log, read_all, values_batch

from storage.config import LogConfig
from storage.errors import OffsetOutOfRangeError


def _segments_of(log, n_segments, per_segment_batches, epoch=0, ts_step=1000):
    """Append so that each segment holds exactly `per_segment_batches` batches of 2 records; batch i gets
    timestamp T0 + i*ts_step."""
    one = len(values_batch(0, 2))
    log.update_config(LogConfig(**{**_cfg(log), "segment_bytes": one * per_segment_batches}))
    for i in range(n_segments * per_segment_batches):
        log.append(values_batch(log.log_end_offset, 2, ts=T0 + i * ts_step), leader_epoch=epoch, now_ms=T0)
    return one


def _cfg(log):
    c = log.config
    return {f: getattr(c, f) for f in c.__slots__}


def test_retention_by_time_deletes_exactly_the_expired_segments(tmp_path):
    log = open_log(tmp_path, retention_ms=10_000)
    _segments_of(log, 5, 3)  # segment k holds batches 3k..3k+2, largest timestamp T0 + (3k+2)*1000
    assert log.segment_base_offsets == [0, 6, 12, 18, 24]
    # Segment 0's largest timestamp is T0+2000: expired when now - that > 10_000.
    assert log.apply_retention(T0 + 12_000) == 0
    assert log.apply_retention(T0 + 12_001) == 1
    assert log.segment_base_offsets == [6, 12, 18, 24] and log.log_start_offset == 6
    assert log.apply_retention(T0 + 18_001) == 2
    assert log.segment_base_offsets == [18, 24] and log.log_start_offset == 18
    # The active segment is never deleted even when everything expired.
    assert log.apply_retention(T0 + 10**9) == 1
    assert log.segment_base_offsets == [24] and log.log_start_offset == 24
    assert offsets(log.read(24, 1 << 20)) == list(range(24, 30))
    with pytest.raises(OffsetOutOfRangeError):
        log.read(23, 100)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("00000000000000000018")]


def test_retention_by_size(tmp_path):
    log = open_log(tmp_path)
    one = _segments_of(log, 6, 2)
    segment = 2 * one
    log.update_config(LogConfig(**{**_cfg(log), "retention_bytes": 3 * segment}))
    assert log.size_bytes == 6 * segment
    assert log.apply_retention(T0) == 3  # keep the newest segments totalling <= retention.bytes
    assert log.size_bytes == 3 * segment and log.segment_base_offsets == [12, 16, 20]
    assert log.log_start_offset == 12
    log.update_config(LogConfig(**{**_cfg(log), "retention_bytes": segment + 1}))
    assert log.apply_retention(T0) == 1  # 2 segments (2*segment) > segment+1: drop one; one more would not fit
    assert log.segment_base_offsets == [16, 20]


def test_compact_only_policy_keeps_old_segments(tmp_path):
    log = open_log(tmp_path, retention_ms=1, retention_bytes=1, cleanup_policy="compact")
    _segments_of(log, 3, 2)
    assert log.apply_retention(T0 + 10**9) == 0


def test_delete_records_before(tmp_path):
    log = open_log(tmp_path)
    _segments_of(log, 4, 2, epoch=3)  # segments at 0, 4, 8, 12
    assert log.delete_records_before(5) == 5
    assert log.segment_base_offsets == [4, 8, 12]  # segment 0 lies wholly below the new start
    assert log.log_start_offset == 5
    # Reads from the log start return the batch holding it.
    assert batch_bounds(log.read(5, 1 << 20))[0] == (4, 5)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(4, 100)
    assert log.delete_records_before(3) == 5  # never goes back
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(log.log_end_offset + 1)
    assert log.epoch_entries == [(3, 5)]
    log.close()
    log = open_log(tmp_path)
    assert log.log_start_offset == 5 and log.segment_base_offsets == [4, 8, 12]
    assert log.delete_records_before(log.log_end_offset) == 16
    assert log.read(16, 100) == b"" and log.segment_base_offsets == [12]


def test_truncate_to_in_the_middle_of_segments(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=50)
    one = len(values_batch(0, 2))
    log.update_config(LogConfig(**{**_cfg(log), "segment_bytes": 4 * one}))
    for epoch in (1, 2, 3):
        for _ in range(6):
            log.append(values_batch(log.log_end_offset, 2, ts=T0 + log.log_end_offset), leader_epoch=epoch,
                       now_ms=T0)
    assert log.epoch_entries == [(1, 0), (2, 12), (3, 24)]
    assert log.segment_base_offsets == [0, 8, 16, 24, 32]
    before = read_all(log)
    log.truncate_to(18)  # inside segment 16, epoch 2
    assert log.log_end_offset == 18 and log.segment_base_offsets == [0, 8, 16]
    assert log.epoch_entries == [(1, 0), (2, 12)]
    assert log.end_offset_for_epoch(2) == (2, 18) and log.end_offset_for_epoch(3) == (-1, -1)
    assert log.end_offset_for_epoch(1) == (1, 12)
    assert read_all(log) == before[: 9 * one]
    assert log.offset_for_timestamp(T0 + 17) is None  # timestamps of the cut batches are gone
    assert log.offset_for_timestamp(T0 + 16) == (16, T0 + 16)
    # Append continues with the right offsets and a new epoch.
    res = log.append(values_batch(18, 2), leader_epoch=5, now_ms=T0)
    assert (res.base_offset, res.last_offset) == (18, 19)
    assert log.epoch_entries == [(1, 0), (2, 12), (5, 18)]
    assert log.epoch_for_offset(17) == 2 and log.epoch_for_offset(18) == 5
    log.close()
    log = open_log(tmp_path, index_interval_bytes=50)
    assert log.epoch_entries == [(1, 0), (2, 12), (5, 18)]
    assert offsets(read_all(log)) == list(range(20))


def test_truncate_is_durable_without_close(tmp_path):
    log = open_log(tmp_path)
    for epoch in (1, 2):
        for _ in range(3):
            log.append(values_batch(log.log_end_offset, 2), leader_epoch=epoch, now_ms=T0)
    log.flush()
    log.truncate_to(6)
    # No close: the truncation and the epoch cache were made durable by truncate_to itself.
    log2 = open_log(tmp_path)
    assert log2.log_end_offset == 6 and log2.epoch_entries == [(1, 0)]


def test_truncate_rejects_offsets_inside_a_batch_and_below_the_start(tmp_path):
    log = open_log(tmp_path)
    for _ in range(4):
        log.append(values_batch(log.log_end_offset, 3), leader_epoch=0, now_ms=T0)
    with pytest.raises(ValueError):
        log.truncate_to(4)
    assert log.log_end_offset == 12
    log.truncate_to(100)  # beyond the end: nothing to do
    assert log.log_end_offset == 12
    log.delete_records_before(6)
    with pytest.raises(OffsetOutOfRangeError):
        log.truncate_to(3)
    log.truncate_to(6)
    assert log.log_end_offset == 6 and log.read(6, 100) == b""


def test_truncate_fully_and_start_at(tmp_path):
    log = open_log(tmp_path)
    log.append(values_batch(0, 3), leader_epoch=1, now_ms=T0)
    log.truncate_fully_and_start_at(1000)
    assert (log.log_start_offset, log.log_end_offset, log.epoch_entries) == (1000, 1000, [])
    assert log.append(values_batch(0, 1), leader_epoch=2, now_ms=T0).base_offset == 1000
    log.close()
    log = open_log(tmp_path)
    assert (log.log_start_offset, log.log_end_offset, log.epoch_entries) == (1000, 1001, [(2, 1000)])
