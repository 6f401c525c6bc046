"""PartitionRaftLog: the core's Storage over the on-disk PartitionLog."""

from __future__ import annotations

import itertools
import os
import random
import tempfile

import pytest

from cluster.raft import (
    CompactedError,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    RaftConfig,
    RaftNode,
    Role,
    Snapshot,
)
from cluster.raft.partition_log import META_FILE, PartitionRaftLog, RaftLogCorrupt
from storage.config import LogConfig
from storage.log import PartitionLog
from storage.record_batch import RecordInput, build_batch, iter_records

from .equivalence import log_bytes, run_both

CFG = Configuration(frozenset({1, 2, 3}))
DATA, NOOP, CONFIG = EntryKind.DATA, EntryKind.NOOP, EntryKind.CONFIG


def batch(n: int = 1, tag: str = "v", key: bytes | None = b"k") -> bytes:
    return build_batch([RecordInput(key, f"{tag}{i}".encode(), 1000 + i) for i in range(n)])


def data(term: int, index: int, n: int = 1, tag: str = "v") -> Entry:
    return Entry(term, index, index + n - 1, DATA, batch(n, tag))


def cfg_entry(term: int, index: int, cfg: Configuration) -> Entry:
    return Entry(term, index, index, CONFIG, cfg.encode())


def spans(s: PartitionRaftLog) -> list[tuple[int, int, int, EntryKind]]:
    if s.last_index() < s.first_index():
        return []
    return [(e.index, e.last_index, e.term, e.kind) for e in s.entries(s.first_index(), s.last_index() + 1, 1 << 40)]


def reopen(s: PartitionRaftLog, **kw) -> PartitionRaftLog:
    s.close()
    return PartitionRaftLog.open(s.directory, **kw)


def test_entries_round_trip_as_stored_batches_and_survive_restart(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), bootstrap=CFG)
    assert (s.first_index(), s.last_index(), s.term(-1), s.snapshot().configuration) == (0, -1, 0, CFG)
    new = Configuration(frozenset({1, 2, 3}), frozenset({4}))
    s.append([Entry(1, 0, 0, NOOP, b""), data(1, 1, 3), cfg_entry(1, 4, new), data(2, 5, 2)])
    assert spans(s) == [(0, 0, 1, NOOP), (1, 3, 1, DATA), (4, 4, 1, CONFIG), (5, 6, 2, DATA)]
    assert [s.term(i) for i in range(-1, 8)] == [0, 1, 1, 1, 1, 1, 2, 2, None]
    assert s.entry_span(2) == (1, 3, 1) and s.entry_span(7) is None and s.entry_span(-1) is None
    ents = s.entries(0, 7, 1 << 20)
    assert bytes(ents[2].data) == new.encode() and ents[0].data == b""
    # DATA is stamped: base offset = index, partitionLeaderEpoch = term; records are untouched.
    stored = bytes(ents[1].data)
    assert int.from_bytes(stored[:8], "big") == 1 and int.from_bytes(stored[12:16], "big") == 1
    assert stored[16:] == batch(3)[16:]
    assert [e.index for e in s.config_entries()] == [4]
    # Raft's own entries are control batches: Kafka readers skip them.
    raw = bytes(s.log.read(0, 1 << 20))
    assert [r.value for r in iter_records(raw)] == [b"v0", b"v1", b"v2", b"v0", b"v1"]
    # Restart: terms from the epoch cache, configuration from the side index, no scan needed.
    s = reopen(s)
    assert spans(s) == [(0, 0, 1, NOOP), (1, 3, 1, DATA), (4, 4, 1, CONFIG), (5, 6, 2, DATA)]
    assert [s.term(i) for i in range(-1, 8)] == [0, 1, 1, 1, 1, 1, 2, 2, None]
    assert [(e.index, bytes(e.data)) for e in s.config_entries()] == [(4, new.encode())]
    s.close()


