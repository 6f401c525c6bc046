"""DeleteRecords and DeleteGroups against the three-node cluster with real clients.

DeleteRecords (kafka-python `KafkaAdminClient.delete_records`, confluent-kafka `AdminClient.delete_records`):
the new log start is committed through the partition's Raft group, so every replica deletes the records
before it (its log start checkpoint and its first segment say so), a follower that was down meanwhile catches
up through a snapshot and then the entry, the log start survives a SIGKILL of the leader (the new leader's
ListOffsets earliest and a consumer from earliest start there), an offset beyond the high watermark is
OFFSET_OUT_OF_RANGE and an unknown topic UNKNOWN_TOPIC_OR_PARTITION.

DeleteGroups on a broker that does not coordinate the group: NOT_COORDINATOR; at the coordinator it goes
through (kafka-python and confluent-kafka find the coordinator themselves)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from cluster_harness import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.cluster()]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kafka"))

TOPIC = "dr"
OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, NOT_COORDINATOR, NOT_LEADER = 1, 3, 16, 6


def _log_start(cluster, node: int, topic_id: str) -> int | None:
    from storage.fileutil import read_offset_checkpoint

    d = cluster.root / f"node-{node}" / "replicas" / topic_id / "0"
    return read_offset_checkpoint(str(d / "log-start-offset-checkpoint"))


def _first_segment(cluster, node: int, topic_id: str) -> int:
    d = cluster.root / f"node-{node}" / "replicas" / topic_id / "0"
    return min(int(p.name.split(".")[0]) for p in d.glob("*.log"))


def _produce(cluster, nodes: list[int], start: int, count: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=cluster.kafka_bootstrap(nodes), acks="all", linger_ms=1,
                             batch_size=2048, request_timeout_ms=10_000, retries=20, retry_backoff_ms=100,
                             metadata_max_age_ms=1_000)
    futures = [producer.send(TOPIC, value=b"v%05d" % i + b"." * 90, partition=0) for i in range(start, start + count)]
    producer.flush(30)
    for f in futures:
        f.get(timeout=10)
    producer.close(10)


def _earliest_and_first(cluster, nodes: list[int]) -> tuple[int, int, bytes]:
    """(ListOffsets earliest, offset and value of the first record consumed from earliest) as the leader answers."""
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(TOPIC, 0)
    consumer = KafkaConsumer(bootstrap_servers=cluster.kafka_bootstrap(nodes), group_id=None,
                             enable_auto_commit=False, request_timeout_ms=10_000, metadata_max_age_ms=1_000)
    try:
        earliest = consumer.beginning_offsets([tp])[tp]
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                if records:
                    return earliest, records[0].offset, records[0].value
        raise AssertionError("nothing consumed from earliest")
    finally:
        consumer.close()


def test_delete_records_is_replicated_and_survives_the_leader(cluster):
    pytest.importorskip("kafka")
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import OffsetOutOfRangeError
    from kafka_listener_harness import RawClient

    from tidelog import Admin

    cluster.wait_healthy()
    with Admin(cluster.bootstrap()) as admin:
        topic_id = admin.create_topic(TOPIC, 1, {"segment.bytes": 4096}, replication_factor=3).topic_id
    cluster.wait_healthy([TOPIC])
    _produce(cluster, cluster.ids, 0, 300)
    tp = TopicPartition(TOPIC, 0)

    # kafka-python: delete before 120; every replica applies it (log start checkpoint, segments deleted).
    kp = KafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap(), request_timeout_ms=20_000)
    try:
        result = kp.delete_records({tp: 120}, timeout_ms=20_000)
        assert result[tp]["low_watermark"] == 120 and result[tp]["error_code"] == 0
        for n in cluster.ids:
            wait_until(lambda n=n: _log_start(cluster, n, topic_id) == 120, 20, what=f"node {n} log start 120")
            assert 0 < _first_segment(cluster, n, topic_id) <= 120, f"node {n} kept the segments below 120"
        assert _earliest_and_first(cluster, cluster.ids)[:2] == (120, 120)
        with pytest.raises(OffsetOutOfRangeError):
            kp.delete_records({tp: 10_000}, timeout_ms=10_000)
        # Below the log start: nothing to do, the answer is the log start.
        assert kp.delete_records({tp: 50}, timeout_ms=10_000)[tp]["low_watermark"] == 120
    finally:
        kp.close()

    # Unknown topic, and a broker that does not lead the partition (raw requests: clients check metadata first).
    leader = cluster.leaders(1, TOPIC)[0]
    follower = next(n for n in cluster.ids if n != leader)
    body = {"topics": [{"name": "no-such-topic", "partitions": [{"partition_index": 0, "offset": 1}]},
                       {"name": TOPIC, "partitions": [{"partition_index": 0, "offset": 130}]}], "timeout_ms": 5000}
    with RawClient(cluster.kafka[follower], timeout=20) as c:
        unknown, led_elsewhere = c.request(21, 1, body)["topics"]
        assert unknown["partitions"][0]["error_code"] == UNKNOWN_TOPIC_OR_PARTITION
        assert led_elsewhere["partitions"][0]["error_code"] == NOT_LEADER
    with RawClient(cluster.kafka[leader], timeout=20) as c:
        latest = c.request(2, 5, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": TOPIC, "partitions": [{"partition_index": 0, "timestamp": -1}]}]})
        high_watermark = latest["topics"][0]["partitions"][0]["offset"]
        assert high_watermark > 300  # the records, and Raft's own entries (no-op, the LOG_START entry)
        r = c.request(21, 2, {"topics": [{"name": TOPIC, "partitions": [{"partition_index": 0, "offset": -1}]}],
                              "timeout_ms": 5000})  # -1: up to the high watermark
        assert r["topics"][0]["partitions"][0] == {"partition_index": 0, "low_watermark": high_watermark,
                                                   "error_code": 0}

    # A follower is down while the leader deletes past everything it has: it comes back through a snapshot
    # and then applies the entry itself.
    cluster.kill(follower)
    survivors = [n for n in cluster.ids if n != follower]
    cluster.wait_healthy([TOPIC], nodes=survivors, timeout=30)
    _produce(cluster, survivors, 300, 200)
    ca = AdminClient({"bootstrap.servers": cluster.kafka_bootstrap(survivors)})
    futures = ca.delete_records([ck.TopicPartition(TOPIC, 0, 450)], request_timeout=20, operation_timeout=20)
    deleted = next(iter(futures.values())).result(30)
    assert deleted.low_watermark == 450
    missing = ca.delete_records([ck.TopicPartition("no-such-topic", 0, 1)], request_timeout=10,
                                operation_timeout=10)
    with pytest.raises(ck.KafkaException) as info:
        next(iter(missing.values())).result(30)
    # librdkafka looks the partition leader up in Metadata first (the broker's own answer is checked above).
    assert info.value.args[0].code() in (ck.KafkaError.UNKNOWN_TOPIC_OR_PART, ck.KafkaError._NOENT)
    cluster.restart(follower)
    cluster.wait_healthy([TOPIC], timeout=30)
    for n in cluster.ids:
        wait_until(lambda n=n: _log_start(cluster, n, topic_id) == 450, 30, what=f"node {n} log start 450")
        assert 300 < _first_segment(cluster, n, topic_id) <= 450

    # SIGKILL the leader: the new leader agrees on the log start, and so does the old one once back.
    before = _earliest_and_first(cluster, cluster.ids)
    assert before[:2] == (450, 450)
    leader = cluster.leaders(follower, TOPIC)[0]
    cluster.kill(leader)
    survivors = [n for n in cluster.ids if n != leader]
    cluster.wait_healthy([TOPIC], nodes=survivors, timeout=30)
    assert leader not in cluster.leaders(survivors[0], TOPIC).values()
    assert _earliest_and_first(cluster, survivors) == before
    cluster.restart(leader)
    cluster.wait_healthy([TOPIC], timeout=30)
    assert _log_start(cluster, leader, topic_id) == 450
    assert _earliest_and_first(cluster, cluster.ids)[:2] == (450, 450)


def test_delete_groups_answers_not_coordinator_elsewhere(cluster):
    pytest.importorskip("kafka")
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient
    from kafka_listener_harness import RawClient

    from tidelog import Admin

    cluster.wait_healthy()
    with Admin(cluster.bootstrap()) as admin:
        admin.create_topic("dg", 1, replication_factor=3)
    cluster.wait_healthy(["dg"])
    group = "dg-cluster"
    consumer = KafkaConsumer(bootstrap_servers=cluster.kafka_bootstrap(), group_id=group, enable_auto_commit=False,
                             request_timeout_ms=20_000)
    from kafka import OffsetAndMetadata, TopicPartition

    consumer.commit({TopicPartition("dg", 0): OffsetAndMetadata(0, "", -1)})
    consumer.close()

    def coordinator() -> int:
        with RawClient(cluster.kafka[1], timeout=20) as c:
            r = c.request(10, 3, {"key": group, "key_type": 0})
            return r["node_id"] if r["error_code"] == 0 else 0

    owner = wait_until(coordinator, 30, what="a coordinator for the group")
    other = next(n for n in cluster.ids if n != owner)
    with RawClient(cluster.kafka[other], timeout=20) as c:
        r = c.request(42, 2, {"groups_names": [group]})
        assert r["results"] == [{"group_id": group, "error_code": NOT_COORDINATOR}]
    admin = KafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap(), request_timeout_ms=20_000)
    try:
        assert admin.delete_groups([group]) == {group: "OK"}
        assert admin.list_group_offsets(group) == {group: {}}
    finally:
        admin.close()
