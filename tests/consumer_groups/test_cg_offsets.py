"""Committed offsets: commit/fetch/delete, durability before visibility, write failures, expiry, and the
admin APIs (ListGroups, DescribeGroups, DeleteGroups) plus the lag helper."""

from __future__ import annotations

import dataclasses

import pytest
from cg_harness import TEST_CONFIG, Shell, assignment, subscription

from consumer_groups import (
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    ErrorCode,
    GroupState,
    LeaveGroupRequest,
    ListGroupsRequest,
    MemberIdentity,
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetDeleteRequest,
    OffsetFetchPartition,
    OffsetFetchRequest,
    PartitionLag,
)
from consumer_groups.records import OffsetKey, decode_key, decode_offset_value

DAY_MS = 24 * 3600 * 1000


def fetch(shell: Shell, group: str, partitions=None, require_stable: bool = False) -> dict:
    response = shell.call(OffsetFetchRequest(group, partitions, require_stable))
    assert response.error == ErrorCode.NONE
    return {(p.topic, p.partition): p for p in response.partitions}


def test_commit_and_fetch_with_metadata_epoch_and_timestamp() -> None:
    shell = Shell(now_ms=1_000)
    gen, (member,) = shell.stable_group("g", 1)
    request = OffsetCommitRequest(
        "g",
        (
            OffsetCommitPartition("t", 0, 42, leader_epoch=3, metadata="note"),
            OffsetCommitPartition("t", 1, 7),
        ),
        gen,
        member,
    )
    assert {p.error for p in shell.answer(shell.send(request)).partitions} == {ErrorCode.NONE}
    assert fetch(shell, "g", (("t", 0), ("t", 1), ("u", 0))) == {
        ("t", 0): OffsetFetchPartition("t", 0, 42, 3, "note", ErrorCode.NONE),
        ("t", 1): OffsetFetchPartition("t", 1, 7, -1, "", ErrorCode.NONE),
        ("u", 0): OffsetFetchPartition("u", 0, -1, -1, "", ErrorCode.NONE),  # nothing committed
    }
    assert set(fetch(shell, "g")) == {("t", 0), ("t", 1)}  # "all partitions"
    assert shell.coord.committed_offsets("g")[("t", 0)].commit_timestamp_ms == 1_000
    v1 = OffsetCommitRequest("g", (OffsetCommitPartition("t", 2, 1, commit_timestamp_ms=77),), gen, member)
    shell.send(v1)
    assert shell.coord.committed_offsets("g")[("t", 2)].commit_timestamp_ms == 77  # OffsetCommit v1's own time
    assert fetch(shell, "nobody", (("t", 0),))[("t", 0)].offset == -1


def test_commit_is_answered_and_visible_only_once_durable() -> None:
    shell = Shell(auto_persist=False)
    handle = shell.commit("g", {("t", 0): 5})
    assert shell.answer(handle) is None
    (write,) = shell.pending
    key = decode_key(write.records[0].key)
    assert key == OffsetKey("g", "t", 0) and decode_offset_value(write.records[0].value).offset == 5
    assert fetch(shell, "g", (("t", 0),))[("t", 0)].offset == -1
    unstable = fetch(shell, "g", (("t", 0),), require_stable=True)[("t", 0)]
    assert unstable.error == ErrorCode.UNSTABLE_OFFSET_COMMIT
    shell.confirm_all()
    assert shell.commit_errors(handle) == {ErrorCode.NONE}
    assert fetch(shell, "g", (("t", 0),), require_stable=True)[("t", 0)].offset == 5


@pytest.mark.parametrize(
    "append_error,expected",
    [
        (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.NOT_COORDINATOR),
        (ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.NOT_COORDINATOR),
        (ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.COORDINATOR_NOT_AVAILABLE),
        (ErrorCode.REQUEST_TIMED_OUT, ErrorCode.COORDINATOR_NOT_AVAILABLE),
        (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.INVALID_COMMIT_OFFSET_SIZE),
    ],
)
def test_failed_commit_write(append_error: ErrorCode, expected: ErrorCode) -> None:
    shell = Shell(auto_persist=False)
    shell.commit("g", {("t", 0): 1})
    shell.confirm_all()
    handle = shell.commit("g", {("t", 0): 9, ("t", 1): 9})
    shell.confirm_all(error=append_error)
    assert shell.commit_errors(handle) == {expected}
    assert {tp: o.offset for tp, o in shell.coord.committed_offsets("g").items()} == {("t", 0): 1}


