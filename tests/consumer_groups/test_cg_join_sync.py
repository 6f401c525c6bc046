"""JoinGroup/SyncGroup flow: deferred answers, leader and followers, generations, member ids, protocol
selection, leader succession and the join-time validations."""

from __future__ import annotations

import dataclasses

from cg_harness import REBALANCE_MS, TEST_CONFIG, Shell, assignment, subscription

from consumer_groups import (
    DeleteGroupsRequest,
    ErrorCode,
    GroupConfig,
    GroupState,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    MemberIdentity,
    SyncGroupRequest,
    SyncGroupResponse,
)
from consumer_groups.records import decode_group_value


def delayed_config(delay_ms: int = 100) -> GroupConfig:
    return dataclasses.replace(TEST_CONFIG, initial_rebalance_delay_ms=delay_ms)


def test_three_members_deferred_join_and_sync() -> None:
    shell = Shell(delayed_config(100))
    joins = [shell.join_new("g", client_id=f"c{i}") for i in range(3)]
    assert all(shell.answer(h) is None for h in joins), "JoinGroup waits for the rebalance to complete"

    shell.advance(100)  # members arrived during the delay: it is extended once
    assert all(shell.answer(h) is None for h in joins)
    shell.advance(100)
    answers: list[JoinGroupResponse] = [shell.answer(h) for h in joins]  # type: ignore[misc]
    assert all(a.error == ErrorCode.NONE for a in answers)
    assert {a.generation_id for a in answers} == {1}
    leader = answers[0].member_id  # the first joiner leads
    assert {a.leader for a in answers} == {leader}
    assert {a.protocol_name for a in answers} == {"range"} and {a.protocol_type for a in answers} == {"consumer"}
    ids = [a.member_id for a in answers]
    assert len(set(ids)) == 3 and all(i.startswith(f"c{n}-") for n, i in enumerate(ids))
    # Only the leader learns the members and their subscriptions.
    assert [m.member_id for m in answers[0].members] == ids
    assert all(m.metadata == subscription("t") for m in answers[0].members)
    assert answers[1].members == () and answers[2].members == ()

    # Followers' SyncGroups wait for the leader's.
    follower_syncs = [shell.sync("g", m, 1) for m in ids[1:]]
    assert all(shell.answer(h) is None for h in follower_syncs)
    assert shell.coord.group_view("g").state is GroupState.COMPLETING_REBALANCE
    plan = {m: assignment(("t", i)) for i, m in enumerate(ids)}
    leader_sync = shell.sync("g", leader, 1, plan)
    for member, handle in zip(ids, [leader_sync, *follower_syncs], strict=True):
        response = shell.answer(handle)
        assert response == SyncGroupResponse(ErrorCode.NONE, "consumer", "range", plan[member])
    assert shell.coord.group_view("g").state is GroupState.STABLE

    # Each rebalance bumps the generation by exactly one: a member leaves ...
    shell.call(LeaveGroupRequest("g", (MemberIdentity(ids[2]),)))
    assert shell.heartbeat("g", ids[0], 1) == ErrorCode.REBALANCE_IN_PROGRESS
    rejoin = [shell.join("g", m) for m in ids[:2]]
    assert [shell.answer(h).generation_id for h in rejoin] == [2, 2]
    shell.sync("g", leader, 2, {m: plan[m] for m in ids[:2]})
    shell.sync("g", ids[1], 2)
    # ... and one arrives.
    newcomer = shell.join_new("g")
    rejoin = [shell.join("g", m) for m in ids[:2]]
    assert {shell.answer(h).generation_id for h in [newcomer, *rejoin]} == {3}


def test_sync_answers_wait_for_the_assignment_to_be_durable() -> None:
    shell = Shell(auto_persist=False)
    first = shell.answer(shell.join_new("g"))
    leader = first.member_id
    handle = shell.sync("g", leader, 1, {leader: assignment(("t", 0))})
    assert shell.answer(handle) is None and len(shell.pending) == 1
    record = shell.pending[0].records[0]
    value = decode_group_value(record.value)
    assert (value.generation_id, value.leader_id, value.protocol_name) == (1, leader, "range")
    assert value.members[0].assignment == assignment(("t", 0))
    assert shell.coord.group_view("g").state is GroupState.COMPLETING_REBALANCE
    shell.confirm_all()
    assert shell.answer(handle).assignment == assignment(("t", 0))
    assert shell.coord.group_view("g").state is GroupState.STABLE


