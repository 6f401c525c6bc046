"""The reconciler's plan (pure) and its view of the data directory."""

from __future__ import annotations

from cluster.controller.metadata import ClusterMetadata
from cluster.replication.leadership import LeadershipTable
from cluster.replication.reconciler import (
    ReplicaKey,
    group_id_of,
    parse_group_id,
    plan,
    replica_dir,
    stray_replica_dirs,
)

ID_A, ID_B = "a" * 32, "b" * 32


def _md(*commands) -> ClusterMetadata:
    md = ClusterMetadata()
    for i, cmd in enumerate(commands):
        result = md.apply(i, cmd)
        assert not isinstance(result, Exception), result
    return md


def _create(name, topic_id, assignments):
    return {"type": "create_topic", "name": name, "topic_id": topic_id, "assignments": assignments}


def test_starts_what_is_assigned_here_with_the_assignment_as_voters():
    md = _md(_create("t", ID_A, [[1, 2, 3], [2, 3, 4], [4, 1, 2]]))
    p = plan(1, md, set())
    assert [(s.key.partition, s.voters) for s in p.start] == [(0, (1, 2, 3)), (2, (4, 1, 2))]
    assert p.stop == []
    running = {s.key for s in p.start}
    assert plan(1, md, running).empty


def test_deleted_and_recreated_topics_stop_the_old_replica_and_start_a_new_group():
    md = _md(_create("t", ID_A, [[1, 2]]), {"type": "delete_topic", "name": "t"}, _create("t", ID_B, [[2, 1]]))
    old = ReplicaKey("t", 0, ID_A)
    p = plan(1, md, {old})
    assert p.stop == [old]
    [new] = p.start
    assert new.key == ReplicaKey("t", 0, ID_B) and new.voters == (2, 1)
    assert new.key.group_id != old.group_id, "a new incarnation is a new Raft group"


def test_a_broker_joining_by_reassignment_starts_without_a_configuration():
    md = _md(_create("t", ID_A, [[1, 2, 3]]),
             {"type": "register_broker", "broker_id": 4, "host": "h", "grpc_port": 1, "kafka_port": 2,
              "raft_port": 3},
             *[{"type": "register_broker", "broker_id": b, "host": "h", "grpc_port": 1, "kafka_port": 2,
                "raft_port": 3} for b in (1, 2, 3)],
             {"type": "reassign_partition", "name": "t", "partition": 0, "target": [2, 3, 4]})
    [spec] = plan(4, md, set()).start
    assert spec.voters == () and spec.target == (2, 3, 4)
    # The leaving broker keeps its replica until the move is recorded as done.
    assert plan(1, md, {spec.key}).stop == []
    md.apply(100, {"type": "reassign_partition", "name": "t", "partition": 0, "replicas": [2, 3, 4]})
    assert plan(1, md, {spec.key}).stop == [spec.key]


def test_group_ids_name_the_topic_incarnation():
    gid = group_id_of("orders.v1", 12, ID_A)
    assert parse_group_id(gid) == ("orders.v1", 12, ID_A)
    assert parse_group_id("__controller") is None and parse_group_id("a/b/c") is None


def test_stray_directories_are_found(tmp_path):
    keep = ReplicaKey("t", 0, ID_A)
    for key in (keep, ReplicaKey("t", 1, ID_A), ReplicaKey("t", 0, ID_B)):
        replica_dir(tmp_path, key).mkdir(parents=True)
    (tmp_path / "replicas" / "not-a-topic-id").mkdir()
    strays = stray_replica_dirs(tmp_path, {keep})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in strays) == [
        f"replicas/{ID_A}/1", f"replicas/{ID_B}"]


def test_leadership_table_keeps_the_newest_term():
    table = LeadershipTable()
    assert table.update("g", 2, 5, (2, 3))
    assert not table.update("g", 3, 4), "an older term says nothing new"
    assert not table.update("g", None, 5), "no leader in the same term does not erase the known one"
    assert table.update("g", 3, 6)
    assert table.get("g").leader_id == 3 and table.get("g").isr == (3,)
    table.retain(set())
    assert table.get("g").leader_id == -1
