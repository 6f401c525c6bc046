"""The cluster facts the Kafka handlers need, behind one small interface.

Handlers never ask the broker core where a partition lives: they ask a `ClusterView` (brokers and their
Kafka endpoints, topics with their ids, each partition's leader, leader epoch, replicas and ISR, the
controller). `SingleNodeClusterView` answers from one `Broker`: every partition is led by this node. The
multi-broker view answers from the controller's replicated metadata and the partitions' Raft state; a
request for a partition this node does not lead is then answered NOT_LEADER_OR_FOLLOWER (see
`ClusterView.is_local_leader`, already used by every data-path handler).
"""

from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass

from cluster.broker.errors import BrokerError

ZERO_UUID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    node_id: int
    host: str
    port: int  # the Kafka listener's port
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionPlacement:
    partition: int
    leader_id: int  # -1: no leader right now (LEADER_NOT_AVAILABLE)
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicView:
    name: str
    topic_id: uuid.UUID
    partitions: tuple[PartitionPlacement, ...]
    is_internal: bool = False


def parse_topic_id(text: str) -> uuid.UUID:
    """The broker stores topic ids as text (dashed or 32 hex digits); Kafka carries 16 raw bytes."""
    try:
        return uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return ZERO_UUID


class ClusterView(abc.ABC):
    """Read-only cluster facts, as of now. All methods are called on the listener's event loop."""

    @property
    @abc.abstractmethod
    def cluster_id(self) -> str: ...

    @property
    @abc.abstractmethod
    def local_node_id(self) -> int: ...

    @property
    @abc.abstractmethod
    def controller_id(self) -> int:
        """The active controller's node id (-1 if none is known)."""

    @abc.abstractmethod
    def brokers(self) -> list[BrokerEndpoint]:
        """Live brokers with their Kafka endpoints (what Metadata and DescribeCluster list)."""

    @abc.abstractmethod
    def topics(self, names: list[str] | None = None) -> dict[str, TopicView]:
        """Placement of the named topics that exist (all topics for None), in one pass."""

    def topic(self, name: str) -> TopicView | None:
        return self.topics([name]).get(name)

    def topic_names_by_id(self) -> dict[uuid.UUID, str]:
        """Topic id -> name of every topic (Fetch v13+ and DeleteTopics v6 name topics by id)."""
        return {t.topic_id: name for name, t in self.topics().items()}

    def placement(self, topic: str, partition: int) -> PartitionPlacement | None:
        view = self.topic(topic)
        if view is None or not 0 <= partition < len(view.partitions):
            return None
        return view.partitions[partition]

    def is_local_leader(self, topic: str, partition: int) -> bool:
        """False when another broker leads the partition (or nobody does): NOT_LEADER_OR_FOLLOWER.
        Unknown partitions are True here so that the broker core answers UNKNOWN_TOPIC_OR_PARTITION."""
        found = self.placement(topic, partition)
        return found is None or found.leader_id == self.local_node_id

    def endpoint(self, node_id: int) -> BrokerEndpoint | None:
        for b in self.brokers():
            if b.node_id == node_id:
                return b
        return None


