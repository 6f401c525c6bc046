"""Errors of the storage layer. Each carries `error_name`, the Kafka error the front doors answer with."""

from __future__ import annotations


class StorageError(Exception):
    """The log cannot serve the request (I/O failure, failed fsync, log closed or offline)."""

    error_name = "KAFKA_STORAGE_ERROR"


class OffsetOutOfRangeError(StorageError):
    """The requested offset lies outside [log_start_offset, log_end_offset]."""

    error_name = "OFFSET_OUT_OF_RANGE"

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is out of range [{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class UnexpectedAppendOffsetError(ValueError):
    """A replicated append does not start at the log end offset (the follower must truncate or fetch again)."""

    error_name = "OFFSET_OUT_OF_RANGE"


class StaleLeaderEpochError(ValueError):
    """An append carries a leader epoch older than the latest one in the epoch cache."""

    error_name = "FENCED_LEADER_EPOCH"


class ConfigError(ValueError):
    """An unknown topic-config key or an invalid value. `key` is the Kafka name of the offending key."""

    error_name = "INVALID_CONFIG"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
