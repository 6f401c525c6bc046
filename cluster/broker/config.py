"""Broker-core settings (the server's front doors and ports are configured in tidelog.settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024


@dataclass(slots=True)
class BrokerConfig:
    data_dir: Path
    node_id: int = 0
    default_partitions: int = 1
    max_partitions_per_topic: int = 1000
    # Cluster defaults for topic configs (Kafka names, e.g. {"retention.ms": "86400000"}); validated at start.
    topic_defaults: dict[str, str] = field(default_factory=dict)
    # Largest produce request accepted (all partitions together); Kafka's socket.request.max.bytes.
    max_request_bytes: int = 64 * MiB
    default_produce_timeout_ms: int = 30_000
    max_fetch_wait_ms: int = 60_000
    default_fetch_max_bytes: int = 50 * MiB
    default_partition_fetch_max_bytes: int = 1 * MiB
    max_fetch_bytes: int = 64 * MiB
    retention_check_interval_ms: int = 30_000
    compaction_interval_ms: int = 15_000
    compaction_bytes_per_second: int | None = 32 * MiB
