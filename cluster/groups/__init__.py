"""The group coordinator service of a broker: the asyncio shell around `consumer_groups.GroupCoordinator`
(`service.py`), its gRPC API (`grpc_service.py`, tidelog.v1.GroupService); the Kafka group APIs live in
`cluster/kafka/handlers/groups.py` and find the service with `service_for(broker)`.

Wiring (a node):
    service = await start_group_coordinator(broker, cluster=view)      # after Broker.open
    add_group_service(grpc_server, service)                            # before grpc_server.start()
    ...
    await service.close()                                              # before broker.close()
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