def test_confirmations_apply_in_write_order() -> None:
    shell = Shell(auto_persist=False)
    first, second = shell.commit("g", {("t", 0): 1}), shell.commit("g", {("t", 0): 2})
    w1, w2 = shell.pending
    shell.confirm(w2.write_id)  # the later write confirmed first: held until the earlier resolves
    assert shell.answer(second) is None
    shell.confirm(w1.write_id)
    assert shell.answer(first) is not None and shell.answer(second) is not None
    assert shell.coord.committed_offsets("g")[("t", 0)].offset == 2


def test_metadata_too_large_fails_only_that_partition() -> None:
    shell = Shell(dataclasses.replace(TEST_CONFIG, offset_metadata_max_bytes=4))
    request = OffsetCommitRequest(
        "g", (OffsetCommitPartition("t", 0, 1, metadata="12345"), OffsetCommitPartition("t", 1, 1, metadata="1234"))
    )
    response = shell.answer(shell.send(request))
    assert [p.error for p in response.partitions] == [ErrorCode.OFFSET_METADATA_TOO_LARGE, ErrorCode.NONE]
    assert set(shell.coord.committed_offsets("g")) == {("t", 1)}


def test_pending_write_limit_pushes_back() -> None:
    shell = Shell(dataclasses.replace(TEST_CONFIG, max_pending_writes=1), auto_persist=False)
    shell.commit("g", {("t", 0): 1})
    assert shell.commit_errors(shell.commit("g", {("t", 0): 2})) == {ErrorCode.COORDINATOR_NOT_AVAILABLE}


def test_offset_delete() -> None:
    shell = Shell()
    gen, (member,) = shell.stable_group("g", 1, topics=("t",))
    shell.commit("g", {("t", 0): 1, ("old", 0): 1}, gen, member)
    response = shell.call(OffsetDeleteRequest("g", (("t", 0), ("old", 0))))
    assert response.error == ErrorCode.NONE
    assert [(p.topic, p.error) for p in response.partitions] == [
        ("t", ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC),
        ("old", ErrorCode.NONE),
    ]
    assert set(shell.coord.committed_offsets("g")) == {("t", 0)}
    assert decode_key(shell.log[-1].key) == OffsetKey("g", "old", 0) and shell.log[-1].value is None
    assert shell.call(OffsetDeleteRequest("missing", (("t", 0),))).error == ErrorCode.GROUP_ID_NOT_FOUND
    # An empty group can delete anything.
    shell.commit("simple", {("t", 0): 1})
    assert shell.call(OffsetDeleteRequest("simple", (("t", 0),))).partitions[0].error == ErrorCode.NONE
    assert shell.coord.committed_offsets("simple") == {}


def test_failed_offset_delete_keeps_the_offsets() -> None:
    shell = Shell()
    shell.commit("g", {("t", 0): 1})
    shell.auto_persist = False
    handle = shell.send(OffsetDeleteRequest("g", (("t", 0),)))
    assert shell.answer(handle) is None
    shell.confirm_all(error=ErrorCode.NOT_LEADER_OR_FOLLOWER)
    assert shell.answer(handle).error == ErrorCode.NOT_COORDINATOR
    assert set(shell.coord.committed_offsets("g")) == {("t", 0)}


def test_empty_group_offsets_expire_after_retention_since_it_became_empty() -> None:
    config = dataclasses.replace(TEST_CONFIG, offsets_retention_ms=7 * DAY_MS)
    shell = Shell(config)
    handle = shell.join("g", session_ms=config.session_timeout_max_ms)
    member, gen = shell.answer(handle).member_id, shell.answer(handle).generation_id
    shell.sync("g", member, gen, {member: assignment(("t", 0))})
    shell.commit("g", {("t", 0): 10}, gen, member)
    # Committed long ago, but a live group's offsets never expire (it heartbeats for 8 days).
    for _ in range(8 * 24 * 4):
        shell.advance(15 * 60 * 1000)
        assert shell.heartbeat("g", member, gen) == ErrorCode.NONE
    assert ("t", 0) in shell.coord.committed_offsets("g")
    shell.call(LeaveGroupRequest("g", (MemberIdentity(member),)))
    assert shell.coord.group_view("g").state is GroupState.EMPTY
    shell.advance(7 * DAY_MS - 1)
    assert ("t", 0) in shell.coord.committed_offsets("g")
    shell.advance(config.offsets_retention_check_interval_ms)
    assert shell.coord.group_view("g") is None  # offsets gone, then the empty group itself
    tombstones = [decode_key(r.key) for r in shell.log[-2:] if r.value is None]
    assert len(tombstones) == 2


