"""Server-side assignment for tidelog gRPC members: the coordinator runs the selected assignor."""

from __future__ import annotations

from cg_harness import Shell, subscription

from consumer_groups import ErrorCode, GroupState
from consumer_groups.consumer_protocol import decode_assignment, flatten_topic_partitions


def partitions_of(assignment_bytes: bytes) -> list[tuple[str, int]]:
    return flatten_topic_partitions(decode_assignment(assignment_bytes)[1].partitions)


def server_join(shell: Shell, member_id: str = "", assignor: str = "range", topics=("t",)):
    return shell.join("g", member_id, protocols=((assignor, subscription(*topics)),), server=True)


def settle(shell: Shell, handles: list) -> dict[str, list[tuple[str, int]]]:
    """Sync every member that got a JoinGroup answer; -> member id -> partitions."""
    answers = [shell.answer(h) for h in handles]
    assert all(a.error == ErrorCode.NONE and a.skip_assignment and a.members == () for a in answers)
    syncs = {a.member_id: shell.sync("g", a.member_id, a.generation_id) for a in answers}
    return {m: partitions_of(shell.answer(h).assignment) for m, h in syncs.items()}


def test_range_assigned_by_the_coordinator() -> None:
    shell = Shell()
    shell.feed(shell.coord.set_partition_counts({"t": 5}, shell.now))
    first = server_join(shell)
    a = shell.answer(first).member_id
    second = server_join(shell)
    rejoin = server_join(shell, a)
    result = settle(shell, [rejoin, second])
    b = shell.answer(second).member_id
    expected_first, expected_second = sorted([a, b])
    assert result[expected_first] == [("t", 0), ("t", 1), ("t", 2)]
    assert result[expected_second] == [("t", 3), ("t", 4)]
    assert shell.coord.group_view("g").state is GroupState.STABLE


def test_partition_count_change_rebalances_server_assigned_groups() -> None:
    shell = Shell()
    shell.feed(shell.coord.set_partition_counts({"t": 2, "other": 1}, shell.now))
    handle = server_join(shell)
    member = shell.answer(handle).member_id
    assert settle(shell, [handle])[member] == [("t", 0), ("t", 1)]
    generation = shell.answer(handle).generation_id
    shell.feed(shell.coord.set_partition_counts({"t": 2, "other": 9}, shell.now))  # not subscribed: no-op
    assert shell.heartbeat("g", member, generation) == ErrorCode.NONE
    shell.feed(shell.coord.set_partition_counts({"t": 3, "other": 9}, shell.now))
    assert shell.heartbeat("g", member, generation) == ErrorCode.REBALANCE_IN_PROGRESS
    again = server_join(shell, member)
    assert settle(shell, [again])[member] == [("t", 0), ("t", 1), ("t", 2)]


def test_cooperative_sticky_hands_over_in_two_rebalances() -> None:
    shell = Shell()
    shell.feed(shell.coord.set_partition_counts({"t": 4}, shell.now))
    first = server_join(shell, assignor="cooperative-sticky")
    a = shell.answer(first).member_id
    assert settle(shell, [first])[a] == [("t", p) for p in range(4)]
    second = server_join(shell, assignor="cooperative-sticky")
    rejoin = server_join(shell, a, assignor="cooperative-sticky")
    b = shell.answer(second).member_id
    round_one = settle(shell, [rejoin, second])
    assert len(round_one[a]) == 2 and round_one[b] == []  # a revokes two; nobody gets them yet
    # Everyone synced: the coordinator starts the follow-up rebalance itself.
    assert shell.coord.group_view("g").state is GroupState.PREPARING_REBALANCE
    round_two = settle(
        shell,
        [server_join(shell, a, assignor="cooperative-sticky"), server_join(shell, b, assignor="cooperative-sticky")],
    )
    assert round_two[a] == round_one[a] and sorted(round_two[a] + round_two[b]) == [("t", p) for p in range(4)]
    assert shell.coord.group_view("g").state is GroupState.STABLE


def test_mixed_group_falls_back_to_the_leader() -> None:
    shell = Shell()
    handle = shell.join("g", protocols=(("range", subscription("t")),), server=False)
    answer = shell.answer(handle)
    assert not answer.skip_assignment and len(answer.members) == 1


def test_server_assignment_needs_a_known_assignor_and_valid_subscription() -> None:
    shell = Shell()
    bad_name = shell.call_join("g", protocols=(("my-assignor", subscription("t")),), server=True)
    assert bad_name.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    bad_bytes = shell.call_join("g", protocols=(("range", b"\x00"),), server=True)
    assert bad_bytes.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
