"""Server-side partition assignors, as pure functions.

Kafka clients run their own assignors and the coordinator only relays their bytes; these serve tidelog's
gRPC members (the coordinator assigns when every member asks it to) and our Python client.

Input: members with their subscribed topics (and, for the sticky ones, the partitions they own now) and
the partition count of each topic. Output: member id -> sorted [(topic, partition)], with an entry for
every member. Topics missing from `partition_counts` have no partitions. Members are ordered as Kafka's
`MemberInfo`: static members (group instance id) first by instance id, then the rest by member id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

TopicPartition = tuple[str, int]
AssignmentMap = dict[str, list[TopicPartition]]


@dataclass(frozen=True, slots=True)
class MemberSubscription:
    member_id: str
    topics: frozenset[str]
    owned_partitions: tuple[TopicPartition, ...] = ()  # sticky assignors only
    group_instance_id: str | None = None
    generation_id: int = -1  # the generation the ownership is from: the newest claim wins a conflict


@dataclass(frozen=True, slots=True)
class CooperativeAssignment:
    assignment: AssignmentMap  # what each member gets this round
    revoked: AssignmentMap  # what each member must give up before the follow-up rebalance
    target: AssignmentMap  # where the follow-up rebalance will put everything


def _ordered(members: Sequence[MemberSubscription]) -> list[MemberSubscription]:
    ids = [m.member_id for m in members]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate member ids")
    return sorted(
        members,
        key=lambda m: (
            (0, m.group_instance_id, m.member_id) if m.group_instance_id is not None else (1, "", m.member_id)
        ),
    )


def _count(partition_counts: Mapping[str, int], topic: str) -> int:
    n = partition_counts.get(topic, 0)
    if n < 0:
        raise ValueError(f"negative partition count for {topic!r}")
    return n


def range_assign(members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]) -> AssignmentMap:
    """Kafka's RangeAssignor: per topic, its subscribers in order each take a contiguous range; the first
    (partitions % subscribers) take one extra."""
    ordered = _ordered(members)
    result: AssignmentMap = {m.member_id: [] for m in ordered}
    for topic in sorted({t for m in ordered for t in m.topics}):
        subscribers = [m.member_id for m in ordered if topic in m.topics]
        n = _count(partition_counts, topic)
        per_member, with_extra = divmod(n, len(subscribers))
        for i, member_id in enumerate(subscribers):
            start = per_member * i + min(i, with_extra)
            length = per_member + (1 if i < with_extra else 0)
            result[member_id].extend((topic, p) for p in range(start, start + length))
    return {k: sorted(v) for k, v in result.items()}


def round_robin_assign(members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]) -> AssignmentMap:
    """Kafka's RoundRobinAssignor: all subscribed partitions sorted by (topic, partition), dealt round a
    circle of the ordered members, skipping members not subscribed to the partition's topic."""
    ordered = _ordered(members)
    result: AssignmentMap = {m.member_id: [] for m in ordered}
    cursor = 0
    for topic in sorted({t for m in ordered for t in m.topics}):
        for p in range(_count(partition_counts, topic)):
            while topic not in ordered[cursor].topics:
                cursor = (cursor + 1) % len(ordered)
            result[ordered[cursor].member_id].append((topic, p))
            cursor = (cursor + 1) % len(ordered)
    return result


def _valid_ownership(
    ordered: list[MemberSubscription], partition_counts: Mapping[str, int]
) -> dict[TopicPartition, str]:
    """partition -> previous owner, keeping only claims a member may still hold (topic exists, partition
    in range, member subscribed). Two claims on one partition: the newer generation wins, then order."""
    owner: dict[TopicPartition, tuple[int, str]] = {}
    for m in ordered:
        for tp in dict.fromkeys(m.owned_partitions):
            topic, p = tp
            if topic not in m.topics or not 0 <= p < _count(partition_counts, topic):
                continue
            if tp not in owner or m.generation_id > owner[tp][0]:
                owner[tp] = (m.generation_id, m.member_id)
    return {tp: member_id for tp, (_, member_id) in owner.items()}


def sticky_assign(members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]) -> AssignmentMap:
    """Balanced, and moving as few owned partitions as possible (Kafka's StickyAssignor goals).

    Equal subscriptions: counts differ by at most one, and the members keeping an extra partition are the
    ones that own the most, which keeps the largest possible number of owned partitions. Unequal
    subscriptions: keep ownership, place the rest most-constrained first on the least-loaded subscriber,
    then move partitions while some owner has two more than another subscriber of that topic."""
    ordered = _ordered(members)
    if not ordered:
        return {}
    rank = {m.member_id: i for i, m in enumerate(ordered)}
    topics_of = {m.member_id: m.topics for m in ordered}
    all_partitions = [
        (topic, p)
        for topic in sorted({t for m in ordered for t in m.topics})
        for p in range(_count(partition_counts, topic))
    ]
    previous = _valid_ownership(ordered, partition_counts)
    owned: dict[str, list[TopicPartition]] = {m.member_id: [] for m in ordered}
    for tp in all_partitions:
        if tp in previous:
            owned[previous[tp]].append(tp)

    if len({m.topics for m in ordered}) == 1:
        result = _sticky_equal_subscriptions(ordered, all_partitions, owned)
    else:
        result = _sticky_general(ordered, all_partitions, owned, rank, topics_of, previous)
    return {k: sorted(v) for k, v in result.items()}


