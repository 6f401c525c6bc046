"""ConsumerProtocol: the bytes inside JoinGroup ``metadata`` and SyncGroup ``assignment``.

An int16 version, then a non-flexible struct (Kafka's ConsumerProtocolSubscription.json and
ConsumerProtocolAssignment.json). Fields are only ever appended, so a newer version than ours
is parsed with our newest layout and the rest is ignored, as Kafka does.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from .codec import Buffer, decode_struct, encode_struct_parts, plan_for
from .errors import KafkaProtocolError
from .schema import BYTES, INT32, STRING, Array, F, Struct

SUBSCRIPTION_VERSIONS = (0, 3)
ASSIGNMENT_VERSIONS = (0, 3)

SUBSCRIPTION = Struct("ConsumerProtocolSubscription",
    F("topics", Array(STRING)),
    F("user_data", BYTES, nullable="0+", default=None),
    F("owned_partitions", Array(Struct("TopicPartition",
        F("topic", STRING, "1+"),
        F("partitions", Array(INT32), "1+"),
    )), "1+", ignorable=True),
    F("generation_id", INT32, "2+", default=-1, ignorable=True),
    F("rack_id", STRING, "3+", nullable="3+", default=None, ignorable=True),
)

ASSIGNMENT = Struct("ConsumerProtocolAssignment",
    F("assigned_partitions", Array(Struct("TopicPartition",
        F("topic", STRING),
        F("partitions", Array(INT32)),
    ))),
    F("user_data", BYTES, nullable="0+", default=None),
)

_VERSION = struct.Struct(">h")


def _encode(st: Struct, versions: tuple[int, int], body: Mapping, version: int) -> bytes:
    if not versions[0] <= version <= versions[1]:
        raise KafkaProtocolError(f"{st.name} v{version} is not supported")
    parts = encode_struct_parts(plan_for(st, version, False), body, st)
    return _VERSION.pack(version) + b"".join(parts)


def _decode(st: Struct, versions: tuple[int, int], data: Buffer) -> tuple[int, dict]:
    if len(data) < 2:
        raise KafkaProtocolError(f"{st.name}: {len(data)} bytes, no version")
    version = _VERSION.unpack_from(data, 0)[0]
    if version < versions[0]:
        raise KafkaProtocolError(f"{st.name}: unsupported version {version}")
    layout = min(version, versions[1])
    body, _ = decode_struct(plan_for(st, layout, False), data, 2,
                            allow_trailing=version > versions[1])
    return version, body


def encode_subscription(body: Mapping, version: int = 0) -> bytes:
    """JoinGroup ``protocols[].metadata`` for the ``consumer`` protocol type."""
    return _encode(SUBSCRIPTION, SUBSCRIPTION_VERSIONS, body, version)


def decode_subscription(data: Buffer) -> tuple[int, dict]:
    """(version on the wire, body); raises KafkaProtocolError on malformed bytes."""
    return _decode(SUBSCRIPTION, SUBSCRIPTION_VERSIONS, data)


def encode_assignment(body: Mapping, version: int = 0) -> bytes:
    """SyncGroup ``assignments[].assignment`` / the member's ``assignment``."""
    return _encode(ASSIGNMENT, ASSIGNMENT_VERSIONS, body, version)


def decode_assignment(data: Buffer) -> tuple[int, dict]:
    """(version on the wire, body); an empty assignment (b"") decodes as no partitions."""
    if len(data) == 0:
        # Kafka's coordinator hands out an empty byte string to members without an assignment.
        return 0, {"assigned_partitions": [], "user_data": None}
    return _decode(ASSIGNMENT, ASSIGNMENT_VERSIONS, data)
