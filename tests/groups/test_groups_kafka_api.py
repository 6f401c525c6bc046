"""The Kafka group APIs against the coordinator, request by request (raw frames with our codec): a fenced
member's commit is refused ILLEGAL_GENERATION, a static member rejoins without a rebalance, FindCoordinator
refuses transaction keys cleanly, commits to unknown partitions are refused, OffsetFetch v8 batches groups."""

from __future__ import annotations

import os
import sys

import proto.kafka as k
from consumer_groups.consumer_protocol import Assignment, Subscription, encode_assignment, encode_subscription
from groups_harness import create_topic

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kafka"))
from kafka_listener_harness import RawClient  # noqa: E402

A = k.ApiKey
SUB = encode_subscription(Subscription(("api",)), 0)
NONE, NOT_COORDINATOR, ILLEGAL_GENERATION, UNKNOWN_TP = 0, 16, 22, 3
REBALANCE_IN_PROGRESS, MEMBER_ID_REQUIRED, INVALID_REQUEST = 27, 79, 42


def _port(node) -> int:
    return int(node.kafka.rsplit(":", 1)[1])


def _join_body(group: str, member_id: str = "", instance: str | None = None, session_ms: int = 6000) -> dict:
    return {"group_id": group, "session_timeout_ms": session_ms, "rebalance_timeout_ms": 10_000,
            "member_id": member_id, "group_instance_id": instance, "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": SUB}], "reason": None}


def _join(client: RawClient, group: str, instance: str | None = None) -> dict:
    """JoinGroup v5 including the MEMBER_ID_REQUIRED round trip (dynamic members)."""
    r = client.request(A.JOIN_GROUP, 5, _join_body(group, instance=instance), timeout=20)
    if r["error_code"] == MEMBER_ID_REQUIRED:
        r = client.request(A.JOIN_GROUP, 5, _join_body(group, r["member_id"], instance), timeout=20)
    return r


def _sync(client: RawClient, group: str, joined: dict, instance: str | None = None) -> dict:
    assignments = []
    if joined["leader"] == joined["member_id"]:
        members = [m["member_id"] for m in joined["members"]]
        for i, m in enumerate(members):
            mine = tuple(p for p in range(2) if p % len(members) == i)
            assignments.append({"member_id": m, "assignment": encode_assignment(Assignment((("api", mine),)))})
    return client.request(A.SYNC_GROUP, 3, {"group_id": group, "generation_id": joined["generation_id"],
                                           "member_id": joined["member_id"], "group_instance_id": instance,
                                           "assignments": assignments}, timeout=20)


def _commit(client: RawClient, group: str, generation: int, member: str, topic: str = "api", partition: int = 0,
            offset: int = 1) -> int:
    r = client.request(A.OFFSET_COMMIT, 7, {
        "group_id": group, "generation_id_or_member_epoch": generation, "member_id": member,
        "group_instance_id": None, "topics": [{"name": topic, "partitions": [
            {"partition_index": partition, "committed_offset": offset, "committed_leader_epoch": -1,
             "committed_metadata": ""}]}]})
    return r["topics"][0]["partitions"][0]["error_code"]


def _heartbeat(client: RawClient, group: str, joined: dict, instance: str | None = None) -> int:
    return client.request(A.HEARTBEAT, 3, {"group_id": group, "generation_id": joined["generation_id"],
                                           "member_id": joined["member_id"], "group_instance_id": instance})["error_code"]


def test_fenced_member_commit_is_illegal_generation(node):
    _ensure_topic(node)
    group = "fenced"
    with RawClient(_port(node), timeout=20) as a, RawClient(_port(node), timeout=20) as b:
        first = _join(a, group)
        assert first["error_code"] == NONE, first
        assert _sync(a, group, first)["error_code"] == NONE
        assert _commit(a, group, first["generation_id"], first["member_id"]) == NONE

        # b joins: a rebalance; a rejoins and both get the next generation.
        r = b.request(A.JOIN_GROUP, 5, _join_body(group), timeout=20)
        assert r["error_code"] == MEMBER_ID_REQUIRED
        b.send(A.JOIN_GROUP, 5, _join_body(group, r["member_id"]))
        assert _heartbeat(a, group, first) == REBALANCE_IN_PROGRESS
        a.send(A.JOIN_GROUP, 5, _join_body(group, first["member_id"]))
        _, second_a = a.recv(20)
        _, second_b = b.recv(20)
        assert second_a["generation_id"] == second_b["generation_id"] == first["generation_id"] + 1
        b.send(A.SYNC_GROUP, 3, {"group_id": group, "generation_id": second_b["generation_id"],
                                 "member_id": second_b["member_id"], "group_instance_id": None, "assignments": []})
        assert _sync(a, group, second_a)["error_code"] == NONE
        assert b.recv(20)[1]["error_code"] == NONE

        # The old generation is fenced; the current one commits.
        assert _commit(a, group, first["generation_id"], first["member_id"], offset=5) == ILLEGAL_GENERATION
        assert _commit(a, group, second_a["generation_id"], second_a["member_id"], offset=7) == NONE
        fetched = a.request(A.OFFSET_FETCH, 7, {"group_id": group, "topics": [{"name": "api", "partition_indexes": [0]}],
                                                "require_stable": False})
        assert fetched["topics"][0]["partitions"][0]["committed_offset"] == 7


