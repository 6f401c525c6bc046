"""ConsumerProtocol subscription/assignment bytes, against what real clients put on the wire."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer_groups.consumer_protocol import (
    Assignment,
    ConsumerProtocolError,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)

TEST = b"\x00\x04test"
# Captured from clients (kafka-protocol README §6.3).
KAFKA_PYTHON_V0 = b"\x00\x00" + b"\x00\x00\x00\x01" + TEST + b"\x00\x00\x00\x00"
KCAT_V1 = b"\x00\x01" + b"\x00\x00\x00\x01" + TEST + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
LIBRDKAFKA_V3 = (
    b"\x00\x03"
    + b"\x00\x00\x00\x01"
    + TEST
    + b"\x00\x00\x00\x00"
    + b"\x00\x00\x00\x00"
    + b"\xff\xff\xff\xff"
    + b"\x00\x00"
)
LEADER_ASSIGNMENT_V0 = (
    b"\x00\x00"
    + b"\x00\x00\x00\x01"
    + TEST
    + b"\x00\x00\x00\x03"
    + b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02"
    + b"\x00\x00\x00\x00"
)


def test_client_subscriptions_decode() -> None:
    assert decode_subscription(KAFKA_PYTHON_V0) == (0, Subscription(("test",), b""))
    assert decode_subscription(KCAT_V1) == (1, Subscription(("test",), b""))
    assert decode_subscription(LIBRDKAFKA_V3) == (3, Subscription(("test",), b"", (), -1, ""))


def test_client_subscriptions_reencode_byte_for_byte() -> None:
    assert encode_subscription(Subscription(("test",), b""), 0) == KAFKA_PYTHON_V0
    assert encode_subscription(Subscription(("test",), b""), 1) == KCAT_V1
    assert encode_subscription(Subscription(("test",), b"", (), -1, ""), 3) == LIBRDKAFKA_V3


def test_leader_assignment() -> None:
    assignment = Assignment((("test", (0, 1, 2)),), b"")
    assert encode_assignment(assignment, 0) == LEADER_ASSIGNMENT_V0
    assert decode_assignment(LEADER_ASSIGNMENT_V0) == (0, assignment)


def test_newer_versions_parse_with_the_known_layout() -> None:
    future = b"\x00\x07" + LIBRDKAFKA_V3[2:] + b"extra fields"
    assert decode_subscription(future)[1].topics == ("test",)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00",
        b"\xff\xff",
        KAFKA_PYTHON_V0[:-1],
        b"\x00\x00\x7f\xff\xff\xff",
        b"\x00\x00\x00\x00\x00\x01\x00\x02\xff\xfe\x00\x00\x00\x00",
    ],
)
def test_malformed_bytes_raise_a_clear_error(bad: bytes) -> None:
    with pytest.raises(ConsumerProtocolError):
        decode_subscription(bad)
    with pytest.raises(ConsumerProtocolError):
        decode_assignment(bad[:3])


names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
topic_partitions = st.lists(
    st.tuples(names, st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5).map(tuple)), max_size=4
).map(tuple)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(names, max_size=4).map(tuple),
    st.one_of(st.none(), st.binary(max_size=16)),
    topic_partitions,
    st.integers(-(2**31), 2**31 - 1),
    st.one_of(st.none(), names),
    st.integers(0, 3),
)
def test_round_trip(topics, user_data, owned, generation, rack, version) -> None:
    full = Subscription(topics, user_data, owned, generation, rack)
    expected = Subscription(
        topics,
        user_data,
        owned if version >= 1 else (),
        generation if version >= 2 else -1,
        rack if version >= 3 else None,
    )
    assert decode_subscription(encode_subscription(full, version)) == (version, expected)
    assignment = Assignment(owned, user_data)
    assert decode_assignment(encode_assignment(assignment, version)) == (version, assignment)
