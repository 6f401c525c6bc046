"""Inputs and outputs of the group coordinator core.

Requests and responses are version-free: the front door (Kafka codec or gRPC) fills a request from any
wire version and writes the response back in the client's version. Outputs are either a `Response` for a
request handle (possibly a handle other than the current input's: deferred answers) or a `Persist` of
records the shell must append to `__consumer_offsets` and then confirm with `persisted(write_id, ...)`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from consumer_groups.errors import ErrorCode
from consumer_groups.records import Record

Handle = Hashable  # opaque request id chosen by the shell; each handle gets exactly one Response
TopicPartition = tuple[str, int]


# --- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinGroupRequest:
    group_id: str
    member_id: str  # "" for a first join
    protocol_type: str  # "consumer" for Kafka consumers
    protocols: tuple[tuple[str, bytes], ...]  # (assignor name, metadata), in the member's preference order
    session_timeout_ms: int
    rebalance_timeout_ms: int = -1  # -1 (JoinGroup v0): the session timeout
    group_instance_id: str | None = None  # static membership (v5+)
    require_known_member_id: bool = False  # v4+: a first join gets MEMBER_ID_REQUIRED and an id
    supports_skip_assignment: bool = False  # v9+ (KIP-814)
    client_id: str = ""
    client_host: str = ""
    # tidelog gRPC members: the coordinator runs the named assignor when every member asks for this.
    server_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncGroupRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None
    protocol_type: str | None = None  # v5+; checked when present
    protocol_name: str | None = None  # v5+; checked when present
    assignments: tuple[tuple[str, bytes], ...] = ()  # leader only: (member id, assignment bytes)


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class MemberIdentity:
    member_id: str  # "" with a group_instance_id: remove that static member (admin tools)
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveGroupRequest:
    group_id: str
    members: tuple[MemberIdentity, ...]  # v0-2 carry exactly one


@dataclass(frozen=True, slots=True)
class OffsetCommitPartition:
    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = None
    commit_timestamp_ms: int = -1  # v1 only; -1 = the coordinator's clock


@dataclass(frozen=True, slots=True)
class OffsetCommitRequest:
    group_id: str
    partitions: tuple[OffsetCommitPartition, ...]
    generation_id: int = -1  # -1 with member_id "": a "simple" commit, allowed while the group has no members
    member_id: str = ""
    group_instance_id: str | None = None
    retention_time_ms: int = -1  # v2-4 only; -1 = the broker's offsets retention rule


@dataclass(frozen=True, slots=True)
class OffsetFetchRequest:
    group_id: str
    partitions: tuple[TopicPartition, ...] | None = None  # None = every committed partition (v2+)
    require_stable: bool = False  # v7+


@dataclass(frozen=True, slots=True)
class OffsetDeleteRequest:
    group_id: str
    partitions: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class ListGroupsRequest:
    states_filter: tuple[str, ...] = ()  # state names, case-insensitive; empty = all


@dataclass(frozen=True, slots=True)
class DescribeGroupsRequest:
    group_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeleteGroupsRequest:
    group_ids: tuple[str, ...]


Request = (
    JoinGroupRequest
    | SyncGroupRequest
    | HeartbeatRequest
    | LeaveGroupRequest
    | OffsetCommitRequest
    | OffsetFetchRequest
    | OffsetDeleteRequest
    | ListGroupsRequest
    | DescribeGroupsRequest
    | DeleteGroupsRequest
)


# --- responses -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinGroupMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinGroupResponse:
    error: ErrorCode
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    skip_assignment: bool = False
    member_id: str = ""
    members: tuple[JoinGroupMember, ...] = ()  # the leader's copy only


@dataclass(frozen=True, slots=True)
class SyncGroupResponse:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    error: ErrorCode


@dataclass(frozen=True, slots=True)
class LeaveMemberResponse:
    member_id: str
    group_instance_id: str | None
    error: ErrorCode


@dataclass(frozen=True, slots=True)
class LeaveGroupResponse:
    error: ErrorCode  # group-level; v0-2 front doors report members[0].error when this is NONE
    members: tuple[LeaveMemberResponse, ...] = ()


@dataclass(frozen=True, slots=True)
class PartitionError:
    topic: str
    partition: int
    error: ErrorCode


@dataclass(frozen=True, slots=True)
class OffsetCommitResponse:
    partitions: tuple[PartitionError, ...]


@dataclass(frozen=True, slots=True)
class OffsetFetchPartition:
    topic: str
    partition: int
    offset: int  # -1 = nothing committed
    leader_epoch: int
    metadata: str
    error: ErrorCode


@dataclass(frozen=True, slots=True)
class OffsetFetchResponse:
    error: ErrorCode
    partitions: tuple[OffsetFetchPartition, ...] = ()


@dataclass(frozen=True, slots=True)
class OffsetDeleteResponse:
    error: ErrorCode
    partitions: tuple[PartitionError, ...] = ()


@dataclass(frozen=True, slots=True)
class ListedGroup:
    group_id: str
    protocol_type: str
    state: str


@dataclass(frozen=True, slots=True)
class ListGroupsResponse:
    error: ErrorCode
    groups: tuple[ListedGroup, ...] = ()


@dataclass(frozen=True, slots=True)
class DescribedMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes  # Stable groups only, as Kafka
    assignment: bytes  # Stable groups only, as Kafka


@dataclass(frozen=True, slots=True)
class DescribedGroup:
    error: ErrorCode
    group_id: str
    state: str
    protocol_type: str
    protocol_data: str  # the selected protocol, Stable groups only
    members: tuple[DescribedMember, ...] = ()


@dataclass(frozen=True, slots=True)
class DescribeGroupsResponse:
    groups: tuple[DescribedGroup, ...]


@dataclass(frozen=True, slots=True)
class DeleteGroupResult:
    group_id: str
    error: ErrorCode


@dataclass(frozen=True, slots=True)
class DeleteGroupsResponse:
    results: tuple[DeleteGroupResult, ...]


ResponseBody = (
    JoinGroupResponse
    | SyncGroupResponse
    | HeartbeatResponse
    | LeaveGroupResponse
    | OffsetCommitResponse
    | OffsetFetchResponse
    | OffsetDeleteResponse
    | ListGroupsResponse
    | DescribeGroupsResponse
    | DeleteGroupsResponse
)


# --- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """Send `body` as the answer to the request the shell registered under `handle`."""

    handle: Handle
    body: ResponseBody


@dataclass(frozen=True, slots=True)
class Persist:
    """Append `records` to `__consumer_offsets` partition `partition` as one atomic batch, in emission
    order relative to other Persists of that partition, then call `persisted(write_id, now_ms, error)`."""

    write_id: int
    partition: int
    records: tuple[Record, ...]


Output = Response | Persist


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed_offset: int | None  # None = nothing committed
    log_end_offset: int
    lag: int | None  # log end - committed (never negative); None when nothing is committed


__all__ = [
    "Handle",
    "TopicPartition",
    "Request",
    "ResponseBody",
    "Output",
    "Response",
    "Persist",
    "PartitionLag",
    "JoinGroupRequest",
    "SyncGroupRequest",
    "HeartbeatRequest",
    "MemberIdentity",
    "LeaveGroupRequest",
    "OffsetCommitPartition",
    "OffsetCommitRequest",
    "OffsetFetchRequest",
    "OffsetDeleteRequest",
    "ListGroupsRequest",
    "DescribeGroupsRequest",
    "DeleteGroupsRequest",
    "JoinGroupMember",
    "JoinGroupResponse",
    "SyncGroupResponse",
    "HeartbeatResponse",
    "LeaveMemberResponse",
    "LeaveGroupResponse",
    "PartitionError",
    "OffsetCommitResponse",
    "OffsetFetchPartition",
    "OffsetFetchResponse",
    "OffsetDeleteResponse",
    "ListedGroup",
    "ListGroupsResponse",
    "DescribedMember",
    "DescribedGroup",
    "DescribeGroupsResponse",
    "DeleteGroupResult",
    "DeleteGroupsResponse",
]
