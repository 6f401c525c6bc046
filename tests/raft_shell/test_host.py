"""RaftHost: several hosts in one process over real loopback transports (fast ticks)."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from cluster.raft import (
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    NotLeaderError,
    ProposalDroppedError,
    Snapshot,
)
from cluster.raft.host import (
    GroupListener,
    GroupOfflineError,
    Proposal,
    ProposalTruncatedError,
    RaftGroup,
    RaftHost,
)
from cluster.raft.partition_log import PartitionRaftLog
from cluster.raft.transport import CARRIERS, DEFAULT_CARRIER, LeaderHint, RaftTransport
from storage.record_batch import RecordInput, build_batch

TICK_MS = 10
ELECTION = 30  # 300-600 ms: no spurious elections on a loaded 2-core box


def batch(i: int, size: int = 0) -> bytes:
    return build_batch([RecordInput(b"k%d" % (i % 5), b"v%d" % i + b"x" * size, 1000 + i)])


class Recorder(GroupListener):
    def __init__(self) -> None:
        self.committed: list[Entry] = []
        self.leaders: list[tuple[int | None, int]] = []
        self.restored: list[Snapshot] = []

    def on_committed(self, entries: list[Entry]) -> None:
        self.committed.extend(entries)

    def on_leader_change(self, leader_id: int | None, term: int) -> None:
        self.leaders.append((leader_id, term))

    def on_restore(self, snapshot: Snapshot) -> None:
        self.restored.append(snapshot)

    def values(self) -> list[bytes]:
        from storage.record_batch import iter_records

        out = []
        for e in self.committed:
            if e.kind is EntryKind.DATA:
                out += [r.value for r in iter_records(bytes(e.data))]
        return out


class Cluster:
    carrier = DEFAULT_CARRIER  # the fixture below runs every test over both

    def __init__(self, root: str, ids=(1, 2, 3)) -> None:
        self.root = root
        self.ids = list(ids)
        self.transports: dict[int, RaftTransport] = {}
        self.hosts: dict[int, RaftHost] = {}
        self.logs: dict[tuple[int, str], PartitionRaftLog] = {}
        self.listeners: dict[tuple[int, str], Recorder] = {}
        self.groups: dict[tuple[int, str], RaftGroup] = {}
        self.hints: dict[int, list[tuple[int, LeaderHint]]] = {}
        self.ports: dict[int, int] = {}

    async def start_node(self, nid: int, **host_kw) -> RaftHost:
        t = RaftTransport(nid, {}, listen=f"127.0.0.1:{self.ports.get(nid, 0)}", rng=random.Random(nid),
                          backoff_max_s=0.2, carrier=self.carrier)
        self.hints.setdefault(nid, [])
        t.on_leader_hint(lambda frm, hs, nid=nid: self.hints[nid].extend((frm, h) for h in hs))
        await t.start()
        self.ports[nid] = t.port
        self.transports[nid] = t
        for other, ot in self.transports.items():
            if other != nid:
                t.add_peer(other, f"127.0.0.1:{self.ports[other]}")
                ot.add_peer(nid, f"127.0.0.1:{t.port}")
        kw = {"tick_ms": TICK_MS, "election_ticks": ELECTION, "heartbeat_ticks": 2, "rng": random.Random(nid * 7),
              "hint_interval_ticks": 20}
        kw.update(host_kw)
        h = RaftHost(nid, t, state_dir=os.path.join(self.root, f"n{nid}", "raft"), **kw)
        await h.start()
        self.hosts[nid] = h
        return h

    def add_group(self, nid: int, gid: str, voters=(1, 2, 3), learners=(), **kw) -> RaftGroup:
        lg = self.logs.get((nid, gid))
        if lg is None or lg.log.closed:
            lg = PartitionRaftLog.open(os.path.join(self.root, f"n{nid}", gid))
            self.logs[nid, gid] = lg
        rec = self.listeners.setdefault((nid, gid), Recorder())
        g = self.hosts[nid].add_group(gid, lg, voters=voters, learners=learners, listener=rec, **kw)
        self.groups[nid, gid] = g
        return g

    async def start(self, groups=("g",)) -> None:
        for nid in self.ids:
            await self.start_node(nid)
            for gid in groups:
                self.add_group(nid, gid)

    async def stop_node(self, nid: int) -> None:
        await self.hosts.pop(nid).close()
        await self.transports.pop(nid).close()
        for (n, gid), lg in list(self.logs.items()):
            if n == nid:
                lg.close()

    async def leader(self, gid: str = "g", timeout: float = 10.0, nodes=None) -> RaftGroup:
        deadline = time.monotonic() + timeout
        while True:
            leaders = [self.groups[n, gid] for n in (nodes or self.hosts) if (n, gid) in self.groups
                       and self.groups[n, gid].is_leader]
            if len(leaders) == 1:
                return leaders[0]
            assert time.monotonic() < deadline, f"no single leader of {gid}"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for nid in list(self.hosts):
            await self.stop_node(nid)


@pytest.fixture(autouse=True, params=CARRIERS)
def carrier(request, monkeypatch) -> str:
    monkeypatch.setattr(Cluster, "carrier", request.param)
    return request.param


async def until(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def run(coro_fn, tmp_path, timeout: float = 60.0) -> None:
    async def main() -> None:
        c = Cluster(str(tmp_path))
        try:
            await asyncio.wait_for(coro_fn(c), timeout)
        finally:
            await c.close()

    asyncio.run(main())


def test_proposals_commit_everywhere_in_order_and_batch_into_few_fsyncs(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start()
        lead = await c.leader()
        follower = next(g for (n, _gid), g in c.groups.items() if n != lead.node_id)
        with pytest.raises(NotLeaderError) as info:
            follower.propose(batch(0), 1)
        assert info.value.leader_id in (None, lead.node_id)
        host = c.hosts[lead.node_id]
        rounds0 = host.persist_rounds
        props = [lead.propose(batch(i), 1) for i in range(500)]
        assert [p.index for p in props] == list(range(props[0].index, props[0].index + 500))
        await asyncio.gather(*(lead.wait_committed(p, 10) for p in props))
        assert host.persist_rounds - rounds0 < 50  # 500 proposals, a handful of appends and fsyncs
        await lead.wait_durable(props[-1], 1)
        assert all(p.committed and p.durable for p in props)
        want = [b"v%d" % i for i in range(500)]
        await until(lambda: all(c.listeners[n, "g"].values() == want for n in c.ids))
        # Each entry once, in order, on every node; NOOP of the leader's term first.
        for n in c.ids:
            idx = [e.index for e in c.listeners[n, "g"].committed]
            assert idx == sorted(set(idx))
        p = lead.propose(batch(500), 1)
        assert (await lead.wait_committed(p.last_index, 5)) is p  # by last offset, while outstanding
        with pytest.raises(KeyError):
            await lead.wait_committed(p.last_index, 1)  # resolved and forgotten: keep the Proposal instead
        st = lead.replica_state()
        assert set(st) == {1, 2, 3}
        await until(lambda: all(r.in_sync and r.lag == 0 for r in lead.replica_state().values()))
        assert lead.in_sync_replicas() == (1, 2, 3)
        # Leader hints reach every node (the runtime's leadership table).
        await until(lambda: all(any(h.group_id == "g" and h.leader_id == lead.node_id for _f, h in c.hints[n])
                                for n in c.ids))

    run(scenario, tmp_path)


def test_bad_proposals_and_limits(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start_node(1, max_uncommitted_bytes=2000)
        g = c.add_group(1, "solo", voters=(1,))
        await until(lambda: g.is_leader, 5)  # a single voter campaigns at once
        with pytest.raises(ValueError):
            g.propose(b"junk", 1)
        with pytest.raises(ValueError):
            g.propose(batch(1), 2)  # count does not match the batch
        ps = [g.propose(batch(i, 300), 1) for i in range(3)]
        with pytest.raises(ProposalDroppedError):
            for i in range(20):
                ps.append(g.propose(batch(i, 300), 1))
        await asyncio.gather(*(g.wait_committed(p, 5) for p in ps))
        g.propose(batch(99), 1)  # room again after the commits

    run(scenario, tmp_path)


def test_leadership_transfer_and_lost_leadership_fail_waiters(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start()
        lead = await c.leader()
        target = next(n for n in c.ids if n != lead.node_id)
        p = lead.propose(batch(1), 1)
        await lead.wait_committed(p, 5)
        lead.transfer_leadership(target)
        with pytest.raises(ProposalDroppedError):
            lead.propose(batch(2), 1)
        await until(lambda: c.groups[target, "g"].is_leader and not lead.is_leader, 5)
        new = c.groups[target, "g"]
        # Cut the new leader off (stop its transport): proposals made there cannot commit.
        p2 = new.propose(batch(3), 1)
        await c.transports[target].close()
        with pytest.raises(NotLeaderError):  # CheckQuorum: it steps down within two election timeouts
            await new.wait_committed(p2, 5)
        others = [n for n in c.ids if n != target]
        again = await c.leader(nodes=others, timeout=5)
        await again.wait_committed(again.propose(batch(4), 1), 5)

    run(scenario, tmp_path)


def test_membership_change_with_a_learner_then_removal(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        c.ids = [1, 2, 3]
        await c.start()
        lead = await c.leader()
        for i in range(20):
            await lead.wait_committed(lead.propose(batch(i), 1), 5)
        await c.start_node(4)
        c.add_group(4, "g", voters=())  # joins with no configuration: learns it from the leader
        await lead.change_membership(ConfChange(ConfChangeOp.ADD_LEARNER, 4), 5)
        await until(lambda: lead.replica_state().get(4) is not None and lead.replica_state()[4].lag == 0)
        assert lead.replica_state()[4].is_learner and not lead.replica_state()[4].in_sync
        await lead.change_membership(ConfChange(ConfChangeOp.PROMOTE_LEARNER, 4), 5)
        assert lead.configuration.voters == {1, 2, 3, 4}
        with pytest.raises(ValueError):
            await lead.change_membership(ConfChange(ConfChangeOp.PROMOTE_LEARNER, 4), 5)
        victim = next(n for n in (1, 2, 3) if n != lead.node_id)
        await lead.change_membership(ConfChange(ConfChangeOp.REMOVE_NODE, victim), 5)
        await lead.wait_committed(lead.propose(batch(99), 1), 5)
        await until(lambda: c.groups[4, "g"].commit_index == lead.commit_index)
        assert c.listeners[4, "g"].values()[-1] == b"v99"
        assert c.groups[4, "g"].configuration.voters == {1, 2, 3, 4} - {victim}
        # The configuration survives a restart of the new member (side index, no scan).
        await c.stop_node(4)
        await c.start_node(4)
        g4 = c.add_group(4, "g", voters=())
        assert g4.configuration.voters == {1, 2, 3, 4} - {victim}

    run(scenario, tmp_path)


def test_compaction_and_a_lagging_follower_gets_a_snapshot(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start()
        lead = await c.leader()
        lagging = next(n for n in c.ids if n != lead.node_id)
        await c.stop_node(lagging)
        for i in range(50):
            await lead.wait_committed(lead.propose(batch(i), 1), 5)
        # The leader drops its log up to an applied boundary, keeping opaque state (a controller would).
        at = lead.commit_index - 5
        span = lead.log.entry_span(at)
        snap = await lead.compact(span[1], b"state")
        assert lead.log.first_index() == snap.index + 1 and lead.log.log.log_start_offset == snap.index + 1
        await c.start_node(lagging)
        g = c.add_group(lagging, "g")
        try:
            await until(lambda: g.commit_index == lead.commit_index and g.log.last_index() == lead.log.last_index())
        except AssertionError:
            raise AssertionError(f"{lead.node.status()}\n{g.node.status()}\n{g.log}\n{lead.log}\n"
                                 f"{c.transports[lead.node_id].stats()} {c.transports[lagging].stats()}")
        rec = c.listeners[lagging, "g"]
        assert rec.restored and rec.restored[-1].index == snap.index and rec.restored[-1].data == b"state"
        assert g.log.first_index() == snap.index + 1
        assert g.log.log.log_start_offset == snap.index + 1

    run(scenario, tmp_path)


def test_a_failed_fsync_takes_the_group_offline_loudly(tmp_path, caplog) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start(groups=("g", "h"))
        lead = await c.leader()
        other = await c.leader("h")
        p = lead.propose(batch(1), 1)
        await lead.wait_committed(p, 5)

        def broken_sync() -> int:
            raise OSError(5, "Input/output error")

        lead.log.sync = broken_sync  # type: ignore[method-assign]
        p = lead.propose(batch(2), 1)
        with pytest.raises(GroupOfflineError):
            await lead.wait_committed(p, 5)
        assert lead.failed is not None and not lead.is_leader
        with pytest.raises(GroupOfflineError):
            lead.propose(batch(3), 1)
        # The other group of the same node carries on; the remaining replicas of g elect a new leader.
        await other.wait_committed(other.propose(batch(4), 1), 5)
        others = [n for n in c.ids if n != lead.node_id]
        new = await c.leader(nodes=others, timeout=10)
        await new.wait_committed(new.propose(batch(5), 1), 5)
        assert any("goes offline" in r.message for r in caplog.records)

    run(scenario, tmp_path)


def test_restart_keeps_term_vote_and_replays_only_new_commits(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        await c.start()
        lead = await c.leader()
        for i in range(30):
            await lead.wait_committed(lead.propose(batch(i), 1), 5)
        term = lead.term
        nid = next(n for n in c.ids if n != lead.node_id)
        await until(lambda: c.groups[nid, "g"].commit_index == lead.commit_index)
        commit = c.groups[nid, "g"].commit_index
        await c.stop_node(nid)
        await c.start_node(nid)
        c.listeners[nid, "g"] = Recorder()
        g = c.add_group(nid, "g", skip_committed=True)
        assert g.term >= term and g.commit_index >= commit
        await lead.wait_committed(lead.propose(batch(1000), 1), 5)
        await until(lambda: c.listeners[nid, "g"].values() == [b"v1000"])

    run(scenario, tmp_path)


def test_proposal_replaced_by_another_entry_fails_as_truncated() -> None:
    """Unit check of the resolution rule: same index AND term, else truncated."""
    p = Proposal(10, 10, 3, 100)
    q = Proposal(11, 12, 3, 100)

    class FakeGroup:
        pass

    g = RaftGroup.__new__(RaftGroup)
    g.group_id = "x"
    from collections import deque

    g._outstanding = deque([p, q])
    g._by_last = {10: p, 12: q}
    g._uncommitted_bytes = 200
    g._conf_pending = []
    g.listener = GroupListener()
    g._apply_committed([Entry(3, 10, 10, EntryKind.DATA, b""), Entry(4, 11, 12, EntryKind.DATA, b"")])
    assert p.committed and isinstance(q.error, ProposalTruncatedError)
    assert not g._outstanding and g._uncommitted_bytes == 0


def test_many_groups_share_the_streams_and_the_fsyncs(tmp_path) -> None:
    async def scenario(c: Cluster) -> None:
        gids = [f"t/{i}" for i in range(20)]
        await c.start(groups=gids)
        for gid in gids:
            await c.leader(gid)

        async def commit(gid: str, i: int) -> None:
            """Propose at whoever leads, again if the leadership moved (a loaded box may see elections)."""
            for _attempt in range(20):
                lead = await c.leader(gid)
                try:
                    await lead.wait_committed(lead.propose(batch(i), 1), 10)
                    return
                except (NotLeaderError, ProposalDroppedError, ProposalTruncatedError):
                    await asyncio.sleep(0.05)
            raise AssertionError(f"{gid}: value {i} never committed")

        await asyncio.gather(*(commit(gid, i) for gid in gids for i in range(30)))
        want = {b"v%d" % i for i in range(30)}
        await until(lambda: all(set(c.listeners[n, gid].values()) == want for n in c.ids for gid in gids))
        for gid in gids:  # byte-identical logs on every replica
            await until(lambda gid=gid: len({c.logs[n, gid].last_index() for n in c.ids}) == 1)
            assert len({c.logs[n, gid].stored_bytes() for n in c.ids}) == 1
        # 20 groups x 30 proposals went through far fewer persist rounds than proposals.
        assert sum(h.persist_rounds for h in c.hosts.values()) < 3 * 600 / 2
        # Removing a group (even with a persist in flight) leaves the others running.
        lead = await c.leader(gids[0])
        lead.propose(batch(99), 1)
        await c.hosts[lead.node_id].remove_group(gids[0])
        with pytest.raises(GroupOfflineError):
            lead.propose(batch(100), 1)
        await commit(gids[1], 101)

    run(scenario, tmp_path)
