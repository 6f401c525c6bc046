"""The asyncio shell around the sans-I/O group coordinator (`consumer_groups.GroupCoordinator`), one per broker.

    service = await start_group_coordinator(broker, config=GroupConfig(), cluster=view)
    body = await service.call(JoinGroupRequest(...))          # or service.submit(request) -> Future
    service.on_partition_leadership(partition, is_leader)     # Raft leadership of __consumer_offsets/p
    await service.close()

What the shell does for the core:
- requests get an opaque handle; each handle's future is resolved by the `Response` the core emits for it
  (maybe much later: a JoinGroup waits for the rebalance);
- one timer (`loop.call_later`) sleeps until `next_deadline_ms()`, re-armed after every input: no polling;
- each `Persist` becomes one record batch (`storage.record_batch.build_batch`, keys/values as the core gives
  them) appended to `__consumer_offsets` partition p through the broker's `Partition` seam, in emission order
  (appends are synchronous); the acknowledgement (`wait_for_ack`: durable on one node, committed when
  replicated) is awaited off the input path and confirmed with `persisted(write_id, error)`. A failed write
  unloads and reloads the partition, as the core asks;
- the compacted topic `__consumer_offsets` is created on first use (`cleanup.policy=compact`, replication
  factor 3 when the cluster has 3 or more brokers);
- loading: leading partition p means reading it from its start to the high watermark into
  `begin_loading/load_records/complete_loading`; losing it means `unload`. On a single node this broker leads
  every partition from the start (`lead_all_partitions=True`); a clustered node gets
  `on_partition_leadership` calls from the Raft leadership of each partition instead.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from cluster.broker.errors import BrokerError, TopicAlreadyExistsError
from consumer_groups import (
    ErrorCode,
    GroupConfig,
    GroupCoordinator,
    Persist,
    Record,
    Response,
    partition_for_group,
)
from consumer_groups.records import RecordFormatError
from storage.record_batch import RecordInput, build_batch, decode_records, iter_headers

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
_LOAD_CHUNK_BYTES = 1024 * 1024
_WRITE_TIMEOUT_S = 30.0
_CATCH_UP_TIMEOUT_S = 10.0  # a new leader waits this long for its high watermark to reach its log end
_RELOAD_BACKOFF_S = 1.0
_NOT_READY_BACKOFF_S = 0.1
MAX_PENDING_REQUESTS = 100_000  # requests waiting for their answer; past it: COORDINATOR_NOT_AVAILABLE

_SERVICES: "weakref.WeakKeyDictionary[Any, GroupCoordinatorService]" = weakref.WeakKeyDictionary()


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def service_for(broker) -> "GroupCoordinatorService | None":
    """The group coordinator started next to `broker` (what the Kafka group handlers use)."""
    return _SERVICES.get(broker)


class CoordinatorUnavailable(Exception):
    """The service is closed or overloaded; front doors answer COORDINATOR_NOT_AVAILABLE."""


class _NotReady(Exception):
    """A partition to load is not servable yet (not installed, or its committed end not reached)."""


class GroupCoordinatorService:
    """Drives one `GroupCoordinator` on the broker's event loop. Not thread-safe (one loop)."""

    def __init__(self, broker, *, config: GroupConfig | None = None, cluster=None,
                 lead_all_partitions: bool = True, rng: random.Random | None = None,
                 clock: Callable[[], int] = wall_clock_ms, write_timeout_s: float = _WRITE_TIMEOUT_S,
                 replication_factor: int | None = None) -> None:
        self.broker = broker
        self.config = config or GroupConfig()
        self.cluster = cluster  # a ClusterView (brokers and partition leaders); None: a single node
        self._lead_all = lead_all_partitions
        self._clock = clock
        self._write_timeout = write_timeout_s
        self._replication_factor = replication_factor
        self.coord = GroupCoordinator(self.config, rng or random.Random(), active_partitions=(),
                                      now_ms=clock())
        self._handles = itertools.count(1)
        self._futures: dict[int, asyncio.Future] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # partition -> "loading" | "active"; absent: not led here
        self._status: dict[int, str] = {}
        self._epoch: dict[int, int] = {}  # bumped on every leadership change: stale loads stop
        self._leader: set[int] = set()  # partitions this broker leads (as told)
        self._tasks: set[asyncio.Task] = set()
        self._topic_ready = False
        self._creating: asyncio.Task | None = None
        self._waiting_for_topic: list[Persist] = []
        self._partition_counts: dict[str, int] = {}
        self._closed = False
        self._started = False

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> "GroupCoordinatorService":
        self._loop = asyncio.get_running_loop()
        self._topic_ready = self._offsets_topic_exists()
        _SERVICES[self.broker] = self
        self._started = True
        if self._lead_all:
            for p in range(self.config.num_partitions):
                self.on_partition_leadership(p, True)
            await self.wait_loaded()
        return self

    async def wait_loaded(self, timeout: float = 60.0) -> None:
        """Wait until no partition this broker leads is still loading."""
        deadline = time.monotonic() + timeout
        while any(s == "loading" for s in self._status.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("__consumer_offsets partitions still loading")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if _SERVICES.get(self.broker) is self:
            del _SERVICES[self.broker]
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._creating is not None:
            self._creating.cancel()
        await asyncio.gather(*self._tasks, *(t for t in [self._creating] if t), return_exceptions=True)
        for future in self._futures.values():
            if not future.done():
                future.set_exception(CoordinatorUnavailable("the group coordinator is shutting down"))
        self._futures.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------------------------ requests

    def submit(self, request) -> asyncio.Future:
        """Hand a core request (consumer_groups.*Request) to the coordinator now (arrival order is kept);
        the future resolves with its response body."""
        loop = self._loop or asyncio.get_running_loop()
        future = loop.create_future()
        if self._closed or not self._started:
            future.set_exception(CoordinatorUnavailable("the group coordinator is not running"))
            return future
        if len(self._futures) >= MAX_PENDING_REQUESTS:
            future.set_exception(CoordinatorUnavailable("too many group requests in flight"))
            return future
        handle = next(self._handles)
        self._futures[handle] = future
        self._feed(self.coord.handle_request(handle, request, self._clock()))
        return future

    async def call(self, request):
        return await self.submit(request)

    # ------------------------------------------------------------------------------------ queries

    def partition_for(self, group_id: str) -> int:
        return partition_for_group(group_id, self.config.num_partitions)

    def partition_status(self, partition: int) -> str | None:
        """"active", "loading", or None (not led by this broker)."""
        return self._status.get(partition)

    def coordinator_error(self, group_id: str) -> int:
        """0 if this broker coordinates `group_id` now, else COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR."""
        status = self._status.get(self.partition_for(group_id))
        if status == "active":
            return 0
        if status == "loading":
            return int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        return int(ErrorCode.NOT_COORDINATOR)

    def locate(self, group_id: str) -> tuple[int, int]:
        """(error code, coordinator node id) for FindCoordinator: the leader of the group's partition. A
        partition this broker is still loading is answered with this broker (as Kafka does): the client's
        group requests then get COORDINATOR_LOAD_IN_PROGRESS here and are retried without a new lookup."""
        local = self.broker.node_id
        p = self.partition_for(group_id)
        if self._status.get(p) is not None:  # "active" or "loading"
            return 0, local
        leader = local  # a single node leads every partition it has
        if self.cluster is not None:
            placement = self.cluster.placement(OFFSETS_TOPIC, p)
            if placement is None:
                self.ensure_offsets_topic()
                return int(ErrorCode.COORDINATOR_NOT_AVAILABLE), -1
            leader = placement.leader_id
        if leader < 0:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE), -1
        if leader == local:  # the partition is ours by the metadata, but not (yet / any more) served here
            return int(ErrorCode.NOT_COORDINATOR), -1
        return 0, leader

    def group_view(self, group_id: str):
        return self.coord.group_view(group_id)

    def refresh_partition_counts(self) -> None:
        """Feed the topics' partition counts to the core (server-side assignment); a change of a subscribed
        topic rebalances the groups that read it."""
        counts = {t.name: t.partition_count for t in self.broker.list_topics()}
        if counts != self._partition_counts:
            self._partition_counts = counts
            self._feed(self.coord.set_partition_counts(counts, self._clock()))

    # ------------------------------------------------------------------------------------ leadership

    def on_partition_leadership(self, partition: int, is_leader: bool) -> None:
        """This broker became (True) or stopped being (False) the leader of __consumer_offsets/`partition`."""
        if self._closed or not 0 <= partition < self.config.num_partitions:
            return
        if is_leader:
            if partition in self._leader:
                return
            self._leader.add(partition)
            self._start_load(partition)
        else:
            if partition not in self._leader:
                return
            self._leader.discard(partition)
            self._epoch[partition] = self._epoch.get(partition, 0) + 1
            self._unload(partition)

    def _unload(self, partition: int) -> None:
        if self._status.pop(partition, None) is not None:
            self._feed(self.coord.unload(partition, self._clock()))

    def _start_load(self, partition: int) -> None:
        epoch = self._epoch[partition] = self._epoch.get(partition, 0) + 1
        self._unload(partition)
        self.coord.begin_loading(partition)
        self._status[partition] = "loading"
        self._spawn(self._load(partition, epoch), f"load {OFFSETS_TOPIC}/{partition}")

    async def _load(self, partition: int, epoch: int) -> None:
        started = time.perf_counter()
        count = 0
        try:
            part = self._offsets_partition(partition)
            if part is None and not self._lead_all:
                # Told to lead a partition the broker core does not show yet (the cluster runtime installs a
                # topic's partitions after starting their Raft groups): try again shortly.
                raise _NotReady(f"{OFFSETS_TOPIC}/{partition} is not installed in the broker yet")
            if part is not None and not self._lead_all and (getattr(part, "is_leader", True) is False
                                                            or part.log_start_offset < 0):
                # Not (yet) the leader of the replica the broker core shows, or no local replica installed yet.
                raise _NotReady(f"{OFFSETS_TOPIC}/{partition} is not led by the replica installed here (yet)")
            if part is not None:
                # A new leader serves only what is committed: wait until its log is (Raft: the entries of
                # earlier terms commit with the first entry of the new term, so everything up to the end of
                # this node's log, the new term's no-op included, must be committed first).
                end = part.log_end_offset
                group = getattr(part, "group", None)
                if group is not None:
                    end = max(end, group.last_index + 1)
                if part.high_watermark < end and not await part.wait_for(end - 1, _CATCH_UP_TIMEOUT_S):
                    raise _NotReady(f"{OFFSETS_TOPIC}/{partition}: the high watermark did not reach offset {end} "
                                    f"within {_CATCH_UP_TIMEOUT_S:g}s (no quorum?)")
                offset = part.log_start_offset
                while offset < part.high_watermark:
                    if self._epoch.get(partition) != epoch:
                        return
                    data = part.read(offset, _LOAD_CHUNK_BYTES)
                    if not data:
                        break
                    records, offset = _records_from(data, offset)
                    count += len(records)
                    self._load_records(partition, records)
                    await asyncio.sleep(0)  # big partitions: let requests of other partitions through
            if self._epoch.get(partition) != epoch:
                return
            self._status[partition] = "active"
            self._feed(self.coord.complete_loading(partition, self._clock()))
            log.info("loaded %s/%d: %d records in %.3fs", OFFSETS_TOPIC, partition, count,
                     time.perf_counter() - started)
        except asyncio.CancelledError:
            raise
        except _NotReady as exc:
            log.debug("loading %s: %s; retrying", OFFSETS_TOPIC, exc)
            if self._epoch.get(partition) == epoch:
                self._schedule_reload(partition, epoch, _NOT_READY_BACKOFF_S)
        except Exception as exc:
            log.error("loading %s/%d failed: %s; retrying", OFFSETS_TOPIC, partition, exc)
            if self._epoch.get(partition) == epoch:
                self._schedule_reload(partition, epoch)

    def _load_records(self, partition: int, records: list[Record]) -> None:
        try:
            self.coord.load_records(partition, records)
        except RecordFormatError:
            for record in records:  # find and skip the bad one(s), keep the rest
                try:
                    self.coord.load_records(partition, [record])
                except RecordFormatError as exc:
                    log.error("skipping an undecodable %s/%d record: %s", OFFSETS_TOPIC, partition, exc)

    def _schedule_reload(self, partition: int, epoch: int, delay: float = _RELOAD_BACKOFF_S) -> None:
        async def reload() -> None:
            await asyncio.sleep(delay)
            if not self._closed and partition in self._leader and self._epoch.get(partition) == epoch:
                self._start_load(partition)

        self._spawn(reload(), f"reload {OFFSETS_TOPIC}/{partition}")

    # ------------------------------------------------------------------------------------ outputs

    def _feed(self, outputs: list) -> None:
        for out in outputs:
            if type(out) is Response:
                future = self._futures.pop(out.handle, None)
                if future is not None and not future.done():  # the client may have gone away
                    future.set_result(out.body)
            elif type(out) is Persist:
                self._persist(out)
            else:  # pragma: no cover - the core emits only these two
                raise TypeError(f"unexpected coordinator output {out!r}")
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._closed:
            return
        deadline = self.coord.next_deadline_ms()
        if deadline == self._timer_deadline and (self._timer is not None or deadline is None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, (deadline - self._clock()) / 1000)
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        if not self._closed:
            self._feed(self.coord.poll(self._clock()))

    # ------------------------------------------------------------------------------------ writes

    def _persist(self, out: Persist) -> None:
        if not out.records:
            self._loop.call_soon(self._confirm, out.write_id, None)
            return
        if not self._topic_ready:
            self._topic_ready = self._offsets_topic_exists()
        if not self._topic_ready or self._waiting_for_topic:
            self._waiting_for_topic.append(out)  # emission order is kept behind the topic's creation
            self.ensure_offsets_topic()
            return
        self._append(out)

    def _append(self, out: Persist) -> None:
        now = self._clock()
        try:
            part = self.broker.partition(OFFSETS_TOPIC, out.partition)
            batch = build_batch([RecordInput(r.key, r.value, now) for r in out.records])
            info = part.append(batch, now_ms=now)
        except BrokerError as exc:
            log.warning("writing to %s/%d failed: %s", OFFSETS_TOPIC, out.partition, exc)
            # Confirmed from the loop, not from inside the output processing of the input that caused it.
            self._loop.call_soon(self._confirm, out.write_id, _code_of(exc.error_name), out.partition)
            return
        except Exception:  # a batch the core built should always be valid: report, do not die
            log.exception("writing to %s/%d failed", OFFSETS_TOPIC, out.partition)
            self._loop.call_soon(self._confirm, out.write_id, int(ErrorCode.UNKNOWN_SERVER_ERROR), out.partition)
            return
        if part.high_watermark > info.last_offset:
            self._loop.call_soon(self._confirm, out.write_id, None)
            return
        self._spawn(self._await_ack(out, part, info.last_offset), f"ack {OFFSETS_TOPIC}/{out.partition}")

    async def _await_ack(self, out: Persist, part, last_offset: int) -> None:
        try:
            await asyncio.wait_for(part.wait_for_ack(last_offset), self._write_timeout)
        except TimeoutError:
            self._confirm(out.write_id, int(ErrorCode.REQUEST_TIMED_OUT), out.partition)
        except BrokerError as exc:
            self._confirm(out.write_id, _code_of(exc.error_name), out.partition)
        else:
            self._confirm(out.write_id, None)

    def _confirm(self, write_id: int, error: int | None, partition: int | None = None) -> None:
        if self._closed:
            return
        self._feed(self.coord.persisted(write_id, self._clock(), error))
        if error is not None and partition is not None and partition in self._leader \
                and self._status.get(partition) == "active":
            # The core's state may be ahead of the log now: rebuild it from the log (Kafka does the same
            # when a write fails because leadership moved).
            log.warning("reloading %s/%d after a failed write (error %d)", OFFSETS_TOPIC, partition, error)
            self._start_load(partition)

    # ------------------------------------------------------------------------------------ the topic

    def _offsets_topic_exists(self) -> bool:
        try:
            self.broker.partition(OFFSETS_TOPIC, 0)
            return True
        except BrokerError:
            return False

    def _offsets_partition(self, partition: int):
        try:
            return self.broker.partition(OFFSETS_TOPIC, partition)
        except BrokerError:
            return None

    def replication_factor(self) -> int:
        """Of `__consumer_offsets`: 3, or the number of brokers when fewer (Kafka's
        offsets.topic.replication.factor). A node passes its cluster's size; otherwise the live brokers."""
        if self._replication_factor is not None:
            return self._replication_factor
        brokers = 1
        if self.cluster is not None:
            try:
                brokers = len(self.cluster.brokers())
            except Exception:
                brokers = 1
        return max(1, min(3, brokers))

    def ensure_offsets_topic(self) -> None:
        """Create `__consumer_offsets` in the background (once), then write what waited for it."""
        if self._closed or (self._creating is not None and not self._creating.done()):
            return
        self._creating = self._loop.create_task(self._create_topic(), name=f"create {OFFSETS_TOPIC}")

    async def _create_topic(self) -> None:
        error: int | None = None
        if not self._offsets_topic_exists():
            kwargs: dict[str, Any] = {}
            rf = self.replication_factor()
            parameters = inspect.signature(self.broker.create_topic).parameters
            if "replication_factor" in parameters:
                kwargs["replication_factor"] = rf
            if "internal" in parameters:
                kwargs["internal"] = True  # Kafka Metadata: is_internal
            try:
                await self.broker.create_topic(OFFSETS_TOPIC, self.config.num_partitions,
                                               {"cleanup.policy": "compact"}, **kwargs)
                log.info("created %s (%d partitions, compacted, replication factor %d)", OFFSETS_TOPIC,
                         self.config.num_partitions, rf if kwargs else 1)
            except TopicAlreadyExistsError:
                pass
            except BrokerError as exc:
                log.error("cannot create %s: %s", OFFSETS_TOPIC, exc)
                error = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        self._topic_ready = error is None and self._offsets_topic_exists()
        if not self._topic_ready and error is None:
            error = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        waiting, self._waiting_for_topic = self._waiting_for_topic, []
        for out in waiting:
            if error is None:
                self._append(out)
            else:
                self._confirm(out.write_id, error)

    # ------------------------------------------------------------------------------------ helpers

    def _spawn(self, coro, name: str) -> None:
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _records_from(data, position: int) -> tuple[list[Record], int]:
    """Key/value records of stored batches at or after `position`; control batches are skipped."""
    records: list[Record] = []
    for pos, header in iter_headers(data):
        next_offset = header.next_offset
        if next_offset <= position:
            continue
        if not header.is_control:
            for r in decode_records(data, header, pos):
                if r.offset >= position and r.key is not None:
                    records.append(Record(r.key, r.value))
        position = next_offset
    return records, position


