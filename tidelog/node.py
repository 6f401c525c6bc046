"""One tidelog node: the broker core, its cluster runtime (Raft host, controller, replicated partitions), the
group coordinator, its front doors (gRPC, Kafka) and the Prometheus /metrics endpoint.

Every node is a cluster node: without --peers it is a one-node cluster (every partition a one-voter Raft
group), so a single broker and a cluster run the same code. The group coordinator follows the Raft leadership
of the `__consumer_offsets` partitions (replication factor min(3, brokers), compacted, created on first use):
this broker coordinates the groups of the partitions it leads, loading each from its log on becoming leader."""

from __future__ import annotations

import asyncio
import logging

from tidelog.settings import ServerSettings

log = logging.getLogger("tidelog.node")


class Node:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.runtime = None
        self.broker = None
        self.groups = None  # cluster.groups.GroupCoordinatorService
        self.grpc = None
        self._metrics_server = None
        self.kafka = None
        self.grpc_port: int | None = None
        self.kafka_port: int | None = None
        self.metrics_port: int | None = None

    @property
    def bootstrap(self) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"[{host}]:{self.grpc_port}" if ":" in host else f"{host}:{self.grpc_port}"

    @property
    def kafka_bootstrap(self) -> str | None:
        if self.kafka_port is None:
            return None
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{host}:{self.kafka_port}"

    async def start(self) -> None:
        from dataclasses import replace

        from cluster.broker.broker import Broker
        from cluster.broker.errors import BrokerError
        from cluster.grpc_server import GrpcServer
        from cluster.replication.runtime import ClusterRuntime

        cluster = self.settings.cluster_settings()
        config = replace(self.settings.broker_config(), node_id=cluster.node_id)
        self.runtime = ClusterRuntime(cluster)
        self.broker = await Broker.open(config, cluster=self.runtime)
        try:
            if self.broker.node_id != cluster.node_id:
                raise BrokerError(f"data directory {self.settings.data_dir} belongs to node {self.broker.node_id}, "
                                  f"not node {cluster.node_id} (use that node's own --data-dir)")
            await self.runtime.start(self.broker)
            await self._start_groups(len(cluster.peers))
            self.grpc = GrpcServer(self.broker, host=self.settings.host, port=self.settings.grpc_port,
                                   runtime=self.runtime)
            from cluster.groups import add_group_service

            add_group_service(self.grpc, self.groups, endpoint=self._grpc_endpoint)
            self.grpc_port = await self.grpc.start()
            if self.settings.kafka_port is not None:
                await self._start_kafka()
            self.runtime.set_endpoints(self.grpc_port, self.kafka_port)
            if self.settings.metrics_port is not None:
                self._start_metrics()
        except BaseException:
            await self.stop(graceful=False)
            raise

    async def _start_groups(self, cluster_size: int) -> None:
        from dataclasses import replace

        from cluster.groups import OFFSETS_TOPIC, group_config_from, start_group_coordinator
        from cluster.kafka.cluster_view import RaftClusterView

        try:
            config = group_config_from(self.settings.group_configs)
        except (TypeError, ValueError) as exc:
            from cluster.broker.errors import InvalidConfigError

            raise InvalidConfigError(f"bad group coordinator setting: {exc}") from None
        existing = self.runtime.metadata.topics.get(OFFSETS_TOPIC)
        if existing is not None and len(existing.partitions) != config.num_partitions:
            # Groups are placed by hashing over the topic's partitions: the topic's count wins.
            log.warning("%s has %d partitions: using that (offsets.topic.num.partitions=%d ignored)",
                        OFFSETS_TOPIC, len(existing.partitions), config.num_partitions)
            config = replace(config, num_partitions=len(existing.partitions))
        # Every node leads what its Raft groups say (a one-node cluster too: its one-voter groups elect it).
        self.groups = await start_group_coordinator(
            self.broker, config=config, cluster=RaftClusterView(self.runtime), lead_all_partitions=False,
            replication_factor=max(1, min(3, cluster_size)))
        groups = self.groups

        def on_leadership(topic: str, partition: int, is_leader: bool) -> None:
            if topic == OFFSETS_TOPIC:
                groups.on_partition_leadership(partition, is_leader)

        self.runtime.add_leadership_listener(on_leadership)

    def _grpc_endpoint(self, node_id: int) -> tuple[str, int] | None:
        """(host, gRPC port) of a live broker, for the gRPC FindCoordinator."""
        runtime = self.runtime
        if runtime is None:
            return None
        reg = runtime.metadata.brokers.get(node_id)
        if reg is None or reg.grpc_port <= 0 or not runtime.is_alive(node_id):
            return None
        return reg.host, reg.grpc_port

    async def _start_kafka(self) -> None:
        from cluster.kafka.config import KafkaListenerConfig
        from cluster.kafka.server import start_kafka_listener

        config = KafkaListenerConfig(num_partitions=self.settings.default_partitions,
                                     auto_create_topics=self.settings.auto_create_topics)
        from cluster.kafka.cluster_view import RaftClusterView

        try:
            self.kafka = await start_kafka_listener(self.broker, self.settings.host, self.settings.kafka_port,
                                                    config=config, cluster=RaftClusterView(self.runtime),
                                                    producer_id_reserve=self.runtime.reserve_producer_ids,
                                                    groups=self.groups)
        except OSError as exc:
            raise OSError(f"cannot serve Kafka on {self.settings.host}:{self.settings.kafka_port}: {exc}") from exc
        self.kafka_port = self.kafka.port

    def _start_metrics(self) -> None:
        from prometheus_client import start_http_server

        try:
            server, _thread = start_http_server(self.settings.metrics_port, addr=self.settings.host,
                                                registry=self.broker.metrics.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self.settings.host}:{self.settings.metrics_port}: {exc}") from exc
        self._metrics_server = server
        self.metrics_port = server.server_port

    def ready_line(self) -> str:
        metrics = f"http://{self.settings.host}:{self.metrics_port}/metrics" if self.metrics_port else "off"
        kafka = self.kafka_bootstrap or "off"
        return (f"tidelog ready: grpc={self.bootstrap} kafka={kafka} metrics={metrics} data_dir={self.settings.data_dir} "
                f"node_id={self.broker.node_id} cluster_id={self.broker.cluster_id}")

    async def stop(self, *, graceful: bool = True) -> None:
        """Graceful (SIGTERM): hand every leadership to another broker first, then stop."""
        if graceful and self.runtime is not None and self.runtime.host is not None:
            try:
                await self.runtime.transfer_leaderships(5.0)
            except Exception as exc:  # pragma: no cover
                log.warning("handing leaderships over failed: %s", exc)
        if self.kafka is not None:
            await self.kafka.close()
            self.kafka = None
        if self.grpc is not None:
            await self.grpc.stop(grace=1.0)
            self.grpc = None
        if self._metrics_server is not None:
            server, self._metrics_server = self._metrics_server, None
            await asyncio.to_thread(_shutdown_http, server)
        if self.groups is not None:
            await self.groups.close()
            self.groups = None
        if self.runtime is not None:
            await self.runtime.close(graceful=False)
            self.runtime = None
        if self.broker is not None:
            await self.broker.close()
            self.broker = None


def _shutdown_http(server) -> None:
    server.shutdown()
    server.server_close()
