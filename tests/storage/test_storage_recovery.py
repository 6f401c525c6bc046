"""Rolling, indexes, reopen, and crash recovery of torn or corrupt tails."""

from __future__ import annotations

import logging
import os

from storage_helpers import (
    T0,
    batch_bounds,
    kafka_python_records,
    offsets,
    open_log,
    read_all,
    values_batch,
)

from storage.log import CLEAN_SHUTDOWN_FILE


def _fill(log, n_batches, per_batch=3, size=40, epoch=0, ts=T0):
    for i in range(n_batches):
        log.append(values_batch(log.log_end_offset, per_batch, size=size, ts=ts + i), leader_epoch=epoch,
                   now_ms=ts)


def _seg_files(path, suffix=".log"):
    return sorted(n for n in os.listdir(path) if n.endswith(suffix) and n[:20].isdigit())


def test_roll_by_size(tmp_path):
    log = open_log(tmp_path, segment_bytes=1000)
    one = len(values_batch(0, 3, size=40))
    _fill(log, 30)
    per_segment = 1000 // one
    assert len(log.segment_base_offsets) == -(-30 // per_segment)
    for name in _seg_files(tmp_path):
        assert os.path.getsize(tmp_path / name) <= 1000
    assert log.segment_base_offsets == [i * per_segment * 3 for i in range(len(log.segment_base_offsets))]
    assert offsets(log.read(0, 1 << 20)) == list(range(90))


def test_roll_by_age(tmp_path):
    log = open_log(tmp_path, segment_ms=1000)
    log.append(values_batch(0, 1, ts=T0), leader_epoch=0, now_ms=T0)
    log.append(values_batch(1, 1, ts=T0), leader_epoch=0, now_ms=T0 + 1000)  # not older than segment.ms yet
    assert log.segment_base_offsets == [0]
    log.append(values_batch(2, 1, ts=T0), leader_epoch=0, now_ms=T0 + 1001)
    assert log.segment_base_offsets == [0, 2]
    # Broker time, not record time: old record timestamps do not make the new segment due.
    assert not log.roll_if_due(T0 + 2001)
    assert log.roll_if_due(T0 + 2002)  # a quiet partition rolls on the timer
    assert log.segment_base_offsets == [0, 2, 3]
    assert not log.roll_if_due(T0 + 9000)  # the new active segment is empty: nothing to roll
    log.close()
    # After a restart the first batch's timestamp stands in for the first append time.
    log = open_log(tmp_path, now_ms=T0 + 50_000, segment_ms=1000)
    log.append(values_batch(3, 1, ts=T0 + 50_000), leader_epoch=0, now_ms=T0 + 50_000)
    log.close()
    log = open_log(tmp_path, now_ms=T0 + 60_000, segment_ms=1000)
    assert log.roll_if_due(T0 + 60_000)


def test_index_is_sparse_and_used(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=500, segment_bytes=100_000)
    _fill(log, 100)
    log.close()
    index_size = os.path.getsize(tmp_path / "00000000000000000000.index")
    total = os.path.getsize(tmp_path / "00000000000000000000.log")
    one = len(values_batch(0, 3, size=40))
    every = 500 // one + 1  # an entry once more than index.interval.bytes were written since the last
    assert total == 100 * one and index_size // 8 == (100 - 1) // every
    assert os.path.getsize(tmp_path / "00000000000000000000.timeindex") > 0


def test_reopen_keeps_everything(tmp_path):
    log = open_log(tmp_path, segment_bytes=700, index_interval_bytes=100)
    _fill(log, 10, epoch=1)
    _fill(log, 10, epoch=3)
    log.delete_records_before(4)
    before = (read_all(log), log.log_start_offset, log.log_end_offset, log.epoch_entries,
              log.segment_base_offsets, log.offset_for_timestamp(T0 + 5), log.size_bytes)
    log.close()
    assert os.path.exists(tmp_path / CLEAN_SHUTDOWN_FILE)
    log = open_log(tmp_path, segment_bytes=700, index_interval_bytes=100)
    assert not os.path.exists(tmp_path / CLEAN_SHUTDOWN_FILE)
    after = (read_all(log), log.log_start_offset, log.log_end_offset, log.epoch_entries,
             log.segment_base_offsets, log.offset_for_timestamp(T0 + 5), log.size_bytes)
    assert after == before
    assert log.durable_end_offset == log.log_end_offset
    assert log.append(values_batch(60, 1), leader_epoch=3, now_ms=T0).base_offset == 60


def test_index_rebuilt_after_index_files_are_deleted(tmp_path, caplog):
    log = open_log(tmp_path, segment_bytes=1000, index_interval_bytes=50)
    _fill(log, 30)
    expected = read_all(log)
    mid_reads = {o: bytes(log.read(o, 300)) for o in range(0, 90, 7)}
    log.close()
    for name in os.listdir(tmp_path):
        if name.endswith((".index", ".timeindex")):
            os.unlink(tmp_path / name)
    with caplog.at_level(logging.INFO, logger="tidelog.storage"):
        log = open_log(tmp_path, segment_bytes=1000, index_interval_bytes=50)
    assert "rebuilding" in caplog.text
    assert read_all(log) == expected
    assert {o: bytes(log.read(o, 300)) for o in mid_reads} == mid_reads
    assert log.offset_for_timestamp(T0 + 12) == (36, T0 + 12)
    assert _seg_files(tmp_path, ".index") and len(_seg_files(tmp_path, ".index")) == len(_seg_files(tmp_path))


def test_damaged_index_is_rebuilt_when_first_used(tmp_path):
    log = open_log(tmp_path, segment_bytes=1000, index_interval_bytes=50)
    _fill(log, 30)
    expected = {o: bytes(log.read(o, 300)) for o in range(90)}
    log.close()
    # Plausible size, garbage content: positions beyond the file, offsets going backwards.
    with open(tmp_path / "00000000000000000000.index", "r+b") as f:
        f.write(b"\x7f" * 16 + b"\x00" * 8)
    log = open_log(tmp_path, segment_bytes=1000, index_interval_bytes=50)
    assert {o: bytes(log.read(o, 300)) for o in range(90)} == expected


def _warnings(caplog):
    return [r for r in caplog.records if r.name == "tidelog.storage" and r.levelno >= logging.WARNING]


def _reopen_expecting_one_cut(tmp_path, caplog, good_end, expected) -> str:
    """Reopen after damage: the log ends at `good_end` with `expected` bytes; returns the one warning line."""
    with caplog.at_level(logging.INFO, logger="tidelog.storage"):
        log2 = open_log(tmp_path, segment_bytes=10_000, index_interval_bytes=100)
    assert log2.log_end_offset == good_end
    assert read_all(log2) == expected
    (line,) = _warnings(caplog)
    # Appends continue at the cut.
    assert log2.append(values_batch(good_end, 1), leader_epoch=0, now_ms=T0).base_offset == good_end
    assert os.path.getsize(tmp_path / "00000000000000000000.log") == log2.size_bytes
    return line.getMessage()


def test_recovery_cuts_a_torn_batch(tmp_path, caplog):
    log = open_log(tmp_path, segment_bytes=10_000, index_interval_bytes=100)
    _fill(log, 20)
    log.flush()
    good_end = log.log_end_offset
    good_size = log.size_bytes
    expected = read_all(log)
    log.append(values_batch(good_end, 5, size=40), leader_epoch=0, now_ms=T0)
    torn_size = log.size_bytes
    # Simulate a crash mid-write: no close (no clean-shutdown marker), the file ends inside the last batch.
    os.truncate(tmp_path / "00000000000000000000.log", good_size + 30)
    msg = _reopen_expecting_one_cut(tmp_path, caplog, good_end, expected)
    assert str(tmp_path) in msg and f"offset {good_end}" in msg and f"byte position {good_size}" in msg
    assert "removed 30 bytes" in msg
    assert torn_size > good_size + 30


def test_recovery_cuts_a_corrupt_last_batch_even_after_a_clean_shutdown(tmp_path, caplog):
    log = open_log(tmp_path, segment_bytes=10_000, index_interval_bytes=100)
    _fill(log, 20)
    good_end, good_size = log.log_end_offset, log.size_bytes
    expected = read_all(log)
    log.append(values_batch(good_end, 4, size=40), leader_epoch=0, now_ms=T0)
    last_size = log.size_bytes - good_size
    log.close()
    with open(tmp_path / "00000000000000000000.log", "r+b") as f:
        f.seek(good_size + 70)  # a byte inside the records of the last batch
        byte = f.read(1)
        f.seek(good_size + 70)
        f.write(bytes([byte[0] ^ 0xFF]))
    msg = _reopen_expecting_one_cut(tmp_path, caplog, good_end, expected)
    assert "CRC" in msg and f"removed {last_size} bytes" in msg and f"offset {good_end}" in msg


def test_unclean_reopen_without_damage_keeps_everything_and_logs_nothing(tmp_path, caplog):
    log = open_log(tmp_path, segment_bytes=800, index_interval_bytes=100)
    _fill(log, 25, epoch=2)
    log.flush()
    expected = read_all(log)
    # No close(): the process "died". Everything written is in the page cache, so nothing is lost.
    with caplog.at_level(logging.INFO, logger="tidelog.storage"):
        log2 = open_log(tmp_path, segment_bytes=800, index_interval_bytes=100)
    assert read_all(log2) == expected
    assert not _warnings(caplog)
    assert log2.epoch_entries == [(2, 0)]
    assert kafka_python_records(expected)


def test_torn_tail_in_a_sealed_segment_above_the_recovery_point_drops_later_segments(tmp_path, caplog):
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100, flush_messages=1000)
    _fill(log, 3)
    log.flush()  # recovery point: the active segment's base
    _fill(log, 20)  # rolls several segments that are never fsynced
    bases = log.segment_base_offsets
    assert len(bases) >= 3
    # Tear the second segment written after the flush.
    victim = bases[-2]
    path = tmp_path / f"{victim:020d}.log"
    os.truncate(path, os.path.getsize(path) - 7)
    with caplog.at_level(logging.INFO, logger="tidelog.storage"):
        log2 = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100)
    assert log2.segment_base_offsets == bases[:-1]
    assert log2.log_end_offset < bases[-1]
    assert offsets(log2.read(0, 1 << 20)) == list(range(log2.log_end_offset))
    assert len(_warnings(caplog)) == 1
    assert f"{bases[-1]:020d}" not in "".join(os.listdir(tmp_path))


def test_leftover_deleted_and_tmp_files_are_removed(tmp_path):
    log = open_log(tmp_path)
    _fill(log, 2)
    log.close()
    for name in ["00000000000000000099.log.deleted", "leader-epoch-checkpoint.tmp", "00000000000000000077.index"]:
        (tmp_path / name).write_bytes(b"junk")
    log = open_log(tmp_path)
    names = os.listdir(tmp_path)
    assert not any(n.endswith((".deleted", ".tmp")) or n.startswith("00000000000000000077")
                   for n in names)
    assert offsets(log.read(0, 1 << 20)) == list(range(6))


def test_lost_epoch_checkpoint_is_rebuilt_from_headers(tmp_path):
    log = open_log(tmp_path, segment_bytes=500)
    _fill(log, 5, epoch=1)
    _fill(log, 5, epoch=4)
    entries = log.epoch_entries
    log.close()
    (tmp_path / "leader-epoch-checkpoint").write_bytes(b"garbage")
    log = open_log(tmp_path, segment_bytes=500)
    assert log.epoch_entries == entries == [(1, 0), (4, 15)]
    assert batch_bounds(log.read(0, 1 << 20))[0] == (0, 2)
