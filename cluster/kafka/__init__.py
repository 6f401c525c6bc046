"""The Kafka wire-protocol front door: `start_kafka_listener(broker, host, port)` next to a broker core.

    server.py        asyncio shell: one sans-I/O codec connection per socket, ordered responses, back-pressure
    handlers/        one thin handler per API key, with the versions it serves (what ApiVersions advertises)
    cluster_view.py  the cluster facts handlers need (brokers, leaders, replicas, ISR, controller)
    producer_ids.py  InitProducerId's durable id blocks
    __main__.py      `python -m cluster.kafka`: a broker core with only this listener (tests, benchmarks)
"""

from cluster.kafka.cluster_view import (BrokerEndpoint, ClusterView, PartitionPlacement, SingleNodeClusterView,
                                        TopicView)
from cluster.kafka.config import KafkaListenerConfig
from cluster.kafka.server import KafkaListener, start_kafka_listener

__all__ = ["BrokerEndpoint", "ClusterView", "KafkaListener", "KafkaListenerConfig", "PartitionPlacement",
           "SingleNodeClusterView", "TopicView", "start_kafka_listener"]