def test_control_batches_are_identical_on_every_replica(tmp_path) -> None:
    a = PartitionRaftLog.open(str(tmp_path / "a"), bootstrap=CFG)
    b = PartitionRaftLog.open(str(tmp_path / "b"), bootstrap=CFG)
    ents = [Entry(3, 0, 0, NOOP, b""), cfg_entry(3, 1, CFG), data(3, 2, 2)]
    a.append(ents)
    b.append(ents[:1])
    b.append(ents[1:])
    assert bytes(a.log.read(0, 1 << 20)) == bytes(b.log.read(0, 1 << 20))
    a.close()
    b.close()


def test_divergent_tail_is_truncated_and_its_config_forgotten(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), bootstrap=CFG)
    s.append([Entry(1, 0, 0, NOOP, b""), data(1, 1, 2), cfg_entry(1, 3, Configuration(frozenset({1, 2})))])
    s.append([data(1, 4, 1)])
    # A new leader's entries replace everything from offset 3 (the CONFIG entry included).
    s.append([Entry(2, 3, 3, NOOP, b""), data(2, 4, 3, "w")])
    assert spans(s) == [(0, 0, 1, NOOP), (1, 2, 1, DATA), (3, 3, 2, NOOP), (4, 6, 2, DATA)]
    assert s.config_entries() == []
    s = reopen(s)
    assert s.config_entries() == [] and [s.term(i) for i in range(7)] == [1, 1, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="inside the batch"):
        s.log.truncate_to(5)  # what the adapter never asks: truncation falls on entry starts
    s.close()


def test_meta_written_before_a_config_batch_that_a_crash_lost(tmp_path) -> None:
    """raft-meta lists a CONFIG entry whose batch never reached the log: dropped on open."""
    s = PartitionRaftLog.open(str(tmp_path / "p"), bootstrap=CFG)
    s.append([Entry(1, 0, 0, NOOP, b"")])
    ghost = cfg_entry(1, 1, Configuration(frozenset({1})))
    s._write_meta(s.snapshot(), [ghost], {})
    s = reopen(s)
    assert s.config_entries() == [] and s.last_index() == 0
    s.close()


def test_gaps_left_by_compaction_belong_to_the_next_entry(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), LogConfig(segment_bytes=100), bootstrap=CFG)
    # Entries as a compacted leader sends them: [5..14] holds only the batch 12..14 (10 offsets, 3 left).
    for e in [Entry(1, 0, 4, DATA, batch(5)), Entry(1, 5, 14, DATA, batch(3, "c")), Entry(2, 15, 15, NOOP, b""),
              Entry(2, 16, 30, DATA, batch(2, "d")), data(2, 31, 2)]:
        s.append([e])  # one append each: every batch in its own segment, gaps across segment boundaries
    assert s.log.segment_base_offsets == [0, 12, 15, 29, 31]
    expected = [(0, 4, 1, DATA), (5, 14, 1, DATA), (15, 15, 2, NOOP), (16, 30, 2, DATA), (31, 32, 2, DATA)]
    for fresh in (False, True):  # from the in-memory tail, then from disk after a restart
        if fresh:
            s = reopen(s, cache_bytes=0)
        assert spans(s) == expected
        for index, last, term, _k in expected:
            for i in range(index, last + 1):
                assert s.term(i) == term, i
                assert s.entry_span(i) == (index, last, term), i
        assert [e.index for e in s.entries(16, 33, 1)] == [16]
        assert [e.index for e in s.entries(5, 31, 1 << 20)] == [5, 15, 16]
    s.close()


def test_gap_reaching_the_log_start_and_retention_keep_boundaries(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), LogConfig(segment_bytes=100), bootstrap=CFG)
    ents = [data(1, 0, 2), Entry(1, 2, 9, DATA, batch(1, "x")), data(1, 10, 2), data(2, 12, 1),
            Entry(2, 13, 20, DATA, batch(2, "y")), Entry(3, 21, 25, DATA, batch(1, "z"))]
    for e in ents:
        s.append([e])
    assert s.log.segment_base_offsets == [0, 9, 10, 12, 19, 25]
    before = spans(s)
    # Retention deletes every sealed segment; the active one starts at 25 after the gap 21..24, so the
    # snapshot point is the end of the entry before the gap (20, term 2), not 24.
    assert s.apply_retention(now_ms=2**62, applied_index=25) == 5
    snap = s.snapshot()
    assert (snap.index, snap.term, snap.configuration) == (20, 2, CFG)
    assert s.first_index() == 21 and s.log.log_start_offset == 25
    assert spans(s) == [(21, 25, 3, DATA)] == [t for t in before if t[0] > 20]
    assert s.term(20) == 2 and s.term(21) == 3 and s.entry_span(22) == (21, 25, 3)
    s = reopen(s)
    assert s.snapshot() == snap and spans(s) == [(21, 25, 3, DATA)]
    with pytest.raises(CompactedError):
        s.entries(20, 26, 100)
    s.close()


