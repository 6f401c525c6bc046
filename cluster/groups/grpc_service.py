"""The gRPC group API (`proto/rpc/groups_v1.proto`, service tidelog.v1.GroupService): thin mappings onto
the group coordinator core, with server-side assignment for tidelog members.

    add_group_service(grpc_server, service)     # before grpc_server.start()

GroupJoin is the Kafka JoinGroup + SyncGroup in one call: the member joins with `server_assignment=True`
(the coordinator runs the assignor) and the servicer syncs for it, answering with the member's partitions.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from cluster.broker.errors import BrokerError
from cluster.groups.service import CoordinatorUnavailable, GroupCoordinatorService
from consumer_groups import (
    ASSIGNORS,
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    ErrorCode,
    HeartbeatRequest,
    JoinGroupRequest,
    LeaveGroupRequest,
    ListGroupsRequest,
    MemberIdentity,
    OffsetCommitPartition,
    OffsetCommitRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
)
from consumer_groups.consumer_protocol import (
    ConsumerProtocolError,
    Subscription,
    decode_assignment,
    encode_subscription,
    flatten_topic_partitions,
    group_topic_partitions,
)
from proto.rpc import groups_v1_pb2 as pb
from proto.rpc import groups_v1_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_SESSION_TIMEOUT_MS = 10_000
DEFAULT_REBALANCE_TIMEOUT_MS = 30_000
MAX_TOPICS_PER_MEMBER = 10_000
_NONE = int(ErrorCode.NONE)


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"


def _message(code: int, what: str) -> str:
    return "" if code == _NONE else f"{what}: {_error_name(code)}"


def _guard(method):
    """A closed or overloaded coordinator is UNAVAILABLE; anything unexpected is logged and INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except CoordinatorUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"COORDINATOR_NOT_AVAILABLE: {exc}",
                                trailing_metadata=(("tidelog-error", "COORDINATOR_NOT_AVAILABLE"),))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"UNKNOWN_SERVER_ERROR: {type(exc).__name__}: {exc}",
                                trailing_metadata=(("tidelog-error", "UNKNOWN_SERVER_ERROR"),))

    return wrapper


def unknown_partitions(broker, pairs) -> set[tuple[str, int]]:
    """The (topic, partition) pairs the broker does not have (commits to them are refused)."""
    counts = {t.name: t.partition_count for t in broker.list_topics()}
    return {(t, p) for t, p in pairs if not 0 <= p < counts.get(t, 0)}


def _peer_host(context) -> str:
    peer = context.peer() or ""
    # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555"
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if rest else peer
    return "/" + host.strip("[]") if kind in ("ipv4", "ipv6") else host


