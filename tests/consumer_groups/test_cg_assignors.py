"""Server-side assignors: Kafka's documented examples, and properties over random groups."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer_groups import (
    ASSIGNORS,
    MemberSubscription,
    cooperative_sticky_assign,
    range_assign,
    round_robin_assign,
    sticky_assign,
)

TOPICS = ("a", "b", "c", "d")
EAGER = {"range": range_assign, "roundrobin": round_robin_assign, "sticky": sticky_assign}


def member(
    member_id: str, *topics: str, owned=(), instance: str | None = None, generation: int = -1
) -> MemberSubscription:
    return MemberSubscription(member_id, frozenset(topics), tuple(owned), instance, generation)


def tps(spec: str) -> list[tuple[str, int]]:
    """'t0p0 t1p2' -> [('t0', 0), ('t1', 2)]"""
    return [(item.split("p")[0], int(item.split("p")[1])) for item in spec.split()]


# --- Kafka's javadoc examples -----------------------------------------------------------------------


def test_range_javadoc_example() -> None:
    members = [member("C0", "t0", "t1"), member("C1", "t0", "t1")]
    assert range_assign(members, {"t0": 3, "t1": 3}) == {
        "C0": tps("t0p0 t0p1 t1p0 t1p1"),
        "C1": tps("t0p2 t1p2"),
    }


def test_round_robin_javadoc_examples() -> None:
    members = [member("C0", "t0", "t1"), member("C1", "t0", "t1")]
    assert round_robin_assign(members, {"t0": 3, "t1": 3}) == {
        "C0": tps("t0p0 t0p2 t1p1"),
        "C1": tps("t0p1 t1p0 t1p2"),
    }
    members = [member("C0", "t0"), member("C1", "t0", "t1"), member("C2", "t0", "t1", "t2")]
    assert round_robin_assign(members, {"t0": 1, "t1": 2, "t2": 3}) == {
        "C0": tps("t0p0"),
        "C1": tps("t1p0"),
        "C2": tps("t1p1 t2p0 t2p1 t2p2"),
    }


def test_sticky_javadoc_example_keeps_everything_when_a_member_leaves() -> None:
    counts = {t: 2 for t in ("t0", "t1", "t2", "t3")}
    before = {"C0": tps("t0p0 t1p1 t3p0"), "C1": tps("t0p1 t2p0 t3p1"), "C2": tps("t1p0 t2p1")}
    everyone = ("t0", "t1", "t2", "t3")
    after = sticky_assign(
        [member("C0", *everyone, owned=before["C0"]), member("C2", *everyone, owned=before["C2"])], counts
    )
    assert set(before["C0"]) <= set(after["C0"]) and set(before["C2"]) <= set(after["C2"])
    assert sorted(len(v) for v in after.values()) == [4, 4]


def test_member_order_is_kafkas_member_info_order() -> None:
    # Static members first by instance id, then dynamic ones by member id.
    members = [member("a", "t"), member("z", "t", instance="i2"), member("b", "t", instance="i1")]
    assert range_assign(members, {"t": 3}) == {"b": [("t", 0)], "z": [("t", 1)], "a": [("t", 2)]}


def test_topics_without_partitions_and_empty_groups() -> None:
    assert range_assign([member("m", "missing")], {}) == {"m": []}
    assert {name: fn([], {"t": 3}) for name, fn in EAGER.items()} == {name: {} for name in EAGER}


def test_sticky_conflicting_claims_go_to_the_newest_generation() -> None:
    members = [member("m1", "t", owned=[("t", 0)], generation=4), member("m2", "t", owned=[("t", 0)], generation=5)]
    assert sticky_assign(members, {"t": 2}) == {"m1": [("t", 1)], "m2": [("t", 0)]}


def test_cooperative_two_phase_example() -> None:
    # m1 owns everything; m2 joins: m1 first gives up half, which nobody gets this round.
    owned = [("t", p) for p in range(4)]
    result = cooperative_sticky_assign([member("m1", "t", owned=owned), member("m2", "t")], {"t": 4})
    assert result.target == {"m1": owned[:2], "m2": owned[2:]}
    assert result.assignment == {"m1": owned[:2], "m2": []}
    assert result.revoked == {"m1": owned[2:], "m2": []}
    # The follow-up round, once m1 owns only its half, completes the move.
    follow_up = cooperative_sticky_assign([member("m1", "t", owned=owned[:2]), member("m2", "t")], {"t": 4})
    assert follow_up.assignment == result.target and follow_up.revoked == {"m1": [], "m2": []}


def test_registry_names_match_kafka_client_assignor_names() -> None:
    assert set(ASSIGNORS) == {"range", "roundrobin", "sticky", "cooperative-sticky"}


# --- properties --------------------------------------------------------------------------------------

partition_counts = st.fixed_dictionaries({t: st.integers(0, 7) for t in TOPICS})
topic_sets = st.frozensets(st.sampled_from(TOPICS), min_size=1)


@st.composite
def groups(draw: st.DrawFn, uniform: bool = False) -> tuple[list[MemberSubscription], dict[str, int]]:
    counts = draw(partition_counts)
    n = draw(st.integers(1, 7))
    shared = draw(topic_sets)
    members = []
    for i in range(n):
        topics = shared if uniform else draw(topic_sets)
        instance = draw(st.one_of(st.none(), st.sampled_from(["x", "y", "z"])))
        if instance in {m.group_instance_id for m in members}:
            instance = None
        members.append(MemberSubscription(f"m{i}", topics, (), instance))
    return members, counts


def all_partitions(members: list[MemberSubscription], counts: dict[str, int]) -> list[tuple[str, int]]:
    topics = {t for m in members for t in m.topics}
    return sorted((t, p) for t in topics for p in range(counts[t]))


def check_complete_and_exclusive(members, counts, result) -> None:
    assert set(result) == {m.member_id for m in members}
    assigned = [tp for tps_ in result.values() for tp in tps_]
    assert sorted(assigned) == all_partitions(members, counts)  # each exactly once
    topics_of = {m.member_id: m.topics for m in members}
    assert all(t in topics_of[mid] for mid, tps_ in result.items() for t, _ in tps_)  # only to subscribers


def with_ownership(
    members: list[MemberSubscription], assignment: dict, generation: int = 1
) -> list[MemberSubscription]:
    return [
        MemberSubscription(
            m.member_id, m.topics, tuple(assignment.get(m.member_id, ())), m.group_instance_id, generation
        )
        for m in members
    ]


@settings(max_examples=100, deadline=None)
@given(groups())
def test_every_partition_assigned_exactly_once_to_a_subscriber(group) -> None:
    members, counts = group
    for fn in (*EAGER.values(), lambda ms, cs: cooperative_sticky_assign(ms, cs).target):
        check_complete_and_exclusive(members, counts, fn(members, counts))


@settings(max_examples=100, deadline=None)
@given(groups(uniform=True))
def test_uniform_subscriptions_are_balanced(group) -> None:
    members, counts = group
    for name in ("roundrobin", "sticky"):
        sizes = [len(v) for v in EAGER[name](members, counts).values()]
        assert max(sizes) - min(sizes) <= 1, name
    # Range balances each topic on its own.
    result = range_assign(members, counts)
    for topic in members[0].topics:
        per_member = [sum(1 for t, _ in v if t == topic) for v in result.values()]
        assert max(per_member) - min(per_member) <= 1


@settings(max_examples=100, deadline=None)
@given(groups(), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_input_order(group, rnd: random.Random) -> None:
    members, counts = group
    shuffled = members[:]
    rnd.shuffle(shuffled)
    for fn in EAGER.values():
        assert fn(members, counts) == fn(shuffled, counts) == fn(members, dict(counts))


@settings(max_examples=100, deadline=None)
@given(groups(), st.randoms(use_true_random=False))
def test_sticky_is_balanced_for_any_subscriptions(group, rnd: random.Random) -> None:
    members, counts = group
    # Start from a random (valid) previous ownership, to exercise the moves.
    previous: dict[str, list] = {m.member_id: [] for m in members}
    for tp in all_partitions(members, counts):
        candidates = [m.member_id for m in members if tp[0] in m.topics]
        previous[rnd.choice(candidates)].append(tp)
    result = sticky_assign(with_ownership(members, previous), counts)
    check_complete_and_exclusive(members, counts, result)
    size = {mid: len(v) for mid, v in result.items()}
    # No partition could move to another subscriber of its topic and improve the balance.
    for owner, owned in result.items():
        for topic, _ in owned:
            for other in members:
                if topic in other.topics:
                    assert size[owner] <= size[other.member_id] + 1


@settings(max_examples=100, deadline=None)
@given(groups(uniform=True), st.data())
def test_sticky_keeps_everything_possible_when_one_member_leaves(group, data) -> None:
    members, counts = group
    before = sticky_assign(members, counts)
    leaver = data.draw(st.sampled_from(members))
    remaining = [m for m in members if m is not leaver]
    after = sticky_assign(with_ownership(remaining, before), counts)
    for m in remaining:  # only the leaver's partitions move
        assert set(before[m.member_id]) <= set(after[m.member_id])


@settings(max_examples=100, deadline=None)
@given(groups(uniform=True))
def test_sticky_moves_only_what_a_joining_member_needs(group) -> None:
    members, counts = group
    before = sticky_assign(members, counts)
    joiner = MemberSubscription("new", members[0].topics)
    after = sticky_assign([*with_ownership(members, before), joiner], counts)
    moved = {tp for m in members for tp in before[m.member_id] if tp not in after[m.member_id]}
    assert moved == set(after["new"])  # every moved partition went to the new member ...
    sizes = [len(v) for v in after.values()]
    assert max(sizes) - min(sizes) <= 1  # ... and it took no more than balance requires
    assert len(after["new"]) == min(sizes)


@settings(max_examples=100, deadline=None)
@given(groups(), st.randoms(use_true_random=False))
def test_cooperative_never_hands_over_an_owned_partition_in_one_step(group, rnd: random.Random) -> None:
    members, counts = group
    previous: dict[str, list] = {m.member_id: [] for m in members}
    for tp in all_partitions(members, counts):
        if rnd.random() < 0.7:
            previous[rnd.choice([m.member_id for m in members if tp[0] in m.topics])].append(tp)
    owner = {tp: mid for mid, v in previous.items() for tp in v}
    result = cooperative_sticky_assign(with_ownership(members, previous), counts)
    check_complete_and_exclusive(members, counts, result.target)
    for mid, assigned in result.assignment.items():
        assert set(assigned) <= set(result.target[mid])
        assert all(owner.get(tp, mid) == mid for tp in assigned)  # never someone else's partition
    for mid, revoked in result.revoked.items():
        assert all(owner[tp] == mid and tp not in result.target[mid] for tp in revoked)
    in_flight = {tp for v in result.revoked.values() for tp in v}
    assert {tp for v in result.assignment.values() for tp in v} | in_flight == set(all_partitions(members, counts))
