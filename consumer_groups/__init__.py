"""tidelog's consumer group coordinator: a sans-I/O core (classic Kafka group protocol + offsets, made
durable through `__consumer_offsets` records) and server-side assignors. See README.md here."""

from consumer_groups.assignors import (
    ASSIGNORS,
    CooperativeAssignment,
    MemberSubscription,
    cooperative_sticky_assign,
    range_assign,
    round_robin_assign,
    sticky_assign,
)
from consumer_groups.coordinator import GroupConfig, GroupCoordinator
from consumer_groups.errors import ErrorCode
from consumer_groups.group import GroupView, OffsetAndMetadata
from consumer_groups.messages import *  # noqa: F403  (requests, responses, outputs)
from consumer_groups.messages import __all__ as _messages_all
from consumer_groups.records import Record, partition_for_group
from consumer_groups.state import GroupState, IllegalStateTransition

__all__ = [
    "ASSIGNORS",
    "CooperativeAssignment",
    "ErrorCode",
    "GroupConfig",
    "GroupCoordinator",
    "GroupState",
    "GroupView",
    "IllegalStateTransition",
    "MemberSubscription",
    "OffsetAndMetadata",
    "Record",
    "cooperative_sticky_assign",
    "partition_for_group",
    "range_assign",
    "round_robin_assign",
    "sticky_assign",
    *_messages_all,
]
