"""SASL (keys 17 and 36): tidelog listeners are plaintext without authentication for now. A client configured
for SASL gets a clear error (no mechanism is enabled) instead of a closed connection."""

from __future__ import annotations

from proto.kafka import ApiKey, ErrorCode, RequestHeader

from .base import Handler, KafkaServices


def sasl_handshake(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    return {"error_code": ErrorCode.UNSUPPORTED_SASL_MECHANISM, "mechanisms": []}


def sasl_authenticate(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "auth_bytes": b"", "session_lifetime_ms": 0,
            "error_message": "SASL authentication is not enabled on this listener"}


HANDLERS = [
    Handler(ApiKey.SASL_HANDSHAKE, 0, 1, sasl_handshake),
    Handler(ApiKey.SASL_AUTHENTICATE, 0, 2, sasl_authenticate),
]
