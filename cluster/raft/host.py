"""RaftHost: one asyncio shell driving every Raft group of a node (docs/cluster-design.md, "The Raft host").

One task runs drains. Inputs (a message from the transport, a proposal, a tick, an operation such as a
leadership transfer) only queue work on their group, mark it dirty and wake the task; the drain then
feeds each dirty group's queued inputs to its core (proposals first, so the indexes ``propose`` promised
hold), collects the Readies of all of them and, for all of them together:

  1. sends ``messages`` (leader replication may travel while the leader persists) - one coalesced
     Envelope per destination node (the transport coalesces per peer);
  2. persists: per log one write of all its new entries (stamped batches) + truncation/snapshot install,
     every group's hard state in ONE shared file, and fsyncs every dirty file in parallel in a thread pool
     (one fsync per file per drain: group commit across groups);
  3. sends ``persisted_messages`` (votes, acks);
  4. restores snapshots, hands committed entries to each listener, resolves proposals, calls ``advance``
     (committed entries already durable here - a leader's - are handed over before the fsync of step 2).

Readies that need no persist are finished before waiting for the disk. A group has at most one persist in
flight; while its fsyncs run (``_complete``), the next drain already serves the other groups. Inputs arriving
during a group's persist queue up for its next Ready: many proposals -> one Raft append -> one write + one
fsync.

Proposals: ``group.propose(data, count)`` returns ``Proposal(index, last_index, term)`` at once (the index is
predicted: queued proposals are fed first in the next drain, and a core between ready() and advance()
does not change). A proposal is committed when an entry with the same index AND term is committed;
``wait_committed`` raises NotLeaderError when this node lost the leadership before that (the entry may or
may not commit: the client retries), ProposalTruncatedError when another entry took its place.

Failures: a log write/fsync failure takes that group offline (waiters fail with GroupOfflineError; it takes
no more input); a failure of the shared hard-state file takes every group of the node offline. Both are
logged at CRITICAL. Nothing continues on a disk in an unknown state.

Limits: uncommitted proposal bytes per group (``max_uncommitted_bytes``, checked here before the core's
own identical limit), outstanding proposals per group, inbox messages per group (beyond: dropped, Raft
retransmits), send queues (the transport's).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from storage.errors import StorageError

from .hard_state import HardStateStore
from .node import RaftConfig, RaftNode
from .partition_log import PartitionRaftLog, is_one_batch
from .transport import LeaderHint, RaftTransport
from .types import (
    ENTRY_OVERHEAD,
    ConfChange,
    Configuration,
    Entry,
    EntryKind,
    GroupId,
    HardState,
    Message,
    NodeId,
    NotLeaderError,
    ProposalDroppedError,
    ProposalError,
    Ready,
    Role,
    Snapshot,
)

log = logging.getLogger("tidelog.raft")

_LEADER = Role.LEADER
_CONFIG = EntryKind.CONFIG


class ProposalTruncatedError(ProposalError):
    """Another entry was committed where the proposal was: it will never commit."""


class GroupOfflineError(StorageError):
    """The group (or the node's storage) failed and takes no more work."""


class GroupListener:
    """Callbacks of one group, called on the event loop. Subclass and override what you need."""

    def on_committed(self, entries: list[Entry]) -> None:
        """Committed entries, in order, each once (DATA data may be the batch as proposed, i.e. not yet
        stamped with its offset and epoch: the Entry's index/term say them; the log holds stamped bytes)."""

    def on_leader_change(self, leader_id: NodeId | None, term: int) -> None:
        """This node's view of the leader changed (None: no leader known, e.g. an election runs)."""

    def on_restore(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader was installed: reset the state from it (partitions: the log now
        starts at snapshot.index + 1)."""


class Proposal:
    """A proposed entry: ``index``..``last_index`` in ``term``. Await it with group.wait_committed."""

    __slots__ = ("_dfut", "_fut", "committed", "durable", "error", "index", "last_index", "size", "term")

    def __init__(self, index: int, last_index: int, term: int, size: int) -> None:
        self.index = index
        self.last_index = last_index
        self.term = term
        self.size = size
        self.error: BaseException | None = None
        self.committed = False
        self.durable = False
        self._fut: asyncio.Future[None] | None = None
        self._dfut: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        return self.committed or self.error is not None

    def __repr__(self) -> str:
        state = "committed" if self.committed else (f"failed: {self.error!r}" if self.error else "pending")
        return f"Proposal({self.index}..{self.last_index}, term {self.term}, {state})"

    def _commit(self) -> None:
        self.committed = True
        self.durable = True
        for f in (self._fut, self._dfut):
            if f is not None and not f.done():
                f.set_result(None)

    def _make_durable(self) -> None:
        self.durable = True
        if self._dfut is not None and not self._dfut.done():
            self._dfut.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.done:
            return
        self.error = exc
        for f in (self._fut, self._dfut):
            if f is not None and not f.done():
                f.set_exception(exc)
                f.exception()  # retrieved: no "never retrieved" noise when nobody waits


@dataclass(slots=True)
class ReplicaState:
    match_index: int  # highest offset known durable on that replica and equal to the leader's
    recent_active: bool  # heard from within the last election timeout
    in_sync: bool  # heard from and caught up with the leader's log end within replica_lag_ms (Kafka's ISR)
    lag: int  # leader's last index - match_index
    is_learner: bool


class RaftGroup:
    """One Raft group hosted by a RaftHost. Built by ``RaftHost.add_group``."""

    def __init__(self, host: RaftHost, group_id: GroupId, log_: PartitionRaftLog, node: RaftNode,
                 listener: GroupListener) -> None:
        self.host = host
        self.group_id = group_id
        self.log = log_
        self.node = node
        self.listener = listener
        self.failed: BaseException | None = None
        self._inbox: deque[Message] = deque()
        self._props: list[tuple[bytes | memoryview, int, Proposal]] = []  # not yet given to the core
        # Core calls to run at the next drain, with the future their caller awaits (failed if they never run).
        self._ops: list[tuple[Callable[[], None], asyncio.Future | None]] = []
        self._next_index: int | None = None  # predicted index of the next proposal while queued
        self._outstanding: deque[Proposal] = deque()  # given to the core or queued, ascending index
        self._by_last: dict[int, Proposal] = {}
        self._undurable: deque[Proposal] = deque()
        self._uncommitted_bytes = 0
        self._transfer_pending = False
        self._conf_pending: list[tuple[int, int, asyncio.Future[int]]] = []  # (index, term, future)
        self._leader: tuple[NodeId | None, int] = (node.leader_id, node.term)
        self._caught_up: dict[NodeId, float] = {}  # leader: when each follower last matched the log end
        self._heard: dict[NodeId, float] = {}  # when a message of this group last came from each node
        self._last_index_at_tick = -1
        self._removed = False
        self._busy = False  # a persist of this group is in flight (between ready() and advance())
        self._pending_ticks = 0  # ticks not yet given to the core
        self.dropped_messages = 0

    # -- observability ----------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self.node.id

    @property
    def leader_id(self) -> NodeId | None:
        return self.node.leader_id

    @property
    def term(self) -> int:
        return self.node.term

    @property
    def is_leader(self) -> bool:
        return self.node.role is _LEADER and self.failed is None

    @property
    def commit_index(self) -> int:
        return self.node.commit_index

    @property
    def last_index(self) -> int:
        return self.node.last_index

    @property
    def configuration(self) -> Configuration:
        return self.node.configuration

    def replica_state(self) -> dict[NodeId, ReplicaState]:
        """Leader only (empty otherwise): per member, match index, activity and in-sync status."""
        node = self.node
        if node.role is not _LEADER:
            return {}
        st = node.status()
        last = st.last_index
        now = time.monotonic()
        lag_s = self.host.replica_lag_ms / 1000
        out: dict[NodeId, ReplicaState] = {}
        for nid, fs in st.progress.items():
            if nid == node.id:
                out[nid] = ReplicaState(fs.match, True, True, last - fs.match, False)
                continue
            caught = self._caught_up.get(nid)
            heard = self._heard.get(nid)
            in_sync = (caught is not None and now - caught <= lag_s and heard is not None
                       and now - heard <= lag_s and not fs.is_learner)
            out[nid] = ReplicaState(fs.match, fs.recent_active, in_sync, last - fs.match, fs.is_learner)
        return out

    def in_sync_replicas(self) -> tuple[NodeId, ...]:
        return tuple(sorted(n for n, r in self.replica_state().items() if r.in_sync))

    # -- proposals --------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self.failed is not None:
            raise GroupOfflineError(f"group {self.group_id} is offline: {self.failed}")
        if self._removed:
            raise GroupOfflineError(f"group {self.group_id} was removed")

    def propose(self, data: bytes | memoryview, count: int) -> Proposal:
        """Propose one RecordBatch spanning ``count`` offsets. Raises NotLeaderError(leader_id, term),
        ProposalDroppedError (backlog full, leadership transfer), ValueError (not one batch of count
        records), GroupOfflineError."""
        return self.propose_batch(((data, count),))[0]

    def propose_batch(self, items: Iterable[tuple[bytes | memoryview, int]]) -> list[Proposal]:
        """Several batches at once (e.g. one produce request); all or none are accepted."""
        self._check_usable()
        node = self.node
        if node.role is not _LEADER:
            raise NotLeaderError(node.leader_id, node.term)
        if self._transfer_pending or node.lead_transferee is not None:
            raise ProposalDroppedError("leadership transfer underway")
        items = list(items)
        host = self.host
        size = 0
        for data, count in items:
            if count < 1 or not is_one_batch(data, count - 1, exact=True):
                raise ValueError(f"a proposal is one record batch spanning its {count} offsets")
            size += len(data) + ENTRY_OVERHEAD
        if self._uncommitted_bytes and self._uncommitted_bytes + size > host.max_uncommitted_bytes:
            raise ProposalDroppedError("too many uncommitted bytes; retry after commits")
        if len(self._outstanding) + len(items) > host.max_outstanding_proposals:
            raise ProposalDroppedError("too many outstanding proposals; retry after commits")
        index = self._next_index if self._next_index is not None else node.last_index + 1
        term = node.term
        out = []
        for data, count in items:
            p = Proposal(index, index + count - 1, term, len(data) + ENTRY_OVERHEAD)
            index += count
            self._props.append((data, count, p))
            self._outstanding.append(p)
            self._by_last[p.last_index] = p
            self._undurable.append(p)
            out.append(p)
        self._next_index = index
        self._uncommitted_bytes += size
        host._mark(self)
        return out

    async def wait_committed(self, proposal: Proposal | int, timeout_s: float | None = None) -> Proposal:
        """Until the proposal's entry (same index and term) commits. Raises NotLeaderError,
        ProposalTruncatedError, GroupOfflineError, TimeoutError."""
        p = self._lookup(proposal)
        if not p.done:
            if p._fut is None:
                p._fut = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(asyncio.shield(p._fut), timeout_s)
        if p.error is not None:
            raise p.error
        return p

    async def wait_durable(self, proposal: Proposal | int, timeout_s: float | None = None) -> Proposal:
        """Until the proposal is fsynced in the local log (acks=1)."""
        p = self._lookup(proposal)
        if not p.durable and p.error is None:
            if p._dfut is None:
                p._dfut = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(asyncio.shield(p._dfut), timeout_s)
        if p.error is not None and not p.durable:
            raise p.error
        return p

    def _lookup(self, proposal: Proposal | int) -> Proposal:
        if isinstance(proposal, Proposal):
            return proposal
        p = self._by_last.get(proposal)
        if p is None:
            raise KeyError(f"no outstanding proposal of group {self.group_id} ends at {proposal}")
        return p

    # -- operations -------------------------------------------------------------------------------

    def transfer_leadership(self, to_node: NodeId) -> None:
        """Hand the leadership to voter ``to_node`` (proposals are refused until it completes or an
        election timeout passes). Raises NotLeaderError."""
        self._check_usable()
        node = self.node
        if node.role is not _LEADER:
            raise NotLeaderError(node.leader_id, node.term)
        if to_node == node.id or to_node not in node.configuration.voters:
            raise ValueError(f"cannot transfer leadership of {self.group_id} to {to_node}")
        self._transfer_pending = True

        def op() -> None:
            self._transfer_pending = False
            if self.node.role is _LEADER:
                try:
                    self.node.transfer_leadership(to_node)
                except ValueError as exc:  # the configuration changed meanwhile
                    log.info("group %s: leadership transfer to %d dropped: %s", self.group_id, to_node, exc)

        self._queue_op(op)

    async def change_membership(self, change: ConfChange, timeout_s: float | None = None) -> int:
        """Add a learner / promote / remove (leader only). Returns the CONFIG entry's index once it is
        committed. Raises NotLeaderError, ProposalDroppedError (another change pending), ValueError."""
        self._check_usable()
        node = self.node
        if node.role is not _LEADER:
            raise NotLeaderError(node.leader_id, node.term)
        node.configuration.apply(change)  # ValueError now rather than later
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def op() -> None:
            if fut.done():
                return
            try:
                e = self.node.propose_conf_change(change)
            except (ProposalError, ValueError) as exc:
                fut.set_exception(exc)
                return
            self._conf_pending.append((e.index, e.term, fut))

        self._queue_op(op, fut)
        return await asyncio.wait_for(asyncio.shield(fut), timeout_s)

    def campaign(self) -> None:
        """Start an election now (bootstrap of a new group, tests)."""
        self._check_usable()
        self._queue_op(self.node.campaign)

    async def compact(self, up_to_index: int, snapshot: bytes = b"") -> Snapshot:
        """Drop the log up to ``up_to_index`` (an applied entry boundary), keeping ``snapshot`` (the state
        machine's state there; empty for partitions) as the snapshot followers get."""
        self._check_usable()
        fut: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()

        def op() -> None:
            try:
                snap = self.node.compact(up_to_index, snapshot)
                self.log.compact(snap)
                fut.set_result(snap)
            except (ValueError, OSError, StorageError) as exc:
                fut.set_exception(exc)

        self._queue_op(op, fut)
        return await fut

    async def apply_retention(self, now_ms: int) -> int:
        """Time/size retention of the partition log, kept below the applied index (see
        PartitionRaftLog.apply_retention). Returns segments deleted."""
        self._check_usable()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def op() -> None:
            try:
                fut.set_result(self.log.apply_retention(now_ms, self.node.applied_index))
            except (OSError, StorageError) as exc:
                fut.set_exception(exc)

        self._queue_op(op, fut)
        return await fut

    async def apply_log_start(self) -> int:
        """Apply the committed LOG_START entries (DeleteRecords) up to the applied index between drains (see
        PartitionRaftLog.apply_log_start). Returns the log start offset."""
        self._check_usable()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def op() -> None:
            try:
                fut.set_result(self.log.apply_log_start(self.node.applied_index))
            except (OSError, StorageError) as exc:
                fut.set_exception(exc)

        self._queue_op(op, fut)
        return await fut

    def _queue_op(self, op: Callable[[], None], fut: asyncio.Future | None = None) -> None:
        if len(self._ops) >= self.host.max_queued_ops:
            raise ProposalDroppedError(f"too many queued operations on group {self.group_id}")
        self._ops.append((op, fut))
        self.host._mark(self)

    def _fail_ops(self, exc: BaseException) -> None:
        ops, self._ops = self._ops, []
        for _op, fut in ops:
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    # -- drain side (host only) -----------------------------------------------------------------

    def _feed(self) -> None:
        node = self.node
        ticks, self._pending_ticks = self._pending_ticks, 0
        if self._props:
            props, self._props = self._props, []
            self._next_index = None
            try:
                entries = node.propose_batch([(d, c) for d, c, _p in props])
                # The promised indexes hold: proposals are fed first and nothing moved the log since.
                assert entries[0].index == props[0][2].index and entries[0].term == props[0][2].term
            except ProposalError as exc:
                for _d, _c, p in props:
                    self._forget(p, exc)
        if self._ops:
            ops, self._ops = self._ops, []
            for op, _fut in ops:
                op()
        if self._inbox:
            inbox, self._inbox = self._inbox, deque()
            step = node.step
            heard = self._heard
            now = time.monotonic()
            for m in inbox:
                heard[m.from_id] = now
                step(m)
        for _ in range(ticks):
            node.tick()
        if ticks and node.role is _LEADER:
            self._track_caught_up()

    def _track_caught_up(self) -> None:
        node = self.node
        now = time.monotonic()
        target = self._last_index_at_tick
        for nid in node.configuration.members:
            if nid != node.id:
                m = node.match_index(nid)
                if m is not None and m >= target:
                    self._caught_up[nid] = now
        self._last_index_at_tick = node.last_index

    def _forget(self, p: Proposal, exc: BaseException) -> None:
        p._fail(exc)
        if self._by_last.get(p.last_index) is p:
            del self._by_last[p.last_index]
        try:
            self._outstanding.remove(p)
            self._uncommitted_bytes -= p.size
        except ValueError:
            pass

    def _fail_outstanding(self, exc: BaseException) -> None:
        for p in self._outstanding:
            p._fail(exc)
        for _d, _c, p in self._props:
            p._fail(exc)
        self._outstanding.clear()
        self._by_last.clear()
        self._undurable.clear()
        self._props = []
        self._next_index = None
        self._uncommitted_bytes = 0
        for _i, _t, fut in self._conf_pending:
            if not fut.done():
                fut.set_exception(exc)
        self._conf_pending = []

    def _after_persist(self, rd: Ready) -> None:
        if rd.entries:
            last = rd.entries[-1]
            q = self._undurable
            while q and q[0].last_index <= last.last_index:
                p = q.popleft()
                if p.term == last.term and not p.done:
                    p._make_durable()

    def _apply(self, rd: Ready, skip: int = 0) -> None:
        """Hand a Ready's results to the listener; ``skip`` committed entries were handed over already."""
        node = self.node
        if rd.snapshot is not None:
            self.listener.on_restore(rd.snapshot)
        ents = rd.committed_entries
        if len(ents) > skip:
            self._apply_committed(ents[skip:] if skip else ents)
        if rd.soft_state is not None or self._leader[1] != node.term:
            leader = (node.leader_id, node.term)
            if leader != self._leader:
                was_leader = self._leader[0] == node.id
                self._leader = leader
                if node.role is not _LEADER and (self._outstanding or self._props or self._conf_pending):
                    self._fail_outstanding(NotLeaderError(node.leader_id, node.term))
                if node.role is _LEADER and not was_leader:
                    self._caught_up.clear()
                    self._last_index_at_tick = node.last_index
                    self.host._leader_changed(self)
                self.listener.on_leader_change(node.leader_id, node.term)

    def _apply_committed(self, ents: list[Entry]) -> None:
        q = self._outstanding
        if q:
            for e in ents:
                while q and q[0].last_index <= e.last_index:
                    p = q.popleft()
                    del self._by_last[p.last_index]
                    self._uncommitted_bytes -= p.size
                    if p.last_index == e.last_index and p.index == e.index and p.term == e.term:
                        p._commit()
                    else:
                        p._fail(ProposalTruncatedError(
                            f"offsets {p.index}..{p.last_index} of {self.group_id} were replaced (term "
                            f"{e.term}, proposed in term {p.term})"))
        if self._conf_pending:
            last = ents[-1].last_index
            keep = []
            for index, term, fut in self._conf_pending:
                if index > last:
                    keep.append((index, term, fut))
                elif not fut.done():
                    if any(e.index == index and e.term == term and e.kind is _CONFIG for e in ents):
                        fut.set_result(index)
                    else:
                        fut.set_exception(ProposalTruncatedError(f"configuration entry {index} was replaced"))
            self._conf_pending = keep
        self.listener.on_committed(ents)

    def _apply_early(self, rd: Ready) -> int:
        """Before the persist of ``rd``: hand over the committed entries that are already durable here
        (below the entries being written; a leader's usually all), so an acks=all producer does not also
        wait for this drain's fsync. Returns how many were handed over."""
        ents = rd.committed_entries
        if not ents or rd.snapshot is not None:
            return 0
        n = len(ents)
        if rd.entries:
            cut = rd.entries[0].index
            if ents[0].last_index >= cut:
                return 0
            if ents[-1].last_index >= cut:
                n = 0
                while n < len(ents) and ents[n].last_index < cut:
                    n += 1
        self._apply_committed(ents[:n] if n < len(ents) else ents)
        return n

    def _go_offline(self, exc: BaseException) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        log.critical("raft group %s on node %d goes offline: %s", self.group_id, self.node.id, exc)
        err = exc if isinstance(exc, GroupOfflineError) else GroupOfflineError(
            f"group {self.group_id} is offline: {exc}")
        self._fail_outstanding(err)
        self._fail_ops(err)
        self._inbox.clear()
        try:
            self.listener.on_leader_change(None, self.node.term)
        except Exception:
            log.exception("listener of %s failed", self.group_id)


class RaftHost:
    """Hosts every Raft group of one node. See the module docstring."""

    def __init__(
        self,
        node_id: NodeId,
        transport: RaftTransport,
        *,
        state_dir: str,
        tick_ms: int = 50,
        election_ticks: int = 20,
        heartbeat_ticks: int = 2,
        rng: random.Random | None = None,
        max_uncommitted_bytes: int = 64 << 20,
        max_outstanding_proposals: int = 100_000,
        max_inbox_messages: int = 10_000,
        max_queued_ops: int = 1_000,
        max_msg_bytes: int = 1 << 20,
        max_inflight_msgs: int = 64,
        io_threads: int = 32,
        hint_interval_ticks: int = 20,
        replica_lag_ms: int = 10_000,
        pre_vote: bool = True,
        check_quorum: bool = True,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.max_uncommitted_bytes = max_uncommitted_bytes
        self.max_outstanding_proposals = max_outstanding_proposals
        self.max_inbox_messages = max_inbox_messages
        self.max_queued_ops = max_queued_ops
        self.max_msg_bytes = max_msg_bytes
        self.max_inflight_msgs = max_inflight_msgs
        self.hint_interval_ticks = hint_interval_ticks
        self.replica_lag_ms = replica_lag_ms
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self._rng = rng or random.Random()
        self.state = HardStateStore(state_dir)
        self._groups: dict[GroupId, RaftGroup] = {}
        self._dirty: set[RaftGroup] = set()
        self._ticks = 0
        self._tick_count = 0
        self._next_hint_tick = hint_interval_ticks
        self._hints_due: set[RaftGroup] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix=f"raft-io-{node_id}")
        self._cycle_lock: asyncio.Lock | None = None
        self._inflight: set[asyncio.Future] = set()  # persists in flight (set when _complete ran)
        self._idle: asyncio.Event | None = None  # set when a persist completes (remove_group waits on it)
        self._closed = False
        self.failed: BaseException | None = None
        self.drains = 0  # observability: drains run, persist rounds, seconds spent in both
        self.persist_rounds = 0
        self.drain_seconds = 0.0
        self.persist_seconds = 0.0
        self.persisted_files = 0
        self.sync_thread_seconds = 0.0
        transport.set_receiver(self._deliver, self._unreachable)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._cycle_lock = asyncio.Lock()
        self._task = loop.create_task(self._run(), name=f"raft-host-{self.node_id}")
        self._tick_handle = loop.call_later(self.tick_ms / 1000, self._on_tick)

    async def close(self) -> None:
        """Stop driving the groups (the logs stay open: their owners close them)."""
        if self._closed:
            return
        self._closed = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._task is not None:
            if self._cycle_lock is not None:
                async with self._cycle_lock:
                    self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:  # let the fsyncs in flight finish (their groups complete normally)
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        for g in self._groups.values():
            g._fail_outstanding(GroupOfflineError("the Raft host closed"))
            g._fail_ops(GroupOfflineError("the Raft host closed"))
        self._executor.shutdown(wait=True)
        self.state.close()

    @property
    def groups(self) -> dict[GroupId, RaftGroup]:
        return dict(self._groups)

    def group(self, group_id: GroupId) -> RaftGroup | None:
        return self._groups.get(group_id)

    def add_group(
        self,
        group_id: GroupId,
        log_: PartitionRaftLog,
        *,
        voters: Iterable[NodeId],
        learners: Iterable[NodeId] = (),
        listener: GroupListener | None = None,
        skip_committed: bool = False,
    ) -> RaftGroup:
        """Host a group whose log is ``log_``. A fresh log is bootstrapped with voters/learners (an existing
        one keeps its own configuration). ``skip_committed``: the listener already holds everything
        committed (a partition: the log is the state), so only new commits are delivered after a restart."""
        if self._closed or self.failed is not None:
            raise GroupOfflineError("the Raft host is closed or offline")
        if group_id in self._groups:
            raise ValueError(f"group {group_id!r} is already hosted")
        log_.bootstrap(Configuration(frozenset(voters), frozenset(learners)))
        hs = self.state.get(group_id)
        snap = log_.snapshot()
        if hs is not None:
            # The logs and the state file are fsynced in parallel: the commit may be ahead of the log.
            commit = max(min(hs.commit, log_.last_index()), snap.index)
            log_.set_hard_state(HardState(hs.term, hs.vote, commit))
        cfg = RaftConfig(
            node_id=self.node_id, group_id=group_id, election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks, max_msg_bytes=self.max_msg_bytes,
            max_inflight_msgs=self.max_inflight_msgs, max_uncommitted_bytes=self.max_uncommitted_bytes,
            pre_vote=self.pre_vote, check_quorum=self.check_quorum,
        )
        applied = log_.hard_state().commit if skip_committed else None
        node = RaftNode(cfg, log_, random.Random(self._rng.getrandbits(64)), applied=applied)
        group = RaftGroup(self, group_id, log_, node, listener or GroupListener())
        self._groups[group_id] = group
        if node.configuration.voters == {self.node_id}:
            group._ops.append((node.campaign, None))  # a single voter need not wait an election timeout
        self._mark(group)
        return group

    async def remove_group(self, group_id: GroupId) -> None:
        """Stop hosting a group (between drains) and forget its hard state. The log stays open."""
        group = self._groups.get(group_id)
        if group is None:
            return
        assert self._cycle_lock is not None and self._idle is not None
        async with self._cycle_lock:
            while group._busy and group.failed is None:  # its persist in flight completes first
                self._idle.clear()
                await self._idle.wait()
            self._groups.pop(group_id, None)
            self._dirty.discard(group)
            self._hints_due.discard(group)
            group._removed = True
            group._fail_outstanding(GroupOfflineError(f"group {group_id} was removed from this node"))
            group._fail_ops(GroupOfflineError(f"group {group_id} was removed from this node"))
            self.state.remove(group_id)
        self._kick()

    # -- inputs ----------------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _mark(self, group: RaftGroup) -> None:
        self._dirty.add(group)
        if self._wake is not None:
            self._wake.set()

    def _deliver(self, messages: list[Message]) -> None:
        groups = self._groups
        limit = self.max_inbox_messages
        for m in messages:
            g = groups.get(m.group_id)
            if g is None or g.failed is not None:
                continue  # not (yet) hosted here: Raft retransmits
            if len(g._inbox) >= limit:
                g.dropped_messages += 1
                continue
            g._inbox.append(m)
            self._dirty.add(g)
        if self._wake is not None:
            self._wake.set()

    def _unreachable(self, to: NodeId, group_ids: set[GroupId]) -> None:
        for gid in group_ids:
            g = self._groups.get(gid)
            if g is not None and g.failed is None and g.node.role is _LEADER and len(g._ops) < self.max_queued_ops:
                g._ops.append((lambda g=g: g.node.report_unreachable(to), None))
                self._dirty.add(g)
        self._kick()

    def _on_tick(self) -> None:
        if self._closed:
            return
        self._ticks += 1
        self._tick_handle = asyncio.get_running_loop().call_later(self.tick_ms / 1000, self._on_tick)
        self._kick()

    def _leader_changed(self, group: RaftGroup) -> None:
        self._hints_due.add(group)

    # -- the drain -------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None and self._cycle_lock is not None
        wake = self._wake
        while True:
            await wake.wait()
            wake.clear()
            async with self._cycle_lock:
                t0 = time.perf_counter()
                try:
                    self._drain()
                except Exception as exc:  # a bug in a core or here: stop loudly, never limp on
                    log.critical("raft host %d: drain failed; every group goes offline", self.node_id,
                                 exc_info=True)
                    self._fail_node(exc)
                    return
                self.drain_seconds += time.perf_counter() - t0

    def _fail_node(self, exc: BaseException) -> None:
        self.failed = exc
        for g in self._groups.values():
            g._go_offline(exc)

    def _drain(self) -> None:
        """Feed every dirty group that is not persisting, then act on all their Readies together. The
        fsyncs run in the pool; their completion (_complete) finishes those groups, while the next drain
        may already run for the others (a group has at most one persist in flight)."""
        ticks, self._ticks = self._ticks, 0
        if ticks:
            self._tick_count += ticks
            groups: Iterable[RaftGroup] = list(self._groups.values())
            self._dirty.clear()
            for g in groups:
                g._pending_ticks += ticks
        else:
            groups, self._dirty = self._dirty, set()
        if self.failed is not None:
            return
        self.drains += 1
        work: list[tuple[RaftGroup, Ready]] = []
        for g in groups:
            if g.failed is not None or g._removed or g._busy:
                continue  # a busy group is marked again when its persist completes
            try:
                g._feed()
                if g.node.has_ready():
                    work.append((g, g.node.ready()))
            except Exception as exc:  # a core assertion (a bug, or a peer sending nonsense): this group only
                log.critical("raft group %s on node %d failed", g.group_id, self.node_id, exc_info=True)
                g._go_offline(exc)
        if ticks and self._tick_count >= self._next_hint_tick:
            self._next_hint_tick = self._tick_count + self.hint_interval_ticks
            self._hints_due.update(g for g in self._groups.values() if g.node.role is _LEADER)
        send = self.transport.send
        early = [m for _g, rd in work for m in rd.messages]
        if early:
            send(early)
        sync: list[tuple[RaftGroup, Ready]] = []
        late: list[Message] = []
        for g, rd in work:
            if rd.must_sync:
                sync.append((g, rd))
            else:
                late.extend(rd.persisted_messages)
        if late:
            send(late)
        for g, rd in work:
            if not rd.must_sync:
                self._finish(g, rd)
        if sync or self.state.has_staged:
            early_applied: list[int] = []
            for g, rd in sync:
                g._busy = True
                try:
                    early_applied.append(g._apply_early(rd))
                except Exception as exc:  # a listener bug
                    log.exception("raft group %s: applying committed entries failed", g.group_id)
                    g._go_offline(exc)
                    early_applied.append(0)
            jobs, calls = self._start_persist(sync)
            if calls:
                self._launch_persist(sync, early_applied, jobs, calls)
            else:
                self._finish_persisted(sync, early_applied)
        self._publish_hints()

    def _finish(self, g: RaftGroup, rd: Ready, skip: int = 0) -> None:
        try:
            g._apply(rd, skip)
        except Exception as exc:  # a listener bug: this group's state machine missed entries
            log.exception("raft group %s: applying a Ready failed", g.group_id)
            g._go_offline(exc)
            return
        g.node.advance(rd)
        if g.node.has_ready() or g._inbox or g._props or g._ops or g._pending_ticks:
            self._mark(g)

    def _start_persist(self, sync: list[tuple[RaftGroup, Ready]]) -> tuple[list[RaftGroup | None], list]:
        """Write every log (one append each, on the loop) and the hard states; return the fsyncs to run in the
        pool (one per written file) as (group or None for the hard-state file, callable, args)."""
        jobs: list[RaftGroup | None] = []
        calls: list[tuple[Callable, tuple]] = []
        state = self.state
        for g, rd in sync:
            if g.failed is not None:
                continue
            if rd.hard_state is not None:
                state.stage(g.group_id, rd.hard_state)
            if rd.entries or rd.snapshot is not None:
                try:
                    plan = g.log.prepare_append(rd.entries, rd.snapshot)
                    g.log.write(plan)
                except (OSError, ValueError, StorageError) as exc:  # disk failure, or a DATA entry not a batch
                    g._go_offline(exc)
                    continue
                g.log.finish_append(plan)
                if plan.buf is not None:
                    jobs.append(g)
                    calls.append((g.log.sync, ()))
        write = state.prepare()
        if write is not None:
            if write.sync:
                jobs.append(None)
                calls.append((state.execute, (write,)))
            else:
                try:
                    state.execute(write)  # commit indexes only: one write(), no fsync, no thread hop
                except StorageError as exc:
                    log.critical("raft host %d: the hard state file failed: %s", self.node_id, exc)
                    self._fail_node(exc)
        if calls:
            self.persist_rounds += 1
            self.persisted_files += len(calls)
        return jobs, calls

    def _launch_persist(self, sync: list[tuple[RaftGroup, Ready]], early_applied: list[int],
                        jobs: list[RaftGroup | None], calls: list[tuple[Callable, tuple]]) -> None:
        """Run the fsyncs in the pool; the last one to finish schedules ``_complete`` on the loop with ONE
        call_soon_threadsafe. (Not run_in_executor + gather + a task: each of those costs the acknowledgement
        another pass of a busy event loop, and the groups stay ``_busy`` meanwhile.)"""
        loop = asyncio.get_running_loop()
        done = loop.create_future()  # close() waits for the persists in flight
        self._inflight.add(done)
        results: list[BaseException | None] = [None] * len(calls)
        remaining = [len(calls)]
        lock = threading.Lock()
        t0 = time.perf_counter()

        def run(i: int, fn: Callable, args: tuple) -> None:
            try:
                self._timed(fn, *args)
            except BaseException as exc:  # handed to the loop: that group (or the node) goes offline
                results[i] = exc
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                try:
                    loop.call_soon_threadsafe(finish)
                except RuntimeError:  # the loop is closed: nobody is left to complete
                    pass

        def finish() -> None:
            self.persist_seconds += time.perf_counter() - t0
            self._inflight.discard(done)
            try:
                self._complete(sync, early_applied, jobs, results)
            finally:
                if not done.done():
                    done.set_result(None)

        for i, (fn, args) in enumerate(calls):
            try:
                self._executor.submit(run, i, fn, args)
            except RuntimeError as exc:  # the pool was shut down
                run(i, self._raise, (exc,))

    @staticmethod
    def _raise(exc: BaseException) -> None:
        raise exc

    def _complete(self, sync: list[tuple[RaftGroup, Ready]], early_applied: list[int],
                  jobs: list[RaftGroup | None], results: list[BaseException | None]) -> None:
        try:
            for g, res in zip(jobs, results):
                if res is not None:
                    if g is None:
                        log.critical("raft host %d: the hard state file failed: %s", self.node_id, res)
                        self._fail_node(res)
                    else:
                        g._go_offline(res)
            self._finish_persisted(sync, early_applied)
        except Exception as exc:  # a bug: stop loudly
            log.critical("raft host %d: completing a persist failed; every group goes offline", self.node_id,
                         exc_info=True)
            self._fail_node(exc)

    def _finish_persisted(self, sync: list[tuple[RaftGroup, Ready]], early_applied: list[int]) -> None:
        for g, rd in sync:
            if g.failed is None:
                g._after_persist(rd)
        late = [m for g, rd in sync if g.failed is None for m in rd.persisted_messages]
        if late:
            self.transport.send(late)
        for (g, rd), skip in zip(sync, early_applied):
            g._busy = False
            if g.failed is None and not g._removed:
                self._finish(g, rd, skip)
        if self._idle is not None and not any(g._busy for g, _rd in sync):
            self._idle.set()

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        self.sync_thread_seconds += time.perf_counter() - t0

    def _publish_hints(self) -> None:
        if not self._hints_due:
            return
        due, self._hints_due = self._hints_due, set()
        hints = [LeaderHint(g.group_id, self.node_id, g.node.term, g.in_sync_replicas() or (self.node_id,))
                 for g in due if g.node.role is _LEADER and g.failed is None and not g._removed]
        if hints:
            self.transport.publish_hints(hints)
