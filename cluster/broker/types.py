"""Plain data the broker core takes and returns. No front-door types here (neither protobuf nor Kafka codec)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Kafka's ListOffsets sentinels, used by both front doors.
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2

ACKS_NONE = 0
ACKS_LEADER = 1
ACKS_ALL = -1
VALID_ACKS = (ACKS_NONE, ACKS_LEADER, ACKS_ALL)


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


class ConfigSource(enum.Enum):
    DEFAULT = "default"  # built into tidelog (Kafka's defaults, fsync-before-ack)
    BROKER = "broker"  # the cluster default from the server configuration
    TOPIC = "topic"  # a per-topic override


@dataclass(frozen=True, slots=True)
class ConfigValue:
    name: str
    value: str
    source: ConfigSource


@dataclass(slots=True)
class PartitionState:
    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    leader_id: int
    leader_epoch: int
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()


@dataclass(slots=True)
class TopicInfo:
    name: str
    topic_id: str
    partition_count: int
    partitions: list[PartitionState] = field(default_factory=list)
    configs: list[ConfigValue] = field(default_factory=list)


# --- produce -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ProducePartition:
    topic: str
    partition: int
    records: bytes | bytearray | memoryview


@dataclass(slots=True)
class ProducePartitionResult:
    topic: str
    partition: int
    error_name: str = "NONE"
    error_message: str = ""
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    leader_id: int = -1  # with NOT_LEADER_OR_FOLLOWER: the leader this broker knows of


# --- fetch ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FetchPartition:
    topic: str
    partition: int
    fetch_offset: int
    max_bytes: int = 0  # 0: the broker default


@dataclass(slots=True)
class FetchPartitionResult:
    topic: str
    partition: int
    error_name: str = "NONE"
    error_message: str = ""
    high_watermark: int = -1
    log_start_offset: int = -1
    last_stable_offset: int = -1
    records: bytes | memoryview = b""
    leader_id: int = -1  # with NOT_LEADER_OR_FOLLOWER: the leader this broker knows of


@dataclass(slots=True)
class SubscribeChunk:
    """One message of a Subscribe stream: whole batches, the first of which may start before start_offset."""

    records: bytes | memoryview
    start_offset: int
    next_offset: int
    high_watermark: int
    log_start_offset: int


# --- list offsets ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class ListOffsetsPartition:
    topic: str
    partition: int
    timestamp: int  # LATEST_TIMESTAMP, EARLIEST_TIMESTAMP or a timestamp in ms


@dataclass(slots=True)
class ListOffsetsResult:
    topic: str
    partition: int
    error_name: str = "NONE"
    error_message: str = ""
    offset: int = -1
    timestamp: int = -1
    leader_id: int = -1  # with NOT_LEADER_OR_FOLLOWER: the leader this broker knows of
