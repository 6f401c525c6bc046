"""Consumer-group APIs: answered COORDINATOR_NOT_AVAILABLE until the group coordinator is wired in.

Each answer carries the error where the client looks for it for that version (top level, per group, per
partition), so clients retry their coordinator lookup cleanly instead of failing to parse. Consumers that
assign partitions themselves (assign + seek) never need these.
"""

from __future__ import annotations

from proto.kafka import ApiKey, ErrorCode, RequestHeader

from .base import Handler, KafkaServices

_NA = int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
_MESSAGE = "the group coordinator is not available on this broker yet"


def find_coordinator(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    if header.api_version >= 4:
        return {"throttle_time_ms": 0, "coordinators": [
            {"key": key, "node_id": -1, "host": "", "port": -1, "error_code": _NA, "error_message": _MESSAGE}
            for key in body["coordinator_keys"]]}
    return {"throttle_time_ms": 0, "error_code": _NA, "error_message": _MESSAGE, "node_id": -1, "host": "",
            "port": -1}


def join_group(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    return {"throttle_time_ms": 0, "error_code": _NA, "generation_id": -1, "protocol_name": None
            if header.api_version >= 7 else "", "leader": "", "member_id": body["member_id"], "members": []}


def _top_level(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    """Heartbeat, SyncGroup, LeaveGroup, ListGroups: one top-level error code."""
    return {"throttle_time_ms": 0, "error_code": _NA, "assignment": b"", "members": [], "groups": []}


def offset_commit(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    return {"throttle_time_ms": 0, "topics": [
        {"name": t["name"], "partitions": [{"partition_index": p["partition_index"], "error_code": _NA}
                                           for p in t["partitions"]]}
        for t in body["topics"]]}


def offset_fetch(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    version = header.api_version
    if version >= 8:
        return {"throttle_time_ms": 0, "groups": [
            {"group_id": g["group_id"], "topics": [], "error_code": _NA} for g in body["groups"]]}
    topics = []
    if version < 2:  # no top-level error before v2: per partition
        topics = [{"name": t["name"], "partitions": [
            {"partition_index": i, "committed_offset": -1, "metadata": "", "error_code": _NA}
            for i in t["partition_indexes"]]} for t in body["topics"] or ()]
    return {"throttle_time_ms": 0, "topics": topics, "error_code": _NA}


def describe_groups(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    return {"throttle_time_ms": 0, "groups": [
        {"error_code": _NA, "group_id": g, "group_state": "", "protocol_type": "", "protocol_data": "",
         "members": []} for g in body["groups"]]}


def offset_delete(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    return {"error_code": _NA, "throttle_time_ms": 0, "topics": []}


HANDLERS = [
    Handler(ApiKey.FIND_COORDINATOR, 0, 6, find_coordinator),
    Handler(ApiKey.JOIN_GROUP, 0, 9, join_group),
    Handler(ApiKey.HEARTBEAT, 0, 4, _top_level),
    Handler(ApiKey.LEAVE_GROUP, 0, 5, _top_level),
    Handler(ApiKey.SYNC_GROUP, 0, 5, _top_level),
    Handler(ApiKey.DESCRIBE_GROUPS, 0, 5, describe_groups),
    Handler(ApiKey.LIST_GROUPS, 0, 5, _top_level),
    Handler(ApiKey.OFFSET_COMMIT, 0, 9, offset_commit),
    Handler(ApiKey.OFFSET_FETCH, 0, 9, offset_fetch),
    Handler(ApiKey.OFFSET_DELETE, 0, 0, offset_delete),
]
