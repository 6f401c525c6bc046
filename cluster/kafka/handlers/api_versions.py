"""ApiVersions (key 18): what this listener serves. A too-new version is answered by the codec (KIP-511)."""

from __future__ import annotations

from proto.kafka import ApiKey, ErrorCode, RequestHeader, valid_client_software

from .base import Handler, KafkaServices


def api_versions(svc: KafkaServices, header: RequestHeader, body: dict) -> dict:
    if header.api_version >= 3 and not valid_client_software(body["client_software_name"],
                                                             body["client_software_version"]):
        # Kafka's answer to a malformed client name (librdkafka retries with v0; kafka-python gives up).
        return {"error_code": ErrorCode.INVALID_REQUEST, "api_keys": []}
    return {
        "error_code": ErrorCode.NONE,
        "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi}
                     for k, (lo, hi) in sorted(svc.served.items())],
        "finalized_features_epoch": -1,
    }


HANDLERS = [Handler(ApiKey.API_VERSIONS, 0, 4, api_versions)]
