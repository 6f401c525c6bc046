"""The Kafka tutorial against `tidelog cluster up --nodes 3` (the launcher CLI, a temporary data directory and
a free port range): kafka-python sends keyed JSON orders to `orders`, a consumer of group `order-readers`
reads them all; the topic then grows with kafka-python's `KafkaAdminClient.create_partitions` (and with
`tidelog topic add-partitions`), the group resumes at its committed offsets and reads the new partitions too;
then `tidelog cluster down`. Teardown SIGKILLs whatever cluster.json still names (each PID verified)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

_LAUNCHER = str(Path(__file__).resolve().parents[1] / "launcher")
if _LAUNCHER not in sys.path:
    sys.path.insert(0, _LAUNCHER)

from launcher_harness import cluster_dir, free_base_port  # noqa: E402,F401  (cluster_dir: a fixture)

from tidelog import launcher as L  # noqa: E402
from tidelog.testing import child_env, cli_command  # noqa: E402

# kafka-python warns about its own imports and about plain functions as (de)serializers
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
pytest.importorskip("kafka")


def tidelog_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=child_env())
    assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr[-3000:])
    return result


def read_orders(consumer, want: int, timeout: float = 60.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    return got


def test_kafka_tutorial_on_a_launched_cluster(cluster_dir):  # noqa: F811  (the fixture)
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient

    data_dir = cluster_dir  # SIGKILLs what cluster.json still names at teardown
    base = free_base_port(3)
    tidelog_cli("cluster", "up", "--nodes", "3", "--data-dir", str(data_dir), "--base-port", str(base),
                "--serve-arg=--default-partitions=3", "--timeout", "90")
    cluster = L.load_cluster(data_dir)
    bootstrap = ",".join(f"{n.host}:{n.kafka_port}" for n in cluster.nodes)
    grpc_bootstrap = ",".join(f"{n.host}:{n.grpc_port}" for n in cluster.nodes)

    # -- the tutorial -----------------------------------------------------------------------------------------
    producer = KafkaProducer(bootstrap_servers=bootstrap, value_serializer=lambda v: json.dumps(v).encode())
    orders = [{"order_id": i, "customer": f"customer-{i % 7}", "amount": round(4.5 * i, 2)} for i in range(300)]
    for order in orders:
        producer.send("orders", key=order["customer"].encode(), value=order)
    producer.flush(timeout=60)

    consumer = KafkaConsumer("orders", bootstrap_servers=bootstrap, group_id="order-readers",
                             auto_offset_reset="earliest", value_deserializer=lambda b: json.loads(b.decode()))
    got = read_orders(consumer, len(orders))
    assert sorted(m.value["order_id"] for m in got) == list(range(300))
    partition_of: dict[bytes, int] = {}
    by_customer: dict[str, list[int]] = {}
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        assert partition_of.setdefault(m.key, m.partition) == m.partition, "same key, same partition"
        by_customer.setdefault(m.key.decode(), []).append(m.value["order_id"])
    assert all(ids == sorted(ids) for ids in by_customer.values()), "a customer's orders stay in order"
    consumer.commit()
    ends = consumer.end_offsets([TopicPartition("orders", p) for p in range(3)])
    consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        committed = admin.list_group_offsets({"order-readers": None})["order-readers"]
        assert {tp.partition: meta.offset for tp, meta in committed.items()} == \
            {tp.partition: end for tp, end in ends.items()}
        described = admin.describe_groups(["order-readers"])["order-readers"]
        assert described["group_state"] in ("Empty", "Stable"), described

        # -- CreatePartitions, kafka-python's admin client ----------------------------------------------------
        admin.create_partitions({"orders": 6})
        deadline = time.monotonic() + 30
        while True:
            topic = admin.describe_topics(["orders"])[0]
            parts = {p["partition_index"]: p for p in topic["partitions"]}
            if sorted(parts) == list(range(6)) and all(p["leader_id"] >= 0 for p in parts.values()):
                break
            assert time.monotonic() < deadline, f"new partitions without leaders: {topic}"
            time.sleep(0.2)
        assert all(len(p["replica_nodes"]) == 3 for p in parts.values())
    finally:
        admin.close()

    producer.close(timeout=10)
    # A new producer (the first one's metadata is up to 5 minutes old) sees the six partitions.
    producer = KafkaProducer(bootstrap_servers=bootstrap, value_serializer=lambda v: json.dumps(v).encode())
    producer.send("orders", key=b"late", value={"order_id": 1000, "customer": "late", "amount": 1.0},
                  partition=5)
    more = [{"order_id": 300 + i, "customer": f"customer-{i % 11}", "amount": 1.0} for i in range(60)]
    futures = [producer.send("orders", key=o["customer"].encode(), value=o) for o in more]
    producer.flush(timeout=60)
    placed = {f.get(timeout=30).partition for f in futures}
    producer.close(timeout=10)
    assert placed & {3, 4, 5}, "keys hash over the new partitions too"

    # The group resumes at its committed offsets and reads the new partitions from their start.
    consumer = KafkaConsumer("orders", bootstrap_servers=bootstrap, group_id="order-readers",
                             auto_offset_reset="earliest", value_deserializer=lambda b: json.loads(b.decode()))
    assert consumer.partitions_for_topic("orders") == set(range(6))
    again = read_orders(consumer, len(more) + 1)
    consumer.close()
    assert sorted(m.value["order_id"] for m in again) == [300 + i for i in range(60)] + [1000]

    # -- `tidelog topic add-partitions` (gRPC) ---------------------------------------------------------------
    out = tidelog_cli("topic", "add-partitions", "orders", "--count", "8", "--bootstrap", grpc_bootstrap)
    assert "8 partition(s)" in out.stdout
    described = json.loads(tidelog_cli("topic", "describe", "orders", "--json", "--bootstrap",
                                       grpc_bootstrap).stdout)
    assert len(described[0]["partitions"]) == 8

    tidelog_cli("cluster", "down", "--data-dir", str(data_dir))
    for node in cluster.nodes:
        assert not L.owns(node.pid, node), f"node {node.node_id} still runs after `cluster down`"
