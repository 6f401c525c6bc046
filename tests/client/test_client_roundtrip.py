"""The Python client against a real in-process broker: keyed order, replay, seek, compression, errors."""

from __future__ import annotations

import collections
import time

import grpc
import pytest

from proto.rpc import tidelog_v1_pb2 as pb
from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc
from storage.record_batch import CONTROL_COMMIT, RecordInput, build_batch, build_control_batch, iter_headers
from tidelog import Admin, Consumer, Producer, TopicPartition
from tidelog.errors import (
    InvalidConfigError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from tidelog.partitioner import partition_for_key


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    from tidelog.embedded import EmbeddedBroker

    with EmbeddedBroker(tmp_path_factory.mktemp("client")) as b:
        yield b


@pytest.fixture(scope="module")
def admin(broker):
    with Admin(broker.bootstrap) as a:
        yield a


def consume_all(bootstrap, topic, expected, timeout=60.0, **kwargs):
    records = []
    deadline = time.monotonic() + timeout
    with Consumer(bootstrap, topics=[topic], **kwargs) as consumer:
        while len(records) < expected and time.monotonic() < deadline:
            records += consumer.poll(1.0, max_records=100_000)
    return records


def test_100k_keyed_records_keep_per_partition_order(broker, admin):
    partitions = 4
    admin.create_topic("keyed", partitions)
    n = 100_000
    sent = [(b"user-%d" % (i % 997), b"%d" % i) for i in range(n)]
    with Producer(broker.bootstrap, linger_ms=5, batch_size=64 * 1024) as producer:
        futures = [producer.send("keyed", value, key=key) for key, value in sent]
        producer.flush(60)
        metadata = [f.result(0) for f in futures]
    for (key, _), md in zip(sent, metadata):
        assert md.partition == partition_for_key(key, partitions)  # Kafka's murmur2 placement
    records = consume_all(broker.bootstrap, "keyed", n)
    assert len(records) == n
    by_partition = collections.defaultdict(list)
    key_partitions = collections.defaultdict(set)
    for r in records:
        by_partition[r.partition].append(r)
        key_partitions[r.key].add(r.partition)
    assert all(len(ps) == 1 for ps in key_partitions.values())
    expected = collections.defaultdict(list)
    for (key, value), md in zip(sent, metadata):
        expected[md.partition].append((md.offset, key, value))
    for p in range(partitions):
        got = [(r.offset, r.key, r.value) for r in by_partition[p]]
        assert got == expected[p]  # send order, offsets as acknowledged
        first = got[0][0]  # after the Raft leader's no-op control batch of the new partition
        assert [r.offset for r in by_partition[p]] == list(range(first, first + len(got)))


def test_null_keys_are_sticky_and_spread(broker, admin):
    admin.create_topic("sticky", 3)
    with Producer(broker.bootstrap, linger_ms=1000, batch_size=1024) as producer:
        futures = [producer.send("sticky", b"x" * 100) for _ in range(300)]
        producer.flush(30)
        parts = [f.result(0).partition for f in futures]
    runs = sum(1 for a, b in zip(parts, parts[1:]) if a != b)
    assert len(set(parts)) > 1  # moves on after each batch...
    assert runs < 60  # ...but sticks within a batch (about 9 records per 1 KiB batch)


def test_seek_to_offset_replays_exactly_from_there(broker, admin):
    admin.create_topic("replay", 1)
    with Producer(broker.bootstrap, linger_ms=0) as producer:
        base = None
        for start in range(0, 50, 10):  # five batches of ten
            futures = [producer.send("replay", b"%d" % i, key=b"k") for i in range(start, start + 10)]
            producer.flush(10)
            if base is None:  # the first record follows the Raft leader's no-op control batch
                base = futures[0].result().offset
        assert futures[-1].result().offset == base + 49
    tp = TopicPartition("replay", 0)
    end = base + 50
    with Consumer(broker.bootstrap) as consumer:
        consumer.assign([tp])
        for n in (0, 23, 30, 49):
            consumer.seek(tp, base + n)
            got = []
            while len(got) < 50 - n:
                batch = consumer.poll(2.0)
                assert batch, f"nothing after seek to {base + n}"
                got += batch
            assert [r.offset for r in got] == list(range(base + n, end))
            assert [r.value for r in got] == [b"%d" % i for i in range(n, 50)]
            assert consumer.position(tp) == end
        consumer.seek(tp, end)
        assert consumer.poll(0.2) == []
        consumer.seek_to_beginning()
        assert consumer.poll(2.0)[0].offset == base
        consumer.seek_to_end()
        assert consumer.position(tp) == end


def test_fetch_inside_a_batch_returns_that_batch_and_the_client_drops_the_head(broker, admin):
    admin.create_topic("midbatch", 1)
    with Producer(broker.bootstrap, linger_ms=50) as producer:
        futures = [producer.send("midbatch", b"%d" % i) for i in range(20)]
        producer.flush(10)
    base = futures[0].result(0).offset
    channel = grpc.insecure_channel(broker.bootstrap)
    log = pb_grpc.LogServiceStub(channel)
    fetched = log.Fetch(pb.FetchRequest(partitions=[pb.FetchPartition(topic="midbatch", fetch_offset=base + 7)]))
    headers = [h for _, h in iter_headers(fetched.partitions[0].records)]
    channel.close()
    # The whole batch holding offset base + 7.
    assert headers[0].base_offset == base and headers[0].last_offset == base + 19
    with Consumer(broker.bootstrap) as consumer:
        consumer.assign([("midbatch", 0)])
        consumer.seek(("midbatch", 0), base + 7)
        assert [r.offset for r in consumer.poll(2.0)] == list(range(base + 7, base + 20))


def test_seek_to_timestamp(broker, admin):
    admin.create_topic("times", 2)
    with Producer(broker.bootstrap) as producer:
        futures = [producer.send("times", b"%d" % i, partition=i % 2, timestamp_ms=1_000_000 + 1000 * i)
                   for i in range(10)]
        producer.flush(10)
    base = {p: futures[p].result(0).offset for p in (0, 1)}  # after each partition's Raft no-op
    with Consumer(broker.bootstrap, topics=["times"]) as consumer:
        consumer.seek_to_timestamp(1_005_500)
        got = sorted((r.timestamp, r.value) for r in consumer.poll(2.0, 100) + consumer.poll(0.5, 100))
        assert got == [(1_000_000 + 1000 * i, b"%d" % i) for i in range(6, 10)]
        offsets = consumer.offsets_for_times({("times", 0): 1_004_000, ("times", 1): 1_009_001})
        assert offsets == {TopicPartition("times", 0): base[0] + 2, TopicPartition("times", 1): None}
        consumer.seek_to_timestamp(2_000_000)  # after every record: the end
        assert consumer.position(("times", 0)) == base[0] + 5 and consumer.poll(0.2) == []
    with Admin(broker.bootstrap) as a:
        listed = a.list_offsets({("times", 0): "earliest", ("times", 1): "latest"})
        assert listed == {TopicPartition("times", 0): (0, -1), TopicPartition("times", 1): (base[1] + 5, -1)}


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_compression_roundtrip(broker, admin, codec):
    topic = f"codec-{codec}"
    admin.create_topic(topic, 1)
    values = [(b"k%d" % i, (b"value %d " % i) * 20) for i in range(500)]
    with Producer(broker.bootstrap, compression=codec, linger_ms=20) as producer:
        for key, value in values:
            producer.send(topic, value, key=key, headers=[("codec", codec.encode()), ("nil", None)])
        producer.flush(10)
    records = consume_all(broker.bootstrap, topic, len(values))
    assert [(r.key, r.value) for r in records] == values
    assert records[0].headers == [("codec", codec.encode()), ("nil", None)]
    channel = grpc.insecure_channel(broker.bootstrap)
    fetched = pb_grpc.LogServiceStub(channel).Fetch(pb.FetchRequest(partitions=[pb.FetchPartition(topic=topic)]))
    channel.close()
    [header, *_] = [h for _, h in iter_headers(fetched.partitions[0].records) if not h.is_control]
    assert header.compression.name.lower() == codec  # stored as the client compressed it


def test_acks_zero_and_one(broker, admin):
    admin.create_topic("acks", 1)
    with Producer(broker.bootstrap, acks=0) as producer:
        futures = [producer.send("acks", b"a%d" % i) for i in range(100)]
        producer.flush(10)
        assert {f.result(0).offset for f in futures} == {-1}
    with Producer(broker.bootstrap, acks=1) as producer:
        last = producer.send("acks", b"b").result(10).offset
    records = consume_all(broker.bootstrap, "acks", 101)
    assert len(records) == 101 and records[-1].offset == last == records[0].offset + 100


def test_values_keys_timestamps_and_null_values(broker, admin):
    admin.create_topic("fields", 1)
    with Producer(broker.bootstrap) as producer:
        producer.send("fields", None, key=b"tombstone", timestamp_ms=42).result(10)
        producer.send("fields", "text", key="k").result(10)
    first, second = consume_all(broker.bootstrap, "fields", 2)
    assert (first.key, first.value, first.timestamp) == (b"tombstone", None, 42)
    assert (second.key, second.value, second.partition, second.offset) == (b"k", b"text", 0, first.offset + 1)


def test_control_batches_are_skipped_but_advance_the_position():
    data = (build_batch([RecordInput(None, b"a", 1), RecordInput(None, b"b", 1)], base_offset=0)
            + build_control_batch(CONTROL_COMMIT, b"\x00\x00\x00\x00\x00\x00", timestamp=1, base_offset=2)
            + build_batch([RecordInput(None, b"c", 1)], base_offset=3))
    consumer = Consumer("127.0.0.1:1")  # never connects: only the decoder is used
    try:
        position = consumer._decode(TopicPartition("t", 0), data, 1)
        assert position == 4
        assert [(r.offset, r.value) for r in consumer._buffer] == [(1, b"b"), (3, b"c")]
    finally:
        consumer.close()


def test_client_errors(broker, admin):
    admin.create_topic("twice", 1)
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topic("twice", 1)
    with pytest.raises(InvalidConfigError, match="retention.ms"):
        admin.create_topic("bad-config", 1, {"retention.ms": "tomorrow"})
    with pytest.raises(UnknownTopicOrPartitionError):
        admin.describe_topic("no-such-topic")
    admin.create_topic("small", 1, {"max.message.bytes": "2000"})
    with Producer(broker.bootstrap, retries=0) as producer:
        with pytest.raises(UnknownTopicOrPartitionError):
            producer.send("no-such-topic", b"x")
        with pytest.raises(UnknownTopicOrPartitionError):
            producer.send("small", b"x", partition=3)
        too_big = producer.send("small", b"x" * 5000)
        with pytest.raises(MessageTooLargeError):
            too_big.result(10)
        assert producer.send("small", b"fits").result(10).offset >= 0
    with Consumer(broker.bootstrap, auto_offset_reset="none") as consumer:
        consumer.assign([("small", 0)])
        consumer.seek(("small", 0), 99)
        with pytest.raises(OffsetOutOfRangeError):
            consumer.poll(1.0)


def test_admin_configs_and_describe(broker, admin):
    admin.create_topic("cfg", 2, {"retention.ms": 3_600_000})
    configs = admin.alter_configs("cfg", {"segment.ms": 60_000}, ["retention.ms"])
    assert configs["segment.ms"].value == "60000" and configs["segment.ms"].source == "topic"
    assert configs["retention.ms"].source == "default"
    assert admin.describe_configs("cfg") == configs
    described = admin.describe_topic("cfg")
    assert [p.partition for p in described.partitions] == [0, 1]
    assert admin.list_topics()["cfg"] == 2
    admin.delete_topic("cfg")
    assert "cfg" not in admin.list_topics()
