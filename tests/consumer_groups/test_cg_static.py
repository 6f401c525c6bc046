"""Static membership (KIP-345): restarts keep the assignment without a rebalance; duplicates are fenced."""

from __future__ import annotations

from cg_harness import REBALANCE_MS, Shell, assignment

from consumer_groups import (
    ErrorCode,
    GroupState,
    JoinGroupResponse,
    LeaveGroupRequest,
    MemberIdentity,
    SyncGroupResponse,
)
from consumer_groups.consumer_protocol import Subscription, encode_subscription
from consumer_groups.records import decode_group_value


def static_group(shell: Shell, instances: tuple[str, ...] = ("a", "b")) -> tuple[int, dict[str, str]]:
    """A Stable group of static members; -> (generation, instance id -> member id)."""
    ids: dict[str, str] = {}
    for instance in instances:
        handles = [shell.join("g", instance=instance)]
        handles += [shell.join("g", ids[i], instance=i) for i in ids]
        answers = [shell.answer(h) for h in handles]
        assert all(a.error == ErrorCode.NONE for a in answers), answers
        ids = {instance: answers[0].member_id, **{i: a.member_id for i, a in zip(ids, answers[1:], strict=True)}}
        generation, leader = answers[0].generation_id, answers[0].leader
        plan = {m: assignment(("t", n)) for n, m in enumerate(sorted(ids.values()))}
        for i, m in ids.items():
            shell.sync("g", m, generation, plan if m == leader else None, instance=i)
    assert shell.coord.group_view("g").state is GroupState.STABLE
    return generation, ids


def test_static_restart_gets_its_assignment_back_without_a_rebalance() -> None:
    shell = Shell()
    gen, ids = static_group(shell)
    leader = shell.coord.group_view("g").leader_id
    restarting = next(i for i, m in ids.items() if m != leader)
    old_id = ids[restarting]
    old_assignment = {m.member_id: m.assignment for m in shell.coord.group_view("g").members}[old_id]
    log_before = len(shell.log)

    # Same topics, but the restarted client's subscription bytes differ (newer version, nothing owned).
    rejoin_metadata = encode_subscription(Subscription(("t",), owned_partitions=()), version=3)
    answer = shell.call_join("g", instance=restarting, protocols=(("range", rejoin_metadata),))
    assert answer.error == ErrorCode.NONE and answer.generation_id == gen
    assert answer.member_id != old_id and answer.member_id.startswith(f"{restarting}-")
    sync = shell.answer(shell.sync("g", answer.member_id, gen, instance=restarting))
    assert sync.assignment == old_assignment
    view = shell.coord.group_view("g")
    assert (view.state, view.generation_id) == (GroupState.STABLE, gen)
    other = next(m for i, m in ids.items() if i != restarting)
    assert shell.heartbeat("g", other, gen) == ErrorCode.NONE  # nobody else had to rebalance
    # The new member id was made durable.
    (record,) = shell.log[log_before:]
    assert answer.member_id in {m.member_id for m in decode_group_value(record.value).members}


def test_duplicate_instance_fences_the_old_incarnation() -> None:
    shell = Shell()
    gen, ids = static_group(shell)
    old_id = ids["a"]
    new = shell.call_join("g", instance="a")
    assert new.error == ErrorCode.NONE
    assert shell.heartbeat("g", old_id, gen, instance="a") == ErrorCode.FENCED_INSTANCE_ID
    assert shell.call_join("g", old_id, instance="a").error == ErrorCode.FENCED_INSTANCE_ID
    commit = shell.commit("g", {("t", 0): 1}, gen, old_id, instance="a")
    assert shell.commit_errors(commit) == {ErrorCode.FENCED_INSTANCE_ID}
    assert shell.heartbeat("g", new.member_id, gen, instance="a") == ErrorCode.NONE


def test_fenced_incarnation_parked_requests_are_answered_fenced() -> None:
    shell = Shell()
    gen, ids = static_group(shell)
    leader = shell.coord.group_view("g").leader_id
    follower_instance = next(i for i, m in ids.items() if m != leader)
    leader_instance = next(i for i, m in ids.items() if m == leader)
    shell.join("g", leader, instance=leader_instance)  # the leader's rejoin starts a rebalance
    gen2 = shell.answer(shell.join("g", ids[follower_instance], instance=follower_instance)).generation_id
    parked_sync = shell.sync("g", ids[follower_instance], gen2, instance=follower_instance)
    assert shell.answer(parked_sync) is None  # waiting for the leader's assignment
    replacement = shell.join("g", instance=follower_instance)  # a second process, same instance id
    assert shell.answer(parked_sync) == SyncGroupResponse(ErrorCode.FENCED_INSTANCE_ID)
    # Joining while the leader may be assigning to the old id forces a new rebalance.
    assert shell.answer(replacement) is None
    assert shell.coord.group_view("g").state is GroupState.PREPARING_REBALANCE


