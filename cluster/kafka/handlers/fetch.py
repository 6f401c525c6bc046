"""Fetch (key 1), all versions: stored batches returned as they are (whole batches from the one holding the
fetch offset), long-poll on max_wait_ms/min_bytes by the broker core.

Fetch sessions (KIP-227) are declined by answering session_id 0: clients keep sending full fetches.
Topics are named by id from v13. A fetch with replica_id >= 0 is a follower's; tidelog's followers
replicate through Raft, so a client posing as a replica is refused (CLUSTER_AUTHORIZATION_FAILED, what Kafka
answers a principal without ClusterAction) and sees nothing past the high watermark.
v0-3 get the stored RecordBatch v2 bytes (no down-conversion to message format v0/v1).
"""

from __future__ import annotations

from cluster.broker.errors import BrokerError
from cluster.broker.types import FetchPartition
from cluster.kafka.cluster_view import ZERO_UUID
from cluster.kafka.errors import code_of
from proto.kafka import ApiKey, ErrorCode, RequestHeader

from .base import Handler, KafkaServices

_NONE = 0
_READ_COMMITTED = 1
_FINAL_EPOCH = -1


def _partition_entry(index: int, code: int, isolation: int) -> dict:
    return {"partition_index": index, "error_code": code, "high_watermark": -1, "last_stable_offset": -1,
            "log_start_offset": -1, "aborted_transactions": [] if isolation == _READ_COMMITTED else None,
            "preferred_read_replica": -1, "records": b""}


def _refuse_all(topics: list, code: int) -> dict:
    out = []
    for t in topics:
        out.append({"topic": t.get("topic", ""), "topic_id": t.get("topic_id", ZERO_UUID), "partitions": [
            _partition_entry(p["partition"], code, 0) for p in t["partitions"]]})
    return {"throttle_time_ms": 0, "error_code": code, "session_id": 0, "responses": out}


def fetch(svc: KafkaServices, header: RequestHeader, body: dict):
    version = header.api_version
    topics = body["topics"]
    replica_id = body["replica_state"]["replica_id"] if version >= 15 else body["replica_id"]
    if replica_id >= 0:
        return _refuse_all(topics, ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    if version >= 7 and body["session_id"] != 0 and body["session_epoch"] != _FINAL_EPOCH:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.FETCH_SESSION_ID_NOT_FOUND, "session_id": 0,
                "responses": []}
    isolation = body.get("isolation_level", 0)
    cluster = svc.cluster
    broker = svc.broker
    by_id = cluster.topic_names_by_id() if version >= 13 else None
    responses = []
    specs: list[FetchPartition] = []
    slots: list[dict] = []
    pre_failed = False
    for t in topics:
        if by_id is not None:
            topic_id = t["topic_id"]
            name = by_id.get(topic_id)
            entry = {"topic_id": topic_id, "partitions": []}
        else:
            name = t["topic"]
            entry = {"topic": name, "partitions": []}
        responses.append(entry)
        parts = entry["partitions"]
        for p in t["partitions"]:
            index = p["partition"]
            result = _partition_entry(index, _NONE, isolation)
            parts.append(result)
            if name is None:
                result["error_code"] = ErrorCode.UNKNOWN_TOPIC_ID
                pre_failed = True
                continue
            code = _check_leadership(cluster, name, index, p.get("current_leader_epoch", -1), result)
            if code == _NONE and version >= 12 and p["last_fetched_epoch"] >= 0:
                code = _check_divergence(broker, name, index, p["last_fetched_epoch"], p["fetch_offset"], result)
            if code != _NONE:
                result["error_code"] = code
                pre_failed = True
                continue
            specs.append(FetchPartition(name, index, p["fetch_offset"], max(1, p["partition_max_bytes"])))
            slots.append(result)
    response = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
    if not specs:
        return response
    max_wait = 0 if pre_failed else max(0, body["max_wait_ms"])
    return _fetched(svc, response, specs, slots, max_wait, max(0, body["min_bytes"]),
                    max(1, body.get("max_bytes", 0x7FFFFFFF)))


def _check_leadership(cluster, name: str, index: int, current_leader_epoch: int, result: dict) -> int:
    if not cluster.is_local_leader(name, index):
        placement = cluster.placement(name, index)
        if placement is not None:
            result["current_leader"] = {"leader_id": placement.leader_id, "leader_epoch": placement.leader_epoch}
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    if current_leader_epoch >= 0:
        placement = cluster.placement(name, index)
        if placement is not None and current_leader_epoch != placement.leader_epoch:
            result["current_leader"] = {"leader_id": placement.leader_id, "leader_epoch": placement.leader_epoch}
            # Kafka: a client ahead of us knows of a newer leader; one behind must refresh its metadata.
            return (ErrorCode.UNKNOWN_LEADER_EPOCH if current_leader_epoch > placement.leader_epoch
                    else ErrorCode.FENCED_LEADER_EPOCH)
    return _NONE


def _check_divergence(broker, name: str, index: int, last_fetched_epoch: int, fetch_offset: int,
                      result: dict) -> int:
    """KIP-320/595: if the fetcher's last epoch ended earlier here, tell it where (diverging_epoch)."""
    try:
        log = getattr(broker.partition(name, index), "log", None)
    except BrokerError as exc:
        return code_of(exc.error_name)
    if log is None:
        return _NONE
    epoch, end_offset = log.end_offset_for_epoch(last_fetched_epoch)
    if epoch != last_fetched_epoch or end_offset < fetch_offset:
        if epoch >= 0 and end_offset >= 0:
            result["diverging_epoch"] = {"epoch": epoch, "end_offset": end_offset}
    return _NONE


async def _fetched(svc: KafkaServices, response: dict, specs: list[FetchPartition], slots: list[dict],
                   max_wait_ms: int, min_bytes: int, max_bytes: int) -> dict:
    results = await svc.broker.fetch(specs, max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes)
    for r, slot in zip(results, slots):
        if "diverging_epoch" in slot:
            r.records = b""  # the fetcher truncates first, then fetches again
        slot["error_code"] = code_of(r.error_name) if r.error_name != "NONE" else _NONE
        slot["high_watermark"] = r.high_watermark
        slot["last_stable_offset"] = r.last_stable_offset
        slot["log_start_offset"] = r.log_start_offset
        slot["records"] = r.records
    return response


HANDLERS = [Handler(ApiKey.FETCH, 0, 17, fetch)]
