"""Dead-letter handling: retry a failing record, then park it on a dead-letter topic and go on.

    dead_letters = DeadLetterQueue(bootstrap, handle, max_attempts=3, backoff_ms=100)
    for record in group_consumer:
        dead_letters(record)          # True: handled; False: parked on TOPIC.dlq

A record whose handler raises is retried (`max_attempts` calls in all) with exponential backoff; after the
last failure it is produced, acknowledged (acks=all), to the dead-letter topic (`TOPIC.dlq` by default,
created on first use) with its key, value and headers plus:

    dlq.error.type         the exception's class name (module-qualified)
    dlq.error.message      str(exception), at most 4 KiB
    dlq.original.topic     where the record came from
    dlq.original.partition
    dlq.original.offset
    dlq.original.timestamp
    dlq.attempts           how many times the handler ran

Only once the dead letter is acknowledged does the call return, so a consumer that commits afterwards never
loses a record (at-least-once). `replay(bootstrap, "orders.dlq")` (the `tidelog dlq replay` command) sends
dead letters back to their origin topic with the same key, value and headers minus the dlq.* ones,
remembering its progress as the committed offsets of group `tidelog-dlq-replay`.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Iterable

from tidelog.errors import TidelogError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from tidelog.records import ConsumerRecord, TopicPartition

log = logging.getLogger("tidelog.dlq")

DLQ_SUFFIX = ".dlq"
HEADER_PREFIX = "dlq."
ERROR_TYPE = "dlq.error.type"
ERROR_MESSAGE = "dlq.error.message"
ORIGINAL_TOPIC = "dlq.original.topic"
ORIGINAL_PARTITION = "dlq.original.partition"
ORIGINAL_OFFSET = "dlq.original.offset"
ORIGINAL_TIMESTAMP = "dlq.original.timestamp"
ATTEMPTS = "dlq.attempts"
REPLAY_GROUP = "tidelog-dlq-replay"
MAX_ERROR_MESSAGE_BYTES = 4096


def dlq_topic_for(topic: str) -> str:
    return topic + DLQ_SUFFIX


def dead_letter_headers(record: ConsumerRecord, error: BaseException, attempts: int) -> list[tuple[str, bytes]]:
    """The record's own headers (minus older dlq.* ones) plus what went wrong and where it came from."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    message = str(error).encode("utf-8", errors="replace")[:MAX_ERROR_MESSAGE_BYTES]
    own = [(k, v) for k, v in record.headers if not k.startswith(HEADER_PREFIX)]
    return own + [
        (ERROR_TYPE, name.encode()),
        (ERROR_MESSAGE, message),
        (ORIGINAL_TOPIC, record.topic.encode()),
        (ORIGINAL_PARTITION, str(record.partition).encode()),
        (ORIGINAL_OFFSET, str(record.offset).encode()),
        (ORIGINAL_TIMESTAMP, str(record.timestamp).encode()),
        (ATTEMPTS, str(attempts).encode()),
    ]


