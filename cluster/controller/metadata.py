"""The controller's replicated state machine: cluster metadata.

Every broker applies the same controller log, so every broker holds the same `ClusterMetadata`. Commands
are JSON documents (metadata changes are rare and small; readability wins over bytes). `apply` is
deterministic: anything that needs a choice (replica placement, topic ids) is decided by the proposer and
carried in the command, so replaying the log anywhere gives the same state.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
PRODUCER_ID_BLOCK = 1000  # ids handed to a broker at a time, as Kafka's ProducerIdManager does
# Results of the last commands that carried a request id, so a command retried after a lost answer (a
# controller failover between commit and reply) is answered, not applied twice.
RECENT_REQUESTS = 1000
SNAPSHOT_VERSION = 2


class MetadataError(Exception):
    """A command the state machine refuses. `error_name` is the Kafka error to answer with."""

    def __init__(self, error_name: str, message: str) -> None:
        super().__init__(message)
        self.error_name = error_name


@dataclass(slots=True)
class BrokerRegistration:
    broker_id: int
    host: str
    grpc_port: int
    kafka_port: int
    raft_port: int
    rack: str | None = None
    incarnation: int = 0  # bumped each time the broker process registers again


@dataclass(slots=True)
class PartitionAssignment:
    replicas: list[int]  # the target replica set; replicas[0] is the preferred leader
    # A reassignment in progress: the Raft group moves one member at a time towards `target`.
    target: list[int] | None = None


@dataclass(slots=True)
class TopicMetadata:
    name: str
    topic_id: str  # 32 hex digits (a Kafka UUID)
    partitions: list[PartitionAssignment]
    configs: dict[str, str] = field(default_factory=dict)
    internal: bool = False


def validate_topic_name(name: str) -> None:
    if name in (".", "..") or not TOPIC_NAME.match(name):
        raise MetadataError(
            "INVALID_TOPIC_EXCEPTION",
            f"invalid topic name {name!r}: use 1-249 characters of a-z A-Z 0-9 . _ - (not '.' or '..')",
        )


def result_to_json(result: Any) -> Any:
    """A command's result as JSON-able data (what travels back to the proposer and what dedup keeps)."""
    if isinstance(result, MetadataError):
        return {"error": result.error_name, "message": str(result)}
    if isinstance(result, (BrokerRegistration, PartitionAssignment, TopicMetadata)):
        return asdict(result)
    if isinstance(result, tuple):
        return list(result)
    return result


def result_from_json(value: Any) -> Any:
    """The inverse for errors: a MetadataError comes back as one (everything else stays plain data)."""
    if isinstance(value, dict) and set(value) == {"error", "message"}:
        return MetadataError(value["error"], value["message"])
    return value