def test_retention_crash_before_the_new_snapshot_point_is_recovered(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), LogConfig(segment_bytes=100), bootstrap=CFG)
    for e in [data(1, 0, 2), data(1, 2, 2), Entry(2, 4, 9, DATA, batch(1, "g"))]:
        s.append([e])
    s.apply_retention(now_ms=0, applied_index=9)  # nothing old enough: only records the candidates
    assert s.first_index() == 0 and s._candidates == {2: (1, 1), 9: (3, 1)}
    s.log.apply_retention(now_ms=2**62)  # ...then segments go and the process dies before meta is updated
    s = reopen(s)
    assert (s.snapshot().index, s.snapshot().term, s.first_index()) == (3, 1, 4)
    assert spans(s) == [(4, 9, 2, DATA)]
    s.close()


def test_retention_waits_for_the_applied_index(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), LogConfig(segment_bytes=100), bootstrap=CFG)
    s.append([data(1, i * 2, 2) for i in range(6)])
    assert s.apply_retention(now_ms=2**62, applied_index=3) == 0  # a sealed segment is not applied yet
    assert s.first_index() == 0
    s.close()


def test_snapshot_install_restarts_the_log_and_is_redone_after_a_crash(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), bootstrap=CFG)
    s.append([data(1, 0, 3), data(1, 3, 2)])
    snap = Snapshot(99, 4, Configuration(frozenset({1, 2})))
    s.apply_snapshot(snap)
    assert (s.first_index(), s.last_index(), s.term(99), s.term(98), s.log.log_start_offset) == (100, 99, 4, None, 100)
    s.append([Entry(4, 100, 100, NOOP, b"")])
    s = reopen(s)
    assert s.snapshot() == snap and spans(s) == [(100, 100, 4, NOOP)]
    # Crash between the meta write and the log change: the open finishes the install.
    snap2 = Snapshot(500, 6, CFG, b"")
    s._write_meta(snap2, [], {})
    s = reopen(s)
    assert (s.first_index(), s.last_index(), s.log.log_start_offset, s.log.log_end_offset) == (501, 500, 501, 501)
    s.close()


def test_core_compaction_keeps_snapshot_data_and_configuration(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), bootstrap=CFG)
    c2 = Configuration(frozenset({1, 2, 3, 4}))
    s.append([data(1, 0, 2), cfg_entry(1, 2, c2), data(1, 3, 2), data(2, 5, 2)])
    s.compact(Snapshot(4, 1, c2, b"controller-state"))
    assert s.first_index() == 5 and s.log.log_start_offset == 5 and s.config_entries() == []
    s = reopen(s)
    assert s.snapshot() == Snapshot(4, 1, c2, b"controller-state") and spans(s) == [(5, 6, 2, DATA)]
    s.close()


def test_corrupt_or_missing_meta_refuses_to_start(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), bootstrap=CFG)
    s.append([data(1, 0, 1)])
    s.close()
    meta = tmp_path / "p" / META_FILE
    raw = bytearray(meta.read_bytes())
    raw[-3] ^= 0xFF
    meta.write_bytes(bytes(raw))
    with pytest.raises(RaftLogCorrupt, match="unreadable"):
        PartitionRaftLog.open(str(tmp_path / "p"))
    meta.unlink()
    with pytest.raises(RaftLogCorrupt, match="no raft-meta"):
        PartitionRaftLog.open(str(tmp_path / "p"))


