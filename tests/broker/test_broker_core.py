"""Broker core: topics and configs, produce/fetch, acks and the high watermark, list offsets, housekeeping."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from broker_harness import batch, fetch_all, open_broker, produce, run

from cluster.broker.errors import BrokerError
from cluster.broker.types import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    ConfigSource,
    FetchPartition,
    ListOffsetsPartition,
    ProducePartition,
)
from storage.record_batch import iter_headers


def error_of(exc_info) -> str:
    return exc_info.value.error_name


def test_topic_lifecycle_is_persisted(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            info = await broker.create_topic("orders", 3, {"retention.ms": "60000"})
            assert [p.partition for p in info.partitions] == [0, 1, 2]
            configs = {c.name: c for c in info.configs}
            assert configs["retention.ms"].value == "60000" and configs["retention.ms"].source == ConfigSource.TOPIC
            assert configs["segment.bytes"].source == ConfigSource.DEFAULT
            await broker.alter_configs("orders", {"segment.ms": "3600000"}, ["retention.ms"])
            await broker.create_topic("gone", 1)
            await produce(broker, "gone", 0, batch([b"x"]))
            await broker.delete_topic("gone")
            topic_id = broker.describe_topic("orders").topic_id
        async with open_broker(tmp_path) as broker:
            assert [t.name for t in broker.list_topics()] == ["orders"]
            described = broker.describe_topic("orders")
            assert described.topic_id == topic_id and len(described.partitions) == 3
            configs = {c.name: c for c in broker.describe_configs("orders")}
            assert configs["segment.ms"].value == "3600000" and configs["segment.ms"].source == ConfigSource.TOPIC
            assert configs["retention.ms"].source == ConfigSource.DEFAULT
            meta = json.loads((tmp_path / "topics" / "orders" / "topic.json").read_text())
            assert meta["configs"] == {"segment.ms": "3600000"}
        assert not (tmp_path / "topics" / "gone").exists()
        assert os.listdir(tmp_path / "trash") == []

    run(body())


def test_cluster_defaults_apply_and_report_their_source(tmp_path):
    async def body():
        async with open_broker(tmp_path, topic_defaults={"retention.ms": "1000"}, default_partitions=2) as broker:
            info = await broker.create_topic("t")
            assert len(info.partitions) == 2
            configs = {c.name: c for c in info.configs}
            assert configs["retention.ms"].value == "1000" and configs["retention.ms"].source == ConfigSource.BROKER

    run(body())
    with pytest.raises(BrokerError) as exc_info:
        run(open_broker(tmp_path / "bad", topic_defaults={"retention.mss": "1"}).__aenter__())
    assert error_of(exc_info) == "INVALID_CONFIG"


def test_admin_errors_are_specific_and_change_nothing(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 1, {"retention.ms": "5000"})
            cases = [
                (broker.create_topic("t", 1), "TOPIC_ALREADY_EXISTS"),
                (broker.create_topic("bad/name", 1), "INVALID_TOPIC_EXCEPTION"),
                (broker.create_topic("x" * 250, 1), "INVALID_TOPIC_EXCEPTION"),
                (broker.create_topic("n", -1), "INVALID_PARTITIONS"),
                (broker.create_topic("n", 100_000), "INVALID_PARTITIONS"),
                (broker.create_topic("n", 1, {"retention.mss": "1"}), "INVALID_CONFIG"),
                (broker.create_topic("n", 1, {"retention.ms": "soon"}), "INVALID_CONFIG"),
                (broker.create_topic("n", 1, {"cleanup.policy": "shred"}), "INVALID_CONFIG"),
                (broker.alter_configs("t", {"retention.ms": "-5"}), "INVALID_CONFIG"),
                (broker.alter_configs("t", {"no.such.key": "1"}), "INVALID_CONFIG"),
                (broker.alter_configs("t", None, ["no.such.key"]), "INVALID_CONFIG"),
                (broker.alter_configs("missing", {"retention.ms": "1"}), "UNKNOWN_TOPIC_OR_PARTITION"),
                (broker.delete_topic("missing"), "UNKNOWN_TOPIC_OR_PARTITION"),
            ]
            for coro, expected in cases:
                with pytest.raises(BrokerError) as exc_info:
                    await coro
                assert error_of(exc_info) == expected, (expected, exc_info.value)
            with pytest.raises(BrokerError) as exc_info:
                await broker.create_topic("n", 1, {"retention.mss": "1"})
            assert "retention.mss" in str(exc_info.value)
            assert [t.name for t in broker.list_topics()] == ["t"]
            configs = {c.name: c.value for c in broker.describe_configs("t")}
            assert configs["retention.ms"] == "5000"
            info = await broker.create_topic("v", 2, validate_only=True)
            assert info.name == "v" and [t.name for t in broker.list_topics()] == ["t"]

    run(body())


def test_produce_assigns_offsets_and_fetch_returns_the_stored_batches(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 2)
            r1 = await produce(broker, "t", 1, batch([b"a", b"b", b"c"], keys=[b"k1", b"k2", b"k3"]))
            r2 = await produce(broker, "t", 1, batch([b"d"], headers=[("h", b"v")]))
            assert (r1.base_offset, r2.base_offset) == (0, 3)
            records = await fetch_all(broker, "t", 1)
            assert [(r.offset, r.key, r.value) for r in records] == [
                (0, b"k1", b"a"), (1, b"k2", b"b"), (2, b"k3", b"c"), (3, None, b"d")]
            assert records[3].headers == [("h", b"v")]
            assert await fetch_all(broker, "t", 0) == []
            # Several partitions in one request; one bad partition does not fail the others.
            results = await broker.produce([ProducePartition("t", 0, batch([b"x"])),
                                            ProducePartition("t", 7, batch([b"y"])),
                                            ProducePartition("nope", 0, batch([b"z"]))], acks=-1)
            assert [r.error_name for r in results] == ["NONE", "UNKNOWN_TOPIC_OR_PARTITION",
                                                       "UNKNOWN_TOPIC_OR_PARTITION"]

    run(body())


def test_fetch_inside_a_batch_returns_the_whole_batch(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 1)
            await produce(broker, "t", 0, batch([b"%d" % i for i in range(10)]))
            await produce(broker, "t", 0, batch([b"%d" % i for i in range(10, 20)]))
            [result] = await broker.fetch([FetchPartition("t", 0, 14)], max_wait_ms=0)
            headers = [h for _, h in iter_headers(bytes(result.records))]
            assert [h.base_offset for h in headers] == [10]
            [result] = await broker.fetch([FetchPartition("t", 0, 5)], max_wait_ms=0)
            headers = [h for _, h in iter_headers(bytes(result.records))]
            assert headers[0].base_offset == 0 and headers[0].last_offset == 9

    run(body())


def test_high_watermark_follows_durability(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("safe", 1)  # default: fsync before acknowledging
            await broker.create_topic("fast", 1, {"flush.messages": "100000"})
            safe = broker.partition("safe", 0)
            fast = broker.partition("fast", 0)
            pending = broker.begin_produce([ProducePartition("safe", 0, batch([b"a", b"b"]))], acks=-1)
            # Written but not yet fsynced: consumers must not see it yet.
            assert safe.log_end_offset == 2 and safe.high_watermark == 0
            [fetched] = await broker.fetch([FetchPartition("safe", 0, 0)], max_wait_ms=0)
            assert fetched.records == b"" and fetched.high_watermark == 0
            [result] = await pending.wait()
            assert result.error_name == "NONE"
            assert safe.high_watermark == 2 and safe.log.durable_end_offset >= 2
            # Not fsync-before-ack: visible (and acknowledged) once written.
            broker.begin_produce([ProducePartition("fast", 0, batch([b"a"]))], acks=0)
            assert fast.high_watermark == 1
            # acks=0 answers without waiting for the flush; the flush still happens.
            [r0] = await broker.produce([ProducePartition("safe", 0, batch([b"c"]))], acks=0)
            assert r0.base_offset == 2
            assert await safe.wait_for(2, 5.0) and safe.high_watermark == 3
            # Switching the topic off fsync-before-ack never moves the high watermark back.
            await broker.alter_configs("safe", {"flush.messages": "1000"})
            broker.begin_produce([ProducePartition("safe", 0, batch([b"d"]))], acks=0)
            assert safe.high_watermark == 4

    run(body())


def test_produce_request_errors(tmp_path):
    async def body():
        async with open_broker(tmp_path, max_request_bytes=10_000) as broker:
            await broker.create_topic("t", 1)
            with pytest.raises(BrokerError) as exc_info:
                await broker.produce([ProducePartition("t", 0, batch([b"x"]))], acks=2)
            assert error_of(exc_info) == "INVALID_REQUIRED_ACKS"
            with pytest.raises(BrokerError) as exc_info:
                await broker.produce([ProducePartition("t", 0, batch([b"x" * 20_000]))], acks=1)
            assert error_of(exc_info) == "RECORD_LIST_TOO_LARGE"
            assert broker.partition("t", 0).log_end_offset == 0

    run(body())


def test_long_poll_returns_early_when_data_arrives(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            waiting = asyncio.create_task(broker.fetch(
                [FetchPartition("t", 0, 0), FetchPartition("t", 1, 0)], max_wait_ms=10_000, min_bytes=1))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            await produce(broker, "t", 1, batch([b"hello"]))
            results = await asyncio.wait_for(waiting, 5)
            elapsed = loop.time() - started
            assert elapsed < 5, elapsed  # woken by the append, not by max_wait
            assert results[0].records == b"" and results[1].records != b""
            # Nothing arrives: the wait ends at max_wait_ms with no records.
            started = loop.time()
            [empty] = await broker.fetch([FetchPartition("t", 0, 0)], max_wait_ms=300)
            assert empty.records == b"" and loop.time() - started >= 0.29
            # No watcher is left behind.
            assert broker.partition("t", 0)._watchers == {} and broker.partition("t", 1)._watchers == {}

    run(body())


def test_min_bytes_is_honored(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 1)
            waiting = asyncio.create_task(broker.fetch([FetchPartition("t", 0, 0)], max_wait_ms=10_000,
                                                       min_bytes=4000))
            await asyncio.sleep(0.1)
            await produce(broker, "t", 0, batch([b"small"]))
            await asyncio.sleep(0.3)
            assert not waiting.done(), "answered before min_bytes were available"
            await produce(broker, "t", 0, batch([b"x" * 5000]))
            [result] = await asyncio.wait_for(waiting, 5)
            assert len(result.records) >= 4000
            # min_bytes never reached: the answer at max_wait holds what there is.
            [partial] = await broker.fetch([FetchPartition("t", 0, 0)], max_wait_ms=200, min_bytes=1 << 20)
            assert 4000 <= len(partial.records) < 1 << 20

    run(body())


def test_fetch_errors(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 1)
            await produce(broker, "t", 0, batch([b"a", b"b"]))
            results = await broker.fetch([FetchPartition("t", 0, -1), FetchPartition("t", 0, 3),
                                          FetchPartition("u", 0, 0), FetchPartition("t", 0, 2)],
                                         max_wait_ms=5_000)
            assert [r.error_name for r in results] == ["OFFSET_OUT_OF_RANGE", "OFFSET_OUT_OF_RANGE",
                                                       "UNKNOWN_TOPIC_OR_PARTITION", "NONE"]
            with pytest.raises(BrokerError) as exc_info:
                await broker.fetch([FetchPartition("t", 0, 0)], max_wait_ms=-1)
            assert error_of(exc_info) == "INVALID_REQUEST"

    run(body())


def test_list_offsets(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 1)
            await produce(broker, "t", 0, batch([b"a", b"b", b"c"], timestamp=1000, step=1000))
            await produce(broker, "t", 0, batch([b"d"], timestamp=9000))

            def spec(ts):
                return ListOffsetsPartition("t", 0, ts)

            results = broker.list_offsets([spec(EARLIEST_TIMESTAMP), spec(LATEST_TIMESTAMP), spec(1500),
                                           spec(2000), spec(5000), spec(9001), ListOffsetsPartition("u", 0, 0)])
            assert [(r.offset, r.timestamp) for r in results[:6]] == [
                (0, -1), (4, -1), (1, 2000), (1, 2000), (3, 9000), (-1, -1)]
            assert results[6].error_name == "UNKNOWN_TOPIC_OR_PARTITION"

    run(body())


def test_subscribe_tails_from_an_offset_or_a_timestamp(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 1)
            await produce(broker, "t", 0, batch([b"a", b"b", b"c"], timestamp=1000, step=1000))
            stream = broker.subscribe("t", 0, offset=1, max_bytes=1 << 20)
            chunk = await anext(stream)
            assert chunk.start_offset == 1 and chunk.next_offset == 3
            following = asyncio.create_task(anext(stream))
            await asyncio.sleep(0.1)
            assert not following.done()
            await produce(broker, "t", 0, batch([b"d"], timestamp=4000))
            chunk = await asyncio.wait_for(following, 5)
            assert chunk.start_offset == 3 and chunk.next_offset == 4
            await stream.aclose()
            by_time = broker.subscribe("t", 0, timestamp_ms=2500)
            chunk = await anext(by_time)
            assert chunk.start_offset == 2
            await by_time.aclose()
            with pytest.raises(BrokerError) as exc_info:
                await anext(broker.subscribe("t", 0, offset=99))
            assert error_of(exc_info) == "OFFSET_OUT_OF_RANGE"

    run(body())


def test_metrics_count_records_from_batch_headers(tmp_path):
    async def body():
        async with open_broker(tmp_path) as broker:
            await broker.create_topic("t", 1)
            await produce(broker, "t", 0, batch([b"a", b"b", b"c"]))
            await fetch_all(broker, "t", 0)
            registry = broker.metrics.registry
            assert registry.get_sample_value("tidelog_records_in_total", {"topic": "t"}) == 3
            assert registry.get_sample_value("tidelog_records_out_total", {"topic": "t"}) == 3
            assert registry.get_sample_value("tidelog_bytes_in_total", {"topic": "t"}) > 61
            assert registry.get_sample_value("tidelog_log_end_offset", {"topic": "t", "partition": "0"}) == 3
            assert registry.get_sample_value("tidelog_partitions") == 1
            assert registry.get_sample_value("tidelog_request_latency_seconds_count", {"api": "produce"}) == 1

    run(body())


def test_retention_and_segment_roll_by_age(tmp_path):
    now = [1_700_000_000_000]

    async def body():
        async with open_broker(tmp_path, clock=lambda: now[0]) as broker:
            await broker.create_topic("t", 1, {"segment.ms": "1000", "retention.ms": "5000"})
            part = broker.partition("t", 0)
            await produce(broker, "t", 0, batch([b"old"], timestamp=now[0]))
            now[0] += 2000
            broker.run_housekeeping()  # segment.ms passed: the active segment rolls
            await produce(broker, "t", 0, batch([b"new"], timestamp=now[0]))
            assert len(part.log.segment_base_offsets) == 2
            now[0] += 4000  # the first segment is now older than retention.ms
            broker.run_housekeeping()
            assert part.log_start_offset == 1
            records = await fetch_all(broker, "t", 0, offset=1)
            assert [r.value for r in records] == [b"new"]

    run(body())


def test_one_broker_per_data_directory(tmp_path):
    async def body():
        async with open_broker(tmp_path):
            with pytest.raises(BrokerError, match="in use"):
                async with open_broker(tmp_path):
                    pass

    run(body())


def test_compaction_runs_in_the_background_for_compacted_topics(tmp_path):
    async def body():
        async with open_broker(tmp_path, compaction_interval_ms=100) as broker:
            await broker.create_topic("state", 1, {"cleanup.policy": "compact", "segment.bytes": "2000"})
            await broker.create_topic("events", 1, {"segment.bytes": "2000"})
            for round_ in range(10):
                keys = [b"key-%d" % k for k in range(5)]
                for topic in ("state", "events"):
                    await produce(broker, topic, 0, batch([b"v%d-" % round_ + b"x" * 100] * 5, keys=keys))
            assert len(broker.partition("state", 0).log.segment_base_offsets) > 2
            for _ in range(50):  # the compaction loop runs every 100 ms
                records = await fetch_all(broker, "state", 0)
                if len(records) < 50:
                    break
                await asyncio.sleep(0.1)
            latest = {}
            for r in records:
                latest[r.key] = r.value
            assert len(records) < 50  # older values of the sealed segments are gone
            assert latest == {b"key-%d" % k: b"v9-" + b"x" * 100 for k in range(5)}
            assert [r.offset for r in records] == sorted(r.offset for r in records)
            assert len(await fetch_all(broker, "events", 0)) == 50  # cleanup.policy=delete: untouched

    run(body())
