"""Kafka DeleteGroups (key 42) against the coordinator: raw v0 and v2 frames, kafka-python's
`KafkaAdminClient.delete_groups` and confluent-kafka's `AdminClient.delete_consumer_groups`. A group whose
consumer closed (offsets committed) is deleted with its offsets; a group with an active member answers
NON_EMPTY_GROUP; an unknown group GROUP_ID_NOT_FOUND. NOT_COORDINATOR (another broker coordinates the group)
is checked on the three-node cluster in tests/cluster_e2e/test_cluster_delete.py."""

from __future__ import annotations

import os
import sys
import time

import pytest

import proto.kafka as k
from groups_harness import committed, create_topic, group_state, produce, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kafka"))
from kafka_listener_harness import RawClient  # noqa: E402

A = k.ApiKey
NONE, GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, INVALID_GROUP_ID = 0, 69, 68, 24


def _port(node) -> int:
    return int(node.kafka.rsplit(":", 1)[1])


def _topic(node, name: str) -> None:
    from tidelog.admin import Admin

    with Admin(node.grpc) as admin:
        if name not in admin.list_topics():
            create_topic(node.grpc, name, 1)
            produce(node.grpc, name, 1, 5)


def _commit_simple(c: RawClient, group: str, topic: str, offset: int) -> None:
    r = c.request(A.OFFSET_COMMIT, 2, {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "",
                                       "retention_time_ms": -1, "topics": [{"name": topic, "partitions": [
                                           {"partition_index": 0, "committed_offset": offset,
                                            "committed_metadata": ""}]}]})
    assert r["topics"][0]["partitions"][0]["error_code"] == NONE, r


def test_delete_groups_raw_versions(node):
    _topic(node, "dg-raw")
    with RawClient(_port(node), timeout=20) as c:
        assert A.DELETE_GROUPS in {e["api_key"] for e in c.request(A.API_VERSIONS, 3, {
            "client_software_name": "t", "client_software_version": "1"})["api_keys"]}
        for version in (0, 1, 2):
            group = f"dg-raw-{version}"
            _commit_simple(c, group, "dg-raw", 3)
            assert committed(node.grpc, group) == {("dg-raw", 0): 3}
            r = c.request(A.DELETE_GROUPS, version, {"groups_names": [group, "dg-nobody", ""]})
            assert {x["group_id"]: x["error_code"] for x in r["results"]} == {
                group: NONE, "dg-nobody": GROUP_ID_NOT_FOUND, "": INVALID_GROUP_ID}, r
            assert committed(node.grpc, group) == {}
            # Deleted means gone: a second delete does not find it.
            r = c.request(A.DELETE_GROUPS, version, {"groups_names": [group]})
            assert r["results"] == [{"group_id": group, "error_code": GROUP_ID_NOT_FOUND}]
        assert c.request(A.DELETE_GROUPS, 2, {"groups_names": []})["results"] == []


def test_delete_groups_kafka_python(node):
    pytest.importorskip("kafka")
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient

    topic, group = "dg-kp", "dg-kp-group"
    _topic(node, topic)
    consumer = KafkaConsumer(topic, bootstrap_servers=node.kafka, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=500,
                             request_timeout_ms=20_000)
    admin = KafkaAdminClient(bootstrap_servers=node.kafka, request_timeout_ms=20_000)
    try:
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 5 and time.monotonic() < deadline:
            seen += sum(len(rs) for rs in consumer.poll(timeout_ms=500).values())
        assert seen == 5
        consumer.commit()
        assert committed(node.grpc, group) == {(topic, 0): 5}
        # The consumer is a live member: the group is not empty.
        assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}
        assert committed(node.grpc, group) == {(topic, 0): 5}
        consumer.close()
        wait_until(lambda: group_state(node.grpc, group).state == "Empty", 20, what="the group empties")
        assert admin.delete_groups([group, "dg-kp-nobody"]) == {group: "OK", "dg-kp-nobody": "GroupIdNotFoundError"}
        assert committed(node.grpc, group) == {}
        assert admin.list_group_offsets(group) == {group: {}}
    finally:
        consumer.close()
        admin.close()


def test_delete_groups_confluent_kafka(node):
    ck = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient

    topic, group = "dg-ck", "dg-ck-group"
    _topic(node, topic)
    consumer = ck.Consumer({"bootstrap.servers": node.kafka, "group.id": group, "enable.auto.commit": False,
                            "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    admin = AdminClient({"bootstrap.servers": node.kafka})

    def delete(g: str):
        """None on success, else the KafkaError code."""
        try:
            admin.delete_consumer_groups([g], request_timeout=20)[g].result(30)
        except ck.KafkaException as exc:
            return exc.args[0].code()
        return None

    closed = False
    try:
        consumer.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 5 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                seen += 1
        assert seen == 5
        consumer.commit(asynchronous=False)
        assert committed(node.grpc, group) == {(topic, 0): 5}
        consumer.poll(0.1)  # the member stays alive
        assert delete(group) == ck.KafkaError.NON_EMPTY_GROUP
        consumer.close()
        closed = True
        wait_until(lambda: group_state(node.grpc, group).state == "Empty", 20, what="the group empties")
        assert delete(group) is None
        assert committed(node.grpc, group) == {}
        assert delete("dg-ck-nobody") == ck.KafkaError.GROUP_ID_NOT_FOUND
    finally:
        if not closed:
            consumer.close()
