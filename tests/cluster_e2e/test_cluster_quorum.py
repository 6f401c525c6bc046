"""Two of three replicas down: acks=all fails with a clear error and nothing is acknowledged."""

from __future__ import annotations

import time

import grpc
import pytest
from cluster_harness import HOST

from proto.rpc import tidelog_v1_pb2 as pb
from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc
from storage.record_batch import RecordInput, build_batch
from tidelog.admin import Admin
from tidelog.errors import TidelogError
from tidelog.producer import Producer

pytestmark = pytest.mark.slow


def test_two_of_three_down_every_acks_all_produce_fails(cluster):
    cluster.wait_healthy()
    admin = Admin(cluster.bootstrap())
    admin.create_topic("q", 3, {"min.insync.replicas": "2"})
    cluster.wait_healthy(["q"])
    survivor = 1
    cluster.kill(2)
    cluster.kill(3)
    # Straight to the survivor, every partition: refused (it may still think it leads for an election
    # timeout: then NOT_ENOUGH_REPLICAS), never acknowledged.
    batch = build_batch([RecordInput(None, b"lost", int(time.time() * 1000), [])])
    deadline = time.monotonic() + 4
    errors = set()
    with grpc.insecure_channel(f"{HOST}:{cluster.grpc[survivor]}") as channel:
        stub = pb_grpc.LogServiceStub(channel)
        while time.monotonic() < deadline:
            response = stub.Produce(pb.ProduceRequest(acks=-1, timeout_ms=1500, partitions=[
                pb.PartitionRecords(topic="q", partition=p, records=batch) for p in range(3)]), timeout=20)
            for r in response.partitions:
                assert r.error_code != 0, f"acknowledged with 2 of 3 replicas down: {r}"
                errors.add(pb.ErrorCode.Name(r.error_code))
    assert errors <= {"NOT_ENOUGH_REPLICAS", "NOT_LEADER_OR_FOLLOWER", "REQUEST_TIMED_OUT"}, errors
    assert "NOT_ENOUGH_REPLICAS" in errors or "NOT_LEADER_OR_FOLLOWER" in errors, errors
    # The client surfaces the failure once its delivery timeout passes.
    with Producer(cluster.bootstrap([survivor]), acks="all", delivery_timeout_ms=3000, request_timeout_ms=1000,
                  retry_backoff_ms=100) as producer:
        futures = [producer.send("q", b"x%d" % i, partition=i % 3) for i in range(30)]
        for f in futures:
            with pytest.raises(TidelogError) as exc:
                f.result(20)
            assert exc.value.error_name in ("NOT_ENOUGH_REPLICAS", "NOT_LEADER_OR_FOLLOWER", "REQUEST_TIMED_OUT",
                                            "LEADER_NOT_AVAILABLE", "BROKER_NOT_AVAILABLE"), exc.value
    # Back to a majority: writes succeed again, and nothing from the outage was acknowledged or is visible.
    cluster.restart(2)
    cluster.wait_healthy(["q"], timeout=30, nodes=[1, 2])
    with Producer(cluster.bootstrap([1, 2]), acks="all") as producer:
        assert producer.send("q", b"back", partition=0).result(30).offset >= 0
    admin.close()