class ClusterMetadata:
    def __init__(self) -> None:
        self.cluster_id = ""
        self.brokers: dict[int, BrokerRegistration] = {}
        self.topics: dict[str, TopicMetadata] = {}
        self.next_producer_id = 0
        self.applied_index = -1
        self.recent_requests: OrderedDict[str, Any] = OrderedDict()

    # -- reading ----------------------------------------------------------------------------------

    def partition(self, topic: str, partition: int) -> PartitionAssignment | None:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        return t.partitions[partition]

    def replica_load(self) -> dict[int, tuple[int, int]]:
        """broker id -> (replicas hosted, preferred leaderships)."""
        load = {b: (0, 0) for b in self.brokers}
        for t in self.topics.values():
            for p in t.partitions:
                for i, b in enumerate(p.replicas):
                    r, lead = load.get(b, (0, 0))
                    load[b] = (r + 1, lead + (1 if i == 0 else 0))
        return load

    # -- applying ---------------------------------------------------------------------------------

    def apply(self, index: int, command: bytes | dict[str, Any]) -> Any:
        """Apply the command committed at `index`. Returns its result, or a MetadataError (not raised:
        a refused command is still a committed entry, and every replica must refuse it the same way)."""
        assert index > self.applied_index, f"controller entries apply in order ({index} after {self.applied_index})"
        self.applied_index = index
        try:
            cmd = json.loads(bytes(command)) if isinstance(command, (bytes, bytearray, memoryview)) else command
        except ValueError as exc:
            return MetadataError("INVALID_REQUEST", f"controller command is not JSON: {exc}")
        if not isinstance(cmd, dict):
            return MetadataError("INVALID_REQUEST", "controller command is not a JSON object")
        request_id = cmd.get("request_id")
        if isinstance(request_id, str) and request_id in self.recent_requests:
            return result_from_json(self.recent_requests[request_id])
        handler = getattr(self, "_apply_" + str(cmd.get("type", "")), None)
        if handler is None:
            result: Any = MetadataError("INVALID_REQUEST", f"unknown controller command {cmd.get('type')!r}")
        else:
            try:
                result = handler(cmd)
            except MetadataError as exc:
                result = exc
            except (KeyError, TypeError, ValueError) as exc:  # a malformed command: refused the same everywhere
                result = MetadataError("INVALID_REQUEST", f"malformed {cmd.get('type')} command: {exc!r}")
        if isinstance(request_id, str):
            self.recent_requests[request_id] = result_to_json(result)
            while len(self.recent_requests) > RECENT_REQUESTS:
                self.recent_requests.popitem(last=False)
        return result

    def _apply_init_cluster(self, cmd: dict[str, Any]) -> str:
        """The first controller leader names the cluster; later proposals keep the first name."""
        if not self.cluster_id:
            self.cluster_id = str(cmd["cluster_id"])
        return self.cluster_id

    def _apply_register_broker(self, cmd: dict[str, Any]) -> BrokerRegistration:
        old = self.brokers.get(cmd["broker_id"])
        reg = BrokerRegistration(
            broker_id=cmd["broker_id"],
            host=cmd["host"],
            grpc_port=cmd["grpc_port"],
            kafka_port=cmd["kafka_port"],
            raft_port=cmd["raft_port"],
            rack=cmd.get("rack"),
            incarnation=(old.incarnation + 1) if old else 0,
        )
        self.brokers[reg.broker_id] = reg
        return reg

    def _apply_create_topic(self, cmd: dict[str, Any]) -> TopicMetadata:
        name = cmd["name"]
        validate_topic_name(name)
        if name in self.topics:
            raise MetadataError("TOPIC_ALREADY_EXISTS", f"topic {name!r} already exists")
        assignments = [PartitionAssignment(list(r)) for r in cmd["assignments"]]
        if not assignments:
            raise MetadataError("INVALID_PARTITIONS", "a topic needs at least one partition")
        for a in assignments:
            if len(set(a.replicas)) != len(a.replicas) or not a.replicas:
                raise MetadataError("INVALID_REPLICA_ASSIGNMENT", f"bad replica list {a.replicas}")
        topic = TopicMetadata(
            name=name,
            topic_id=cmd["topic_id"],
            partitions=assignments,
            configs=dict(cmd.get("configs", {})),
            internal=bool(cmd.get("internal", False)),
        )
        self.topics[name] = topic
        return topic

    def _apply_delete_topic(self, cmd: dict[str, Any]) -> str:
        name = cmd["name"]
        if name not in self.topics:
            raise MetadataError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
        del self.topics[name]
        return name

    def _apply_alter_configs(self, cmd: dict[str, Any]) -> dict[str, str]:
        topic = self._topic(cmd["name"])
        if cmd.get("replace", False):
            topic.configs = dict(cmd["configs"])
        else:
            for key, value in cmd["configs"].items():
                if value is None:
                    topic.configs.pop(key, None)
                else:
                    topic.configs[key] = value
        return dict(topic.configs)

    def _apply_create_partitions(self, cmd: dict[str, Any]) -> int:
        topic = self._topic(cmd["name"])
        new = [PartitionAssignment(list(r)) for r in cmd["assignments"]]
        if not new:
            raise MetadataError("INVALID_PARTITIONS", "the partition count can only grow")
        if "current" in cmd and cmd["current"] != len(topic.partitions):
            raise MetadataError("INVALID_PARTITIONS", f"topic {topic.name!r} has {len(topic.partitions)} partitions "
                                                      f"now, not {cmd['current']}")
        for a in new:
            if len(set(a.replicas)) != len(a.replicas) or not a.replicas:
                raise MetadataError("INVALID_REPLICA_ASSIGNMENT", f"bad replica list {a.replicas}")
        topic.partitions.extend(new)
        return len(topic.partitions)

    def _apply_reassign_partition(self, cmd: dict[str, Any]) -> PartitionAssignment:
        """Start (target set) or finish (target None, replicas = final set) moving a partition's replicas."""
        topic = self._topic(cmd["name"])
        p = cmd["partition"]
        if not 0 <= p < len(topic.partitions):
            raise MetadataError("UNKNOWN_TOPIC_OR_PARTITION", f"{topic.name} has no partition {p}")
        assignment = topic.partitions[p]
        if "target" in cmd:
            target = [int(b) for b in cmd["target"]]
            if not target or len(set(target)) != len(target):
                raise MetadataError("INVALID_REPLICA_ASSIGNMENT", f"bad replica list {target}")
            unknown = [b for b in target if b not in self.brokers]
            if unknown:
                raise MetadataError("INVALID_REPLICA_ASSIGNMENT", f"unknown broker(s) {unknown}")
            if target == assignment.replicas:
                assignment.target = None
                return assignment
            assignment.target = target
        if "replicas" in cmd:
            assignment.replicas = list(cmd["replicas"])
            assignment.target = None
        return assignment

    def _apply_allocate_producer_ids(self, cmd: dict[str, Any]) -> tuple[int, int]:
        """A block of producer ids unique across the cluster: (first id, count)."""
        count = int(cmd.get("count", PRODUCER_ID_BLOCK))
        first = self.next_producer_id
        self.next_producer_id += count
        return first, count

    def _topic(self, name: str) -> TopicMetadata:
        topic = self.topics.get(name)
        if topic is None:
            raise MetadataError("UNKNOWN_TOPIC_OR_PARTITION", f"unknown topic {name!r}")
        return topic

    # -- snapshots --------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "cluster_id": self.cluster_id,
                "applied_index": self.applied_index,
                "next_producer_id": self.next_producer_id,
                "brokers": [asdict(b) for b in self.brokers.values()],
                "topics": [asdict(t) for t in self.topics.values()],
                "recent_requests": list(self.recent_requests.items()),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def restore(cls, data: bytes) -> "ClusterMetadata":
        doc = json.loads(bytes(data))
        if doc.get("version") not in (1, SNAPSHOT_VERSION):
            raise ValueError(f"unknown controller snapshot version {doc.get('version')}")
        md = cls()
        md.cluster_id = doc.get("cluster_id", "")
        md.recent_requests = OrderedDict((k, v) for k, v in doc.get("recent_requests", []))
        md.applied_index = doc["applied_index"]
        md.next_producer_id = doc["next_producer_id"]
        for b in doc["brokers"]:
            md.brokers[b["broker_id"]] = BrokerRegistration(**b)
        for t in doc["topics"]:
            parts = [PartitionAssignment(**p) for p in t.pop("partitions")]
            md.topics[t["name"]] = TopicMetadata(partitions=parts, **t)
        return md


