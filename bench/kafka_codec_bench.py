"""Codec throughput: encode and decode of Metadata / Produce / Fetch messages per second.

Run: python -m bench.kafka_codec_bench   (not collected by pytest; figures are
machine-dependent and belong in docs/benchmarks.md, not in assertions)
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

import proto.kafka as k


def _rate(fn: Callable[[], object], min_seconds: float = 0.5) -> float:
    n = 0
    started = time.perf_counter()
    while True:
        for _ in range(50):
            fn()
        n += 50
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return n / elapsed


def metadata_response() -> dict:
    return {
        "brokers": [{"node_id": i, "host": f"broker-{i}.local", "port": 9092, "rack": None}
                    for i in range(3)],
        "cluster_id": "tidelog-cluster", "controller_id": 0,
        "topics": [{"name": f"topic-{t}", "topic_id": uuid.UUID(int=t + 1), "partitions": [
            {"partition_index": p, "leader_id": p % 3, "leader_epoch": 4,
             "replica_nodes": [0, 1, 2], "isr_nodes": [0, 1, 2], "offline_replicas": []}
            for p in range(6)]} for t in range(10)],
    }


def produce_request(size: int) -> dict:
    return {"acks": -1, "timeout_ms": 30000, "topic_data": [
        {"name": "events", "partition_data": [{"index": 0, "records": b"r" * size}]}]}


def fetch_response(size: int) -> dict:
    return {"session_id": 0, "responses": [{"topic": "events", "partitions": [
        {"partition_index": p, "high_watermark": 1000, "last_stable_offset": 1000,
         "log_start_offset": 0, "records": [memoryview(b"f" * size)]} for p in range(4)]}]}


def fetch_request() -> dict:
    return {"max_wait_ms": 500, "min_bytes": 1, "max_bytes": 50 << 20, "isolation_level": 0,
            "topics": [{"topic": "events", "partitions": [
                {"partition": p, "fetch_offset": 1000, "partition_max_bytes": 1 << 20}
                for p in range(4)]}]}


def main() -> None:
    cases = [
        ("Metadata v12 response, 10 topics x 6 partitions", k.ApiKey.METADATA, 12, True,
         metadata_response()),
        ("Metadata v12 request, 10 topics", k.ApiKey.METADATA, 12, False,
         {"topics": [{"name": f"topic-{t}"} for t in range(10)]}),
        ("Produce v9 request, 16 KiB records", k.ApiKey.PRODUCE, 9, False, produce_request(16384)),
        ("Produce v9 request, 1 MiB records", k.ApiKey.PRODUCE, 9, False, produce_request(1 << 20)),
        ("Fetch v12 request, 4 partitions", k.ApiKey.FETCH, 12, False, fetch_request()),
        ("Fetch v12 response, 4 x 64 KiB records", k.ApiKey.FETCH, 12, True,
         fetch_response(65536)),
    ]
    print(f"{'message':52} {'encode/s':>10} {'buffers/s':>10} {'decode/s':>10}")
    for name, key, version, response, body in cases:
        if response:
            def enc_bytes() -> bytes:
                return k.encode_response(key, version, 1, body)

            def enc_bufs() -> list:
                return k.encode_response_buffers(key, version, 1, body)
            frame = enc_bytes()

            def dec() -> object:
                return k.decode_response(key, version, frame)
        else:
            def enc_bytes() -> bytes:
                return k.encode_request(key, version, 1, body)

            def enc_bufs() -> list:
                return k.encode_request_buffers(key, version, 1, body)
            frame = enc_bytes()

            def dec() -> object:
                return k.decode_request(frame)
        print(f"{name:52} {_rate(enc_bytes):>10,.0f} {_rate(enc_bufs):>10,.0f} "
              f"{_rate(dec):>10,.0f}")


if __name__ == "__main__":
    main()
