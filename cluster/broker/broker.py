"""The broker core: topics, produce with acks, fetch with long-poll, list offsets, subscribe, housekeeping.

Front doors (gRPC today, the Kafka protocol next) call these coroutines with plain data (cluster.broker.types)
and map BrokerError.error_name to their wire form. Records stay RecordBatch v2 bytes end to end: produce
appends the batches as given (validated and stamped by storage), fetch returns stored bytes. Every partition
is reached through the `Partition` seam.

Two modes:
- standalone (`cluster=None`): topics live in DATA_DIR/topics/<name>/topic.json, partitions are
  `LocalPartition`s (the broker-core unit tests and `python -m cluster.kafka` use it);
- cluster (`cluster=` a `ClusterBackend`, what `tidelog serve` runs, a single node being a one-node
  cluster): topic administration becomes controller commands, and the topic registry is installed by the
  cluster runtime from the replicated metadata (`install_topic` / `uninstall_topic`): replicas this broker
  hosts are Raft-replicated partitions, the others answer NOT_LEADER_OR_FOLLOWER with the leader's id.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Iterable, Mapping, Protocol, Sequence

from cluster.broker.config import BrokerConfig
from cluster.broker.errors import (
    BrokerError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidRequestError,
    InvalidRequiredAcksError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    leader_hint,
    translate,
)
from cluster.broker.metrics import BrokerMetrics
from cluster.broker.partition import LocalPartition, Partition, batches_summary
from cluster.broker.registry import DataDirectory, TopicMeta, validate_topic_name
from cluster.broker.types import (
    ACKS_NONE,
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    VALID_ACKS,
    ConfigSource,
    ConfigValue,
    FetchPartition,
    FetchPartitionResult,
    ListOffsetsPartition,
    ListOffsetsResult,
    PartitionState,
    ProducePartition,
    ProducePartitionResult,
    SubscribeChunk,
    TopicInfo,
    TopicPartition,
)

log = logging.getLogger(__name__)

# Builds the Partition of (topic, index) over its directory and LogConfig (standalone mode).
PartitionFactory = Callable[[TopicPartition, Path, object], Partition]

# Topic configs the broker core handles itself (not storage's LogConfig): Kafka name -> (minimum, default).
BROKER_TOPIC_CONFIGS: dict[str, tuple[int, int]] = {"min.insync.replicas": (1, 1)}


class ClusterBackend(Protocol):
    """What the broker core asks of the cluster runtime in cluster mode (cluster.replication.runtime)."""

    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           replication_factor: int | None = None, assignments: list[list[int]] | None = None,
                           validate_only: bool = False, internal: bool = False) -> None: ...

    async def delete_topic(self, name: str) -> None: ...

    async def alter_configs(self, name: str, configs: dict[str, str]) -> None: ...

    async def create_partitions(self, name: str, count: int, *, validate_only: bool = False,
                                assignments: list[list[int]] | None = None) -> None: ...

    def placement(self, topic: str, partition: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(replicas, in-sync replicas) of a partition."""
        ...


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Topic:
    meta: TopicMeta
    config: object  # storage.config.LogConfig
    partitions: list[Partition]


