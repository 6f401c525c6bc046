"""The group state machine's transition table: the table itself, its enforcement, and that the
coordinator's real flows take every legal transition."""

from __future__ import annotations

import itertools

import pytest
from cg_harness import Shell

from consumer_groups import (
    DeleteGroupsRequest,
    ErrorCode,
    GroupState,
    IllegalStateTransition,
    LeaveGroupRequest,
    MemberIdentity,
)
from consumer_groups.group import ClassicGroup
from consumer_groups.state import LEGAL_TRANSITIONS

E, P, C, S, D = (
    GroupState.EMPTY,
    GroupState.PREPARING_REBALANCE,
    GroupState.COMPLETING_REBALANCE,
    GroupState.STABLE,
    GroupState.DEAD,
)
EXPECTED = {(E, P), (S, P), (C, P), (P, C), (P, E), (C, S), (E, D), (P, D), (C, D), (S, D)}


def test_table_is_kafkas_classic_group_table() -> None:
    assert LEGAL_TRANSITIONS == EXPECTED


@pytest.mark.parametrize("old,new", list(itertools.product(GroupState, GroupState)))
def test_transition_is_checked(old: GroupState, new: GroupState) -> None:
    group = ClassicGroup("g", 0, old)
    if (old, new) in EXPECTED:
        group.transition_to(new, 5)
        assert (group.state, group.previous_state, group.state_timestamp_ms) == (new, old, 5)
    else:
        with pytest.raises(IllegalStateTransition):
            group.transition_to(new, 5)
        assert group.state is old


def test_coordinator_flows_take_every_legal_transition(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[tuple[GroupState, GroupState]] = set()
    original = ClassicGroup.transition_to

    def recording(self: ClassicGroup, new_state: GroupState, now_ms: int) -> None:
        seen.add((self.state, new_state))
        original(self, new_state, now_ms)

    monkeypatch.setattr(ClassicGroup, "transition_to", recording)
    shell = Shell()
    coord = shell.coord

    # Empty -> Preparing -> Completing -> Stable, then Stable -> Preparing when a second member arrives.
    generation, (a, b) = shell.stable_group("g1", 2)
    # Completing -> Preparing: a third member arrives before the leader syncs.
    c_join = shell.join_new("g1")
    shell.join("g1", a)
    shell.join("g1", b)
    assert shell.answer(c_join).error == ErrorCode.NONE
    assert coord.group_view("g1").state is C
    shell.join_new("g1")  # a fourth: back to Preparing
    assert coord.group_view("g1").state is P
    # Preparing -> Empty: everyone leaves.
    ids = [m.member_id for m in coord.group_view("g1").members]
    shell.call(LeaveGroupRequest("g1", tuple(MemberIdentity(m) for m in ids)))
    assert coord.group_view("g1").state is E
    # Empty -> Dead: delete it.
    assert shell.call(DeleteGroupsRequest(("g1",))).results[0].error == ErrorCode.NONE

    # Stable, Preparing and Completing groups die when their partition is unloaded.
    names = {}
    for name in ("s", "p", "c", "s2", "p2", "c2", "s3", "p3", "c3"):
        names.setdefault(coord.partition_for(name), []).append(name)
    partition, group_names = max(names.items(), key=lambda kv: len(kv[1]))
    stable, preparing, completing = group_names[:3]
    shell.stable_group(stable, 1)
    shell.stable_group(preparing, 1)
    shell.join_new(preparing)  # parked until the old member rejoins
    shell.join_new(completing)  # initial delay 0: generation 1 completes at once, nobody syncs
    assert [coord.group_view(g).state for g in (stable, preparing, completing)] == [S, P, C]
    shell.feed(coord.unload(partition, shell.now))
    assert all(coord.group_view(g) is None for g in (stable, preparing, completing))
    assert seen == EXPECTED
