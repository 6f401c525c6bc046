"""Topic administration: create, delete, list, describe, configs, offsets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from proto.rpc import tidelog_v1_pb2 as pb
from tidelog._transport import Connection
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
                                  p.leader_id, p.leader_epoch) for p in topic.partitions],
        configs=_configs(topic.configs),
    )


class Admin:
    def __init__(self, bootstrap: str | None = None, *, request_timeout_ms: int = 30_000) -> None:
        self._conn = Connection(bootstrap, request_timeout_ms=request_timeout_ms)

    @property
    def bootstrap(self) -> str:
        return self._conn.target

    def create_topic(self, name: str, partitions: int = 0, configs: Mapping[str, object] | None = None, *,
                     validate_only: bool = False) -> TopicDescription:
        """Create a topic (partitions=0: the cluster default). Config values may be ints or strings."""
        request = pb.CreateTopicRequest(name=name, partitions=partitions, validate_only=validate_only,
                                        configs={k: str(v) for k, v in (configs or {}).items()})
        return _description(self._conn.call(self._conn.admin.CreateTopic, request).topic)

    def delete_topic(self, name: str) -> None:
        self._conn.call(self._conn.admin.DeleteTopic, pb.DeleteTopicRequest(name=name))

    def list_topics(self) -> dict[str, int]:
        """Topic name -> partition count."""
        response = self._conn.call(self._conn.admin.ListTopics, pb.ListTopicsRequest())
        return {t.name: t.partitions for t in response.topics}

    def describe_topic(self, name: str) -> TopicDescription:
        return _description(self._conn.call(self._conn.admin.DescribeTopic, pb.DescribeTopicRequest(name=name)).topic)

    def describe_configs(self, topic: str) -> dict[str, ConfigEntry]:
        response = self._conn.call(self._conn.admin.DescribeConfigs, pb.DescribeConfigsRequest(topic=topic))
        return _configs(response.configs)

    def alter_configs(self, topic: str, set: Mapping[str, object] | None = None, delete: Iterable[str] = (), *,
                      validate_only: bool = False) -> dict[str, ConfigEntry]:
        """Set and/or remove per-topic overrides; returns the resulting configuration."""
        request = pb.AlterConfigsRequest(topic=topic, set={k: str(v) for k, v in (set or {}).items()},
                                         delete=list(delete), validate_only=validate_only)
        return _configs(self._conn.call(self._conn.admin.AlterConfigs, request).configs)

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
        response = self._conn.call(self._conn.log.ListOffsets, pb.ListOffsetsRequest(partitions=partitions))
        out = {}
        for r in response.partitions:
            if r.error_code:
                name = pb.ErrorCode.Name(r.error_code) if r.error_code in _ERROR_NUMBERS else "UNKNOWN_SERVER_ERROR"
                raise error_for(name, r.error_message)
            out[TopicPartition(r.topic, r.partition)] = (r.offset, r.timestamp_ms)
        return out

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
