"""ConsumerProtocol subscription/assignment bytes (the `consumer` protocol type's JoinGroup metadata and
SyncGroup assignment): int16 version, then the non-flexible struct of `ConsumerProtocolSubscription.json`
/ `ConsumerProtocolAssignment.json`. Fields are only ever appended, so a newer version is parsed with the
v3 layout and its tail ignored, as Kafka does."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from consumer_groups.wire import ByteReader, WireFormatError, pack_bytes, pack_string

LATEST_VERSION = 3
TopicPartitions = tuple[tuple[str, tuple[int, ...]], ...]


class ConsumerProtocolError(WireFormatError):
    """Malformed subscription or assignment bytes."""


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: tuple[str, ...]
    user_data: bytes | None = None
    owned_partitions: TopicPartitions = ()  # v1+
    generation_id: int = -1  # v2+
    rack_id: str | None = None  # v3+


@dataclass(frozen=True, slots=True)
class Assignment:
    partitions: TopicPartitions
    user_data: bytes | None = None


def _pack_topic_partitions(tps: TopicPartitions) -> bytes:
    out = [struct.pack(">i", len(tps))]
    for topic, partitions in tps:
        out += [pack_string(topic), struct.pack(f">i{len(partitions)}i", len(partitions), *partitions)]
    return b"".join(out)


def _read_topic_partitions(r: ByteReader) -> TopicPartitions:
    return tuple((r.string(), tuple(r.take(">i") for _ in range(r.count()))) for _ in range(r.count()))


def encode_subscription(sub: Subscription, version: int = LATEST_VERSION) -> bytes:
    if not 0 <= version <= LATEST_VERSION:
        raise ValueError(f"subscription version {version} not in 0..{LATEST_VERSION}")
    out = [struct.pack(">hi", version, len(sub.topics)), *map(pack_string, sub.topics), pack_bytes(sub.user_data)]
    if version >= 1:
        out.append(_pack_topic_partitions(sub.owned_partitions))
    if version >= 2:
        out.append(struct.pack(">i", sub.generation_id))
    if version >= 3:
        out.append(pack_string(sub.rack_id))
    return b"".join(out)


def decode_subscription(data: bytes) -> tuple[int, Subscription]:
    """-> (version, subscription). Raises ConsumerProtocolError on malformed bytes."""
    try:
        r = ByteReader(data)
        version = r.take(">h")
        if version < 0:
            raise ConsumerProtocolError(f"negative subscription version {version}")
        topics = tuple(r.string() for _ in range(r.count()))
        user_data = r.nullable_bytes()
        owned = _read_topic_partitions(r) if version >= 1 else ()
        generation_id = r.take(">i") if version >= 2 else -1
        rack_id = r.nullable_string() if version >= 3 else None
    except WireFormatError as exc:
        raise ConsumerProtocolError(f"bad subscription: {exc}") from None
    return version, Subscription(topics, user_data, owned, generation_id, rack_id)


def encode_assignment(assignment: Assignment, version: int = 0) -> bytes:
    if not 0 <= version <= LATEST_VERSION:
        raise ValueError(f"assignment version {version} not in 0..{LATEST_VERSION}")
    return struct.pack(">h", version) + _pack_topic_partitions(assignment.partitions) + pack_bytes(assignment.user_data)


def decode_assignment(data: bytes) -> tuple[int, Assignment]:
    """-> (version, assignment). Raises ConsumerProtocolError on malformed bytes."""
    try:
        r = ByteReader(data)
        version = r.take(">h")
        if version < 0:
            raise ConsumerProtocolError(f"negative assignment version {version}")
        return version, Assignment(_read_topic_partitions(r), r.nullable_bytes())
    except WireFormatError as exc:
        raise ConsumerProtocolError(f"bad assignment: {exc}") from None


def group_topic_partitions(pairs: Iterable[tuple[str, int]]) -> TopicPartitions:
    """[(topic, partition)] -> ((topic, (partitions...)), ...), topics and partitions sorted."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in pairs:
        by_topic.setdefault(topic, []).append(partition)
    return tuple((t, tuple(sorted(ps))) for t, ps in sorted(by_topic.items()))


def flatten_topic_partitions(tps: TopicPartitions) -> list[tuple[str, int]]:
    return [(topic, p) for topic, partitions in tps for p in partitions]
