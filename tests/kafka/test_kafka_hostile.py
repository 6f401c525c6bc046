"""Hostile input against a live broker process: it closes or answers the one connection, and never dies.

After each case the same process still serves a normal client on a new connection.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proto.kafka as k
from cluster.kafka.handlers import served_versions
from kafka_listener_harness import (HOST, RawClient, batch, create_topic, fetch_body, fetch_partition, healthy,
                                    produce_body, produce_result)

A = k.ApiKey
E = k.ErrorCode


@pytest.fixture
def broker(kafka_broker):
    yield kafka_broker
    assert kafka_broker.alive(), f"the broker process died: {kafka_broker.stderr_tail()}"
    healthy(kafka_broker.port)


def _header(api_key: int, version: int, correlation_id: int = 1, client_id: bytes = b"evil") -> bytes:
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def test_oversize_frame_is_refused_on_its_size_prefix(broker):
    with RawClient(broker.port) as c:
        c.send_raw(struct.pack(">i", 0x7FFFFFF0) + _header(A.PRODUCE, 9))  # no body follows, ever
        assert c.is_closed(timeout=5), "closed on the size prefix, without waiting for 2 GB"


@pytest.mark.parametrize("size", [-1, 0, 3])
def test_negative_and_tiny_frame_sizes_close_the_connection(broker, size):
    with RawClient(broker.port) as c:
        c.send_raw(struct.pack(">i", size) + b"\x00" * 16)
        assert c.is_closed()


@pytest.mark.parametrize("api_key,version,body", [
    (A.METADATA, 12, b"\xff\xff\xff"),  # a compact array claiming billions of entries
    (A.PRODUCE, 9, b"\x00"),  # truncated
    (A.FETCH, 12, b"\x01" * 7),
    (A.CREATE_TOPICS, 7, b"\x02\x05abc"),
    (A.API_VERSIONS, 3, b"\x00\x00\x00"),  # a flexible header whose tagged section lies
])
def test_garbage_bodies_close_the_connection(broker, api_key, version, body):
    header = _header(api_key, version)
    if k.is_flexible(api_key, version):
        header += b"\x00"  # empty tagged-field section of header v2
    with RawClient(broker.port) as c:
        c.send_raw(_frame(header + body))
        assert c.is_closed()


@pytest.mark.parametrize("api_key", [7, 27, 999, -1, 0x7FFF])
def test_unknown_api_keys_close_the_connection(broker, api_key):
    with RawClient(broker.port) as c:
        c.send_raw(_frame(_header(api_key, 0) + b"\x00" * 8))
        assert c.is_closed()


@pytest.mark.parametrize("version", range(5))
def test_every_api_versions_version(broker, version):
    with RawClient(broker.port) as c:
        response = c.request(A.API_VERSIONS, version, {"client_software_name": "kcat",
                                                       "client_software_version": "1.7.1"})
        assert response["error_code"] == 0
        assert {e["api_key"]: (e["min_version"], e["max_version"]) for e in response["api_keys"]} == \
            served_versions()


@pytest.mark.parametrize("version", [5, 9, 0x7FFF])
def test_too_new_api_versions_gets_the_v0_reply_and_the_connection_stays(broker, version):
    with RawClient(broker.port) as c:
        c.send_raw(_frame(_header(A.API_VERSIONS, version, correlation_id=77) + b"\x00" * 3))
        frame = c.recv_frame()
        cid, body = k.decode_response(A.API_VERSIONS, 0, frame)
        assert cid == 77 and body["error_code"] == E.UNSUPPORTED_VERSION
        assert body["api_keys"] == [{"api_key": A.API_VERSIONS, "min_version": 0, "max_version": 4}]
        assert c.request(A.API_VERSIONS, 4, {"client_software_name": "a", "client_software_version": "1"})[
            "error_code"] == 0, "the client retries on the same connection"


@pytest.mark.parametrize("api_key,version", [(A.METADATA, 13), (A.HEARTBEAT, 5), (A.PRODUCE, 12)])
def test_too_new_version_of_another_api_closes_the_connection(broker, api_key, version):
    # As Kafka: only ApiVersions is answered whatever its version; other requests cannot be parsed.
    with RawClient(broker.port) as c:
        c.send_raw(_frame(_header(api_key, version, correlation_id=5) + b"\x00" * 8))
        assert c.is_closed()


def test_fetch_posing_as_replica_is_refused(broker):
    with RawClient(broker.port) as c:
        create_topic(c, "hostile-replica", 1)
        assert produce_result(c.request(A.PRODUCE, 9, produce_body("hostile-replica", 0, batch([b"x"]))))[
            "error_code"] == 0
        for version, replica in ((4, 0), (12, 3), (15, 1)):
            part = fetch_partition(c.request(A.FETCH, version, fetch_body("hostile-replica", 0, 0, version=version,
                                                                           replica_id=replica)))
            assert part["error_code"] == E.CLUSTER_AUTHORIZATION_FAILED and not part["records"]


def test_half_frames_and_abrupt_disconnects(broker):
    for cut in (2, 6, 20):
        s = socket.create_connection((HOST, broker.port), timeout=5)
        s.sendall(_frame(_header(A.METADATA, 1) + b"\x00\x00\x00\x00")[:cut])
        s.close()
    s = socket.create_connection((HOST, broker.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST instead of FIN
    s.sendall(_frame(_header(A.FETCH, 12) + b"\x00" * 4))
    s.close()


def _valid_frames() -> list[bytes]:
    bodies = [
        (A.API_VERSIONS, 3, {"client_software_name": "x", "client_software_version": "1"}),
        (A.METADATA, 9, {"topics": [{"name": "fuzz"}], "allow_auto_topic_creation": False}),
        (A.PRODUCE, 9, produce_body("fuzz", 0, batch([b"v"]))),
        (A.FETCH, 12, fetch_body("fuzz", 0, 0)),
        (A.LIST_OFFSETS, 7, {"replica_id": -1, "topics": [{"name": "fuzz", "partitions": [
            {"partition_index": 0, "timestamp": -1}]}]}),
        (A.CREATE_TOPICS, 5, {"topics": [{"name": "fuzz-made", "num_partitions": 1, "replication_factor": 1,
                                          "assignments": [], "configs": []}], "timeout_ms": 1000}),
    ]
    return [k.encode_request(api, v, 9, body) for api, v, body in bodies]


VALID = _valid_frames()


@st.composite
def hostile_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "mutated", "resized"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=300))
    frame = bytearray(draw(st.sampled_from(VALID)))
    if kind == "resized":
        frame[0:4] = struct.pack(">i", draw(st.integers(-5, len(frame) + 50)))
        return bytes(frame)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(4, len(frame) - 1))
        frame[pos] = draw(st.integers(0, 255))
    return bytes(frame)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=hostile_bytes())
def test_random_and_mutated_frames_never_kill_the_listener(kafka_broker, data):
    s = socket.create_connection((HOST, kafka_broker.port), timeout=5)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(0.5)
        try:
            while s.recv(65536):
                pass  # whatever it answers, it must not hang forever nor die
        except (socket.timeout, ConnectionResetError):
            pass
    finally:
        s.close()
    assert kafka_broker.alive(), kafka_broker.stderr_tail()


def test_still_healthy_after_the_fuzzing(kafka_broker):
    assert kafka_broker.alive()
    healthy(kafka_broker.port)
    # Every input was handled by the codec or a handler: no handler crashed on a well-formed oddity.
    assert "Traceback" not in kafka_broker.stderr_tail(1 << 20), kafka_broker.stderr_tail()
