"""Dead letters: a poison record is retried, then parked on TOPIC.dlq with headers saying what failed and
where it came from; the rest is processed; `tidelog dlq replay` sends it back to its origin."""

from __future__ import annotations

import time

from groups_harness import create_topic

from tidelog.cli import main
from tidelog.consumer import Consumer
from tidelog.dlq import DeadLetterQueue
from tidelog.group_consumer import GroupConsumer
from tidelog.producer import Producer


def _all_records(grpc: str, topic: str, expected: int, timeout: float = 20.0):
    with Consumer(grpc, topics=[topic], auto_offset_reset="earliest") as c:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            out += c.poll(0.5)
        return out


def test_poison_record_is_dead_lettered_and_replayed(node, capsys):
    topic = "orders"
    create_topic(node.grpc, topic, 2)
    with Producer(node.grpc) as p:
        for i in range(20):
            p.send(topic, f"ok-{i}".encode(), key=f"k{i}".encode())
        p.send(topic, b"poison", key=b"bad-key", headers=[("trace", b"abc")])
        p.flush(10)

    attempts: dict[bytes, int] = {}
    handled: list[bytes] = []

    def handle(record) -> None:
        attempts[record.value] = attempts.get(record.value, 0) + 1
        if record.value == b"poison":
            raise ValueError("cannot parse order")
        handled.append(record.value)

    sleeps: list[float] = []
    dead_letters = DeadLetterQueue(node.grpc, handle, max_attempts=3, backoff_ms=20,
                                   sleep=lambda s: (sleeps.append(s), time.sleep(s)))
    with GroupConsumer(node.grpc, "dlq-group", [topic], auto_commit_interval_ms=100) as consumer:
        deadline = time.monotonic() + 30
        for record in consumer:
            dead_letters(record)
            if len(handled) == 20 and dead_letters.dead_lettered == 1 or time.monotonic() > deadline:
                break
        consumer.commit()
    dead_letters.close()
    assert sorted(handled) == sorted(f"ok-{i}".encode() for i in range(20))  # processing went on
    assert attempts[b"poison"] == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9  # backoff grows

    [dead] = _all_records(node.grpc, "orders.dlq", 1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (b"bad-key", b"poison")
    assert headers["dlq.error.type"] == b"ValueError"
    assert headers["dlq.error.message"] == b"cannot parse order"
    assert headers["dlq.original.topic"] == b"orders"
    assert headers["dlq.attempts"] == b"3"
    assert headers["trace"] == b"abc"
    original = [r for r in _all_records(node.grpc, topic, 21) if r.value == b"poison"][0]
    assert headers["dlq.original.partition"] == str(original.partition).encode()
    assert headers["dlq.original.offset"] == str(original.offset).encode()

    capsys.readouterr()
    assert main(["dlq", "replay", "orders.dlq", "--bootstrap", node.grpc]) == 0
    assert "replayed 1 record(s) from orders.dlq" in capsys.readouterr().out
    replayed = [r for r in _all_records(node.grpc, topic, 22) if r.value == b"poison"]
    assert len(replayed) == 2
    again = replayed[-1]
    assert again.key == b"bad-key" and again.partition == original.partition and again.offset > original.offset
    assert dict(again.headers) == {"trace": b"abc"}  # the dlq.* headers are gone
    # Progress is remembered: nothing new to replay.
    assert main(["dlq", "replay", "orders.dlq", "--bootstrap", node.grpc, "--max-messages", "5"]) == 0
    assert "replayed 0 record(s)" in capsys.readouterr().out
