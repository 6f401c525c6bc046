"""The group coordinator service of a broker: the asyncio shell around `consumer_groups.GroupCoordinator`
(`service.py`), its gRPC API (`grpc_service.py`, tidelog.v1.GroupService); the Kafka group APIs live in
`cluster/kafka/handlers/groups.py` and find the service with `service_for(broker)`.

Wiring (what `tidelog.node.Node` does for `tidelog serve`):
    service = await start_group_coordinator(broker, cluster=RaftClusterView(runtime), lead_all_partitions=False,
                                            replication_factor=min(3, brokers))   # after the runtime starts
    runtime.add_leadership_listener(lambda topic, p, leader: topic == OFFSETS_TOPIC and
                                    service.on_partition_leadership(p, leader))
    add_group_service(grpc_server, service, endpoint=...)              # before grpc_server.start()
    start_kafka_listener(..., groups=service)
    ...
    await service.close()                                              # before the runtime and broker close
A standalone broker core (tests, `tests/groups/group_node.py`) passes `lead_all_partitions=True` instead: it
leads every partition from the start.
"""

from cluster.groups.grpc_service import GroupServicer, add_group_service
from cluster.groups.service import (
    OFFSETS_TOPIC,
    CoordinatorUnavailable,
    GroupCoordinatorService,
    group_config_from,
    service_for,
    start_group_coordinator,
)

__all__ = [
    "OFFSETS_TOPIC",
    "CoordinatorUnavailable",
    "GroupCoordinatorService",
    "GroupServicer",
    "add_group_service",
    "group_config_from",
    "service_for",
    "start_group_coordinator",
]
