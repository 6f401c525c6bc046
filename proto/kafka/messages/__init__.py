"""The schema tables: one :class:`~proto.kafka.schema.Api` per Kafka API, plus the headers.

Written by us from Kafka's message schemas (``shared/kafka-protocol/message/*.json``, Kafka trunk
1eb7644, 2024-10): same field names (snake_case), order, version ranges and defaults; the
``about`` texts are left out. EndTxn v5 (unstable in Kafka) is not declared.
"""

from __future__ import annotations

from ..api_keys import ApiKey
from ..schema import INT16, INT32, STRING, Api, F, Struct
from .admin import (API_VERSIONS, CREATE_PARTITIONS, CREATE_TOPICS, DELETE_TOPICS,
                    DESCRIBE_CLUSTER, DESCRIBE_CONFIGS, SASL_AUTHENTICATE, SASL_HANDSHAKE)
from .data import DELETE_RECORDS, FETCH, LIST_OFFSETS, METADATA, OFFSET_FOR_LEADER_EPOCH, PRODUCE
from .groups import (DELETE_GROUPS, DESCRIBE_GROUPS, FIND_COORDINATOR, HEARTBEAT, JOIN_GROUP, LEAVE_GROUP,
                     LIST_GROUPS, OFFSET_COMMIT, OFFSET_DELETE, OFFSET_FETCH, SYNC_GROUP)
from .txn import (ADD_OFFSETS_TO_TXN, ADD_PARTITIONS_TO_TXN, END_TXN, INIT_PRODUCER_ID,
                  TXN_OFFSET_COMMIT)

APIS: dict[ApiKey, Api] = {api.key: api for api in (
    PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR,
    JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS, SASL_HANDSHAKE,
    API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, DELETE_RECORDS, INIT_PRODUCER_ID,
    OFFSET_FOR_LEADER_EPOCH, ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN, END_TXN,
    TXN_OFFSET_COMMIT, DESCRIBE_CONFIGS, SASL_AUTHENTICATE, CREATE_PARTITIONS, DELETE_GROUPS, OFFSET_DELETE,
    DESCRIBE_CLUSTER,
)}
assert set(APIS) == set(ApiKey)

# Request header v1 (non-flexible requests) and v2 (flexible: adds a tagged-field section).
# client_id keeps its int16 length in v2 so that any broker can read an ApiVersions header.
REQUEST_HEADER = Struct("RequestHeader",
    F("request_api_key", INT16),
    F("request_api_version", INT16),
    F("correlation_id", INT32),
    F("client_id", STRING, "1+", nullable="1+", flexible="none"),
)
# Response header v0 (non-flexible) and v1 (flexible: adds a tagged-field section).
RESPONSE_HEADER = Struct("ResponseHeader",
    F("correlation_id", INT32),
)

__all__ = ["APIS", "REQUEST_HEADER", "RESPONSE_HEADER"]
