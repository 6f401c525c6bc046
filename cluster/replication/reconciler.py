"""The reconciler's plan: which partition replicas this broker should run, given the cluster metadata.

Pure (no I/O): `plan(node_id, metadata, running)` compares the replicas the controller assigns to this broker
with the ones it runs and says which to start (with the voters to bootstrap an empty log with) and which to
stop and delete (topic deleted, replica moved away, topic deleted and recreated under the same name: a new
topic id is a new replica). The cluster runtime executes the plan after every metadata change, so a broker
that was down while topics came and went converges when it returns.

A replica being added by a reassignment (in `target`, not yet in `replicas`) starts with no configuration:
it learns the group's membership from the leader, which adds it as a learner first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cluster.controller.metadata import ClusterMetadata

REPLICAS_DIR = "replicas"
_TOPIC_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True, order=True)
class ReplicaKey:
    topic: str
    partition: int
    topic_id: str

    @property
    def group_id(self) -> str:
        return group_id_of(self.topic, self.partition, self.topic_id)


def group_id_of(topic: str, partition: int, topic_id: str) -> str:
    """Raft group id of a partition replica: "topic/partition/topic_id". The topic id makes a deleted and
    recreated topic a different group: a replica of the old one (a broker that was down meanwhile and still
    runs it from its stale metadata copy) can never vote in, or lead, the new one."""
    return f"{topic}/{partition}/{topic_id}"


def parse_group_id(group_id) -> tuple[str, int, str] | None:
    parts = str(group_id).split("/")
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not _TOPIC_ID.match(parts[2]):
        return None
    return parts[0], int(parts[1]), parts[2]


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    key: ReplicaKey
    voters: tuple[int, ...]  # the configuration an empty log bootstraps with; () while joining by reassignment
    replicas: tuple[int, ...]  # the assignment (replicas[0] is the preferred leader)
    target: tuple[int, ...] | None
    configs: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(slots=True)
class Plan:
    start: list[ReplicaSpec] = field(default_factory=list)
    stop: list[ReplicaKey] = field(default_factory=list)
    keep: list[ReplicaSpec] = field(default_factory=list)  # running and still assigned (configs may change)

    @property
    def empty(self) -> bool:
        return not self.start and not self.stop


def desired_replicas(node_id: int, metadata: ClusterMetadata) -> dict[ReplicaKey, ReplicaSpec]:
    out: dict[ReplicaKey, ReplicaSpec] = {}
    for topic in metadata.topics.values():
        for index, assignment in enumerate(topic.partitions):
            replicas = tuple(assignment.replicas)
            target = tuple(assignment.target) if assignment.target is not None else None
            member = node_id in replicas
            joining = not member and target is not None and node_id in target
            if not member and not joining:
                continue
            key = ReplicaKey(topic.name, index, topic.topic_id)
            out[key] = ReplicaSpec(key, replicas if member else (), replicas, target, dict(topic.configs))
    return out


def plan(node_id: int, metadata: ClusterMetadata, running: set[ReplicaKey] | frozenset[ReplicaKey]) -> Plan:
    """What to start and stop so that this broker runs exactly its assigned replicas. Stops come first in
    `stop` order; a group id freed by a stop (topic recreated) is started after it."""
    desired = desired_replicas(node_id, metadata)
    result = Plan()
    for key in sorted(running):
        if key not in desired:
            result.stop.append(key)
    for key in sorted(desired):
        spec = desired[key]
        (result.keep if key in running else result.start).append(spec)
    return result


# -- on disk -----------------------------------------------------------------------------------------------

def replica_dir(data_dir: Path, key: ReplicaKey) -> Path:
    """DATA_DIR/replicas/<topic id>/<partition>: keyed by topic id, so a deleted and recreated topic never
    meets the old one's files."""
    return Path(data_dir) / REPLICAS_DIR / key.topic_id / str(key.partition)


def stray_replica_dirs(data_dir: Path, wanted: set[ReplicaKey] | frozenset[ReplicaKey]) -> list[Path]:
    """Replica directories on disk that no wanted replica owns (deleted topics, moved replicas)."""
    root = Path(data_dir) / REPLICAS_DIR
    wanted_dirs = {(k.topic_id, str(k.partition)) for k in wanted}
    wanted_topics = {k.topic_id for k in wanted}
    out: list[Path] = []
    try:
        topic_dirs = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return out
    for entry in topic_dirs:
        if not entry.is_dir() or not _TOPIC_ID.match(entry.name):
            continue
        if entry.name not in wanted_topics:
            out.append(Path(entry.path))
            continue
        for part in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if part.is_dir() and (entry.name, part.name) not in wanted_dirs:
                out.append(Path(part.path))
    return out
