"""Round trips of every declared API, version and direction, driven by our own tables."""

from __future__ import annotations

import pytest

import proto.kafka as k
from proto.kafka.codec import field_default, present_fields
from proto.kafka.messages import APIS

from .bodies import all_versions, full_body

CASES = [(api.key, v, r) for api, v, r in all_versions()]
IDS = [f"{k.ApiKey(a).name}-v{v}-{'resp' if r else 'req'}" for a, v, r in CASES]


def _struct(key: int, response: bool):
    return APIS[key].response if response else APIS[key].request


@pytest.mark.parametrize("key,version,response", CASES, ids=IDS)
def test_every_field_round_trips(key: int, version: int, response: bool) -> None:
    st = _struct(key, response)
    body = full_body(st, version)
    # the sample is only useful if no field sits at its default
    for f in present_fields(st, version):
        assert body[f.name] != field_default(f, version), f.name
    wire = k.encode_body(key, version, body, response=response, strict=True)
    decoded = k.decode_body(key, version, wire, response=response)
    assert decoded == body
    assert k.encode_body(key, version, decoded, response=response) == wire


@pytest.mark.parametrize("key,version,response", CASES, ids=IDS)
def test_nulls_and_defaults_round_trip(key: int, version: int, response: bool) -> None:
    st = _struct(key, response)
    nulls = full_body(st, version, nulls=True)
    wire = k.encode_body(key, version, nulls, response=response, strict=True)
    assert k.decode_body(key, version, wire, response=response) == nulls
    # a missing field is encoded as its default; decoding gives every field back
    empty_wire = k.encode_body(key, version, {}, response=response)
    defaults = k.decode_body(key, version, empty_wire, response=response)
    assert set(defaults) == {f.name for f in present_fields(st, version)}
    assert k.encode_body(key, version, defaults, response=response) == empty_wire


def test_all_versions_of_the_readme_are_declared() -> None:
    expected = {0: 11, 1: 17, 2: 10, 3: 12, 8: 9, 9: 9, 10: 6, 11: 9, 12: 4, 13: 5, 14: 5, 15: 5,
                16: 5, 17: 1, 18: 4, 19: 7, 20: 6, 21: 2, 22: 5, 23: 4, 24: 5, 25: 4, 26: 4,
                28: 4, 32: 4, 36: 2, 37: 3, 42: 2, 47: 0, 60: 1}
    assert {int(key): hi for key, (lo, hi) in k.ADVERTISED_VERSIONS.items()} == expected
    assert all(lo == 0 for lo, _ in k.ADVERTISED_VERSIONS.values())
    flex = {0: 9, 1: 12, 2: 6, 3: 9, 8: 8, 9: 6, 10: 3, 11: 6, 12: 4, 13: 4, 14: 4, 15: 5, 16: 3,
            17: None, 18: 3, 19: 5, 20: 4, 21: 2, 22: 2, 23: 4, 24: 3, 25: 3, 26: 3, 28: 3,
            32: 4, 36: 2, 37: 2, 42: 2, 47: None, 60: 0}
    assert {int(key): v for key, v in k.FLEXIBLE_FROM.items()} == flex
    assert len(CASES) == 2 * sum(hi + 1 for hi in expected.values())


def test_strict_encode_rejects_what_kafka_rejects() -> None:
    fetch = k.ApiKey.FETCH
    # session_id is not ignorable and Fetch v6 has none: Kafka refuses to drop it silently
    with pytest.raises(k.KafkaProtocolError, match="session_id"):
        k.encode_body(fetch, 6, {"session_id": 5}, response=True, strict=True)
    # ignorable fields are dropped; lenient mode drops anything the version lacks
    k.encode_body(fetch, 0, {"throttle_time_ms": 5}, response=True, strict=True)
    assert k.encode_body(fetch, 6, {"session_id": 5}, response=True) == \
        k.encode_body(fetch, 6, {}, response=True)
    with pytest.raises(k.KafkaProtocolError, match="unknown field 'nope'"):
        k.encode_body(fetch, 6, {"nope": 1}, response=True, strict=True)
    with pytest.raises(k.KafkaProtocolError, match="not a valid int32"):
        k.encode_body(fetch, 6, {"throttle_time_ms": 1 << 40}, response=True, strict=True)


def test_bad_bodies_raise_protocol_error_naming_the_field() -> None:
    with pytest.raises(k.KafkaProtocolError, match=r"responses\[0\].topic"):
        k.encode_body(k.ApiKey.FETCH, 4, {"responses": [{"topic": None}]}, response=True)
    with pytest.raises(k.KafkaProtocolError, match="not nullable"):
        k.encode_body(k.ApiKey.METADATA, 9, {"brokers": [{"host": None}]}, response=True)
    with pytest.raises(k.KafkaProtocolError):
        k.encode_body(k.ApiKey.METADATA, 13, {}, response=True)  # version not declared
    with pytest.raises(k.KafkaProtocolError):
        k.encode_body(99, 0, {}, response=True)


def test_tagged_fields_at_default_are_not_written() -> None:
    body = {"responses": [{"topic": "t", "partitions": [{"partition_index": 0}]}]}
    wire = k.encode_body(k.ApiKey.FETCH, 12, body, response=True)
    decoded = k.decode_body(k.ApiKey.FETCH, 12, wire, response=True)
    partition = decoded["responses"][0]["partitions"][0]
    assert partition["current_leader"] == {"leader_id": -1, "leader_epoch": -1}
    assert wire.endswith(b"\x00\x00\x00\x00")  # records null, partition/topic/top tags empty
    partition["current_leader"]["leader_id"] = 3
    wire2 = k.encode_body(k.ApiKey.FETCH, 12, decoded, response=True)
    # tag count 1, tag 1, size 9 (int32 + int32 + empty tag section)
    assert b"\x01\x01\x09\x00\x00\x00\x03\xff\xff\xff\xff\x00" in wire2
    assert k.decode_body(k.ApiKey.FETCH, 12, wire2, response=True) == decoded


def test_consumer_dicts_are_not_mutated_and_defaults_are_fresh() -> None:
    a = k.decode_body(k.ApiKey.FETCH, 12, k.encode_body(
        k.ApiKey.FETCH, 12, {"responses": [{"partitions": [{}, {}]}]}, response=True),
        response=True)
    p0, p1 = a["responses"][0]["partitions"]
    p0["current_leader"]["leader_id"] = 9
    assert p1["current_leader"]["leader_id"] == -1
