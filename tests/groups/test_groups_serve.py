"""`tidelog serve` (a one-node cluster) runs the group coordinator: a kafka-python group and a tidelog
GroupConsumer group consume and commit over Kafka and gRPC, `__consumer_offsets` is created on first use
(compacted, internal, its one-voter Raft groups lead it here), members' hosts are the connections' peers, and
after a kill -9 and a restart of the broker the committed offsets come back from the log."""

from __future__ import annotations

import time

import pytest
from groups_harness import wait_until

from tidelog.testing import ServeProcess

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kafka-python's own, at import

ARGS = ["--default-partitions", "2", "--group-config", "offsets.topic.num.partitions=4",
        "--group-config", "group.initial.rebalance.delay.ms=100", "--group-config", "group.min.session.timeout.ms=1000"]


def _kafka_commit(bootstrap: str, group: str, want: int) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer("served", bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500)
    got = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                got.extend(records)
        assert len(got) == want
        consumer.commit()
        return {p: consumer.committed(TopicPartition("served", p)) for p in (0, 1)}
    finally:
        consumer.close()


def test_serve_coordinates_groups_over_kafka_and_grpc(tmp_path):
    import tidelog
    from tidelog import Admin, GroupAdmin, GroupConsumer, Producer

    server = ServeProcess(tmp_path / "data", extra_args=ARGS).start()
    try:
        with Admin(server.bootstrap) as admin:
            admin.create_topic("served", 2)
        with Producer(server.bootstrap, acks="all", linger_ms=2) as producer:
            for i in range(40):
                producer.send("served", b"v%d" % i, key=b"k%d" % i)
            producer.flush(30)
        kafka_committed = _kafka_commit(server.kafka_bootstrap, "kafka-readers", 40)
        assert sum(kafka_committed.values()) == 40 + 2  # offsets start at 1: each leader's no-op comes first

        got = []
        with GroupConsumer(server.bootstrap, "grpc-readers", ["served"], session_timeout_ms=3000,
                           heartbeat_interval_ms=500) as member:
            deadline = time.monotonic() + 30
            while len(got) < 40 and time.monotonic() < deadline:
                got += member.poll(0.5)
            assert len(got) == 40
            member.commit()
        with GroupAdmin(server.bootstrap) as admin:
            assert {g for g, _, _ in admin.list_groups()} >= {"kafka-readers", "grpc-readers"}
            assert {tp.partition: o for tp, o in admin.committed("grpc-readers").items()} == kafka_committed
            described = admin.describe_group("kafka-readers")
            assert described.coordinator_id == 1

        with Admin(server.bootstrap) as admin:
            offsets = admin.describe_topic("__consumer_offsets")
            assert len(offsets.partitions) == 4
            assert offsets.configs["cleanup.policy"].value == "compact"
        assert tidelog.DeadLetterQueue is not None

        # A live Kafka member is reported with its connection's host.
        from kafka import KafkaConsumer

        live = KafkaConsumer("served", bootstrap_servers=server.kafka_bootstrap, group_id="kafka-live",
                             session_timeout_ms=6000, heartbeat_interval_ms=500)
        try:
            wait_until(lambda: live.poll(timeout_ms=200) is not None and live.assignment(), 30,
                       what="the live member's assignment")
            with GroupAdmin(server.bootstrap) as admin:
                members = admin.describe_group("kafka-live").members
            assert [m.client_host for m in members] == ["/127.0.0.1"]
        finally:
            live.close()

        server.kill()
        server.start()
        with GroupAdmin(server.bootstrap) as admin:
            assert {tp.partition: o for tp, o in admin.committed("kafka-readers").items()} == kafka_committed
            assert {tp.partition: o for tp, o in admin.committed("grpc-readers").items()} == kafka_committed
    finally:
        server.stop()
