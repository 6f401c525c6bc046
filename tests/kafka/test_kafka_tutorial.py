"""The tutorial case: kafka-python, JSON values, keyed orders to `orders`, read back by assign + seek."""

from __future__ import annotations

import json

from kafka_listener_harness import murmur2_partition, wait_until


def test_orders_tutorial(kafka_broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap,
                             value_serializer=lambda v: json.dumps(v).encode(),
                             key_serializer=lambda k: k.encode())
    orders = [{"order_id": i, "customer": f"customer-{i % 5}", "amount": round(9.99 * i, 2)} for i in range(200)]
    try:
        futures = [producer.send("orders", key=o["customer"], value=o) for o in orders]
        producer.flush(timeout=30)
        placed = [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)
    for o, m in zip(orders, placed):  # `orders` was auto-created with the broker's num.partitions (3)
        assert m.partition == murmur2_partition(o["customer"].encode(), 3), "same key, same partition"

    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=None, enable_auto_commit=False,
                             key_deserializer=bytes.decode, value_deserializer=json.loads)
    try:
        assert consumer.partitions_for_topic("orders") == {0, 1, 2}
        tps = [TopicPartition("orders", p) for p in range(3)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        got = []
        assert wait_until(lambda: got.extend(m for ms in consumer.poll(timeout_ms=200).values() for m in ms)
                          or len(got) >= len(orders), timeout=30)
    finally:
        consumer.close()
    assert sorted((m.value["order_id"] for m in got)) == list(range(200))
    for m in got:
        assert m.key == m.value["customer"] and m.partition == murmur2_partition(m.key.encode(), 3)
    by_customer: dict[str, list[int]] = {}
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        by_customer.setdefault(m.key, []).append(m.value["order_id"])
    assert all(ids == sorted(ids) for ids in by_customer.values()), "a customer's orders stay in order"