def test_failed_assignment_write_answers_coordinator_errors_and_rebalances() -> None:
    shell = Shell(auto_persist=False)
    a = shell.answer(shell.join_new("g")).member_id
    follower_handle = shell.join_new("g")
    shell.join("g", a)
    b = shell.answer(follower_handle).member_id
    gen = shell.answer(follower_handle).generation_id
    assert not shell.pending
    follower_sync = shell.sync("g", b, gen)
    leader_sync = shell.sync("g", a, gen, {a: assignment(("t", 0)), b: assignment(("t", 1))})
    (write,) = shell.pending
    shell.confirm(write.write_id, ErrorCode.NOT_LEADER_OR_FOLLOWER)
    assert shell.answer(leader_sync) == SyncGroupResponse(ErrorCode.NOT_COORDINATOR)
    assert shell.answer(follower_sync) == SyncGroupResponse(ErrorCode.NOT_COORDINATOR)
    assert shell.coord.group_view("g").state is GroupState.PREPARING_REBALANCE
    assert all(m.assignment == b"" for m in shell.coord.group_view("g").members)


def test_member_id_required_only_when_asked() -> None:
    shell = Shell(delayed_config(1000))
    required = shell.call_join("g", require_known=True)
    assert required.error == ErrorCode.MEMBER_ID_REQUIRED and required.member_id.startswith("client-")
    assert shell.coord.group_view("g").members == ()  # pending, not a member yet
    # An old (v0-v3) join with no member id is parked straight away.
    handle = shell.join("g")
    assert shell.answer(handle) is None
    assert len(shell.coord.group_view("g").members) == 1


def test_unknown_member_joining_unknown_group() -> None:
    shell = Shell()
    assert shell.call_join("nope", "ghost").error == ErrorCode.UNKNOWN_MEMBER_ID
    assert shell.coord.group_view("nope") is None


def test_protocol_selection_by_votes_then_preference() -> None:
    shell = Shell(delayed_config(100))
    both = lambda *names: tuple((n, subscription("t")) for n in names)  # noqa: E731
    handles = [
        shell.join("g", protocols=both("range", "roundrobin")),
        shell.join("g", protocols=both("roundrobin", "range", "sticky")),
        shell.join("g", protocols=both("range", "sticky", "roundrobin")),
    ]
    shell.advance(1000)
    assert {shell.answer(h).protocol_name for h in handles} == {"range"}  # 2 votes to 1

    shell = Shell(delayed_config(100))
    handles = [
        shell.join("g", protocols=both("roundrobin", "range")),
        shell.join("g", protocols=both("range", "roundrobin")),
    ]
    shell.advance(1000)
    assert {shell.answer(h).protocol_name for h in handles} == {"roundrobin"}  # tie: first member's preference

    # A member sharing no protocol with the group, or of another protocol type, is refused.
    assert shell.call_join("g", protocols=both("sticky")).error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    other_type = JoinGroupRequest("g", "", "connect", both("range"), 10_000)
    assert shell.call(other_type).error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert shell.call(JoinGroupRequest("g2", "", "consumer", (), 10_000)).error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert shell.coord.group_view("g2") is None  # a failed first join leaves no group behind


def test_leader_is_rechosen_when_the_leader_leaves() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 3)
    leader = shell.coord.group_view("g").leader_id
    others = [m for m in members if m != leader]
    shell.call(LeaveGroupRequest("g", (MemberIdentity(leader),)))
    handles = [shell.join("g", m) for m in others]
    answers = [shell.answer(h) for h in handles]
    new_leader = answers[0].leader
    assert new_leader in others and {a.leader for a in answers} == {new_leader}
    assert [len(a.members) for a in answers] == [2 if a.member_id == new_leader else 0 for a in answers]


