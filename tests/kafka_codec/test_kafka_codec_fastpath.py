"""Big records are never copied by the codec more than once (and not at all as buffers)."""

from __future__ import annotations

import tracemalloc

import proto.kafka as k

MIB = 1 << 20
RECORDS = bytes(range(256)) * (MIB // 256)


def _produce(records: object) -> dict:
    return {"acks": -1, "timeout_ms": 30_000, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": records}]}]}


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_produce_request_records_travel_by_reference() -> None:
    for version in (3, 9, 11):
        parts = k.encode_request_buffers(0, version, 1, _produce(RECORDS))
        assert any(p is RECORDS for p in parts)
        frame = b"".join(parts)
        assert frame == k.encode_request(0, version, 1, _produce(RECORDS))
        _, body = k.decode_request(frame)
        got = body["topic_data"][0]["partition_data"][0]["records"]
        assert got.obj is frame and got == RECORDS


def test_one_copy_at_most() -> None:
    frame = k.encode_request(0, 9, 1, _produce(RECORDS))
    # encode to bytes: the joined frame is the only copy of the records
    assert _peak(lambda: k.encode_request(0, 9, 1, _produce(RECORDS))) < MIB + 256 * 1024
    # decode: no copy at all
    assert _peak(lambda: k.decode_request(frame)) < 64 * 1024


def test_fetch_response_accepts_memoryview_chunks() -> None:
    chunks = [memoryview(RECORDS)[:300_000], memoryview(RECORDS)[300_000:]]
    body = {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 0, "high_watermark": 10, "records": chunks}]}]}
    for version in (4, 11, 12):
        parts = k.encode_response_buffers(1, version, 5, body)
        assert any(p is chunks[0] for p in parts) and any(p is chunks[1] for p in parts)
        assert _peak(lambda: k.encode_response_buffers(1, version, 5, body)) < 64 * 1024
        frame = b"".join(parts)
        _, decoded = k.decode_response(1, version, frame)
        assert decoded["responses"][0]["partitions"][0]["records"] == RECORDS
    # small payloads are simply inlined
    small = {"responses": [{"topic": "t", "partitions": [{"records": [b"ab", b"cd"]}]}]}
    assert len(k.encode_response_buffers(1, 4, 5, small)) == 2  # size+header, body
