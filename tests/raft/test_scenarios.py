"""Scripted Raft scenarios: each fails if the rule it names is broken."""

from __future__ import annotations

import dataclasses

import pytest

from cluster.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    EntryKind,
    InstallSnapshot,
    NotLeaderError,
    ProposalDroppedError,
    RaftNode,
    RequestVote,
    Role,
)

from .harness import Cluster

ELECTION = 10


# ---------------------------------------------------------------------------------------------
# Election
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("seed", range(5))
def test_election_by_timeout_elects_exactly_one_leader(n: int, seed: int) -> None:
    c = Cluster(range(1, n + 1), seed=seed)
    for _ in range(3 * ELECTION):
        c.tick_all()
        if c.leaders():
            break
    leaders = c.leaders()
    assert len(leaders) == 1
    leader = c.nodes[leaders[0]]
    c.tick_all(2)
    for node in c.nodes.values():
        assert node.term == leader.term
        assert node.leader_id == leader.id
    # The leader's NOOP of its term is committed everywhere.
    assert all(node.commit_index == leader.last_index for node in c.nodes.values())
    assert c.log_of(leader.id)[-1][2] == leader.term


def test_vote_requires_up_to_date_log() -> None:
    c = Cluster([1, 2, 3], check_quorum=False)  # no lease: only the log check protects
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"a")
    c.heal()
    # Node 3 missed an entry: its election must fail, 1 or 2 must win instead.
    c.isolate(1)
    c.nodes[3].campaign()
    c.stabilize()
    assert c.nodes[3].role is not Role.LEADER
    c.nodes[2].campaign()
    c.stabilize()
    assert c.nodes[2].role is Role.LEADER


def test_each_node_votes_once_per_term() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    n2 = c.nodes[2]
    for cand in (1, 3):
        n2.step(RequestVote(group_id="g", from_id=cand, to_id=2, term=5, pre_vote=False,
                            last_log_index=-1, last_log_term=0))
    rd = n2.ready()
    grants = [m for m in rd.persisted_messages if not m.reject]  # type: ignore[attr-defined]
    assert [m.to_id for m in grants] == [1]
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.hard_state.term == 5


# ---------------------------------------------------------------------------------------------
# PreVote, leader lease, CheckQuorum
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [True, False])
def test_prevote_keeps_a_healed_node_from_deposing_the_leader(pre_vote: bool) -> None:
    c = Cluster([1, 2, 3], pre_vote=pre_vote)
    c.elect(1)
    term = c.nodes[1].term
    c.isolate(3)
    c.tick_all(8 * ELECTION)  # node 3 times out over and over while cut off
    if pre_vote:
        assert c.nodes[3].term == term  # failed pre-votes leave no trace
    else:
        assert c.nodes[3].term > term
    c.heal()
    c.tick_all(3 * ELECTION)
    if pre_vote:
        assert c.nodes[1].role is Role.LEADER and c.nodes[1].term == term
    else:
        # Without PreVote the healed node's inflated term deposes the healthy leader.
        assert c.nodes[1].term > term
    assert len(c.leaders()) == 1


@pytest.mark.parametrize("check_quorum", [True, False])
def test_leader_lease_ignores_elections_while_a_leader_is_alive(check_quorum: bool) -> None:
    c = Cluster([1, 2, 3], check_quorum=check_quorum)
    c.elect(1)
    term = c.nodes[1].term
    # Node 3's log is as up to date as everyone's; it calls an election while 1 and 2 are
    # healthy (e.g. it missed heartbeats). Only the lease stops 2 from granting.
    c.nodes[3].campaign()
    c.stabilize()
    if check_quorum:
        assert c.nodes[1].role is Role.LEADER and c.nodes[1].term == term
        assert c.nodes[3].role is not Role.LEADER
    else:
        assert c.nodes[1].term > term


def test_check_quorum_leader_steps_down_when_cut_off() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(1)
    c.tick(1, 2 * ELECTION)
    assert c.nodes[1].role is Role.FOLLOWER
    with pytest.raises(NotLeaderError):
        c.nodes[1].propose(b"x")


