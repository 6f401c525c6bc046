"""ConsumerProtocol subscription/assignment bytes (README §6.3 vectors, kafka-python)."""

from __future__ import annotations

import pytest

import proto.kafka as k
from proto.kafka.consumer_protocol import ASSIGNMENT, SUBSCRIPTION

from .bodies import full_body

H = bytes.fromhex
TEST = "0004" + b"test".hex()


@pytest.mark.parametrize("wire,version,body", [
    ("0000 00000001" + TEST + "00000000", 0, {"topics": ["test"], "user_data": b""}),
    ("0001 00000001" + TEST + "00000000 00000000", 1,
     {"topics": ["test"], "user_data": b"", "owned_partitions": []}),
    ("0003 00000001" + TEST + "00000000 00000000 ffffffff 0000", 3,
     {"topics": ["test"], "user_data": b"", "owned_partitions": [], "generation_id": -1,
      "rack_id": ""}),
])
def test_subscriptions_seen_on_the_wire(wire: str, version: int, body: dict) -> None:
    data = H(wire.replace(" ", ""))
    assert k.decode_subscription(data) == (version, body)
    assert k.encode_subscription(body, version) == data


def test_assignment_seen_on_the_wire() -> None:
    data = H(("0000 00000001" + TEST + "00000003 00000000 00000001 00000002 00000000")
             .replace(" ", ""))
    body = {"assigned_partitions": [{"topic": "test", "partitions": [0, 1, 2]}], "user_data": b""}
    assert k.decode_assignment(data) == (0, body)
    assert k.encode_assignment(body) == data
    assert k.decode_assignment(b"") == (0, {"assigned_partitions": [], "user_data": None})


@pytest.mark.parametrize("version", range(4))
def test_round_trips_and_kafka_python(version: int) -> None:
    from kafka.protocol.consumer.metadata import (ConsumerProtocolAssignment,
                                                  ConsumerProtocolSubscription)
    sub = full_body(SUBSCRIPTION, version)
    wire = k.encode_subscription(sub, version)
    assert k.decode_subscription(wire) == (version, sub)
    theirs = ConsumerProtocolSubscription.decode(wire)
    assert theirs.encode() == wire and list(theirs.topics) == sub["topics"]
    asg = full_body(ASSIGNMENT, version)
    wire = k.encode_assignment(asg, version)
    assert k.decode_assignment(wire) == (version, asg)
    assert ConsumerProtocolAssignment.decode(wire).encode() == wire


def test_newer_versions_parse_with_our_layout_and_bad_bytes_raise() -> None:
    v3 = k.encode_subscription({"topics": ["a"], "rack_id": "r1"}, 3)
    version, body = k.decode_subscription(b"\x00\x07" + v3[2:] + b"future fields")
    assert version == 7 and body["rack_id"] == "r1"
    for bad in (b"", b"\x00", b"\xff\xff" + v3[2:], v3[:-1], b"\x00\x00\x7f\xff\xff\xff"):
        with pytest.raises(k.KafkaProtocolError):
            k.decode_subscription(bad)
    with pytest.raises(k.KafkaProtocolError):
        k.encode_subscription({}, 4)
