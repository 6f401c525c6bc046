"""Offset for a timestamp (ListOffsets): first record with timestamp >= T, via the time index."""

from __future__ import annotations

import pytest
from storage_helpers import T0, batch, open_log

import storage.log as storage_log
from storage.record_batch import decode_records, parse_header


@pytest.fixture
def timed_log(tmp_path):
    # 30 batches of 4 records; record j of batch i has timestamp T0 + 100*i + 10*j; tiny segments and a dense
    # time index so lookups cross segments and index entries.
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=150)
    for i in range(30):
        log.append(batch([b"v%d" % j for j in range(4)], ts=[T0 + 100 * i + 10 * j for j in range(4)]),
                   leader_epoch=0, now_ms=T0)
    assert len(log.segment_base_offsets) > 3
    return log


def test_exact_first_record_at_or_after(timed_log):
    for i in range(30):
        for j in range(4):
            ts = T0 + 100 * i + 10 * j
            assert timed_log.offset_for_timestamp(ts) == (4 * i + j, ts)
            # T between two records, inside a batch: the next record of that batch.
            if j < 3:
                assert timed_log.offset_for_timestamp(ts + 1) == (4 * i + j + 1, ts + 10)
        # T after a batch's last record and before the next batch: the next batch's first record.
        if i < 29:
            assert timed_log.offset_for_timestamp(T0 + 100 * i + 35) == (4 * (i + 1), T0 + 100 * (i + 1))


def test_before_all_and_after_all(timed_log):
    assert timed_log.offset_for_timestamp(0) == (0, T0)
    assert timed_log.offset_for_timestamp(T0) == (0, T0)
    assert timed_log.offset_for_timestamp(T0 + 100 * 29 + 30) == (119, T0 + 100 * 29 + 30)
    assert timed_log.offset_for_timestamp(T0 + 100 * 29 + 31) is None


def test_decodes_only_the_candidate_batch(timed_log, monkeypatch):
    decoded = []

    def counting(buf, header, pos=0):
        decoded.append(header.base_offset)
        return decode_records(buf, header, pos)

    monkeypatch.setattr(storage_log, "decode_records", counting)
    assert timed_log.offset_for_timestamp(T0 + 100 * 17 + 15) == (17 * 4 + 2, T0 + 100 * 17 + 20)
    assert decoded == [68]


def test_respects_log_start(timed_log):
    timed_log.delete_records_before(10)  # inside batch 2 (offsets 8..11)
    assert timed_log.offset_for_timestamp(0) == (10, T0 + 220)
    assert timed_log.offset_for_timestamp(T0 + 205) == (10, T0 + 220)


def test_survives_reopen_with_index_from_disk(timed_log, tmp_path):
    timed_log.close()
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=150)
    assert log.offset_for_timestamp(T0 + 1234) == (4 * 12 + 4, T0 + 1300)


def test_non_monotonic_timestamps(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=0)
    log.append(batch([b"a", b"b"], ts=[T0 + 50, T0 + 10]), leader_epoch=0, now_ms=T0)  # max 50
    log.append(batch([b"c"], ts=[T0 + 20]), leader_epoch=0, now_ms=T0)
    log.append(batch([b"d"], ts=[T0 + 60]), leader_epoch=0, now_ms=T0)
    assert log.offset_for_timestamp(T0 + 15) == (0, T0 + 50)  # Kafka: first batch whose max >= T
    assert log.offset_for_timestamp(T0 + 55) == (3, T0 + 60)


def test_log_append_time(tmp_path):
    log = open_log(tmp_path, message_timestamp_type="LogAppendTime")
    for i in range(5):
        log.append(batch([b"x", b"y"], ts=1), leader_epoch=0, now_ms=T0 + 1000 * i)
    assert log.offset_for_timestamp(T0 + 1500) == (4, T0 + 2000)
    assert log.offset_for_timestamp(T0 + 2000) == (4, T0 + 2000)
    assert log.offset_for_timestamp(0) == (0, T0)
    assert log.offset_for_timestamp(T0 + 4001) is None
    data = log.read(4, 100)
    assert [r.timestamp for r in decode_records(data, parse_header(data))] == [T0 + 2000] * 2
