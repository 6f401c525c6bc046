"""Consumer-group APIs: thin mappings between the codec's dict bodies and the group coordinator core.

FindCoordinator answers the leader of the group's `__consumer_offsets` partition; the others hand a
version-free request to the broker's group coordinator service (`cluster.groups.service_for(broker)`) in
arrival order and answer once the core does (a JoinGroup waits for its rebalance). Per-version flags the core
needs: `require_known_member_id` (JoinGroup v4+), `supports_skip_assignment` (v9+), `rebalance_timeout_ms=-1`
for v0, LeaveGroup v0-2's single member, OffsetFetch v8+'s groups split per group. Each answer carries the
error where that version's client looks for it (top level, per group, per partition). Commits to partitions
the broker does not have are refused with UNKNOWN_TOPIC_OR_PARTITION. Without a coordinator (none started next
to this broker) everything is COORDINATOR_NOT_AVAILABLE. DeleteGroups answers per group as the core does
(NOT_COORDINATOR where this broker does not coordinate it, GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP).
"""

from __future__ import annotations

import asyncio

from consumer_groups import (
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
    OffsetDeleteRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
)
from proto.kafka import ApiKey, RequestHeader

from .base import Handler, KafkaServices

_NA = int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
_UNKNOWN_TP = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
_NO_COORDINATOR = "the group coordinator is not available on this broker"
_GROUP_KEY, _TXN_KEY = 0, 1
_INVALID_REQUEST = int(ErrorCode.INVALID_REQUEST)


def _service(svc: KafkaServices):
    groups = svc.groups
    if groups is not None:
        return None if groups.closed else groups
    from cluster.groups.service import service_for

    found = service_for(svc.broker)
    return None if found is None or found.closed else found


async def _answer(future: asyncio.Future, build, unavailable):
    from cluster.groups.service import CoordinatorUnavailable

    try:
        body = await future
    except CoordinatorUnavailable:
        return unavailable()
    return build(body)


def _submit(svc: KafkaServices, request, build, unavailable):
    """Hand `request` to the core now (arrival order), answer `build(core response)` when it is ready."""
    groups = _service(svc)
    if groups is None:
        return unavailable()
    return _answer(groups.submit(request), build, unavailable)


# ----------------------------------------------------------------------------------------- FindCoordinator

def _locate(svc: KafkaServices, key: str, key_type: int) -> dict:
    if key_type == _TXN_KEY:
        return {"error_code": _INVALID_REQUEST, "node_id": -1, "host": "", "port": -1,
                "error_message": "tidelog has no transaction coordinator: transactions are not supported"}
    if key_type != _GROUP_KEY:
        return {"error_code": _INVALID_REQUEST, "node_id": -1, "host": "", "port": -1,
                "error_message": f"unknown coordinator key type {key_type}"}
    groups = _service(svc)
    if groups is None:
        return {"error_code": _NA, "node_id": -1, "host": "", "port": -1, "error_message": _NO_COORDINATOR}
    if not key:
        return {"error_code": int(ErrorCode.INVALID_GROUP_ID), "node_id": -1, "host": "", "port": -1,
                "error_message": "the group id is empty"}
    error, node_id = groups.locate(key)
    if error:
        return {"error_code": error, "node_id": -1, "host": "", "port": -1, "error_message": ErrorCode(error).name}
    endpoint = svc.cluster.endpoint(node_id)
    if endpoint is None:
        return {"error_code": _NA, "node_id": -1, "host": "", "port": -1,
                "error_message": f"the coordinator (node {node_id}) has no known endpoint"}
    return {"error_code": 0, "node_id": endpoint.node_id, "host": endpoint.host, "port": endpoint.port,
            "error_message": None}


