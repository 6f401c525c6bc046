"""The tidelog producer: Kafka's producer model over the gRPC API.

`send()` runs in the caller's thread: it picks the partition (murmur2 of the key, as Kafka's Java client;
sticky for null keys), appends the record to that partition's open batch and returns a future. A sender
coroutine on the client's loop thread closes batches that are full (`batch_size`) or old (`linger_ms`),
encodes them as RecordBatch v2 (with `compression`) and writes them, many partitions per request, on one
ProduceStream per partition leader (a cluster's brokers each lead some partitions; `bootstrap` may list
several brokers, any one reachable will do); the broker answers each request once `acks` is satisfied.
Retriable failures (NOT_LEADER_OR_FOLLOWER, a lost connection, a timeout, NOT_ENOUGH_REPLICAS) are retried
after `retry_backoff_ms` until `delivery_timeout_ms`, against the leader the cluster names after a metadata
refresh. `max_in_flight` requests may be outstanding per broker; with more than 1 a retry may land after a
later batch of the same partition, as in Kafka without idempotence; set it to 1 for strict order under
failures.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import grpc

from proto.rpc import tidelog_v1_pb2 as pb
from storage.compression import Compression
from storage.record_batch import RecordInput, build_batch
from tidelog._cluster import ClusterClient
from tidelog._transport import rpc_error
from tidelog.errors import (
    BrokerUnavailableError,
    MessageTooLargeError,
    ProducerClosedError,
    RequestTimedOutError,
    TidelogError,
    UnknownTopicOrPartitionError,
    error_for,
)
from tidelog.partitioner import StickyPartitioner, partition_for_key

RECORD_OVERHEAD = 21  # a record's framing at most (varints), as Kafka's estimate
BATCH_OVERHEAD = 61
Header = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    topic: str
    partition: int
    offset: int  # -1 with acks=0
    timestamp: int


def parse_acks(acks: int | str) -> int:
    if isinstance(acks, str):
        text = acks.strip().lower()
        if text == "all":
            return -1
        try:
            acks = int(text)
        except ValueError:
            raise ValueError(f"acks must be 0, 1, -1 or 'all', got {acks!r}") from None
    if acks not in (0, 1, -1):
        raise ValueError(f"acks must be 0, 1, -1 or 'all', got {acks!r}")
    return acks


class _Batch:
    """Records of one partition sent together; completes all its futures at once."""

    __slots__ = ("topic", "partition", "records", "size", "created", "attempts", "retry_at", "deadline",
                 "base_offset", "log_append_time", "error", "done", "callbacks", "encoded", "count", "sent_at",
                 "last_error")

    def __init__(self, topic: str, partition: int, created: float, deadline: float) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[RecordInput] = []
        self.size = BATCH_OVERHEAD
        self.created = created
        self.deadline = deadline
        self.attempts = 0
        self.retry_at = 0.0
        self.base_offset = -1
        self.log_append_time = -1
        self.error: TidelogError | None = None
        self.done = threading.Event()
        self.callbacks: list[tuple[int, Callable]] | None = None
        self.encoded: bytes | None = None
        self.count = 0
        self.sent_at = 0.0
        self.last_error: TidelogError | None = None  # why the last attempt failed (reported on expiry)


class FutureRecordMetadata:
    """What `send()` returns: `.result(timeout)` -> RecordMetadata, or raises the delivery error."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        return self._batch.done.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        batch = self._batch
        if not batch.done.wait(timeout):
            raise RequestTimedOutError(f"record not acknowledged within {timeout:g}s")
        if batch.error is not None:
            raise batch.error
        offset = batch.base_offset + self._index if batch.base_offset >= 0 else -1
        record = batch.records[self._index]
        timestamp = batch.log_append_time if batch.log_append_time >= 0 else record.timestamp
        return RecordMetadata(batch.topic, batch.partition, offset, timestamp)

    get = result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except TidelogError as exc:
            return exc
        return None

    def add_done_callback(self, fn: Callable[["FutureRecordMetadata"], None]) -> None:
        """`fn(future)` runs once delivered or failed (on the producer's thread; keep it short)."""
        batch = self._batch
        with _CALLBACK_LOCK:
            if not batch.done.is_set():
                if batch.callbacks is None:
                    batch.callbacks = []
                batch.callbacks.append((self._index, fn))
                return
        fn(self)