def test_without_check_quorum_an_isolated_leader_keeps_leading() -> None:
    c = Cluster([1, 2, 3], check_quorum=False)
    c.elect(1)
    c.isolate(1)
    c.tick(1, 5 * ELECTION)
    assert c.nodes[1].role is Role.LEADER


def test_stale_leader_learns_new_term_and_steps_down() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(1)
    c.tick_all(4 * ELECTION)
    new = [n for n in c.leaders() if n != 1]
    assert new, "the majority side elects a new leader"
    c.heal()
    c.tick_all(2)
    assert c.leaders() == new
    assert c.nodes[1].leader_id == new[0]


# ---------------------------------------------------------------------------------------------
# Replication
# ---------------------------------------------------------------------------------------------


def _diverge(c: Cluster, stale_entries: int) -> None:
    """Leader 1 (term 1) appends `stale_entries` entries that only it keeps; then 2 leads."""
    c.elect(1)
    c.isolate(1)
    for i in range(stale_entries):
        c.nodes[1].propose(b"stale%d" % i, count=2)
    c.stabilize()
    c.nodes[2].campaign()
    c.stabilize()
    assert c.nodes[2].role is Role.LEADER
    for i in range(stale_entries):
        c.nodes[2].propose(b"new%d" % i, count=3)
    c.stabilize()
    # A fresh leader knows nothing about node 1 and probes at the end of its own log.
    c.nodes[2].transfer_leadership(3)
    c.stabilize()
    assert c.nodes[3].role is Role.LEADER


def test_conflict_backtracking_with_term_hint_takes_few_round_trips() -> None:
    c = Cluster([1, 2, 3], check_quorum=False)
    _diverge(c, 60)
    c.delivered.clear()
    c.heal()
    c.tick_all(3)
    rejects = [m for m in c.delivered if isinstance(m, AppendEntriesResponse) and m.from_id == 1
               and m.reject and m.term == c.nodes[3].term]
    # 60 divergent entries: one reject gives the hint that jumps over all of them.
    assert 1 <= len(rejects) <= 2, rejects
    assert c.log_of(1) == c.log_of(2) == c.log_of(3)
    assert c.data_applied(1) == c.data_applied(3)
    assert not any(d.startswith(b"stale") for d in c.data_applied(1))


def test_follower_hint_skips_its_divergent_tail() -> None:
    c = Cluster([1, 2, 3], check_quorum=False)
    _diverge(c, 10)
    n1 = c.nodes[1]
    leader = c.nodes[3]
    n1.step(AppendEntries(group_id="g", from_id=3, to_id=1, term=leader.term,
                          prev_log_index=leader.last_index, prev_log_term=leader.term,
                          entries=[], commit=0))
    rd = n1.ready()
    (resp,) = [m for m in rd.persisted_messages if isinstance(m, AppendEntriesResponse)]
    assert resp.reject
    # The hint is the end of the last entry both could share: the term-1 NOOP at 0.
    assert (resp.reject_hint_index, resp.reject_hint_term) == (n1.last_index, 1)
    assert leader.log.find_conflict_by_term(resp.reject_hint_index, resp.reject_hint_term) == (0, 1)


def test_entries_span_offsets_and_truncate_at_entry_start() -> None:
    c = Cluster([1, 2, 3, 4, 5], check_quorum=False, pre_vote=False)
    c.elect(1)  # NOOP at 0
    c.propose(1, b"base", count=4)  # [1, 4]
    c.partition([1, 3], [2, 4, 5])
    c.nodes[1].propose(b"old-a", count=5)  # [5, 9], only on 1 and 3
    c.nodes[1].propose(b"old-b", count=5)  # [10, 14]
    c.stabilize()
    assert c.log_of(3)[-2:] == [(5, 9, 1), (10, 14, 1)]
    c.nodes[2].campaign()
    c.stabilize()
    assert c.nodes[2].role is Role.LEADER
    c.nodes[2].propose(b"new-a", count=3)  # [6, 8]: its start falls inside 3's [5, 9]
    c.stabilize()
    c.heal()
    c.tick_all(3)
    expected = [(0, 0, 1), (1, 4, 1), (5, 5, 2), (6, 8, 2)]
    for nid in c.nodes:
        assert c.log_of(nid) == expected, nid
    n3 = c.nodes[3]
    assert [n3.log.term(i) for i in range(4, 10)] == [1, 2, 2, 2, 2, None]
    assert c.data_applied(3) == [b"base", b"new-a"]
    assert [(e.index, e.last_index) for e in c.applied[3]] == [(0, 0), (1, 4), (5, 5), (6, 8)]


