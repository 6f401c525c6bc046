"""Topic metadata on disk: one directory per topic holding `topic.json` and one directory per partition.

    DATA_DIR/node.json                  cluster id, node id (written once)
    DATA_DIR/.lock                      flock: one broker per data directory
    DATA_DIR/topics/<name>/topic.json   {"name", "topic_id", "partitions", "configs" (overrides), ...}
    DATA_DIR/topics/<name>/<p>/         the partition's PartitionLog
    DATA_DIR/trash/                     deleted topics, removed in the background (and at startup)

Every metadata write is atomic (temporary file, fsync, rename, fsync of the directory). A topic is created
in a temporary directory renamed into place, and deleted by renaming it into trash/, so a crash leaves it
either whole or gone.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cluster.broker.errors import BrokerError, InvalidTopicError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TOPIC_FILE = "topic.json"
MAX_TOPIC_NAME = 249  # Kafka's limit
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")


def validate_topic_name(name: str) -> None:
    if not name:
        raise InvalidTopicError("topic name is empty")
    if len(name) > MAX_TOPIC_NAME:
        raise InvalidTopicError(f"topic name is {len(name)} characters long; at most {MAX_TOPIC_NAME} are allowed")
    if name in (".", ".."):
        raise InvalidTopicError(f"topic name {name!r} is not allowed")
    if not _TOPIC_NAME.match(name):
        raise InvalidTopicError(f"topic name {name!r} may only contain ASCII letters, digits, '.', '_' and '-'")


@dataclass(slots=True)
class TopicMeta:
    name: str
    topic_id: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)  # overrides only, Kafka names
    created_ms: int = 0

    def to_json(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "name": self.name,
            "topic_id": self.topic_id,
            "partitions": self.partitions,
            "configs": dict(sorted(self.configs.items())),
            "created_ms": self.created_ms,
        }

    @classmethod
    def from_json(cls, data: dict) -> "TopicMeta":
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported topic metadata version {data.get('version')!r}")
        return cls(
            name=str(data["name"]),
            topic_id=str(data["topic_id"]),
            partitions=int(data["partitions"]),
            configs={str(k): str(v) for k, v in data.get("configs", {}).items()},
            created_ms=int(data.get("created_ms", 0)),
        )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class DataDirectory:
    """The broker's data directory: lock, node identity, topic directories."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.topics_dir = self.root / "topics"
        self.trash_dir = self.root / "trash"
        self._lock_fd: int | None = None
        self.cluster_id = ""
        self.node_id = 0

    def open(self, *, node_id: int = 0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.topics_dir.mkdir(exist_ok=True)
        self.trash_dir.mkdir(exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BrokerError(f"data directory {self.root} is in use by another broker") from None
        self._lock_fd = fd
        node_file = self.root / "node.json"
        if node_file.exists():
            data = json.loads(node_file.read_text(encoding="utf-8"))
            self.cluster_id = str(data["cluster_id"])
            self.node_id = int(data["node_id"])
        else:
            self.cluster_id = uuid.uuid4().hex
            self.node_id = node_id
            write_json_atomic(node_file, {"version": FORMAT_VERSION, "cluster_id": self.cluster_id,
                                          "node_id": self.node_id})
        self._clean_leftovers()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _clean_leftovers(self) -> None:
        for entry in self.topics_dir.iterdir():
            if entry.name.startswith("."):  # a create that did not finish
                log.warning("removing unfinished topic directory %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
        for entry in self.trash_dir.iterdir():
            shutil.rmtree(entry, ignore_errors=True)

    def load_topics(self) -> list[TopicMeta]:
        topics = []
        for entry in sorted(self.topics_dir.iterdir()):
            meta_file = entry / TOPIC_FILE
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            try:
                meta = TopicMeta.from_json(json.loads(meta_file.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BrokerError(f"cannot read topic metadata {meta_file}: {exc}") from exc
            if meta.name != entry.name:
                raise BrokerError(f"{meta_file} names topic {meta.name!r}, not {entry.name!r}")
            topics.append(meta)
        return topics

    def topic_dir(self, name: str) -> Path:
        return self.topics_dir / name

    def partition_dir(self, name: str, partition: int) -> Path:
        return self.topics_dir / name / str(partition)

    def create_topic(self, meta: TopicMeta) -> None:
        """Write the metadata and the empty partition directories, then rename the whole into place."""
        tmp = self.topics_dir / f".{meta.name}.{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for p in range(meta.partitions):
                (tmp / str(p)).mkdir()
            write_json_atomic(tmp / TOPIC_FILE, meta.to_json())
            fsync_dir(tmp)
            os.rename(tmp, self.topic_dir(meta.name))
            fsync_dir(self.topics_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def write_topic(self, meta: TopicMeta) -> None:
        write_json_atomic(self.topic_dir(meta.name) / TOPIC_FILE, meta.to_json())

    def trash_topic(self, meta: TopicMeta) -> Path:
        """Move a topic out of topics/ atomically; the caller removes the returned directory."""
        target = self.trash_dir / f"{meta.name}.{meta.topic_id}"
        os.rename(self.topic_dir(meta.name), target)
        fsync_dir(self.topics_dir)
        return target
