"""A small synchronous cluster for scripted Raft scenarios.

Each node is a RaftNode over a MemoryStorage; persisting is immediate (the simulator covers
crashes and fsync ordering). Messages queue in ``self.network`` until delivered, so tests can
drop, hold or inspect them between rounds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from cluster.raft import (
    Configuration,
    Entry,
    EntryKind,
    MemoryStorage,
    Message,
    RaftConfig,
    RaftNode,
    Role,
)

GROUP = "g"


class Cluster:
    def __init__(
        self,
        voters: Iterable[int],
        *,
        learners: Iterable[int] = (),
        extra: Iterable[int] = (),
        seed: int = 0,
        log_start: int = 0,
        **cfg: object,
    ) -> None:
        """``voters``/``learners`` form the bootstrap configuration; ``extra`` nodes start with
        an empty one (to be added later)."""
        self.cfg = cfg
        self.seed = seed
        conf = Configuration(frozenset(voters), frozenset(learners))
        self.nodes: dict[int, RaftNode] = {}
        self.storages: dict[int, MemoryStorage] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.network: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        self.drop_filter: Callable[[Message], bool] | None = None
        self.rewrite: Callable[[Message], Message] | None = None
        self.delivered: list[Message] = []
        for nid in sorted(conf.members):
            self.add_node(nid, MemoryStorage(conf, log_start=log_start))
        for nid in extra:
            self.add_node(nid, MemoryStorage(log_start=log_start))

    def add_node(self, nid: int, storage: MemoryStorage) -> RaftNode:
        node = RaftNode(
            RaftConfig(node_id=nid, group_id=GROUP, **self.cfg),  # type: ignore[arg-type]
            storage, random.Random(self.seed * 1000 + nid),
        )
        self.nodes[nid] = node
        self.storages[nid] = storage
        self.applied.setdefault(nid, [])
        return node

    # -- driving --------------------------------------------------------------------------------

    def process(self, nid: int) -> None:
        """Run the Ready loop of one node until it has nothing to do."""
        node = self.nodes[nid]
        storage = self.storages[nid]
        while node.has_ready():
            rd = node.ready()
            self.network.extend(rd.messages)
            if rd.snapshot is not None:
                storage.apply_snapshot(rd.snapshot)
            if rd.entries:
                storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
            self.network.extend(rd.persisted_messages)
            if rd.snapshot is not None:
                snap_index = rd.snapshot.index
                self.applied[nid] = [e for e in self.applied[nid] if e.last_index <= snap_index]
            self.applied[nid].extend(rd.committed_entries)
            node.advance(rd)

    def process_all(self) -> None:
        for nid in sorted(self.nodes):
            if nid not in self.down:
                self.process(nid)

    def deliver_one_round(self) -> int:
        """Deliver every queued message once (replies queue for the next round)."""
        self.process_all()
        msgs, self.network = self.network, []
        n = 0
        for m in msgs:
            if (m.from_id, m.to_id) in self.blocked or m.to_id in self.down:
                continue
            if m.from_id in self.down:
                continue
            if self.drop_filter is not None and self.drop_filter(m):
                continue
            if self.rewrite is not None:
                m = self.rewrite(m)
            self.delivered.append(m)
            self.nodes[m.to_id].step(m)
            n += 1
        self.process_all()
        return n

    def stabilize(self, max_rounds: int = 200) -> None:
        for _ in range(max_rounds):
            self.process_all()
            if not self.network:
                return
            self.deliver_one_round()
        raise AssertionError("cluster did not quiesce")

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].tick()
            self.process(nid)

    def tick_all(self, n: int = 1, *, stabilize: bool = True) -> None:
        for _ in range(n):
            for nid in sorted(self.nodes):
                if nid not in self.down:
                    self.nodes[nid].tick()
            if stabilize:
                self.stabilize()

    def elect(self, nid: int) -> RaftNode:
        node = self.nodes[nid]
        node.campaign()
        self.stabilize()
        assert node.role is Role.LEADER, (nid, node.role)
        return node

    def propose(self, nid: int, data: bytes, count: int = 1) -> Entry:
        e = self.nodes[nid].propose(data, count)
        self.stabilize()
        return e

    # -- faults ---------------------------------------------------------------------------------

    def isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.blocked.add((nid, other))
                self.blocked.add((other, nid))

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        for a in sets:
            for b in sets:
                if a is not b:
                    for x in a:
                        for y in b:
                            self.blocked.add((x, y))

    def heal(self) -> None:
        self.blocked.clear()

    # -- inspection -----------------------------------------------------------------------------

    def leaders(self) -> list[int]:
        return [nid for nid, n in self.nodes.items()
                if n.role is Role.LEADER and nid not in self.down]

    def log_of(self, nid: int) -> list[tuple[int, int, int]]:
        """(index, last_index, term) of every entry in the node's log."""
        node = self.nodes[nid]
        lo = node.first_index
        if lo > node.last_index:
            return []
        ents = node.log.entries(lo, node.last_index + 1, 1 << 60)
        return [(e.index, e.last_index, e.term) for e in ents]

    def data_applied(self, nid: int) -> list[bytes]:
        return [bytes(e.data) for e in self.applied[nid] if e.kind is EntryKind.DATA]