def _ensure_topic(node) -> None:
    from tidelog.admin import Admin

    with Admin(node.grpc) as admin:
        if "api" not in admin.list_topics():
            create_topic(node.grpc, "api", 2)


def test_static_member_rejoins_without_a_rebalance(node):
    _ensure_topic(node)
    group = "static"
    with RawClient(_port(node), timeout=20) as a, RawClient(_port(node), timeout=20) as b:
        a.send(A.JOIN_GROUP, 5, _join_body(group, instance="a"))
        b.send(A.JOIN_GROUP, 5, _join_body(group, instance="b"))
        _, ja = a.recv(20)
        _, jb = b.recv(20)
        assert ja["error_code"] == jb["error_code"] == NONE and ja["generation_id"] == jb["generation_id"]
        leader, follower = (a, ja), (b, jb)
        if jb["leader"] == jb["member_id"]:
            leader, follower = follower, leader
        follower[0].send(A.SYNC_GROUP, 3, {"group_id": group, "generation_id": follower[1]["generation_id"],
                                          "member_id": follower[1]["member_id"], "group_instance_id":
                                          "a" if follower[0] is a else "b", "assignments": []})
        assert _sync(leader[0], group, leader[1], "a" if leader[0] is a else "b")["error_code"] == NONE
        assert follower[0].recv(20)[1]["error_code"] == NONE
        generation = ja["generation_id"]

    # "a" restarts: a new connection, an empty member id, the same instance id.
    with RawClient(_port(node), timeout=20) as a2, RawClient(_port(node), timeout=20) as b2:
        again = a2.request(A.JOIN_GROUP, 5, _join_body(group, instance="a"), timeout=20)
        assert again["error_code"] == NONE, again
        assert again["generation_id"] == generation  # no rebalance
        assert again["member_id"] != ja["member_id"]  # the old id is fenced
        assert _heartbeat(b2, group, jb, "b") == NONE  # the other member saw no rebalance
        assert _heartbeat(a2, group, ja, "a") == 82  # FENCED_INSTANCE_ID for the old id


def test_find_coordinator_and_bad_requests(node):
    _ensure_topic(node)
    with RawClient(_port(node)) as c:
        for version in (0, 2, 3):
            body = {"key": "any-group", "key_type": 0}
            r = c.request(A.FIND_COORDINATOR, version, body)
            assert r["error_code"] == NONE and r["port"] == _port(node), r
        r = c.request(A.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["g1", "g2"]})
        assert [x["error_code"] for x in r["coordinators"]] == [NONE, NONE]
        assert {x["key"] for x in r["coordinators"]} == {"g1", "g2"}
        txn = c.request(A.FIND_COORDINATOR, 4, {"key_type": 1, "coordinator_keys": ["txn"]})
        assert txn["coordinators"][0]["error_code"] == INVALID_REQUEST
        assert "transaction" in txn["coordinators"][0]["error_message"]
        # Commits to unknown topics/partitions are refused per partition, the rest go through.
        r = c.request(A.OFFSET_COMMIT, 2, {"group_id": "simple", "generation_id_or_member_epoch": -1, "member_id": "",
                                           "retention_time_ms": -1, "topics": [
            {"name": "no-such-topic", "partitions": [{"partition_index": 0, "committed_offset": 1,
                                                      "committed_metadata": ""}]},
            {"name": "api", "partitions": [{"partition_index": 99, "committed_offset": 1, "committed_metadata": ""},
                                           {"partition_index": 1, "committed_offset": 3, "committed_metadata": "m"}]}]})
        codes = [[p["error_code"] for p in t["partitions"]] for t in r["topics"]]
        assert codes == [[UNKNOWN_TP], [UNKNOWN_TP, NONE]], r
        # OffsetFetch v8: several groups in one request.
        r = c.request(A.OFFSET_FETCH, 8, {"groups": [
            {"group_id": "simple", "topics": [{"name": "api", "partition_indexes": [1]}]},
            {"group_id": "nobody", "topics": None}], "require_stable": True})
        simple, nobody = r["groups"]
        assert simple["error_code"] == NONE
        assert simple["topics"][0]["partitions"][0]["committed_offset"] == 3
        assert simple["topics"][0]["partitions"][0]["metadata"] == "m"
        assert nobody["error_code"] == NONE and nobody["topics"] == []
        # ListGroups / DescribeGroups see the simple group.
        listed = c.request(A.LIST_GROUPS, 4, {"states_filter": []})
        assert listed["error_code"] == NONE and "simple" in {g["group_id"] for g in listed["groups"]}
        described = c.request(A.DESCRIBE_GROUPS, 5, {"groups": ["simple"], "include_authorized_operations": False})
        assert described["groups"][0]["group_state"] == "Empty"
        # OffsetDelete removes the offset.
        r = c.request(A.OFFSET_DELETE, 0, {"group_id": "simple", "topics": [
            {"name": "api", "partitions": [{"partition_index": 1}]}]})
        assert r["error_code"] == NONE
        r = c.request(A.OFFSET_FETCH, 7, {"group_id": "simple", "topics": None, "require_stable": False})
        assert r["topics"] == []