@pytest.mark.parametrize("max_inflight", [1, 2, 4])
def test_pipelining_respects_the_inflight_bound(max_inflight: int) -> None:
    c = Cluster([1, 2, 3], max_inflight_msgs=max_inflight, max_msg_bytes=40)
    c.elect(1)
    c.propose(1, b"warm")  # puts followers into REPLICATE
    acks_from_2 = lambda m: isinstance(m, AppendEntriesResponse) and m.from_id == 2  # noqa: E731
    c.drop_filter = acks_from_2
    c.delivered.clear()
    for i in range(20):
        c.nodes[1].propose(b"e%02d" % i)
        c.deliver_one_round()
    apps = [m for m in c.delivered if isinstance(m, AppendEntries) and m.to_id == 2 and m.entries]
    assert len(apps) == max_inflight  # the window fills, then the leader waits for acks
    for m in apps:
        assert len(m.entries) == 1 or sum(e.size for e in m.entries) <= 40
    c.drop_filter = None
    c.tick_all(2 * ELECTION)
    assert c.log_of(2) == c.log_of(1)


def test_append_entries_carries_many_entries_up_to_max_bytes() -> None:
    c = Cluster([1, 2, 3], max_msg_bytes=1 << 20)
    c.elect(1)
    c.isolate(3)
    for _ in range(50):
        c.nodes[1].propose(b"x" * 100, count=10)
    c.stabilize()
    c.heal()
    c.delivered.clear()
    c.tick_all(1)
    apps = [m for m in c.delivered if isinstance(m, AppendEntries) and m.to_id == 3 and m.entries]
    assert len(apps) == 1 and len(apps[0].entries) == 50
    assert c.log_of(3) == c.log_of(1)


def test_proposal_to_follower_names_the_leader() -> None:
    c = Cluster([1, 2, 3])
    with pytest.raises(NotLeaderError) as err:
        c.nodes[2].propose(b"x")
    assert err.value.leader_id is None
    c.elect(1)
    with pytest.raises(NotLeaderError) as err:
        c.nodes[2].propose(b"x")
    assert err.value.leader_id == 1 and err.value.term == c.nodes[1].term
    with pytest.raises(NotLeaderError):
        c.nodes[3].propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, 9))


def test_uncommitted_backlog_is_bounded() -> None:
    c = Cluster([1, 2, 3], max_uncommitted_bytes=1000)
    c.elect(1)
    c.isolate(1)
    with pytest.raises(ProposalDroppedError):
        for _ in range(100):
            c.nodes[1].propose(b"y" * 100)
    c.heal()
    c.tick_all(2)
    c.propose(1, b"after")  # commits drained the backlog


# ---------------------------------------------------------------------------------------------
# Commit rule: Figure 8 of the Raft paper
# ---------------------------------------------------------------------------------------------