def assign_replicas(
    brokers: dict[int, str | None],
    num_partitions: int,
    replication_factor: int,
    load: dict[int, tuple[int, int]] | None = None,
) -> list[list[int]]:
    """Place `num_partitions` x `replication_factor` replicas on `brokers` (id -> rack).

    Greedy and deterministic: each partition's preferred leader is the broker with the fewest preferred
    leaderships so far, then the fewest replicas; the followers are the least loaded brokers, preferring racks
    the partition does not use yet. Existing `load` (from `ClusterMetadata.replica_load`) is counted, so
    topics created one after another stay balanced.
    """
    if replication_factor < 1:
        raise MetadataError("INVALID_REPLICATION_FACTOR", "replication factor must be at least 1")
    if replication_factor > len(brokers):
        raise MetadataError(
            "INVALID_REPLICATION_FACTOR",
            f"replication factor {replication_factor} is larger than the {len(brokers)} available brokers",
        )
    if num_partitions < 1:
        raise MetadataError("INVALID_PARTITIONS", "number of partitions must be at least 1")
    replicas = {b: (load or {}).get(b, (0, 0))[0] for b in brokers}
    leaders = {b: (load or {}).get(b, (0, 0))[1] for b in brokers}
    out: list[list[int]] = []
    for _ in range(num_partitions):
        leader = min(brokers, key=lambda b: (leaders[b], replicas[b], b))
        chosen = [leader]
        racks = {brokers[leader]}
        while len(chosen) < replication_factor:
            candidates = [b for b in brokers if b not in chosen]
            follower = min(
                candidates,
                key=lambda b: (brokers[b] in racks and brokers[b] is not None, replicas[b], b),
            )
            chosen.append(follower)
            racks.add(brokers[follower])
        leaders[leader] += 1
        for b in chosen:
            replicas[b] += 1
        out.append(chosen)
    return out
