"""tidelog.GroupConsumer against a group node: pause/resume keeps membership alive, and poll()/close() stay
bounded by their own timeouts while a rebalance is held by the coordinator (a member that does not rejoin)."""

from __future__ import annotations

import time

from groups_harness import create_topic, produce, wait_until

from tidelog import GroupConsumer, TopicPartition

LONG_REBALANCE_MS = 20_000  # the coordinator may hold a JoinGroup this long
BOUND_S = 2.0  # generous for poll(0.1) / close() on 2 shared cores, far below LONG_REBALANCE_MS


def _member(node, group: str, topic: str, **kwargs) -> GroupConsumer:
    kwargs.setdefault("session_timeout_ms", 3000)
    kwargs.setdefault("heartbeat_interval_ms", 300)
    return GroupConsumer(node.grpc, group, [topic], rebalance_timeout_ms=LONG_REBALANCE_MS, **kwargs)


def _timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def test_poll_and_close_stay_bounded_while_a_join_is_held(node):
    topic, group = "held-join", "g-held-join"
    create_topic(node.grpc, topic, 2)
    produce(node.grpc, topic, 2, 3)
    # `stuck` joins and then stops polling: its heartbeats keep it in the group but it never rejoins, so the
    # coordinator holds every other member's JoinGroup for up to the rebalance timeout.
    stuck = _member(node, group, topic)
    newcomer = None
    try:
        wait_until(lambda: stuck.poll(0.2) or stuck.assignment(), 30, what="the first member to be assigned")
        newcomer = _member(node, group, topic)
        for _ in range(10):
            records, took = _timed(newcomer.poll, 0.1)
            assert took < BOUND_S, f"poll(0.1) took {took:.1f}s while its join was held"
            assert records == []
        assert newcomer.assignment() == set()
        # The stuck member polls again: it rejoins, the held join completes on one of the newcomer's polls.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (stuck.assignment() and newcomer.assignment()):
            stuck.poll(0.1)
            _, took = _timed(newcomer.poll, 0.1)
            assert took < BOUND_S, f"poll(0.1) took {took:.1f}s"
        assert stuck.assignment() | newcomer.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
        assert not stuck.assignment() & newcomer.assignment()
        # A third member's join is held again (stuck stops polling once more): close() abandons it promptly.
        third = _member(node, group, topic)
        for _ in range(3):
            _, took = _timed(third.poll, 0.1)
            assert took < BOUND_S
        _, took = _timed(third.close)
        assert took < BOUND_S, f"close() took {took:.1f}s with a first join pending"
        # The newcomer is told to rejoin (heartbeat answer), gives its partitions back and waits for the held
        # join on its polls; close() then abandons the join and leaves the group, promptly too.
        deadline = time.monotonic() + 30
        while newcomer.assignment() and time.monotonic() < deadline:
            _, took = _timed(newcomer.poll, 0.1)
            assert took < BOUND_S, f"poll(0.1) took {took:.1f}s"
        assert newcomer.assignment() == set()
        for _ in range(3):
            _, took = _timed(newcomer.poll, 0.1)
            assert took < BOUND_S
        _, took = _timed(newcomer.close)
        assert took < BOUND_S, f"close() took {took:.1f}s with a rejoin pending"
        newcomer = None
    finally:
        if newcomer is not None:
            newcomer.close()
        stuck.close()


def test_paused_member_stays_in_the_group_past_its_session_timeout(node):
    from tidelog import GroupAdmin

    topic, group = "paused-member", "g-paused-member"
    create_topic(node.grpc, topic, 2)
    values = produce(node.grpc, topic, 2, 5)
    session_s = 1.0  # the node's minimum
    holder: dict = {}
    assigned: list[list[TopicPartition]] = []

    def on_assign(tps):
        assigned.append(tps)
        holder["member"].pause(tps)  # as with Kafka's clients: pause what was just assigned

    member = GroupConsumer(node.grpc, group, [topic], session_timeout_ms=int(session_s * 1000),
                           heartbeat_interval_ms=200, on_assign=on_assign)
    holder["member"] = member
    with member:
        deadline = time.monotonic() + 30
        while not assigned and time.monotonic() < deadline:
            assert member.poll(0.2) == []
        both = {TopicPartition(topic, 0), TopicPartition(topic, 1)}
        assert member.paused() == member.assignment() == both
        generation, member_id = member.generation_id, member.member_id
        # Three session timeouts on real time: polls return nothing, heartbeats keep the member in the group.
        deadline = time.monotonic() + 3 * session_s
        while time.monotonic() < deadline:
            assert member.poll(0.1) == []
        with GroupAdmin(node.grpc) as admin:
            described = admin.describe_group(group)
        assert described.state == "Stable"
        assert [m.member_id for m in described.members] == [member_id]
        assert (member.generation_id, member.member_id, len(assigned)) == (generation, member_id, 1)

        member.resume(TopicPartition(topic, 1))
        assert member.paused() == {TopicPartition(topic, 0)}
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            got += member.poll(0.2)
        assert {r.partition for r in got} == {1}
        member.resume((topic, 0))
        while len(got) < 10 and time.monotonic() < deadline:
            got += member.poll(0.2)
        for p in (0, 1):  # each partition in order from its start, nothing skipped or repeated
            assert [r.value.decode() for r in got if r.partition == p] == [v for v in values if v.startswith(f"{p}:")]
        assert member.paused() == set()


def test_closing_during_a_first_join_leaves_no_member_behind(node):
    """A first join is answered MEMBER_ID_REQUIRED with the member's id (as Kafka's JoinGroup v4+) before the
    coordinator holds it, so a member closed while its first join is held can still leave: the group does
    not keep it until its session or the rebalance times out."""
    from tidelog import GroupAdmin

    topic, group = "first-join-close", "g-first-join-close"
    create_topic(node.grpc, topic, 2)
    stuck = _member(node, group, topic)
    try:
        wait_until(lambda: stuck.poll(0.2) or stuck.assignment(), 30, what="the first member to be assigned")
        late = _member(node, group, topic)
        wait_until(lambda: late.poll(0.1) == [] and late.member_id, 10, what="the late member to get its id")
        with GroupAdmin(node.grpc) as admin:
            wait_until(lambda: len(admin.describe_group(group).members) == 2, 10, what="the held join to count")
            _, took = _timed(late.close)
            assert took < BOUND_S
            # Well inside the 3 s session and the 20 s rebalance timeout: only `stuck` is left.
            wait_until(lambda: [m.member_id for m in admin.describe_group(group).members] == [stuck.member_id],
                       1.5, what="the closed member to be gone")
    finally:
        stuck.close()
