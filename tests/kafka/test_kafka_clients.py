"""Real, unmodified Kafka clients against a tidelog broker process: kafka-python, aiokafka, confluent-kafka
(librdkafka 2.16) and kcat (librdkafka 2.0.2).

Each client produces keyed records with each compression codec, then consumes them by offset (assign, no
group), seeks into the middle of a partition (inside a compressed batch) and replays from the start. Every
key must land on the partition the client's own partitioner picks: murmur2 for kafka-python and aiokafka
(Java placement), CRC32 `consistent_random` for librdkafka unless `partitioner=murmur2_random`.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import defaultdict

import pytest

from kafka_listener_harness import RawClient, create_topic, crc32_partition, murmur2_partition

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
DEADLINE_S = 60


def _records(client: str, codec: str, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"key-{i % 101}".encode(), f"{client}|{codec}|{i:06d}|".encode() + b"payload " * (i % 7))
            for i in range(n)]


def _count(client: str, codec: str) -> int:
    return 10_000  # keyed records per client and codec


# --------------------------------------------------------------------------------------------- adapters
# produce(bootstrap, topic, records, codec) -> [(partition, offset)] per record, or None if not reported
# consume(bootstrap, topic, total, seek_partition, seek_offset) -> (all, from_seek, replay) as
#     lists of (partition, offset, key, value); `all` covers every partition from its start, `from_seek` and
#     `replay` the seek partition from seek_offset and from 0.

def kp_produce(bootstrap, topic, records, codec):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
                      linger_ms=20, batch_size=64 * 1024, request_timeout_ms=20_000)
    try:
        futures = [p.send(topic, key=k, value=v) for k, v in records]
        p.flush(timeout=DEADLINE_S)
        return [(m.partition, m.offset) for m in (f.get(timeout=DEADLINE_S) for f in futures)]
    finally:
        p.close(timeout=10)


def kp_consume(bootstrap, topic, total, seek_p, seek_o):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      max_partition_fetch_bytes=256 * 1024)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning()

        def drain(want):
            out = []
            deadline = time.monotonic() + DEADLINE_S
            while len(out) < want and time.monotonic() < deadline:
                for tp, msgs in c.poll(timeout_ms=500).items():
                    out += [(tp.partition, m.offset, m.key, m.value) for m in msgs]
            return out

        everything = drain(total)
        tp = TopicPartition(topic, seek_p)
        seek_total = sum(1 for r in everything if r[0] == seek_p)
        c.assign([tp])
        c.seek(tp, seek_o)
        from_seek = drain(seek_total - seek_o)
        c.seek(tp, 0)
        replay = drain(seek_total)
        return everything, from_seek, replay
    finally:
        c.close()


def ak_produce(bootstrap, topic, records, codec):
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
                             linger_ms=20, max_batch_size=64 * 1024, request_timeout_ms=20_000)
        await p.start()
        try:
            futures = [await p.send(topic, key=k, value=v) for k, v in records]
            done = await asyncio.wait_for(asyncio.gather(*futures), DEADLINE_S)
            return [(m.partition, m.offset) for m in done]
        finally:
            await p.stop()

    return asyncio.run(run())


def ak_consume(bootstrap, topic, total, seek_p, seek_o):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_partition_fetch_bytes=256 * 1024)
        await c.start()
        try:
            # aiokafka quirk: with assign() and no subscription, partitions_for_topic() is None until the
            # topic is in the consumer's metadata, so the partitions are named here.
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)

            async def drain(want):
                out = []
                deadline = time.monotonic() + DEADLINE_S
                while len(out) < want and time.monotonic() < deadline:
                    for tp, msgs in (await c.getmany(timeout_ms=500)).items():
                        out += [(tp.partition, m.offset, m.key, m.value) for m in msgs]
                return out

            everything = await drain(total)
            tp = TopicPartition(topic, seek_p)
            seek_total = sum(1 for r in everything if r[0] == seek_p)
            c.assign([tp])
            c.seek(tp, seek_o)
            from_seek = await drain(seek_total - seek_o)
            c.seek(tp, 0)
            replay = await drain(seek_total)
            return everything, from_seek, replay
        finally:
            await c.stop()

    return asyncio.run(run())


def ck_produce(bootstrap, topic, records, codec, partitioner=None):
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20,
            "message.timeout.ms": DEADLINE_S * 1000}
    if partitioner:
        conf["partitioner"] = partitioner
    p = Producer(conf)
    results: list = [None] * len(records)

    def delivered(i):
        def cb(err, msg):
            results[i] = err if err else (msg.partition(), msg.offset())
        return cb

    for i, (k, v) in enumerate(records):
        while True:
            try:
                p.produce(topic, key=k, value=v, on_delivery=delivered(i), timestamp=1_700_000_000_000 + i)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(DEADLINE_S) == 0, "undelivered messages"
    assert all(isinstance(r, tuple) for r in results), [r for r in results if not isinstance(r, tuple)][:3]
    return results


def ck_consume(bootstrap, topic, total, seek_p, seek_o):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"unused-{topic}", "enable.auto.commit": False,
                  "enable.partition.eof": False, "max.partition.fetch.bytes": 256 * 1024})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])

        def drain(want):
            out = []
            deadline = time.monotonic() + DEADLINE_S
            while len(out) < want and time.monotonic() < deadline:
                for m in c.consume(num_messages=1000, timeout=0.5):
                    assert m.error() is None, m.error()
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
            return out

        everything = drain(total)
        seek_total = sum(1 for r in everything if r[0] == seek_p)
        c.assign([TopicPartition(topic, seek_p, 0)])
        drain(1)  # seek needs a partition that is being fetched
        c.seek(TopicPartition(topic, seek_p, seek_o))
        from_seek = drain(seek_total - seek_o)
        c.seek(TopicPartition(topic, seek_p, 0))
        replay = drain(seek_total)
        return everything, from_seek, replay
    finally:
        c.close()


KCAT = shutil.which("kcat")


def _kcat(*args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=DEADLINE_S)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout


def kc_produce(bootstrap, topic, records, codec):
    lines = b"".join(k + b"\t" + v + b"\n" for k, v in records)
    _kcat("-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-z", codec, "-X", "linger.ms=20", stdin=lines)
    return None  # kcat reports no offsets: placement is checked on consumption


def kc_consume(bootstrap, topic, total, seek_p, seek_o):
    fmt = "%p\t%o\t%k\t%s\n"

    def parse(out: bytes):
        rows = []
        for line in out.split(b"\n"):
            if line:
                p, o, key, value = line.split(b"\t", 3)
                rows.append((int(p), int(o), key, value))
        return rows

    everything = parse(_kcat("-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", fmt))
    from_seek = parse(_kcat("-C", "-b", bootstrap, "-t", topic, "-p", str(seek_p), "-o", str(seek_o), "-e", "-q",
                            "-f", fmt))
    replay = parse(_kcat("-C", "-b", bootstrap, "-t", topic, "-p", str(seek_p), "-o", "beginning", "-e", "-q",
                         "-f", fmt))
    return everything, from_seek, replay


CLIENTS = {
    "kafka-python": (kp_produce, kp_consume, murmur2_partition),
    "aiokafka": (ak_produce, ak_consume, murmur2_partition),
    "confluent": (ck_produce, ck_consume, crc32_partition),
    "kcat": (kc_produce, kc_consume, crc32_partition),
}


def _check_round_trip(records, delivered, consumed, partition_of):
    everything, from_seek, replay = consumed
    n = len(records)
    # Every key on the partition its client's partitioner picks, and delivery reports agree.
    expected_partition = [partition_of(k, PARTITIONS) for k, _ in records]
    if delivered is not None:
        assert [p for p, _ in delivered] == expected_partition
    # All records back, once, in order per partition, at dense offsets from 0.
    assert len(everything) == n, f"consumed {len(everything)} of {n}"
    by_partition = defaultdict(list)
    for p, o, key, value in everything:
        by_partition[p].append((o, key, value))
    sent = defaultdict(list)
    for i, (key, value) in enumerate(records):
        sent[expected_partition[i]].append((key, value))
    assert sorted(by_partition) == sorted(sent), "partitions used"
    for p, rows in by_partition.items():
        assert [o for o, _, _ in rows] == list(range(len(rows))), f"offsets of partition {p}"
        assert [(k, v) for _, k, v in rows] == sent[p], f"records of partition {p}"
    if delivered is not None:
        offsets = {(expected_partition[i], o) for i, (_, o) in enumerate(delivered)}
        assert offsets == {(p, o) for p, o, _, _ in everything}, "delivery offsets match what is stored"
    return by_partition


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", list(CLIENTS))
def test_produce_consume_seek_replay(kafka_broker, client, codec):
    if client == "kcat" and KCAT is None:
        pytest.skip("kcat is not installed")
    produce, consume, partition_of = CLIENTS[client]
    topic = f"{client}-{codec}"
    with RawClient(kafka_broker.port) as admin:
        create_topic(admin, topic, PARTITIONS)
    records = _records(client, codec, _count(client, codec))
    delivered = produce(kafka_broker.bootstrap, topic, records, codec)
    seek_p = partition_of(records[0][0], PARTITIONS)
    seek_total = sum(1 for k, _ in records if partition_of(k, PARTITIONS) == seek_p)
    seek_o = seek_total // 2 + 1  # inside a batch: the broker returns the whole batch, the client skips
    consumed = consume(kafka_broker.bootstrap, topic, len(records), seek_p, seek_o)
    by_partition = _check_round_trip(records, delivered, consumed, partition_of)
    _, from_seek, replay = consumed
    expected_tail = by_partition[seek_p][seek_o:]
    assert [(o, k, v) for p, o, k, v in from_seek] == expected_tail and all(p == seek_p for p, *_ in from_seek)
    assert [(o, k, v) for p, o, k, v in replay] == by_partition[seek_p], "replay from offset 0"


def test_confluent_murmur2_random_matches_java_placement_and_kafka_python(kafka_broker):
    """librdkafka with partitioner=murmur2_random places keys exactly as kafka-python (Java) does."""
    with RawClient(kafka_broker.port) as admin:
        create_topic(admin, "placement-ck", PARTITIONS)
        create_topic(admin, "placement-kp", PARTITIONS)
    records = [(f"user-{i}".encode(), b"v") for i in range(300)]
    ck = ck_produce(kafka_broker.bootstrap, "placement-ck", records, "lz4", partitioner="murmur2_random")
    kp = kp_produce(kafka_broker.bootstrap, "placement-kp", records, "none")
    assert [p for p, _ in ck] == [p for p, _ in kp] == [murmur2_partition(k, PARTITIONS) for k, _ in records]
    assert [p for p, _ in ck] != [crc32_partition(k, PARTITIONS) for k, _ in records], "the two hashes differ"


def test_confluent_offsets_for_times(kafka_broker):
    from confluent_kafka import Consumer, TopicPartition

    with RawClient(kafka_broker.port) as admin:
        create_topic(admin, "times-ck", 1)
    records = [(b"k", b"v%d" % i) for i in range(50)]
    delivered = ck_produce(kafka_broker.bootstrap, "times-ck", records, "zstd")  # timestamps base + i
    assert [o for _, o in delivered] == list(range(50))
    c = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "times"})
    try:
        found = c.offsets_for_times([TopicPartition("times-ck", 0, 1_700_000_000_000 + 17)], timeout=10)
        assert found[0].offset == 17 and found[0].error is None
        lo, hi = c.get_watermark_offsets(TopicPartition("times-ck", 0), timeout=10)
        assert (lo, hi) == (0, 50)
    finally:
        c.close()
