"""Raft consensus core (sans-I/O), its in-memory storage and the deterministic simulator.

Public API: RaftNode (node.py, module docstring = the driving contract), RaftConfig, the
records in types.py, the Storage protocol and MemoryStorage (storage.py). The simulator lives in
cluster.raft.sim (``python -m cluster.raft.sim --help``).
"""

from .node import FollowerStatus, RaftConfig, RaftNode, Status
from .progress import ProgressState
from .storage import CompactedError, MemoryStorage, Storage, StorageError
from .types import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
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
    ProposalError,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
    SoftState,
    TimeoutNow,
)

__all__ = [
    "AppendEntries", "AppendEntriesResponse", "CompactedError", "ConfChange", "ConfChangeOp",
    "Configuration", "Entry", "EntryKind", "FollowerStatus", "GroupId", "HardState", "Heartbeat",
    "HeartbeatResponse", "InstallSnapshot", "MemoryStorage", "Message", "NodeId",
    "NotLeaderError", "ProgressState", "ProposalDroppedError", "ProposalError", "RaftConfig",
    "RaftNode", "Ready", "RequestVote", "RequestVoteResponse", "Role", "Snapshot", "SoftState",
    "Status", "Storage", "StorageError", "TimeoutNow",
]
