"""librdkafka's cooperative-sticky assignor (incremental rebalancing, KIP-429) through our coordinator: a second
member joining takes partitions over in two rebalances without the first member ever giving up the
partitions it keeps, and every record is consumed exactly by the partition's owner of the moment."""

from __future__ import annotations

import time

from groups_harness import create_topic, produce

PARTITIONS = 6
PER_PARTITION = 10
DEADLINE_S = 60


def _consumer(node, group: str, name: str):
    from confluent_kafka import Consumer

    return Consumer({"bootstrap.servers": node.kafka, "group.id": group, "client.id": name,
                  "partition.assignment.strategy": "cooperative-sticky", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 300})


def test_cooperative_sticky_moves_only_what_moves(node):
    topic, group = "coop", "g-coop"
    create_topic(node.grpc, topic, PARTITIONS)
    values = set(produce(node.grpc, topic, PARTITIONS, PER_PARTITION))
    events: list[tuple[str, str, frozenset[int]]] = []  # (member, "assign"|"revoke", partitions)
    seen: dict[str, set[str]] = {"a": set(), "b": set()}

    def callbacks(name: str):
        def on_assign(_c, tps):
            events.append((name, "assign", frozenset(tp.partition for tp in tps)))

        def on_revoke(_c, tps):
            events.append((name, "revoke", frozenset(tp.partition for tp in tps)))

        return {"on_assign": on_assign, "on_revoke": on_revoke}

    def poll(name: str, c) -> None:
        msg = c.poll(0.05)
        if msg is not None and msg.error() is None:
            seen[name].add(msg.value().decode())

    a = _consumer(node, group, "a")
    b = None
    try:
        a.subscribe([topic], **callbacks("a"))
        deadline = time.monotonic() + DEADLINE_S
        while len(a.assignment()) < PARTITIONS:
            assert time.monotonic() < deadline, f"a never owned every partition: {events}"
            poll("a", a)
        before = {tp.partition for tp in a.assignment()}
        b = _consumer(node, group, "b")
        b.subscribe([topic], **callbacks("b"))
        while True:
            assert time.monotonic() < deadline, f"no balanced cooperative group: {events}"
            poll("a", a)
            poll("b", b)
            owned_a = {tp.partition for tp in a.assignment()}
            owned_b = {tp.partition for tp in b.assignment()}
            if len(owned_a) == len(owned_b) == PARTITIONS // 2 and not owned_a & owned_b \
                    and seen["a"] | seen["b"] >= values:
                break
        # Incremental: a's revocations name only what moved to b, never the partitions it kept.
        revoked_a = set().union(*(p for who, kind, p in events if who == "a" and kind == "revoke"))
        assert revoked_a == before - owned_a == owned_b, events
        assert not any(who == "a" and kind == "revoke" and p & owned_a for who, kind, p in events), events
        # Every record read, each by a member that owned its partition when it read it (values are "p:i").
        assert seen["a"] | seen["b"] == values
        assert all(int(v.split(":")[0]) in owned_b for v in seen["b"])
    finally:
        a.close()
        if b is not None:
            b.close()
