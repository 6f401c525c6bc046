"""KafkaServerConnection: framing, limits, unsupported versions, zero-copy frames."""

from __future__ import annotations

import struct

import pytest

import proto.kafka as k
from proto.kafka import (NEED_DATA, ConnectionClosed, KafkaServerConnection, ProtocolViolation,
                         Request, UnsupportedRequest)

from .bodies import full_body


def _drain(conn: KafkaServerConnection) -> list:
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if not isinstance(event, Request):
            break
    return events


def _frames() -> list[bytes]:
    out = []
    for i, (key, version) in enumerate([(18, 3), (3, 12), (0, 9), (1, 12), (8, 2), (11, 5)]):
        body = full_body(k.APIS[key].request, version)
        out.append(k.encode_request(key, version, i, body, client_id=f"c{i}"))
    return out


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 100_000])
def test_pipelined_frames_in_any_chunking(chunk: int) -> None:
    frames = _frames()
    stream = b"".join(frames)
    conn = KafkaServerConnection(max_frame_bytes=1 << 20)
    events = []
    for i in range(0, len(stream), chunk):
        conn.receive_data(stream[i:i + chunk])
        events += _drain(conn)
    assert [type(e) for e in events] == [Request] * len(frames)
    for event, frame in zip(events, frames):
        assert (event.header, event.body) == k.decode_request(frame)
    assert conn.buffered_bytes == 0
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_oversize_frame_is_refused_from_its_length_alone() -> None:
    conn = KafkaServerConnection(max_frame_bytes=1000)
    conn.receive_data(struct.pack(">i", 1001) + b"\0" * 6)
    event = conn.next_event()
    assert isinstance(event, ProtocolViolation) and "exceeds" in event.reason
    conn.receive_data(b"\0" * 10_000)  # ignored: the connection is dead
    assert conn.next_event() is event and conn.buffered_bytes == 0


def test_tiny_and_negative_sizes_are_violations() -> None:
    for size in (-1, 0, 9):
        conn = KafkaServerConnection()
        conn.receive_data(struct.pack(">i", size))
        assert isinstance(conn.next_event(), ProtocolViolation)


def test_receive_buffer_is_bounded() -> None:
    conn = KafkaServerConnection(max_frame_bytes=100, max_buffer_bytes=200)
    conn.receive_data(b"\0" * 150)
    conn.receive_data(b"\0" * 100)
    assert isinstance(conn.next_event(), ProtocolViolation)


def test_eof_in_the_middle_of_a_frame() -> None:
    conn = KafkaServerConnection()
    conn.receive_data(_frames()[0][:-1])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ProtocolViolation)


def test_too_new_api_versions_is_answered_in_v0_and_the_connection_stays() -> None:
    conn = KafkaServerConnection()
    payload = struct.pack(">hhi", 18, 9, 5) + b"\x00\x01x" + b"\x00" + b"\x07anything"
    conn.receive_data(struct.pack(">i", len(payload)) + payload)
    conn.receive_data(k.encode_request(18, 3, 6, {"client_software_name": "a",
                                                  "client_software_version": "1"}))
    event = conn.next_event()
    assert isinstance(event, UnsupportedRequest) and not event.close
    assert event.header.correlation_id == 5 and event.header.client_id == "x"
    assert event.response[4:8] == struct.pack(">i", 5)  # header v0
    assert k.decode_body(18, 0, event.response[8:], response=True) == {
        "error_code": k.ErrorCode.UNSUPPORTED_VERSION,
        "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4}]}
    assert k.decode_response(18, 9, event.response) == (5, k.decode_body(
        18, 0, event.response[8:], response=True))
    follow_up = conn.next_event()
    assert isinstance(follow_up, Request) and follow_up.header.correlation_id == 6


def test_unknown_api_key_closes() -> None:
    conn = KafkaServerConnection()
    payload = struct.pack(">hhi", 4, 0, 77) + b"\x00\x02ab" + b"junk"
    conn.receive_data(struct.pack(">i", len(payload)) + payload)
    event = conn.next_event()
    assert isinstance(event, UnsupportedRequest)
    assert event.close and event.response is None and event.header.correlation_id == 77


def test_versions_outside_the_served_range() -> None:
    supported = {**k.ADVERTISED_VERSIONS, k.ApiKey.PRODUCE: (3, 11), k.ApiKey.HEARTBEAT: (1, 4)}
    conn = KafkaServerConnection(supported=supported)
    conn.receive_data(k.encode_request(12, 0, 1, {"group_id": "g"}))
    conn.receive_data(k.encode_request(0, 2, 2, {"acks": 1}))
    heartbeat = conn.next_event()
    assert isinstance(heartbeat, UnsupportedRequest) and not heartbeat.close
    assert k.decode_response(12, 0, heartbeat.response) == (1, {"error_code": 35})
    produce = conn.next_event()  # no top-level error code in Produce: close
    assert isinstance(produce, UnsupportedRequest) and produce.close and produce.response is None
    conn = KafkaServerConnection()
    payload = struct.pack(">hhi", 1, 18, 3) + b"\x00\x00\x00" + b"?" * 40  # Fetch v18
    conn.receive_data(struct.pack(">i", len(payload)) + payload)
    fetch = conn.next_event()
    assert isinstance(fetch, UnsupportedRequest) and fetch.close


def test_malformed_body_is_a_violation_with_the_correlation_id() -> None:
    frame = bytearray(k.encode_request(3, 1, 42, {"topics": [{"name": "abc"}]}))
    frame[-4:-3] = b"\x7f"  # topic name length now runs past the end
    conn = KafkaServerConnection()
    conn.receive_data(bytes(frame))
    event = conn.next_event()
    assert isinstance(event, ProtocolViolation) and event.correlation_id == 42
    assert conn.next_event() is event


def test_records_of_a_frame_in_one_chunk_are_not_copied() -> None:
    records = bytes(range(256)) * 4096  # 1 MiB
    body = {"acks": -1, "topic_data": [{"name": "t", "partition_data": [
        {"index": 0, "records": records}]}]}
    frame = k.encode_request(0, 9, 1, body)
    conn = KafkaServerConnection(max_frame_bytes=2 << 20)
    conn.receive_data(frame)
    event = conn.next_event()
    got = event.body["topic_data"][0]["partition_data"][0]["records"]
    assert got == records and got.obj is frame
    assert event.expects_response
    # split across chunks: one joined copy, same content
    conn.receive_data(frame[:1000])
    conn.receive_data(frame[1000:])
    assert conn.next_event().body == event.body


def test_acks_zero_expects_no_response_and_send_response() -> None:
    conn = KafkaServerConnection()
    conn.receive_data(k.encode_request(0, 3, 8, {"acks": 0}))
    event = conn.next_event()
    assert not event.expects_response
    out = conn.send_response(event.header, {"responses": []})
    assert k.decode_response(0, 3, out) == (8, k.decode_body(0, 3, out[8:], response=True))
    assert b"".join(conn.send_response_buffers(event.header, {"responses": []})) == out
