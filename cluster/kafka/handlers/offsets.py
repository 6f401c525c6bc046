"""ListOffsets (key 2), OffsetForLeaderEpoch (key 23) and DeleteRecords (key 21)."""

from __future__ import annotations

import asyncio
import struct

from cluster.broker.errors import BrokerError, OffsetOutOfRangeError, translate
from cluster.broker.types import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from cluster.kafka.errors import code_of
from proto.kafka import ApiKey, ErrorCode, RequestHeader

from .base import Handler, KafkaServices

MAX_TIMESTAMP = -3  # KIP-734, v7+
EARLIEST_LOCAL_TIMESTAMP = -4  # KIP-405, v8+: without tiered storage, the log start
LATEST_TIERED_TIMESTAMP = -5  # KIP-1005, v9+: nothing is tiered, so no offset
_MIN_VERSION_FOR = {MAX_TIMESTAMP: 7, EARLIEST_LOCAL_TIMESTAMP: 8, LATEST_TIERED_TIMESTAMP: 9}
_SCAN_CHUNK = 4 * 1024 * 1024
_PREFIX = struct.Struct(">qi")  # baseOffset, batchLength
_LAST_DELTA_AT, _MAX_TIMESTAMP_AT = 23, 35
_MAX_DELETE_TIMEOUT_MS = 120_000  # a DeleteRecords waits at most this long for its commit, whatever it asks


def _epoch_at(partition, offset: int) -> int:
    log = getattr(partition, "log", None)
    if log is None or not partition.log_start_offset <= offset < partition.log_end_offset:
        return partition.leader_epoch
    try:
        return log.epoch_for_offset(offset)
    except Exception:
        return -1


def _leader_error(cluster, topic: str, index: int, current_leader_epoch: int) -> int:
    if not cluster.is_local_leader(topic, index):
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    if current_leader_epoch >= 0:
        placement = cluster.placement(topic, index)
        if placement is not None and current_leader_epoch != placement.leader_epoch:
            return (ErrorCode.UNKNOWN_LEADER_EPOCH if current_leader_epoch > placement.leader_epoch
                    else ErrorCode.FENCED_LEADER_EPOCH)
    return 0


def _walk(svc: KafkaServices, body: dict, topic_key: str, index_key: str, blank: dict):
    """(response topics, generator): walks the request's partitions, filling the response skeleton; yields
    (result, partition, request entry) for partitions this broker leads and has, the others get their error.
    Exhaust the generator before answering."""
    topics: list[dict] = []

    def walk():
        for t in body["topics"]:
            name = t[topic_key]
            parts: list[dict] = []
            topics.append({topic_key: name, "partitions": parts})
            for p in t["partitions"]:
                index = p[index_key]
                result = dict(blank)
                result[index_key] = index
                parts.append(result)
                code = _leader_error(svc.cluster, name, index, p.get("current_leader_epoch", -1))
                if code:
                    result["error_code"] = code
                    continue
                try:
                    partition = svc.broker.partition(name, index)
                except BrokerError as exc:
                    result["error_code"] = code_of(exc.error_name)
                    continue
                yield result, partition, p

    return topics, walk()


# ---------------------------------------------------------------------------------------------- ListOffsets

def list_offsets(svc: KafkaServices, header: RequestHeader, body: dict):
    version = header.api_version
    scans = []  # (result, partition) for MAX_TIMESTAMP: a header scan, done off the loop
    topics, partitions = _walk(svc, body, "name", "partition_index",
                               {"error_code": 0, "old_style_offsets": [], "timestamp": -1, "offset": -1,
                                "leader_epoch": -1})
    for result, partition, p in partitions:
        ts = p["timestamp"]
        if ts < 0 and ts not in (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP):
            needs = _MIN_VERSION_FOR.get(ts)
            if needs is None or version < needs:
                result["error_code"] = (ErrorCode.UNSUPPORTED_VERSION if needs is not None
                                        else ErrorCode.INVALID_REQUEST)
                continue
        try:
            if ts == MAX_TIMESTAMP:
                scans.append((result, partition))
            elif ts == LATEST_TIERED_TIMESTAMP:
                pass  # offset -1: nothing is tiered
            elif version == 0:
                result["old_style_offsets"] = _old_style(partition, ts, p["max_num_offsets"])
            else:
                if ts == EARLIEST_LOCAL_TIMESTAMP:
                    ts = EARLIEST_TIMESTAMP
                offset, found_ts = partition.list_offset(ts)
                result["offset"] = offset
                result["timestamp"] = found_ts
                if ts == LATEST_TIMESTAMP:
                    result["leader_epoch"] = partition.leader_epoch
                elif offset >= 0:
                    result["leader_epoch"] = _epoch_at(partition, offset)
        except BrokerError as exc:
            result["error_code"] = code_of(exc.error_name)
    response = {"throttle_time_ms": 0, "topics": topics}
    if scans:
        return _with_max_timestamps(response, scans)
    return response