def test_figure8_previous_term_entry_commits_only_through_current_term_entry() -> None:
    c = Cluster([1, 2, 3, 4, 5], pre_vote=False, check_quorum=False, max_msg_bytes=1)
    c.elect(1)  # term 1, NOOP at 0 everywhere
    # (a) S1 appends X at offset 1 and gets it only to S2.
    c.partition([1, 2], [3, 4, 5])
    x = c.nodes[1].propose(b"X")
    c.stabilize()
    assert c.log_of(2)[-1] == (1, 1, 1)
    # (b) S1 crashes; S5 wins term 2 (S3, S4) and appends its NOOP Y at 1, keeping it local.
    c.down.add(1)
    c.heal()
    c.drop_filter = lambda m: m.from_id == 5 and isinstance(m, AppendEntries)
    c.nodes[5].campaign()
    c.stabilize()
    assert c.nodes[5].role is Role.LEADER and c.log_of(5)[-1] == (1, 1, 2)
    # (c) S5 crashes; S1 restarts and wins term 3; X reaches S3 but S1's NOOP Z does not.
    c.down = {5}
    c.nodes[1] = RaftNode(c.nodes[1].cfg, c.storages[1], c.nodes[1]._rng)
    # S4 hears nothing from S1; S2 and S3 never get an entry of S1's new term (stripped).
    c.drop_filter = lambda m: isinstance(m, AppendEntries) and m.from_id == 1 and m.to_id == 4
    c.rewrite = lambda m: (
        dataclasses.replace(m, entries=[])
        if isinstance(m, AppendEntries) and any(e.term == m.term for e in m.entries)
        else m)
    while c.nodes[1].role is not Role.LEADER:  # first try loses: term 2 votes went to S5
        c.nodes[1].campaign()
        c.stabilize()
    assert c.nodes[1].term == 3
    holders = [n for n in c.nodes if n != 5 and c.nodes[n].log.term(1) == 1]
    assert len(holders) >= 3, "X is stored on a majority"
    # X is on a majority but from an earlier term: it must not count as committed.
    assert c.nodes[1].commit_index < x.index
    # (d) S1 crashes; S5 restarts and wins with S2, S3, S4 (its last term 2 beats X's 1).
    c.down = {1}
    c.drop_filter = c.rewrite = None
    c.nodes[5] = RaftNode(c.nodes[5].cfg, c.storages[5], c.nodes[5]._rng)
    while c.nodes[5].role is not Role.LEADER:
        c.nodes[5].campaign()
        c.stabilize()
    c.propose(5, b"W")
    for nid in (2, 3, 4, 5):
        assert c.nodes[nid].log.term(1) == 2  # X was overwritten: fine, it never committed
        assert b"X" not in c.data_applied(nid)
    # With S1 back, X commits only once a current-term entry carries it.
    c.down.clear()
    c.tick_all(3)
    assert b"X" not in c.data_applied(1)


def test_figure8_current_term_entry_commits_earlier_entries() -> None:
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    c.elect(1)
    c.partition([1], [2, 3])
    x = c.nodes[1].propose(b"X")
    c.stabilize()
    # S1 restarts (term 1 log with X) and wins term 2: its NOOP carries X to commit.
    c.nodes[1] = RaftNode(c.nodes[1].cfg, c.storages[1], c.nodes[1]._rng)
    c.heal()
    c.nodes[1].campaign()
    c.stabilize()
    assert c.nodes[1].role is Role.LEADER
    assert c.nodes[1].commit_index >= x.index + 1
    assert all(b"X" in c.data_applied(n) for n in (1, 2, 3))


# ---------------------------------------------------------------------------------------------
# Leadership transfer
# ---------------------------------------------------------------------------------------------


def test_leadership_transfer_to_caught_up_follower() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    term = c.nodes[1].term
    c.nodes[1].transfer_leadership(2)
    c.stabilize()
    assert c.leaders() == [2] and c.nodes[2].term == term + 1
    c.propose(2, b"after")
    assert all(b"after" in c.data_applied(n) for n in c.nodes)


def test_leadership_transfer_catches_up_a_lagging_target_first() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    for i in range(10):
        c.nodes[1].propose(b"p%d" % i)
    c.stabilize()
    c.nodes[1].transfer_leadership(3)
    with pytest.raises(ProposalDroppedError):
        c.nodes[1].propose(b"during")  # refused while handing over
    c.heal()
    c.tick_all(2)
    assert c.leaders() == [3]
    assert c.log_of(3)[: len(c.log_of(1)) - 1] == c.log_of(1)[:-1]


def test_leadership_transfer_aborts_after_an_election_timeout() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    c.nodes[1].transfer_leadership(3)
    c.tick(1, ELECTION)
    assert c.nodes[1].lead_transferee is None
    c.propose(1, b"accepted again")
    assert c.nodes[1].role is Role.LEADER


def test_transfer_bypasses_the_lease_but_normal_elections_do_not() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].transfer_leadership(3)
    c.stabilize()
    assert c.leaders() == [3]


# ---------------------------------------------------------------------------------------------
# Membership
# ---------------------------------------------------------------------------------------------


