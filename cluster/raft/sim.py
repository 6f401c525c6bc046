"""Deterministic simulator for the Raft core: one process, virtual time, seeded faults.

Every source of chance is one ``random.Random(seed)`` (each node's election jitter gets its own
Random derived from it), time is a virtual clock, and events are processed from a heap in
(time, sequence) order, so a seed always replays the same trace. ``SimResult.trace_hash`` is the
sha256 of the processed events; equal seeds give equal hashes (tested).

Model
-----
* Nodes 1..n start as voters; two spare nodes (n+1, n+2) start with an empty configuration and
  can be added as learners, promoted, removed (moving a replica: add new, remove old).
* Network: per-message drop, duplicate, random delay (reorders), full/asymmetric partitions,
  isolating a node, healing.
* Disk: each node has a *written* view (the MemoryStorage the core reads) and a *durable* copy.
  A Ready's writes are written at once but become durable only when its fsync completes, after a
  random latency; in that window the node takes no input (``SimNode`` is the model of the real
  shell's loop). A crash keeps a random prefix of the unsynced writes (possibly cutting a run of
  entries), i.e. it may lose anything not fsynced. A failed fsync crashes the node.
* Operator actions (every tick): client proposals (entries spanning 1..4 offsets),
  membership changes, leadership transfers, log compaction with snapshots, crashes, restarts,
  partitions; rates come from a FaultProfile.

Checked after every step (SimulationFailure says which and how to replay)
------------------------------------------------------------------------
* election safety: at most one leader per term;
* log matching, inductively: whenever a node persists an entry, any entry with the same
  (index, term) ever persisted anywhere has the same span, kind, data and predecessor term;
* leader completeness / committed entries never lost: a new leader's log holds the highest entry
  ever reported committed (and a sample of older ones) at the same index and term; at the end,
  every log agrees with every committed entry it still holds;
* state machine safety: no offset is ever applied with two different entries, nodes apply in
  order, and a snapshot's state digest equals the digest any node had at that index;
* commit and term never decrease on a node; across a crash the restarted node's commit is
  exactly max(durable hard_state.commit, durable snapshot index), which must be >= every index
  it applied before the crash, and its term is the durable term;
* the ordering contract: any message leaves with a term <= its sender's durable term; a granted
  vote only once (term, vote) is durable; an append acknowledgement only for durable entries;
* the core's own assertions (any AssertionError fails the seed).

Liveness: after the fault phase (``steps`` events) the network heals, crashed nodes restart,
faults stop and latencies return to normal (network <= 5 units, fsync <= 4). Within
``LIVENESS_BOUND_TICKS`` ticks a leader must be elected and a new proposal be applied by that
leader and by a majority of the voters of its configuration.

CLI: ``python -m cluster.raft.sim --seeds N --steps M [--nodes 3|5] [--seed S]``.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import random
import struct
import sys
import time
import traceback
import zlib
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .node import RaftConfig, RaftNode
from .storage import MemoryStorage
from .types import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    Configuration,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NotLeaderError,
    ProposalError,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
    TimeoutNow,
)

TICK = 10  # virtual time units per tick
ELECTION_TICKS = 10
HEARTBEAT_TICKS = 2
# After faults stop: a leader is elected and a fresh proposal is applied by it and a majority of
# its voters within this many ticks (30 election timeouts). Observed worst case over 3,000 seeds:
# 41 ticks in every profile but "churn", whose stop-and-wait, one-entry-per-message replication
# needs up to 98 ticks to catch a quorum up.
LIVENESS_BOUND_TICKS = 300
GROUP = "sim"

_LEADER = Role.LEADER
_DATA = EntryKind.DATA

# Event kinds.
EV_TICK = 0
EV_MSG = 1
EV_FSYNC = 2
EV_RESTART = 3
EV_ACTION = 4
EV_HEAL = 5
EV_HUNT = 6

_EVENT_NAMES = {EV_FSYNC: "fsync", EV_RESTART: "restart", EV_HEAL: "heal partitions",
                EV_HUNT: "hunt new leader (0 crash, 1 isolate)"}
_ACTION_NAMES = {1: "conf change (leader, node, op)", 2: "transfer (leader, to)",
                 3: "crash", 4: "partition (kind, links)", 9: "faults stop: liveness phase",
                 10: "leader elected (node, term)"}


def _describe(items: tuple[int, ...]) -> str:
    if items[0] == EV_ACTION:
        return f"{_ACTION_NAMES.get(items[1], items[1])} {list(items[2:])}"
    if items[0] == EV_FSYNC and len(items) > 2:
        return f"fsync FAILED: node {items[1]} crashes"
    return f"{_EVENT_NAMES.get(items[0], items[0])} {list(items[1:])}"


_MSG_CODE = {
    RequestVote: 1, RequestVoteResponse: 2, AppendEntries: 3, AppendEntriesResponse: 4,
    Heartbeat: 5, HeartbeatResponse: 6, InstallSnapshot: 7, TimeoutNow: 8,
}


@dataclass(slots=True, frozen=True)
class FaultProfile:
    name: str
    drop: float = 0.01  # per message
    duplicate: float = 0.01  # per message
    delay_max: int = 8  # network delay is 1..delay_max units (a tick is 10)
    fsync_max: int = 4  # fsync latency is 1..fsync_max units
    disk_error: float = 0.0  # per fsync: the write fails and the node crashes
    crash: float = 0.004  # per action: crash a node (often the leader)
    partition: float = 0.004  # per action: start a partition (healed later)
    propose: float = 0.3  # per action: a client proposes
    conf_change: float = 0.0  # per action: membership change at the leader
    transfer: float = 0.0  # per action: leadership transfer
    compact: float = 0.02  # per action and node: compact the log up to applied
    hunt: float = 0.0  # per election: crash or cut off the new leader within ~2 ticks
    downtime_max: int = 6  # a crashed node restarts within 1 tick..downtime_max election timeouts
    max_msg_bytes: int = 1 << 20
    max_inflight_msgs: int = 64


PROFILES: dict[str, FaultProfile] = {
    p.name: p
    for p in (
        FaultProfile("basic"),
        FaultProfile("lossy", drop=0.15, duplicate=0.08, delay_max=40, crash=0.002,
                     max_msg_bytes=200, max_inflight_msgs=3),
        FaultProfile("partitions", partition=0.03, crash=0.002, transfer=0.01),
        FaultProfile("crashes", crash=0.02, disk_error=0.01, fsync_max=12, partition=0.002),
        FaultProfile("membership", conf_change=0.08, transfer=0.02, compact=0.08, crash=0.006,
                     partition=0.01, hunt=0.2, max_msg_bytes=300, max_inflight_msgs=4),
        FaultProfile("chaos", drop=0.05, duplicate=0.03, delay_max=25, disk_error=0.005,
                     crash=0.01, partition=0.01, conf_change=0.03, transfer=0.01, compact=0.05,
                     fsync_max=10, max_msg_bytes=250, max_inflight_msgs=2),
        # Leader churn: leaders crash or get cut off soon after winning, restart quickly, disks
        # are slow (more unsynced writes to lose), replication is stop-and-wait with one entry
        # per message: the ground for Figure 8 (a new leader gets old entries to a majority but
        # dies before its own NOOP follows). Tuned so breaking the commit rule is caught in
        # about 5% of churn seeds.
        FaultProfile("churn", drop=0.08, duplicate=0.02, delay_max=20, fsync_max=15,
                     disk_error=0.01, crash=0.02, partition=0.01, propose=0.6, hunt=0.9,
                     downtime_max=2, max_msg_bytes=40, max_inflight_msgs=1),
    )
}
PROFILE_NAMES = tuple(PROFILES)


def default_nodes(seed: int) -> int:
    return 3 if seed % 2 == 0 else 5


def default_profile(seed: int) -> str:
    return PROFILE_NAMES[(seed // 2) % len(PROFILE_NAMES)]


class SimulationFailure(Exception):
    def __init__(self, message: str, replay: str) -> None:
        super().__init__(f"{message}\nreplay: {replay}")
        self.reason = message
        self.replay = replay


@dataclass(slots=True)
class SimResult:
    seed: int
    nodes: int
    profile: str
    steps: int  # events processed, fault phase + liveness phase
    trace_hash: str
    virtual_ticks: int
    liveness_ticks: int
    leaders: int  # distinct (term, leader) pairs
    commits: int  # highest commit index reached
    crashes: int
    snapshots_installed: int
    conf_changes: int


def _snapshot_data(index: int, digest: int) -> bytes:
    return struct.pack(">qI", index, digest)


def _digest(entry: Entry, digest: int) -> int:
    head = b"%d:%d:%d" % (entry.index, entry.last_index, entry.kind)
    return zlib.crc32(entry.data, zlib.crc32(head, digest))


class SimNode:
    """One node's shell: the model for the asyncio driver.

    Inputs go straight into the core when it is idle and queue while a Ready is being
    persisted; ``_run_ready`` and ``_persisted`` are the two halves of the Ready contract."""

    __slots__ = (
        "id", "sim", "raft", "storage", "durable", "pending_ops", "in_flight", "inbox", "up",
        "incarnation", "sm_index", "sm_digest", "last_commit", "last_term", "rng_seed",
        "reported_leader_term",
    )

    def __init__(self, sim: Simulator, nid: int, configuration: Configuration | None) -> None:
        self.id = nid
        self.sim = sim
        self.durable = MemoryStorage(configuration)
        self.storage = self.durable.copy()
        self.pending_ops: list[tuple[str, object]] = []
        self.in_flight: Ready | None = None
        self.inbox: deque[tuple[int, object]] = deque()
        self.up = False
        self.incarnation = 0
        self.sm_index = -1
        self.sm_digest = 0
        self.last_commit = -1
        self.last_term = 0
        self.rng_seed = sim.rng.getrandbits(64)
        self.reported_leader_term = -1
        self.raft: RaftNode | None = None
        self.start()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        sim = self.sim
        self.storage = self.durable.copy()
        snap = self.storage.snapshot()
        hs = self.storage.hard_state()
        prof = sim.profile
        self.raft = RaftNode(
            RaftConfig(
                node_id=self.id, group_id=GROUP, election_ticks=ELECTION_TICKS,
                heartbeat_ticks=HEARTBEAT_TICKS, max_msg_bytes=prof.max_msg_bytes,
                max_inflight_msgs=prof.max_inflight_msgs,
                max_uncommitted_bytes=2048,  # client back-pressure: ~50 small entries
            ),
            self.storage,
            random.Random(self.rng_seed + self.incarnation),
        )
        # Restart rule: commit comes back as exactly what the disk says.
        restored = max(hs.commit, snap.index)
        if self.raft.commit_index != restored:
            sim.fail(f"node {self.id} restarted with commit {self.raft.commit_index}, "
                     f"durable says {restored}")
        if restored < self.sm_index:
            sim.fail(f"node {self.id} applied {self.sm_index} before crashing but its durable "
                     f"commit is {restored}")
        if self.raft.term != hs.term:
            sim.fail(f"node {self.id} restarted in term {self.raft.term}, durable {hs.term}")
        self.last_commit = restored
        self.last_term = hs.term
        # The state machine is rebuilt from the snapshot; the core re-delivers the rest.
        if snap.data:
            self.sm_index, self.sm_digest = struct.unpack(">qI", snap.data)
            assert self.sm_index == snap.index
        else:
            self.sm_index, self.sm_digest = snap.index, 0
        self.up = True
        self.in_flight = None
        self.inbox.clear()
        self.pending_ops = []
        self._pump()

    def crash(self) -> None:
        """Power loss: unsynced writes survive only as a random prefix."""
        if not self.up:
            return
        sim = self.sim
        sim.crashes += 1
        ops = self.pending_ops
        if ops:
            keep = sim.rng.randrange(len(ops) + 1)
            for kind, payload in ops[:keep]:
                self._apply_durable(kind, payload)
            if keep < len(ops) and ops[keep][0] == "ents":
                ents = ops[keep][1]
                assert isinstance(ents, list)
                cut = sim.rng.randrange(len(ents) + 1)
                if cut:
                    self.durable.append(ents[:cut])
        self.pending_ops = []
        self.up = False
        self.raft = None
        self.in_flight = None
        self.inbox.clear()
        self.incarnation += 1

    def _apply_durable(self, kind: str, payload: object) -> None:
        d = self.durable
        if kind == "snap":
            d.apply_snapshot(payload)  # type: ignore[arg-type]
        elif kind == "ents":
            d.append(payload)  # type: ignore[arg-type]
        else:
            d.set_hard_state(payload)  # type: ignore[arg-type]

    # -- inputs ---------------------------------------------------------------------------------

    def give(self, kind: int, payload: object) -> None:
        if not self.up:
            return
        if self.in_flight is not None:
            if len(self.inbox) < 10_000:  # a bounded socket buffer
                self.inbox.append((kind, payload))
            return
        self._feed(kind, payload)
        self._pump()

    def _feed(self, kind: int, payload: object) -> None:
        raft = self.raft
        assert raft is not None
        if kind == EV_MSG:
            raft.step(payload)  # type: ignore[arg-type]
        elif kind == EV_TICK:
            raft.tick()
        else:
            payload(raft)  # type: ignore[operator]  # operator action against the core
        self.sim.after_input(self)

    # -- the Ready loop -------------------------------------------------------------------------

    def _pump(self) -> None:
        raft = self.raft
        if raft is None or self.in_flight is not None or not raft.has_ready():
            return
        rd = raft.ready()
        sim = self.sim
        sim.check_ready(self, rd)
        for m in rd.messages:  # 1. leader traffic goes out in parallel with our fsync
            sim.send(self, m)
        # 2. write (not yet durable): snapshot, entries, then hard state.
        ops = self.pending_ops
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
            ops.append(("snap", rd.snapshot))
        if rd.entries:
            sim.check_append(self, rd.entries)
            self.storage.append(rd.entries)
            ops.append(("ents", rd.entries))
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
            ops.append(("hs", rd.hard_state))
        self.in_flight = rd
        if ops:
            latency = 1 + int(sim.rng.random() * sim.fsync_max)
            sim.schedule(latency, EV_FSYNC, self.id, self.incarnation)
        else:
            self._persisted()

    def fsync_done(self, incarnation: int) -> None:
        if not self.up or incarnation != self.incarnation or self.in_flight is None:
            return
        sim = self.sim
        if sim.faults_on and sim.profile.disk_error and sim.rng.random() < sim.profile.disk_error:
            sim.trace(EV_FSYNC, self.id, -1)
            self.crash()  # fsync failed: the node cannot know what reached the disk
            sim.schedule_restart(self)
            return
        for kind, payload in self.pending_ops:
            self._apply_durable(kind, payload)
        self.pending_ops = []
        self._persisted()

    def _persisted(self) -> None:
        rd = self.in_flight
        raft = self.raft
        assert rd is not None and raft is not None
        sim = self.sim
        for m in rd.persisted_messages:  # 3. promises, now backed by the disk
            sim.send(self, m)
        if rd.snapshot is not None:  # 4. state machine
            self._restore(rd.snapshot)
        for e in rd.committed_entries:
            self._apply(e)
        raft.advance(rd)  # 5.
        self.in_flight = None
        inbox = self.inbox
        while inbox and self.in_flight is None and self.up:
            kind, payload = inbox.popleft()
            self._feed(kind, payload)
        if self.up:
            self._pump()

    def _restore(self, snap: Snapshot) -> None:
        index, digest = struct.unpack(">qI", snap.data) if snap.data else (snap.index, 0)
        self.sim.check_snapshot_state(self, index, digest)
        self.sm_index, self.sm_digest = index, digest
        self.sim.snapshots_installed += 1

    def _apply(self, e: Entry) -> None:
        if e.index != self.sm_index + 1:
            self.sim.fail(f"node {self.id} applies {e.index} after {self.sm_index}")
        self.sm_digest = _digest(e, self.sm_digest)
        self.sm_index = e.last_index
        self.sim.check_apply(self, e)

    def maybe_compact(self) -> None:
        raft = self.raft
        if raft is None or self.in_flight is not None:
            return
        index = raft.applied_index
        if index <= raft.first_index:
            return
        assert index == self.sm_index
        snap = raft.compact(index, _snapshot_data(index, self.sm_digest))
        self.storage.compact(snap)
        self.durable.compact(snap)  # snapshot written and fsynced before segments go


class Simulator:
    def __init__(
        self,
        seed: int,
        *,
        steps: int = 3000,
        nodes: int | None = None,
        profile: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.seed = seed
        self.steps = steps
        self.n = nodes if nodes is not None else default_nodes(seed)
        self.profile_name = profile if profile is not None else default_profile(seed)
        self.profile = PROFILES[self.profile_name]
        self.verbose = verbose
        self.rng = random.Random(seed)
        self.now = 0
        self._seq = 0
        self._events: list[tuple[int, int, int, int, object]] = []
        self._trace = array("q")
        self.faults_on = True
        self.delay_max = self.profile.delay_max
        self.fsync_max = self.profile.fsync_max
        self.blocked: set[tuple[int, int]] = set()
        self.step_count = 0
        self.crashes = 0
        self.snapshots_installed = 0
        self.conf_changes = 0
        self._client_seq = 0
        # Checker state.
        self.leader_of_term: dict[int, int] = {}
        self.entries_seen: dict[tuple[int, int], tuple[int, int, bytes, int]] = {}
        self.applied_at: dict[int, tuple[int, int, bytes]] = {}
        self.digest_at: dict[int, int] = {}
        self.committed_max: tuple[int, int] = (-1, 0)  # (index, term) highest commit reported
        self.committed_points: list[tuple[int, int]] = []  # sample of (index, term) committed
        self.live_value: bytes | None = None
        self.live_applied: set[int] = set()
        self.live_attempt_term = -1
        initial = Configuration(frozenset(range(1, self.n + 1)))
        self.nodes: dict[int, SimNode] = {}
        for nid in range(1, self.n + 3):
            self.nodes[nid] = SimNode(self, nid, initial if nid <= self.n else None)
        self._node_list = [self.nodes[nid] for nid in sorted(self.nodes)]
        self.schedule(TICK, EV_TICK, 0, None)
        self.schedule(TICK // 2, EV_ACTION, 0, None)

    # -- plumbing -------------------------------------------------------------------------------

    def replay_command(self) -> str:
        return (f"python -m cluster.raft.sim --seed {self.seed} --steps {self.steps} "
                f"--nodes {self.n} --profile {self.profile_name} -v")

    def fail(self, message: str) -> None:
        raise SimulationFailure(
            f"seed {self.seed} step {self.step_count} t={self.now}: {message}",
            self.replay_command())

    def schedule(self, delay: int, kind: int, target: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, kind, target, payload))

    def trace(self, *items: int) -> None:
        self._trace.append(self.now)
        self._trace.extend(items)
        if self.verbose and items[0] != EV_MSG:  # deliveries print their message instead
            print(f"t={self.now:>7} {_describe(items)}")

    def send(self, src: SimNode, m: Message) -> None:
        self.check_promise(src, m)
        prof = self.profile
        rng = self.rng
        if self.faults_on and prof.drop and rng.random() < prof.drop:
            return
        self.schedule(1 + int(rng.random() * self.delay_max), EV_MSG, m.to_id, m)
        if self.faults_on and prof.duplicate and rng.random() < prof.duplicate:
            self.schedule(1 + int(rng.random() * self.delay_max), EV_MSG, m.to_id, m)

    def schedule_restart(self, node: SimNode) -> None:
        longest = self.profile.downtime_max * ELECTION_TICKS * TICK
        self.schedule(self.rng.randint(TICK, longest), EV_RESTART, node.id, None)

    # -- main loop ------------------------------------------------------------------------------

    def run(self) -> SimResult:
        try:
            return self._run()
        except SimulationFailure:
            raise
        except Exception as exc:  # core assertion or crash: report with the replay command
            tb = traceback.format_exc(limit=6)
            raise SimulationFailure(
                f"seed {self.seed} step {self.step_count} t={self.now}: "
                f"{type(exc).__name__}: {exc}\n{tb}", self.replay_command()) from exc

    def _run(self) -> SimResult:
        events = self._events
        while self.step_count < self.steps:
            self._step(heapq.heappop(events))
        live_start = self.now
        self._start_liveness()
        deadline = live_start + LIVENESS_BOUND_TICKS * TICK
        while not self._live_done():
            if self.now > deadline:
                self.fail(f"liveness: no leader committed a new proposal within "
                          f"{LIVENESS_BOUND_TICKS} ticks after faults stopped")
            self._step(heapq.heappop(events))
        self._final_check()
        leaders = len(self.leader_of_term)
        return SimResult(
            seed=self.seed, nodes=self.n, profile=self.profile_name, steps=self.step_count,
            trace_hash=hashlib.sha256(self._trace.tobytes()).hexdigest(),
            virtual_ticks=self.now // TICK, liveness_ticks=(self.now - live_start) // TICK,
            leaders=leaders, commits=self.committed_max[0], crashes=self.crashes,
            snapshots_installed=self.snapshots_installed, conf_changes=self.conf_changes,
        )

    def _step(self, ev: tuple[int, int, int, int, object]) -> None:
        t, _, kind, target, payload = ev
        self.now = t
        self.step_count += 1
        if kind == EV_MSG:
            m = payload
            assert isinstance(m, Message)
            node = self.nodes[target]
            if (m.from_id, m.to_id) in self.blocked or not node.up:
                self._transport_report(m, delivered=False)
                return
            self.trace(EV_MSG, _MSG_CODE[type(m)], m.from_id, target, m.term)
            if self.verbose:
                print(f"t={self.now:>7}   deliver {m}")
            node.give(EV_MSG, m)
            if type(m) is InstallSnapshot:
                self._transport_report(m, delivered=True)
        elif kind == EV_TICK:  # one clock for all nodes: a tick is a step
            self.schedule(TICK, EV_TICK, 0, None)
            for node in self._node_list:
                if node.up:
                    node.give(EV_TICK, None)
        elif kind == EV_FSYNC:
            self.trace(EV_FSYNC, target)
            self.nodes[target].fsync_done(payload)  # type: ignore[arg-type]
        elif kind == EV_RESTART:
            node = self.nodes[target]
            if not node.up:
                self.trace(EV_RESTART, target)
                node.start()
        elif kind == EV_ACTION:
            self.schedule(TICK, EV_ACTION, 0, None)
            self._operator()
        elif kind == EV_HEAL:
            self.trace(EV_HEAL, 0)
            self.blocked.clear()
        elif kind == EV_HUNT:
            self._hunt(self.nodes[target], payload)  # type: ignore[arg-type]

    def _transport_report(self, m: Message, delivered: bool) -> None:
        """Like a real transport, sometimes tell the sender that a stream broke or that a
        snapshot went out (the core must also cope when nobody tells it)."""
        mtype = type(m)
        if mtype is not InstallSnapshot and (delivered or mtype is not AppendEntries):
            return
        if self.rng.random() < 0.5:
            return
        to = m.to_id
        if mtype is InstallSnapshot:
            self.nodes[m.from_id].give(EV_ACTION, lambda raft: raft.report_snapshot(to, delivered))
        else:
            self.nodes[m.from_id].give(EV_ACTION, lambda raft: raft.report_unreachable(to))

    # -- the operator: clients, faults, admin -----------------------------------------------------

    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        for node in self.nodes.values():
            r = node.raft
            if r is not None and r.role is _LEADER and (best is None or r.term > best.raft.term):  # type: ignore[union-attr]
                best = node
        return best

    def _operator(self) -> None:
        rng = self.rng
        prof = self.profile
        if self.live_value is not None:
            self._live_propose()
            return
        leader = self._leader()
        if rng.random() < prof.propose:
            if leader is not None and rng.random() < 0.9:
                target = leader
            else:  # clients with a stale leader hint get NotLeaderError
                target = self.nodes[rng.randint(1, len(self.nodes))]
            self._client_seq += 1
            seq = self._client_seq
            items = [(b"c%d.%d" % (seq, i), rng.randint(1, 4)) for i in range(rng.randint(1, 3))]
            target.give(EV_ACTION, _Propose(items))
        if leader is not None and prof.conf_change and rng.random() < prof.conf_change:
            # Sometimes a burst: the second change must be refused until the first commits.
            for _ in range(2 if rng.random() < 0.3 else 1):
                change = self._pick_conf_change(leader)
                if change is None or leader.raft is None:
                    break
                op = list(ConfChangeOp).index(change.op)
                self.trace(EV_ACTION, 1, leader.id, change.node_id, op)
                leader.give(EV_ACTION, _ConfChangeAction(change, self))
        if leader is not None and prof.transfer and rng.random() < prof.transfer:
            voters = sorted(leader.raft.configuration.voters - {leader.id})  # type: ignore[union-attr]
            if voters:
                to = rng.choice(voters)
                self.trace(EV_ACTION, 2, leader.id, to)
                leader.give(EV_ACTION, _Transfer(to))
        if prof.compact and rng.random() < prof.compact * len(self._node_list):
            self._node_list[int(rng.random() * len(self._node_list))].maybe_compact()
        if prof.crash and rng.random() < prof.crash:
            up = [n for n in self.nodes.values() if n.up]
            if len(up) > 1:
                victim = leader if leader is not None and rng.random() < 0.5 else rng.choice(up)
                self.trace(EV_ACTION, 3, victim.id)
                victim.crash()
                self.schedule_restart(victim)
        if prof.partition and rng.random() < prof.partition:
            self._partition(leader)

    def _pick_conf_change(self, leader: SimNode) -> ConfChange | None:
        rng = self.rng
        raft = leader.raft
        assert raft is not None
        cfg = raft.configuration
        spares = [n for n in sorted(self.nodes) if n not in cfg.members]
        learners = sorted(cfg.learners)
        voters = sorted(cfg.voters)
        choice = rng.random()
        if learners and choice < 0.45:
            nid = rng.choice(learners)
            match = raft.match_index(nid)
            if match is not None and match >= raft.commit_index:  # caught up: promote
                return ConfChange(ConfChangeOp.PROMOTE_LEARNER, nid)
            if rng.random() < 0.2:
                return ConfChange(ConfChangeOp.REMOVE_NODE, nid)
            return None
        if len(voters) > 3 and choice < 0.8:
            return ConfChange(ConfChangeOp.REMOVE_NODE, rng.choice(voters))
        if spares and len(voters) + len(learners) < self.n + 2:
            return ConfChange(ConfChangeOp.ADD_LEARNER, rng.choice(spares))
        return None

    def _partition(self, leader: SimNode | None) -> None:
        rng = self.rng
        ids = sorted(self.nodes)
        kind = rng.randrange(3)
        self.blocked.clear()
        if kind == 0:  # split in two
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            a, b = ids[:cut], ids[cut:]
            for x in a:
                for y in b:
                    self.blocked.add((x, y))
                    self.blocked.add((y, x))
        elif kind == 1:  # isolate one node, usually the leader
            victim = leader.id if leader is not None and rng.random() < 0.7 else rng.choice(ids)
            for y in ids:
                if y != victim:
                    self.blocked.add((victim, y))
                    self.blocked.add((y, victim))
        else:  # asymmetric: some directed links fail
            for x in ids:
                for y in ids:
                    if x != y and rng.random() < 0.25:
                        self.blocked.add((x, y))
        self.trace(EV_ACTION, 4, kind, len(self.blocked))
        self.schedule(rng.randint(2 * TICK, 8 * ELECTION_TICKS * TICK), EV_HEAL, 0, None)

    # -- liveness phase -------------------------------------------------------------------------

    def _start_liveness(self) -> None:
        self.faults_on = False
        # A healthy network and disk again: latencies back to normal.
        self.delay_max = min(self.delay_max, 5)
        self.fsync_max = min(self.fsync_max, 4)
        self.blocked.clear()
        for node in self.nodes.values():
            if not node.up:
                node.start()
        self.live_value = b"live-%d" % self.seed
        self.trace(EV_ACTION, 9)

    def _live_propose(self) -> None:
        leader = self._leader()
        if leader is None or self.live_applied:
            return
        raft = leader.raft
        assert raft is not None
        if raft.term > self.live_attempt_term:
            leader.give(EV_ACTION, self._live_attempt)

    def _live_attempt(self, raft: RaftNode) -> None:
        if raft.term > self.live_attempt_term and raft.role is _LEADER:
            try:
                raft.propose(self.live_value)  # type: ignore[arg-type]
            except ProposalError:
                return
            self.live_attempt_term = raft.term

    def _live_done(self) -> bool:
        if not self.live_applied:
            return False
        leader = self._leader()
        if leader is None:
            return False
        raft = leader.raft
        assert raft is not None
        if leader.id not in self.live_applied:
            return False
        voters = raft.configuration.voters
        return len(voters & self.live_applied) > len(voters) // 2

    # -- checks ---------------------------------------------------------------------------------

    def after_input(self, node: SimNode) -> None:
        raft = node.raft
        if raft is not None and raft.role is _LEADER and raft.term != node.reported_leader_term:
            node.reported_leader_term = raft.term
            prev = self.leader_of_term.setdefault(raft.term, node.id)
            if prev != node.id:
                self.fail(f"two leaders in term {raft.term}: {prev} and {node.id}")
            self.trace(EV_ACTION, 10, node.id, raft.term)
            self._check_leader_completeness(node)
            if self.faults_on and self.profile.hunt and self.rng.random() < self.profile.hunt:
                self.schedule(self.rng.randint(1, 2 * TICK), EV_HUNT, node.id, raft.term)

    def _hunt(self, node: SimNode, term: int) -> None:
        """Short-lived leaders leave divergent uncommitted tails: the ground for Figure 8."""
        raft = node.raft
        if not self.faults_on or raft is None or raft.role is not _LEADER or raft.term != term:
            return
        if self.rng.random() < 0.5:
            self.trace(EV_HUNT, node.id, 0)
            node.crash()
            self.schedule_restart(node)
        else:
            self.trace(EV_HUNT, node.id, 1)
            for other in self.nodes:
                if other != node.id:
                    self.blocked.add((node.id, other))
                    self.blocked.add((other, node.id))
            self.schedule(self.rng.randint(TICK, 3 * ELECTION_TICKS * TICK), EV_HEAL, 0, None)

    def _check_leader_completeness(self, node: SimNode) -> None:
        """Every commit ever reported, (index, term) at each advance of the highest commit, is
        in the new leader's log. With the inductive log-matching check this covers every
        committed entry: same (index, term) at a commit point means the same prefix."""
        raft = node.raft
        assert raft is not None
        log = raft.log
        points = self.committed_points  # ascending
        start = bisect_left(points, (log.first_index() - 1, -1))  # older: inside its snapshot
        for i in range(start, len(points)):
            index, term = points[i]
            if log.term(index) != term:
                self.fail(f"leader {node.id} (term {raft.term}) lacks committed entry "
                          f"{index} of term {term} (has term {log.term(index)})")

    def check_ready(self, node: SimNode, rd: Ready) -> None:
        hs = rd.hard_state
        raft = node.raft
        assert raft is not None
        if hs is not None:
            if hs.commit < node.last_commit:
                self.fail(f"node {node.id} commit went back {node.last_commit} -> {hs.commit}")
            if hs.term < node.last_term:
                self.fail(f"node {node.id} term went back {node.last_term} -> {hs.term}")
            node.last_term = hs.term
            if hs.commit > node.last_commit:
                node.last_commit = hs.commit
                if hs.commit > self.committed_max[0]:
                    t = raft.log.term(hs.commit)
                    assert t is not None
                    self.committed_max = (hs.commit, t)
                    self.committed_points.append(self.committed_max)

    def check_append(self, node: SimNode, entries: list[Entry]) -> None:
        """Log matching, inductively: same (index, term) => same entry and same predecessor."""
        prev_term = node.storage.term(entries[0].index - 1)
        if prev_term is None:
            self.fail(f"node {node.id} appends {entries[0].index} with no predecessor")
        seen = self.entries_seen
        for e in entries:
            key = (e.index, e.term)
            rec = (e.last_index, int(e.kind), bytes(e.data), prev_term)
            old = seen.get(key)
            if old is None:
                seen[key] = rec
            elif old != rec:
                self.fail(f"log matching: node {node.id} entry {key} is {rec}, elsewhere {old}")
            prev_term = e.term

    def check_apply(self, node: SimNode, e: Entry) -> None:
        rec = (e.term, e.last_index, bytes(e.data))
        old = self.applied_at.setdefault(e.index, rec)
        if old != rec:
            self.fail(f"state machine safety: node {node.id} applied {rec} at {e.index}, "
                      f"others {old}")
        d = self.digest_at.setdefault(e.last_index, node.sm_digest)
        if d != node.sm_digest:
            self.fail(f"node {node.id} state digest differs at {e.last_index}")
        if e.data == self.live_value and self.live_value is not None:
            self.live_applied.add(node.id)

    def check_snapshot_state(self, node: SimNode, index: int, digest: int) -> None:
        d = self.digest_at.get(index)
        if d is not None and d != digest:
            self.fail(f"node {node.id} installed a snapshot at {index} with a different state")

    def check_promise(self, node: SimNode, m: Message) -> None:
        hs = node.durable.hard_state()
        mtype = type(m)
        if (mtype is RequestVote or mtype is RequestVoteResponse) and m.pre_vote:  # type: ignore[attr-defined]
            return  # pre-votes carry the term a pre-candidate would campaign at, not its own
        if m.term > hs.term:
            self.fail(f"node {node.id} sent {type(m).__name__} in term {m.term} before term "
                      f"{m.term} was durable (durable {hs.term})")
        if mtype is RequestVoteResponse and not m.pre_vote and not m.reject:  # type: ignore[attr-defined]
            # Covered if durable: this vote, or a later term (no second vote in m.term then).
            if hs.term < m.term or (hs.term == m.term and hs.vote != m.to_id):
                self.fail(f"node {node.id} granted its vote in term {m.term} to {m.to_id} before "
                          f"it was durable ({hs})")
        elif mtype is AppendEntriesResponse and not m.reject:  # type: ignore[attr-defined]
            if m.index > node.durable.last_index():  # type: ignore[attr-defined]
                self.fail(f"node {node.id} acknowledged {m.index} but only "  # type: ignore[attr-defined]
                          f"{node.durable.last_index()} is durable")

    def _final_check(self) -> None:
        for node in self.nodes.values():
            raft = node.raft
            if raft is None:
                continue
            log = raft.log
            lo = log.first_index()
            hi = min(raft.commit_index, log.last_index())
            if hi < lo:
                continue
            for e in log.entries(lo, hi + 1, 1 << 62):
                rec = self.applied_at.get(e.index)
                if rec is not None and rec != (e.term, e.last_index, bytes(e.data)):
                    self.fail(f"node {node.id} holds {e} at a committed index where {rec} applied")


class _Propose:
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[bytes, int]]) -> None:
        self.items = items

    def __call__(self, raft: RaftNode) -> None:
        try:
            raft.propose_batch(self.items)
        except NotLeaderError:
            pass  # a real client retries at err.leader_id
        except ProposalError:
            pass


class _ConfChangeAction:
    __slots__ = ("change", "sim")

    def __init__(self, change: ConfChange, sim: Simulator) -> None:
        self.change = change
        self.sim = sim

    def __call__(self, raft: RaftNode) -> None:
        try:
            raft.propose_conf_change(self.change)
            self.sim.conf_changes += 1
        except (ProposalError, ValueError):
            pass


class _Transfer:
    __slots__ = ("to",)

    def __init__(self, to: int) -> None:
        self.to = to

    def __call__(self, raft: RaftNode) -> None:
        try:
            raft.transfer_leadership(self.to)
        except (ProposalError, ValueError):
            pass


def run_seed(seed: int, steps: int = 3000, nodes: int | None = None, profile: str | None = None,
             verbose: bool = False) -> SimResult:
    return Simulator(seed, steps=steps, nodes=nodes, profile=profile, verbose=verbose).run()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cluster.raft.sim",
        description="Deterministic Raft simulator: run seeded fault-injection soaks.")
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds to run (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--steps", type=int, default=3000, help="fault-phase events per seed")
    ap.add_argument("--nodes", type=int, choices=(3, 5), default=None,
                    help="voters at start (default: 3 for even seeds, 5 for odd)")
    ap.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                    help="fault profile (default: rotates with the seed)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every traced event")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        print("error: --seeds and --steps must be positive", file=sys.stderr)
        return 2
    started = time.perf_counter()
    total_steps = 0
    last_report = started
    for i, seed in enumerate(range(args.seed, args.seed + args.seeds)):
        try:
            res = run_seed(seed, args.steps, args.nodes, args.profile, args.verbose)
        except SimulationFailure as exc:
            print(f"FAIL {exc.reason}", file=sys.stderr)
            print(f"replay: {exc.replay}", file=sys.stderr)
            return 1
        total_steps += res.steps
        now = time.perf_counter()
        if args.seeds == 1 or args.verbose:
            print(f"seed {seed}: {res.nodes} nodes, profile {res.profile}, {res.steps} steps, "
                  f"{res.leaders} leaders, commit {res.commits}, {res.crashes} crashes, "
                  f"{res.snapshots_installed} snapshots, {res.conf_changes} conf changes, "
                  f"liveness {res.liveness_ticks} ticks, trace {res.trace_hash[:16]}")
        elif now - last_report >= 2 or i + 1 == args.seeds:
            last_report = now
            print(f"[{i + 1}/{args.seeds}] seeds ok, {total_steps} steps, "
                  f"{total_steps / (now - started):.0f} steps/s", flush=True)
    elapsed = time.perf_counter() - started
    print(f"ok: {args.seeds} seeds, {total_steps} steps in {elapsed:.1f}s "
          f"({total_steps / elapsed:.0f} steps/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
