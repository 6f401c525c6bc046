"""Generations and member ids fence stale members: the coordinator's error codes per state."""

from __future__ import annotations

from cg_harness import Shell

from consumer_groups import ErrorCode, GroupState, SyncGroupRequest, SyncGroupResponse


def rebalance_to_next_generation(shell: Shell, group: str, members: list[str]) -> int:
    """The leader's rejoin forces a rebalance; everyone rejoins. -> new generation (CompletingRebalance)."""
    leader = shell.coord.group_view(group).leader_id
    handles = [shell.join(group, m) for m in sorted(members, key=lambda m: m != leader)]
    return shell.answer(handles[0]).generation_id


def test_stale_generation_commit_is_illegal_generation() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    new_gen = rebalance_to_next_generation(shell, "g", members)
    leader = shell.coord.group_view("g").leader_id
    shell.sync("g", leader, new_gen, {})
    handle = shell.commit("g", {("t", 0): 10}, gen, members[0])
    assert shell.commit_errors(handle) == {ErrorCode.ILLEGAL_GENERATION}
    assert shell.coord.committed_offsets("g") == {}
    assert shell.heartbeat("g", members[0], gen) == ErrorCode.ILLEGAL_GENERATION
    assert shell.call(SyncGroupRequest("g", gen, members[0])).error == ErrorCode.ILLEGAL_GENERATION
    ok = shell.commit("g", {("t", 0): 10}, new_gen, members[0])
    assert shell.commit_errors(ok) == {ErrorCode.NONE}


def test_unknown_member_is_rejected_everywhere() -> None:
    shell = Shell()
    gen, _ = shell.stable_group("g", 1)
    assert shell.heartbeat("g", "ghost", gen) == ErrorCode.UNKNOWN_MEMBER_ID
    assert shell.commit_errors(shell.commit("g", {("t", 0): 1}, gen, "ghost")) == {ErrorCode.UNKNOWN_MEMBER_ID}
    assert shell.call(SyncGroupRequest("g", gen, "ghost")).error == ErrorCode.UNKNOWN_MEMBER_ID
    assert shell.call_join("g", "ghost").error == ErrorCode.UNKNOWN_MEMBER_ID
    assert shell.heartbeat("nogroup", "ghost", 1) == ErrorCode.UNKNOWN_MEMBER_ID
    # A v0-style commit (no member, no generation) into a group that has members.
    assert shell.commit_errors(shell.commit("g", {("t", 0): 1})) == {ErrorCode.UNKNOWN_MEMBER_ID}
    # A member commit to a group that does not exist: its generation is gone.
    assert shell.commit_errors(shell.commit("gone", {("t", 0): 1}, 3, "m")) == {ErrorCode.ILLEGAL_GENERATION}


def test_heartbeat_during_preparing_rebalance() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    shell.join_new("g")
    assert shell.coord.group_view("g").state is GroupState.PREPARING_REBALANCE
    assert {shell.heartbeat("g", m, gen) for m in members} == {ErrorCode.REBALANCE_IN_PROGRESS}
    # Commits with the current generation are still accepted while preparing (eager revocation commits).
    assert shell.commit_errors(shell.commit("g", {("t", 0): 7}, gen, members[0])) == {ErrorCode.NONE}
    assert shell.call(SyncGroupRequest("g", gen, members[0])).error == ErrorCode.REBALANCE_IN_PROGRESS


def test_commit_during_completing_rebalance() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    new_gen = rebalance_to_next_generation(shell, "g", members)
    assert shell.coord.group_view("g").state is GroupState.COMPLETING_REBALANCE
    handle = shell.commit("g", {("t", 0): 3}, new_gen, members[0])
    assert shell.commit_errors(handle) == {ErrorCode.REBALANCE_IN_PROGRESS}
    assert shell.heartbeat("g", members[0], new_gen) == ErrorCode.NONE


def test_parked_sync_gets_rebalance_in_progress_when_a_new_rebalance_starts() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    new_gen = rebalance_to_next_generation(shell, "g", members)
    follower = next(m for m in members if m != shell.coord.group_view("g").leader_id)
    parked = shell.sync("g", follower, new_gen)
    assert shell.answer(parked) is None
    shell.join_new("g")
    assert shell.answer(parked) == SyncGroupResponse(ErrorCode.REBALANCE_IN_PROGRESS)


def test_sync_with_inconsistent_protocol() -> None:
    shell = Shell()
    gen, (member,) = shell.stable_group("g", 1)
    wrong = SyncGroupRequest("g", gen, member, protocol_type="consumer", protocol_name="roundrobin")
    assert shell.call(wrong).error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    right = SyncGroupRequest("g", gen, member, protocol_type="consumer", protocol_name="range")
    assert shell.call(right).error == ErrorCode.NONE


def test_simple_commits_only_while_the_group_has_no_members() -> None:
    shell = Shell()
    assert shell.commit_errors(shell.commit("offsets-only", {("t", 0): 5})) == {ErrorCode.NONE}
    view = shell.coord.group_view("offsets-only")
    assert view.state is GroupState.EMPTY and view.protocol_type is None
    gen, (member,) = shell.stable_group("g", 1)
    assert shell.commit_errors(shell.commit("g", {("t", 0): 5})) == {ErrorCode.UNKNOWN_MEMBER_ID}