def _change(c: Cluster, leader: int, op: ConfChangeOp, nid: int) -> None:
    c.nodes[leader].propose_conf_change(ConfChange(op, nid))
    c.stabilize()
    c.tick_all(2)


def test_learner_receives_the_log_but_does_not_vote_or_count() -> None:
    c = Cluster([1, 2, 3], extra=[4])
    c.elect(1)
    c.propose(1, b"before")
    _change(c, 1, ConfChangeOp.ADD_LEARNER, 4)
    assert c.nodes[4].configuration.learners == {4}
    assert b"before" in c.data_applied(4)
    # With 2 and 3 down, leader + learner are no quorum: nothing commits.
    c.down = {2, 3}
    e = c.nodes[1].propose(b"no quorum")
    c.stabilize()
    assert c.nodes[1].commit_index < e.index
    assert c.nodes[4].last_index >= e.index  # but the learner got it
    # A learner never campaigns.
    c.tick(4, 5 * ELECTION)
    assert c.nodes[4].role is Role.FOLLOWER and c.nodes[4].term == c.nodes[1].term


def test_add_learner_promote_then_remove_old_replica() -> None:
    """Moving a replica from node 3 to node 4: add 4 as learner, promote, remove 3."""
    c = Cluster([1, 2, 3], extra=[4])
    c.elect(1)
    c.propose(1, b"a")
    _change(c, 1, ConfChangeOp.ADD_LEARNER, 4)
    st = c.nodes[1].status()
    assert st.progress[4].is_learner and st.progress[4].match == c.nodes[1].last_index
    _change(c, 1, ConfChangeOp.PROMOTE_LEARNER, 4)
    _change(c, 1, ConfChangeOp.REMOVE_NODE, 3)
    for nid in (1, 2, 4):
        cfg = c.nodes[nid].configuration
        assert cfg.voters == {1, 2, 4} and not cfg.learners
    # The new configuration works without node 3.
    c.down = {3}
    c.propose(1, b"b")
    assert b"b" in c.data_applied(4)
    # And node 4 can now be elected.
    c.isolate(1)
    c.tick_all(4 * ELECTION)
    assert c.leaders() and c.leaders()[0] in (2, 4)


def test_one_configuration_change_at_a_time() -> None:
    c = Cluster([1, 2, 3], extra=[4, 5])
    c.elect(1)
    c.isolate(1)
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, 4))
    with pytest.raises(ProposalDroppedError):
        c.nodes[1].propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, 5))


def test_new_leader_waits_for_its_noop_before_a_config_change() -> None:
    c = Cluster([1, 2, 3])
    c.nodes[1].campaign()
    while c.nodes[1].role is not Role.LEADER:
        c.deliver_one_round()  # elected, NOOP not yet committed
    assert c.nodes[1].commit_index < c.nodes[1].last_index
    with pytest.raises(ProposalDroppedError):
        c.nodes[1].propose_conf_change(ConfChange(ConfChangeOp.REMOVE_NODE, 3))


def test_removing_the_leader_hands_over_and_steps_down() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    _change(c, 1, ConfChangeOp.REMOVE_NODE, 1)
    c.tick_all(3 * ELECTION)
    leaders = c.leaders()
    assert len(leaders) == 1 and leaders[0] in (2, 3)
    assert c.nodes[leaders[0]].configuration.voters == {2, 3}
    assert c.nodes[1].role is Role.FOLLOWER
    c.propose(leaders[0], b"still works")


def test_truncated_config_entry_is_reverted() -> None:
    c = Cluster([1, 2, 3, 4, 5], extra=[6], pre_vote=False, check_quorum=False)
    c.elect(1)
    c.partition([1, 2], [3, 4, 5])
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, 6))
    c.stabilize()
    assert c.nodes[2].configuration.learners == {6}  # in effect once appended
    c.nodes[3].campaign()
    c.stabilize()
    c.nodes[3].propose(b"overwrite")
    c.stabilize()
    c.heal()
    c.tick_all(3)
    for nid in range(1, 6):
        assert c.nodes[nid].configuration.learners == frozenset(), nid
        assert c.nodes[nid].configuration.voters == {1, 2, 3, 4, 5}


