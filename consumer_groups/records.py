"""Key/value records of the compacted `__consumer_offsets` topic, in Kafka's own layout (so Kafka's
tools can read our topic), and the group -> partition mapping.

Every key and value starts with an int16 schema version; integers are big-endian; `string` is an int16
length + UTF-8 (-1 = null where nullable); `bytes` is an int32 length + bytes; arrays an int32 count.

    key v0/v1  offset commit   group string, topic string, partition int32
    key v2     group metadata  group string
    offset commit value (we write v3; read v0-v3)
        offset int64, [v3+ leader_epoch int32], metadata string, commit_timestamp int64,
        [v1 only: expire_timestamp int64]           (we write v1 when an expire timestamp is set)
    group metadata value (we write v3; read v0-v3)
        protocol_type string, generation int32, protocol string?, leader string?,
        [v2+ current_state_timestamp int64],
        members [member_id string, [v3+ group_instance_id string?], client_id string, client_host string,
                 [v1+ rebalance_timeout int32], session_timeout int32, subscription bytes, assignment bytes]
A null value is a tombstone: the offset / the group is deleted. Each record is the full state of its key,
so compaction keeps exactly what a reload needs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from consumer_groups.wire import ByteReader, WireFormatError, pack_bytes, pack_string

OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
OFFSET_VALUE_VERSION = 3
OFFSET_VALUE_VERSION_WITH_EXPIRY = 1
GROUP_VALUE_VERSION = 3


class RecordFormatError(WireFormatError):
    """A `__consumer_offsets` record that cannot be decoded."""


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes | None  # None = tombstone


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class OffsetValue:
    offset: int
    leader_epoch: int  # -1 = unknown
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int = -1  # -1 = expire by the group's retention rule


@dataclass(frozen=True, slots=True)
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupValue:
    protocol_type: str
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    state_timestamp_ms: int
    members: tuple[MemberValue, ...]


def encode_offset_key(group_id: str, topic: str, partition: int) -> bytes:
    return (
        struct.pack(">h", OFFSET_KEY_VERSION)
        + pack_string(group_id)
        + pack_string(topic)
        + struct.pack(">i", partition)
    )


def encode_group_key(group_id: str) -> bytes:
    return struct.pack(">h", GROUP_KEY_VERSION) + pack_string(group_id)


def encode_offset_value(v: OffsetValue) -> bytes:
    if v.expire_timestamp_ms != -1:
        # Only v1 carries an expire timestamp (OffsetCommit v2-v4 retention_time_ms).
        return (
            struct.pack(">hq", OFFSET_VALUE_VERSION_WITH_EXPIRY, v.offset)
            + pack_string(v.metadata)
            + struct.pack(">qq", v.commit_timestamp_ms, v.expire_timestamp_ms)
        )
    return (
        struct.pack(">hqi", OFFSET_VALUE_VERSION, v.offset, v.leader_epoch)
        + pack_string(v.metadata)
        + struct.pack(">q", v.commit_timestamp_ms)
    )


def encode_group_value(v: GroupValue) -> bytes:
    out = [
        struct.pack(">h", GROUP_VALUE_VERSION),
        pack_string(v.protocol_type),
        struct.pack(">i", v.generation_id),
        pack_string(v.protocol_name),
        pack_string(v.leader_id),
        struct.pack(">qi", v.state_timestamp_ms, len(v.members)),
    ]
    for m in v.members:
        out += [
            pack_string(m.member_id),
            pack_string(m.group_instance_id),
            pack_string(m.client_id),
            pack_string(m.client_host),
            struct.pack(">ii", m.rebalance_timeout_ms, m.session_timeout_ms),
            pack_bytes(m.subscription),
            pack_bytes(m.assignment),
        ]
    return b"".join(out)


def offset_record(group_id: str, topic: str, partition: int, value: OffsetValue | None) -> Record:
    key = encode_offset_key(group_id, topic, partition)
    return Record(key, None if value is None else encode_offset_value(value))


def group_record(group_id: str, value: GroupValue | None) -> Record:
    return Record(encode_group_key(group_id), None if value is None else encode_group_value(value))


def decode_key(key: bytes) -> OffsetKey | GroupKey | None:
    """None for key versions this coordinator does not know (newer group types): skipped on load."""
    try:
        r = ByteReader(key)
        version = r.take(">h")
        if version in (0, 1):
            group_id, topic, partition = r.string(), r.string(), r.take(">i")
            decoded: OffsetKey | GroupKey | None = OffsetKey(group_id, topic, partition)
        elif version == 2:
            decoded = GroupKey(r.string())
        elif version > 2:
            return None
        else:
            raise RecordFormatError(f"negative key version {version}")
    except RecordFormatError:
        raise
    except WireFormatError as exc:
        raise RecordFormatError(f"bad __consumer_offsets key: {exc}") from None
    if r.remaining():
        raise RecordFormatError(f"{r.remaining()} trailing bytes after key")
    return decoded


def decode_offset_value(value: bytes) -> OffsetValue:
    try:
        r = ByteReader(value)
        version = r.take(">h")
        if not 0 <= version <= 3:
            raise RecordFormatError(f"unsupported offset commit value version {version}")
        offset = r.take(">q")
        leader_epoch = r.take(">i") if version >= 3 else -1
        metadata = r.string()
        commit_ts = r.take(">q")
        expire_ts = r.take(">q") if version == 1 else -1
    except RecordFormatError:
        raise
    except WireFormatError as exc:
        raise RecordFormatError(f"bad offset commit value: {exc}") from None
    return OffsetValue(offset, leader_epoch, metadata, commit_ts, expire_ts)


def decode_group_value(value: bytes) -> GroupValue:
    try:
        r = ByteReader(value)
        version = r.take(">h")
        if not 0 <= version <= 3:
            raise RecordFormatError(f"unsupported group metadata value version {version}")
        protocol_type = r.string()
        generation = r.take(">i")
        protocol, leader = r.nullable_string(), r.nullable_string()
        state_ts = r.take(">q") if version >= 2 else -1
        members = []
        for _ in range(r.count()):
            member_id = r.string()
            instance_id = r.nullable_string() if version >= 3 else None
            client_id, client_host = r.string(), r.string()
            rebalance_timeout = r.take(">i") if version >= 1 else -1
            session_timeout = r.take(">i")
            if rebalance_timeout == -1:
                rebalance_timeout = session_timeout  # v0 had no rebalance timeout: Kafka used the session's
            subscription, assignment = r.nullable_bytes() or b"", r.nullable_bytes() or b""
            members.append(
                MemberValue(
                    member_id,
                    instance_id,
                    client_id,
                    client_host,
                    rebalance_timeout,
                    session_timeout,
                    subscription,
                    assignment,
                )
            )
    except RecordFormatError:
        raise
    except WireFormatError as exc:
        raise RecordFormatError(f"bad group metadata value: {exc}") from None
    return GroupValue(protocol_type, generation, protocol, leader, state_ts, tuple(members))


def java_string_hashcode(s: str) -> int:
    """Java's `String.hashCode()`: s[0]*31^(n-1) + ... over UTF-16 code units, as a signed int32."""
    h = 0
    raw = s.encode("utf-16-be", "surrogatepass")
    for (unit,) in struct.iter_unpack(">H", raw):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_group(group_id: str, num_partitions: int) -> int:
    """The `__consumer_offsets` partition of a group: `Utils.abs(groupId.hashCode()) % n`, exactly as Kafka.

    Kafka's `Utils.abs` is `n == Integer.MIN_VALUE ? 0 : Math.abs(n)`. That is *not* `n & 0x7fffffff`
    (the producer partitioner's `toPositive`): for a negative hash h the two give -h and h + 2^31."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    h = java_string_hashcode(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % num_partitions
