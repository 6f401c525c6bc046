"""The tidelog consumer: manual assignment, seek by offset or timestamp, replay.

Each `poll()` sends one long-poll Fetch for every assigned partition at its position and decodes the
returned RecordBatch v2 bytes in the caller's thread. A fetch may start inside a batch: the records below
the position are dropped here. Control batches (transaction markers, Raft leader changes) are skipped but
advance the position. `Consumer(topics=[...])` assigns every partition (consumer groups: tidelog.GroupConsumer).
`pause()` / `resume()` stop and restart fetching of assigned partitions, which keep their position.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from typing import Iterable, Iterator, Mapping

import asyncio

import grpc

from proto.rpc import tidelog_v1_pb2 as pb
from storage.record_batch import decode_records, iter_headers
from tidelog._cluster import ClusterClient
from tidelog._transport import rpc_error
from tidelog.errors import (
    METADATA_STALE,
    BrokerUnavailableError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
    TidelogError,
    UnknownTopicOrPartitionError,
    error_for,
)
from tidelog.records import ConsumerRecord, TopicPartition

_ERROR_NUMBERS = frozenset(v.number for v in pb.ErrorCode.DESCRIPTOR.values)


def _tp(value) -> TopicPartition:
    if isinstance(value, TopicPartition):
        return value
    topic, partition = value
    return TopicPartition(topic, int(partition))


def _tp_args(partitions: tuple) -> list[TopicPartition]:
    """pause()/resume() arguments: partitions (TopicPartition or (topic, partition)) or iterables of them."""
    out = []
    for p in partitions:
        if isinstance(p, TopicPartition) or (isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)):
            out.append(_tp(p))
        else:
            out.extend(_tp(q) for q in p)
    return out


def _next_offset(data: bytes) -> int:
    """The offset after the last whole batch, from batch headers only."""
    next_offset = -1
    for _, header in iter_headers(data):
        next_offset = header.next_offset
    return next_offset


def _error_name(code: int) -> str:
    return pb.ErrorCode.Name(code) if code in _ERROR_NUMBERS else "UNKNOWN_SERVER_ERROR"


class _Fetched:
    """Per-partition fetch results gathered from several leaders (shaped like a FetchResponse)."""

    __slots__ = ("partitions",)

    def __init__(self, partitions: list) -> None:
        self.partitions = partitions


def _failed(tp: TopicPartition, name: str, message: str) -> pb.FetchPartitionResult:
    return pb.FetchPartitionResult(topic=tp.topic, partition=tp.partition, error_code=pb.ErrorCode.Value(name),
                                   error_message=message, high_watermark=-1, log_start_offset=-1,
                                   last_stable_offset=-1)


class Consumer:
    """Read records from assigned partitions. Not thread-safe: use one consumer per thread."""

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        topics: Iterable[str] | None = None,
        auto_offset_reset: str = "earliest",
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 50 * 1024 * 1024,
        max_partition_fetch_bytes: int = 1024 * 1024,
        max_poll_records: int = 500,
        consumer_timeout_ms: int | None = None,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError(f"auto_offset_reset must be earliest, latest or none, got {auto_offset_reset!r}")
        self.auto_offset_reset = auto_offset_reset
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.max_poll_records = max_poll_records
        self.consumer_timeout_ms = consumer_timeout_ms
        self.retry_backoff = retry_backoff_ms / 1000
        self._cluster = ClusterClient(bootstrap, request_timeout_ms=request_timeout_ms)
        self._positions: dict[TopicPartition, int | None] = {}  # None: reset by auto_offset_reset
        self._buffer: collections.deque[ConsumerRecord] = collections.deque()
        self._paused: set[TopicPartition] = set()  # assigned, keep their position, not fetched
        # The fetch in flight: (the positions it asked for, its future). At most one.
        self._inflight: tuple[dict[TopicPartition, int], concurrent.futures.Future] | None = None
        self._closed = False
        if topics:
            try:
                self.assign([TopicPartition(t, p) for t in topics for p in range(self.partitions_for(t))])
            except BaseException:
                self.close()
                raise

    # -- assignment and positions ------------------------------------------------------------------------

    def partitions_for(self, topic: str) -> int:
        response = self._cluster.call_any(lambda c: c.admin.DescribeTopic, pb.DescribeTopicRequest(name=topic))
        return len(response.topic.partitions)

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Replace the assignment. New partitions start per auto_offset_reset unless seeked."""
        wanted = [_tp(p) for p in partitions]
        self._positions = {tp: self._positions.get(tp) for tp in wanted}
        self._paused &= self._positions.keys()  # a partition that stays assigned stays paused
        self._drop_buffered(lambda r: TopicPartition(r.topic, r.partition) not in self._positions)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def _check_assigned(self, tp: TopicPartition) -> None:
        if tp not in self._positions:
            raise ValueError(f"partition {tp} is not assigned")

    def pause(self, *partitions: TopicPartition | tuple[str, int] | Iterable) -> None:
        """Stop fetching `partitions` (each a TopicPartition, a (topic, partition) pair or an iterable of them)
        until resume(): they stay assigned and keep their position. Records of theirs already fetched are
        dropped and fetched again from the position after resume()."""
        tps = _tp_args(partitions)
        for tp in tps:
            self._check_assigned(tp)
        for tp in tps:
            if tp in self._paused:
                continue
            self._paused.add(tp)
            first = next((r.offset for r in self._buffer if r.topic == tp.topic and r.partition == tp.partition),
                         None)
            if first is not None:  # back to the first record not returned yet
                self._positions[tp] = first
                self._drop_buffered(lambda r, tp=tp: r.topic == tp.topic and r.partition == tp.partition)

    def resume(self, *partitions: TopicPartition | tuple[str, int] | Iterable) -> None:
        """Fetch `partitions` again, from their position. Resuming a partition that is not paused does nothing."""
        tps = _tp_args(partitions)
        for tp in tps:
            self._check_assigned(tp)
        self._paused.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        """The partitions paused with pause() (and still assigned)."""
        return set(self._paused)

    def seek(self, partition: TopicPartition | tuple[str, int], offset: int) -> None:
        """The next record returned for `partition` is the one at `offset` (or the first after it)."""
        tp = _tp(partition)
        self._check_assigned(tp)
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        self._positions[tp] = offset
        self._drop_buffered(lambda r: r.topic == tp.topic and r.partition == tp.partition)

    def seek_to_beginning(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        self._seek_to(partitions, pb.OFFSET_SPEC_EARLIEST)

    def seek_to_end(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        self._seek_to(partitions, pb.OFFSET_SPEC_LATEST)

    def seek_to_timestamp(self, timestamp_ms: int, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Move to the first record whose timestamp is >= timestamp_ms (the end when there is none)."""
        tps = [_tp(p) for p in partitions] or list(self._positions)
        found = self.offsets_for_times({tp: timestamp_ms for tp in tps})
        missing = [tp for tp, offset in found.items() if offset is None]
        ends = self.end_offsets(missing) if missing else {}
        for tp in tps:
            offset = found[tp]
            self.seek(tp, ends[tp] if offset is None else offset)

    def _seek_to(self, partitions, spec: int) -> None:
        tps = [_tp(p) for p in partitions] or list(self._positions)
        for tp, offset in self._list_offsets({tp: spec for tp in tps}, by_position=True).items():
            self.seek(tp, offset[0])

    def position(self, partition: TopicPartition | tuple[str, int]) -> int:
        tp = _tp(partition)
        self._check_assigned(tp)
        for record in self._buffer:
            if record.topic == tp.topic and record.partition == tp.partition:
                return record.offset
        if self._positions[tp] is None:
            self._reset_positions([tp])
        return self._positions[tp]  # type: ignore[return-value]

    def beginning_offsets(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> dict[TopicPartition, int]:
        return {tp: o for tp, (o, _) in self._list_offsets({_tp(p): pb.OFFSET_SPEC_EARLIEST for p in partitions},
                                                           by_position=True).items()}

    def end_offsets(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> dict[TopicPartition, int]:
        """The high watermark of each partition: the offset the next visible record will get."""
        return {tp: o for tp, (o, _) in self._list_offsets({_tp(p): pb.OFFSET_SPEC_LATEST for p in partitions},
                                                           by_position=True).items()}

    def offsets_for_times(self, timestamps: Mapping[TopicPartition | tuple[str, int], int],
                          ) -> dict[TopicPartition, int | None]:
        """Offset of the first record at or after each timestamp; None where there is none."""
        result = self._list_offsets({_tp(p): ts for p, ts in timestamps.items()}, by_position=False)
        return {tp: (o if o >= 0 else None) for tp, (o, _) in result.items()}

    def _list_offsets(self, specs: dict[TopicPartition, int], *,
                      by_position: bool) -> dict[TopicPartition, tuple[int, int]]:
        if not specs:
            return {}
        request = pb.ListOffsetsRequest(partitions=[
            pb.ListOffsetsPartition(topic=tp.topic, partition=tp.partition, position=v) if by_position
            else pb.ListOffsetsPartition(topic=tp.topic, partition=tp.partition, timestamp_ms=v)
            for tp, v in specs.items()
        ])
        from tidelog.admin import list_offsets_routed

        out = {}
        for r in list_offsets_routed(self._cluster, list(request.partitions)):
            if r.error_code:
                raise error_for(_error_name(r.error_code), r.error_message)
            out[TopicPartition(r.topic, r.partition)] = (r.offset, r.timestamp_ms)
        return out

    def _reset_positions(self, tps: list[TopicPartition]) -> None:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(f"no position for {', '.join(map(str, tps))} and auto_offset_reset=none")
        spec = pb.OFFSET_SPEC_EARLIEST if self.auto_offset_reset == "earliest" else pb.OFFSET_SPEC_LATEST
        for tp, (offset, _) in self._list_offsets({tp: spec for tp in tps}, by_position=True).items():
            self._positions[tp] = offset

    def _drop_buffered(self, predicate) -> None:
        if self._buffer:
            self._buffer = collections.deque(r for r in self._buffer if not predicate(r))

    # -- reading -----------------------------------------------------------------------------------------

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[ConsumerRecord]:
        """Records available within `timeout` seconds (an empty list if none), at most max_records."""
        limit = max_records or self.max_poll_records
        if not self._buffer:
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                self._fetch(max(0, min(int(remaining * 1000), self.fetch_max_wait_ms)))
                if self._buffer or time.monotonic() >= deadline:
                    break
        out = []
        buffer = self._buffer
        while buffer and len(out) < limit:
            out.append(buffer.popleft())
        return out

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Yield records forever, or until nothing arrived for consumer_timeout_ms."""
        idle_since = time.monotonic()
        while True:
            records = self.poll(timeout=self.fetch_max_wait_ms / 1000, max_records=10_000)
            if records:
                yield from records
                idle_since = time.monotonic()
            elif self.consumer_timeout_ms is not None and \
                    (time.monotonic() - idle_since) * 1000 >= self.consumer_timeout_ms:
                return

    def _fetch(self, max_wait_ms: int) -> None:
        """Wait up to max_wait_ms for the fetch in flight (or a new one), buffer its records, and send the next
        fetch before decoding so the broker works while this thread decodes."""
        paused = self._paused
        if len(paused) == len(self._positions):  # nothing assigned, or everything paused
            if self._inflight is not None:
                self._inflight[1].cancel()
                self._inflight = None
            time.sleep(max_wait_ms / 1000)
            return
        unknown = [tp for tp, pos in self._positions.items() if pos is None and tp not in paused]
        if unknown:
            self._reset_positions(unknown)
        positions: dict[TopicPartition, int] = {  # type: ignore[misc]
            tp: pos for tp, pos in self._positions.items() if tp not in paused}
        inflight = self._inflight
        if inflight is not None and inflight[0] != positions:
            inflight[1].cancel()  # a seek or a new assignment since it was sent
            inflight = None
        if inflight is None:
            inflight = self._inflight = (positions, self._send_fetch(positions, max_wait_ms))
        try:
            response = inflight[1].result(max_wait_ms / 1000 + 0.05)
        except concurrent.futures.TimeoutError:
            return  # still waiting: the next poll picks it up
        except concurrent.futures.CancelledError:
            self._inflight = None
            return
        except (BrokerUnavailableError, RequestTimedOutError):
            # As Kafka's consumer: a broker that is away (restarting) is waited for, not reported by poll().
            self._inflight = None
            self._cluster.invalidate()
            time.sleep(min(self.retry_backoff, max_wait_ms / 1000 + 0.01))
            return
        except BaseException:
            self._inflight = None
            raise
        self._inflight = None
        if all(r.error_code == 0 for r in response.partitions):
            following = dict(positions)
            for result in response.partitions:
                if result.records:
                    tp = TopicPartition(result.topic, result.partition)
                    following[tp] = max(following[tp], _next_offset(result.records))
            self._inflight = (following, self._send_fetch(following, self.fetch_max_wait_ms))
        reset: list[TopicPartition] = []
        retry_later = False
        for result in response.partitions:
            tp = TopicPartition(result.topic, result.partition)
            position = self._positions.get(tp)
            if position is None or position != positions.get(tp) or tp in self._paused:
                continue  # unassigned, seeked or paused meanwhile
            if result.error_code:
                name = _error_name(result.error_code)
                if name == "OFFSET_OUT_OF_RANGE" and self.auto_offset_reset != "none":
                    reset.append(tp)
                    continue
                error = error_for(name, result.error_message or f"fetch of {tp} failed")
                if error.retriable:
                    retry_later = True
                    continue
                raise error
            if result.records:
                self._positions[tp] = self._decode(tp, result.records, position)
        if reset:
            self._reset_positions(reset)
        if retry_later and not self._buffer:
            time.sleep(min(self.retry_backoff, max_wait_ms / 1000 + 0.01))

    def _send_fetch(self, positions: dict[TopicPartition, int], max_wait_ms: int) -> concurrent.futures.Future:
        return self._cluster.loop_thread.submit(self._fetch_routed(positions, max_wait_ms))

    async def _fetch_routed(self, positions: dict[TopicPartition, int], max_wait_ms: int) -> "_Fetched":
        """One Fetch per partition leader, concurrently; the per-partition results merged in request order.
        A leader that cannot be reached (or is unknown) yields retriable per-partition errors, and the
        metadata is refreshed for the next poll."""
        cluster = self._cluster
        groups: dict[str, list[TopicPartition]] = {}
        results: dict[TopicPartition, object] = {}
        for tp in positions:
            conn = await cluster.leader_connection(tp.topic, tp.partition)
            if conn is None:
                results[tp] = _failed(tp, "LEADER_NOT_AVAILABLE", f"no leader known for {tp}")
            else:
                groups.setdefault(conn.target, []).append(tp)
        timeout = cluster.request_timeout + max_wait_ms / 1000

        async def one(address: str, tps: list[TopicPartition]) -> None:
            request = pb.FetchRequest(
                max_wait_ms=max_wait_ms, min_bytes=self.fetch_min_bytes, max_bytes=self.fetch_max_bytes,
                partitions=[pb.FetchPartition(topic=tp.topic, partition=tp.partition, fetch_offset=positions[tp],
                                              max_bytes=self.max_partition_fetch_bytes) for tp in tps])
            try:
                response = await cluster.connection(address).log.Fetch(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                error = rpc_error(exc, address)
                if not (error.retriable or isinstance(error, BrokerUnavailableError)):
                    raise error from None
                cluster.invalidate()
                for tp in tps:
                    results[tp] = _failed(tp, "BROKER_NOT_AVAILABLE", str(error))
                return
            for r in response.partitions:
                tp = TopicPartition(r.topic, r.partition)
                results[tp] = r
                if r.error_code and _error_name(r.error_code) in METADATA_STALE:
                    err = error_for(_error_name(r.error_code), r.error_message)
                    err.leader_id = r.leader_id
                    cluster.note_error(err, r.topic, r.partition)

        await asyncio.gather(*(one(a, tps) for a, tps in groups.items()))
        if any(getattr(r, "error_code", 0) for r in results.values()):
            await cluster.refresh()
        return _Fetched([results[tp] for tp in positions if tp in results])

    def _decode(self, tp: TopicPartition, data: bytes, position: int) -> int:
        """Buffer the records at or after `position`; return the new position."""
        buffer = self._buffer
        topic, partition = tp.topic, tp.partition
        for pos, header in iter_headers(data):
            next_offset = header.next_offset
            if next_offset <= position:
                continue
            if not header.is_control:
                timestamp_type = header.timestamp_type
                for record in decode_records(data, header, pos):
                    if record.offset >= position:
                        buffer.append(ConsumerRecord(topic, partition, record.offset, record.timestamp, record.key,
                                                     record.value, record.headers, timestamp_type))
            position = next_offset
        return position

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._inflight is not None:
                self._inflight[1].cancel()
                self._inflight = None
            self._cluster.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Consumer", "ConsumerRecord", "TopicPartition", "TidelogError", "UnknownTopicOrPartitionError"]
