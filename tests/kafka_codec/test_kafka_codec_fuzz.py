"""Hostile input: random and mutated bytes give KafkaProtocolError (decoder) or events
(connection), never another exception, and absurd lengths fail before allocating."""

from __future__ import annotations

import struct
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proto.kafka as k
from proto.kafka import NEED_DATA, KafkaServerConnection, ProtocolViolation

from .bodies import all_versions, full_body

CASES = [(api.key, v, r) for api, v, r in all_versions()]
WIRES = {case: k.encode_body(case[0], case[1], full_body(
    k.APIS[case[0]].response if case[2] else k.APIS[case[0]].request, case[1]), response=case[2])
    for case in CASES}


def _decode(case: tuple, data: bytes) -> None:
    try:
        k.decode_body(case[0], case[1], data, response=case[2])
    except k.KafkaProtocolError:
        pass


@settings(max_examples=1500)
@given(st.sampled_from(CASES), st.binary(max_size=300))
def test_random_bytes(case: tuple, data: bytes) -> None:
    _decode(case, data)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[tuple, bytes]:
    case = draw(st.sampled_from(CASES))
    data = bytearray(WIRES[case])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "cut", "insert", "big"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at:at + 4] = draw(st.sampled_from(
                [b"\x7f\xff\xff\xff", b"\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80\x01",
                 b"\xff\xff\xff\xfe"]))
    return case, bytes(data)


@settings(max_examples=3000)
@given(mutated())
def test_mutated_bodies(sample: tuple) -> None:
    _decode(*sample)


def test_absurd_lengths_fail_fast_without_allocating() -> None:
    # every 4-byte window of every sample body set to a huge int32 / uvarint length
    tracemalloc.start()
    try:
        worst = 0
        started = time.perf_counter()
        for case, wire in WIRES.items():
            for at in range(0, len(wire), 3):
                for huge in (b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff\x07"):
                    tracemalloc.reset_peak()
                    _decode(case, wire[:at] + huge + wire[at + len(huge):])
                    worst = max(worst, tracemalloc.get_traced_memory()[1])
        assert worst < 256 * 1024, worst
        assert time.perf_counter() - started < 30
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("payload", [
    struct.pack(">hhi", 3, 1, 1) + b"\x00\x00" + b"\x7f\xff\xff\xff",  # 2 G topics
    struct.pack(">hhi", 3, 9, 1) + b"\x00\x00\x00" + b"\xff\xff\xff\xff\x07",  # compact
    struct.pack(">hhi", 0, 3, 1) + b"\x00\x00\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x01"
    + b"\x00\x01t\x00\x00\x00\x01\x00\x00\x00\x00\x7f\xff\xff\xff",  # 2 GiB records
])
def test_two_gib_claims(payload: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(k.KafkaProtocolError):
            k.decode_request_payload(payload)
        assert tracemalloc.get_traced_memory()[1] < 64 * 1024
    finally:
        tracemalloc.stop()


FRAMES = [k.encode_request(key, v, i, full_body(k.APIS[key].request, v))
          for i, (key, v, r) in enumerate(CASES) if not r]


@settings(max_examples=600)
@given(st.lists(st.sampled_from(FRAMES), min_size=1, max_size=4), st.data())
def test_connection_never_raises(frames: list[bytes], data: st.DataObject) -> None:
    stream = bytearray(b"".join(frames))
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(stream) - 1))
        stream[at] = data.draw(st.integers(0, 255))
    conn = KafkaServerConnection(max_frame_bytes=4096)
    pos = 0
    for _ in range(len(stream) + 2):  # bounded
        if pos >= len(stream):
            conn.receive_data(b"")
        else:
            step = data.draw(st.integers(1, 64))
            conn.receive_data(bytes(stream[pos:pos + step]))
            pos += step
        for _ in range(len(frames) + 2):
            event = conn.next_event()
            assert isinstance(event, (k.Request, k.UnsupportedRequest, ProtocolViolation,
                                      k.ConnectionClosed)) or event is NEED_DATA
            if event is NEED_DATA or not isinstance(event, (k.Request, k.UnsupportedRequest)):
                break
        if isinstance(event, (ProtocolViolation, k.ConnectionClosed)):
            return
    assert conn.buffered_bytes <= conn.max_buffer_bytes
