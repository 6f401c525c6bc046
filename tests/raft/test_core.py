"""Unit tests: storage over offset spans, the log view, the Ready contract, restart."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.raft import (
    AppendEntries,
    AppendEntriesResponse,
    CompactedError,
    ConfChange,
    ConfChangeOp,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    RaftConfig,
    RaftNode,
    RequestVote,
    Role,
    Snapshot,
)
from cluster.raft.log import RaftLog

from .harness import Cluster

D = EntryKind.DATA


def ent(term: int, index: int, last: int, data: bytes = b"d") -> Entry:
    return Entry(term, index, last, D, data)


# ---------------------------------------------------------------------------------------------
# MemoryStorage
# ---------------------------------------------------------------------------------------------


def test_storage_terms_and_spans() -> None:
    s = MemoryStorage(Configuration(frozenset({1})))
    assert (s.first_index(), s.last_index(), s.term(-1), s.term(0)) == (0, -1, 0, None)
    s.append([ent(1, 0, 0), ent(1, 1, 4), ent(2, 5, 9)])
    assert [s.term(i) for i in range(-1, 11)] == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, None]
    assert s.entry_span(3) == (1, 4, 1) and s.entry_span(10) is None
    assert [e.index for e in s.entries(1, 10, 1 << 20)] == [1, 5]
    assert [e.index for e in s.entries(0, 5, 1 << 20)] == [0, 1]
    assert [e.index for e in s.entries(0, 10, 1)] == [0]  # at least one entry
    with pytest.raises(AssertionError):
        s.entries(2, 10, 100)  # not an entry start


def test_storage_truncates_at_entry_start_and_compacts_on_boundary() -> None:
    s = MemoryStorage(Configuration(frozenset({1})))
    s.append([ent(1, 0, 0), ent(1, 1, 4), ent(1, 5, 9)])
    s.append([ent(2, 5, 6), ent(2, 7, 7)])
    assert [(e.index, e.last_index, e.term) for e in s.entries(0, 8, 1 << 20)] == [
        (0, 0, 1), (1, 4, 1), (5, 6, 2), (7, 7, 2)]
    with pytest.raises(AssertionError):
        s.append([ent(3, 2, 2)])  # inside [1, 4]
    s.compact(Snapshot(4, 1, Configuration(frozenset({1}))))
    assert (s.first_index(), s.term(4), s.term(3)) == (5, 1, None)
    with pytest.raises(CompactedError):
        s.entries(1, 8, 100)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 3)), min_size=1, max_size=30))
def test_storage_matches_a_per_offset_model(ops: list[tuple[int, int]]) -> None:
    """Random appends (with truncation at entry starts) agree with a per-offset model."""
    s = MemoryStorage()
    model: list[tuple[int, int, int]] = []  # per offset: (term, entry start, entry end)
    term = 1
    for count, back in ops:
        starts = sorted({m[1] for m in model})
        start = starts[-back] if back and len(starts) >= back else len(model)
        term += 1
        del model[start:]
        s.append([ent(term, start, start + count - 1)])
        model.extend((term, start, start + count - 1) for _ in range(count))
        assert s.last_index() == len(model) - 1
        for i, (t, a, b) in enumerate(model):
            assert s.term(i) == t and s.entry_span(i) == (a, b, t)


# ---------------------------------------------------------------------------------------------
# RaftLog (storage + unstable tail)
# ---------------------------------------------------------------------------------------------


def test_raftlog_unstable_overrides_storage_after_truncation() -> None:
    s = MemoryStorage()
    s.append([ent(1, 0, 0), ent(1, 1, 4), ent(1, 5, 9)])
    log = RaftLog(s)
    log.committed = 0
    log.append([ent(2, 5, 5), ent(2, 6, 8)])  # replaces the stored [5, 9]
    assert log.last_index() == 8 and log.term(9) is None and log.term(7) == 2
    assert [e.index for e in log.entries(1, 9, 1 << 20)] == [1, 5, 6]
    assert log.stable_last_index() == 4  # what a leader could count for itself
    assert log.find_conflict_by_term(8, 1) == (4, 1)
    assert log.find_conflict_by_term(3, 5) == (0, 1)  # 3 is inside [1, 4]: step back
    assert log.is_up_to_date(8, 2) and not log.is_up_to_date(7, 2)


def test_raftlog_maybe_append_reports_truncation_point() -> None:
    s = MemoryStorage()
    s.append([ent(1, 0, 0), ent(1, 1, 4), ent(1, 5, 9)])
    log = RaftLog(s)
    assert log.maybe_append(4, 1, 4, [ent(1, 5, 9)]) == (9, -2)  # duplicate: no truncation
    assert log.maybe_append(4, 1, 4, [ent(1, 5, 9), ent(2, 10, 10)]) == (10, -2)
    assert log.maybe_append(4, 1, 4, [ent(3, 5, 6)]) == (6, 5)
    assert log.maybe_append(4, 2, 4, [ent(3, 5, 6)]) is None  # prev term mismatch
    assert log.committed == 4


# ---------------------------------------------------------------------------------------------
# The Ready contract
# ---------------------------------------------------------------------------------------------


def _single() -> tuple[RaftNode, MemoryStorage]:
    s = MemoryStorage(Configuration(frozenset({1})))
    n = RaftNode(RaftConfig(node_id=1, group_id="g"), s, random.Random(1))
    return n, s


def _persist(n: RaftNode, s: MemoryStorage) -> list[Entry]:
    rd = n.ready()
    if rd.snapshot:
        s.apply_snapshot(rd.snapshot)
    s.append(rd.entries)
    if rd.hard_state:
        s.set_hard_state(rd.hard_state)
    n.advance(rd)
    return rd.committed_entries


def test_leader_counts_its_own_entries_only_after_advance() -> None:
    n, s = _single()
    n.campaign()
    assert n.role is Role.LEADER
    _persist(n, s)  # NOOP durable now
    _persist(n, s)  # commit of the NOOP
    e = n.propose(b"x", count=3)
    rd = n.ready()
    assert rd.entries == [e] and rd.hard_state is None and not rd.committed_entries
    assert n.commit_index < e.index  # not durable yet: no quorum (of one) yet
    s.append(rd.entries)
    n.advance(rd)
    assert n.commit_index == e.last_index
    assert _persist(n, s) == [e]


def test_leader_replication_may_leave_before_persist_but_promises_wait() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    leader, follower = c.nodes[1], c.nodes[2]
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and all(isinstance(m, AppendEntries) for m in rd.messages)
    assert {m.to_id for m in rd.messages} == {2, 3} and not rd.persisted_messages
    c.storages[1].append(rd.entries)
    leader.advance(rd)
    follower.step(rd.messages[0] if rd.messages[0].to_id == 2 else rd.messages[1])
    frd = follower.ready()
    assert frd.entries and not frd.messages  # the ack promises the entries: after fsync
    assert [type(m) for m in frd.persisted_messages] == [AppendEntriesResponse]


def test_votes_and_campaigns_wait_for_the_hard_state() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    n1 = c.nodes[1]
    n1.campaign()
    rd = n1.ready()
    assert rd.hard_state == HardState(1, 1, -1)
    assert not rd.messages and {m.to_id for m in rd.persisted_messages} == {2, 3}
    n2 = c.nodes[2]
    n2.step(RequestVote(group_id="g", from_id=1, to_id=2, term=1, pre_vote=False,
                        last_log_index=-1, last_log_term=0))
    rd2 = n2.ready()
    assert rd2.hard_state == HardState(1, 1, -1) and len(rd2.persisted_messages) == 1


def test_inputs_between_ready_and_advance_are_refused() -> None:
    n, s = _single()
    n.campaign()
    rd = n.ready()
    with pytest.raises(AssertionError):
        n.tick()
    with pytest.raises(AssertionError):
        n.ready()
    n.advance(rd)
    with pytest.raises(AssertionError):
        n.advance(rd)


def test_messages_carry_the_group_id() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(1, b"x")
    assert c.delivered and all(m.group_id == "g" for m in c.delivered)


def test_restart_commit_is_max_of_hard_state_and_snapshot() -> None:
    s = MemoryStorage(Configuration(frozenset({1, 2, 3})))
    s.apply_snapshot(Snapshot(9, 2, Configuration(frozenset({1, 2, 3}))))
    s.set_hard_state(HardState(3, None, 4))  # commit record older than the snapshot
    n = RaftNode(RaftConfig(node_id=1), s, random.Random(0))
    assert (n.term, n.commit_index, n.applied_index, n.first_index) == (3, 9, 9, 10)


def test_configuration_encoding_and_changes() -> None:
    cfg = Configuration(frozenset({1, 2, 3}), frozenset({7}))
    assert Configuration.decode(cfg.encode()) == cfg
    assert Configuration.decode(Configuration().encode()) == Configuration()
    cfg2 = cfg.apply(ConfChange(ConfChangeOp.PROMOTE_LEARNER, 7))
    assert cfg2.voters == {1, 2, 3, 7} and not cfg2.learners
    with pytest.raises(ValueError):
        cfg.apply(ConfChange(ConfChangeOp.ADD_LEARNER, 2))
    with pytest.raises(ValueError):
        cfg.apply(ConfChange(ConfChangeOp.PROMOTE_LEARNER, 5))
    with pytest.raises(ValueError):
        Configuration(frozenset({1})).apply(ConfChange(ConfChangeOp.REMOVE_NODE, 1))


def test_single_node_cluster_elects_itself_and_commits() -> None:
    n, s = _single()
    for _ in range(25):
        n.tick()
        if n.has_ready():
            _persist(n, s)
    assert n.role is Role.LEADER
    e = n.propose(b"solo")
    applied: list[Entry] = []
    while n.has_ready():
        applied += _persist(n, s)
    assert applied[-1] == e