_CALLBACK_LOCK = threading.Lock()


class Producer:
    """Send records to tidelog. Thread-safe. Use as a context manager or call `close()`."""

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        acks: int | str = "all",
        linger_ms: float = 5,
        batch_size: int = 16384,
        compression: str | Compression = "none",
        retries: int = 2**31 - 1,
        retry_backoff_ms: int = 100,
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 30_000,
        max_in_flight: int = 5,
        max_request_size: int = 1024 * 1024,
        buffer_memory: int = 32 * 1024 * 1024,
        max_block_ms: int = 60_000,
        partitioner: Callable[[bytes, int], int] | None = None,
    ) -> None:
        self.acks = parse_acks(acks)
        if linger_ms < 0 or batch_size <= 0 or max_in_flight <= 0 or retries < 0 or max_request_size <= 0:
            raise ValueError("linger_ms, retries must be >= 0; batch_size, max_in_flight, max_request_size > 0")
        self.linger = linger_ms / 1000
        self.batch_size = batch_size
        self.compression = Compression.parse(compression)
        self.retries = retries
        self.retry_backoff = retry_backoff_ms / 1000
        self.delivery_timeout = delivery_timeout_ms / 1000
        self.request_timeout_ms = request_timeout_ms
        self.max_in_flight = max_in_flight
        self.max_request_size = max_request_size
        self.buffer_memory = buffer_memory
        self.max_block = max_block_ms / 1000
        self._partition_for_key = partitioner or partition_for_key
        self._sticky = StickyPartitioner()
        self._cluster = ClusterClient(bootstrap, request_timeout_ms=request_timeout_ms)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._partition_counts: dict[str, int] = {}
        self._open: dict[tuple[str, int], _Batch] = {}
        self._ready: collections.deque[_Batch] = collections.deque()
        self._incomplete: set[_Batch] = set()
        self._buffered = 0
        self._flushes = 0
        self._closing = False
        self._closed = False
        self._sender_idle = True  # sleeping with no deadline: a new batch must wake it
        self._wakeup: asyncio.Event | None = None
        self._correlation = itertools.count(1)
        # (seconds from the request's write to its acknowledgement, seconds since the batch opened), per batch.
        self.batch_latencies: collections.deque[tuple[float, float]] = collections.deque(maxlen=1_000_000)
        self._cluster.loop_thread.run(self._start_sender())

    # -- public API --------------------------------------------------------------------------------------

    def send(self, topic: str, value: bytes | str | None = None, *, key: bytes | str | None = None,
             partition: int | None = None, timestamp_ms: int | None = None,
             headers: Sequence[Header] | None = None) -> FutureRecordMetadata:
        if self._closing:
            raise ProducerClosedError("send() after close()")
        if isinstance(value, str):
            value = value.encode()
        if isinstance(key, str):
            key = key.encode()
        count = self._partition_counts.get(topic) or self._fetch_partition_count(topic)
        if partition is None:
            if key is not None:
                partition = self._partition_for_key(key, count)
            else:
                partition = self._sticky.partition(topic, count)
        elif not 0 <= partition < count:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} has {count} partitions; there is no {partition}")
        hdrs = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers] if headers else ()
        size = RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
        for hk, hv in hdrs:
            size += len(hk) + (len(hv) if hv else 0) + 2
        if size + BATCH_OVERHEAD > self.max_request_size:
            raise MessageTooLargeError(
                f"record of about {size} bytes exceeds max_request_size={self.max_request_size}")
        record = RecordInput(key, value, time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms, hdrs)
        wake = False
        with self._lock:
            if self._buffered + size > self.buffer_memory:
                self._wait_for_space(size)
            tp = (topic, partition)
            batch = self._open.get(tp)
            if batch is not None and batch.size + size > self.batch_size and batch.records:
                self._close_batch(tp, batch, count)
                wake = True
                batch = None
            if batch is None:
                now = time.monotonic()
                batch = _Batch(topic, partition, now, now + self.delivery_timeout)
                self._open[tp] = batch
                self._incomplete.add(batch)
                if self._sender_idle:
                    self._sender_idle = False
                    wake = True
            index = len(batch.records)
            batch.records.append(record)
            batch.size += size
            self._buffered += size
            if batch.size >= self.batch_size:
                self._close_batch(tp, batch, count)
                wake = True
        if wake:
            self._wake()
        return FutureRecordMetadata(batch, index)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered now and wait until each record is acknowledged or failed."""
        with self._lock:
            pending = list(self._incomplete)
            self._flushes += 1
        try:
            self._wake()
            deadline = None if timeout is None else time.monotonic() + timeout
            for batch in pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not batch.done.wait(remaining):
                    raise RequestTimedOutError(f"flush did not complete within {timeout:g}s")
        finally:
            with self._lock:
                self._flushes -= 1

    def partitions_for(self, topic: str) -> int:
        """The number of partitions of `topic` (cached)."""
        return self._partition_counts.get(topic) or self._fetch_partition_count(topic)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush (up to `timeout` seconds), then fail whatever is left and stop."""
        if self._closed:
            return
        self._closing = True
        try:
            self.flush(timeout)
        except TidelogError:
            pass
        finally:
            self._closed = True
            with self._lock:
                leftovers = list(self._incomplete)
            for batch in leftovers:
                self._complete(batch, ProducerClosedError("producer closed before the record was acknowledged"))
            try:
                self._cluster.loop_thread.run(self._stop_sender(), 5)
            except Exception:
                pass
            self._cluster.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- caller-thread helpers ---------------------------------------------------------------------------

    def _fetch_partition_count(self, topic: str) -> int:
        response = self._cluster.call_any(lambda c: c.admin.DescribeTopic, pb.DescribeTopicRequest(name=topic))
        count = len(response.topic.partitions)
        self._partition_counts[topic] = count
        return count

    def _wait_for_space(self, size: int) -> None:
        deadline = time.monotonic() + self.max_block
        self._flushes += 1  # drain eagerly while someone is blocked
        try:
            while self._buffered + size > self.buffer_memory and self._buffered > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimedOutError(f"buffer_memory={self.buffer_memory} full for {self.max_block:g}s: "
                                               "the broker is not keeping up")
                self._cluster.loop_thread.call_soon(self._set_wakeup)
                self._space.wait(min(remaining, 0.1))
        finally:
            self._flushes -= 1

    def _close_batch(self, tp: tuple[str, int], batch: _Batch, count: int) -> None:
        del self._open[tp]
        self._ready.append(batch)
        if batch.records and batch.records[0].key is None:
            self._sticky.on_new_batch(tp[0], count, tp[1])

    def _wake(self) -> None:
        try:
            self._cluster.loop_thread.call_soon(self._set_wakeup)
        except RuntimeError:  # loop closed
            pass

    # -- sender (runs on the loop thread) ----------------------------------------------------------------

    async def _start_sender(self) -> None:
        self._wakeup = asyncio.Event()
        self._links: dict[str, _Link] = {}  # broker address -> its ProduceStream
        self._expired: list[_Batch] = []
        self._refresh_task: asyncio.Task | None = None
        self._sender_task = asyncio.get_running_loop().create_task(self._sender())
        self._watchdog_task = asyncio.get_running_loop().create_task(self._watchdog())

    async def _watchdog(self) -> None:
        """A broker that stops answering (hung, not disconnected) must not hold batches forever: past the
        request timeout, drop the stream; its requests fail as retriable and are retried on a new one."""
        limit = self.request_timeout_ms / 1000 + 5
        while True:
            await asyncio.sleep(1.0)
            for link in list(self._links.values()):
                if link.stream is None or not link.outstanding:
                    continue
                oldest = min(b.sent_at for batches in link.outstanding.values() for b in batches[:1])
                if time.monotonic() - oldest > limit:
                    self._reset_stream(link, link.stream)

    async def _stop_sender(self) -> None:
        self._watchdog_task.cancel()
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        if self._sender_task is not None:
            self._sender_task.cancel()
            await asyncio.gather(self._sender_task, return_exceptions=True)
        for link in list(self._links.values()):
            stream, reader = link.stream, link.reader
            if stream is not None and reader is not None and not reader.done():
                # Half-close and let the broker take every request already written (acks=0 ones have no
                # answer to wait for) before the stream goes away.
                try:
                    await stream.done_writing()
                    await asyncio.wait_for(asyncio.shield(reader), 5)
                except Exception:
                    pass
            if stream is not None:
                stream.cancel()
                link.stream = None
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    def _set_wakeup(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _route(self, batch: _Batch) -> str | None:
        """The address of the batch's partition leader (None: unknown, a metadata refresh is due)."""
        address = self._cluster.leader_address(batch.topic, batch.partition)
        if address is None and len(self._cluster._brokers) <= 1 and not self._cluster._stale:
            address = self._cluster.target
        return address

    def _link(self, address: str) -> "_Link":
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = _Link(address)
        return link

    def _drain(self, now: float) -> tuple[dict[str, list[_Batch]], float, bool]:
        """Under the lock: pick ready batches, at most one request per leader with a free in-flight slot;
        return them by leader address, when to look again, and whether leaders are missing. Batches waiting
        past their delivery timeout (no leader known) go to `self._expired`."""
        next_check = float("inf")
        flushing = self._flushes > 0 or self._closing
        linger = self.linger
        for tp, batch in list(self._open.items()):
            if flushing or now - batch.created >= linger:
                del self._open[tp]
                self._ready.append(batch)
                if batch.records and batch.records[0].key is None:
                    self._sticky.on_new_batch(tp[0], self._partition_counts.get(tp[0], 1), tp[1])
            else:
                next_check = min(next_check, batch.created + linger)
        chosen: dict[str, list[_Batch]] = {}
        sizes: dict[str, int] = {}
        blocked: set[tuple[str, int]] = set()
        keep: list[_Batch] = []
        unrouted = False
        while self._ready:
            batch = self._ready.popleft()
            tp = (batch.topic, batch.partition)
            if tp in blocked or batch.retry_at > now:
                blocked.add(tp)  # keep the partition's order behind a batch in backoff
                keep.append(batch)
                if batch.retry_at > now:
                    next_check = min(next_check, batch.retry_at)
                continue
            address = self._route(batch)
            if address is None:
                unrouted = True
                blocked.add(tp)
                if now >= batch.deadline:
                    self._expired.append(batch)
                else:
                    keep.append(batch)
                    next_check = min(next_check, batch.deadline)
                continue
            link = self._link(address)
            if address not in chosen and link.in_flight >= self.max_in_flight:
                blocked.add(tp)  # woken when one of the link's requests is answered
                keep.append(batch)
                continue
            group = chosen.setdefault(address, [])
            if group and sizes[address] + batch.size > self.max_request_size:
                keep.append(batch)
                blocked.add(tp)
                next_check = now
                continue
            if not group:
                link.in_flight += 1
                sizes[address] = 0
            group.append(batch)
            sizes[address] += batch.size
        self._ready.extendleft(reversed(keep))
        self._sender_idle = not chosen and not self._ready and not self._open
        return chosen, next_check, unrouted

    def _refresh_soon(self) -> None:
        if self._refresh_task is None or self._refresh_task.done():
            async def refresh() -> None:
                try:
                    await self._cluster.refresh(force=True)
                except Exception:
                    pass
                finally:
                    self._set_wakeup()

            self._refresh_task = asyncio.get_running_loop().create_task(refresh())

    async def _sender(self) -> None:
        while True:
            self._wakeup.clear()
            with self._lock:
                groups, next_check, unrouted = self._drain(time.monotonic())
            if self._expired:
                expired, self._expired = self._expired, []
                for batch in expired:
                    self._complete(batch, batch.last_error or RequestTimedOutError(
                        f"no leader of {batch.topic}-{batch.partition} was reachable within the delivery timeout"))
            if unrouted:
                self._refresh_soon()
                next_check = min(next_check, time.monotonic() + self.retry_backoff)
            if groups:
                for address, batches in groups.items():
                    link = self._links[address]
                    try:
                        await self._send(link, batches)
                    except Exception as exc:  # never let the sender die
                        self._release(link)
                        error = exc if isinstance(exc, TidelogError) else TidelogError(str(exc))
                        self._cluster.invalidate()
                        self._handle_failure(batches, error)
                continue
            timeout = None if next_check == float("inf") else max(0.0, next_check - time.monotonic())
            # asyncio.timeout, not wait_for: no task per wait (a linger of 1 ms means ~1,000 of them a second).
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _release(self, link: "_Link") -> None:
        link.in_flight = max(0, link.in_flight - 1)
        self._set_wakeup()

    async def _send(self, link: "_Link", batches: list[_Batch]) -> None:
        partitions = []
        for batch in batches:
            if batch.encoded is None:
                batch.encoded = build_batch(batch.records, compression=self.compression)
                batch.count = len(batch.records)
            partitions.append(pb.PartitionRecords(topic=batch.topic, partition=batch.partition,
                                                  records=batch.encoded))
            batch.attempts += 1
            batch.sent_at = time.monotonic()
        correlation_id = next(self._correlation)
        request = pb.ProduceRequest(correlation_id=correlation_id, acks=self.acks,
                                    timeout_ms=self.request_timeout_ms, partitions=partitions)
        stream = self._ensure_stream(link)
        if self.acks != 0:
            link.outstanding[correlation_id] = batches
        try:
            await stream.write(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke (AioRpcError, InvalidStateError, ...)
            self._reset_stream(link, stream)
            if self.acks != 0 and link.outstanding.pop(correlation_id, None) is None:
                return  # the response reader already failed these batches and freed the slot
            raise BrokerUnavailableError(f"cannot send to {link.address}: {exc}") from None
        if self.acks == 0:
            self._release(link)
            for batch in batches:
                self._complete(batch, None)

    def _ensure_stream(self, link: "_Link"):
        if link.stream is None:
            link.stream = self._cluster.connection(link.address).log.ProduceStream()
            link.reader = asyncio.get_running_loop().create_task(self._read_responses(link, link.stream))
        return link.stream

    def _reset_stream(self, link: "_Link", stream) -> None:
        if link.stream is stream:
            link.stream = None
        stream.cancel()

    async def _read_responses(self, link: "_Link", stream) -> None:
        error: TidelogError | None = None
        try:
            while True:
                response = await stream.read()
                if response is grpc.aio.EOF:
                    error = BrokerUnavailableError(f"broker at {link.address} closed the stream")
                    break
                batches = link.outstanding.pop(response.correlation_id, None)
                if batches is None:
                    continue
                self._release(link)
                self._handle_response(batches, response)
        except grpc.aio.AioRpcError as exc:
            error = rpc_error(exc, link.address)
            if not error.retriable and exc.code() == grpc.StatusCode.CANCELLED:
                error = BrokerUnavailableError(str(error))
        except asyncio.CancelledError:
            error = BrokerUnavailableError("producer stream cancelled")
            raise
        finally:
            if link.stream is stream:
                link.stream = None
            outstanding, link.outstanding = link.outstanding, {}
            if outstanding:
                self._cluster.invalidate()
            for batches in outstanding.values():
                self._release(link)
                self._handle_failure(batches, error or BrokerUnavailableError("stream ended"))

    def _handle_response(self, batches: list[_Batch], response: pb.ProduceResponse) -> None:
        results = response.partitions
        if len(results) != len(batches):
            self._handle_failure(batches, TidelogError("malformed produce response"))
            return
        retry: list[_Batch] = []
        for batch, result in zip(batches, results):
            if result.error_code == 0:
                now = time.monotonic()
                self.batch_latencies.append((now - batch.sent_at, now - batch.created))
                batch.base_offset = result.base_offset
                batch.log_append_time = result.log_append_time_ms
                self._complete(batch, None)
                continue
            error = error_for(_error_name(result.error_code), result.error_message)
            error.leader_id = result.leader_id if result.error_code == _NOT_LEADER else -1
            self._cluster.note_error(error, batch.topic, batch.partition)
            if error.error_name == "UNKNOWN_TOPIC_OR_PARTITION":
                self._cluster.invalidate()
            if self._should_retry(batch, error):
                retry.append(batch)
            else:
                self._complete(batch, error)
        if retry:
            self._requeue(retry)

    def _handle_failure(self, batches: list[_Batch], error: TidelogError) -> None:
        retry = [b for b in batches if self._should_retry(b, error)]
        for batch in batches:
            if batch not in retry:
                self._complete(batch, error)
        if retry:
            self._requeue(retry)

    def _should_retry(self, batch: _Batch, error: TidelogError) -> bool:
        batch.last_error = error
        # send() checked that the topic exists; a broker that does not know it yet (just restarted, its copy
        # of the cluster metadata still catching up) is asked again, as Kafka's producer does.
        retriable = error.retriable or error.error_name == "UNKNOWN_TOPIC_OR_PARTITION"
        return (retriable and not self._closed and batch.attempts <= self.retries
                and time.monotonic() + self.retry_backoff < batch.deadline)

    def _requeue(self, batches: list[_Batch]) -> None:
        retry_at = time.monotonic() + self.retry_backoff
        with self._lock:
            for batch in batches:
                batch.retry_at = retry_at
            # Back at the front, in their original order, ahead of younger batches of the same partitions.
            self._ready.extendleft(reversed(batches))
            self._sender_idle = False
        self._set_wakeup()

    def _complete(self, batch: _Batch, error: TidelogError | None) -> None:
        with self._lock:
            if batch.done.is_set() or batch not in self._incomplete:
                return
            self._incomplete.discard(batch)
            self._buffered -= batch.size - BATCH_OVERHEAD
            self._space.notify_all()
        batch.error = error
        with _CALLBACK_LOCK:
            batch.done.set()
            callbacks, batch.callbacks = batch.callbacks, None
        if callbacks:
            for index, fn in callbacks:
                try:
                    fn(FutureRecordMetadata(batch, index))
                except Exception:  # a user callback must not break delivery
                    pass


_ERROR_NUMBERS = frozenset(v.number for v in pb.ErrorCode.DESCRIPTOR.values)
_NOT_LEADER = pb.ErrorCode.Value("NOT_LEADER_OR_FOLLOWER")


class _Link:
    """The producer's stream to one broker (the leader of some partitions)."""

    __slots__ = ("address", "stream", "reader", "outstanding", "in_flight")

    def __init__(self, address: str) -> None:
        self.address = address
        self.stream = None
        self.reader: asyncio.Task | None = None
        self.outstanding: dict[int, list[_Batch]] = {}
        self.in_flight = 0


def _error_name(code: int) -> str:
    return pb.ErrorCode.Name(code) if code in _ERROR_NUMBERS else "UNKNOWN_SERVER_ERROR"
