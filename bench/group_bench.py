"""Consumer-group benchmark: rebalance time and group consumption throughput.

    python bench/group_bench.py [--records 300000] [--members 1,3,10] [--clients tidelog,confluent]

Starts one group node (tests/groups/group_node.py: broker + Kafka listener + gRPC + group coordinator, with
group.initial.rebalance.delay.ms=0 so the figures show our own cost, not Kafka's 3 s wait) in a child process.

1. Rebalance time: N members (threads of this process) start at once; time until the coordinator reports
   the group Stable with N members owning all 12 partitions of the topic (GroupAdmin.describe_group, every
   20 ms), for N in --members, per client (tidelog GroupConsumer over gRPC, confluent-kafka, kafka-python).
2. Throughput: --records records of 100 bytes on a 6-partition topic, consumed by a 3-member group, each
   member its own process; records/s = records seen / (last record seen - first record seen, over all
   members; duplicates after a rebalance count).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "groups"))

SESSION_MS = 10_000


# ----------------------------------------------------------------------------------------- members

def make_member(client: str, node, group: str, topic: str, name: str):
    """-> (poll_once(), close()) for one member."""
    if client == "tidelog":
        from tidelog.group_consumer import GroupConsumer

        c = GroupConsumer(node.grpc, group, [topic], client_id=name, session_timeout_ms=SESSION_MS,
                          heartbeat_interval_ms=1000)
        return (lambda: len(c.poll(0.1))), c.close
    if client == "confluent":
        from confluent_kafka import Consumer

        c = Consumer({"bootstrap.servers": node.kafka, "group.id": group, "client.id": name,
                      "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_MS,
                      "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 100})
        c.subscribe([topic])
        return (lambda: len([m for m in c.consume(1000, 0.1) if m.error() is None])), c.close
    if client == "kafka-python":
        from kafka import KafkaConsumer

        c = KafkaConsumer(topic, bootstrap_servers=node.kafka, group_id=group, client_id=name,
                          auto_offset_reset="earliest", session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000,
                          fetch_max_wait_ms=100)
        return (lambda: sum(len(v) for v in c.poll(timeout_ms=100).values())), c.close
    raise ValueError(client)


def rebalance_time(client: str, node, members: int, topic: str, partitions: int) -> float:
    from groups_harness import stable_assignment

    group = f"rb-{client}-{members}-{time.monotonic_ns()}"
    stop = threading.Event()
    errors: list[BaseException] = []
    closers = []

    def run(i: int) -> None:
        try:
            poll, close = make_member(client, node, group, topic, f"{client}-{i}")
            closers.append(close)
            while not stop.is_set():
                poll()
        except BaseException as exc:
            errors.append(exc)

    wanted = {(topic, p) for p in range(partitions)}
    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(members)]
    for t in threads:
        t.start()
    took = None
    while time.monotonic() - started < 120 and not errors:
        if stable_assignment(node.grpc, group, members, wanted):
            took = time.monotonic() - started
            break
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(30)
    for close in closers:
        try:
            close()
        except Exception:
            pass
    if errors:
        raise errors[0]
    if took is None:
        raise RuntimeError(f"{client}: {members} members never settled")
    return took


# ----------------------------------------------------------------------------------------- throughput

def member_process(args) -> int:
    """Child mode: consume until stdin closes; report (count, first, last record time) as a JSON line every
    0.2 s of progress."""
    from types import SimpleNamespace

    node = SimpleNamespace(grpc=args.grpc, kafka=args.kafka)
    poll, close = make_member(args.member, node, args.group, args.topic, args.name)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    count = 0
    first = last = None
    reported, reported_count = 0.0, 0
    while not done.is_set():
        n = poll()
        now = time.time()
        if n:
            count += n
            first = first or now
            last = now
        if count != reported_count and (now - reported > 0.2 or not n):
            reported, reported_count = now, count
            print(json.dumps({"count": count, "first": first, "last": last}), flush=True)
    print(json.dumps({"count": count, "first": first, "last": last}), flush=True)
    close()
    return 0


def throughput(client: str, node, topic: str, expected: int) -> tuple[float, int]:
    """3 member processes; stop them once together they have seen `expected` records (or after 300 s)."""
    group = f"tp-{client}-{time.monotonic_ns()}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, __file__, "--member", client, "--grpc", node.grpc, "--kafka",
                               node.kafka, "--group", group, "--topic", topic, "--name", f"{client}-{i}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT) for i in range(3)]
    latest: list[dict] = [{"count": 0, "first": None, "last": None} for _ in procs]

    def read(i: int) -> None:
        for line in procs[i].stdout:
            latest[i] = json.loads(line)

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(3)]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 300
    while sum(x["count"] for x in latest) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in procs:
        proc.stdin.close()
    for proc, r in zip(procs, readers):
        proc.wait(60)
        r.join(10)
    total = sum(x["count"] for x in latest)
    span = max(x["last"] for x in latest if x["last"]) - min(x["first"] for x in latest if x["first"])
    return total / span, total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=300_000)
    p.add_argument("--members", default="1,3,10")
    p.add_argument("--clients", default="tidelog,confluent,kafka-python")
    p.add_argument("--member", help=argparse.SUPPRESS)
    p.add_argument("--grpc", help=argparse.SUPPRESS)
    p.add_argument("--kafka", help=argparse.SUPPRESS)
    p.add_argument("--group", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.member:
        return member_process(args)

    from groups_harness import GroupNode, create_topic

    clients = args.clients.split(",")
    with tempfile.TemporaryDirectory(prefix="group-bench-") as tmp:
        node = GroupNode(Path(tmp) / "data", initial_delay_ms=0, min_session_ms=1000).start()
        try:
            create_topic(node.grpc, "rebalance", 12)
            print("rebalance time (s): N members start at once -> group Stable, all 12 partitions owned")
            print(f"{'client':<14}" + "".join(f"{'N=' + n:>10}" for n in args.members.split(",")))
            for client in clients:
                row = [rebalance_time(client, node, int(n), "rebalance", 12) for n in args.members.split(",")]
                print(f"{client:<14}" + "".join(f"{t:>10.3f}" for t in row), flush=True)

            create_topic(node.grpc, "throughput", 6)
            from tidelog.producer import Producer

            value = b"x" * 100
            t0 = time.monotonic()
            with Producer(node.grpc, linger_ms=5, batch_size=256 * 1024) as producer:
                for i in range(args.records):
                    producer.send("throughput", value, partition=i % 6)
                producer.flush(300)
            print(f"\nproduced {args.records} records of 100 B in {time.monotonic() - t0:.1f}s")
            print("3-member group on 6 partitions, each member a process:")
            for client in clients:
                rate, total = throughput(client, node, "throughput", args.records)
                print(f"{client:<14}{rate:>12,.0f} records/s  ({total} records consumed)", flush=True)
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
