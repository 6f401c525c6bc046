"""tidelog: a Kafka-compatible, Raft-replicated log. Public Python API: Producer, Consumer, Admin,
GroupConsumer (a consumer-group member), GroupAdmin, DeadLetterQueue."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "Consumer",
    "ConsumerRecord",
    "DeadLetterQueue",
    "EmbeddedBroker",
    "GroupAdmin",
    "GroupConsumer",
    "Producer",
    "RecordMetadata",
    "TopicPartition",
    "TidelogError",
]

# Lazy: `import tidelog` (e.g. by the pytest plugin or the CLI's --help) stays cheap.
_LAZY = {
    "Admin": "tidelog.admin",
    "Consumer": "tidelog.consumer",
    "ConsumerRecord": "tidelog.records",
    "TopicPartition": "tidelog.records",
    "EmbeddedBroker": "tidelog.embedded",
    "GroupConsumer": "tidelog.group_consumer",
    "GroupAdmin": "tidelog.group_consumer",
    "DeadLetterQueue": "tidelog.dlq",
    "Producer": "tidelog.producer",
    "RecordMetadata": "tidelog.producer",
    "TidelogError": "tidelog.errors",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidelog' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from tidelog.admin import Admin
    from tidelog.consumer import Consumer
    from tidelog.dlq import DeadLetterQueue
    from tidelog.embedded import EmbeddedBroker
    from tidelog.group_consumer import GroupAdmin, GroupConsumer
    from tidelog.errors import TidelogError
    from tidelog.producer import Producer, RecordMetadata
    from tidelog.records import ConsumerRecord, TopicPartition