def _old_style(partition, ts: int, max_num_offsets: int) -> list[int]:
    """ListOffsets v0: up to max_num_offsets offsets, newest first (Kafka's legacy fetchOffsetsBefore)."""
    if max_num_offsets <= 0:
        return []
    if ts == EARLIEST_TIMESTAMP:
        return [partition.log_start_offset]
    if ts == LATEST_TIMESTAMP:
        hw = partition.high_watermark
        log = getattr(partition, "log", None)
        bases = [b for b in (log.segment_base_offsets if log is not None else ()) if b < hw]
        return ([hw] + sorted(bases, reverse=True))[:max_num_offsets]
    offset, _ = partition.list_offset(ts)
    return [offset] if offset >= 0 else []


def _scan_max_timestamp(partition) -> tuple[int, int]:
    """(offset, timestamp) of the first record with the largest timestamp below the high watermark:
    batch headers find the largest maxTimestamp, then the time index finds its record."""
    log = getattr(partition, "log", None)
    if log is None:
        return -1, -1
    offset = partition.log_start_offset
    hw = partition.high_watermark
    best = -1
    while offset < hw:
        data = log.read(offset, _SCAN_CHUNK, upper_bound=hw)
        if not data:
            break
        nxt = offset
        pos = 0
        while pos + 61 <= len(data):  # batch headers only
            base, length = _PREFIX.unpack_from(data, pos)
            if length < 49 or pos + 12 + length > len(data):
                break
            max_ts = struct.unpack_from(">q", data, pos + _MAX_TIMESTAMP_AT)[0]
            if max_ts > best:
                best = max_ts
            nxt = base + struct.unpack_from(">i", data, pos + _LAST_DELTA_AT)[0] + 1
            pos += 12 + length
        if nxt <= offset:
            break
        offset = nxt
    if best < 0:
        return -1, -1
    found = log.offset_for_timestamp(best)
    return found if found is not None and found[0] < hw else (-1, -1)


async def _with_max_timestamps(response: dict, scans: list) -> dict:
    for result, partition in scans:
        try:
            offset, ts = await asyncio.to_thread(_scan_max_timestamp, partition)
        except Exception as exc:
            result["error_code"] = code_of(translate(exc).error_name)
            continue
        result["offset"], result["timestamp"] = offset, ts
        result["old_style_offsets"] = [offset] if offset >= 0 else []
        if offset >= 0:
            result["leader_epoch"] = _epoch_at(partition, offset)
    return response


# ------------------------------------------------------------------------------------- OffsetForLeaderEpoch

def offset_for_leader_epoch(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    topics, partitions = _walk(svc, body, "topic", "partition",
                               {"error_code": 0, "leader_epoch": -1, "end_offset": -1})
    for result, partition, p in partitions:
        log = getattr(partition, "log", None)
        if log is None:
            result["error_code"] = ErrorCode.UNKNOWN_SERVER_ERROR
            continue
        result["leader_epoch"], result["end_offset"] = log.end_offset_for_epoch(p["leader_epoch"])
    return {"throttle_time_ms": 0, "topics": topics}


# -------------------------------------------------------------------------------------------- DeleteRecords

def delete_records(svc: KafkaServices, header: RequestHeader, body: dict):
    return _delete_records(svc, body)


async def _delete_records(svc: KafkaServices, body: dict) -> dict:
    timeout_s = min(max(body["timeout_ms"], 1), _MAX_DELETE_TIMEOUT_MS) / 1000
    topics, partitions = _walk(svc, body, "name", "partition_index", {"error_code": 0, "low_watermark": -1})
    for result, partition, p in partitions:
        try:
            offset = p["offset"]
            hw = partition.high_watermark
            if offset == -1:
                offset = hw  # Kafka's "delete everything visible"
            if offset < 0 or offset > hw:
                raise OffsetOutOfRangeError(f"offset {offset} is outside [0, high watermark {hw}]")
            # The Partition seam: a replicated partition commits the new log start through its Raft group.
            result["low_watermark"] = await partition.delete_records(offset, timeout_s=timeout_s)
        except BrokerError as exc:
            result["error_code"] = code_of(exc.error_name)
    return {"throttle_time_ms": 0, "topics": topics}


HANDLERS = [
    Handler(ApiKey.LIST_OFFSETS, 0, 10, list_offsets),
    Handler(ApiKey.OFFSET_FOR_LEADER_EPOCH, 0, 4, offset_for_leader_epoch),
    Handler(ApiKey.DELETE_RECORDS, 0, 2, delete_records, barrier=True),
]
