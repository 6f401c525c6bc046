"""Produce/consume throughput of one node through the gRPC client (`tidelog serve` in a child process).

    python bench/grpc_bench.py                      # 1,000,000 x 100 B and 200,000 x 1 KiB
    python bench/grpc_bench.py --quick              # a tenth of that

For each workload: produce with acks=all (fsync before acknowledging, the default), then consume everything
from the beginning. Reports msgs/s and MB/s (record values), and per-batch produce latency: p50/p99 from
the request's write to its acknowledgement ("ack") and from the batch's first record to its acknowledgement
("age": adds linger and queueing). The throughput runs saturate the broker, so their latencies are mostly
queueing; a last run produces at a fixed rate (--paced-rate) to show latency when the broker keeps up.
Not a test: prints figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tidelog import Admin, Consumer, Producer  # noqa: E402
from tidelog.testing import ServeProcess  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(1e-9, time.perf_counter() - started)
    print(f"\r  {label}: {done:>9,}/{total:,} ({rate:,.0f} msg/s)", end="", file=sys.stderr, flush=True)


def run_paced(bootstrap: str, count: int, size: int, rate: int, args) -> dict:
    """Produce at a fixed rate below saturation: the latency a producer sees when the broker keeps up."""
    topic = "bench-paced"
    with Admin(bootstrap) as admin:
        admin.create_topic(topic, args.partitions)
    value = os.urandom(size)
    with Producer(bootstrap, acks="all", linger_ms=args.linger_ms, batch_size=args.batch_size,
                  max_request_size=args.max_request_size, max_in_flight=args.max_in_flight) as producer:
        started = time.perf_counter()
        tick = 1000  # records per pacing step
        for i in range(0, count, tick):
            for _ in range(tick):
                producer.send(topic, value)
            ahead = started + (i + tick) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        producer.flush(120)
        elapsed = time.perf_counter() - started
        latencies = list(producer.batch_latencies)
    acks = [a for a, _ in latencies]
    ages = [b for _, b in latencies]
    return {
        "workload": f"paced {rate:,}/s x {size} B",
        "produce_msgs": count / elapsed,
        "produce_mb": count * size / 1e6 / elapsed,
        "consume_msgs": float("nan"),
        "consume_mb": float("nan"),
        "batches": len(latencies),
        "ack_p50_ms": percentile(acks, 0.50) * 1000,
        "ack_p99_ms": percentile(acks, 0.99) * 1000,
        "age_p50_ms": percentile(ages, 0.50) * 1000,
        "age_p99_ms": percentile(ages, 0.99) * 1000,
    }


def run_workload(bootstrap: str, name: str, count: int, size: int, args) -> dict:
    topic = f"bench-{name}"
    with Admin(bootstrap) as admin:
        admin.create_topic(topic, args.partitions)
    value = os.urandom(size)
    producer = Producer(bootstrap, acks="all", linger_ms=args.linger_ms, batch_size=args.batch_size,
                        max_request_size=args.max_request_size, max_in_flight=args.max_in_flight,
                        compression=args.compression, buffer_memory=256 * 1024 * 1024)
    send = producer.send
    started = time.perf_counter()
    step = max(1, count // 20)
    for i in range(count):
        send(topic, value)
        if i % step == 0:
            progress("produce", i, count, started)
    producer.flush(600)
    produce_s = time.perf_counter() - started
    progress("produce", count, count, started)
    print(file=sys.stderr)
    latencies = list(producer.batch_latencies)
    producer.close()

    consumed = 0
    nbytes = 0
    started = time.perf_counter()
    with Consumer(bootstrap, topics=[topic], auto_offset_reset="earliest",
                  max_partition_fetch_bytes=args.fetch_bytes) as consumer:
        deadline = time.monotonic() + 600
        while consumed < count and time.monotonic() < deadline:
            records = consumer.poll(1.0, max_records=1_000_000)
            consumed += len(records)
            for r in records:
                nbytes += len(r.value)
            progress("consume", consumed, count, started)
    consume_s = time.perf_counter() - started
    print(file=sys.stderr)
    if consumed != count:
        raise SystemExit(f"consumed {consumed} of {count} records")
    mb = count * size / 1e6
    acks = [a for a, _ in latencies]
    ages = [b for _, b in latencies]
    return {
        "workload": f"{count:,} x {size} B",
        "produce_msgs": count / produce_s,
        "produce_mb": mb / produce_s,
        "consume_msgs": count / consume_s,
        "consume_mb": mb / consume_s,
        "batches": len(latencies),
        "ack_p50_ms": percentile(acks, 0.50) * 1000,
        "ack_p99_ms": percentile(acks, 0.99) * 1000,
        "age_p50_ms": percentile(ages, 0.50) * 1000,
        "age_p99_ms": percentile(ages, 0.99) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the records")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256 * 1024)
    parser.add_argument("--linger-ms", type=float, default=5)
    parser.add_argument("--max-request-size", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--max-in-flight", type=int, default=5)
    parser.add_argument("--fetch-bytes", type=int, default=1024 * 1024, help="max bytes per partition fetch")
    parser.add_argument("--compression", default="none")
    parser.add_argument("--paced-rate", type=int, default=20_000, help="records/s of the paced latency run")
    parser.add_argument("--paced-seconds", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory (removed afterwards)")
    args = parser.parse_args()

    scale = 10 if args.quick else 1
    workloads = [("100b", 1_000_000 // scale, 100), ("1kib", 200_000 // scale, 1024)]
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tidelog-bench-"))
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"data dir {data_dir}", file=sys.stderr)
    print(f"settings: partitions={args.partitions} batch_size={args.batch_size} linger_ms={args.linger_ms} "
          f"max_request_size={args.max_request_size} max_in_flight={args.max_in_flight} "
          f"compression={args.compression} acks=all (fsync before ack)", file=sys.stderr)
    results = []
    try:
        with ServeProcess(data_dir / "node") as server:
            for name, count, size in workloads:
                print(f"{count:,} records of {size} B", file=sys.stderr)
                results.append(run_workload(server.bootstrap, name, count, size, args))
            print(f"paced: {args.paced_rate:,} records/s of 100 B for {args.paced_seconds}s", file=sys.stderr)
            results.append(run_paced(server.bootstrap, args.paced_rate * args.paced_seconds // scale, 100,
                                     args.paced_rate, args))
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    header = (f"{'workload':<20} {'produce msg/s':>14} {'MB/s':>7} {'consume msg/s':>14} {'MB/s':>7} "
              f"{'batches':>8} {'ack p50':>8} {'ack p99':>8} {'age p50':>8} {'age p99':>8}")
    print(header)
    for r in results:
        print(f"{r['workload']:<20} {r['produce_msgs']:>14,.0f} {r['produce_mb']:>7.1f} {r['consume_msgs']:>14,.0f} "
              f"{r['consume_mb']:>7.1f} {r['batches']:>8} {r['ack_p50_ms']:>6.1f}ms {r['ack_p99_ms']:>6.1f}ms "
              f"{r['age_p50_ms']:>6.1f}ms {r['age_p99_ms']:>6.1f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