def test_restart_restores_configuration_from_the_log() -> None:
    c = Cluster([1, 2, 3], extra=[4])
    c.elect(1)
    _change(c, 1, ConfChangeOp.ADD_LEARNER, 4)
    _change(c, 1, ConfChangeOp.PROMOTE_LEARNER, 4)
    restarted = RaftNode(c.nodes[2].cfg, c.storages[2], c.nodes[2]._rng)
    assert restarted.configuration.voters == {1, 2, 3, 4}
    assert restarted.commit_index == c.nodes[2].commit_index


# ---------------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"state-bytes"])
def test_lagging_follower_gets_a_snapshot(data: bytes) -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.down.add(3)
    for i in range(10):
        c.nodes[1].propose(b"v%d" % i, count=3)
    c.stabilize()
    leader = c.nodes[1]
    snap = leader.compact(leader.applied_index, data)
    c.storages[1].compact(snap)
    assert leader.first_index == snap.index + 1
    c.down.clear()
    c.delivered.clear()
    c.tick_all(3)
    snaps = [m for m in c.delivered if isinstance(m, InstallSnapshot)]
    assert len(snaps) == 1 and snaps[0].snapshot.data == data
    s3 = c.storages[3]
    assert s3.snapshot().index == snap.index and s3.first_index() == snap.index + 1
    assert c.nodes[3].applied_index == c.nodes[1].applied_index
    c.propose(1, b"after")
    assert c.log_of(3)[-1] == c.log_of(1)[-1]
    assert c.data_applied(3) == [b"after"]  # only what came after the snapshot is replayed


def test_partition_log_starting_at_an_offset_and_new_replica_from_log_start() -> None:
    """A partition whose log starts at 1000 (retention): a new replica's log starts there."""
    c = Cluster([1, 2, 3], extra=[4], log_start=1000)
    c.elect(1)
    assert c.log_of(1) == [(1000, 1000, 1)]
    c.propose(1, b"batch", count=7)
    leader = c.nodes[1]
    c.storages[1].compact(leader.compact(leader.applied_index))  # retention: start moves on
    _change(c, 1, ConfChangeOp.ADD_LEARNER, 4)
    assert c.storages[4].first_index() == 1008
    assert c.nodes[4].configuration.voters == {1, 2, 3}
    c.propose(1, b"next", count=2)
    assert c.log_of(4)[-1] == (1009, 1010, 1)


def test_compaction_must_end_on_an_entry_boundary_and_be_applied() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.propose(1, b"x", count=5)  # [1, 5]
    with pytest.raises(ValueError):
        c.nodes[1].compact(3)
    with pytest.raises(ValueError):
        c.nodes[1].compact(c.nodes[1].applied_index + 1)
    snap = c.nodes[1].compact(5)
    assert (snap.index, snap.term) == (5, 1)


def test_snapshot_send_is_retried_when_lost() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.down.add(3)
    c.propose(1, b"a")
    c.storages[1].compact(c.nodes[1].compact(c.nodes[1].applied_index))
    c.down.clear()
    c.drop_filter = lambda m: isinstance(m, InstallSnapshot)
    c.tick_all(3 * ELECTION)
    c.drop_filter = None
    c.tick_all(3 * ELECTION)
    assert c.nodes[3].applied_index == c.nodes[1].applied_index


# ---------------------------------------------------------------------------------------------
# Observability
# ---------------------------------------------------------------------------------------------


def test_status_reports_roles_commit_and_follower_lag() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.down.add(3)
    for _ in range(4):
        c.propose(1, b"x", count=10)
    st = c.nodes[1].status()
    assert st.role is Role.LEADER and st.leader_id == 1 and st.commit_index == 40
    assert st.progress[2].match == 40 and st.progress[3].match < 40
    assert c.nodes[1].match_index(3) == st.progress[3].match
    assert c.nodes[2].status().progress == {}
    assert c.nodes[2].status().leader_id == 1


def test_noop_and_config_entries_are_marked() -> None:
    c = Cluster([1, 2, 3], extra=[4])
    c.elect(1)
    _change(c, 1, ConfChangeOp.ADD_LEARNER, 4)
    kinds = [e.kind for e in c.applied[2]]
    assert kinds == [EntryKind.NOOP, EntryKind.CONFIG]