def test_bootstrap_only_applies_to_a_brand_new_log(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"))
    assert s.snapshot().configuration == Configuration()
    assert s.bootstrap(CFG) and s.snapshot().configuration == CFG
    assert not s.bootstrap(Configuration(frozenset({7})))  # already configured
    s = reopen(s)
    assert s.snapshot().configuration == CFG
    s.close()


def test_rejects_data_entries_that_are_not_one_fitting_batch(tmp_path) -> None:
    s = PartitionRaftLog.open(str(tmp_path / "p"), bootstrap=CFG)
    for bad in (Entry(1, 0, 0, DATA, b"not a batch"), Entry(1, 0, 0, DATA, batch(2)),
                Entry(1, 0, 1, DATA, batch(1) + batch(1))):
        with pytest.raises(ValueError):
            s.prepare_append([bad])
    assert s.last_index() == -1
    s.close()


# ---------------------------------------------------------------------------------------------
# Equivalence with MemoryStorage under the real core
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_same_seed_same_trace_as_memory_storage(tmp_path, seed: int) -> None:
    """Three voters + a spare (added, promoted, removed) driven through elections, isolation (conflicting
    tails, truncation), crashes with restart from disk, compaction and snapshots: the message trace and
    every applied entry are identical on MemoryStorage and on PartitionRaftLog, and the final members'
    logs are byte-identical on disk."""
    mem, disk, backend = run_both(seed, str(tmp_path), steps=1500)
    assert mem.trace == disk.trace
    assert mem.applied == disk.applied
    try:
        members = [n for n in backend.storages if n in (1, 2, 3) or mem.applied[n]]
        logs = {n: backend.storages[n] for n in members}
        last = {s.last_index() for s in logs.values()}
        start = max(s.first_index() for s in logs.values())
        voters = [n for n in (1, 2, 3)]
        assert len({log_bytes(logs[n], start) for n in voters}) == 1, last
    finally:
        backend.close()


def test_equivalence_runs_cover_the_interesting_paths(tmp_path) -> None:
    totals = {"truncations": 0, "snapshots": 0, "restarts": 0, "leaders": 0}
    for seed in range(8):
        mem, _disk, backend = run_both(seed, str(tmp_path / str(seed)), steps=1500)
        backend.close()
        totals["truncations"] += mem.truncations
        totals["snapshots"] += mem.snapshots_installed
        totals["restarts"] += mem.restarts
        totals["leaders"] += len(mem.leaders)
    assert all(v >= 5 for v in totals.values()), totals


# ---------------------------------------------------------------------------------------------
# A compacted leader log replicated to a new follower
# ---------------------------------------------------------------------------------------------


def _drive(nodes: dict[int, RaftNode], stores: dict[int, PartitionRaftLog], rounds: int) -> None:
    net: list = []
    for _ in range(rounds):
        for nid, node in nodes.items():
            node.tick()
            while node.has_ready():
                rd = node.ready()
                net += rd.messages
                plan = stores[nid].prepare_append(rd.entries, rd.snapshot)
                stores[nid].execute(plan)
                stores[nid].finish_append(plan)
                if rd.hard_state is not None:
                    stores[nid].set_hard_state(rd.hard_state)
                net += rd.persisted_messages
                node.advance(rd)
        while net:
            msgs, net = net, []
            for m in msgs:
                node = nodes[m.to_id]
                node.step(m)
                while node.has_ready():
                    rd = node.ready()
                    net += rd.messages
                    st = stores[m.to_id]
                    plan = st.prepare_append(rd.entries, rd.snapshot)
                    st.execute(plan)
                    st.finish_append(plan)
                    net += rd.persisted_messages
                    node.advance(rd)


def test_compacted_log_replicates_with_its_gaps_byte_for_byte(tmp_path) -> None:
    compact_cfg = LogConfig(segment_bytes=400, cleanup_policy="compact", min_compaction_lag_ms=0)
    leader_log = PartitionRaftLog.open(str(tmp_path / "l"), compact_cfg, bootstrap=Configuration(frozenset({1})))
    rng = random.Random(7)
    index = 0
    ents = [Entry(1, 0, 0, NOOP, b"")]
    index = 1
    for i in range(60):
        n = rng.randrange(1, 4)
        b = build_batch([RecordInput(b"key%d" % rng.randrange(5), b"val%d-%d" % (i, j), 1000 + i)
                         for j in range(n)])
        ents.append(Entry(1, index, index + n - 1, DATA, b))
        index += n
    leader_log.append(ents)
    leader_log.log.roll()
    stats = leader_log.log.compact(now_ms=10**13, upper_bound=index)
    assert stats.batches_removed > 0, stats
    leader_log = reopen(leader_log)
    stored = spans(leader_log)
    assert stored[-1][1] == index - 1
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(stored))  # gaps covered by the next entry
    assert len(stored) < len(ents)
    leader_log.set_hard_state(HardState(1, 1, index - 1))
    # Node 1 leads; node 2 joins with an empty log (the same single-voter bootstrap config, as a learner).
    follower_log = PartitionRaftLog.open(str(tmp_path / "f"))
    nodes = {1: RaftNode(RaftConfig(1, "c", election_ticks=5, max_msg_bytes=300), leader_log, random.Random(1)),
             2: RaftNode(RaftConfig(2, "c", election_ticks=5), follower_log, random.Random(2))}
    stores = {1: leader_log, 2: follower_log}
    _drive(nodes, stores, 15)
    assert nodes[1].role is Role.LEADER
    from cluster.raft import ConfChange, ConfChangeOp

    nodes[1].propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, 2))
    _drive(nodes, stores, 30)
    assert follower_log.last_index() == leader_log.last_index()
    assert spans(follower_log) == spans(leader_log)
    assert log_bytes(follower_log, 0) == log_bytes(leader_log, 0)
    leader_log.close()
    follower_log.close()


