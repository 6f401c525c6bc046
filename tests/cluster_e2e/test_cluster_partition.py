"""A partition leader cut off from the others by a fault-injecting proxy: it stops acknowledging, the majority
elects a new leader and goes on, and after the heal the old leader truncates its uncommitted tail so that
every replica holds the same bytes."""

from __future__ import annotations

import time

import grpc
import pytest
from cluster_harness import HOST, Cluster, wait_until

from proto.rpc import tidelog_v1_pb2 as pb
from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc
from storage.record_batch import RecordInput, build_batch, iter_records
from tidelog.admin import Admin
from tidelog.producer import Producer

pytestmark = [pytest.mark.slow, pytest.mark.cluster(proxy=True)]


def _produce_raw(cluster: Cluster, node: int, topic: str, values: list[bytes], acks: int, timeout_ms: int):
    """One ProduceRequest straight to `node` (no client retries): the per-partition result."""
    batch = build_batch([RecordInput(None, v, int(time.time() * 1000), []) for v in values])
    with grpc.insecure_channel(f"{HOST}:{cluster.grpc[node]}") as channel:
        stub = pb_grpc.LogServiceStub(channel)
        response = stub.Produce(pb.ProduceRequest(acks=acks, timeout_ms=timeout_ms, partitions=[
            pb.PartitionRecords(topic=topic, partition=0, records=batch)]), timeout=timeout_ms / 1000 + 10)
    return response.partitions[0]


def test_an_isolated_leader_stops_acknowledging_and_truncates_after_the_heal(cluster):
    cluster.wait_healthy()
    admin = Admin(cluster.bootstrap())
    topic_id = admin.create_topic("iso", 1).topic_id
    assert len(admin.describe_topic("iso").partitions[0].replicas) == 3
    cluster.wait_healthy(["iso"])
    with Producer(cluster.bootstrap(), acks="all") as producer:
        for i in range(200):
            producer.send("iso", b"before-%d" % i)
        producer.flush(30)
    old = cluster.leaders(1, "iso")[0]
    others = [n for n in cluster.ids if n != old]

    cluster.proxy.cut(old)
    # Written on the isolated leader while it still believes it leads: an uncommitted, divergent tail.
    tail = _produce_raw(cluster, old, "iso", [b"orphan-%d" % i for i in range(50)], acks=1, timeout_ms=2000)
    # acks=all on the isolated leader is never acknowledged.
    refused = _produce_raw(cluster, old, "iso", [b"never-acked"], acks=-1, timeout_ms=3000)
    assert refused.error_code != 0, "an isolated leader acknowledged acks=all"
    assert pb.ErrorCode.Name(refused.error_code) in (
        "REQUEST_TIMED_OUT", "NOT_LEADER_OR_FOLLOWER", "NOT_ENOUGH_REPLICAS"), refused

    # The majority elects a new leader (a higher term) and takes writes.
    new = wait_until(lambda: next((lead for lead in [cluster.leaders(others[0], "iso")[0]]
                                   if lead in others), None), 15, what="a new leader among the majority")
    with Producer(cluster.bootstrap(others), acks="all", delivery_timeout_ms=20_000) as producer:
        futures = [producer.send("iso", b"after-%d" % i) for i in range(300)]
        producer.flush(30)
        assert all(f.result(0).offset >= 0 for f in futures)

    cluster.proxy.heal()
    cluster.wait_healthy(["iso"], timeout=30)

    def converged():
        logs = [cluster.log_bytes(n, topic_id, 0) for n in cluster.ids]
        return len(set(logs)) == 1 and logs[0]

    data = wait_until(converged, 30, what="byte-identical replicas after the heal")
    values = [r.value for r in iter_records(data)]
    assert b"never-acked" not in values
    if tail.error_code == 0:  # the isolated leader wrote its tail locally: it was cut away
        assert not [v for v in values if v.startswith(b"orphan-")], "the uncommitted tail survived"
    assert values[:200] == [b"before-%d" % i for i in range(200)]
    assert [v for v in values if v.startswith(b"after-")] == [b"after-%d" % i for i in range(300)]
    assert cluster.leaders(old, "iso")[0] in cluster.ids
    admin.close()
    assert new in others
