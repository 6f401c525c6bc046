"""The coordinator's broker is killed (SIGKILL) and restarted on the same data: committed offsets and group
metadata come back from `__consumer_offsets`; a live member's group re-forms and goes on, and a new member of
a group whose member had left starts exactly at the committed offsets."""

from __future__ import annotations

import pytest

from groups_harness import GroupNode, Member, committed, create_topic, processed_values, produce, \
    stable_assignment, wait_until

PARTITIONS = 3
PER_PARTITION = 10


@pytest.mark.parametrize("client", ["tidelog", "kafka-python"])
def test_groups_come_back_after_a_coordinator_crash(tmp_path, client):
    node = GroupNode(tmp_path / "data").start()
    members: list[Member] = []
    try:
        topic = "restart"
        tps = {(topic, p) for p in range(PARTITIONS)}
        create_topic(node.grpc, topic, PARTITIONS)
        first = produce(node.grpc, topic, PARTITIONS, PER_PARTITION)
        live = Member(client, node, "live", topic, "live-0", tmp_path)
        leaver = Member(client, node, "left", topic, "left-0", tmp_path)
        members += [live, leaver]
        done = {tp: PER_PARTITION for tp in tps}
        for group in ("live", "left"):
            wait_until(lambda: committed(node.grpc, group) == done, 60, what=f"group {group} to commit")
        leaver.stop()  # leaves the group cleanly: Empty, offsets kept
        wait_until(lambda: stable_assignment(node.grpc, "live", 1, tps), 20, what="the live group to be stable")

        node.kill9()
        node.start()

        assert committed(node.grpc, "live") == done
        assert committed(node.grpc, "left") == done
        # The live member's group re-forms (loaded Stable, its heartbeats still valid) and goes on.
        second = produce(node.grpc, topic, PARTITIONS, PER_PARTITION, start=PER_PARTITION)
        wait_until(lambda: processed_values([live]) >= set(first) | set(second), 60,
                   what="the live member to go on after the restart")
        wait_until(lambda: committed(node.grpc, "live") == {tp: 2 * PER_PARTITION for tp in tps}, 30,
                   what="the live member's new commits")
        # A new member of the other group resumes from the committed offsets: nothing before them again.
        fresh = Member(client, node, "left", topic, "left-1", tmp_path)
        members.append(fresh)
        wait_until(lambda: processed_values([fresh]) >= set(second), 60, what="the new member to catch up")
        assert not processed_values([fresh]) & set(first), "the new member re-read committed records"
    finally:
        for m in members:
            m.stop()
        node.stop()
