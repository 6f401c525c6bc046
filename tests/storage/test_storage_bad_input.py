"""Bad input gets a clear error (the right Kafka error name) and leaves the log unchanged."""

from __future__ import annotations

import struct

import pytest
from storage_helpers import T0, batch, open_log, values_batch

from storage.config import LogConfig
from storage.errors import (
    ConfigError,
    StaleLeaderEpochError,
    UnexpectedAppendOffsetError,
)
from storage.record_batch import (
    CONTROL_LEADER_CHANGE,
    RecordBatchError,
    build_control_batch,
)


def _snapshot(log):
    return (log.log_end_offset, log.size_bytes, bytes(log.read(0, 1 << 20)), log.epoch_entries)


def _flip(b: bytes, pos: int) -> bytes:
    out = bytearray(b)
    out[pos] ^= 0x01
    return bytes(out)


GOOD = values_batch(0, 3)


@pytest.mark.parametrize(
    "name, payload, error_name",
    [
        ("bad crc", _flip(GOOD, len(GOOD) - 1), "CORRUPT_MESSAGE"),
        ("bad crc in attributes", _flip(GOOD, 22), "CORRUPT_MESSAGE"),
        ("oversize", batch([b"x" * 5000]), "MESSAGE_TOO_LARGE"),
        ("wrong magic", GOOD[:16] + b"\x01" + GOOD[17:], "CORRUPT_MESSAGE"),
        ("truncated batch", GOOD[:-5], "CORRUPT_MESSAGE"),
        ("truncated header", GOOD[:40], "CORRUPT_MESSAGE"),
        ("empty", b"", "INVALID_RECORD"),
        ("control batch", build_control_batch(CONTROL_LEADER_CHANGE, b"", timestamp=T0), "INVALID_RECORD"),
        ("good then bad", GOOD + _flip(GOOD, 70), "CORRUPT_MESSAGE"),
        ("length below minimum", GOOD[:8] + struct.pack(">i", 10) + GOOD[12:], "CORRUPT_MESSAGE"),
    ],
)
def test_bad_batches_are_rejected_and_change_nothing(tmp_path, name, payload, error_name):
    log = open_log(tmp_path, max_message_bytes=4096)
    log.append(values_batch(0, 2), leader_epoch=1, now_ms=T0)
    before = _snapshot(log)
    with pytest.raises(RecordBatchError) as err:
        log.append(payload, leader_epoch=1, now_ms=T0)
    assert err.value.error_name == error_name, name
    assert _snapshot(log) == before
    # The log still works and the next offset is the one it would have been.
    assert log.append(values_batch(2, 1), leader_epoch=1, now_ms=T0).base_offset == 2
    log.close()
    reopened = open_log(tmp_path)
    assert reopened.log_end_offset == 3


def test_stale_leader_epoch_is_fenced(tmp_path):
    log = open_log(tmp_path)
    log.append(values_batch(0, 1), leader_epoch=5, now_ms=T0)
    before = _snapshot(log)
    with pytest.raises(StaleLeaderEpochError) as err:
        log.append(values_batch(1, 1), leader_epoch=4, now_ms=T0)
    assert err.value.error_name == "FENCED_LEADER_EPOCH"
    assert _snapshot(log) == before


def test_replicated_append_must_start_at_the_log_end(tmp_path):
    leader = open_log(tmp_path / "leader")
    follower = open_log(tmp_path / "follower")
    leader.append(values_batch(0, 3), leader_epoch=2, now_ms=T0)
    leader.append(values_batch(3, 3), leader_epoch=2, now_ms=T0)
    second = bytes(leader.read(3, 1 << 20))
    with pytest.raises(UnexpectedAppendOffsetError):
        follower.append_replicated(second, now_ms=T0)
    assert follower.log_end_offset == 0 and follower.size_bytes == 0
    follower.append_replicated(bytes(leader.read(0, 1 << 20)), now_ms=T0)
    assert bytes(follower.read(0, 1 << 20)) == bytes(leader.read(0, 1 << 20))
    assert follower.epoch_entries == leader.epoch_entries == [(2, 0)]
    with pytest.raises(RecordBatchError):
        follower.append_replicated(_flip(bytes(leader.read(3, 1 << 20)), 80), now_ms=T0)


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError) as err:
        LogConfig.from_kafka({"segment.bytes": "-1"})
    assert err.value.key == "segment.bytes" and "segment.bytes" in str(err.value)
    assert err.value.error_name == "INVALID_CONFIG"
    for key, value in [
        ("cleanup.policy", "foo"),
        ("cleanup.policy", ""),
        ("retention.ms", "-2"),
        ("retention.ms", "1.5"),
        ("segment.ms", "abc"),
        ("segment.bytes", str(2**31)),
        ("message.timestamp.type", "WallClock"),
        ("flush.messages", "0"),
        ("index.interval.bytes", "-1"),
        ("no.such.key", "1"),
    ]:
        with pytest.raises(ConfigError) as err:
            LogConfig.from_kafka({key: value})
        assert err.value.key == key and key in str(err.value)
    with pytest.raises(ConfigError) as err:
        LogConfig(segment_bytes=-5)
    assert err.value.key == "segment.bytes"


def test_config_defaults_and_round_trip():
    cfg = LogConfig()
    assert cfg.segment_bytes == 1 << 30 and cfg.retention_ms == 604800000 and cfg.retention_bytes == -1
    assert cfg.max_message_bytes == 1048588 and cfg.fsync_before_ack and cfg.delete and not cfg.compact
    cfg = LogConfig.from_kafka({"cleanup.policy": "delete, compact", "flush.messages": "100",
                                "message.timestamp.type": "LogAppendTime", "retention.bytes": "1000"})
    assert cfg.cleanup_policy == "compact,delete" and cfg.compact and cfg.delete
    assert not cfg.fsync_before_ack and cfg.log_append_time and cfg.retention_bytes == 1000
    assert LogConfig.from_kafka(cfg.to_kafka()) == cfg
    assert LogConfig.from_kafka({"segment.ms": "5"}, base=cfg).flush_messages == 100