def _sticky_equal_subscriptions(
    ordered: list[MemberSubscription], all_partitions: list[TopicPartition], owned: dict[str, list[TopicPartition]]
) -> AssignmentMap:
    min_quota, extra_slots = divmod(len(all_partitions), len(ordered))
    result: AssignmentMap = {}
    # Members owning the most claim the extra (+1) slots first: that keeps the most partitions in place.
    for m in sorted(ordered, key=lambda m: -len(owned[m.member_id])):
        mine = owned[m.member_id]
        quota = min_quota
        if len(mine) > min_quota and extra_slots > 0:
            quota += 1
            extra_slots -= 1
        result[m.member_id] = mine[:quota]
    taken = {tp for tps in result.values() for tp in tps}
    free = [tp for tp in all_partitions if tp not in taken]
    for m in ordered:  # everyone up to the minimum quota
        need = min_quota - len(result[m.member_id])
        if need > 0:
            result[m.member_id].extend(free[:need])
            del free[:need]
    for m in ordered:  # the leftover extra slots, one each
        if not free:
            break
        if len(result[m.member_id]) == min_quota:
            result[m.member_id].append(free.pop(0))
    assert not free, "quotas add up to the partition count"
    return result


def _sticky_general(
    ordered: list[MemberSubscription],
    all_partitions: list[TopicPartition],
    owned: dict[str, list[TopicPartition]],
    rank: dict[str, int],
    topics_of: dict[str, frozenset[str]],
    previous: dict[TopicPartition, str],
) -> AssignmentMap:
    subscribers = {
        topic: [m.member_id for m in ordered if topic in m.topics] for topic in {tp[0] for tp in all_partitions}
    }
    owner = {tp: member_id for member_id, tps in owned.items() for tp in tps}
    count = {m.member_id: len(owned[m.member_id]) for m in ordered}

    def least_loaded(candidates: list[str]) -> str:
        return min(candidates, key=lambda mid: (count[mid], rank[mid]))

    unowned = [tp for tp in all_partitions if tp not in owner]
    unowned.sort(key=lambda tp: (len(subscribers[tp[0]]), tp))  # most constrained first
    for tp in unowned:
        target = least_loaded(subscribers[tp[0]])
        owner[tp] = target
        count[target] += 1

    # Rebalance: each move lowers the sum of squared counts, so this terminates. Partitions their owner
    # did not own before move first, to keep ownership where possible.
    moved = True
    while moved:
        moved = False
        for tp in sorted(all_partitions, key=lambda tp: (previous.get(tp) == owner[tp], tp)):
            current = owner[tp]
            target = least_loaded(subscribers[tp[0]])
            if count[current] > count[target] + 1:
                owner[tp] = target
                count[current] -= 1
                count[target] += 1
                moved = True
    assert all(owner[tp] in subscribers[tp[0]] and tp[0] in topics_of[owner[tp]] for tp in all_partitions)
    result: AssignmentMap = {m.member_id: [] for m in ordered}
    for tp, member_id in owner.items():
        result[member_id].append(tp)
    return result


def cooperative_sticky_assign(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> CooperativeAssignment:
    """Incremental rebalance (Kafka's CooperativeStickyAssignor): a partition changing owner is first
    revoked by its owner and left unassigned; the follow-up rebalance hands it to its target."""
    ordered = _ordered(members)
    target = sticky_assign(ordered, partition_counts)
    previous = _valid_ownership(ordered, partition_counts)
    target_owner = {tp: member_id for member_id, tps in target.items() for tp in tps}
    assignment: AssignmentMap = {}
    revoked: AssignmentMap = {}
    for m in ordered:
        assignment[m.member_id] = [tp for tp in target[m.member_id] if previous.get(tp, m.member_id) == m.member_id]
        revoked[m.member_id] = sorted(
            tp for tp, owner in previous.items() if owner == m.member_id and target_owner.get(tp) != m.member_id
        )
    return CooperativeAssignment(assignment, revoked, target)


# Assignor names as Kafka clients announce them in JoinGroup protocols.
ASSIGNORS: dict[str, Callable[[Sequence[MemberSubscription], Mapping[str, int]], AssignmentMap]] = {
    "range": range_assign,
    "roundrobin": round_robin_assign,
    "sticky": sticky_assign,
    "cooperative-sticky": lambda members, counts: cooperative_sticky_assign(members, counts).assignment,
}
