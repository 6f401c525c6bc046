"""The Kafka API handlers, one per API key, with the versions each serves (what ApiVersions advertises).

Transaction APIs (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit) are not listed: tidelog has no
transaction coordinator yet, so clients see transactions as unsupported by the broker.
"""

from __future__ import annotations

from . import admin, api_versions, fetch, groups, metadata, offsets, produce, producer_id, sasl
from .base import CLOSE_CONNECTION, Handler, KafkaServices

HANDLERS: dict[int, Handler] = {}
for _module in (api_versions, metadata, produce, fetch, offsets, producer_id, admin, groups, sasl):
    for _h in _module.HANDLERS:
        assert _h.api_key not in HANDLERS, f"two handlers for {_h.api_key!r}"
        HANDLERS[int(_h.api_key)] = _h


def served_versions() -> dict[int, tuple[int, int]]:
    """api key -> (min, max) version served; every version in a range is served (some with an error)."""
    return {key: (h.min_version, h.max_version) for key, h in sorted(HANDLERS.items())}


__all__ = ["CLOSE_CONNECTION", "HANDLERS", "Handler", "KafkaServices", "served_versions"]
