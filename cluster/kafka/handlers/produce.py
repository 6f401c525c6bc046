"""Produce (key 0): record batches appended as bytes, acks 0/1/all, idempotent producers.

Served from v3 (RecordBatch v2 only). v0-2 stay advertised because kcat (librdkafka 2.0) enables gzip,
snappy and lz4 only if Produce v0 is in the broker's range; they are answered UNSUPPORTED_VERSION.
One batch per partition, as Kafka requires from v3. The append itself (validation, offsets, CRC) is the
broker core's; this handler adds the per-partition checks Kafka does in front of it: leadership, message
format. The idempotent producer's duplicate / sequence / epoch checks happen in the partition (the broker
core's append path), so every front door gets them.
"""

from __future__ import annotations

import struct

from cluster.broker.errors import BrokerError
from cluster.broker.types import VALID_ACKS, ProducePartition
from cluster.kafka.errors import code_of
from proto.kafka import ApiKey, ErrorCode, RequestHeader

from .base import CLOSE_CONNECTION, Handler, KafkaServices

_BATCH_LENGTH = struct.Struct(">i")  # at byte 8
_HEADER_TAIL = struct.Struct(">hiqqqhi")  # at byte 21: attributes .. baseSequence
_HEADER_SIZE = 61
_MAGIC_AT = 16
_ATTR_TRANSACTIONAL = 0x10
_ATTR_CONTROL = 0x20


class _Refused(Exception):
    def __init__(self, error_name: str, message: str) -> None:
        super().__init__(message)
        self.error_name = error_name


def _batch_header(records) -> tuple[int, int, int, int, int, int]:
    """(attributes, last_offset_delta, max_timestamp, producer_id, producer_epoch, base_sequence) of the one
    batch a v3+ partition entry holds; _Refused for anything Kafka refuses before the log sees it."""
    if records is None or len(records) == 0:
        raise _Refused("INVALID_RECORD", "no record batch for the partition")
    if len(records) > _MAGIC_AT and records[_MAGIC_AT] in (0, 1):
        raise _Refused("UNSUPPORTED_FOR_MESSAGE_FORMAT",
                       f"message format v{records[_MAGIC_AT]} (magic {records[_MAGIC_AT]}): produce v3+ carries "
                       f"RecordBatch v2 only")
    if len(records) < _HEADER_SIZE:
        raise _Refused("CORRUPT_MESSAGE", f"record set of {len(records)} bytes is shorter than a batch header")
    size = 12 + _BATCH_LENGTH.unpack_from(records, 8)[0]
    if size < len(records) and size >= _HEADER_SIZE:
        raise _Refused("INVALID_RECORD", "produce v3+ allows exactly one record batch per partition")
    attributes, last_delta, _base_ts, max_ts, pid, epoch, base_seq = _HEADER_TAIL.unpack_from(records, 21)
    if attributes & _ATTR_TRANSACTIONAL:
        raise _Refused("INVALID_TXN_STATE", "transactions are not supported by tidelog yet")
    return attributes, last_delta, max_ts, pid, epoch, base_seq


def _error(result: dict, name: str, message: str) -> None:
    result["error_code"] = code_of(name)
    result["error_message"] = message
    result["base_offset"] = -1
    result["log_append_time_ms"] = -1
    result["log_start_offset"] = -1


def _all_failed(topics: list, code: int, message: str) -> dict:
    return {"responses": [
        {"name": t["name"], "partition_responses": [
            {"index": p["index"], "error_code": code, "base_offset": -1, "error_message": message}
            for p in t["partition_data"]]}
        for t in topics], "throttle_time_ms": 0}


def produce(svc: KafkaServices, header: RequestHeader, body: dict):
    acks = body["acks"]
    topics = body["topic_data"]
    if header.api_version < 3:
        if acks == 0:
            return CLOSE_CONNECTION  # nothing can be answered: the producer learns from the closed connection
        return _all_failed(topics, ErrorCode.UNSUPPORTED_VERSION,
                           "Produce v0-2 (message format v0/v1) is not supported: use v3+ (RecordBatch v2)")
    if acks not in VALID_ACKS:
        if acks == 0:
            return CLOSE_CONNECTION
        return _all_failed(topics, ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, got {acks}")
    if body["transactional_id"] is not None:
        if acks == 0:
            return CLOSE_CONNECTION
        return _all_failed(topics, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                           "transactions are not supported by tidelog yet")

    broker = svc.broker
    cluster = svc.cluster
    responses = []
    specs: list[ProducePartition] = []
    appended: list[dict] = []  # the response entry of each spec
    failed = False
    for topic in topics:
        name = topic["name"]
        results = []
        responses.append({"name": name, "partition_responses": results})
        for pd in topic["partition_data"]:
            index = pd["index"]
            records = pd["records"]
            result = {"index": index, "error_code": 0, "base_offset": -1, "log_append_time_ms": -1,
                      "log_start_offset": -1, "error_message": None}
            results.append(result)
            if not cluster.is_local_leader(name, index):
                placement = cluster.placement(name, index)
                _error(result, "NOT_LEADER_OR_FOLLOWER", f"this broker does not lead {name}-{index}")
                if placement is not None:
                    result["current_leader"] = {"leader_id": placement.leader_id,
                                                "leader_epoch": placement.leader_epoch}
                failed = True
                continue
            try:
                _batch_header(records)
            except _Refused as exc:
                _error(result, exc.error_name, str(exc))
                failed = True
                continue
            # The partition checks idempotent producers (duplicates get their original offsets).
            specs.append(ProducePartition(name, index, records))
            appended.append(result)

    pending = None
    if specs:
        timeout_ms = min(body["timeout_ms"], svc.config.max_produce_timeout_ms)
        try:
            pending = broker.begin_produce(specs, acks=acks, timeout_ms=timeout_ms)
        except BrokerError as exc:
            for result in appended:
                _error(result, exc.error_name, str(exc))
            failed = True
    response = {"responses": responses, "throttle_time_ms": 0}
    if acks == 0:
        if failed or (pending is not None and any(r.error_name != "NONE" for r in pending.results)):
            return CLOSE_CONNECTION  # Kafka's way of telling an acks=0 producer that something failed
        return None
    if pending is None or not pending.needs_wait:
        _fill(pending, appended)
        return response
    return _acknowledged(response, pending, appended)


def _fill(pending, appended) -> None:
    if pending is None:
        return
    for res, result in zip(pending.results, appended):
        if res.error_name != "NONE":
            _error(result, res.error_name, res.error_message)
        else:
            result["base_offset"] = res.base_offset
            result["log_append_time_ms"] = res.log_append_time_ms
            result["log_start_offset"] = res.log_start_offset


async def _acknowledged(response: dict, pending, appended) -> dict:
    await pending.wait()
    _fill(pending, appended)
    return response


HANDLERS = [Handler(ApiKey.PRODUCE, 0, 11, produce)]