def test_storage_protocol_matches_memory_storage_on_random_logs() -> None:
    """Same entries into MemoryStorage and PartitionRaftLog (random truncations): same answers."""
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as d:
        disk = PartitionRaftLog.open(os.path.join(d, "p"), bootstrap=CFG, cache_bytes=rng.choice([0, 4096]))
        mem = MemoryStorage(CFG)
        term = 1
        for _step in range(150):
            last = mem.last_index()
            if last >= 0 and rng.random() < 0.2:
                ents = mem.entries(0, last + 1, 1 << 40)
                start = rng.choice(ents).index
                term += 1
            else:
                start = last + 1
            batch_ents = []
            for _ in range(rng.randrange(1, 4)):
                n = rng.randrange(1, 4)
                kind = rng.choice([DATA, DATA, NOOP])
                e = Entry(term, start, start + (n - 1 if kind is DATA else 0), kind,
                          batch(n) if kind is DATA else b"")
                batch_ents.append(e)
                start = e.last_index + 1
            mem.append(batch_ents)
            disk.append(batch_ents)
            if rng.random() < 0.1:
                disk = reopen(disk, cache_bytes=rng.choice([0, 4096]))
            last = mem.last_index()
            assert disk.last_index() == last and disk.first_index() == mem.first_index()
            for i in range(-1, last + 2):
                assert disk.term(i) == mem.term(i) and disk.entry_span(i) == mem.entry_span(i), i
            lo = rng.choice(mem.entries(0, last + 1, 1 << 40)).index
            cap = rng.randrange(1, 400)
            got = disk.entries(lo, last + 1, cap)
            want = mem.entries(lo, last + 1, cap)
            assert [(e.index, e.last_index, e.term, e.kind) for e in got] == [
                (e.index, e.last_index, e.term, e.kind) for e in want]
        disk.close()


def test_a_log_with_data_but_no_raft_metadata_is_refused(tmp_path) -> None:
    lg = PartitionLog.open(str(tmp_path / "p"), LogConfig(), now_ms=0)
    lg.append(batch(1), leader_epoch=0, now_ms=0)
    with pytest.raises(RaftLogCorrupt):
        PartitionRaftLog(lg)
    lg.close()


# -- DeleteRecords: LOG_START entries -------------------------------------------------------------------------

def _log_start(term: int, index: int, offset: int) -> Entry:
    from cluster.raft.partition_log import log_start_batch

    return Entry(term, index, index, DATA, log_start_batch(offset))


