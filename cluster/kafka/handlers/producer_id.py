"""InitProducerId (key 22): producer ids for idempotent producers.

Like Kafka for a producer without a transactional id, every call gets a fresh id at epoch 0 (a KIP-360
epoch bump of an idempotent producer also gets a new id). Transactional ids are refused until tidelog has a
transaction coordinator.
"""

from __future__ import annotations

import logging

from proto.kafka import ApiKey, ErrorCode, RequestHeader

from .base import Handler, KafkaServices

log = logging.getLogger(__name__)


def init_producer_id(svc: KafkaServices, header: RequestHeader, body: dict):
    if body["transactional_id"] is not None:
        return {"throttle_time_ms": 0, "error_code": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                "producer_id": -1, "producer_epoch": -1}
    return _allocate(svc)


async def _allocate(svc: KafkaServices) -> dict:
    try:
        producer_id = await svc.producer_ids.allocate()
    except Exception as exc:  # the id file cannot be written: a retriable error, the producer tries again
        log.error("cannot allocate a producer id: %s", exc)
        return {"throttle_time_ms": 0, "error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE,
                "producer_id": -1, "producer_epoch": -1}
    return {"throttle_time_ms": 0, "error_code": 0, "producer_id": producer_id, "producer_epoch": 0}


HANDLERS = [Handler(ApiKey.INIT_PRODUCER_ID, 0, 5, init_producer_id)]
