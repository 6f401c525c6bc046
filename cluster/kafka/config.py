"""Settings of the Kafka listener (the broker core has its own, cluster.broker.config.BrokerConfig)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(slots=True)
class KafkaListenerConfig:
    # Largest request frame accepted (checked on the 4-byte size prefix, before the body is read).
    # None: the broker's max_request_bytes plus 1 MiB for headers (Kafka's socket.request.max.bytes).
    max_frame_bytes: int | None = None
    # Requests of one connection being handled or waiting to be written; past either bound the
    # connection's reads pause (back-pressure) until responses go out.
    max_in_flight_requests: int = 64
    max_in_flight_bytes: int = 128 * MiB
    max_connections: int = 10_000
    # Kafka's connections.max.idle.ms: a connection with nothing in flight and no bytes for this long is closed.
    connections_max_idle_ms: int = 600_000
    # Kafka's auto.create.topics.enable and num.partitions (None: the broker's default_partitions).
    auto_create_topics: bool = True
    num_partitions: int | None = None
    # Where InitProducerId's counter lives (None: <data_dir>/kafka-producer-ids.json).
    producer_id_file: str | None = None
    producer_id_block: int = 1000
    # The host written into Metadata (None: the listening host, or 127.0.0.1 for a wildcard address).
    advertised_host: str | None = None
    # A produce with a larger timeout is capped to this (Kafka clients send 30 s by default).
    max_produce_timeout_ms: int = 300_000