class GroupServicer(pb_grpc.GroupServiceServicer):
    def __init__(self, service: GroupCoordinatorService, endpoint=None) -> None:
        self.service = service
        self.broker = service.broker
        # node id -> (host, gRPC port) of a live broker, or None (a standalone broker: only itself)
        self._endpoint = endpoint

    # -------------------------------------------------------------------------------------- routing

    @_guard
    async def FindCoordinator(self, request, context):
        if not request.group_id:
            return pb.FindCoordinatorResponse(error_code=int(ErrorCode.INVALID_GROUP_ID), node_id=-1,
                                              error_message="empty group id")
        error, node = self.service.locate(request.group_id)
        if error:
            return pb.FindCoordinatorResponse(error_code=error, node_id=-1,
                                              error_message=f"coordinator of {request.group_id}: "
                                                            f"{_error_name(error)}")
        address = self._endpoint(node) if self._endpoint is not None else None
        if address is None:
            if node != self.broker.node_id:
                return pb.FindCoordinatorResponse(
                    error_code=int(ErrorCode.COORDINATOR_NOT_AVAILABLE), node_id=-1,
                    error_message=f"the coordinator of {request.group_id} (broker {node}) has no known address")
            return pb.FindCoordinatorResponse(node_id=node)  # this broker: "" and 0
        return pb.FindCoordinatorResponse(node_id=node, host=address[0], grpc_port=address[1])

    # -------------------------------------------------------------------------------------- membership

    @_guard
    async def GroupJoin(self, request, context):
        if not request.group_id:
            return pb.GroupJoinResponse(error_code=int(ErrorCode.INVALID_GROUP_ID), error_message="empty group id")
        assignor = request.assignor or "range"
        if assignor not in ASSIGNORS:
            return pb.GroupJoinResponse(error_code=int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL),
                                        error_message=f"unknown assignor {assignor!r}; "
                                                      f"expected one of {', '.join(sorted(ASSIGNORS))}")
        topics = tuple(sorted(set(request.topics)))
        if not topics or len(topics) > MAX_TOPICS_PER_MEMBER:
            return pb.GroupJoinResponse(error_code=int(ErrorCode.INVALID_REQUEST),
                                        error_message="subscribe to at least one topic")
        self.service.refresh_partition_counts()
        owned = group_topic_partitions((tp.topic, tp.partition) for tp in request.owned_partitions)
        metadata = encode_subscription(Subscription(topics, None, owned,
                                                    request.generation_id if request.owned_partitions else -1), 2)
        instance = request.group_instance_id if request.HasField("group_instance_id") else None
        join = JoinGroupRequest(
            group_id=request.group_id, member_id=request.member_id, protocol_type="consumer",
            protocols=((assignor, metadata),),
            session_timeout_ms=request.session_timeout_ms or DEFAULT_SESSION_TIMEOUT_MS,
            rebalance_timeout_ms=request.rebalance_timeout_ms or DEFAULT_REBALANCE_TIMEOUT_MS,
            # A first join gets MEMBER_ID_REQUIRED with its id (as Kafka's JoinGroup v4+): the client knows who it
            # is before the coordinator holds its join, so it can leave if it closes meanwhile.
            group_instance_id=instance, require_known_member_id=instance is None, supports_skip_assignment=True,
            client_id=request.client_id, client_host=_peer_host(context), server_assignment=True)
        joined = await self.service.call(join)
        if joined.error != ErrorCode.NONE:
            return pb.GroupJoinResponse(error_code=int(joined.error), error_message=_message(joined.error, "join"),
                                        member_id=joined.member_id, generation_id=joined.generation_id)
        synced = await self.service.call(SyncGroupRequest(
            group_id=request.group_id, generation_id=joined.generation_id, member_id=joined.member_id,
            group_instance_id=instance, protocol_type=joined.protocol_type, protocol_name=joined.protocol_name,
            assignments=()))
        if synced.error != ErrorCode.NONE:
            return pb.GroupJoinResponse(error_code=int(synced.error), error_message=_message(synced.error, "sync"),
                                        member_id=joined.member_id, generation_id=joined.generation_id)
        partitions = _assigned(synced.assignment)
        return pb.GroupJoinResponse(
            member_id=joined.member_id, generation_id=joined.generation_id, leader_id=joined.leader,
            assignor=joined.protocol_name or "",
            assignment=[pb.GroupTopicPartition(topic=t, partition=p) for t, p in partitions])

    @_guard
    async def GroupHeartbeat(self, request, context):
        self.service.refresh_partition_counts()
        instance = request.group_instance_id if request.HasField("group_instance_id") else None
        answer = await self.service.call(HeartbeatRequest(request.group_id, request.generation_id,
                                                          request.member_id, instance))
        return pb.GroupHeartbeatResponse(error_code=int(answer.error), error_message=_message(answer.error,
                                                                                              "heartbeat"))

    @_guard
    async def GroupLeave(self, request, context):
        instance = request.group_instance_id if request.HasField("group_instance_id") else None
        answer = await self.service.call(LeaveGroupRequest(request.group_id,
                                                           (MemberIdentity(request.member_id, instance),)))
        error = answer.error
        if error == ErrorCode.NONE and answer.members:
            error = answer.members[0].error
        return pb.GroupLeaveResponse(error_code=int(error), error_message=_message(error, "leave"))

    # -------------------------------------------------------------------------------------- offsets

    @_guard
    async def GroupCommit(self, request, context):
        results, error = await commit_offsets(
            self.service, request.group_id,
            [(o.topic, o.partition, o.offset, o.metadata) for o in request.offsets],
            generation_id=request.generation_id, member_id=request.member_id,
            group_instance_id=request.group_instance_id if request.HasField("group_instance_id") else None)
        return pb.GroupCommitResponse(
            error_code=error, error_message=_message(error, "commit"),
            results=[pb.GroupPartitionResult(topic=t, partition=p, error_code=e) for t, p, e in results])

    @_guard
    async def GroupFetchOffsets(self, request, context):
        partitions = tuple((tp.topic, tp.partition) for tp in request.partitions) or None
        answer = await self.service.call(OffsetFetchRequest(request.group_id, partitions, request.require_stable))
        return pb.GroupFetchOffsetsResponse(
            error_code=int(answer.error), error_message=_message(answer.error, "fetch offsets"),
            offsets=[pb.GroupCommittedOffset(topic=p.topic, partition=p.partition, offset=p.offset,
                                             metadata=p.metadata or "", error_code=int(p.error))
                     for p in answer.partitions])

    # -------------------------------------------------------------------------------------- administration

    @_guard
    async def GroupList(self, request, context):
        answer = await self.service.call(ListGroupsRequest(tuple(request.states)))
        return pb.GroupListResponse(
            error_code=int(answer.error), error_message=_message(answer.error, "list groups"),
            groups=[pb.GroupSummary(group_id=g.group_id, protocol_type=g.protocol_type, state=g.state)
                    for g in answer.groups])

    @_guard
    async def GroupDescribe(self, request, context):
        group_id = request.group_id
        described = (await self.service.call(DescribeGroupsRequest((group_id,)))).groups[0]
        if described.error != ErrorCode.NONE:
            return pb.GroupDescribeResponse(error_code=int(described.error), group_id=group_id,
                                            error_message=_message(described.error, f"describe {group_id}"))
        fetched = await self.service.call(OffsetFetchRequest(group_id, None))
        if fetched.error != ErrorCode.NONE:
            return pb.GroupDescribeResponse(error_code=int(fetched.error), group_id=group_id,
                                            error_message=_message(fetched.error, f"offsets of {group_id}"))
        view = self.service.group_view(group_id)
        members = []
        owner: dict[tuple[str, int], object] = {}
        for m in described.members:
            assigned = _assigned(m.assignment) if described.protocol_type == "consumer" and m.assignment else []
            member = pb.GroupMemberDescription(
                member_id=m.member_id, client_id=m.client_id, client_host=m.client_host,
                assignment=[pb.GroupTopicPartition(topic=t, partition=p) for t, p in assigned])
            if m.group_instance_id is not None:
                member.group_instance_id = m.group_instance_id
            members.append(member)
            for tp in assigned:
                owner[tp] = m
        committed = {(p.topic, p.partition): p.offset for p in fetched.partitions if p.offset >= 0}
        rows = []
        for topic, partition in sorted(committed.keys() | owner.keys()):
            try:
                end = self.broker.partition(topic, partition).high_watermark
            except BrokerError:
                end = -1
            current = committed.get((topic, partition), -1)
            lag = max(0, end - current) if current >= 0 and end >= 0 else -1
            m = owner.get((topic, partition))
            rows.append(pb.GroupPartitionLag(
                topic=topic, partition=partition, current_offset=current, log_end_offset=end, lag=lag,
                member_id=getattr(m, "member_id", ""), client_id=getattr(m, "client_id", ""),
                client_host=getattr(m, "client_host", "")))
        return pb.GroupDescribeResponse(
            group_id=group_id, state=described.state, protocol_type=described.protocol_type,
            protocol=described.protocol_data, generation_id=view.generation_id if view is not None else -1,
            coordinator_id=self.broker.node_id, members=members, partitions=rows)

    @_guard
    async def GroupResetOffsets(self, request, context):
        group_id = request.group_id
        target = request.WhichOneof("target")
        if target is None:
            return _reset_error(ErrorCode.INVALID_REQUEST, "choose a target: earliest, latest, offset, "
                                                           "timestamp or shift")
        count = {t.name: t.partition_count for t in self.broker.list_topics()}.get(request.topic, 0)
        if not count:
            return _reset_error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {request.topic!r}")
        partitions = list(request.partitions) or list(range(count))
        bad = [p for p in partitions if not 0 <= p < count]
        if bad:
            return _reset_error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                f"topic {request.topic!r} has {count} partition(s); no partition {bad[0]}")
        described = (await self.service.call(DescribeGroupsRequest((group_id,)))).groups[0]
        if described.error != ErrorCode.NONE:
            return _reset_error(described.error, _message(described.error, f"describe {group_id}"))
        if described.state not in ("Empty", "Dead"):
            return _reset_error(ErrorCode.NON_EMPTY_GROUP,
                                f"group {group_id} is {described.state} with {len(described.members)} member(s): "
                                f"offsets can only be reset while the group is inactive (stop its consumers)")
        fetched = await self.service.call(OffsetFetchRequest(group_id, tuple((request.topic, p) for p in partitions)))
        if fetched.error != ErrorCode.NONE:
            return _reset_error(fetched.error, _message(fetched.error, f"offsets of {group_id}"))
        old = {p.partition: p.offset for p in fetched.partitions}
        changes = []
        for p in partitions:
            part = self.broker.partition(request.topic, p)
            start, end = part.log_start_offset, part.high_watermark
            current = old.get(p, -1)
            if target == "to_earliest":
                new = start
            elif target == "to_latest":
                new = end
            elif target == "to_offset":
                new = request.to_offset
            elif target == "to_timestamp_ms":
                found, _ = part.list_offset(request.to_timestamp_ms)
                new = found if found >= 0 else end
            else:
                new = (current if current >= 0 else start) + request.shift_by
            changes.append(pb.GroupOffsetChange(topic=request.topic, partition=p, old_offset=current,
                                                new_offset=min(max(new, start), end)))
        if not request.execute:
            return pb.GroupResetOffsetsResponse(changes=changes, executed=False)
        results, error = await commit_offsets(self.service, group_id, [
            (c.topic, c.partition, c.new_offset, "") for c in changes])
        return pb.GroupResetOffsetsResponse(error_code=error, error_message=_message(error, "reset offsets"),
                                            changes=changes, executed=error == _NONE)

    @_guard
    async def GroupDelete(self, request, context):
        result = (await self.service.call(DeleteGroupsRequest((request.group_id,)))).results[0]
        return pb.GroupDeleteResponse(error_code=int(result.error),
                                      error_message=_message(result.error, f"delete {request.group_id}"))