def test_offsets_only_group_expires_by_commit_time_and_explicit_retention() -> None:
    config = dataclasses.replace(TEST_CONFIG, offsets_retention_ms=DAY_MS)
    shell = Shell(config)
    shell.commit("simple", {("t", 0): 1})
    shell.advance(DAY_MS // 2)
    shell.commit("simple", {("t", 1): 1})
    shell.commit("simple", {("t", 2): 1}, retention_ms=3600 * 1000)  # OffsetCommit v2-4 retention time
    shell.advance(2 * 3600 * 1000)
    assert set(shell.coord.committed_offsets("simple")) == {("t", 0), ("t", 1)}
    shell.advance(DAY_MS // 2)
    assert set(shell.coord.committed_offsets("simple")) == {("t", 1)}
    shell.advance(DAY_MS)
    assert shell.coord.group_view("simple") is None


def test_stable_group_loses_offsets_of_topics_it_no_longer_subscribes_to() -> None:
    config = dataclasses.replace(TEST_CONFIG, offsets_retention_ms=DAY_MS, session_timeout_max_ms=3 * DAY_MS)
    shell = Shell(config)
    handle = shell.join("g", topics=("t",), session_ms=3 * DAY_MS)
    member, gen = shell.answer(handle).member_id, shell.answer(handle).generation_id
    shell.sync("g", member, gen, {member: assignment(("t", 0))})
    shell.commit("g", {("t", 0): 1, ("gone", 0): 1}, gen, member)
    shell.advance(DAY_MS + TEST_CONFIG.offsets_retention_check_interval_ms)
    assert set(shell.coord.committed_offsets("g")) == {("t", 0)}


def test_list_describe_and_delete_groups() -> None:
    shell = Shell()
    gen, members = shell.stable_group("stable", 2)
    shell.join_new("preparing")  # initial delay 0: completes alone, then nobody syncs
    shell.commit("empty", {("t", 0): 1})
    listed = shell.call(ListGroupsRequest())
    assert [(g.group_id, g.state, g.protocol_type) for g in listed.groups] == [
        ("empty", "Empty", ""),
        ("preparing", "CompletingRebalance", "consumer"),
        ("stable", "Stable", "consumer"),
    ]
    only = shell.call(ListGroupsRequest(("stable", "empty")))
    assert [g.group_id for g in only.groups] == ["empty", "stable"]

    described = shell.call(DescribeGroupsRequest(("stable", "preparing", "unknown"))).groups
    stable, completing, unknown = described
    assert (stable.state, stable.protocol_type, stable.protocol_data) == ("Stable", "consumer", "range")
    assert {m.member_id for m in stable.members} == set(members)
    assert {(m.client_id, m.client_host, m.metadata) for m in stable.members} == {
        ("client", "/127.0.0.1", subscription("t"))
    }
    assert sorted(m.assignment for m in stable.members) == sorted([assignment(("t", 0)), assignment(("t", 1))])
    assert completing.protocol_data == "" and completing.members[0].metadata == b""  # only Stable shows them
    assert (unknown.error, unknown.state) == (ErrorCode.NONE, "Dead")

    results = shell.call(DeleteGroupsRequest(("stable", "empty", "unknown"))).results
    assert [(r.group_id, r.error) for r in results] == [
        ("stable", ErrorCode.NON_EMPTY_GROUP),
        ("empty", ErrorCode.NONE),
        ("unknown", ErrorCode.GROUP_ID_NOT_FOUND),
    ]
    assert shell.coord.group_view("empty") is None
    assert shell.log[-2:][0].value is None and shell.log[-1].value is None  # offset and group tombstones


def test_delete_groups_waits_for_the_tombstones() -> None:
    shell = Shell(auto_persist=False)
    shell.commit("a", {("t", 0): 1})
    shell.confirm_all()
    handle = shell.send(DeleteGroupsRequest(("a",)))
    assert shell.answer(handle) is None
    shell.confirm_all(error=ErrorCode.NOT_LEADER_OR_FOLLOWER)
    assert shell.answer(handle).results[0].error == ErrorCode.NOT_COORDINATOR


def test_lag() -> None:
    shell = Shell()
    shell.commit("g", {("t", 0): 90, ("t", 1): 100})
    assert shell.coord.lag("g", {("t", 0): 100, ("t", 1): 95, ("t", 2): 10}) == [
        PartitionLag("t", 0, 90, 100, 10),
        PartitionLag("t", 1, 100, 95, 0),
        PartitionLag("t", 2, None, 10, None),
    ]
