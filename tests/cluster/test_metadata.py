"""The controller's metadata state machine and replica placement."""

from __future__ import annotations

import json

import pytest

from cluster.controller.metadata import (
    ClusterMetadata,
    MetadataError,
    assign_replicas,
)


def _register(md: ClusterMetadata, index: int, broker_id: int, rack: str | None = None) -> None:
    md.apply(index, {"type": "register_broker", "broker_id": broker_id, "host": "127.0.0.1",
                     "grpc_port": 7000 + broker_id, "kafka_port": 9000 + broker_id,
                     "raft_port": 8000 + broker_id, "rack": rack})


def _cluster(n: int = 3) -> ClusterMetadata:
    md = ClusterMetadata()
    for b in range(n):
        _register(md, b, b)
    return md


def test_create_alter_delete_and_refusals_are_deterministic() -> None:
    md = _cluster()
    cmd = {"type": "create_topic", "name": "orders", "topic_id": "ab" * 16,
           "assignments": assign_replicas({0: None, 1: None, 2: None}, 6, 3), "configs": {"retention.ms": "1000"}}
    topic = md.apply(10, json.dumps(cmd).encode())
    assert [len(p.replicas) for p in topic.partitions] == [3] * 6
    again = md.apply(11, cmd)
    assert isinstance(again, MetadataError) and again.error_name == "TOPIC_ALREADY_EXISTS"
    assert md.apply(12, {"type": "alter_configs", "name": "orders", "configs": {"retention.ms": None,
                                                                              "cleanup.policy": "compact"}}) \
        == {"cleanup.policy": "compact"}
    bad = md.apply(13, {"type": "create_topic", "name": "bad/name", "topic_id": "0" * 32, "assignments": [[0]]})
    assert bad.error_name == "INVALID_TOPIC_EXCEPTION"
    assert md.apply(14, {"type": "delete_topic", "name": "orders"}) == "orders"
    assert md.apply(15, {"type": "delete_topic", "name": "orders"}).error_name == "UNKNOWN_TOPIC_OR_PARTITION"
    with pytest.raises(AssertionError):
        md.apply(15, {"type": "delete_topic", "name": "x"})  # entries apply in order, once


def test_snapshot_restores_the_same_state() -> None:
    md = _cluster()
    md.apply(5, {"type": "create_topic", "name": "t", "topic_id": "1" * 32, "assignments": [[0, 1], [1, 2]]})
    md.apply(6, {"type": "allocate_producer_ids", "count": 1000})
    md.apply(7, {"type": "reassign_partition", "name": "t", "partition": 0, "target": [2, 1]})
    copy = ClusterMetadata.restore(md.snapshot())
    assert copy.snapshot() == md.snapshot()
    assert copy.partition("t", 0).target == [2, 1]
    assert copy.apply(8, {"type": "allocate_producer_ids", "count": 1000}) == (1000, 1000)


def test_producer_id_blocks_never_overlap() -> None:
    md = _cluster()
    blocks = [md.apply(10 + i, {"type": "allocate_producer_ids"}) for i in range(5)]
    ids = [set(range(first, first + count)) for first, count in blocks]
    assert sum(len(s) for s in ids) == len(set().union(*ids))


def test_placement_balances_replicas_and_leaders() -> None:
    brokers = {0: None, 1: None, 2: None}
    assignments = assign_replicas(brokers, 6, 3)
    leaders = [a[0] for a in assignments]
    assert sorted(leaders.count(b) for b in brokers) == [2, 2, 2]
    assert all(len(set(a)) == 3 for a in assignments)
    # a second topic counts the load already placed
    md = _cluster()
    md.apply(5, {"type": "create_topic", "name": "a", "topic_id": "1" * 32, "assignments": assign_replicas(brokers, 1, 1)})
    second = assign_replicas(brokers, 2, 1, md.replica_load())
    assert {second[0][0], second[1][0]} == {1, 2}


def test_placement_spreads_racks() -> None:
    brokers = {0: "a", 1: "a", 2: "b", 3: "b"}
    for replicas in assign_replicas(brokers, 8, 2):
        assert {brokers[b] for b in replicas} == {"a", "b"}


def test_placement_refuses_impossible_requests() -> None:
    with pytest.raises(MetadataError) as exc:
        assign_replicas({0: None}, 1, 3)
    assert exc.value.error_name == "INVALID_REPLICATION_FACTOR"
    with pytest.raises(MetadataError):
        assign_replicas({0: None}, 0, 1)
