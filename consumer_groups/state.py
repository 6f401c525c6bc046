"""Classic group states and the checked transition table (Kafka's `ClassicGroupState`)."""

from __future__ import annotations

from enum import Enum


class GroupState(Enum):
    # Values are the state names Kafka reports in ListGroups/DescribeGroups.
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


class IllegalStateTransition(AssertionError):
    """A group tried a transition the table forbids: always a coordinator bug, never client input."""


# new state -> states it may be entered from.
VALID_PREVIOUS_STATES: dict[GroupState, frozenset[GroupState]] = {
    # A member joins an empty group, or a rebalance starts from a settled or settling group.
    GroupState.PREPARING_REBALANCE: frozenset({GroupState.EMPTY, GroupState.STABLE, GroupState.COMPLETING_REBALANCE}),
    # The join phase completed with at least one member.
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    # The leader's assignment was persisted.
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    # The join phase completed with nobody left.
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    # Deleted, expired or unloaded from any live state; Dead is terminal.
    GroupState.DEAD: frozenset(
        {GroupState.EMPTY, GroupState.PREPARING_REBALANCE, GroupState.COMPLETING_REBALANCE, GroupState.STABLE}
    ),
}

LEGAL_TRANSITIONS: frozenset[tuple[GroupState, GroupState]] = frozenset(
    (old, new) for new, olds in VALID_PREVIOUS_STATES.items() for old in olds
)


def check_transition(old: GroupState, new: GroupState) -> None:
    if (old, new) not in LEGAL_TRANSITIONS:
        raise IllegalStateTransition(f"illegal group state transition {old.value} -> {new.value}")
