"""Append and read: offsets, epochs, whole-batch reads, max_bytes and upper_bound, segment boundaries."""

from __future__ import annotations

import pytest
from storage_helpers import (
    T0,
    batch,
    batch_bounds,
    kafka_python_records,
    offsets,
    open_log,
    read_all,
    records,
    values_batch,
)

from storage.compression import Compression
from storage.errors import OffsetOutOfRangeError
from storage.record_batch import decode_records, iter_headers, parse_header


@pytest.mark.parametrize("codec", list(Compression))
def test_round_trip_through_kafka_python_and_our_decoder(tmp_path, codec):
    log = open_log(tmp_path, index_interval_bytes=64)
    sent = []
    for i in range(20):
        values = [b"value-%d-%d" % (i, j) for j in range(i % 4 + 1)]
        keys = [b"key-%d" % j for j in range(len(values))]
        b = batch(values, keys=keys, ts=T0 + i, compression=codec)
        res = log.append(b, leader_epoch=3, now_ms=T0)
        assert res.batch_count == 1 and res.last_offset - res.base_offset == len(values) - 1
        assert res.size_bytes == len(b) and res.max_timestamp == T0 + i and res.log_append_time == -1
        sent += [(k, v, T0 + i) for k, v in zip(keys, values)]
    data = log.read(0, 10 << 20)
    parsed = kafka_python_records(data)
    assert [(k, v, ts) for _o, ts, k, v, _e in parsed] == sent
    assert [o for o, *_ in parsed] == list(range(len(sent)))
    assert {e for *_x, e in parsed} == {3}
    ours = records(data)
    assert [(r.key, r.value, r.timestamp) for r in ours] == sent
    assert [r.offset for r in ours] == list(range(len(sent)))
    # Stored bytes are the produced bytes except baseOffset and the epoch (both outside the CRC).
    for pos, h in iter_headers(data):
        assert h.partition_leader_epoch == 3


def test_offsets_are_contiguous_across_appends_and_runs(tmp_path):
    log = open_log(tmp_path)
    run = values_batch(0, 3) + values_batch(3, 2) + values_batch(5, 4)
    res = log.append(run, leader_epoch=0, now_ms=T0)
    assert (res.base_offset, res.last_offset, res.batch_count) == (0, 8, 3)
    res = log.append(values_batch(9, 1), leader_epoch=0, now_ms=T0)
    assert (res.base_offset, res.last_offset) == (9, 9)
    assert log.log_end_offset == 10
    assert [r.value.rstrip(b".") for r in records(log.read(0, 1 << 20))] == [str(i).encode() for i in range(10)]


def test_bytearray_is_stamped_in_place_bytes_are_not(tmp_path):
    log = open_log(tmp_path)
    log.append(values_batch(0, 2), leader_epoch=1, now_ms=T0)
    raw = bytearray(values_batch(2, 2))
    log.append(raw, leader_epoch=4, now_ms=T0)
    h = parse_header(raw)
    assert (h.base_offset, h.partition_leader_epoch) == (2, 4)
    frozen = values_batch(4, 1)
    log.append(frozen, leader_epoch=4, now_ms=T0)
    assert parse_header(frozen).base_offset == 0


def test_read_in_the_middle_of_a_batch_returns_that_batch(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=0)  # an index entry per batch: the lookup lands past offset
    for i in range(10):
        log.append(values_batch(i * 5, 5), leader_epoch=0, now_ms=T0)
    for offset in range(50):
        data = log.read(offset, 1)
        (bounds,) = batch_bounds(data)
        assert bounds[0] <= offset <= bounds[1]
        assert bounds[0] == offset - offset % 5


def test_max_bytes_whole_batches_and_first_batch_always(tmp_path):
    log = open_log(tmp_path)
    sizes = []
    for i in range(10):
        b = values_batch(i * 3, 3, size=100)
        sizes.append(len(b))
        log.append(b, leader_epoch=0, now_ms=T0)
    size = sizes[0]
    assert all(s == size for s in sizes)
    assert len(log.read(0, size * 3)) == size * 3
    assert len(log.read(0, size * 3 + size - 1)) == size * 3  # never a partial batch
    assert len(log.read(0, size - 1)) == size  # the first batch even when larger than max_bytes
    assert len(log.read(0, 0)) == size
    assert len(log.read(4, size * 2)) == size * 2 and batch_bounds(log.read(4, size * 2))[0] == (3, 5)
    assert len(log.read(0, 1 << 20)) == size * 10


def test_upper_bound_excludes_batches_reaching_it(tmp_path):
    log = open_log(tmp_path)
    for i in range(5):
        log.append(values_batch(i * 4, 4), leader_epoch=0, now_ms=T0)
    assert batch_bounds(log.read(0, 1 << 20, upper_bound=8)) == [(0, 3), (4, 7)]
    assert batch_bounds(log.read(0, 1 << 20, upper_bound=11)) == [(0, 3), (4, 7)]  # 8..11 reaches 11
    assert batch_bounds(log.read(0, 1 << 20, upper_bound=12)) == [(0, 3), (4, 7), (8, 11)]
    assert log.read(8, 1 << 20, upper_bound=8) == b""
    assert log.read(9, 1 << 20, upper_bound=11) == b""  # the batch holding 9 reaches past the bound
    assert log.read(0, 1 << 20, upper_bound=1000) == log.read(0, 1 << 20)


def test_offset_range_errors(tmp_path):
    log = open_log(tmp_path)
    assert log.read(0, 100) == b""
    log.append(values_batch(0, 3), leader_epoch=0, now_ms=T0)
    assert log.read(3, 100) == b""
    with pytest.raises(OffsetOutOfRangeError) as err:
        log.read(4, 100)
    assert err.value.error_name == "OFFSET_OUT_OF_RANGE" and err.value.log_end_offset == 3
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)


def test_reads_across_segment_boundaries(tmp_path):
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100)
    for i in range(40):
        log.append(values_batch(i * 2, 2, size=40), leader_epoch=0, now_ms=T0)
    assert len(log.segment_base_offsets) > 5
    data = log.read(0, 1 << 20)
    assert offsets(data) == list(range(80))  # one read walks every segment
    for base in log.segment_base_offsets[1:]:
        # From just before a boundary: the batch before it, then into the next segment.
        data = log.read(base - 1, 1 << 20)
        assert offsets(data)[0] == base - 2 and offsets(data)[-1] == 79
        # A small budget stops at whole batches even across the boundary.
        small = log.read(base - 1, 200)
        assert 0 < len(small) <= 200
    assert read_all(log) == log.read(0, 1 << 20)
    assert kafka_python_records(data)


def test_log_append_time(tmp_path):
    log = open_log(tmp_path, message_timestamp_type="LogAppendTime")
    res = log.append(batch([b"a", b"b"], ts=[5, 7]), leader_epoch=0, now_ms=T0 + 42)
    assert res.log_append_time == T0 + 42 and res.max_timestamp == T0 + 42
    data = log.read(0, 1 << 20)
    assert [(o, ts) for o, ts, *_ in kafka_python_records(data)] == [(0, T0 + 42), (1, T0 + 42)]
    h = parse_header(data)
    assert h.timestamp_type == 1
    assert [r.timestamp for r in decode_records(data, h)] == [T0 + 42, T0 + 42]
