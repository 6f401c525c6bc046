"""Topic administration: create, delete, list, describe, configs, offsets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from proto.rpc import tidelog_v1_pb2 as pb
from tidelog._cluster import ClusterClient, routed_partition_call
from tidelog.errors import error_for
from tidelog.records import TopicPartition

_SOURCES = {pb.CONFIG_SOURCE_DEFAULT: "default", pb.CONFIG_SOURCE_BROKER: "broker", pb.CONFIG_SOURCE_TOPIC: "topic"}
_ERROR_NUMBERS = frozenset(v.number for v in pb.ErrorCode.DESCRIPTOR.values)


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    name: str
    value: str
    source: str  # "default", "broker" or "topic"


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    leader_id: int
    leader_epoch: int
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    host: str
    grpc_port: int
    kafka_port: int
    raft_port: int
    rack: str
    alive: bool


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    topic: str
    partition: int
    leader_id: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    high_watermark: int
    log_end_offset: int
    replica_lag: dict[int, int]
    target_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    cluster_id: str
    node_id: int  # the broker that answered
    controller_id: int
    brokers: list[BrokerInfo]
    partitions: list[PartitionStatus]


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    topic_id: str
    partitions: list[PartitionInfo] = field(default_factory=list)
    configs: dict[str, ConfigEntry] = field(default_factory=dict)


def _configs(entries) -> dict[str, ConfigEntry]:
    return {e.name: ConfigEntry(e.name, e.value, _SOURCES.get(e.source, "default")) for e in entries}


def _description(topic: pb.TopicDescription) -> TopicDescription:
    return TopicDescription(
        name=topic.name,
        topic_id=topic.topic_id,
        partitions=[PartitionInfo(p.partition, p.log_start_offset, p.log_end_offset, p.high_watermark, p.size_bytes,
                                  p.leader_id, p.leader_epoch, tuple(p.replicas), tuple(p.isr))
                    for p in topic.partitions],
        configs=_configs(topic.configs),
    )


class Admin:
    """Topic administration against any broker of the cluster (`bootstrap`: one or more HOST:PORT)."""

    def __init__(self, bootstrap: str | list[str] | None = None, *, request_timeout_ms: int = 30_000) -> None:
        self._cluster = ClusterClient(bootstrap, request_timeout_ms=request_timeout_ms)

    @property
    def bootstrap(self) -> str:
        return self._cluster.target

    def _call(self, method, request, timeout: float | None = None):
        return self._cluster.call_any(method, request, timeout=timeout)

    def describe_cluster(self) -> ClusterDescription:
        """Brokers (alive or not), the controller, every partition's leader, replicas and in-sync replicas."""
        r = self._call(lambda c: c.cluster.DescribeCluster, pb.DescribeClusterRequest())
        return ClusterDescription(
            cluster_id=r.cluster_id, node_id=r.node_id, controller_id=r.controller_id,
            brokers=[BrokerInfo(b.broker_id, b.host, b.grpc_port, b.kafka_port, b.raft_port, b.rack, b.alive)
                     for b in r.brokers],
            partitions=[PartitionStatus(p.topic, p.partition, p.leader_id, p.leader_epoch, tuple(p.replicas),
                                        tuple(p.isr), p.high_watermark, p.log_end_offset, dict(p.replica_lag),
                                        tuple(p.target_replicas)) for p in r.partitions])

    def reassign_partition(self, topic: str, partition: int, replicas: Iterable[int], *, wait: bool = True,
                           timeout: float = 60.0) -> tuple[list[int], list[int]]:
        """Move a partition's replicas to `replicas` (the first becomes the preferred leader). With `wait`,
        returns once the move is done. Returns (replicas now, target still being moved to)."""
        request = pb.ReassignPartitionRequest(topic=topic, partition=partition, replicas=list(replicas), wait=wait,
                                              timeout_ms=int(timeout * 1000))
        r = self._call(lambda c: c.cluster.ReassignPartition, request, timeout=timeout + 5)
        return list(r.replicas), list(r.target_replicas)

    def create_topic(self, name: str, partitions: int = 0, configs: Mapping[str, object] | None = None, *,
                     validate_only: bool = False, replication_factor: int = 0) -> TopicDescription:
        """Create a topic (partitions=0, replication_factor=0: the cluster defaults). Config values may be
        ints or strings."""
        request = pb.CreateTopicRequest(name=name, partitions=partitions, validate_only=validate_only,
                                        configs={k: str(v) for k, v in (configs or {}).items()},
                                        replication_factor=replication_factor)
        return _description(self._call(lambda c: c.admin.CreateTopic, request).topic)

    def delete_topic(self, name: str) -> None:
        self._call(lambda c: c.admin.DeleteTopic, pb.DeleteTopicRequest(name=name))

    def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> TopicDescription:
        """Grow topic `name` to `count` partitions (Kafka's CreatePartitions: existing records stay where they
        are, so keys hash to other partitions from now on)."""
        request = pb.CreatePartitionsRequest(topic=name, count=count, validate_only=validate_only)
        return _description(self._call(lambda c: c.admin.CreatePartitions, request).topic)

    def list_topics(self) -> dict[str, int]:
        """Topic name -> partition count."""
        response = self._call(lambda c: c.admin.ListTopics, pb.ListTopicsRequest())
        return {t.name: t.partitions for t in response.topics}

    def describe_topic(self, name: str) -> TopicDescription:
        return _description(self._call(lambda c: c.admin.DescribeTopic, pb.DescribeTopicRequest(name=name)).topic)

    def describe_configs(self, topic: str) -> dict[str, ConfigEntry]:
        response = self._call(lambda c: c.admin.DescribeConfigs, pb.DescribeConfigsRequest(topic=topic))
        return _configs(response.configs)

    def alter_configs(self, topic: str, set: Mapping[str, object] | None = None, delete: Iterable[str] = (), *,
                      validate_only: bool = False) -> dict[str, ConfigEntry]:
        """Set and/or remove per-topic overrides; returns the resulting configuration."""
        request = pb.AlterConfigsRequest(topic=topic, set={k: str(v) for k, v in (set or {}).items()},
                                         delete=list(delete), validate_only=validate_only)
        return _configs(self._call(lambda c: c.admin.AlterConfigs, request).configs)

    def list_offsets(self, specs: Mapping[TopicPartition | tuple[str, int], str | int],
                     ) -> dict[TopicPartition, tuple[int, int]]:
        """{tp: "earliest" | "latest" | timestamp_ms} -> {tp: (offset, timestamp)}; offset -1 when none."""
        partitions = []
        for p, spec in specs.items():
            tp = p if isinstance(p, TopicPartition) else TopicPartition(*p)
            if spec == "earliest":
                partitions.append(pb.ListOffsetsPartition(topic=tp.topic, partition=tp.partition,
                                                          position=pb.OFFSET_SPEC_EARLIEST))
            elif spec == "latest":
                partitions.append(pb.ListOffsetsPartition(topic=tp.topic, partition=tp.partition,
                                                          position=pb.OFFSET_SPEC_LATEST))
            else:
                partitions.append(pb.ListOffsetsPartition(topic=tp.topic, partition=tp.partition,
                                                          timestamp_ms=int(spec)))
        results = list_offsets_routed(self._cluster, partitions)
        out = {}
        for r in results:
            if r.error_code:
                name = pb.ErrorCode.Name(r.error_code) if r.error_code in _ERROR_NUMBERS else "UNKNOWN_SERVER_ERROR"
                raise error_for(name, r.error_message)
            out[TopicPartition(r.topic, r.partition)] = (r.offset, r.timestamp_ms)
        return out

    def close(self) -> None:
        self._cluster.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_offsets_routed(cluster: ClusterClient, partitions: list, timeout: float | None = None) -> list:
    """ListOffsets for `partitions` (pb.ListOffsetsPartition), each asked of its leader; results in order."""
    timeout = cluster.request_timeout if timeout is None else timeout

    def send(conn, subset, remaining):
        return conn.log.ListOffsets(pb.ListOffsetsRequest(partitions=subset), timeout=remaining)

    return cluster.run(routed_partition_call(cluster, partitions, lambda p: (p.topic, p.partition), send,
                                             lambda r: list(r.partitions), timeout=timeout), timeout + 5)
