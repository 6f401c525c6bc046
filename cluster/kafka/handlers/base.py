"""What every handler gets and returns.

A handler is a plain function ``fn(services, header, body)`` called in arrival order on the listener's loop.
It returns the response body (a dict), an awaitable of it (the shell runs it as a task and still writes
responses in request order), None when no response is due (acks=0), or CLOSE_CONNECTION. Whatever must
happen in arrival order (a produce's append) happens in the synchronous part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Union

from proto.kafka import ApiKey, RequestHeader

if TYPE_CHECKING:
    from cluster.broker.broker import Broker
    from cluster.kafka.cluster_view import ClusterView
    from cluster.kafka.config import KafkaListenerConfig
    from cluster.kafka.producer_ids import ProducerIdAllocator


class _Close:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CLOSE_CONNECTION"


CLOSE_CONNECTION: Any = _Close()

Result = Union[dict, Awaitable[dict], None, _Close]


@dataclass(slots=True)
class KafkaServices:
    """What the handlers work with. The listener holds one; each connection gets a shallow copy carrying its
    own `client_host` (everything else is shared)."""

    broker: "Broker"
    cluster: "ClusterView"
    config: "KafkaListenerConfig"
    producer_ids: "ProducerIdAllocator"
    served: dict[int, tuple[int, int]]  # api key -> (min, max) version: what ApiVersions advertises
    # The group coordinator service (cluster.groups.GroupCoordinatorService) next to the broker; None: the group
    # handlers look it up with `cluster.groups.service_for(broker)` (and answer COORDINATOR_NOT_AVAILABLE
    # without one).
    groups: Any = None
    # The connection's peer as Kafka reports members' hosts ("/127.0.0.1"); "" on the listener's own copy.
    client_host: str = ""


@dataclass(frozen=True, slots=True)
class Handler:
    api_key: ApiKey
    min_version: int
    max_version: int
    fn: Callable[[KafkaServices, RequestHeader, dict], Result]
    # Later requests of the same connection wait until this one is answered (topic administration:
    # a pipelined Metadata must see the topic a CreateTopics just made).
    barrier: bool = False