def test_leader_that_did_not_rejoin_hands_over_to_a_member_that_did() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    leader = shell.coord.group_view("g").leader_id
    follower = next(m for m in members if m != leader)
    handle = shell.join("g", follower, topics=("t", "u"))  # metadata change: rebalance
    for _ in range(REBALANCE_MS // 3000 - 1):  # the leader stays alive but never rejoins
        shell.advance(3000)
        assert shell.heartbeat("g", leader, gen) == ErrorCode.REBALANCE_IN_PROGRESS
    assert shell.answer(handle) is None
    shell.advance(3000)
    answer = shell.answer(handle)
    assert (answer.leader, answer.generation_id, [m.member_id for m in answer.members]) == (
        follower,
        gen + 1,
        [follower],
    )
    assert shell.heartbeat("g", leader, gen) == ErrorCode.UNKNOWN_MEMBER_ID


def test_rejoins_in_stable_and_completing() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    leader = shell.coord.group_view("g").leader_id
    follower = next(m for m in members if m != leader)
    # A follower rejoining with unchanged metadata just gets the current generation back.
    again = shell.call_join("g", follower)
    assert (again.error, again.generation_id, again.members) == (ErrorCode.NONE, gen, ())
    assert shell.coord.group_view("g").state is GroupState.STABLE
    # The leader rejoining forces a rebalance (it wants to reassign).
    handle = shell.join("g", leader)
    assert shell.answer(handle) is None
    assert shell.coord.group_view("g").state is GroupState.PREPARING_REBALANCE
    shell.join("g", follower)
    assert shell.answer(handle).generation_id == gen + 1
    # In CompletingRebalance a repeated join (lost answer) is answered again, members for the leader.
    repeat = shell.call_join("g", leader)
    assert repeat.generation_id == gen + 1 and len(repeat.members) == 2


def test_duplicate_parked_joins_share_the_answer() -> None:
    shell = Shell(delayed_config(100))
    first = shell.join("g")
    member_id = shell.coord.group_view("g").members[0].member_id
    second = shell.join("g", member_id)
    shell.advance(100)
    assert shell.answer(first) == shell.answer(second) and shell.answer(first).error == ErrorCode.NONE


def test_initial_rebalance_delay() -> None:
    shell = Shell(delayed_config(3000))
    handle = shell.join("g")
    shell.advance(2999)
    assert shell.answer(handle) is None
    shell.advance(1)
    assert shell.answer(handle).generation_id == 1
    # A new member arriving during the delay extends it by another delay, up to the rebalance timeout.
    shell = Shell(delayed_config(3000))
    first = shell.join("g", rebalance_ms=4000)
    shell.advance(2000)
    shell.join("g", rebalance_ms=4000)
    shell.advance(1000)  # 3000: extended by min(delay, remaining 1000)
    assert shell.answer(first) is None
    shell.advance(1000)
    assert shell.answer(first).generation_id == 1


def test_invalid_session_timeout() -> None:
    shell = Shell()
    for session in (TEST_CONFIG.session_timeout_min_ms - 1, TEST_CONFIG.session_timeout_max_ms + 1):
        assert shell.call_join("g", session_ms=session).error == ErrorCode.INVALID_SESSION_TIMEOUT
    assert shell.call_join("", require_known=True).error == ErrorCode.INVALID_GROUP_ID


def test_group_max_size() -> None:
    shell = Shell(dataclasses.replace(TEST_CONFIG, group_max_size=2))
    shell.stable_group("g", 2)
    full = shell.call_join("g", require_known=True)  # MEMBER_ID_REQUIRED first, then refused
    assert shell.call_join("g", full.member_id).error == ErrorCode.GROUP_MAX_SIZE_REACHED
    assert len(shell.coord.group_view("g").members) == 2


def test_dead_group_answers_coordinator_not_available() -> None:
    shell = Shell(auto_persist=False)
    shell.answer(shell.join("g"))  # generation 1 with one member ...
    member = shell.coord.group_view("g").members[0].member_id
    shell.call(LeaveGroupRequest("g", (MemberIdentity(member),)))  # ... then empty
    shell.confirm_all()
    delete = shell.send(DeleteGroupsRequest(("g",)))
    assert shell.answer(delete) is None and shell.coord.group_view("g").state is GroupState.DEAD
    assert shell.call_join("g").error == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert shell.call(HeartbeatRequest("g", 1, member)).error == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert shell.call(SyncGroupRequest("g", 1, member)).error == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert shell.commit_errors(shell.commit("g", {("t", 0): 1})) == {ErrorCode.COORDINATOR_NOT_AVAILABLE}
    shell.confirm_all()
    assert shell.answer(delete).results[0].error == ErrorCode.NONE and shell.coord.group_view("g") is None


def test_group_view_mid_rebalance_after_a_protocol_switch() -> None:
    shell = Shell(delayed_config(100))
    both = (("range", subscription("t")), ("roundrobin", subscription("t")))
    handles = [shell.join("g", protocols=both), shell.join("g", protocols=both)]
    shell.advance(200)
    a, b = (shell.answer(h) for h in handles)
    rejoin = shell.join("g", a.member_id, protocols=both[1:])  # drops "range"; b has not rejoined yet
    assert shell.answer(rejoin) is None
    view = shell.coord.group_view("g")  # a no longer offers the old generation's protocol: nothing to show
    assert view.protocol_name == "range"
    assert [m.subscription for m in view.members] == [b"", subscription("t")]