class SingleNodeClusterView(ClusterView):
    """One broker that leads every partition it has; it is also the controller."""

    def __init__(self, broker, host: str, port: int, *, rack: str | None = None) -> None:
        self._broker = broker
        self._endpoint = BrokerEndpoint(broker.node_id, host, port, rack)
        self._ids: dict[str, tuple[str, uuid.UUID]] = {}  # topic name -> (stored id text, parsed id)

    @property
    def cluster_id(self) -> str:
        return self._broker.cluster_id

    @property
    def local_node_id(self) -> int:
        return self._broker.node_id

    @property
    def controller_id(self) -> int:
        return self._broker.node_id

    def brokers(self) -> list[BrokerEndpoint]:
        return [self._endpoint]

    def _topic_id(self, name: str, text: str) -> uuid.UUID:
        cached = self._ids.get(name)
        if cached is None or cached[0] != text:  # a deleted and recreated topic gets a new id
            cached = self._ids[name] = (text, parse_topic_id(text))
        return cached[1]

    def topics(self, names: list[str] | None = None) -> dict[str, TopicView]:
        broker = self._broker
        wanted = None if names is None else set(names)
        node = broker.node_id
        replicas = (node,)
        out: dict[str, TopicView] = {}
        for info in broker.list_topics():
            if wanted is not None and info.name not in wanted:
                continue
            placements = []
            for p in range(info.partition_count):
                try:
                    epoch = broker.partition(info.name, p).leader_epoch
                except BrokerError:  # deleted meanwhile
                    epoch = -1
                placements.append(PartitionPlacement(p, node, epoch, replicas, replicas))
            out[info.name] = TopicView(info.name, self._topic_id(info.name, info.topic_id), tuple(placements))
        if len(self._ids) > 2 * len(out) + 64 and names is None:
            self._ids = {n: v for n, v in self._ids.items() if n in out}
        return out

    def topic_names_by_id(self) -> dict[uuid.UUID, str]:
        # Every Fetch v13+ names its topics by id: no placements built here.
        return {self._topic_id(t.name, t.topic_id): t.name for t in self._broker.list_topics()}

    def placement(self, topic: str, partition: int) -> PartitionPlacement | None:
        # Hot path (every produce and fetch): one dict lookup in the broker core, no topic list.
        try:
            p = self._broker.partition(topic, partition)
        except BrokerError:
            return None
        node = self._broker.node_id
        return PartitionPlacement(partition, node, p.leader_epoch, (node,), (node,))

    def is_local_leader(self, topic: str, partition: int) -> bool:
        return True  # one node leads everything it has


class RaftClusterView(ClusterView):
    """The view of a broker of a Raft-replicated cluster (cluster.replication.runtime.ClusterRuntime): brokers
    and topics from the controller's replicated metadata, leaders from this broker's own groups and the
    leaders' hints. Only live brokers are listed; a partition whose leader is not known to be alive is
    answered with leader -1 (LEADER_NOT_AVAILABLE), so clients ask again instead of dialing a dead broker."""

    def __init__(self, runtime) -> None:
        self._runtime = runtime
        self._ids: dict[str, tuple[str, uuid.UUID]] = {}

    @property
    def cluster_id(self) -> str:
        return self._runtime.cluster_id

    @property
    def local_node_id(self) -> int:
        return self._runtime.node_id

    @property
    def controller_id(self) -> int:
        return self._runtime.controller_id

    def brokers(self) -> list[BrokerEndpoint]:
        rt = self._runtime
        out = []
        for b in sorted(rt.metadata.brokers.values(), key=lambda b: b.broker_id):
            if b.kafka_port > 0 and rt.is_alive(b.broker_id):
                out.append(BrokerEndpoint(b.broker_id, b.host, b.kafka_port, b.rack))
        return out

    def _topic_id(self, name: str, text: str) -> uuid.UUID:
        cached = self._ids.get(name)
        if cached is None or cached[0] != text:
            cached = self._ids[name] = (text, parse_topic_id(text))
        return cached[1]

    def _placement(self, name: str, topic_id: str, index: int, replicas: list[int]) -> PartitionPlacement:
        rt = self._runtime
        leader, epoch, isr = rt.leadership(name, index, topic_id)
        offline = tuple(b for b in replicas if not rt.is_alive(b))
        return PartitionPlacement(index, leader, epoch, tuple(replicas), tuple(isr) or ((leader,) if leader >= 0
                                                                                         else ()), offline)

    def topics(self, names: list[str] | None = None) -> dict[str, TopicView]:
        md = self._runtime.metadata
        wanted = md.topics.keys() if names is None else [n for n in names if n in md.topics]
        out: dict[str, TopicView] = {}
        for name in wanted:
            t = md.topics[name]
            placements = tuple(self._placement(name, t.topic_id, i, p.replicas) for i, p in enumerate(t.partitions))
            out[name] = TopicView(name, self._topic_id(name, t.topic_id), placements, t.internal)
        return out

    def topic_names_by_id(self) -> dict[uuid.UUID, str]:
        return {self._topic_id(t.name, t.topic_id): t.name for t in self._runtime.metadata.topics.values()}

    def placement(self, topic: str, partition: int) -> PartitionPlacement | None:
        t = self._runtime.metadata.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        return self._placement(topic, t.topic_id, partition, t.partitions[partition].replicas)

    def is_local_leader(self, topic: str, partition: int) -> bool:
        rt = self._runtime
        t = rt.metadata.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return True  # the broker core answers UNKNOWN_TOPIC_OR_PARTITION
        replica = rt.local_replica(topic, partition)
        return replica is not None and replica.is_leader
