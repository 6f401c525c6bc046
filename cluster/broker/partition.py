"""The seam between the broker core and a partition's log.

The broker core (topics, produce with acks, fetch long-poll, list offsets) talks to every partition through
`Partition`. `LocalPartition` is the single-node implementation over a `storage.log.PartitionLog`; the
replicated implementation (one Raft group per partition, the partition log is the Raft log, the high
watermark is the Raft commit index) implements the same interface.

A produce is two steps so that many partitions (and many requests) share one durability wait:
`append()` validates and writes now, returning the assigned offsets; `wait_for_ack()` resolves once the
append is acknowledged (locally: durable per the topic's flush policy; replicated: committed for acks=all,
locally durable for acks=1).

Idempotent producers are checked here, beside the log (`ProducerStates`): a retried batch is answered with
its original offsets (AppendInfo.duplicate), an out-of-sequence or fenced one is refused, whatever front door
it came through.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import itertools
import logging
import struct
from dataclasses import dataclass
from typing import Callable

from cluster.broker.errors import (
    BrokerError,
    InvalidRequestError,
    NotLeaderOrFollowerError,
    StorageFailureError,
    translate,
)
from cluster.broker.producer_state import DUPLICATE, REJECT, ProducerStates, has_producer_ids
from cluster.broker.types import ACKS_ALL, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, TopicPartition

log = logging.getLogger(__name__)

_BATCH_LENGTH_AND_EPOCH = struct.Struct(">qi")
_RECORDS_COUNT = struct.Struct(">i")
_LAST_OFFSET_DELTA = struct.Struct(">i")
_HEADER_SIZE = 61


@dataclass(slots=True)
class AppendInfo:
    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 unless the topic uses LogAppendTime
    record_count: int
    size_bytes: int
    duplicate: bool = False  # an idempotent producer's retry: the offsets of the original append


def batches_summary(buf: bytes | memoryview) -> tuple[int, int, int]:
    """(batch count, record count, next offset after the last batch) of stored batches, from headers only."""
    batches = records = 0
    next_offset = -1
    pos = 0
    end = len(buf)
    while pos + _HEADER_SIZE <= end:
        base_offset, length = _BATCH_LENGTH_AND_EPOCH.unpack_from(buf, pos)
        size = 12 + length
        if size < _HEADER_SIZE or pos + size > end:
            break
        (last_delta,) = _LAST_OFFSET_DELTA.unpack_from(buf, pos + 23)
        (count,) = _RECORDS_COUNT.unpack_from(buf, pos + 57)
        batches += 1
        records += count
        next_offset = base_offset + last_delta + 1
        pos += size
    return batches, records, next_offset


class Partition(abc.ABC):
    """What the broker core needs of a partition. All methods run on the broker's event loop."""

    topic_partition: TopicPartition

    @property
    @abc.abstractmethod
    def log_start_offset(self) -> int: ...

    @property
    @abc.abstractmethod
    def log_end_offset(self) -> int: ...

    @property
    @abc.abstractmethod
    def high_watermark(self) -> int:
        """Offsets below it are visible to consumers (acknowledged per the partition's durability rule)."""

    @property
    @abc.abstractmethod
    def size_bytes(self) -> int: ...

    @property
    @abc.abstractmethod
    def leader_epoch(self) -> int: ...

    @property
    def leader_id(self) -> int:
        return 0

    @abc.abstractmethod
    def append(self, records: bytes | bytearray | memoryview, *, now_ms: int, acks: int = ACKS_ALL) -> AppendInfo:
        """Validate and write producer batches (offsets assigned here). Raises BrokerError (a replicated
        partition checks `acks`=all against min.insync.replicas before writing)."""

    @abc.abstractmethod
    async def wait_for_ack(self, last_offset: int, acks: int = ACKS_ALL) -> None:
        """Return once the append ending at `last_offset` is acknowledged per `acks`. Raises BrokerError."""

    def acknowledged(self, last_offset: int, acks: int = ACKS_ALL) -> bool:
        """Whether an append ending at `last_offset` needs no wait for `acks`."""
        return self.high_watermark > last_offset

    @abc.abstractmethod
    def read(self, offset: int, max_bytes: int) -> bytes | memoryview:
        """Whole batches from the one containing `offset`, none at or past the high watermark.

        At least one batch if there is one (even if larger than max_bytes); b"" at the high watermark.
        Raises OffsetOutOfRangeError outside [log_start_offset, log_end_offset].
        """

    @abc.abstractmethod
    def watch(self, offset: int, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake()` once the high watermark passes `offset` (or the partition closes).

        Returns a function that cancels the watch. Lets one fetch wait on many partitions at once.
        """

    async def wait_for(self, offset: int, timeout: float | None) -> bool:
        """Wait until the high watermark passes `offset`; False on timeout."""
        if self.high_watermark > offset:
            return True
        event = asyncio.Event()
        cancel = self.watch(offset, event.set)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            cancel()
        return self.high_watermark > offset

    @abc.abstractmethod
    def list_offset(self, timestamp: int) -> tuple[int, int]:
        """Kafka ListOffsets: (offset, timestamp) for EARLIEST/LATEST or the first record at or after
        `timestamp` below the high watermark; (-1, -1) when there is none."""

    async def delete_records(self, offset: int, *, timeout_s: float) -> int:
        """Kafka DeleteRecords: make `offset` (checked by the caller: 0 <= offset <= high watermark) the log start;
        records before it become unreadable. Returns the log start offset after it (the low watermark).
        Raises BrokerError."""
        raise InvalidRequestError("DeleteRecords is not supported by this partition type")

    @abc.abstractmethod
    def update_config(self, config) -> None:
        """Apply an altered topic configuration (a storage.config.LogConfig)."""

    @abc.abstractmethod
    def maintain(self, now_ms: int) -> None:
        """Periodic housekeeping: age-based segment roll and retention."""

    @abc.abstractmethod
    async def compact(self, now_ms: int, *, bytes_per_second: int | None) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop: fail pending acknowledgements, wake watchers, release the log."""


class LogPartition(Partition):
    """What partitions over a storage PartitionLog (`self._log`) share: the log's offsets, the high watermark
    and its watchers, ListOffsets below the high watermark, compaction below it, and the idempotent-producer
    check. Subclasses set `_high_watermark` through `_advance` and say when they refuse (`_check_open`)."""

    def _init_log_partition(self, topic_partition: TopicPartition, log_) -> None:
        self.topic_partition = topic_partition
        self._log = log_
        self._watchers: dict[int, tuple[int, Callable[[], None]]] = {}
        self._seq = itertools.count()
        self._producers = ProducerStates()
        self._compacting: asyncio.Task | None = None
        self._closed = False

    @property
    def log(self):
        return self._log

    @property
    def log_start_offset(self) -> int:
        return self._log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log.log_end_offset

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @property
    def size_bytes(self) -> int:
        return self._log.size_bytes

    @property
    def config(self):
        return self._log.config

    @abc.abstractmethod
    def _check_open(self) -> None:
        """Raise the BrokerError this partition answers reads with (closed, failed, not the leader)."""

    def _watching_stopped(self) -> bool:
        return self._closed

    def _advance(self, high_watermark: int) -> None:
        if high_watermark <= self._high_watermark:
            return
        self._high_watermark = high_watermark
        self._on_high_watermark(high_watermark)
        if self._watchers:
            for key, (offset, wake) in list(self._watchers.items()):
                if offset < high_watermark:
                    del self._watchers[key]
                    wake()

    def _on_high_watermark(self, high_watermark: int) -> None:
        """Hook: the high watermark moved to `high_watermark`."""

    def _wake_all(self) -> None:
        watchers, self._watchers = self._watchers, {}
        for _, wake in watchers.values():
            wake()

    def watch(self, offset: int, wake: Callable[[], None]) -> Callable[[], None]:
        if self._watching_stopped() or self._high_watermark > offset:
            wake()
            return _noop
        key = next(self._seq)
        self._watchers[key] = (offset, wake)
        return lambda: self._watchers.pop(key, None)

    def list_offset(self, timestamp: int) -> tuple[int, int]:
        self._check_open()
        if timestamp == EARLIEST_TIMESTAMP:
            return self._log.log_start_offset, -1
        if timestamp == LATEST_TIMESTAMP:
            return self._high_watermark, -1
        try:
            found = self._log.offset_for_timestamp(timestamp)
        except Exception as exc:
            raise translate(exc) from exc
        if found is None or found[0] >= self._high_watermark:
            return -1, -1
        return found

    def _check_producers(self, headers: list[tuple[int, ...]], next_offset: int | None = None):
        """The idempotent-producer verdict for validated batches: (AppendInfo of the original append when this
        is a retry, else None; the table to record the append in, None when no batch has a producer id).
        Raises BrokerError for refused batches (out of sequence, fenced epoch)."""
        if not any(h[9] >= 0 for h in headers):
            return None, None
        log_ = self._log
        try:
            table = self._producers.prepare(log_.read, log_.log_start_offset, log_.log_end_offset, next_offset)
        except Exception as exc:
            raise translate(exc) from exc
        verdict = ProducerStates.check(table, headers)
        if verdict.verdict == DUPLICATE:
            dup = verdict.duplicate
            return AppendInfo(dup.first_offset, dup.last_offset, -1, dup.last_offset - dup.first_offset + 1, 0,
                              duplicate=True), table
        if verdict.verdict == REJECT:
            raise BrokerError(verdict.message, error_name=verdict.error_name)
        return None, table

    async def delete_records(self, offset: int, *, timeout_s: float) -> int:
        """One log, no replicas: the storage's DeleteRecords (a durable log start checkpoint)."""
        self._check_open()
        try:
            start = await asyncio.to_thread(self._log.delete_records_before, offset)
        except Exception as exc:
            raise translate(exc) from exc
        self._producers.invalidate()
        return start

    async def compact(self, now_ms: int, *, bytes_per_second: int | None) -> None:
        if self._closed:
            return
        # Storage runs compaction safely beside appends; only what consumers may see is cleaned.
        self._compacting = asyncio.create_task(asyncio.to_thread(
            self._log.compact, now_ms, bytes_per_second=bytes_per_second, upper_bound=self._high_watermark))
        try:
            await asyncio.shield(self._compacting)
        finally:
            self._compacting = None


class LocalPartition(LogPartition):
    """A single-node partition over a PartitionLog.

    High watermark: with fsync-before-acknowledge (the default), the durable end offset; otherwise the log
    end offset (Kafka's flush.messages/flush.ms semantics: acknowledged once written). It never goes back.
    """

    def __init__(self, topic_partition: TopicPartition, log_, committer, *, leader_epoch: int = 0) -> None:
        self._init_log_partition(topic_partition, log_)
        self._committer = committer
        self._leader_epoch = leader_epoch
        self._fsync_before_ack = _fsync_before_ack(log_.config)
        self._high_watermark = log_.durable_end_offset if self._fsync_before_ack else log_.log_end_offset
        self._ack_waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap by last offset
        self._flush_task: asyncio.Task[None] | None = None
        self._failure: BrokerError | None = None
        committer.register(log_)  # flush.ms / flush.messages background policy
        if self._high_watermark < log_.log_end_offset:
            self._schedule_flush()

    # -- state -------------------------------------------------------------------------------------------

    @property
    def leader_epoch(self) -> int:
        return self._leader_epoch

    def _watching_stopped(self) -> bool:
        return self._closed or self._failure is not None

    def _check_open(self) -> None:
        if self._closed:
            raise NotLeaderOrFollowerError(f"partition {self.topic_partition} is closed")
        if self._failure is not None:
            raise self._failure

    # -- produce -----------------------------------------------------------------------------------------

    def append(self, records: bytes | bytearray | memoryview, *, now_ms: int, acks: int = ACKS_ALL) -> AppendInfo:
        self._check_open()
        table = headers = None
        if has_producer_ids(records):  # only then validate here (the log's append validates anyway)
            from storage.record_batch import validate_batches_raw

            try:
                headers = validate_batches_raw(records, max_batch_bytes=self._log.config.max_message_bytes)
            except Exception as exc:
                raise translate(exc) from exc
            duplicate, table = self._check_producers(headers)
            if duplicate is not None:
                return duplicate
        try:
            result = self._log.append(records, leader_epoch=self._leader_epoch, now_ms=now_ms)
        except Exception as exc:  # validation errors leave the log unchanged; storage errors are reported
            raise translate(exc) from exc
        if table is not None:
            offset = result.base_offset
            for h in headers:
                last = offset + h[12] - 1
                ProducerStates.record_appended(table, h, offset, last, result.log_append_time if
                                               result.log_append_time >= 0 else h[8])
                offset = last + 1
        if self._fsync_before_ack:
            self._schedule_flush()
        else:
            self._committer.notify_append(self._log)
            self._advance(self._log.log_end_offset)
        return AppendInfo(
            base_offset=result.base_offset,
            last_offset=result.last_offset,
            log_append_time_ms=result.log_append_time,
            record_count=result.last_offset - result.base_offset + 1,
            size_bytes=result.size_bytes,
        )

    async def wait_for_ack(self, last_offset: int, acks: int = ACKS_ALL) -> None:
        if self._high_watermark > last_offset:
            return
        self._check_open()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._ack_waiters, (last_offset, next(self._seq), future))
        await future

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(
                self._flush_loop(), name=f"flush {self.topic_partition}"
            )

    async def _flush_loop(self) -> None:
        # One loop per partition while there is unflushed data; the GroupCommitter coalesces fsyncs.
        try:
            while not self._closed and self._log.durable_end_offset < self._log.log_end_offset:
                await self._committer.wait_durable(self._log, self._log.log_end_offset - 1)
                self._advance(self._log.durable_end_offset)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("flush of %s failed: %s", self.topic_partition, exc)
            self._fail(StorageFailureError(f"fsync of {self.topic_partition} failed: {exc}"))

    def _on_high_watermark(self, high_watermark: int) -> None:
        waiters = self._ack_waiters
        while waiters and waiters[0][0] < high_watermark:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)

    def _fail(self, error: BrokerError) -> None:
        """A storage failure: the partition refuses writes from now on (Kafka takes the log dir offline)."""
        self._failure = error
        while self._ack_waiters:
            _, _, future = heapq.heappop(self._ack_waiters)
            if not future.done():
                future.set_exception(error)
        self._wake_all()

    # -- fetch -------------------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes | memoryview:
        self._check_open()
        try:
            return self._log.read(offset, max_bytes, upper_bound=self._high_watermark)
        except Exception as exc:
            raise translate(exc) from exc

    # -- configuration and housekeeping ------------------------------------------------------------------

    def update_config(self, config) -> None:
        self._log.update_config(config)
        fsync_before_ack = _fsync_before_ack(config)
        if self._fsync_before_ack and not fsync_before_ack:
            self._advance(self._log.log_end_offset)
        self._fsync_before_ack = fsync_before_ack

    def maintain(self, now_ms: int) -> None:
        if self._closed:
            return
        try:
            self._log.roll_if_due(now_ms)
            self._log.apply_retention(now_ms)
        except Exception as exc:
            log.error("housekeeping of %s failed: %s", self.topic_partition, exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        error = NotLeaderOrFollowerError(f"partition {self.topic_partition} was closed")
        task = self._flush_task
        if task is not None and not task.done():
            try:
                # Let an fsync in progress finish: the worker thread must not race close().
                await asyncio.wait_for(asyncio.shield(task), 30)
            except BaseException:
                task.cancel()
        if self._compacting is not None:
            # The compactor thread must finish before the files close; it honours its I/O budget, so bounded.
            await asyncio.gather(self._compacting, return_exceptions=True)
        while self._ack_waiters:
            _, _, future = heapq.heappop(self._ack_waiters)
            if not future.done():
                future.set_exception(error)
        self._wake_all()
        self._committer.forget(self._log)
        await asyncio.to_thread(self._log.close)


def _fsync_before_ack(config) -> bool:
    """tidelog's default (flush.messages=1): acknowledge only what is fsynced."""
    value = getattr(config, "fsync_before_ack", None)
    if value is not None:
        return bool(value() if callable(value) else value)
    return getattr(config, "flush_messages", 1) == 1


def _noop() -> None:
    return None