def _with_log_start(tmp_path, offset: int = 5) -> PartitionRaftLog:
    """Batches 0-1, 2-3, ..., 10-11 (small segments), then a LOG_START entry at 12 carrying ``offset``."""
    s = PartitionRaftLog.open(str(tmp_path / "p"), LogConfig(segment_bytes=100), bootstrap=CFG)
    s.append([data(1, i * 2, 2) for i in range(6)])
    s.append([_log_start(1, 12, offset)])
    return s


def test_log_start_entry_applies_once_committed_and_survives_restart(tmp_path) -> None:
    from cluster.raft.partition_log import log_start_of

    s = _with_log_start(tmp_path)
    stored = s.entries(12, 13, 1 << 20)
    assert [(e.index, e.kind) for e in stored] == [(12, DATA)] and log_start_of(stored[0].data) == 5
    assert log_start_of(batch(2)) is None
    assert s.pending_log_starts == 1 and not s.log_start_due(11) and s.log_start_due(12)
    assert s.apply_log_start(applied_index=11) == 0 and s.log.log_start_offset == 0  # not committed yet
    assert s.apply_log_start(applied_index=12) == 5
    # Records before 5 are gone (whole segments deleted); the Raft log starts at the entry holding 5, so its
    # boundaries stay those of every replica, and a follower behind gets a snapshot at 3.
    assert s.log.log_start_offset == 5 and s.log.segment_base_offsets[0] <= 4
    assert (s.snapshot().index, s.snapshot().term, s.first_index()) == (3, 1, 4)
    assert spans(s)[0] == (4, 5, 1, DATA) and s.term(4) == 1 and s.entry_span(4) == (4, 5, 1)
    assert s.pending_log_starts == 0 and not s.log_start_due(12)
    with pytest.raises(CompactedError):
        s.entries(2, 4, 100)
    s = reopen(s)
    assert (s.log.log_start_offset, s.snapshot().index, s.first_index(), s.pending_log_starts) == (5, 3, 4, 0)
    # A later, smaller log start changes nothing: it never goes back.
    s.append([_log_start(1, 13, 2)])
    assert s.apply_log_start(applied_index=13) == 5 and s.pending_log_starts == 0
    s.close()


def test_log_start_committed_before_a_crash_is_applied_after_restart(tmp_path) -> None:
    # Crash after the commit, before the apply: the side index in raft-meta still lists the entry.
    s = reopen(_with_log_start(tmp_path))
    assert s.pending_log_starts == 1 and s.log.log_start_offset == 0
    assert s.apply_log_start(applied_index=12) == 5
    s.close()
    # Crash after the log change, before the meta update: the boundary recorded first moves the snapshot point.
    s = _with_log_start(tmp_path / "b")
    point = s._boundary_before(4)
    s._write_meta(s._snap, s._configs, {**s._candidates, 5: point})
    s.log.delete_records_before(5)
    s = reopen(s)
    assert (s.log.log_start_offset, s.snapshot().index, s.first_index()) == (5, 3, 4)
    assert s.pending_log_starts == 1 and s.apply_log_start(applied_index=12) == 5 and s.pending_log_starts == 0
    s = reopen(s)
    assert s.pending_log_starts == 0
    s.close()


def test_truncated_or_lost_log_start_entries_are_forgotten(tmp_path) -> None:
    s = _with_log_start(tmp_path)
    s.append([Entry(2, 12, 12, DATA, batch(1, "new"))])  # a new leader's entry replaces it (never committed)
    assert s.pending_log_starts == 0
    s = reopen(s)
    assert s.pending_log_starts == 0 and s.apply_log_start(applied_index=12) == 0
    # Meta lists an entry whose batch a crash lost (meta is written before the append): dropped on open.
    s._write_meta(s._snap, s._configs, s._candidates, [(13, 2, 7)])
    s = reopen(s)
    assert s.pending_log_starts == 0
    # A snapshot install from the leader replaces everything, the side index too.
    s.append([_log_start(2, 13, 9)])
    s.apply_snapshot(Snapshot(40, 3, CFG))
    assert s.pending_log_starts == 0 and s.first_index() == 41
    s = reopen(s)
    assert s.pending_log_starts == 0
    s.close()
