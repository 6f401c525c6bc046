"""A seeded, synchronous multi-node driver that runs the Raft core over either MemoryStorage or
PartitionRaftLog (+ HardStateStore), so one seed can be replayed on both and the traces compared.

Every decision comes from one ``random.Random(seed)``; the cores are deterministic given what storage
answers, so equal traces mean the on-disk adapter answers exactly like MemoryStorage. Faults: dropped and
reordered messages, isolation (conflicting tails, truncation), crashes with restart from storage,
membership changes (a 4th node added as learner, promoted, removed), compaction + snapshots.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from cluster.raft import (
    ConfChange,
    ConfChangeOp,
    Configuration,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    ProposalError,
    RaftConfig,
    RaftNode,
    Role,
)
from cluster.raft.hard_state import HardStateStore
from cluster.raft.partition_log import PartitionRaftLog
from storage.config import LogConfig
from storage.record_batch import RecordInput, build_batch

GROUP = "eq/0"
VOTERS = (1, 2, 3)
SPARE = 4


def normalize(data: bytes | memoryview, kind: EntryKind) -> bytes:
    """Entry data without the stamped baseOffset and partitionLeaderEpoch (both outside the CRC)."""
    raw = bytes(data)
    if kind is EntryKind.DATA and len(raw) >= 16:
        return b"\0" * 8 + raw[8:12] + b"\0" * 4 + raw[16:]
    return raw


def describe(m: Message) -> tuple:
    out: list[object] = [type(m).__name__, m.from_id, m.to_id, m.term]
    for name in ("pre_vote", "reject", "last_log_index", "last_log_term", "prev_log_index", "prev_log_term",
                 "commit", "index", "reject_hint_index", "reject_hint_term"):
        if hasattr(m, name):
            out.append((name, getattr(m, name)))
    if hasattr(m, "entries"):
        out.append(tuple((e.term, e.index, e.last_index, int(e.kind), normalize(e.data, e.kind))
                         for e in m.entries))
    if hasattr(m, "snapshot"):
        s = m.snapshot
        out.append((s.index, s.term, s.configuration.encode(), bytes(s.data)))
    return tuple(out)


class MemoryBackend:
    name = "memory"

    def __init__(self, root: str) -> None:
        self.storages: dict[int, MemoryStorage] = {}

    def create(self, nid: int, conf: Configuration) -> MemoryStorage:
        self.storages[nid] = MemoryStorage(conf)
        return self.storages[nid]

    def reopen(self, nid: int) -> MemoryStorage:
        return self.storages[nid]  # everything persisted is durable here

    def persist(self, nid: int, rd) -> None:
        s = self.storages[nid]
        if rd.snapshot is not None:
            s.apply_snapshot(rd.snapshot)
        if rd.entries:
            s.append(rd.entries)
        if rd.hard_state is not None:
            s.set_hard_state(rd.hard_state)

    def compact(self, nid: int, snap) -> None:
        self.storages[nid].compact(snap)

    def close(self) -> None:
        pass


class DiskBackend:
    name = "partition_log"

    def __init__(self, root: str, segment_bytes: int = 4096) -> None:
        self.root = root
        self.config = LogConfig(segment_bytes=segment_bytes)
        self.storages: dict[int, PartitionRaftLog] = {}
        self.states: dict[int, HardStateStore] = {}

    def _dir(self, nid: int) -> str:
        return os.path.join(self.root, f"node{nid}")

    def create(self, nid: int, conf: Configuration) -> PartitionRaftLog:
        s = PartitionRaftLog.open(os.path.join(self._dir(nid), "log"), self.config, bootstrap=conf)
        self.storages[nid] = s
        self.states[nid] = HardStateStore(self._dir(nid))
        return s

    def reopen(self, nid: int) -> PartitionRaftLog:
        self.storages[nid].close()
        self.states[nid].close()
        s = PartitionRaftLog.open(os.path.join(self._dir(nid), "log"), self.config)
        store = HardStateStore(self._dir(nid))
        hs = store.get(GROUP)
        if hs is not None:
            s.set_hard_state(HardState(hs.term, hs.vote, max(min(hs.commit, s.last_index()),
                                                             s.snapshot().index)))
        self.storages[nid], self.states[nid] = s, store
        return s

    def persist(self, nid: int, rd) -> None:
        s = self.storages[nid]
        plan = s.prepare_append(rd.entries, rd.snapshot)
        s.execute(plan)
        s.finish_append(plan)
        if rd.hard_state is not None:
            self.states[nid].stage(GROUP, rd.hard_state)
            self.states[nid].write_now()

    def compact(self, nid: int, snap) -> None:
        self.storages[nid].compact(snap)

    def close(self) -> None:
        for s in self.storages.values():
            s.close()
        for st in self.states.values():
            st.close()


@dataclass
class Run:
    trace: list[tuple] = field(default_factory=list)
    applied: dict[int, list[tuple]] = field(default_factory=dict)
    leaders: list[tuple[int, int]] = field(default_factory=list)  # (node, term) elected
    truncations: int = 0
    snapshots_installed: int = 0
    restarts: int = 0


def run(seed: int, backend, steps: int = 1500) -> Run:
    rng = random.Random(seed)
    conf = Configuration(frozenset(VOTERS))
    nodes: dict[int, RaftNode] = {}
    restarts: dict[int, int] = {}
    out = Run()
    network: list[Message] = []
    down: set[int] = set()
    isolated: set[int] = set()
    counter = [0]

    def make(nid: int, storage) -> RaftNode:
        cfg = RaftConfig(node_id=nid, group_id=GROUP, election_ticks=10, heartbeat_ticks=2,
                         max_msg_bytes=rng.choice([300, 4096]), max_inflight_msgs=4)
        n = RaftNode(cfg, storage, random.Random(seed * 100 + nid * 10 + restarts.get(nid, 0)))
        return n

    for nid in VOTERS:
        nodes[nid] = make(nid, backend.create(nid, conf))
        out.applied[nid] = []
    nodes[SPARE] = make(SPARE, backend.create(SPARE, Configuration()))
    out.applied[SPARE] = []

    def process(nid: int) -> None:
        node = nodes[nid]
        while node.has_ready():
            rd = node.ready()
            network.extend(rd.messages)
            if rd.entries and rd.entries[0].index <= node.log.storage.last_index():
                out.truncations += 1
            if rd.snapshot is not None:
                out.snapshots_installed += 1
            backend.persist(nid, rd)
            network.extend(rd.persisted_messages)
            if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
                out.leaders.append((nid, node.term))
            for e in rd.committed_entries:
                out.applied[nid].append((e.term, e.index, e.last_index, int(e.kind), normalize(e.data, e.kind)))
            node.advance(rd)

    def deliver(count: int) -> None:
        for _ in range(min(count, len(network))):
            m = network.pop(rng.randrange(len(network)))  # reorders
            if m.to_id in down or m.from_id in down or rng.random() < 0.05:
                continue
            if (m.to_id in isolated) != (m.from_id in isolated):
                continue
            out.trace.append(describe(m))
            nodes[m.to_id].step(m)
            process(m.to_id)

    for step in range(steps):
        r = rng.random()
        live = [n for n in nodes if n not in down]
        leaders = [n for n in live if nodes[n].role is Role.LEADER]
        if r < 0.30:
            for nid in live:
                nodes[nid].tick()
                process(nid)
        elif r < 0.70:
            deliver(rng.randrange(1, 12))
        elif r < 0.85 and leaders:
            lead = rng.choice(leaders)
            items = []
            for _ in range(rng.randrange(1, 4)):
                counter[0] += 1
                n = rng.randrange(1, 4)
                items.append((build_batch([RecordInput(b"k%d" % (counter[0] % 7), b"v%d-%d" % (counter[0], i),
                                                       1000 + counter[0]) for i in range(n)]), n))
            try:
                nodes[lead].propose_batch(items)
            except ProposalError:
                pass
            process(lead)
        elif r < 0.88:
            # Isolate someone (often the leader: its tail then conflicts), or heal.
            if isolated:
                isolated.clear()
            else:
                isolated.add(rng.choice(leaders) if leaders and rng.random() < 0.7 else rng.choice(VOTERS))
        elif r < 0.90 and len(live) == len(nodes):
            victim = rng.choice(list(VOTERS))
            down.add(victim)
        elif r < 0.93 and down:
            nid = down.pop()
            restarts[nid] = restarts.get(nid, 0) + 1
            out.restarts += 1
            nodes[nid] = make(nid, backend.reopen(nid))
            out.applied[nid] = [a for a in out.applied[nid] if a[2] <= nodes[nid].applied_index]
        elif r < 0.95 and leaders:
            lead = nodes[rng.choice(leaders)]
            members = lead.configuration
            if SPARE not in members.members:
                change = ConfChange(ConfChangeOp.ADD_LEARNER, SPARE)
            elif SPARE in members.learners:
                change = ConfChange(ConfChangeOp.PROMOTE_LEARNER, SPARE)
            else:
                change = ConfChange(ConfChangeOp.REMOVE_NODE, SPARE)
            try:
                lead.propose_conf_change(change)
            except (ProposalError, ValueError):
                pass
            process(lead.id)
        elif r < 0.97:
            nid = rng.choice(live)
            node = nodes[nid]
            at = node.applied_index
            # Compact to the last entry boundary at or below applied, keeping a little tail.
            span = node.log.entry_span(at - 3) if at - 3 >= node.first_index else None
            if span is not None and span[1] >= node.first_index:
                snap = node.compact(span[1], b"state@%d" % span[1])
                backend.compact(nid, snap)
    # Quiesce: heal, restart everyone, tick until the logs agree.
    isolated.clear()
    for nid in list(down):
        down.discard(nid)
        restarts[nid] = restarts.get(nid, 0) + 1
        nodes[nid] = make(nid, backend.reopen(nid))
        out.applied[nid] = [a for a in out.applied[nid] if a[2] <= nodes[nid].applied_index]
    for _ in range(400):
        for nid, node in nodes.items():
            node.tick()
            process(nid)
        for _ in range(50):
            if not network:
                break
            deliver(len(network))
    return out


def run_both(seed: int, root: str, steps: int = 1500) -> tuple[Run, Run, DiskBackend]:
    mem = MemoryBackend(root)
    a = run(seed, mem, steps)
    disk = DiskBackend(os.path.join(root, f"seed{seed}"))
    b = run(seed, disk, steps)
    return a, b, disk


def log_bytes(storage: PartitionRaftLog, start: int) -> bytes:
    """Every stored batch from offset ``start`` to the end, as on disk."""
    return storage.stored_bytes(start)
