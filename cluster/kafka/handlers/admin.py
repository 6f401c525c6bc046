"""Topic administration and cluster description: CreateTopics (19), DeleteTopics (20), CreatePartitions (37),
DescribeConfigs (32), DescribeCluster (60)."""

from __future__ import annotations

from collections import Counter

from cluster.broker.errors import BrokerError
from cluster.broker.types import ConfigSource, ConfigValue
from cluster.kafka.cluster_view import ZERO_UUID, parse_topic_id
from cluster.kafka.errors import code_of
from proto.kafka import ApiKey, ErrorCode, RequestHeader

from .base import Handler, KafkaServices

# Kafka's DescribeConfigsResponse.ConfigSource
DYNAMIC_TOPIC_CONFIG = 1
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5
_SOURCE = {ConfigSource.TOPIC: DYNAMIC_TOPIC_CONFIG, ConfigSource.BROKER: STATIC_BROKER_CONFIG,
           ConfigSource.DEFAULT: DEFAULT_CONFIG}
# Kafka's ConfigResource.Type
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4


# --------------------------------------------------------------------------------------------- CreateTopics

def create_topics(svc: KafkaServices, header: RequestHeader, body: dict):
    return _create_topics(svc, header.api_version, body)


async def _create_topics(svc: KafkaServices, version: int, body: dict) -> dict:
    counts = Counter(t["name"] for t in body["topics"])
    validate_only = body.get("validate_only", False)
    brokers = {b.node_id for b in svc.cluster.brokers()}
    results = []
    for t in body["topics"]:
        name = t["name"]
        result = {"name": name, "topic_id": ZERO_UUID, "error_code": 0, "error_message": None,
                  "num_partitions": -1, "replication_factor": -1, "configs": None}
        results.append(result)
        if counts[name] > 1:
            result["error_code"] = ErrorCode.INVALID_REQUEST
            result["error_message"] = f"topic {name!r} appears more than once in the request"
            continue
        error = _check_placement(t, brokers)
        if error is not None:
            result["error_code"], result["error_message"] = error
            continue
        count = len(t["assignments"]) or (t["num_partitions"] if t["num_partitions"] > 0 else None)
        if count is None and svc.config.num_partitions:
            count = svc.config.num_partitions
        configs = {c["name"]: c["value"] for c in t["configs"] if c["value"] is not None}
        rf = t["replication_factor"] if t["replication_factor"] > 0 else None
        assignments = None
        if t["assignments"]:
            assignments = [list(a["broker_ids"]) for a in sorted(t["assignments"], key=lambda a: a["partition_index"])]
        try:
            info = await svc.broker.create_topic(name, count, configs, validate_only=validate_only,
                                                 replication_factor=rf, assignments=assignments)
        except BrokerError as exc:
            result["error_code"] = code_of(exc.error_name)
            result["error_message"] = str(exc)
            continue
        result["topic_id"] = parse_topic_id(info.topic_id)
        result["num_partitions"] = info.partition_count
        result["replication_factor"] = (len(info.partitions[0].replicas) if info.partitions and
                                        info.partitions[0].replicas else (rf or 1))
        result["configs"] = [_config_entry(c) for c in info.configs]
    return {"throttle_time_ms": 0, "topics": results}


