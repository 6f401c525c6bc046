"""Metadata (key 3): brokers, controller, topics with ids, partition leaders, epochs, replicas and ISR.

Facts come from the ClusterView. Unknown topics are created when the request allows it (v4+ flag; always
for v0-3, as Kafka does) and the listener's auto.create.topics.enable is on; the response then already
carries the new topic (Kafka would say LEADER_NOT_AVAILABLE first and let the client ask again).
"""

from __future__ import annotations

import uuid

from cluster.broker.errors import BrokerError, TopicAlreadyExistsError
from cluster.broker.registry import validate_topic_name
from cluster.kafka.cluster_view import ZERO_UUID, TopicView
from cluster.kafka.errors import code_of
from proto.kafka import ApiKey, ErrorCode, RequestHeader

from .base import Handler, KafkaServices

_LEADER_NOT_AVAILABLE = int(ErrorCode.LEADER_NOT_AVAILABLE)


def _invalid_name(name: str) -> str | None:
    try:
        validate_topic_name(name)
    except BrokerError as exc:
        return str(exc)
    return None


def metadata(svc: KafkaServices, header: RequestHeader, body: dict):
    version = header.api_version
    requested = body["topics"]
    cluster = svc.cluster
    if requested is None or (version == 0 and not requested):
        return _response(svc, cluster.topics(), None, {})
    names: list[str | None] = []
    unknown_ids: dict[int, uuid.UUID] = {}  # position -> topic id that names no topic
    by_id: dict[uuid.UUID, str] | None = None
    for i, t in enumerate(requested):
        name = t["name"]
        if name is None:
            topic_id = t.get("topic_id", ZERO_UUID)
            if by_id is None:
                by_id = cluster.topic_names_by_id()
            name = by_id.get(topic_id)
            if name is None:
                unknown_ids[i] = topic_id
        names.append(name)
    wanted = [n for n in names if n is not None]
    views = cluster.topics(wanted)
    allow = body["allow_auto_topic_creation"] if version >= 4 else True
    missing = [n for n in dict.fromkeys(wanted) if n not in views and _invalid_name(n) is None]
    if missing and allow and svc.config.auto_create_topics:
        return _create_then_respond(svc, names, unknown_ids, missing)
    return _response(svc, views, names, unknown_ids)


async def _create_then_respond(svc: KafkaServices, names: list[str | None], unknown_ids: dict[int, uuid.UUID],
                               missing: list[str]) -> dict:
    errors: dict[str, tuple[int, str]] = {}
    partitions = svc.config.num_partitions or None
    for name in missing:
        try:
            await svc.broker.create_topic(name, partitions)
        except TopicAlreadyExistsError:
            pass  # created meanwhile: fine
        except BrokerError as exc:
            errors[name] = (code_of(exc.error_name), str(exc))
    views = svc.cluster.topics([n for n in names if n is not None])
    return _response(svc, views, names, unknown_ids, errors)


def _topic_entry(view: TopicView) -> dict:
    partitions = []
    for p in view.partitions:
        partitions.append({
            "error_code": _LEADER_NOT_AVAILABLE if p.leader_id < 0 else 0,
            "partition_index": p.partition,
            "leader_id": p.leader_id,
            "leader_epoch": p.leader_epoch,
            "replica_nodes": list(p.replicas),
            "isr_nodes": list(p.isr),
            "offline_replicas": list(p.offline_replicas),
        })
    return {"error_code": 0, "name": view.name, "topic_id": view.topic_id, "is_internal": view.is_internal,
            "partitions": partitions}


def _response(svc: KafkaServices, views: dict[str, TopicView], names: list[str | None] | None,
              unknown_ids: dict[int, uuid.UUID], errors: dict[str, tuple[int, str]] | None = None) -> dict:
    cluster = svc.cluster
    topics = []
    if names is None:
        topics = [_topic_entry(v) for _, v in sorted(views.items())]
    else:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name is None:
                topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_ID, "name": None,
                               "topic_id": unknown_ids.get(i, ZERO_UUID), "partitions": []})
                continue
            if name in seen:
                continue
            seen.add(name)
            view = views.get(name)
            if view is not None:
                topics.append(_topic_entry(view))
            elif errors and name in errors:
                topics.append({"error_code": errors[name][0], "name": name, "partitions": []})
            elif _invalid_name(name) is not None:
                topics.append({"error_code": ErrorCode.INVALID_TOPIC_EXCEPTION, "name": name, "partitions": []})
            else:
                topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "name": name,
                               "partitions": []})
    return {
        "throttle_time_ms": 0,
        "brokers": [{"node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack}
                    for b in cluster.brokers()],
        "cluster_id": cluster.cluster_id,
        "controller_id": cluster.controller_id,
        "topics": topics,
    }


HANDLERS = [Handler(ApiKey.METADATA, 0, 12, metadata)]
