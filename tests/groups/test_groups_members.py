"""Three members of one group on a 6-partition topic, per client (tidelog GroupConsumer over gRPC,
kafka-python, confluent-kafka): one owner per partition per generation, every record processed, a member
killed with SIGKILL loses its partitions to the others within the session timeout, and they resume from the
committed offsets with nothing lost. Then aiokafka and kcat -G (balanced consumer) consume in a group."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import defaultdict

import pytest

from groups_harness import (SESSION_S, Member, committed, create_topic, processed_values, produce,
                            stable_assignment, wait_until)

PARTITIONS = 6
PER_PARTITION = 40
ALL = {("t", p) for p in range(PARTITIONS)}


def _owners_per_generation(members: list[Member]) -> None:
    """Within one generation (where the client reports it), no partition has two owners."""
    by_generation: dict[int, dict] = defaultdict(dict)
    for m in members:
        for generation, tps in m.log().assigns:
            if generation < 0:
                continue
            for tp in tps:
                other = by_generation[generation].setdefault(tp, m.name)
                assert other == m.name, f"{tp} owned by {other} and {m.name} in generation {generation}"


def _first_of_current_ownership(member: Member, partition: int) -> int | None:
    """Offset of the first record of `partition` the member processed since it last started owning it (a
    run of assignments that all hold the partition counts as one ownership)."""
    holding = False
    first = None
    for event in member.log().events:
        if event[0] == "A":
            holds = any(p == partition for _, p in event[1])
            if holds and not holding:
                first = None
            holding = holds
        elif holding and first is None and event[1] == partition:
            first = event[2]
    return first


@pytest.mark.parametrize("client", ["tidelog", "kafka-python", "confluent"])
def test_three_members_share_partitions_and_survive_a_kill(node, tmp_path, client):
    topic = f"members-{client}"
    group = f"g-{client}"
    all_tps = {(topic, p) for p in range(PARTITIONS)}
    create_topic(node.grpc, topic, PARTITIONS)
    first = produce(node.grpc, topic, PARTITIONS, PER_PARTITION)
    members = [Member(client, node, group, topic, f"{client}-{i}", tmp_path) for i in range(3)]
    try:
        # Every record processed; the group settles with three members, each partition owned once.
        wait_until(lambda: processed_values(members) >= set(first), 60, what="the first batch to be processed")
        stable = wait_until(lambda: stable_assignment(node.grpc, group, 3, all_tps), 30, what="a stable group of 3")
        for m in members:  # what each member was told matches the coordinator's view
            assert m.log().assigns[-1][1] == stable[m.name], (m.name, m.log().assigns, stable)
        wait_until(lambda: committed(node.grpc, group) == {tp: PER_PARTITION for tp in all_tps}, 20,
                   what="offsets of the first batch to be committed")

        # New records; kill one member (SIGKILL) while it processes them.
        victim, survivors = members[0], members[1:]
        victim_partitions = {p for _, p in stable[victim.name]}
        second = produce(node.grpc, topic, PARTITIONS, PER_PARTITION, start=PER_PARTITION)
        wait_until(lambda: any(o >= PER_PARTITION for p, o, _ in victim.log().records), 20,
                   what="the victim to process new records")
        victim.kill9()
        killed_at = time.monotonic()
        # Nobody else commits these partitions until they move; a commit the victim sent just before it died
        # may still land, so the committed offset can only grow to what the victim processed.
        at_kill = committed(node.grpc, group)
        victim_next = {}
        for p_, o_, _ in victim.log().records:
            victim_next[p_] = max(victim_next.get(p_, 0), o_ + 1)

        moved = wait_until(lambda: stable_assignment(node.grpc, group, 2, all_tps), 30,
                           what="the survivors to take over")
        took = time.monotonic() - killed_at
        assert took < SESSION_S + 5, f"partitions moved only after {took:.1f}s"
        assert set().union(*moved.values()) == all_tps
        # Something left for every new owner to read, even if the victim had processed and committed all of
        # the second batch before it died.
        third = produce(node.grpc, topic, PARTITIONS, 5, start=2 * PER_PARTITION)

        # Nothing lost: every record of all batches processed by someone (duplicates allowed).
        wait_until(lambda: processed_values(members) >= set(first) | set(second) | set(third), 30,
                   what="every record to be processed after the move")
        # The new owners started each moved partition at its committed offset: at or after the one read at
        # the kill, never past what the victim had processed (nothing skipped).
        for p in victim_partitions:
            owner = next(m for m in survivors if (topic, p) in moved[m.name])
            start = wait_until(lambda: _first_of_current_ownership(owner, p), 20,
                               what=f"the new owner of partition {p} to process it")
            assert at_kill[(topic, p)] <= start <= victim_next.get(p, PER_PARTITION), (p, start, at_kill,
                                                                                        victim_next)
            assert start >= PER_PARTITION  # resumed, not restarted from the beginning
        _owners_per_generation(members)
        assert all(m.alive() for m in survivors), [m.stderr_tail() for m in survivors]
    finally:
        for m in members:
            m.stop()


def test_aiokafka_members_consume_in_a_group(node, tmp_path):
    topic, group = "members-aiokafka", "g-aiokafka"
    create_topic(node.grpc, topic, 4)
    values = produce(node.grpc, topic, 4, 10)
    members = [Member("aiokafka", node, group, topic, f"aiokafka-{i}", tmp_path) for i in range(2)]
    try:
        wait_until(lambda: processed_values(members) >= set(values), 60, what="aiokafka to consume everything")
        all_tps = {(topic, p) for p in range(4)}
        wait_until(lambda: stable_assignment(node.grpc, group, 2, all_tps), 30, what="a stable group of 2")
        wait_until(lambda: committed(node.grpc, group) == {tp: 10 for tp in all_tps}, 20, what="commits")
    finally:
        for m in members:
            m.stop()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_balanced_consumer(node, tmp_path):
    topic, group = "members-kcat", "g-kcat"
    create_topic(node.grpc, topic, 3)
    values = produce(node.grpc, topic, 3, 10)
    proc = subprocess.run(
        ["kcat", "-b", node.kafka, "-G", group, "-o", "beginning", "-c", str(len(values)), "-q", "-f", "%s\\n",
         "-X", "auto.commit.interval.ms=100", topic],
        capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(proc.stdout.decode().split()) == sorted(values)
    # kcat commits what it consumed when it leaves the group.
    all_tps = {(topic, p) for p in range(3)}
    wait_until(lambda: committed(node.grpc, group) == {tp: 10 for tp in all_tps}, 10, what="kcat's commits")