def test_static_leader_restart() -> None:
    shell = Shell()
    gen, ids = static_group(shell)
    leader = shell.coord.group_view("g").leader_id
    instance = next(i for i, m in ids.items() if m == leader)
    # KIP-814 clients (JoinGroup v9) get the members and are told to skip the assignment.
    new = shell.call_join("g", instance=instance, skip=True)
    assert (new.leader, new.skip_assignment, len(new.members)) == (new.member_id, True, 2)
    # Older clients are told the old id leads, so they do not try to reassign.
    newer = shell.call_join("g", instance=instance)
    assert (newer.leader, newer.skip_assignment, newer.members) == (new.member_id, False, ())
    assert shell.coord.group_view("g").leader_id == newer.member_id
    assert shell.coord.group_view("g").generation_id == gen


def test_static_restart_with_new_subscription_rebalances() -> None:
    shell = Shell()
    gen, ids = static_group(shell)
    handle = shell.join("g", instance="a", topics=("t", "other"))
    assert shell.answer(handle) is None
    assert shell.coord.group_view("g").state is GroupState.PREPARING_REBALANCE
    shell.join("g", ids["b"], instance="b")
    assert shell.answer(handle).generation_id == gen + 1


def test_failed_replacement_write_restores_the_old_member() -> None:
    shell = Shell()
    gen, ids = static_group(shell)
    shell.auto_persist = False
    handle = shell.join("g", instance="a")
    assert shell.answer(handle) is None  # the new member id must be durable first
    (write,) = shell.pending
    shell.confirm(write.write_id, ErrorCode.NOT_ENOUGH_REPLICAS)
    answer = shell.answer(handle)
    assert isinstance(answer, JoinGroupResponse) and answer.error == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert shell.heartbeat("g", ids["a"], gen, instance="a") == ErrorCode.NONE
    assert {m.member_id for m in shell.coord.group_view("g").members} == set(ids.values())


def test_static_members_keep_their_seat_past_the_rebalance_timeout() -> None:
    shell = Shell()
    long_session = 120_000
    a_join = shell.join("g", instance="a", session_ms=long_session)
    a_id, gen = shell.answer(a_join).member_id, shell.answer(a_join).generation_id
    shell.sync("g", a_id, gen, {a_id: assignment(("t", 0))}, instance="a")
    newcomer = shell.join_new("g", session_ms=long_session)
    shell.advance(REBALANCE_MS)  # a never rejoins, but as a static member it keeps its seat
    answer = shell.answer(newcomer)
    assert answer.error == ErrorCode.NONE and answer.generation_id == gen + 1
    assert a_id in {m.member_id for m in shell.coord.group_view("g").members}
    shell.advance(long_session)  # ... but a member that never heartbeats nor syncs is eventually removed
    assert a_id not in {m.member_id for m in shell.coord.group_view("g").members}


def test_admin_removes_a_static_member_by_instance_id() -> None:
    shell = Shell()
    gen, ids = static_group(shell)
    response = shell.call(LeaveGroupRequest("g", (MemberIdentity("", "a"), MemberIdentity("", "zzz"))))
    assert [(m.member_id, m.error) for m in response.members] == [
        (ids["a"], ErrorCode.NONE),
        ("", ErrorCode.UNKNOWN_MEMBER_ID),
    ]
    assert {m.member_id for m in shell.coord.group_view("g").members} == {ids["b"]}
    assert shell.heartbeat("g", ids["b"], gen, instance="b") == ErrorCode.REBALANCE_IN_PROGRESS


def test_static_only_group_waits_for_sessions_when_nobody_rejoins() -> None:
    shell = Shell()
    gen, ids = static_group(shell)
    shell.call(LeaveGroupRequest("g", (MemberIdentity("", "b"),)))  # admin removal starts a rebalance
    for _ in range(REBALANCE_MS // 5000 + 2):  # a stays alive but does not rejoin for a while
        shell.advance(5000)
        assert shell.heartbeat("g", ids["a"], gen, instance="a") == ErrorCode.REBALANCE_IN_PROGRESS
    # The rebalance timeout passed with nobody rejoined: no generation without a leader, keep waiting ...
    view = shell.coord.group_view("g")
    assert (view.state, view.generation_id) == (GroupState.PREPARING_REBALANCE, gen)
    assert shell.call_join("g", ids["a"], instance="a").error == ErrorCode.NONE  # ... a came back in time
    assert shell.coord.group_view("g").generation_id == gen + 1
