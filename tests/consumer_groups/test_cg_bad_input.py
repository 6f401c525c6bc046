"""Whatever clients send, the coordinator answers every request exactly once and never raises."""

from __future__ import annotations

from cg_harness import Shell, subscription
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer_groups import (
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    ErrorCode,
    HeartbeatRequest,
    JoinGroupRequest,
    LeaveGroupRequest,
    ListGroupsRequest,
    MemberIdentity,
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetDeleteRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
)
from consumer_groups.coordinator import MAX_PARKED_PER_MEMBER

group_ids = st.sampled_from(["g", "h", ""]) | st.text(max_size=3)
member_ids = st.sampled_from(["", "ghost"]) | st.text(max_size=3)
instances = st.none() | st.sampled_from(["i1", "i2"])
ints = st.integers(-(2**64), 2**64) | st.integers(-2, 40_000)
metadata = st.binary(max_size=12) | st.sampled_from([subscription("t"), subscription("t", "u"), b"\x00\x00\x7f\xff"])
protocols = st.lists(st.tuples(st.sampled_from(["range", "roundrobin", "x", ""]), metadata), max_size=3).map(tuple)
partitions = st.lists(st.tuples(st.sampled_from(["t", "u", ""]), ints), max_size=3).map(tuple)

requests = st.one_of(
    st.builds(
        JoinGroupRequest,
        group_ids,
        member_ids,
        st.sampled_from(["consumer", "connect", ""]),
        protocols,
        st.sampled_from([10_000, 1, 10**12]) | ints,
        ints,
        instances,
        st.booleans(),
        st.booleans(),
        st.text(max_size=4),
        st.text(max_size=4),
        st.booleans(),
    ),
    st.builds(
        SyncGroupRequest,
        group_ids,
        ints,
        member_ids,
        instances,
        st.none() | st.text(max_size=8),
        st.none() | st.text(max_size=8),
        st.lists(st.tuples(member_ids, metadata), max_size=3).map(tuple),
    ),
    st.builds(HeartbeatRequest, group_ids, ints, member_ids, instances),
    st.builds(
        LeaveGroupRequest, group_ids, st.lists(st.builds(MemberIdentity, member_ids, instances), max_size=3).map(tuple)
    ),
    st.builds(
        OffsetCommitRequest,
        group_ids,
        st.lists(
            st.builds(
                OffsetCommitPartition,
                st.sampled_from(["t", "", "u"]),
                ints,
                ints,
                ints,
                st.none() | st.text(max_size=6),
            ),
            max_size=3,
        ).map(tuple),
        ints,
        member_ids,
        instances,
        ints,
    ),
    st.builds(OffsetFetchRequest, group_ids, st.none() | partitions, st.booleans()),
    st.builds(OffsetDeleteRequest, group_ids, partitions),
    st.builds(ListGroupsRequest, st.lists(st.text(max_size=12), max_size=2).map(tuple)),
    st.builds(DescribeGroupsRequest, st.lists(group_ids, max_size=3).map(tuple)),
    st.builds(DeleteGroupsRequest, st.lists(group_ids, max_size=3).map(tuple)),
)
actions = st.one_of(requests, st.integers(0, 40_000), st.just("confirm"), st.just("fail"))


@settings(max_examples=120, deadline=None)
@given(st.lists(actions, max_size=25))
def test_any_request_sequence_is_answered_exactly_once(sequence) -> None:
    shell = Shell(auto_persist=False)
    sent = []
    for action in sequence:
        if isinstance(action, int):
            shell.advance(action)
        elif action == "confirm":
            shell.confirm_all()
        elif action == "fail":
            shell.confirm_all(error=ErrorCode.NOT_LEADER_OR_FOLLOWER)
        else:
            sent.append(shell.send(action))  # the harness asserts nobody is answered twice
    shell.confirm_all()
    for _ in range(12):  # parked JoinGroups/SyncGroups are answered once their rebalance resolves
        shell.advance(30_000)
        shell.confirm_all()
    assert all(shell.answer(h) is not None for h in sent)


def test_list_typed_protocols_do_not_cause_rebalances() -> None:
    shell = Shell()
    generation, members = shell.stable_group("g2", 2)
    follower = next(m for m in members if m != shell.coord.group_view("g2").leader_id)
    as_list = JoinGroupRequest("g2", follower, "consumer", [["range", bytearray(subscription("t"))]], 10_000, 30_000)  # type: ignore[arg-type]
    answer = shell.call(as_list)
    assert (answer.error, answer.generation_id) == (ErrorCode.NONE, generation)


def test_parked_requests_per_member_are_bounded() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    leader = shell.coord.group_view("g").leader_id
    handles = [shell.join("g", leader) for _ in range(MAX_PARKED_PER_MEMBER + 3)]
    evicted = [shell.answer(h) for h in handles[:3]]
    assert all(a.error == ErrorCode.REBALANCE_IN_PROGRESS for a in evicted)
    assert all(shell.answer(h) is None for h in handles[3:])


def test_out_of_range_numbers_and_strings_are_refused() -> None:
    shell = Shell()
    request = OffsetCommitRequest(
        "g",
        (
            OffsetCommitPartition("t", 0, 2**63),
            OffsetCommitPartition("t", 2**31, 1),
            OffsetCommitPartition("t", 1, 1, leader_epoch=2**31),
        ),
    )
    assert [p.error for p in shell.call(request).partitions] == [
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.INVALID_REQUEST,
    ]
    assert shell.call_join("g", instance="x" * 40_000).error == ErrorCode.INVALID_REQUEST
    assert shell.call_join("g", rebalance_ms=2**31).error == ErrorCode.INVALID_REQUEST
    assert shell.call(HeartbeatRequest("g" * 40_000, 1, "m")).error == ErrorCode.INVALID_GROUP_ID