def _code_of(error_name: str) -> int:
    try:
        return int(ErrorCode[error_name])
    except KeyError:
        return int(ErrorCode.UNKNOWN_SERVER_ERROR)


async def start_group_coordinator(broker, *, config: GroupConfig | None = None, cluster=None,
                                  lead_all_partitions: bool = True,
                                  replication_factor: int | None = None) -> GroupCoordinatorService:
    """Start the group coordinator of `broker` on the running loop (one per broker). With
    `lead_all_partitions` (a single node) it loads every `__consumer_offsets` partition now; a clustered node
    passes False and reports leadership through `on_partition_leadership`. The Kafka group handlers find it
    through `service_for(broker)`."""
    service = GroupCoordinatorService(broker, config=config, cluster=cluster,
                                      lead_all_partitions=lead_all_partitions,
                                      replication_factor=replication_factor)
    return await service.start()


def group_config_from(settings: Mapping[str, object]) -> GroupConfig:
    """A GroupConfig from Kafka's broker setting names (offsets.topic.num.partitions, group.*)."""
    names = {
        "offsets.topic.num.partitions": "num_partitions",
        "group.min.session.timeout.ms": "session_timeout_min_ms",
        "group.max.session.timeout.ms": "session_timeout_max_ms",
        "group.initial.rebalance.delay.ms": "initial_rebalance_delay_ms",
        "group.max.size": "group_max_size",
        "offsets.retention.ms": "offsets_retention_ms",
        "offset.metadata.max.bytes": "offset_metadata_max_bytes",
    }
    kwargs = {}
    for key, value in settings.items():
        field = names.get(key)
        if field is None:
            raise ValueError(f"unknown group coordinator setting {key!r}")
        kwargs[field] = int(value)  # type: ignore[arg-type]
    return GroupConfig(**kwargs)
