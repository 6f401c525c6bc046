"""Records exchanged by the Raft core: log entries, configurations, hard state, messages, Ready.

Index space: Raft indexes are Kafka offsets. An entry spans offsets ``[index, last_index]`` (a
RecordBatch of N records occupies N offsets); the next entry starts at ``last_index + 1``. An empty
log that starts at offset 0 has its snapshot point at index -1 with term 0. Real terms start at 1.

All records here are treated as immutable once handed over (messages may be delivered twice by a
transport; entries are shared between the unstable log, messages and Ready without copying), but
they are not ``frozen`` dataclasses because frozen construction is several times slower.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

NodeId = int
GroupId = str | int

# Estimated fixed cost of an entry on the wire/in memory, so tiny entries still count for
# byte-based limits (inflight window, uncommitted size).
ENTRY_OVERHEAD = 32


class EntryKind(enum.IntEnum):
    DATA = 0
    NOOP = 1  # appended by every new leader so it can commit entries of earlier terms
    CONFIG = 2  # data is an encoded Configuration (the full new configuration, not a delta)


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    last_index: int
    kind: EntryKind
    data: bytes | memoryview

    @property
    def count(self) -> int:
        return self.last_index - self.index + 1

    @property
    def size(self) -> int:
        return len(self.data) + ENTRY_OVERHEAD


@dataclass(slots=True, frozen=True)
class Configuration:
    """Group membership: voters decide elections and commits; learners only receive the log."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    def __post_init__(self) -> None:
        assert not (self.voters & self.learners), "a node is either a voter or a learner"

    @property
    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners

    def encode(self) -> bytes:
        voters = ",".join(map(str, sorted(self.voters)))
        learners = ",".join(map(str, sorted(self.learners)))
        return f"{voters};{learners}".encode()

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Configuration:
        voters, _, learners = bytes(data).decode().partition(";")
        return cls(
            frozenset(int(v) for v in voters.split(",") if v),
            frozenset(int(v) for v in learners.split(",") if v),
        )

    def apply(self, change: ConfChange) -> Configuration:
        """Return the configuration after ``change``; ValueError if the change makes no sense."""
        nid = change.node_id
        if change.op is ConfChangeOp.ADD_LEARNER:
            if nid in self.voters or nid in self.learners:
                raise ValueError(f"node {nid} is already a member")
            return Configuration(self.voters, self.learners | {nid})
        if change.op is ConfChangeOp.PROMOTE_LEARNER:
            if nid not in self.learners:
                raise ValueError(f"node {nid} is not a learner")
            return Configuration(self.voters | {nid}, self.learners - {nid})
        if change.op is ConfChangeOp.REMOVE_NODE:
            if nid in self.learners:
                return Configuration(self.voters, self.learners - {nid})
            if nid not in self.voters:
                raise ValueError(f"node {nid} is not a member")
            if len(self.voters) == 1:
                raise ValueError("cannot remove the last voter")
            return Configuration(self.voters - {nid}, self.learners)
        raise ValueError(f"unknown change {change.op!r}")


class ConfChangeOp(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE_LEARNER = "promote_learner"
    REMOVE_NODE = "remove_node"


@dataclass(slots=True, frozen=True)
class ConfChange:
    op: ConfChangeOp
    node_id: NodeId


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = -1


@dataclass(slots=True, frozen=True)
class Snapshot:
    """State up to and including ``index``: the log restarts at ``index + 1``.

    ``data`` is opaque application state; empty for partition logs, where installing the
    snapshot only means "your log now starts at index + 1".
    """

    index: int
    term: int
    configuration: Configuration
    data: bytes = b""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state worth telling the shell about when it changes (not persisted)."""

    leader_id: NodeId | None
    role: Role


# ---------------------------------------------------------------------------------------------
# Messages. Every message names its group so one transport stream can carry many groups.
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Message:
    group_id: GroupId
    from_id: NodeId
    to_id: NodeId
    term: int
    # Leader-originated replication traffic may leave before the leader's own persist completes
    # (see Ready.messages); everything else promises durable state.
    LEADER_TRAFFIC: ClassVar[bool] = False


@dataclass(slots=True, kw_only=True)
class RequestVote(Message):
    pre_vote: bool
    last_log_index: int
    last_log_term: int
    transfer: bool = False  # leadership transfer: bypasses the followers' leader lease


@dataclass(slots=True, kw_only=True)
class RequestVoteResponse(Message):
    pre_vote: bool
    reject: bool


@dataclass(slots=True, kw_only=True)
class AppendEntries(Message):
    prev_log_index: int  # last_index of the entry before entries[0]
    prev_log_term: int
    entries: list[Entry] = field(default_factory=list)
    commit: int
    LEADER_TRAFFIC: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class AppendEntriesResponse(Message):
    """Reply to AppendEntries and InstallSnapshot.

    Success: ``index`` is the highest index known to match the leader's log (durable).
    Reject: ``index`` is the rejected prev_log_index and the hint is the follower's best guess of
    the last matching (index, term): its largest entry boundary <= index with term <= the
    leader's prev_log_term.
    """

    index: int
    reject: bool = False
    reject_hint_index: int = -1
    reject_hint_term: int = 0


@dataclass(slots=True, kw_only=True)
class Heartbeat(Message):
    commit: int  # min(follower's match, leader commit): never beyond what the follower matched
    LEADER_TRAFFIC: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class HeartbeatResponse(Message):
    pass


@dataclass(slots=True, kw_only=True)
class InstallSnapshot(Message):
    snapshot: Snapshot
    LEADER_TRAFFIC: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class TimeoutNow(Message):
    """Leadership transfer: the recipient campaigns at once, skipping PreVote and the lease."""

    LEADER_TRAFFIC: ClassVar[bool] = True


@dataclass(slots=True)
class Ready:
    """Everything the shell must do, in this order (see cluster.raft.node docstring)."""

    hard_state: HardState | None  # None: unchanged since the last Ready
    soft_state: SoftState | None  # None: unchanged
    snapshot: Snapshot | None  # install (persist, restore state) before appending entries
    entries: list[Entry]  # append after truncating the stored log at entries[0].index
    committed_entries: list[Entry]  # apply in order, after the persist above is durable
    messages: list[Message]  # may be sent at once, in parallel with the persist
    persisted_messages: list[Message]  # send only after hard_state/entries/snapshot are durable

    @property
    def must_sync(self) -> bool:
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None


class ProposalError(Exception):
    """A proposal was not appended; nothing was written."""


class NotLeaderError(ProposalError):
    """Proposals go to the leader; ``leader_id`` (maybe None) is who this node believes it is."""

    def __init__(self, leader_id: NodeId | None, term: int) -> None:
        super().__init__(f"not the leader (leader: {leader_id}, term {term})")
        self.leader_id = leader_id
        self.term = term


class ProposalDroppedError(ProposalError):
    """The leader refused the proposal for now (transfer in progress, limits, pending change)."""
