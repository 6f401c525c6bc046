"""Consumer.pause/resume/paused: a paused partition stays assigned and keeps its position, is not fetched, its
records already buffered are not returned, and after resume() its records come in order from the position."""

from __future__ import annotations

import time

import pytest

from tidelog import Admin, Consumer, Producer, TopicPartition

P0, P1 = TopicPartition("paused", 0), TopicPartition("paused", 1)


def _produce(bootstrap: str, start: int, count: int) -> dict[int, list[tuple[int, bytes]]]:
    """`count` records to each partition -> {partition: [(offset, value)]}."""
    with Producer(bootstrap, linger_ms=1) as producer:
        futures = [(p, b"%d-%d" % (p, i), producer.send("paused", b"%d-%d" % (p, i), partition=p))
                   for i in range(start, start + count) for p in (0, 1)]
        producer.flush(30)
        sent: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
        for p, value, f in futures:
            sent[p].append((f.result(30).offset, value))
    return sent


def _poll_for(consumer: Consumer, seconds: float) -> list:
    """Every record polled within `seconds`."""
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += consumer.poll(0.1)
    return got


def _poll_until(consumer: Consumer, done, max_records: int | None = None, timeout: float = 30) -> list:
    """Records polled until done(records) (bounded by `timeout`)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while not done(got) and time.monotonic() < deadline:
        got += consumer.poll(1.0, max_records=max_records)
    return got


def _topic_with_records(bootstrap: str, count: int) -> dict[int, list[tuple[int, bytes]]]:
    with Admin(bootstrap) as admin:
        admin.create_topic("paused", 2)
    return _produce(bootstrap, 0, count)


def test_pause_holds_one_partition_and_resume_continues_from_its_position(tidelog_broker):
    bootstrap = tidelog_broker.bootstrap
    first = _topic_with_records(bootstrap, 10)
    with Consumer(bootstrap) as consumer:
        consumer.assign([P0, P1])
        assert consumer.paused() == set()
        # Some of partition 0 returned, the rest of it (and partition 1) fetched and buffered.
        got = _poll_until(consumer, lambda rs: any(r.partition == 0 for r in rs), max_records=2)
        returned_p0 = [r.offset for r in got if r.partition == 0]
        assert returned_p0 and returned_p0 == [o for o, _ in first[0][:len(returned_p0)]]
        resume_at = returned_p0[-1] + 1
        assert consumer.position(P0) == resume_at
        assert any(r.partition == 0 for r in consumer._buffer)  # fetched, not returned yet

        consumer.pause(("paused", 0))  # (topic, partition) tuples as elsewhere in the API
        assert consumer.paused() == {P0}
        assert consumer.assignment() == {P0, P1}
        assert consumer.position(P0) == resume_at  # what was buffered of it is dropped, the position kept
        second = _produce(bootstrap, 10, 5)

        while_paused = _poll_for(consumer, 1.5)
        assert while_paused, "nothing of the partition that is not paused"
        assert {r.partition for r in while_paused} == {1}
        got_p1 = [r for r in got + while_paused if r.partition == 1]
        assert [r.offset for r in got_p1] == [o for o, _ in first[1] + second[1]]  # all of it, in order
        assert consumer.position(P0) == resume_at

        consumer.resume([P0])  # an iterable of TopicPartitions
        assert consumer.paused() == set()
        expected_p0 = [o for o, _ in first[0] + second[0] if o >= resume_at]
        after = _poll_until(consumer, lambda rs: len(rs) >= len(expected_p0))
        assert [(r.partition, r.offset) for r in after] == [(0, o) for o in expected_p0]
        assert [r.value for r in after] == [v for o, v in first[0] + second[0] if o >= resume_at]


def test_pause_arguments_assignment_and_seek(tidelog_broker):
    bootstrap = tidelog_broker.bootstrap
    first = _topic_with_records(bootstrap, 3)
    with Consumer(bootstrap) as consumer:
        consumer.assign([P0])
        with pytest.raises(ValueError, match="not assigned"):
            consumer.pause(P1)
        with pytest.raises(ValueError, match="not assigned"):
            consumer.resume(("paused", 1))
        consumer.pause(P0)
        consumer.pause(P0)  # again: nothing changes
        consumer.assign([P0, P1])  # still assigned: still paused
        assert consumer.paused() == {P0}
        # Everything paused: poll waits its timeout and returns nothing.
        consumer.pause(P1)
        started = time.monotonic()
        assert consumer.poll(0.3) == []
        assert time.monotonic() - started < 10
        # A seek of a paused partition moves its position; it is read from there after resume.
        consumer.seek(P0, first[0][1][0])
        assert _poll_for(consumer, 0.5) == []
        consumer.resume(P0, P1)
        got = _poll_until(consumer, lambda rs: len(rs) >= 5)
        assert sorted((r.partition, r.offset) for r in got) == \
            [(0, o) for o, _ in first[0][1:]] + [(1, o) for o, _ in first[1]]
        # An assignment without the partition drops it from the paused set.
        consumer.pause(P0, P1)
        consumer.assign([P1])
        assert consumer.paused() == {P1}
        consumer.assign([P0, P1])
        assert consumer.paused() == {P1}
