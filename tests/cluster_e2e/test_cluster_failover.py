"""Three brokers, kill -9 and restart under acks=all load: nothing acknowledged is lost, order holds."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from tidelog.admin import Admin
from tidelog.consumer import Consumer
from tidelog.producer import Producer
from tidelog.records import TopicPartition

pytestmark = pytest.mark.slow

RECORDS = 50_000
PARTITIONS = 6


def _consume_all(bootstrap: str, topic: str, ends: dict[int, int], timeout: float = 60.0) -> dict[int, list]:
    """Every record of every partition up to its end offset: {partition: [(offset, value), ...]}."""
    out: dict[int, list] = defaultdict(list)
    with Consumer(bootstrap, fetch_max_wait_ms=200, request_timeout_ms=5000) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < PARTITIONS:
            assert time.monotonic() < deadline, f"consumed {sum(map(len, out.values()))} records, partitions " \
                                                f"done: {sorted(done)}"
            for r in consumer.poll(0.5, max_records=10_000):
                out[r.partition].append((r.offset, r.value))
            for p in range(PARTITIONS):  # control batches (Raft leader changes) may end a partition
                if p not in done and consumer.position(TopicPartition(topic, p)) >= ends[p]:
                    done.add(p)
    return out


def test_kill_9_and_restart_each_broker_under_acks_all_load(cluster):
    _kill_9_and_restart_each_broker_under_load(cluster)


@pytest.mark.cluster(extra_args=["--raft-transport", "grpc"])
def test_kill_9_and_restart_each_broker_under_acks_all_load_over_the_grpc_carrier(cluster):
    """The same over `--raft-transport grpc` (the TCP carrier is the default, used everywhere else)."""
    _kill_9_and_restart_each_broker_under_load(cluster)


def _kill_9_and_restart_each_broker_under_load(cluster) -> None:
    cluster.wait_healthy()
    admin = Admin(cluster.bootstrap())
    admin.create_topic("orders", PARTITIONS)
    cluster.wait_healthy(["orders"])
    futures = []
    stop_chaos = threading.Event()
    chaos_log: list[str] = []

    def chaos() -> None:
        for node in cluster.ids:
            if stop_chaos.wait(1.0):
                return
            cluster.kill(node)
            chaos_log.append(f"{time.monotonic():.1f} killed {node}")
            if stop_chaos.wait(1.5):
                cluster.restart(node)
                return
            cluster.restart(node)
            chaos_log.append(f"{time.monotonic():.1f} restarted {node}")

    killer = threading.Thread(target=chaos, daemon=True)
    with Producer(cluster.bootstrap(), acks="all", max_in_flight=1, linger_ms=2, batch_size=8192,
                  delivery_timeout_ms=60_000, request_timeout_ms=5_000, retry_backoff_ms=50) as producer:
        killer.start()
        started = time.monotonic()
        for i in range(RECORDS):
            key = b"key-%d" % (i % 500)
            value = b"%d" % i
            future = producer.send("orders", value, key=key)
            futures.append((key, value, future))
            if i % 1000 == 999:
                time.sleep(0.2)  # spread the load over the chaos (about 3 s per broker, 10 s in all)
        producer.flush(90)
        elapsed = time.monotonic() - started
    stop_chaos.set()
    killer.join(30)
    acked: dict[int, list[bytes]] = defaultdict(list)
    failed = 0
    errors: dict[str, int] = defaultdict(int)
    for key, value, future in futures:
        try:
            md = future.result(0)
        except Exception as exc:
            failed += 1
            errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            continue
        acked[md.partition].append(value)
    # Every broker is back: all partitions have leaders again, then read everything.
    for node in cluster.ids:
        if not cluster.alive(node):
            cluster.restart(node)
    cluster.wait_healthy(["orders"], timeout=60)
    ends = admin.list_offsets({TopicPartition("orders", p): "latest" for p in range(PARTITIONS)})
    stored = _consume_all(cluster.bootstrap(), "orders", {tp.partition: off for tp, (off, _) in ends.items()})
    sent_values = {value for _, value, _ in futures}
    total_acked = sum(map(len, acked.values()))
    assert len(chaos_log) == 6, f"the load ended before every broker was killed and restarted: {chaos_log}"
    assert total_acked > RECORDS * 0.9, (f"only {total_acked} of {RECORDS} acknowledged ({failed} failed: "
                                         f"{dict(errors)}) in {elapsed:.1f}s; chaos: {chaos_log}")
    for p in range(PARTITIONS):
        values = [v for _, v in stored[p]]
        offsets = [o for o, _ in stored[p]]
        assert offsets == sorted(set(offsets)), f"partition {p}: offsets repeat or go back"
        assert set(values) <= sent_values, f"partition {p} holds records that were never sent"
        present = set(values)
        missing = [v for v in acked[p] if v not in present]
        assert not missing, f"partition {p}: {len(missing)} acknowledged records lost, e.g. {missing[:5]}"
        # Send order within the partition: first occurrences (a retry may store a record twice) ascend.
        first_seen = []
        seen = set()
        for v in values:
            if v not in seen:
                seen.add(v)
                first_seen.append(int(v))
        acked_set = set(acked[p])
        ordered = [v for v in first_seen if b"%d" % v in acked_set]
        assert ordered == sorted(ordered), f"partition {p}: acknowledged records out of send order"
    admin.close()