def _check_placement(t: dict, brokers: set[int]) -> tuple[int, str] | None:
    rf = t["replication_factor"]
    if t["assignments"]:
        if t["num_partitions"] != -1 or rf != -1:
            return (ErrorCode.INVALID_REQUEST,
                    "give either assignments or num_partitions/replication_factor, not both")
        indexes = sorted(a["partition_index"] for a in t["assignments"])
        if indexes != list(range(len(indexes))):
            return ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"partition indexes must be 0..{len(indexes) - 1}"
        for a in t["assignments"]:
            ids = a["broker_ids"]
            if not ids or len(set(ids)) != len(ids) or not set(ids) <= brokers:
                return (ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                        f"partition {a['partition_index']}: replicas {ids} must be distinct brokers of "
                        f"{sorted(brokers)}")
        return None
    if t["num_partitions"] == 0 or t["num_partitions"] < -1:
        return ErrorCode.INVALID_PARTITIONS, f"number of partitions must be at least 1, got {t['num_partitions']}"
    if rf == 0 or rf < -1:
        return ErrorCode.INVALID_REPLICATION_FACTOR, f"replication factor must be at least 1, got {rf}"
    if rf > len(brokers):
        return (ErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {rf} is larger than the {len(brokers)} available broker(s)")
    return None


def _config_entry(c: ConfigValue) -> dict:
    return {"name": c.name, "value": c.value, "read_only": False, "config_source": _SOURCE[c.source],
            "is_sensitive": False}


# --------------------------------------------------------------------------------------------- DeleteTopics

def delete_topics(svc: KafkaServices, header: RequestHeader, body: dict):
    return _delete_topics(svc, header.api_version, body)


async def _delete_topics(svc: KafkaServices, version: int, body: dict) -> dict:
    if version >= 6:
        wanted = [(t["name"], t["topic_id"]) for t in body["topics"]]
    else:
        wanted = [(name, ZERO_UUID) for name in body["topic_names"]]
    by_id = None
    results = []
    for name, topic_id in wanted:
        result = {"name": name, "topic_id": topic_id, "error_code": 0, "error_message": None}
        results.append(result)
        if name is None:
            if by_id is None:
                by_id = svc.cluster.topic_names_by_id()
            name = by_id.get(topic_id)
            if name is None:
                result["error_code"] = ErrorCode.UNKNOWN_TOPIC_ID
                result["error_message"] = f"no topic has id {topic_id}"
                continue
            result["name"] = name
        else:
            view = svc.cluster.topic(name)
            if view is not None:
                result["topic_id"] = view.topic_id
        try:
            await svc.broker.delete_topic(name)
        except BrokerError as exc:
            result["error_code"] = code_of(exc.error_name)
            result["error_message"] = str(exc)
    return {"throttle_time_ms": 0, "responses": results}


# ----------------------------------------------------------------------------------------- CreatePartitions

def create_partitions(svc: KafkaServices, header: RequestHeader, body: dict):
    return _create_partitions(svc, body)


async def _create_partitions(svc: KafkaServices, body: dict) -> dict:
    counts = Counter(t["name"] for t in body["topics"])
    grow = getattr(svc.broker, "create_partitions", None)
    results = []
    for t in body["topics"]:
        name, count = t["name"], t["count"]
        result = {"name": name, "error_code": 0, "error_message": None}
        results.append(result)
        view = svc.cluster.topic(name)
        current = len(view.partitions) if view is not None else 0
        if counts[name] > 1:
            error = ErrorCode.INVALID_REQUEST, f"topic {name!r} appears more than once in the request"
        elif view is None:
            error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        elif count < current:
            error = (ErrorCode.INVALID_PARTITIONS,
                     f"topic currently has {current} partitions, which is higher than the requested {count}")
        elif count == current:
            error = ErrorCode.INVALID_PARTITIONS, f"topic already has {current} partitions"
        elif t["assignments"] is not None and len(t["assignments"]) != count - current:
            error = (ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                     f"{len(t['assignments'])} assignments given for {count - current} new partitions")
        elif grow is None:
            error = ErrorCode.INVALID_REQUEST, "tidelog cannot add partitions to an existing topic yet"
        else:
            error = None
        if error is not None:
            result["error_code"], result["error_message"] = error
            continue
        assignments = None
        if t["assignments"] is not None:
            assignments = [list(a["broker_ids"]) for a in t["assignments"]]
        try:
            if assignments is None:
                await grow(name, count, validate_only=body["validate_only"])
            else:
                await grow(name, count, validate_only=body["validate_only"], assignments=assignments)
        except BrokerError as exc:
            result["error_code"] = code_of(exc.error_name)
            result["error_message"] = str(exc)
    return {"throttle_time_ms": 0, "results": results}


# ------------------------------------------------------------------------------------------ DescribeConfigs

def _broker_configs(svc: KafkaServices) -> list[ConfigValue]:
    cfg = svc.broker.config
    listener = svc.config
    values = [
        ("broker.id", str(svc.broker.node_id)),
        ("num.partitions", str(listener.num_partitions or cfg.default_partitions)),
        ("auto.create.topics.enable", "true" if listener.auto_create_topics else "false"),
        ("socket.request.max.bytes", str(listener.max_frame_bytes)),
        ("message.max.bytes", str(cfg.max_request_bytes)),
    ]
    out = [ConfigValue(k, v, ConfigSource.BROKER) for k, v in values]
    out += [ConfigValue(k, str(v), ConfigSource.BROKER) for k, v in sorted(cfg.topic_defaults.items())]
    return out


def describe_configs(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    version = header.api_version
    results = []
    for res in body["resources"]:
        rtype, rname, keys = res["resource_type"], res["resource_name"], res["configuration_keys"]
        result = {"error_code": 0, "error_message": None, "resource_type": rtype, "resource_name": rname,
                  "configs": []}
        results.append(result)
        try:
            if rtype == RESOURCE_TOPIC:
                values = svc.broker.describe_configs(rname)
            elif rtype == RESOURCE_BROKER:
                if rname not in ("", str(svc.broker.node_id)):
                    raise BrokerError(f"this is broker {svc.broker.node_id}, not {rname!r}",
                                      error_name="INVALID_REQUEST")
                values = _broker_configs(svc)
            else:
                raise BrokerError(f"resource type {rtype} is not supported (topics: 2, brokers: 4)",
                                  error_name="INVALID_REQUEST")
        except BrokerError as exc:
            result["error_code"] = code_of(exc.error_name)
            result["error_message"] = str(exc)
            continue
        wanted = None if keys is None else set(keys)
        for c in values:
            if wanted is not None and c.name not in wanted:
                continue
            source = _SOURCE[c.source]
            entry = {"name": c.name, "value": c.value, "read_only": rtype == RESOURCE_BROKER,
                     "is_default": c.source == ConfigSource.DEFAULT, "config_source": source,
                     "is_sensitive": False, "synonyms": []}
            if version >= 1 and body["include_synonyms"]:
                entry["synonyms"] = [{"name": c.name, "value": c.value, "source": source}]
            result["configs"].append(entry)
    return {"throttle_time_ms": 0, "results": results}


# ------------------------------------------------------------------------------------------ DescribeCluster

def describe_cluster(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    cluster = svc.cluster
    response = {"throttle_time_ms": 0, "error_code": 0, "error_message": None,
                "endpoint_type": body.get("endpoint_type", 1), "cluster_id": cluster.cluster_id,
                "controller_id": cluster.controller_id,
                "brokers": [{"broker_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack}
                            for b in cluster.brokers()]}
    if header.api_version >= 1 and body["endpoint_type"] != 1:
        response.update(error_code=ErrorCode.INVALID_REQUEST, brokers=[],
                        error_message="only broker endpoints (endpoint_type 1) are served")
    return response


HANDLERS = [
    Handler(ApiKey.CREATE_TOPICS, 0, 7, create_topics, barrier=True),
    Handler(ApiKey.DELETE_TOPICS, 0, 6, delete_topics, barrier=True),
    Handler(ApiKey.CREATE_PARTITIONS, 0, 3, create_partitions, barrier=True),
    Handler(ApiKey.DESCRIBE_CONFIGS, 0, 4, describe_configs),
    Handler(ApiKey.DESCRIBE_CLUSTER, 0, 1, describe_cluster),
]