class Broker:
    """One node's broker core. Create with `await Broker.open(config)`; every method runs on that loop."""

    def __init__(self, config: BrokerConfig, *, clock: Callable[[], int] = wall_clock_ms,
                 metrics: BrokerMetrics | None = None,
                 partition_factory: "PartitionFactory | None" = None,
                 cluster: "ClusterBackend | None" = None) -> None:
        from storage.config import LogConfig
        from storage.flusher import GroupCommitter

        self.config = config
        self._clock = clock
        self.metrics = metrics if metrics is not None else BrokerMetrics()
        self._data = DataDirectory(config.data_dir)
        self._cluster = cluster
        log_defaults, self._broker_defaults = _split_configs({k: str(v) for k, v in config.topic_defaults.items()},
                                                             context="cluster topic default")
        try:
            self._default_log_config = LogConfig.from_kafka(log_defaults)
        except Exception as exc:
            raise InvalidConfigError(f"invalid cluster topic default: {exc}") from exc
        self._committer = GroupCommitter()
        self._partition_factory = partition_factory or self._local_partition
        self._topics: dict[str, _Topic] = {}
        self._admin_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._trash_tasks: set[asyncio.Task] = set()
        self._closed = False
        self.metrics.register_log_collector(self._log_snapshot)

    # -- lifecycle ---------------------------------------------------------------------------------------

    @classmethod
    async def open(cls, config: BrokerConfig, **kwargs) -> "Broker":
        broker = cls(config, **kwargs)
        await broker._start()
        return broker

    async def _start(self) -> None:
        self._data.open(node_id=self.config.node_id)
        try:
            for meta in ([] if self._cluster is not None else self._data.load_topics()):
                config = self._log_config(meta.configs, context=f"topic {meta.name}")
                partitions = [self._open_partition(meta.name, p, config) for p in range(meta.partitions)]
                self._topics[meta.name] = _Topic(meta, config, partitions)
                log.info("loaded topic %s (%d partitions)", meta.name, meta.partitions)
        except BaseException:
            await self._close_partitions()
            self._data.close()
            raise
        self._tasks.append(asyncio.create_task(self._committer.run(), name="background flush"))
        self._tasks.append(asyncio.create_task(self._housekeeping_loop(), name="housekeeping"))
        self._tasks.append(asyncio.create_task(self._compaction_loop(), name="compaction"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_partitions()
        if self._trash_tasks:
            await asyncio.gather(*self._trash_tasks, return_exceptions=True)
        await self._committer.close()
        self._data.close()

    async def _close_partitions(self) -> None:
        for topic in list(self._topics.values()):
            for partition in topic.partitions:
                try:
                    await partition.close()
                except Exception as exc:
                    log.error("closing %s failed: %s", partition.topic_partition, exc)
        self._topics.clear()

    @property
    def cluster_id(self) -> str:
        if self._cluster is not None:
            return self._cluster.cluster_id or self._data.cluster_id
        return self._data.cluster_id

    @property
    def node_id(self) -> int:
        return self._data.node_id

    @property
    def data_directory(self) -> DataDirectory:
        return self._data

    @property
    def clock(self) -> Callable[[], int]:
        return self._clock

    @property
    def cluster(self) -> "ClusterBackend | None":
        return self._cluster

    def _open_partition(self, topic: str, index: int, config) -> Partition:
        directory = self._data.partition_dir(topic, index)
        directory.mkdir(parents=True, exist_ok=True)
        return self._partition_factory(TopicPartition(topic, index), directory, config)

    def _local_partition(self, tp: TopicPartition, directory: Path, config) -> Partition:
        """The single-node partition: a PartitionLog acknowledged by fsync (group commit)."""
        from storage.log import PartitionLog

        plog = PartitionLog.open(str(directory), config, now_ms=self._clock())
        return LocalPartition(tp, plog, self._committer)

    def _log_config(self, overrides: Mapping[str, str], *, context: str):
        """The storage LogConfig of a topic (validating every override, the broker-level ones included)."""
        from storage.config import LogConfig

        log_overrides, _ = _split_configs(overrides, context=context)
        try:
            return LogConfig.from_kafka(log_overrides, base=self._default_log_config)
        except Exception as exc:  # storage's ConfigError names the key
            raise InvalidConfigError(f"invalid config for {context}: {exc}") from exc

    def broker_topic_config(self, overrides: Mapping[str, str], key: str) -> int:
        """A broker-level topic config (min.insync.replicas): override, else cluster default, else Kafka's."""
        _, values = _split_configs(overrides, context="topic")
        if key in values:
            return values[key]
        return self._broker_defaults.get(key, BROKER_TOPIC_CONFIGS[key][1])

    # -- lookup ------------------------------------------------------------------------------------------

    def partition(self, topic: str, partition: int) -> Partition:
        entry = self._topics.get(topic)
        if entry is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {topic!r}")
        if not 0 <= partition < len(entry.partitions):
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has {len(entry.partitions)} partitions; there is no partition {partition}")
        return entry.partitions[partition]

    def partitions(self) -> Iterable[Partition]:
        for topic in list(self._topics.values()):
            yield from topic.partitions

    def _log_snapshot(self):
        # Called from the metrics HTTP thread: list() of a dict is atomic under the GIL.
        for topic in list(self._topics.values()):
            for p in list(topic.partitions):
                tp = p.topic_partition
                try:
                    if p.log_end_offset < 0:
                        continue  # a partition with no replica on this broker
                    yield tp.topic, tp.partition, p.size_bytes, p.log_start_offset, p.log_end_offset, p.high_watermark
                except Exception:  # a partition closing under our feet
                    continue

    # -- topic administration ----------------------------------------------------------------------------

    def list_topics(self) -> list[TopicInfo]:
        return [TopicInfo(t.meta.name, t.meta.topic_id, t.meta.partitions) for t in sorted(
            self._topics.values(), key=lambda t: t.meta.name)]

    def describe_topic(self, name: str) -> TopicInfo:
        with self._timed("describe_topic"):
            entry = self._topic(name)
            return self._describe(entry)

    def _describe(self, entry: _Topic) -> TopicInfo:
        states = [
            PartitionState(
                partition=i,
                log_start_offset=p.log_start_offset,
                log_end_offset=p.log_end_offset,
                high_watermark=p.high_watermark,
                size_bytes=p.size_bytes,
                leader_id=p.leader_id,
                leader_epoch=p.leader_epoch,
                replicas=self._placement(entry.meta.name, i)[0],
                isr=self._placement(entry.meta.name, i)[1],
            )
            for i, p in enumerate(entry.partitions)
        ]
        return TopicInfo(entry.meta.name, entry.meta.topic_id, entry.meta.partitions, states,
                         self._config_values(entry.meta.configs, entry.config))

    def _placement(self, topic: str, partition: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self._cluster is not None:
            return self._cluster.placement(topic, partition)
        return (self.node_id,), (self.node_id,)

    def _topic(self, name: str) -> _Topic:
        entry = self._topics.get(name)
        if entry is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        return entry

    def _config_values(self, overrides: Mapping[str, str], config) -> list[ConfigValue]:
        defaults = self.config.topic_defaults
        values = []
        effective = dict(config.to_kafka())
        for key in BROKER_TOPIC_CONFIGS:
            effective[key] = str(self.broker_topic_config(overrides, key))
        for key, value in sorted(effective.items()):
            if key in overrides:
                source = ConfigSource.TOPIC
            elif key in defaults:
                source = ConfigSource.BROKER
            else:
                source = ConfigSource.DEFAULT
            values.append(ConfigValue(key, value, source))
        return values

    async def create_topic(self, name: str, partitions: int | None = None, configs: Mapping[str, str] | None = None,
                           *, validate_only: bool = False, replication_factor: int | None = None,
                           assignments: list[list[int]] | None = None, internal: bool = False) -> TopicInfo:
        """`internal`: a topic of tidelog itself (`__consumer_offsets`), flagged so in Kafka Metadata."""
        with self._timed("create_topic"):
            validate_topic_name(name)
            count = partitions if partitions else self.config.default_partitions
            if not 1 <= count <= self.config.max_partitions_per_topic:
                raise InvalidPartitionsError(
                    f"partitions must be between 1 and {self.config.max_partitions_per_topic}, got {count}")
            overrides = {str(k): str(v) for k, v in (configs or {}).items()}
            config = self._log_config(overrides, context=f"topic {name}")
            if self._cluster is not None:
                if validate_only:
                    if name in self._topics:
                        raise TopicAlreadyExistsError(f"topic {name!r} already exists")
                extra = {"internal": True} if internal else {}
                await self._cluster.create_topic(name, count, overrides, replication_factor=replication_factor,
                                                 assignments=assignments, validate_only=validate_only, **extra)
                if validate_only:
                    return TopicInfo(name, "", count, [], self._config_values(overrides, config))
                log.info("created topic %s (%d partitions, overrides %s)", name, count, overrides or "none")
                return self._describe(self._topic(name))
            async with self._admin_lock:
                if name in self._topics:
                    raise TopicAlreadyExistsError(f"topic {name!r} already exists")
                meta = TopicMeta(name, str(uuid.uuid4()), count, overrides, self._clock())
                if validate_only:
                    return TopicInfo(name, meta.topic_id, count, [], self._config_values(overrides, config))
                await asyncio.to_thread(self._data.create_topic, meta)
                try:
                    opened = [self._open_partition(name, p, config) for p in range(count)]
                except Exception as exc:
                    raise translate(exc) from exc
                entry = _Topic(meta, config, opened)
                self._topics[name] = entry
                log.info("created topic %s (%d partitions, overrides %s)", name, count, overrides or "none")
                return self._describe(entry)

    async def delete_topic(self, name: str) -> None:
        with self._timed("delete_topic"):
            if self._cluster is not None:
                await self._cluster.delete_topic(name)
                self.metrics.forget_topic(name)
                log.info("deleted topic %s", name)
                return
            async with self._admin_lock:
                entry = self._topic(name)
                del self._topics[name]  # new requests fail from here on
                for partition in entry.partitions:
                    await partition.close()
                trashed = await asyncio.to_thread(self._data.trash_topic, entry.meta)
                self.metrics.forget_topic(name)
                task = asyncio.create_task(asyncio.to_thread(shutil.rmtree, trashed, True))
                self._trash_tasks.add(task)
                task.add_done_callback(self._trash_tasks.discard)
                log.info("deleted topic %s", name)

    def describe_configs(self, name: str) -> list[ConfigValue]:
        entry = self._topic(name)
        return self._config_values(entry.meta.configs, entry.config)

    async def alter_configs(self, name: str, set_: Mapping[str, str] | None = None, delete: Sequence[str] = (),
                            *, validate_only: bool = False) -> list[ConfigValue]:
        from storage.config import TOPIC_CONFIG_KEYS

        with self._timed("alter_configs"):
            async with self._admin_lock:
                entry = self._topic(name)
                for key in delete:
                    if key not in TOPIC_CONFIG_KEYS and key not in BROKER_TOPIC_CONFIGS:
                        raise InvalidConfigError(f"unknown topic config {key!r}")
                overrides = dict(entry.meta.configs)
                overrides.update({str(k): str(v) for k, v in (set_ or {}).items()})
                for key in delete:
                    overrides.pop(key, None)
                config = self._log_config(overrides, context=f"topic {name}")
                if validate_only:
                    return self._config_values(overrides, config)
                if self._cluster is not None:
                    await self._cluster.alter_configs(name, overrides)
                    entry = self._topic(name)
                    log.info("altered configs of topic %s: %s", name, overrides or "no overrides")
                    return self._config_values(entry.meta.configs, entry.config)
                meta = TopicMeta(entry.meta.name, entry.meta.topic_id, entry.meta.partitions, overrides,
                                 entry.meta.created_ms)
                await asyncio.to_thread(self._data.write_topic, meta)
                entry.meta = meta
                entry.config = config
                for partition in entry.partitions:
                    partition.update_config(config)
                log.info("altered configs of topic %s: %s", name, overrides or "no overrides")
                return self._config_values(overrides, config)

    async def create_partitions(self, name: str, count: int, *, validate_only: bool = False,
                                assignments: list[list[int]] | None = None) -> None:
        """Grow a topic to `count` partitions (cluster mode; Kafka's CreatePartitions). `assignments`: the
        replicas of each new partition (default: placed by the controller)."""
        if self._cluster is None:
            raise InvalidRequestError("tidelog cannot add partitions to an existing topic of a standalone broker")
        with self._timed("create_partitions"):
            entry = self._topic(name)
            if count <= len(entry.partitions):
                raise InvalidPartitionsError(
                    f"topic {name!r} has {len(entry.partitions)} partitions; the count can only grow")
            if count > self.config.max_partitions_per_topic:
                raise InvalidPartitionsError(
                    f"partitions must be at most {self.config.max_partitions_per_topic}, got {count}")
            if assignments is None:
                await self._cluster.create_partitions(name, count, validate_only=validate_only)
            else:
                await self._cluster.create_partitions(name, count, validate_only=validate_only,
                                                      assignments=assignments)

    # -- the registry in cluster mode (called by the cluster runtime) ---------------------------------------

    def install_topic(self, name: str, topic_id: str, overrides: Mapping[str, str],
                      partitions: list[Partition], created_ms: int = 0):
        """Publish a topic (new, grown, reconfigured, or its partitions replaced). Returns the LogConfig."""
        overrides = dict(overrides)
        try:
            config = self._log_config(overrides, context=f"topic {name}")
        except InvalidConfigError as exc:  # a config valid on the controller but not here: keep the defaults
            log.error("topic %s: %s; using the defaults", name, exc)
            config = self._default_log_config
        entry = self._topics.get(name)
        meta = TopicMeta(name, topic_id, len(partitions), overrides, created_ms)
        if entry is None or entry.meta.topic_id != topic_id:
            self._topics[name] = _Topic(meta, config, list(partitions))
            return config
        if entry.config != config:
            for p in partitions:
                p.update_config(config)
        entry.meta = meta
        entry.config = config
        entry.partitions = list(partitions)
        return config

    def uninstall_topic(self, name: str) -> None:
        """Forget a topic (deleted): requests fail with UNKNOWN_TOPIC_OR_PARTITION from here on."""
        if self._topics.pop(name, None) is not None:
            self.metrics.forget_topic(name)

    def installed_topic(self, name: str) -> tuple[str, list[Partition]] | None:
        entry = self._topics.get(name)
        return None if entry is None else (entry.meta.topic_id, list(entry.partitions))

    # -- produce -----------------------------------------------------------------------------------------

    async def produce(self, partitions: Sequence[ProducePartition], *, acks: int,
                      timeout_ms: int = 0) -> list[ProducePartitionResult]:
        """Append each partition's batches; answer once `acks` is satisfied (0: at once)."""
        pending = self.begin_produce(partitions, acks=acks, timeout_ms=timeout_ms)
        return await pending.wait()

    def begin_produce(self, partitions: Sequence[ProducePartition], *, acks: int,
                      timeout_ms: int = 0) -> "PendingProduce":
        """The synchronous half of produce: validate and append now (so pipelined requests of one stream or
        connection are appended in arrival order); `await result.wait()` for the acknowledgement."""
        started = time.perf_counter()
        if acks not in VALID_ACKS:
            raise InvalidRequiredAcksError(f"acks must be 0, 1 or -1 (all), got {acks}")
        total = 0
        for spec in partitions:
            total += len(spec.records)
        if total > self.config.max_request_bytes:
            raise RecordListTooLargeError(
                f"produce request of {total} bytes exceeds the limit of {self.config.max_request_bytes}")
        if timeout_ms < 0:
            raise InvalidRequestError(f"timeout_ms must not be negative, got {timeout_ms}")
        now_ms = self._clock()
        metrics = self.metrics
        results: list[ProducePartitionResult] = []
        pending: list[tuple[ProducePartitionResult, Partition, int]] = []
        for spec in partitions:
            result = ProducePartitionResult(spec.topic, spec.partition)
            results.append(result)
            try:
                partition = self.partition(spec.topic, spec.partition)
                info = partition.append(spec.records, now_ms=now_ms, acks=acks)
            except BrokerError as exc:
                result.error_name = exc.error_name
                result.error_message = str(exc)
                result.leader_id = leader_hint(exc)
                metrics.error("produce", exc.error_name)
                continue
            result.base_offset = info.base_offset
            result.log_append_time_ms = info.log_append_time_ms
            result.log_start_offset = partition.log_start_offset
            if not info.duplicate:
                metrics.record_in(spec.topic, info.size_bytes, info.record_count)
            if acks != ACKS_NONE and not partition.acknowledged(info.last_offset, acks):
                pending.append((result, partition, info.last_offset))
        timeout = (timeout_ms or self.config.default_produce_timeout_ms) / 1000
        return PendingProduce(self, results, pending, timeout, started, acks)

    async def _await_ack(self, result: ProducePartitionResult, partition: Partition, last_offset: int,
                         timeout: float, acks: int = -1) -> None:
        try:
            # asyncio.timeout, not wait_for: wait_for (3.11) wraps the wait in a task of its own, and each
            # of its hand-offs costs the acknowledgement another pass of the event loop.
            async with asyncio.timeout(timeout):
                await partition.wait_for_ack(last_offset, acks)
        except TimeoutError:
            result.error_name = "REQUEST_TIMED_OUT"
            result.error_message = f"not acknowledged within {timeout:g}s (the records may still be written)"
        except BrokerError as exc:
            result.error_name = exc.error_name
            result.error_message = str(exc)
            result.leader_id = leader_hint(exc)
        else:
            return
        self.metrics.error("produce", result.error_name)

    # -- fetch -------------------------------------------------------------------------------------------

    async def fetch(self, partitions: Sequence[FetchPartition], *, max_wait_ms: int = 0, min_bytes: int = 1,
                    max_bytes: int = 0) -> list[FetchPartitionResult]:
        """Kafka fetch: whole batches per partition, waiting up to max_wait_ms until min_bytes are there."""
        started = time.perf_counter()
        if max_wait_ms < 0 or min_bytes < 0 or max_bytes < 0:
            raise InvalidRequestError("max_wait_ms, min_bytes and max_bytes must not be negative")
        max_wait_ms = min(max_wait_ms, self.config.max_fetch_wait_ms)
        max_bytes = min(max_bytes or self.config.default_fetch_max_bytes, self.config.max_fetch_bytes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_ms / 1000
        while True:
            results, total, failed, live = self._read(partitions, max_bytes)
            if failed or total >= min_bytes:
                break
            remaining = deadline - loop.time()
            if remaining <= 0 or not live:
                break
            wake = asyncio.Event()
            cancels = [p.watch(max(offset, p.high_watermark), wake.set) for p, offset in live]
            try:
                await asyncio.wait_for(wake.wait(), remaining)
            except TimeoutError:
                pass
            finally:
                for cancel in cancels:
                    cancel()
        metrics = self.metrics
        for result in results:
            if result.records:
                _, count, _ = batches_summary(result.records)
                metrics.record_out(result.topic, len(result.records), count)
            elif result.error_name != "NONE":
                metrics.error("fetch", result.error_name)
        metrics.observe("fetch", time.perf_counter() - started)
        return results

    def _read(self, specs: Sequence[FetchPartition], max_bytes: int):
        results: list[FetchPartitionResult] = []
        live: list[tuple[Partition, int]] = []
        budget = max_bytes
        total = 0
        failed = False
        for spec in specs:
            result = FetchPartitionResult(spec.topic, spec.partition)
            results.append(result)
            try:
                partition = self.partition(spec.topic, spec.partition)
                result.high_watermark = partition.high_watermark
                result.last_stable_offset = result.high_watermark
                result.log_start_offset = partition.log_start_offset
                if spec.fetch_offset < 0:
                    raise OffsetOutOfRangeError(f"fetch offset {spec.fetch_offset} is negative")
                if spec.max_bytes < 0:
                    raise InvalidRequestError(f"partition max_bytes {spec.max_bytes} is negative")
                if budget > 0:
                    limit = min(spec.max_bytes or self.config.default_partition_fetch_max_bytes, budget)
                    data = partition.read(spec.fetch_offset, limit)
                    result.records = data
                    budget -= len(data)
                    total += len(data)
                elif spec.fetch_offset > partition.log_end_offset:
                    raise OffsetOutOfRangeError(
                        f"fetch offset {spec.fetch_offset} is past the log end offset {partition.log_end_offset}")
                live.append((partition, spec.fetch_offset))
            except BrokerError as exc:
                result.error_name = exc.error_name
                result.error_message = str(exc)
                result.leader_id = leader_hint(exc)
                failed = True
        return results, total, failed, live

    async def subscribe(self, topic: str, partition: int, *, offset: int | None = None,
                        timestamp_ms: int | None = None, max_bytes: int = 0,
                        idle_timeout: float | None = None) -> AsyncIterator[SubscribeChunk]:
        """Tail one partition from an offset (or the first record at/after a timestamp, or EARLIEST/LATEST via
        offset=EARLIEST_TIMESTAMP/LATEST_TIMESTAMP). Each chunk is produced only when the consumer of this
        generator asks for the next one, so the caller's back-pressure bounds what is in flight."""
        part = self.partition(topic, partition)
        if timestamp_ms is not None:
            if timestamp_ms < 0:
                raise InvalidRequestError(f"timestamp {timestamp_ms} is negative")
            found, _ = part.list_offset(timestamp_ms)
            position = found if found >= 0 else part.high_watermark
        elif offset == EARLIEST_TIMESTAMP:
            position = part.log_start_offset
        elif offset == LATEST_TIMESTAMP or offset is None:
            position = part.high_watermark
        else:
            if offset < 0:
                raise OffsetOutOfRangeError(f"offset {offset} is negative")
            if offset > part.log_end_offset or offset < part.log_start_offset:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside [{part.log_start_offset}, {part.log_end_offset}]")
            position = offset
        limit = min(max_bytes or self.config.default_partition_fetch_max_bytes, self.config.max_fetch_bytes)
        while True:
            part = self.partition(topic, partition)  # fails once the topic is deleted
            data = part.read(position, limit)
            if data:
                _, count, next_offset = batches_summary(data)
                self.metrics.record_out(topic, len(data), count)
                yield SubscribeChunk(data, position, next_offset, part.high_watermark, part.log_start_offset)
                position = next_offset
                continue
            if not await part.wait_for(position, idle_timeout) and idle_timeout is not None:
                return

    # -- list offsets ------------------------------------------------------------------------------------

    def list_offsets(self, specs: Sequence[ListOffsetsPartition]) -> list[ListOffsetsResult]:
        started = time.perf_counter()
        results = []
        for spec in specs:
            result = ListOffsetsResult(spec.topic, spec.partition)
            results.append(result)
            try:
                partition = self.partition(spec.topic, spec.partition)
                if spec.timestamp < 0 and spec.timestamp not in (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP):
                    raise InvalidRequestError(f"timestamp {spec.timestamp} is negative")
                result.offset, result.timestamp = partition.list_offset(spec.timestamp)
            except BrokerError as exc:
                result.error_name = exc.error_name
                result.error_message = str(exc)
                result.leader_id = leader_hint(exc)
                self.metrics.error("list_offsets", exc.error_name)
        self.metrics.observe("list_offsets", time.perf_counter() - started)
        return results

    # -- housekeeping ------------------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        interval = self.config.retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self.run_housekeeping()

    def run_housekeeping(self) -> None:
        """Age-based segment roll and retention for every partition (also called by tests)."""
        now_ms = self._clock()
        for partition in list(self.partitions()):
            partition.maintain(now_ms)

    async def _compaction_loop(self) -> None:
        interval = self.config.compaction_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self.run_compaction()

    async def run_compaction(self) -> None:
        for entry in list(self._topics.values()):
            if "compact" not in str(getattr(entry.config, "cleanup_policy", "")):
                continue
            for partition in entry.partitions:
                try:
                    await partition.compact(self._clock(), bytes_per_second=self.config.compaction_bytes_per_second)
                except Exception as exc:
                    log.error("compaction of %s failed: %s", partition.topic_partition, exc)

    # -- helpers -----------------------------------------------------------------------------------------

    def _timed(self, api: str):
        return _Timer(self.metrics, api)


def _split_configs(overrides: Mapping[str, str], *, context: str) -> tuple[dict[str, str], dict[str, int]]:
    """(storage LogConfig keys, broker-level keys parsed) of topic-config overrides; InvalidConfigError for a
    bad broker-level value (storage validates its own keys)."""
    log_keys: dict[str, str] = {}
    broker_keys: dict[str, int] = {}
    for key, value in overrides.items():
        bounds = BROKER_TOPIC_CONFIGS.get(key)
        if bounds is None:
            log_keys[key] = value
            continue
        try:
            number = int(str(value).strip())
        except ValueError:
            raise InvalidConfigError(f"invalid config for {context}: {key}={value!r} is not an integer") from None
        if number < bounds[0]:
            raise InvalidConfigError(f"invalid config for {context}: {key} must be at least {bounds[0]}, got {number}")
        broker_keys[key] = number
    return log_keys, broker_keys


class PendingProduce:
    """Appended produce batches waiting for their acknowledgement."""

    __slots__ = ("_broker", "results", "_pending", "_timeout", "_started", "_acks")

    def __init__(self, broker: Broker, results: list[ProducePartitionResult],
                 pending: list[tuple[ProducePartitionResult, Partition, int]], timeout: float, started: float,
                 acks: int = -1) -> None:
        self._broker = broker
        self.results = results
        self._pending = pending
        self._timeout = timeout
        self._started = started
        self._acks = acks

    @property
    def needs_wait(self) -> bool:
        return bool(self._pending)

    async def wait(self) -> list[ProducePartitionResult]:
        pending = self._pending
        if pending:
            broker = self._broker
            if len(pending) == 1:
                await broker._await_ack(*pending[0], self._timeout, self._acks)
            else:
                await asyncio.gather(*(broker._await_ack(r, p, o, self._timeout, self._acks) for r, p, o in pending))
        self._broker.metrics.observe("produce", time.perf_counter() - self._started)
        return self.results


class _Timer:
    __slots__ = ("_metrics", "_api", "_start")

    def __init__(self, metrics: BrokerMetrics, api: str) -> None:
        self._metrics = metrics
        self._api = api

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._metrics.observe(self._api, time.perf_counter() - self._start)
        if isinstance(exc, BrokerError):
            self._metrics.error(self._api, exc.error_name)
        return False
