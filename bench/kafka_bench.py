"""Kafka-protocol throughput and latency of one node with confluent-kafka (librdkafka) as the client.

    python bench/kafka_bench.py              # 1,000,000 x 100 B and 200,000 x 1 KiB, then 5,000 msg/s paced
    python bench/kafka_bench.py --quick      # a tenth of the counts, a shorter paced run

The broker runs in a child process (`python -m cluster.kafka`: the broker core with the Kafka listener, as
`tidelog serve --kafka-port` will run it), on a fresh data directory. For each workload: produce with
acks=all (tidelog acknowledges once fsynced, its default) and librdkafka's defaults otherwise, then consume
everything from the beginning (assign, no group). Reports msgs/s and MB/s of record values. A paced run then
produces at a fixed rate with a consumer tailing the topic, and reports p50/p99 of the produce->ack latency
(delivery report) and of the produce->consume latency. Not a test: prints figures (progress on stderr).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.grpc_bench import percentile, progress  # noqa: E402


class Broker:
    """`python -m cluster.kafka` in a child process; stopped by its PID."""

    def __init__(self, data_dir: Path, partitions: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.kafka", "--data-dir", str(data_dir), "--port", "0",
             "--default-partitions", str(partitions), "--exit-on-stdin-eof"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("KAFKA_READY "):
            self.stop()
            raise SystemExit(f"broker did not start: {line!r}")
        self.bootstrap = line.split()[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def produce(bootstrap: str, topic: str, count: int, size: int, args) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": args.linger_ms,
                  "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1 << 20})
    value = os.urandom(size)
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(err)

    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                p.produce(topic, value, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        if i % 50_000 == 0:
            p.poll(0)
            progress("produce", i, count, started)
    left = p.flush(300)
    elapsed = time.perf_counter() - started
    progress("produce", count, count, started)
    print(file=sys.stderr)
    if left or failed:
        raise SystemExit(f"{left} undelivered, {len(failed)} failed (first: {failed[:1]})")
    return elapsed


def consume(bootstrap: str, topic: str, partitions: int, count: int) -> tuple[float, int]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = nbytes = 0
    started = time.perf_counter()
    first = None  # throughput is timed from the first record (consumer start-up is librdkafka's timers)
    deadline = started + 600
    while got < count and time.perf_counter() < deadline:
        for m in c.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None:
                if first is None:
                    first = time.perf_counter()
                got += 1
                nbytes += len(m.value())
        progress("consume", got, count, started)
    elapsed = time.perf_counter() - (first or started)
    print(file=sys.stderr)
    c.close()
    if got < count:
        raise SystemExit(f"consumed {got} of {count}")
    return elapsed, nbytes


def paced(bootstrap: str, topic: str, rate: int, seconds: float, size: int, args) -> dict:
    """Produce `rate` msg/s with a consumer tailing: produce->ack and produce->consume latencies."""
    from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

    count = int(rate * seconds)
    sent_at: dict[int, float] = {}
    consumed_lat: list[float] = []
    stop = threading.Event()
    ready = threading.Event()

    def tail() -> None:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-tail", "enable.auto.commit": False,
                      "fetch.wait.max.ms": 100})
        c.assign([TopicPartition(topic, p, OFFSET_END) for p in range(args.partitions)])
        c.consume(timeout=1.0)
        ready.set()
        while not stop.is_set() and len(consumed_lat) < count:
            m = c.poll(0.1)  # (consume(n) would wait for n messages or its timeout: batching latency)
            if m is not None and m.error() is None:
                (seq,) = struct.unpack_from(">q", m.value())
                at = sent_at.get(seq)
                if at is not None:
                    consumed_lat.append(time.perf_counter() - at)
        c.close()

    consumer = threading.Thread(target=tail, daemon=True)
    consumer.start()
    ready.wait(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": args.linger_ms})
    acked: list[float] = []
    padding = os.urandom(max(0, size - 8))

    def on_delivery(err, msg):
        if err is None:
            (seq,) = struct.unpack_from(">q", msg.value())
            acked.append(time.perf_counter() - sent_at[seq])

    started = time.perf_counter()
    for i in range(count):
        due = started + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        sent_at[i] = time.perf_counter()
        p.produce(topic, struct.pack(">q", i) + padding, on_delivery=on_delivery)
        p.poll(0)
        if i % 5000 == 0:
            progress("paced produce", i, count, started)
    p.flush(60)
    elapsed = time.perf_counter() - started
    print(file=sys.stderr)
    deadline = time.perf_counter() + 30
    while len(consumed_lat) < count and time.perf_counter() < deadline:
        time.sleep(0.05)
    stop.set()
    consumer.join(10)
    return {"rate": count / elapsed, "count": count, "acked": len(acked), "consumed": len(consumed_lat),
            "ack_p50": percentile(acked, 0.5) * 1000, "ack_p99": percentile(acked, 0.99) * 1000,
            "e2e_p50": percentile(consumed_lat, 0.5) * 1000, "e2e_p99": percentile(consumed_lat, 0.99) * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the counts, 4 s paced")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--linger-ms", type=float, default=5.0, help="librdkafka linger.ms (default 5, its own)")
    parser.add_argument("--rate", type=int, default=5000, help="paced run rate, msg/s")
    parser.add_argument("--paced-seconds", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    try:
        import confluent_kafka
    except ImportError:
        print("error: confluent-kafka is not installed (pip install confluent-kafka)", file=sys.stderr)
        return 1
    scale = 10 if args.quick else 1
    workloads = [("100B", 1_000_000 // scale, 100), ("1KiB", 200_000 // scale, 1024)]
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})")
    print(f"partitions={args.partitions} acks=all linger.ms={args.linger_ms} (tidelog fsyncs before acking)")
    data = Path(tempfile.mkdtemp(prefix="tidelog-kafka-bench-"))
    broker = Broker(data / "data", args.partitions)
    rows = []
    try:
        for name, count, size in workloads:
            topic = f"bench-{name}"
            print(f"{name}: {count:,} x {size} B", file=sys.stderr)
            create_topic(broker.bootstrap, topic, args.partitions)
            p_s = produce(broker.bootstrap, topic, count, size, args)
            c_s, nbytes = consume(broker.bootstrap, topic, args.partitions, count)
            assert nbytes == count * size
            rows.append((f"{count:,} x {size} B", count / p_s, count * size / 1e6 / p_s, count / c_s,
                         count * size / 1e6 / c_s))
        create_topic(broker.bootstrap, "bench-paced", args.partitions)
        lat = paced(broker.bootstrap, "bench-paced", args.rate, args.paced_seconds / (4 if args.quick else 1),
                    100, args)
    finally:
        broker.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    print(f"{'workload':<22}{'produce msg/s':>15}{'produce MB/s':>14}{'consume msg/s':>15}{'consume MB/s':>14}")
    for w, pm, pmb, cm, cmb in rows:
        print(f"{w:<22}{pm:>15,.0f}{pmb:>14,.1f}{cm:>15,.0f}{cmb:>14,.1f}")
    print(f"paced {lat['rate']:,.0f} msg/s x 100 B ({lat['acked']:,} acked, {lat['consumed']:,} consumed): "
          f"produce->ack p50 {lat['ack_p50']:.1f} ms, p99 {lat['ack_p99']:.1f} ms; "
          f"produce->consume p50 {lat['e2e_p50']:.1f} ms, p99 {lat['e2e_p99']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
