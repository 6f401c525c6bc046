"""aiokafka, confluent-kafka (idempotent) and kcat against the three-node cluster: keyed records (one codec per
client), the leader of partition 0 killed (SIGKILL) mid-produce, nothing acknowledged lost, and consumption by
offset afterwards (the same client, assign + seek) returns everything. kafka-python's counterpart is in
test_cluster_kafka_clients.py.

Checks per client: every acknowledged record is stored in the partition it was acknowledged for, nothing is
stored that was not sent, a key stays on one partition, and records of a partition are in send order. The
idempotent producers (confluent-kafka with enable.idempotence, kcat with it too) also store each record exactly
once, so there are no duplicates and no gaps."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time

import pytest


pytestmark = [pytest.mark.slow, pytest.mark.cluster(extra_args=["--default-partitions", "3"])]

PARTITIONS = 3
RECORDS = 2000
KILL_AT = 700
KEYS = 37


def _setup(cluster, topic: str) -> int:
    """Create the topic (RF 3); -> the broker leading partition 0 (the victim)."""
    from tidelog import Admin

    cluster.wait_healthy()
    with Admin(cluster.bootstrap()) as admin:
        admin.create_topic(topic, PARTITIONS, replication_factor=3)
    cluster.wait_healthy([topic])
    return cluster.leaders(1, topic)[0]


def _after_kill(cluster, victim: int, topic: str) -> list[int]:
    survivors = [n for n in cluster.ids if n != victim]
    cluster.wait_healthy([topic], nodes=survivors, timeout=30)
    assert victim not in cluster.leaders(survivors[0], topic).values()
    return survivors


def _check(acked: dict[bytes, int], stored: dict[int, list[tuple[int, bytes, bytes]]], sent: set[bytes], *,
           exactly_once: bool, sent_order: dict[bytes, int]) -> None:
    """acked: value -> partition; stored: partition -> [(offset, key, value)] in offset order."""
    partition_of_key: dict[bytes, int] = {}
    for p, records in stored.items():
        values = [v for _, _, v in records]
        assert set(values) <= sent, f"partition {p} holds records that were never sent"
        for _, key, _ in records:
            assert partition_of_key.setdefault(key, p) == p, f"key {key!r} on two partitions"
        present = set(values)
        lost = [v for v, ap in acked.items() if ap == p and v not in present]
        assert not lost, f"partition {p}: {len(lost)} acknowledged records lost, e.g. {lost[:5]}"
        misplaced = [v for v in values if v in acked and acked[v] != p]
        assert not misplaced, f"partition {p}: records acknowledged for another partition: {misplaced[:5]}"
        first = list(dict.fromkeys(values))
        order = [sent_order[v] for v in first]
        assert order == sorted(order), f"partition {p}: records out of send order"
        if exactly_once:
            assert len(values) == len(first), f"partition {p}: {len(values) - len(first)} duplicates"
            assert [v for v in first if v in acked] == sorted((v for v in acked if acked[v] == p),
                                                                key=sent_order.__getitem__), "gaps"


def _records() -> list[tuple[bytes, bytes]]:
    return [(b"k%d" % (i % KEYS), b"%d" % i) for i in range(RECORDS)]


def _killer(cluster, victim: int, progress, at: int) -> threading.Thread:
    """Kill `victim` once progress() reaches `at` (bounded wait)."""
    def run() -> None:
        deadline = time.monotonic() + 60
        while progress() < at and time.monotonic() < deadline:
            time.sleep(0.005)
        cluster.kill(victim)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------------------------------------ aiokafka

def test_aiokafka_leader_killed_mid_produce(cluster):
    pytest.importorskip("aiokafka")
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = "ak"
    victim = _setup(cluster, topic)
    records = _records()
    acked: dict[bytes, int] = {}
    state = {"done": 0}

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.kafka_bootstrap(), acks="all",
                                    compression_type="gzip", linger_ms=5, request_timeout_ms=5_000,
                                    retry_backoff_ms=100, metadata_max_age_ms=1_000)
        await producer.start()
        try:
            pending = []
            for i, (key, value) in enumerate(records):
                pending.append((value, await producer.send(topic, value, key=key)))
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
                    state["done"] = i + 1
            for value, future in pending:
                try:
                    md = await asyncio.wait_for(future, 60)
                except Exception:
                    continue
                acked[value] = md.partition
        finally:
            await producer.stop()

    killer = _killer(cluster, victim, lambda: state["done"], KILL_AT)
    asyncio.run(asyncio.wait_for(produce(), 120))
    killer.join(70)
    assert len(acked) >= RECORDS * 0.9, f"only {len(acked)} of {RECORDS} acknowledged"
    _after_kill(cluster, victim, topic)

    async def consume() -> dict[int, list]:
        consumer = AIOKafkaConsumer(bootstrap_servers=cluster.kafka_bootstrap(), enable_auto_commit=False,
                                    request_timeout_ms=10_000)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            stored: dict[int, list] = {p: [] for p in range(PARTITIONS)}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps)):
                    break
                for tp, ms in (await consumer.getmany(timeout_ms=500)).items():
                    stored[tp.partition] += [(m.offset, m.key, m.value) for m in ms]
            # Replay by offset: from the middle of partition 1, the same records again.
            mid = stored[1][len(stored[1]) // 2][0]
            consumer.seek(tps[1], mid)
            replay = []
            while len(replay) < len([r for r in stored[1] if r[0] >= mid]) and time.monotonic() < deadline:
                replay += [(m.offset, m.key, m.value)
                           for m in (await consumer.getmany(tps[1], timeout_ms=500)).get(tps[1], [])]
            assert replay == [r for r in stored[1] if r[0] >= mid]
            return stored
        finally:
            await consumer.stop()

    stored = asyncio.run(asyncio.wait_for(consume(), 90))
    _check(acked, stored, {v for _, v in records}, exactly_once=False,
           sent_order={v: i for i, (_, v) in enumerate(records)})


# ------------------------------------------------------------------------------------------ confluent-kafka

def test_confluent_idempotent_producer_leader_killed_mid_produce(cluster):
    """enable.idempotence with forced retries (short request timeout, the leader killed): each record stored
    exactly once, in order, no gaps; consumption by offset afterwards returns everything."""
    confluent_kafka = pytest.importorskip("confluent_kafka")

    topic = "ck"
    victim = _setup(cluster, topic)
    records = _records()
    acked: dict[bytes, int] = {}
    errors: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked[msg.value()] = msg.partition()

    producer = confluent_kafka.Producer({
        "bootstrap.servers": cluster.kafka_bootstrap(), "enable.idempotence": True, "compression.type": "zstd",
        "linger.ms": 5, "request.timeout.ms": 3000, "message.timeout.ms": 90_000, "retry.backoff.ms": 100,
        "topic.metadata.refresh.interval.ms": 1000, "max.in.flight.requests.per.connection": 5})
    killed = False
    for i, (key, value) in enumerate(records):
        if i == KILL_AT:
            producer.flush(30)
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i == KILL_AT + 50 and not killed:
            cluster.kill(victim)  # with 50 records in flight to it
            killed = True
        if i % 100 == 99:
            producer.poll(0.01)
    assert producer.flush(120) == 0, "records still undelivered"
    assert not errors, f"{len(errors)} deliveries failed: {errors[:3]}"
    assert len(acked) == RECORDS
    _after_kill(cluster, victim, topic)

    consumer = confluent_kafka.Consumer({"bootstrap.servers": cluster.kafka_bootstrap(), "group.id": "ck-reader",
                                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        stored: dict[int, list] = {p: [] for p in range(PARTITIONS)}
        consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in range(PARTITIONS)])
        eof: set[int] = set()
        deadline = time.monotonic() + 45
        while len(eof) < PARTITIONS and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is not None:
                    if m.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                    continue
                stored[m.partition()].append((m.offset(), m.key(), m.value()))
        # By offset: re-read partition 2 from one of its records.
        mid = stored[2][len(stored[2]) // 3][0]
        consumer.assign([confluent_kafka.TopicPartition(topic, 2, mid)])
        replay: list = []
        want = [r for r in stored[2] if r[0] >= mid]
        while len(replay) < len(want) and time.monotonic() < deadline:
            replay += [(m.offset(), m.key(), m.value()) for m in consumer.consume(500, 0.5) if m.error() is None]
        assert replay == want
    finally:
        consumer.close()
    _check(acked, stored, {v for _, v in records}, exactly_once=True,
           sent_order={v: i for i, (_, v) in enumerate(records)})


# ------------------------------------------------------------------------------------------------------ kcat

KCAT = shutil.which("kcat")


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed")
def test_kcat_leader_killed_mid_produce(cluster):
    """kcat produces keyed lines from its stdin (acks=all, idempotent, snappy) while the leader of partition 0
    is killed; kcat reports only failures (and exits 1 on any), so: it exits 0 with no failure reported, and
    the records consumed by offset afterwards are exactly the lines sent, each once."""
    topic = "kc"
    victim = _setup(cluster, topic)
    records = _records()
    proc = subprocess.Popen(
        [KCAT, "-P", "-b", cluster.kafka_bootstrap(), "-t", topic, "-K", "\t", "-z", "snappy",
         "-X", "acks=all", "-X", "enable.idempotence=true", "-X", "linger.ms=5", "-X", "message.timeout.ms=90000",
         "-X", "request.timeout.ms=3000", "-X", "topic.metadata.refresh.interval.ms=1000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for i in range(0, RECORDS, 100):
            proc.stdin.write(b"".join(b"%s\t%s\n" % r for r in records[i:i + 100]))
            proc.stdin.flush()
            if i == KILL_AT:
                time.sleep(0.2)
                cluster.kill(victim)
            time.sleep(0.03)
        out, err = proc.communicate(timeout=120)  # closes kcat's stdin: it delivers the rest, then exits
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0 and b"Delivery failed" not in err, err.decode(errors="replace")[-2000:]
    _after_kill(cluster, victim, topic)

    stored: dict[int, list] = {}
    for p in range(PARTITIONS):
        result = subprocess.run([KCAT, "-C", "-b", cluster.kafka_bootstrap(), "-t", topic, "-p", str(p),
                                 "-o", "beginning", "-e", "-q", "-f", "%o\t%k\t%s\n"],
                                capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        rows = [line.split(b"\t") for line in result.stdout.splitlines() if line]
        stored[p] = [(int(o), k, v) for o, k, v in rows]
    # By offset: partition 1 from one of its records.
    mid = stored[1][len(stored[1]) // 2][0]
    result = subprocess.run([KCAT, "-C", "-b", cluster.kafka_bootstrap(), "-t", topic, "-p", "1", "-o", str(mid),
                             "-e", "-q", "-f", "%o\t%k\t%s\n"], capture_output=True, timeout=60)
    assert [tuple(line.split(b"\t")) for line in result.stdout.splitlines()] == \
        [(b"%d" % o, k, v) for o, k, v in stored[1] if o >= mid]
    consumed = [v for rows in stored.values() for _, _, v in rows]
    sent = {v for _, v in records}
    assert set(consumed) == sent and len(consumed) == len(sent), \
        f"{len(consumed)} consumed ({len(set(consumed))} distinct) for {len(sent)} sent"
    by_value = {v: p for p, rows in stored.items() for _, _, v in rows}
    _check(by_value, stored, sent, exactly_once=True, sent_order={v: i for i, (_, v) in enumerate(records)})
