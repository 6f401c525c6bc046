"""kafka-python against the three-node cluster: Metadata from the real cluster, and a partition leader killed
mid-produce loses nothing that was acknowledged. The producer is idempotent (kafka-python's default) and the
kill forces retries: each record is stored once, in send order, without gaps (lz4 batches)."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster(extra_args=["--default-partitions", "3"])]

kafka = pytest.importorskip("kafka")


def test_kafka_python_metadata_and_a_leader_killed_mid_produce(cluster):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    cluster.wait_healthy()
    admin = KafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap(), request_timeout_ms=20_000)
    admin.create_topics([NewTopic("kp", num_partitions=3, replication_factor=3)])
    cluster.wait_healthy(["kp"])
    described = admin.describe_topics(["kp"])[0]
    assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2]
    for p in described["partitions"]:
        assert sorted(p["replica_nodes"]) == [1, 2, 3] and p["leader_id"] in (1, 2, 3)
        assert p["leader_epoch"] >= 1 and p["leader_id"] in p["isr_nodes"]
    brokers = {b["broker_id"]: b["port"] for b in admin.describe_cluster()["brokers"]}
    assert brokers == cluster.kafka
    admin.close()

    producer = KafkaProducer(bootstrap_servers=cluster.kafka_bootstrap(), acks="all", retries=50,
                             enable_idempotence=True, compression_type="lz4",
                             retry_backoff_ms=100, max_in_flight_requests_per_connection=1, linger_ms=5,
                             request_timeout_ms=5_000, metadata_max_age_ms=1_000, reconnect_backoff_max_ms=500)
    victim = cluster.leaders(1, "kp")[0]
    acked: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    failed = 0
    futures = []
    for i in range(3000):
        if i == 1000:
            producer.flush(30)
            cluster.kill(victim)
        futures.append((b"v%d" % i, producer.send("kp", key=b"k%d" % (i % 97), value=b"v%d" % i)))
        if i % 100 == 99:
            time.sleep(0.02)
    producer.flush(60)
    for value, f in futures:
        try:
            md = f.get(timeout=0)
        except Exception:
            failed += 1
            continue
        acked[md.partition].append(value)
    producer.close(10)
    assert sum(map(len, acked.values())) >= 2900, f"{failed} of 3000 sends failed"
    survivors = [n for n in cluster.ids if n != victim]
    cluster.wait_healthy(["kp"], nodes=survivors, timeout=30)
    assert victim not in cluster.leaders(survivors[0], "kp").values()

    consumer = KafkaConsumer(bootstrap_servers=cluster.kafka_bootstrap(survivors), enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=3_000, request_timeout_ms=10_000)
    tps = [TopicPartition("kp", p) for p in range(3)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(tps)
    stored: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    deadline = time.monotonic() + 30
    while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                stored[r.partition].append(r.value)
    consumer.close()
    sent = [value for value, _ in futures]
    for p in range(3):
        lost = set(acked[p]) - set(stored[p])
        assert not lost, f"partition {p}: {len(lost)} acknowledged records lost"
        assert len(stored[p]) == len(set(stored[p])), f"partition {p}: duplicates despite idempotence"
        assert set(stored[p]) <= set(sent), f"partition {p}: records never sent"
        order = [int(v[1:]) for v in stored[p]]
        assert order == sorted(order), f"partition {p}: records out of send order"
        # No gaps: what is stored is what was acknowledged (a failed send may only be missing at the end
        # of a run of failures, never between two acknowledged records of the partition).
        assert [v for v in stored[p] if v in set(acked[p])] == acked[p], f"partition {p}: acknowledged order"
