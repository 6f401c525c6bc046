"""Per-topic log configuration: Kafka's topic-config names, Kafka's defaults (except flush.messages)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from storage.errors import ConfigError

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

CLEANUP_DELETE = "delete"
CLEANUP_COMPACT = "compact"
CLEANUP_COMPACT_DELETE = "compact,delete"
CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"

# Kafka key -> (field name, minimum, maximum) for the integer keys.
_INT_KEYS: dict[str, tuple[str, int, int]] = {
    "segment.bytes": ("segment_bytes", 14, INT32_MAX),  # positions in the index are int32
    "segment.ms": ("segment_ms", 1, INT64_MAX),
    "index.interval.bytes": ("index_interval_bytes", 0, INT32_MAX),
    "retention.ms": ("retention_ms", -1, INT64_MAX),
    "retention.bytes": ("retention_bytes", -1, INT64_MAX),
    "delete.retention.ms": ("delete_retention_ms", 0, INT64_MAX),
    "min.compaction.lag.ms": ("min_compaction_lag_ms", 0, INT64_MAX),
    "max.message.bytes": ("max_message_bytes", 0, INT32_MAX),
    "flush.messages": ("flush_messages", 1, INT64_MAX),
    "flush.ms": ("flush_ms", 0, INT64_MAX),
}
_STR_KEYS: dict[str, str] = {
    "cleanup.policy": "cleanup_policy",
    "message.timestamp.type": "message_timestamp_type",
}
TOPIC_CONFIG_KEYS: frozenset[str] = frozenset(_INT_KEYS) | frozenset(_STR_KEYS)
_FIELD_TO_KEY: dict[str, str] = {f: k for k, (f, _lo, _hi) in _INT_KEYS.items()} | {
    f: k for k, f in _STR_KEYS.items()
}


@dataclass(slots=True, frozen=True)
class LogConfig:
    """Immutable: an alter-config builds a new one and hands it to `PartitionLog.update_config`."""

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * 24 * 3600 * 1000
    index_interval_bytes: int = 4096
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    cleanup_policy: str = CLEANUP_DELETE
    delete_retention_ms: int = 24 * 3600 * 1000
    min_compaction_lag_ms: int = 0
    max_message_bytes: int = 1048588
    message_timestamp_type: str = CREATE_TIME
    # tidelog default: fsync before acknowledging (Kafka's default is Long.MAX_VALUE, i.e. leave it to the OS).
    flush_messages: int = 1
    flush_ms: int = INT64_MAX

    def __post_init__(self) -> None:
        for key, (name, lo, hi) in _INT_KEYS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(key, f"expected an integer, got {value!r}")
            if not lo <= value <= hi:
                raise ConfigError(key, f"value {value} is outside [{lo}, {hi}]")
        policy = _normalize_policy(self.cleanup_policy)
        if policy is None:
            raise ConfigError(
                "cleanup.policy", f"unknown policy {self.cleanup_policy!r}: expected delete, compact or compact,delete"
            )
        object.__setattr__(self, "cleanup_policy", policy)
        if self.message_timestamp_type not in (CREATE_TIME, LOG_APPEND_TIME):
            raise ConfigError(
                "message.timestamp.type",
                f"unknown type {self.message_timestamp_type!r}: expected CreateTime or LogAppendTime",
            )

    # Derived flags read on hot paths.
    @property
    def compact(self) -> bool:
        return CLEANUP_COMPACT in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return CLEANUP_DELETE in self.cleanup_policy

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == LOG_APPEND_TIME

    @property
    def fsync_before_ack(self) -> bool:
        """True when every append must be fsynced before the producer is acknowledged (flush.messages=1)."""
        return self.flush_messages == 1

    @classmethod
    def from_kafka(cls, values: Mapping[str, str | int], base: LogConfig | None = None) -> LogConfig:
        """Build from Kafka topic-config strings over `base`. Raises ConfigError naming the first bad key."""
        changes: dict[str, object] = {}
        for key, raw in values.items():
            if key in _INT_KEYS:
                changes[_INT_KEYS[key][0]] = _parse_int(key, raw)
            elif key in _STR_KEYS:
                if not isinstance(raw, str):
                    raise ConfigError(key, f"expected a string, got {raw!r}")
                changes[_STR_KEYS[key]] = raw.strip()
            else:
                raise ConfigError(key, f"unknown topic config; known keys: {', '.join(sorted(TOPIC_CONFIG_KEYS))}")
        return dataclasses.replace(base if base is not None else cls(), **changes)  # __post_init__ validates

    def to_kafka(self) -> dict[str, str]:
        return {key: str(getattr(self, name)) for name, key in _FIELD_TO_KEY.items()}


def _parse_int(key: str, raw: str | int) -> int:
    if isinstance(raw, bool):
        raise ConfigError(key, f"expected an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii():
        raise ConfigError(key, f"expected an integer, got {raw!r}")
    return int(text)


def _normalize_policy(policy: object) -> str | None:
    if not isinstance(policy, str):
        return None
    parts = {p.strip().lower() for p in policy.split(",") if p.strip()}
    if parts == {CLEANUP_DELETE}:
        return CLEANUP_DELETE
    if parts == {CLEANUP_COMPACT}:
        return CLEANUP_COMPACT
    if parts == {CLEANUP_COMPACT, CLEANUP_DELETE}:
        return CLEANUP_COMPACT_DELETE
    return None
