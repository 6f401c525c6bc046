"""`tidelog serve` opens the Kafka listener next to gRPC: a kafka-python client works against the CLI's broker."""

from __future__ import annotations

import json

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tidelog.testing import ServeProcess


def test_tidelog_serve_speaks_kafka(tmp_path):
    with ServeProcess(tmp_path / "data", extra_args=["--default-partitions", "2"]) as server:
        assert server.kafka_bootstrap is not None
        producer = KafkaProducer(bootstrap_servers=server.kafka_bootstrap,
                                 value_serializer=lambda v: json.dumps(v).encode(),
                                 request_timeout_ms=10_000, max_block_ms=10_000)
        sent = [producer.send("served", key=b"k%d" % i, value={"n": i}).get(timeout=10) for i in range(20)]
        producer.close(timeout=5)
        consumer = KafkaConsumer(bootstrap_servers=server.kafka_bootstrap, consumer_timeout_ms=3_000,
                                 value_deserializer=lambda b: json.loads(b))
        partitions = [TopicPartition("served", p) for p in (0, 1)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        got = sorted(m.value["n"] for m in consumer)
        consumer.close()
        assert got == list(range(20))
        assert {m.partition for m in sent} == {0, 1}
