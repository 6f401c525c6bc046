"""The Raft consensus core for one group: a pure state machine (no I/O, clock, threads or
global randomness), modelled on etcd's raft.

Inputs:  tick(), step(message), propose()/propose_batch(), propose_conf_change(),
         transfer_leadership(), campaign(), compact(), report_unreachable(), report_snapshot().
Outputs: ready() -> Ready, then advance(ready).

The Ready contract (the shell's loop; see cluster.raft.sim.SimNode for a model)::

    while True:
        feed inputs: tick() / step(m) / propose(...)   (never between ready() and advance())
        if node.has_ready():
            rd = node.ready()
            send(rd.messages)                 # 1. may go at once: leader replication traffic
            persist(rd.snapshot, rd.entries, rd.hard_state); fsync()
                                              # 2. snapshot, then entries (truncate the stored
                                              #    log at entries[0].index first), then hard
                                              #    state; entries must never be less durable
                                              #    than the hard state that commits them
            send(rd.persisted_messages)       # 3. votes, acks: they promise what was persisted
            restore(rd.snapshot); apply(rd.committed_entries)   # 4. state machine
            node.advance(rd)                  # 5. the core now counts the persist as done

Why the split in 1 and 3: a vote or an append acknowledgement promises durable state, so it may
only leave after fsync. A leader's AppendEntries promises nothing about the leader's own disk,
so (as in etcd) it may travel in parallel with the leader's persist; the leader only counts its
own entries in the commit quorum once ``advance`` reports them durable (its own match index
moves in advance(), never in propose()). If a Ready changes term or vote, every message waits.

Between ready() and advance() no other input may be given (asserted): the shell queues
messages, ticks and proposals and feeds them all after advance(), so one fsync covers a batch.

Rules implemented (Raft thesis, etcd): randomized election timeout in ticks; PreVote; CheckQuorum
with leader lease (a node that heard from a leader within the election timeout ignores
(pre)vote requests unless they are a leadership transfer); commit only by counting entries of the
current term (new leaders append a NOOP); per-follower progress (probe/replicate/snapshot) with a
bounded in-flight window; fast backtracking with a (index, term) hint; TimeoutNow leadership
transfer; single-server membership changes with learners, where a configuration takes effect
as soon as its entry is appended (thesis §4.1) and is reverted if that entry is truncated.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .log import RaftLog
from .progress import PROBE, REPLICATE, SNAPSHOT, Progress, ProgressState
from .storage import CompactedError, Storage
from .types import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    Configuration,
    Entry,
    EntryKind,
    GroupId,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    NotLeaderError,
    ProposalDroppedError,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
    SoftState,
    TimeoutNow,
)

FOLLOWER = Role.FOLLOWER
PRE_CANDIDATE = Role.PRE_CANDIDATE
CANDIDATE = Role.CANDIDATE
LEADER = Role.LEADER

_NOOP = EntryKind.NOOP
_CONFIG = EntryKind.CONFIG
_DATA = EntryKind.DATA

# Campaign kinds.
_PRE_VOTE = 0
_ELECTION = 1
_TRANSFER = 2  # TimeoutNow: no pre-vote, and voters ignore their leader lease


@dataclass(slots=True)
class RaftConfig:
    node_id: NodeId
    group_id: GroupId = 0
    election_ticks: int = 10  # followers wait [election_ticks, 2*election_ticks) ticks
    heartbeat_ticks: int = 1
    max_msg_bytes: int = 1 << 20  # per AppendEntries (always at least one entry)
    max_inflight_msgs: int = 64  # per follower in REPLICATE state
    max_inflight_bytes: int = 32 << 20  # per follower; 0 = only the message count limits
    max_uncommitted_bytes: int = 64 << 20  # leader refuses proposals beyond this backlog
    max_committed_bytes: int = 16 << 20  # committed entries handed out per Ready
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        assert self.node_id > 0, "node ids are positive"
        assert 0 < self.heartbeat_ticks < self.election_ticks
        assert self.max_inflight_msgs > 0 and self.max_msg_bytes > 0


@dataclass(slots=True)
class FollowerStatus:
    match: int
    next: int
    state: ProgressState
    recent_active: bool
    is_learner: bool
    inflight_msgs: int


@dataclass(slots=True)
class Status:
    node_id: NodeId
    group_id: GroupId
    role: Role
    term: int
    vote: NodeId | None
    leader_id: NodeId | None
    commit_index: int
    applied_index: int
    first_index: int
    last_index: int
    configuration: Configuration
    lead_transferee: NodeId | None
    progress: dict[NodeId, FollowerStatus] = field(default_factory=dict)  # leader only


class RaftNode:
    """One member of one Raft group. See the module docstring for the driving contract."""

    def __init__(
        self,
        config: RaftConfig,
        storage: Storage,
        rng: random.Random,
        *,
        applied: int | None = None,
    ) -> None:
        """Start (or restart) from ``storage``. ``applied`` is where the shell's state machine
        already is (default: the snapshot index; committed entries after it are handed out)."""
        self.cfg = config
        self.id = config.node_id
        self.group_id = config.group_id
        self._rng = rng
        self.log = RaftLog(storage)
        hs = storage.hard_state()
        snap = storage.snapshot()
        self.term = hs.term
        self.vote = hs.vote
        # A snapshot is committed by definition, even if the hard state saying so was lost.
        commit = max(hs.commit, snap.index)
        assert commit <= self.log.last_index(), "durable commit beyond the durable log"
        self.log.committed = commit
        applied = snap.index if applied is None else applied
        assert snap.index <= applied <= commit
        self.log.applied = applied
        # Configuration history: (index, configuration) for the snapshot and every CONFIG
        # entry after it, so a truncated CONFIG entry can be reverted.
        self._configs: list[tuple[int, Configuration]] = [(snap.index, snap.configuration)]
        for e in storage.config_entries():
            assert e.index > snap.index and e.kind is _CONFIG
            self._configs.append((e.index, Configuration.decode(e.data)))
        self.configuration = self._configs[-1][1]
        self._voters: tuple[NodeId, ...] = tuple(sorted(self.configuration.voters))
        self._quorum = len(self._voters) // 2 + 1

        self.role = FOLLOWER
        self.leader_id: NodeId | None = None
        self.lead_transferee: NodeId | None = None
        self._progress: dict[NodeId, Progress] = {}
        self._votes: dict[NodeId, bool] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._pending_config_index = -1  # leader: no config change until this commits
        self._uncommitted: deque[tuple[int, int]] = deque()  # leader: (last_index, bytes) proposed
        self._uncommitted_bytes = 0
        self._msgs: list[Message] = []
        self._msgs_after_persist: list[Message] = []
        self._pending_append: dict[NodeId, bool] = {}  # leader: to -> send even if empty
        self._prev_hard = HardState(hs.term, hs.vote, commit)
        self._prev_soft = SoftState(None, FOLLOWER)
        self._ready_out: Ready | None = None
        self._reset_randomized_timeout()

    # =========================================================================================
    # Observability
    # =========================================================================================

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def first_index(self) -> int:
        return self.log.first_index()

    @property
    def is_leader(self) -> bool:
        return self.role is LEADER

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        return self.id in self.configuration.voters

    def match_index(self, node_id: NodeId) -> int | None:
        """Leader only: highest offset known replicated (durably) on ``node_id``."""
        pr = self._progress.get(node_id)
        return pr.match if pr is not None and self.role is LEADER else None

    def status(self) -> Status:
        st = Status(
            node_id=self.id,
            group_id=self.group_id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader_id=self.leader_id,
            commit_index=self.log.committed,
            applied_index=self.log.applied,
            first_index=self.log.first_index(),
            last_index=self.log.last_index(),
            configuration=self.configuration,
            lead_transferee=self.lead_transferee,
        )
        if self.role is LEADER:
            for nid, pr in self._progress.items():
                st.progress[nid] = FollowerStatus(
                    pr.match, pr.next, pr.state, pr.recent_active, pr.is_learner, len(pr.inflights)
                )
        return st

    def config_at(self, index: int) -> Configuration:
        """The configuration in force at ``index`` (>= the snapshot index)."""
        assert index >= self._configs[0][0]
        cfg = self._configs[0][1]
        for at, c in self._configs:
            if at > index:
                break
            cfg = c
        return cfg

    # =========================================================================================
    # Inputs
    # =========================================================================================

    def tick(self) -> None:
        assert self._ready_out is None, "tick() between ready() and advance()"
        if self.role is LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (PreVote first if enabled), e.g. to speed up bootstrap."""
        assert self._ready_out is None
        if self.role is not LEADER:
            self._campaign(_PRE_VOTE if self.cfg.pre_vote else _ELECTION)

    def propose(self, data: bytes | memoryview, count: int = 1) -> Entry:
        """Append one DATA entry spanning ``count`` offsets. Returns it (index, term assigned).

        The proposal is committed when an applied entry with the same index *and term* comes
        out in Ready.committed_entries. Raises NotLeaderError or ProposalDroppedError."""
        return self.propose_batch(((data, count),))[0]

    def propose_batch(self, items: Iterable[tuple[bytes | memoryview, int]]) -> list[Entry]:
        """Append several DATA entries (data, offset count) at once, in order."""
        self._check_can_propose()
        term = self.term
        index = self.log.last_index() + 1
        ents: list[Entry] = []
        nbytes = 0
        for data, count in items:
            assert count >= 1, "an entry spans at least one offset"
            e = Entry(term, index, index + count - 1, _DATA, data)
            ents.append(e)
            nbytes += e.size
            index += count
        if not ents:
            return ents
        if self._uncommitted_bytes + nbytes > self.cfg.max_uncommitted_bytes and (
            self._uncommitted_bytes > 0
        ):
            raise ProposalDroppedError("too many uncommitted bytes; retry after commits")
        self._append_leader(ents, nbytes)
        return ents

    def propose_conf_change(self, change: ConfChange) -> Entry:
        """Append a CONFIG entry; it takes effect on every node as soon as it is appended.

        One change at a time: refused while a previous change, or this leader's initial NOOP,
        is uncommitted (the NOOP rule closes the single-server-change bug of the thesis)."""
        self._check_can_propose()
        if self._pending_config_index > self.log.committed:
            raise ProposalDroppedError("a configuration change is still uncommitted")
        new = self.configuration.apply(change)  # ValueError for nonsense changes
        e = Entry(self.term, self.log.last_index() + 1, self.log.last_index() + 1, _CONFIG,
                  new.encode())
        self._pending_config_index = e.index
        self._append_leader([e], e.size)
        return e

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter ``to`` (graceful shutdown, balancing). Proposals are refused
        until it completes or an election timeout passes."""
        assert self._ready_out is None
        if self.role is not LEADER:
            raise NotLeaderError(self.leader_id, self.term)
        if to == self.id or to not in self.configuration.voters:
            raise ValueError(f"cannot transfer leadership to {to}")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self._election_elapsed = 0  # the transfer must finish within one election timeout
        pr = self._progress[to]
        if pr.match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._pending_append[to] = True

    def report_unreachable(self, to: NodeId) -> None:
        """The transport could not deliver to ``to``: stop streaming, probe again."""
        pr = self._progress.get(to)
        if self.role is LEADER and pr is not None and pr.state is REPLICATE:
            pr.become_probe()

    def report_snapshot(self, to: NodeId, success: bool) -> None:
        """The transport finished (or failed) sending a snapshot to ``to``."""
        pr = self._progress.get(to)
        if self.role is LEADER and pr is not None and pr.state is SNAPSHOT:
            if not success:
                pr.pending_snapshot = -1
            pr.become_probe()
            self._pending_append[to] = False

    def compact(self, index: int, data: bytes = b"") -> Snapshot:
        """Build the snapshot that lets storage drop the log up to ``index`` (<= applied, an
        entry boundary). The shell stores it and drops the entries (MemoryStorage.compact)."""
        assert self._ready_out is None
        log = self.log
        if not (log.first_index() - 1 <= index <= log.applied):
            raise ValueError(f"can only compact up to the applied index {log.applied}")
        if not log.is_boundary(index):
            raise ValueError(f"{index} is inside an entry")
        term = log.term(index)
        assert term is not None
        cfg = self.config_at(index)
        # The history keeps its base at the new snapshot point.
        self._configs = [(index, cfg)] + [(i, c) for i, c in self._configs if i > index]
        return Snapshot(index, term, cfg, data)

    # -----------------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle a message from a peer of this group."""
        assert self._ready_out is None, "step() between ready() and advance()"
        assert m.group_id == self.group_id and m.to_id == self.id, m
        mtype = type(m)
        if m.term > self.term:
            if mtype is RequestVote:
                # Leader lease: a node that recently heard from a leader ignores elections,
                # so a node cut off and healed cannot depose a healthy leader.
                if (
                    self.cfg.check_quorum
                    and not m.transfer
                    and self.leader_id is not None
                    and self._election_elapsed < self.cfg.election_ticks
                ):
                    return
                if not m.pre_vote:
                    self._become_follower(m.term, None)
            elif mtype is RequestVoteResponse and m.pre_vote and not m.reject:
                pass  # granted pre-votes carry the term we would campaign at
            elif mtype is AppendEntries or mtype is Heartbeat or mtype is InstallSnapshot:
                self._become_follower(m.term, m.from_id)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if mtype is AppendEntries or mtype is Heartbeat or mtype is InstallSnapshot:
                # A stale leader (e.g. healed after a partition) learns our term and steps down.
                self._send(AppendEntriesResponse(
                    group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=self.term,
                    index=self.log.last_index(), reject=True,
                    reject_hint_index=-1, reject_hint_term=0,
                ))
            elif mtype is RequestVote and m.pre_vote:
                self._send(RequestVoteResponse(
                    group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=self.term,
                    pre_vote=True, reject=True,
                ))
            return

        if mtype is RequestVote:
            self._handle_vote_request(m)  # type: ignore[arg-type]
        elif self.role is LEADER:
            self._step_leader(m)
        elif self.role is FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # =========================================================================================
    # Ready / advance
    # =========================================================================================

    def has_ready(self) -> bool:
        if self._ready_out is not None:
            return False
        if self._pending_append:
            self._flush_appends()
        if self._msgs or self._msgs_after_persist:
            return True
        log = self.log
        # Reads RaftLog internals: this runs after every input, so it must be cheap.
        if log._unstable or log._snapshot is not None or log.committed > log.applied:
            return True
        prev = self._prev_hard
        if prev.term != self.term or prev.vote != self.vote or prev.commit != log.committed:
            return True
        soft = self._prev_soft
        return soft.leader_id != self.leader_id or soft.role is not self.role

    def ready(self) -> Ready:
        assert self._ready_out is None, "ready() twice without advance()"
        if self._pending_append:
            self._flush_appends()
        log = self.log
        prev = self._prev_hard
        hard: HardState | None = None
        if prev.term != self.term or prev.vote != self.vote or prev.commit != log.committed:
            hard = HardState(self.term, self.vote, log.committed)
        soft: SoftState | None = None
        if self._prev_soft.leader_id != self.leader_id or self._prev_soft.role is not self.role:
            soft = SoftState(self.leader_id, self.role)
        early = self._msgs
        after = self._msgs_after_persist
        if hard is not None and (hard.term != prev.term or hard.vote != prev.vote) and early:
            after = early + after  # the term/vote these messages carry is not yet durable
            early = []
        rd = Ready(
            hard_state=hard,
            soft_state=soft,
            snapshot=log.unstable_snapshot(),
            entries=log.unstable_entries(),
            committed_entries=log.next_committed(self.cfg.max_committed_bytes),
            messages=early,
            persisted_messages=after,
        )
        self._msgs = []
        self._msgs_after_persist = []
        self._ready_out = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The shell finished rd: persisted (fsynced), sent, applied."""
        assert rd is self._ready_out, "advance() with a Ready that is not the outstanding one"
        self._ready_out = None
        log = self.log
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        log.stable_to(rd.entries, rd.snapshot)
        if rd.snapshot is not None:
            log.applied_to(max(log.applied, rd.snapshot.index))
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].last_index)
        if rd.entries and self.role is LEADER:
            # Our own entries are durable only now: only now may they count for the quorum.
            pr = self._progress.get(self.id)
            if pr is not None:
                pr.maybe_update(rd.entries[-1].last_index)
                if self._maybe_commit():
                    self._bcast_append()

    # =========================================================================================
    # Roles
    # =========================================================================================

    def _reset(self, term: int) -> None:
        if term != self.term:
            assert term > self.term, "a term never goes back"
            self.term = term
            self.vote = None
        self.leader_id = None
        self.lead_transferee = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        self._progress = {}
        self._pending_append = {}
        self._uncommitted = deque()
        self._uncommitted_bytes = 0
        self._pending_config_index = -1

    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_ticks
        self._randomized_timeout = e + self._rng.randrange(e)

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        self._reset(term)
        self.role = FOLLOWER
        self.leader_id = leader

    def _become_pre_candidate(self) -> None:
        # Term and vote stay: a pre-election that fails leaves no trace.
        assert self.role is not LEADER
        self.role = PRE_CANDIDATE
        self.leader_id = None
        self._votes = {}
        self._election_elapsed = 0
        self._reset_randomized_timeout()

    def _become_candidate(self) -> None:
        assert self.role is not LEADER
        self._reset(self.term + 1)
        self.role = CANDIDATE
        self.vote = self.id

    def _become_leader(self) -> None:
        assert self.role is CANDIDATE, "only a candidate wins an election"
        self._reset(self.term)
        self.role = LEADER
        self.leader_id = self.id
        log = self.log
        last = log.last_index()
        cfg = self.cfg
        for nid in self.configuration.members:
            self._progress[nid] = Progress(
                match=-1, next=last + 1,
                max_inflight_msgs=cfg.max_inflight_msgs, max_inflight_bytes=cfg.max_inflight_bytes,
                is_learner=nid in self.configuration.learners,
            )
        me = self._progress.get(self.id)
        if me is not None:
            me.match = log.stable_last_index()
            me.become_replicate()
            me.next = last + 1
            me.recent_active = True
        noop = Entry(self.term, last + 1, last + 1, _NOOP, b"")
        # No configuration change until the NOOP (an entry of this term) commits.
        self._pending_config_index = noop.index
        self._append_leader([noop], 0)

    def _campaign(self, kind: int) -> None:
        if not self.promotable():
            return
        pre_vote = kind == _PRE_VOTE
        if pre_vote:
            self._become_pre_candidate()
            vote_term = self.term + 1
        else:
            self._become_candidate()
            vote_term = self.term
        self._votes[self.id] = True
        if self._tally() == 1:
            if pre_vote:
                self._campaign(_ELECTION)
            else:
                self._become_leader()
            return
        transfer = kind == _TRANSFER
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for v in self._voters:
            if v != self.id:
                self._send(RequestVote(
                    group_id=self.group_id, from_id=self.id, to_id=v, term=vote_term,
                    pre_vote=pre_vote, last_log_index=last_index, last_log_term=last_term,
                    transfer=transfer,
                ))

    def _tally(self) -> int:
        """1 won, -1 lost, 0 pending."""
        granted = rejected = 0
        for v in self._voters:
            r = self._votes.get(v)
            if r is True:
                granted += 1
            elif r is False:
                rejected += 1
        if granted >= self._quorum:
            return 1
        if rejected > len(self._voters) - self._quorum:
            return -1
        return 0

    # =========================================================================================
    # Ticks
    # =========================================================================================

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_timeout and self.promotable():
            self._election_elapsed = 0
            self._campaign(_PRE_VOTE if self.cfg.pre_vote else _ELECTION)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.cfg.election_ticks:
            self._election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                # Cut off from a quorum: stop accepting writes that cannot commit.
                self._become_follower(self.term, None)
                return
            if self.lead_transferee is not None:
                self.lead_transferee = None  # transfer took too long: abort, accept writes
            for nid, pr in self._progress.items():
                if pr.state is SNAPSHOT:
                    if pr.snapshot_stale:  # no answer for a whole timeout: the send was lost
                        pr.pending_snapshot = -1
                        pr.become_probe()
                        self._pending_append[nid] = False
                    else:
                        pr.snapshot_stale = True
        if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = 0
        for v in self._voters:
            pr = self._progress.get(v)
            if pr is not None and (pr.recent_active or v == self.id):
                active += 1
        for nid, pr in self._progress.items():
            if nid != self.id:
                pr.recent_active = False
        return active >= self._quorum

    # =========================================================================================
    # Votes
    # =========================================================================================

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.vote == m.from_id
            or (self.vote is None and self.leader_id is None)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            # Granting: reply in the candidate's term (for a pre-vote, the term it would use).
            self._send(RequestVoteResponse(
                group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=m.term,
                pre_vote=m.pre_vote, reject=False,
            ))
            if not m.pre_vote:
                assert m.term == self.term
                self._election_elapsed = 0
                self.vote = m.from_id
        else:
            self._send(RequestVoteResponse(
                group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=self.term,
                pre_vote=m.pre_vote, reject=True,
            ))

    def _step_candidate(self, m: Message) -> None:
        mtype = type(m)
        if mtype is RequestVoteResponse:
            if m.pre_vote != (self.role is PRE_CANDIDATE):  # type: ignore[attr-defined]
                return  # answer to the other kind of election
            self._votes.setdefault(m.from_id, not m.reject)  # type: ignore[attr-defined]
            result = self._tally()
            if result == 1:
                if self.role is PRE_CANDIDATE:
                    self._campaign(_ELECTION)  # the real election; no second pre-vote round
                else:
                    self._become_leader()
            elif result == -1:
                self._become_follower(self.term, None)
        elif mtype is AppendEntries or mtype is Heartbeat or mtype is InstallSnapshot:
            # A leader exists in our term (m.term == self.term): follow it.
            self._become_follower(m.term, m.from_id)
            self._step_follower(m)
        elif mtype is TimeoutNow:
            pass
        # Responses addressed to a former leader self are ignored.

    # =========================================================================================
    # Follower
    # =========================================================================================

    def _step_follower(self, m: Message) -> None:
        mtype = type(m)
        if mtype is AppendEntries:
            self._election_elapsed = 0
            self.leader_id = m.from_id
            self._handle_append(m)  # type: ignore[arg-type]
        elif mtype is Heartbeat:
            self._election_elapsed = 0
            self.leader_id = m.from_id
            commit = m.commit  # type: ignore[attr-defined]
            if commit > self.log.committed:
                self.log.commit_to(commit)
            self._send(HeartbeatResponse(
                group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=self.term))
        elif mtype is InstallSnapshot:
            self._election_elapsed = 0
            self.leader_id = m.from_id
            self._handle_snapshot(m)  # type: ignore[arg-type]
        elif mtype is TimeoutNow:
            self._campaign(_TRANSFER)
        # Vote responses from an election we gave up on, or acks for a past leadership: ignore.

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        if m.prev_log_index < log.committed:
            # Everything up to our commit already matches; tell the leader where we are.
            self._send(AppendEntriesResponse(
                group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=self.term,
                index=log.committed))
            return
        result = log.maybe_append(m.prev_log_index, m.prev_log_term, m.commit, m.entries)
        if result is not None:
            last_new, truncated = result
            if truncated != -2:
                self._truncate_configs(truncated)
            if m.entries:
                for e in m.entries:
                    if e.kind is _CONFIG and e.index > self._configs[-1][0]:
                        self._configs.append((e.index, Configuration.decode(e.data)))
                self._apply_configuration(self._configs[-1][1])
            self._send(AppendEntriesResponse(
                group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=self.term,
                index=last_new))
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.prev_log_index, log.last_index()), m.prev_log_term)
        self._send(AppendEntriesResponse(
            group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=self.term,
            index=m.prev_log_index, reject=True,
            reject_hint_index=hint_index, reject_hint_term=hint_term))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        snap = m.snapshot
        log = self.log
        if snap.index <= log.committed:
            ack = log.committed
        elif log.match_term(snap.index, snap.term):
            # We already hold the entries: just learn that they are committed.
            log.commit_to(snap.index)
            ack = log.committed
        else:
            log.restore(snap)
            self._configs = [(snap.index, snap.configuration)]
            self._apply_configuration(snap.configuration)
            ack = snap.index
        self._send(AppendEntriesResponse(
            group_id=self.group_id, from_id=self.id, to_id=m.from_id, term=self.term, index=ack))

    # =========================================================================================
    # Leader
    # =========================================================================================

    def _check_can_propose(self) -> None:
        assert self._ready_out is None, "propose between ready() and advance()"
        if self.role is not LEADER:
            raise NotLeaderError(self.leader_id, self.term)
        if self.lead_transferee is not None:
            raise ProposalDroppedError(f"leadership transfer to {self.lead_transferee} underway")

    def _append_leader(self, ents: list[Entry], nbytes: int) -> None:
        assert ents[0].index == self.log.last_index() + 1
        self.log.append(ents)
        if nbytes:
            self._uncommitted.append((ents[-1].last_index, nbytes))
            self._uncommitted_bytes += nbytes
        for e in ents:
            if e.kind is _CONFIG:
                self._configs.append((e.index, Configuration.decode(e.data)))
                self._apply_configuration(self._configs[-1][1])
        self._bcast_append(if_empty=False)

    def _bcast_append(self, if_empty: bool = True) -> None:
        pa = self._pending_append
        for nid in self._progress:
            if nid != self.id and not pa.get(nid, False):
                pa[nid] = if_empty

    def _bcast_heartbeat(self) -> None:
        commit = self.log.committed
        for nid, pr in self._progress.items():
            if nid != self.id:
                self._send(Heartbeat(
                    group_id=self.group_id, from_id=self.id, to_id=nid, term=self.term,
                    commit=min(pr.match, commit)))

    def _flush_appends(self) -> None:
        pending = self._pending_append
        self._pending_append = {}
        if self.role is not LEADER:
            return
        for nid, if_empty in pending.items():
            pr = self._progress.get(nid)
            if pr is None:
                continue
            # REPLICATE streams until the window is full; PROBE sends one message.
            while self._send_append(nid, pr, if_empty) and pr.state is REPLICATE:
                if_empty = False

    def _send_append(self, to: NodeId, pr: Progress, if_empty: bool) -> bool:
        """Send what ``to`` needs next. Returns True if an AppendEntries with entries went."""
        if pr.is_paused():
            return False
        log = self.log
        prev_index = pr.next - 1
        prev_term = log.term(prev_index)
        last = log.last_index()
        if prev_term is None:
            return self._send_snapshot(to, pr)
        ents: list[Entry] = []
        if pr.next <= last:
            try:
                ents = log.entries(pr.next, last + 1, self.cfg.max_msg_bytes)
            except CompactedError:
                return self._send_snapshot(to, pr)
        if not ents and not if_empty:
            return False
        self._send(AppendEntries(
            group_id=self.group_id, from_id=self.id, to_id=to, term=self.term,
            prev_log_index=prev_index, prev_log_term=prev_term, entries=ents,
            commit=log.committed))
        if ents:
            pr.sent_entries(ents[-1].last_index, sum(e.size for e in ents))
            return True
        if pr.state is PROBE:
            pr.probe_sent = True
        return False

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node that may be down
        snap = self.log.storage.snapshot()
        pr.become_snapshot(snap.index)
        self._send(InstallSnapshot(
            group_id=self.group_id, from_id=self.id, to_id=to, term=self.term, snapshot=snap))
        return False

    def _send_timeout_now(self, to: NodeId) -> None:
        self._send(TimeoutNow(group_id=self.group_id, from_id=self.id, to_id=to, term=self.term))

    def _maybe_commit(self) -> bool:
        """Advance commit to the highest offset durable on a quorum of voters, but only if it
        lies in an entry of the current term (Raft §5.4.2, Figure 8)."""
        voters = self._voters
        prs = self._progress
        if len(voters) == 1:
            pr = prs.get(voters[0])
            q = pr.match if pr is not None else -2
        else:
            matches = sorted([prs[v].match for v in voters], reverse=True)
            q = matches[self._quorum - 1]
        log = self.log
        if q <= log.committed or log.term(q) != self.term:
            return False
        log.commit_to(q)
        self._on_commit_advanced()
        return True

    def _on_commit_advanced(self) -> None:
        committed = self.log.committed
        unc = self._uncommitted
        while unc and unc[0][0] <= committed:
            self._uncommitted_bytes -= unc.popleft()[1]
        if self.id not in self.configuration.voters and self._configs[-1][0] <= committed:
            # Thesis §4.2.2: a leader removed from the configuration steps down once the
            # change commits; hand over to a caught-up voter to keep the gap short.
            last = self.log.last_index()
            for v in self._voters:
                pr = self._progress.get(v)
                if pr is not None and pr.match == last:
                    self._send_timeout_now(v)
                    break
            self._become_follower(self.term, None)

    def _step_leader(self, m: Message) -> None:
        mtype = type(m)
        if mtype is AppendEntriesResponse:
            self._handle_append_response(m)  # type: ignore[arg-type]
        elif mtype is HeartbeatResponse:
            pr = self._progress.get(m.from_id)
            if pr is None:
                return
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is REPLICATE and pr.inflight_full():
                pr.free_first_inflight()  # lets one message through if acks were lost
            if pr.match < self.log.last_index() or pr.state is PROBE:
                self._pending_append[m.from_id] = True
        elif mtype is AppendEntries or mtype is Heartbeat or mtype is InstallSnapshot:
            raise AssertionError(f"two leaders in term {self.term}: {self.id} and {m.from_id}")
        # Vote responses arriving after we won, TimeoutNow for an older transfer: ignore.

    def _handle_append_response(self, m: AppendEntriesResponse) -> None:
        pr = self._progress.get(m.from_id)
        if pr is None:
            return
        pr.recent_active = True
        log = self.log
        if m.reject:
            probe_at, _ = log.find_conflict_by_term(m.reject_hint_index, m.reject_hint_term)
            if pr.maybe_decr_to(m.index, probe_at):
                if pr.state is REPLICATE:
                    pr.become_probe()
                self._pending_append[m.from_id] = True
            return
        old_paused = pr.is_paused()
        updated = pr.maybe_update(m.index)
        if pr.state is PROBE:
            if m.index >= pr.next - 1 or updated:
                pr.become_replicate()
        elif pr.state is SNAPSHOT:
            if pr.match >= pr.pending_snapshot:
                pr.become_replicate()
        else:
            pr.free_inflights_to(m.index)
        if updated and self._maybe_commit():
            self._bcast_append()
        elif self.role is LEADER and (updated or old_paused):
            self._pending_append.setdefault(m.from_id, False)
        if (
            self.role is LEADER
            and m.from_id == self.lead_transferee
            and pr.match == log.last_index()
        ):
            self._send_timeout_now(m.from_id)

    # =========================================================================================
    # Configuration
    # =========================================================================================

    def _truncate_configs(self, from_index: int) -> None:
        """Entries at >= from_index were truncated: forget configurations they carried."""
        configs = self._configs
        while len(configs) > 1 and configs[-1][0] >= from_index:
            configs.pop()
        if configs[-1][1] != self.configuration:
            self._apply_configuration(configs[-1][1])

    def _apply_configuration(self, cfg: Configuration) -> None:
        if cfg == self.configuration:
            return
        self.configuration = cfg
        self._voters = tuple(sorted(cfg.voters))
        self._quorum = len(self._voters) // 2 + 1
        if self.role is not LEADER:
            return
        last = self.log.last_index()
        cfgs = self.cfg
        for nid in sorted(cfg.members):
            pr = self._progress.get(nid)
            if pr is None:
                self._progress[nid] = Progress(
                    match=-1, next=last + 1, max_inflight_msgs=cfgs.max_inflight_msgs,
                    max_inflight_bytes=cfgs.max_inflight_bytes, is_learner=nid in cfg.learners)
                self._pending_append[nid] = True
            else:
                pr.is_learner = nid in cfg.learners
        for nid in [n for n in self._progress if n not in cfg.members and n != self.id]:
            del self._progress[nid]
            self._pending_append.pop(nid, None)
        if self.lead_transferee is not None and self.lead_transferee not in cfg.voters:
            self.lead_transferee = None
        # A smaller quorum may already cover more of the log.
        if self._maybe_commit():
            self._bcast_append()

    # =========================================================================================
    # Output
    # =========================================================================================

    def _send(self, m: Message) -> None:
        if self.role is LEADER and m.LEADER_TRAFFIC:
            self._msgs.append(m)
        else:
            self._msgs_after_persist.append(m)