class DeadLetterQueue:
    """Wraps `handler(record)`: retries, then dead-letters. Call it with each record; not thread-safe."""

    def __init__(self, bootstrap: str | None, handler: Callable[[ConsumerRecord], Any], *,
                 max_attempts: int = 3, backoff_ms: float = 100, backoff_multiplier: float = 2.0,
                 max_backoff_ms: float = 10_000, dlq_topic: str | Callable[[str], str] | None = None,
                 dlq_partitions: int = 1, retry_on: tuple[type[BaseException], ...] = (Exception,),
                 producer=None, send_timeout_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff_ms < 0 or backoff_multiplier < 1 or max_backoff_ms < 0:
            raise ValueError("backoff_ms and max_backoff_ms must be >= 0, backoff_multiplier >= 1")
        self.bootstrap = bootstrap
        self.handler = handler
        self.max_attempts = max_attempts
        self.backoff = backoff_ms / 1000
        self.backoff_multiplier = backoff_multiplier
        self.max_backoff = max_backoff_ms / 1000
        self._dlq_topic = dlq_topic
        self.dlq_partitions = dlq_partitions
        self.retry_on = retry_on
        self.send_timeout = send_timeout_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._producer = producer
        self._own_producer = producer is None
        self._known_topics: set[str] = set()
        self.processed = 0
        self.dead_lettered = 0

    def topic_for(self, topic: str) -> str:
        if self._dlq_topic is None:
            return dlq_topic_for(topic)
        return self._dlq_topic(topic) if callable(self._dlq_topic) else self._dlq_topic

    def __call__(self, record: ConsumerRecord) -> bool:
        """Run the handler; True once it succeeded, False once the record was dead-lettered."""
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                self.handler(record)
            except self.retry_on as exc:
                if attempt == self.max_attempts:
                    self._dead_letter(record, exc, attempt)
                    return False
                log.info("record %s-%d@%d failed (attempt %d/%d): %s", record.topic, record.partition,
                         record.offset, attempt, self.max_attempts, exc)
                # Full jitter keeps many failing consumers from retrying in lock step.
                self._sleep(self._rng.uniform(0.5, 1.0) * min(delay, self.max_backoff))
                delay *= self.backoff_multiplier
            else:
                self.processed += 1
                return True
        raise AssertionError("unreachable")

    def process(self, records: Iterable[ConsumerRecord]) -> tuple[int, int]:
        """Handle every record; -> (handled, dead-lettered)."""
        ok = dead = 0
        for record in records:
            if self(record):
                ok += 1
            else:
                dead += 1
        return ok, dead

    def _dead_letter(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        topic = self.topic_for(record.topic)
        self._ensure_topic(topic)
        headers = dead_letter_headers(record, error, attempts)
        future = self._get_producer().send(topic, record.value, key=record.key, headers=headers,
                                           timestamp_ms=record.timestamp)
        future.result(self.send_timeout)  # acknowledged before the caller may commit past the record
        self.dead_lettered += 1
        log.warning("record %s-%d@%d dead-lettered to %s after %d attempt(s): %s: %s", record.topic,
                    record.partition, record.offset, topic, attempts, type(error).__name__, error)

    def _get_producer(self):
        if self._producer is None:
            from tidelog.producer import Producer

            self._producer = Producer(self.bootstrap, acks="all", linger_ms=0, retries=5)
        return self._producer

    def _ensure_topic(self, topic: str) -> None:
        if topic in self._known_topics:
            return
        from tidelog.admin import Admin

        with Admin(self.bootstrap) as admin:
            try:
                admin.create_topic(topic, self.dlq_partitions)
                log.info("created dead-letter topic %s", topic)
            except TopicAlreadyExistsError:
                pass
        self._known_topics.add(topic)

    def close(self) -> None:
        if self._producer is not None and self._own_producer:
            self._producer.close()
            self._producer = None

    def __enter__(self) -> "DeadLetterQueue":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def replay(bootstrap: str | None, dlq_topic: str, *, max_messages: int | None = None, from_beginning: bool = False,
           group_id: str = REPLAY_GROUP, progress: Callable[[int], None] | None = None,
           timeout_s: float = 30.0) -> int:
    """Send the dead letters of `dlq_topic` back to their origin topics (same key, value and headers minus
    dlq.*; the original partition when it still exists) and commit the progress under `group_id`, so a
    second replay sends only newer dead letters. Reads up to the end offsets seen at the start. -> records sent."""
    from tidelog.consumer import Consumer
    from tidelog.group_consumer import GroupAdmin
    from tidelog.producer import Producer

    sent = 0
    with Consumer(bootstrap, request_timeout_ms=int(timeout_s * 1000)) as consumer, \
            GroupAdmin(bootstrap, request_timeout_ms=int(timeout_s * 1000)) as admin:
        count = consumer.partitions_for(dlq_topic)
        tps = [TopicPartition(dlq_topic, p) for p in range(count)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        committed = {} if from_beginning else {tp: o for tp, o in admin.committed(group_id).items()
                                               if tp.topic == dlq_topic}
        positions = {}
        for tp in tps:
            positions[tp] = min(max(committed.get(tp, starts[tp]), starts[tp]), ends[tp])
            consumer.seek(tp, positions[tp])
        pending = {tp for tp in tps if positions[tp] < ends[tp]}
        done: dict[TopicPartition, int] = {}
        counts: dict[str, int] = {}
        deadline = time.monotonic() + timeout_s
        with Producer(bootstrap, acks="all", linger_ms=5, retries=5) as producer:
            futures = []
            while pending and (max_messages is None or sent < max_messages):
                records = consumer.poll(timeout=0.5)
                if records:
                    deadline = time.monotonic() + timeout_s
                elif time.monotonic() > deadline:
                    raise TidelogError(f"no records from {dlq_topic} within {timeout_s:g}s")
                for record in records:
                    tp = TopicPartition(record.topic, record.partition)
                    if tp not in pending or record.offset >= ends[tp]:
                        continue
                    origin, partition = _origin_of(record)
                    if origin is None:
                        raise TidelogError(f"record {tp}@{record.offset} has no {ORIGINAL_TOPIC} header: "
                                           f"is {dlq_topic} a dead-letter topic?")
                    if origin not in counts:
                        try:
                            counts[origin] = producer.partitions_for(origin)
                        except UnknownTopicOrPartitionError:
                            raise TidelogError(f"origin topic {origin!r} of {tp}@{record.offset} does not exist") \
                                from None
                    headers = [(k, v) for k, v in record.headers if not k.startswith(HEADER_PREFIX)]
                    use = partition if partition is not None and partition < counts[origin] else None
                    futures.append(producer.send(origin, record.value, key=record.key, headers=headers,
                                                 partition=use, timestamp_ms=record.timestamp))
                    sent += 1
                    done[tp] = record.offset + 1
                    if done[tp] >= ends[tp]:
                        pending.discard(tp)
                    if progress is not None:
                        progress(sent)
                    if max_messages is not None and sent >= max_messages:
                        break
            producer.flush(timeout_s)
            for future in futures:
                future.result(timeout_s)
        if done:
            from proto.rpc import groups_v1_pb2 as gpb

            admin._call("GroupCommit", gpb.GroupCommitRequest(
                group_id=group_id, member_id="", generation_id=-1,
                offsets=[gpb.GroupOffset(topic=tp.topic, partition=tp.partition, offset=o) for tp, o in done.items()]))
    return sent


def _origin_of(record: ConsumerRecord) -> tuple[str | None, int | None]:
    headers = {k: v for k, v in record.headers}
    topic = headers.get(ORIGINAL_TOPIC)
    partition = headers.get(ORIGINAL_PARTITION)
    try:
        index = int(partition) if partition is not None else None
    except ValueError:
        index = None
    return (topic.decode("utf-8", errors="replace") if topic else None), index



def add_dlq_commands(commands, client) -> None:
    """`tidelog dlq replay TOPIC.dlq` (registered by tidelog.cli)."""
    from tidelog.cli import _Parser, _positive

    p = commands.add_parser("dlq", help="dead-letter topics: replay", description="Dead-letter topics.")
    sub = p.add_subparsers(dest="dlq_command", metavar="ACTION", parser_class=_Parser)
    sub.required = True
    r = sub.add_parser("replay", parents=[client], help="send dead letters back to their origin topic",
                       description="Send the records of a dead-letter topic back to their origin topic (same key, "
                                   "value and headers minus the dlq.* ones). Progress is kept as the committed "
                                   f"offsets of group {REPLAY_GROUP!r}: a second replay sends only newer records.")
    r.add_argument("topic", metavar="TOPIC.dlq")
    r.add_argument("--max-messages", type=_positive, metavar="N", help="stop after N records")
    r.add_argument("--from-beginning", action="store_true", help="replay every record again, not only new ones")
    r.add_argument("--group", default=REPLAY_GROUP, help=f"group keeping the progress (default {REPLAY_GROUP})")
    r.set_defaults(func=_cmd_replay)


def _cmd_replay(args) -> int:
    import sys

    from tidelog.cli import CliError

    last = [0.0]

    def progress(sent: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            print(f"replayed {sent} record(s)...", file=sys.stderr, flush=True)

    try:
        sent = replay(args.bootstrap, args.topic, max_messages=args.max_messages, from_beginning=args.from_beginning,
                      group_id=args.group, progress=progress, timeout_s=args.timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"replayed {sent} record(s) from {args.topic}")
    return 0


__all__ = ["DeadLetterQueue", "add_dlq_commands", "dead_letter_headers", "dlq_topic_for", "replay", "REPLAY_GROUP"]
