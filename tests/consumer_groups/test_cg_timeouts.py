"""Time-driven behaviour: session expiry, rebalance timeout, pending sync and pending member expiry,
new-member join timeout, and a late poll behaving like punctual ones."""

from __future__ import annotations

import dataclasses

from cg_harness import REBALANCE_MS, SESSION_MS, TEST_CONFIG, Shell, assignment

from consumer_groups import ErrorCode, GroupState, JoinGroupResponse


def test_session_timeout_removes_member_and_its_partitions_move() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    leader = shell.coord.group_view("g").leader_id
    silent = next(m for m in members if m != leader)
    for _ in range(3):  # the leader heartbeats, the other member has gone quiet
        shell.advance(3000)
        assert shell.heartbeat("g", leader, gen) == ErrorCode.NONE
    shell.advance(SESSION_MS - 9000)
    assert [m.member_id for m in shell.coord.group_view("g").members] == [leader]
    assert shell.heartbeat("g", leader, gen) == ErrorCode.REBALANCE_IN_PROGRESS
    assert shell.heartbeat("g", silent, gen) == ErrorCode.UNKNOWN_MEMBER_ID
    rejoin = shell.answer(shell.join("g", leader))
    assert rejoin.generation_id == gen + 1 and [m.member_id for m in rejoin.members] == [leader]
    # The leader now assigns every partition to itself.
    sync = shell.sync("g", leader, gen + 1, {leader: assignment(("t", 0), ("t", 1))})
    assert shell.answer(sync).assignment == assignment(("t", 0), ("t", 1))


def test_session_deadline_is_exact() -> None:
    shell = Shell()
    gen, (member,) = shell.stable_group("g", 1)
    shell.advance(SESSION_MS - 1)
    assert shell.heartbeat("g", member, gen) == ErrorCode.NONE  # restarts the session clock
    shell.advance(SESSION_MS - 1)
    assert shell.coord.group_view("g").members != ()
    shell.advance(1)
    assert shell.coord.group_view("g").state is GroupState.EMPTY


def test_rebalance_timeout_kicks_members_that_did_not_rejoin() -> None:
    shell = Shell()
    long_session = 60_000
    gen, members = shell.stable_group("g", 1)
    (a,) = members
    b_handle = shell.join_new("g", session_ms=long_session)
    shell.join("g", a)  # a rejoins, completing generation gen+1 with a and b
    b = shell.answer(b_handle).member_id
    gen2 = shell.answer(b_handle).generation_id
    shell.sync("g", shell.coord.group_view("g").leader_id, gen2, {})
    shell.sync("g", b if shell.coord.group_view("g").leader_id != b else a, gen2)
    assert shell.coord.group_view("g").state is GroupState.STABLE
    # Now b triggers a rebalance by changing its subscription; a keeps heartbeating but never rejoins.
    b_rejoin = shell.join("g", b, topics=("t", "u"), session_ms=long_session)
    for _ in range(REBALANCE_MS // 3000 - 1):
        shell.advance(3000)
        assert shell.heartbeat("g", a, gen2) == ErrorCode.REBALANCE_IN_PROGRESS
    assert shell.answer(b_rejoin) is None
    shell.advance(3000)
    answer = shell.answer(b_rejoin)
    assert answer.generation_id == gen2 + 1 and [m.member_id for m in answer.members] == [b]
    assert shell.heartbeat("g", a, gen2) == ErrorCode.UNKNOWN_MEMBER_ID


def test_members_that_never_sync_are_removed_after_the_rebalance_timeout() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    leader = shell.coord.group_view("g").leader_id
    lazy = next(m for m in members if m != leader)
    handles = [shell.join("g", leader), shell.join("g", lazy)]  # the leader's rejoin starts a rebalance
    new_gen = shell.answer(handles[0]).generation_id
    assert new_gen == gen + 1
    shell.sync("g", leader, new_gen, {leader: assignment(("t", 0))})
    for _ in range(REBALANCE_MS // 3000):  # both keep heartbeating; the follower never syncs
        shell.advance(3000)
        shell.heartbeat("g", leader, new_gen)
        shell.heartbeat("g", lazy, new_gen)
    assert [m.member_id for m in shell.coord.group_view("g").members] == [leader]
    assert shell.coord.group_view("g").state is GroupState.PREPARING_REBALANCE


def test_pending_member_expires_after_session_timeout() -> None:
    shell = Shell()
    gen, (a,) = shell.stable_group("g", 1)
    pending = shell.call_join("g", require_known=True)
    assert pending.error == ErrorCode.MEMBER_ID_REQUIRED
    # a's new subscription starts a rebalance that waits for the pending member, which never comes back.
    shell.join("g", a, topics=("t", "v"))
    shell.advance(SESSION_MS - 1)
    assert shell.coord.group_view("g").state is GroupState.PREPARING_REBALANCE
    shell.advance(1)
    assert shell.coord.group_view("g").state is GroupState.COMPLETING_REBALANCE
    assert shell.call_join("g", pending.member_id).error == ErrorCode.UNKNOWN_MEMBER_ID


def test_new_member_parked_too_long_is_dropped() -> None:
    config = dataclasses.replace(TEST_CONFIG, new_member_join_timeout_ms=5_000)
    shell = Shell(config)
    gen, (a,) = shell.stable_group("g", 1)
    newcomer = shell.join_new("g", rebalance_ms=REBALANCE_MS)
    for _ in range(2):  # a keeps heartbeating but does not rejoin yet
        shell.advance(2500)
        shell.heartbeat("g", a, gen)
    assert shell.answer(newcomer) == JoinGroupResponse(ErrorCode.UNKNOWN_MEMBER_ID)


def test_one_late_poll_fires_timers_in_deadline_order() -> None:
    # Both members rejoin, then go silent: one session expiry starts a rebalance, the other's empties
    # the group, and that empty generation is written. One poll much later does all of it, in order.
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    leader = shell.coord.group_view("g").leader_id
    handles = [shell.join("g", m) for m in sorted(members, key=lambda m: m != leader)]
    assert shell.answer(handles[1]).generation_id == gen + 1
    assert shell.coord.next_deadline_ms() == shell.now + SESSION_MS
    shell.advance(10 * REBALANCE_MS)
    assert all(isinstance(shell.answer(h), JoinGroupResponse) for h in handles)
    view = shell.coord.group_view("g")
    assert view.state is GroupState.EMPTY and view.generation_id == gen + 2