def _reset_error(code: int, message: str) -> pb.GroupResetOffsetsResponse:
    return pb.GroupResetOffsetsResponse(error_code=int(code), error_message=message)


def _assigned(assignment: bytes) -> list[tuple[str, int]]:
    if not assignment:
        return []
    try:
        return flatten_topic_partitions(decode_assignment(assignment)[1].partitions)
    except ConsumerProtocolError:
        return []


async def commit_offsets(service: GroupCoordinatorService, group_id: str, offsets, *, generation_id: int = -1,
                         member_id: str = "", group_instance_id: str | None = None,
                         ) -> tuple[list[tuple[str, int, int]], int]:
    """Commit (topic, partition, offset, metadata) tuples; partitions the broker does not have are refused
    with UNKNOWN_TOPIC_OR_PARTITION. -> ([(topic, partition, error)], first error or 0)."""
    unknown = unknown_partitions(service.broker, [(t, p) for t, p, _, _ in offsets])
    known = tuple(OffsetCommitPartition(t, p, o, -1, m or None) for t, p, o, m in offsets if (t, p) not in unknown)
    errors: dict[tuple[str, int], int] = {tp: int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) for tp in unknown}
    if known:
        answer = await service.call(OffsetCommitRequest(group_id, known, generation_id, member_id,
                                                        group_instance_id))
        for r in answer.partitions:
            errors[(r.topic, r.partition)] = int(r.error)
    results = [(t, p, errors.get((t, p), _NONE)) for t, p, _, _ in offsets]
    first = next((e for _, _, e in results if e != _NONE), _NONE)
    return results, first


def add_group_service(grpc_server, service: GroupCoordinatorService, *, endpoint=None) -> GroupServicer:
    """Register the GroupService on a `cluster.grpc_server.GrpcServer` (or a grpc.aio server) before it starts.
    `endpoint(node_id) -> (host, grpc_port) | None` tells FindCoordinator where the other brokers are."""
    server = getattr(grpc_server, "_server", grpc_server)
    servicer = GroupServicer(service, endpoint)
    pb_grpc.add_GroupServiceServicer_to_server(servicer, server)
    return servicer


__all__ = ["GroupServicer", "add_group_service", "commit_offsets", "unknown_partitions"]