def find_coordinator(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    key_type = body.get("key_type", 0)
    if header.api_version >= 4:
        return {"throttle_time_ms": 0, "coordinators": [
            {"key": key, **_locate(svc, key, key_type)} for key in body["coordinator_keys"]]}
    return {"throttle_time_ms": 0, **_locate(svc, body["key"], key_type)}


# ----------------------------------------------------------------------------------------- membership

def join_group(svc: KafkaServices, header: RequestHeader, body: dict):
    version = header.api_version
    request = JoinGroupRequest(
        group_id=body["group_id"], member_id=body["member_id"], protocol_type=body["protocol_type"],
        protocols=tuple((p["name"], bytes(p["metadata"] or b"")) for p in body["protocols"]),
        session_timeout_ms=body["session_timeout_ms"],
        rebalance_timeout_ms=body["rebalance_timeout_ms"] if version >= 1 else -1,
        group_instance_id=body.get("group_instance_id"), require_known_member_id=version >= 4,
        supports_skip_assignment=version >= 9, client_id=header.client_id or "", client_host=svc.client_host)

    def build(r) -> dict:
        return {"throttle_time_ms": 0, "error_code": int(r.error), "generation_id": r.generation_id,
                "protocol_type": r.protocol_type,
                "protocol_name": r.protocol_name if version >= 7 else (r.protocol_name or ""),
                "leader": r.leader, "skip_assignment": r.skip_assignment, "member_id": r.member_id,
                "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                             "metadata": m.metadata} for m in r.members]}

    def unavailable() -> dict:
        return {"throttle_time_ms": 0, "error_code": _NA, "generation_id": -1,
                "protocol_name": None if version >= 7 else "", "leader": "", "member_id": body["member_id"],
                "members": []}

    return _submit(svc, request, build, unavailable)


def sync_group(svc: KafkaServices, header: RequestHeader, body: dict):
    request = SyncGroupRequest(
        group_id=body["group_id"], generation_id=body["generation_id"], member_id=body["member_id"],
        group_instance_id=body.get("group_instance_id"), protocol_type=body.get("protocol_type"),
        protocol_name=body.get("protocol_name"),
        assignments=tuple((a["member_id"], bytes(a["assignment"] or b"")) for a in body["assignments"]))

    def build(r) -> dict:
        return {"throttle_time_ms": 0, "error_code": int(r.error), "protocol_type": r.protocol_type,
                "protocol_name": r.protocol_name, "assignment": r.assignment}

    return _submit(svc, request, build, lambda: {"throttle_time_ms": 0, "error_code": _NA, "assignment": b""})


def heartbeat(svc: KafkaServices, header: RequestHeader, body: dict):
    request = HeartbeatRequest(body["group_id"], body["generation_id"], body["member_id"],
                               body.get("group_instance_id"))
    return _submit(svc, request, lambda r: {"throttle_time_ms": 0, "error_code": int(r.error)},
                   lambda: {"throttle_time_ms": 0, "error_code": _NA})


def leave_group(svc: KafkaServices, header: RequestHeader, body: dict):
    version = header.api_version
    if version <= 2:
        members = (MemberIdentity(body["member_id"]),)
    else:
        members = tuple(MemberIdentity(m["member_id"], m.get("group_instance_id")) for m in body["members"])
    request = LeaveGroupRequest(body["group_id"], members)

    def build(r) -> dict:
        error = r.error
        if version <= 2 and error == ErrorCode.NONE and r.members:
            error = r.members[0].error
        return {"throttle_time_ms": 0, "error_code": int(error), "members": [
            {"member_id": m.member_id, "group_instance_id": m.group_instance_id, "error_code": int(m.error)}
            for m in r.members]}

    return _submit(svc, request, build, lambda: {"throttle_time_ms": 0, "error_code": _NA, "members": []})


# ----------------------------------------------------------------------------------------- offsets

def offset_commit(svc: KafkaServices, header: RequestHeader, body: dict):
    version = header.api_version
    if _service(svc) is None:  # no coordinator here: every partition says so (clients rediscover it)
        return {"throttle_time_ms": 0, "topics": [
            {"name": t["name"], "partitions": [{"partition_index": p["partition_index"], "error_code": _NA}
                                               for p in t["partitions"]]} for t in body["topics"]]}
    cluster = svc.cluster
    unknown: set[tuple[str, int]] = set()
    partitions = []
    for t in body["topics"]:
        name = t["name"]
        for p in t["partitions"]:
            index = p["partition_index"]
            if cluster.placement(name, index) is None:
                unknown.add((name, index))
                continue
            partitions.append(OffsetCommitPartition(
                name, index, p["committed_offset"], p.get("committed_leader_epoch", -1),
                p.get("committed_metadata"), p.get("commit_timestamp", -1) if version == 1 else -1))

    def respond(errors: dict[tuple[str, int], int]) -> dict:
        return {"throttle_time_ms": 0, "topics": [
            {"name": t["name"], "partitions": [
                {"partition_index": p["partition_index"],
                 "error_code": errors.get((t["name"], p["partition_index"]), 0)} for p in t["partitions"]]}
            for t in body["topics"]]}

    base = {tp: _UNKNOWN_TP for tp in unknown}
    if not partitions:
        return respond(base)
    request = OffsetCommitRequest(
        group_id=body["group_id"], partitions=tuple(partitions),
        generation_id=body.get("generation_id_or_member_epoch", -1) if version >= 1 else -1,
        member_id=body.get("member_id", "") if version >= 1 else "",
        group_instance_id=body.get("group_instance_id"),
        retention_time_ms=body.get("retention_time_ms", -1) if 2 <= version <= 4 else -1)

    def build(r) -> dict:
        errors = dict(base)
        errors.update({(p.topic, p.partition): int(p.error) for p in r.partitions})
        return respond(errors)

    def unavailable() -> dict:
        errors = {(p.topic, p.partition): _NA for p in partitions}
        errors.update(base)
        return respond(errors)

    return _submit(svc, request, build, unavailable)


def _fetch_topics(partitions, version: int) -> list[dict]:
    """Core OffsetFetchPartitions grouped by topic, in the core's order."""
    topics: dict[str, list[dict]] = {}
    for p in partitions:
        topics.setdefault(p.topic, []).append({
            "partition_index": p.partition, "committed_offset": p.offset, "committed_leader_epoch": p.leader_epoch,
            "metadata": p.metadata, "error_code": int(p.error)})
    return [{"name": name, "partitions": parts} for name, parts in topics.items()]


def _requested(topics) -> tuple[tuple[str, int], ...] | None:
    if topics is None:
        return None
    return tuple((t["name"], i) for t in topics for i in t["partition_indexes"])


def offset_fetch(svc: KafkaServices, header: RequestHeader, body: dict):
    version = header.api_version
    groups = _service(svc)
    if version >= 8:
        return _offset_fetch_groups(svc, groups, body)
    requested = _requested(body["topics"])
    request = OffsetFetchRequest(body["group_id"], requested, bool(body.get("require_stable", False)))

    def failed(error: int) -> dict:
        topics = []
        if version < 2:  # no top-level error before v2: per partition
            topics = [{"name": t["name"], "partitions": [
                {"partition_index": i, "committed_offset": -1, "metadata": "", "error_code": error}
                for i in t["partition_indexes"]]} for t in body["topics"] or ()]
        return {"throttle_time_ms": 0, "topics": topics, "error_code": error}

    def build(r) -> dict:
        if r.error != ErrorCode.NONE:
            return failed(int(r.error))
        return {"throttle_time_ms": 0, "topics": _fetch_topics(r.partitions, version), "error_code": 0}

    if groups is None:
        return failed(_NA)
    return _answer(groups.submit(request), build, lambda: failed(_NA))


def _offset_fetch_groups(svc: KafkaServices, groups, body: dict):
    require_stable = bool(body.get("require_stable", False))

    def group_failed(group_id: str, error: int) -> dict:
        return {"group_id": group_id, "topics": [], "error_code": error}

    if groups is None:
        return {"throttle_time_ms": 0, "groups": [group_failed(g["group_id"], _NA) for g in body["groups"]]}
    futures = [groups.submit(OffsetFetchRequest(g["group_id"], _requested(g["topics"]), require_stable))
               for g in body["groups"]]

    async def gather() -> dict:
        from cluster.groups.service import CoordinatorUnavailable

        out = []
        for g, future in zip(body["groups"], futures):
            try:
                r = await future
            except CoordinatorUnavailable:
                out.append(group_failed(g["group_id"], _NA))
                continue
            if r.error != ErrorCode.NONE:
                out.append(group_failed(g["group_id"], int(r.error)))
            else:
                out.append({"group_id": g["group_id"], "topics": _fetch_topics(r.partitions, 8), "error_code": 0})
        return {"throttle_time_ms": 0, "groups": out}

    return gather()


def offset_delete(svc: KafkaServices, header: RequestHeader, body: dict):
    request = OffsetDeleteRequest(body["group_id"], tuple(
        (t["name"], p["partition_index"]) for t in body["topics"] for p in t["partitions"]))

    def build(r) -> dict:
        topics: dict[str, list[dict]] = {}
        for p in r.partitions:
            topics.setdefault(p.topic, []).append({"partition_index": p.partition, "error_code": int(p.error)})
        return {"error_code": int(r.error), "throttle_time_ms": 0,
                "topics": [{"name": n, "partitions": ps} for n, ps in topics.items()]}

    return _submit(svc, request, build, lambda: {"error_code": _NA, "throttle_time_ms": 0, "topics": []})


# ----------------------------------------------------------------------------------------- administration

def list_groups(svc: KafkaServices, header: RequestHeader, body: dict):
    request = ListGroupsRequest(tuple(body.get("states_filter") or ()))

    def build(r) -> dict:
        return {"throttle_time_ms": 0, "error_code": int(r.error), "groups": [
            {"group_id": g.group_id, "protocol_type": g.protocol_type, "group_state": g.state,
             "group_type": "classic"} for g in r.groups]}

    return _submit(svc, request, build, lambda: {"throttle_time_ms": 0, "error_code": _NA, "groups": []})


def describe_groups(svc: KafkaServices, header: RequestHeader, body: dict):
    request = DescribeGroupsRequest(tuple(body["groups"]))

    def build(r) -> dict:
        return {"throttle_time_ms": 0, "groups": [
            {"error_code": int(g.error), "group_id": g.group_id, "group_state": g.state,
             "protocol_type": g.protocol_type, "protocol_data": g.protocol_data, "members": [
                 {"member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
                  "client_host": m.client_host, "member_metadata": m.metadata,
                  "member_assignment": m.assignment} for m in g.members]}
            for g in r.groups]}

    def unavailable() -> dict:
        return {"throttle_time_ms": 0, "groups": [
            {"error_code": _NA, "group_id": g, "group_state": "", "protocol_type": "", "protocol_data": "",
             "members": []} for g in body["groups"]]}

    return _submit(svc, request, build, unavailable)


def delete_groups(svc: KafkaServices, header: RequestHeader, body: dict):
    names = body["groups_names"]
    if not names:
        return {"throttle_time_ms": 0, "results": []}
    request = DeleteGroupsRequest(tuple(names))

    def build(r) -> dict:
        # The core answers each distinct group once; a name asked twice gets the same answer twice.
        errors = {g.group_id: int(g.error) for g in r.results}
        return {"throttle_time_ms": 0, "results": [
            {"group_id": g, "error_code": errors.get(g, _NA)} for g in dict.fromkeys(names)]}

    return _submit(svc, request, build, lambda: {"throttle_time_ms": 0, "results": [
        {"group_id": g, "error_code": _NA} for g in dict.fromkeys(names)]})

HANDLERS = [
    Handler(ApiKey.FIND_COORDINATOR, 0, 6, find_coordinator),
    Handler(ApiKey.JOIN_GROUP, 0, 9, join_group),
    Handler(ApiKey.HEARTBEAT, 0, 4, heartbeat),
    Handler(ApiKey.LEAVE_GROUP, 0, 5, leave_group),
    Handler(ApiKey.SYNC_GROUP, 0, 5, sync_group),
    Handler(ApiKey.DESCRIBE_GROUPS, 0, 5, describe_groups),
    Handler(ApiKey.LIST_GROUPS, 0, 5, list_groups),
    Handler(ApiKey.DELETE_GROUPS, 0, 2, delete_groups),
    Handler(ApiKey.OFFSET_COMMIT, 0, 9, offset_commit),
    Handler(ApiKey.OFFSET_FETCH, 0, 9, offset_fetch),
    Handler(ApiKey.OFFSET_DELETE, 0, 0, offset_delete),
]
