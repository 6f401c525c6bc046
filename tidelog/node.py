"""One tidelog node: the broker core plus its front doors (gRPC) and the Prometheus /metrics endpoint."""

from __future__ import annotations

import asyncio
import logging

from tidelog.settings import ServerSettings

log = logging.getLogger("tidelog.node")


class Node:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.broker = None
        self.grpc = None
        self._metrics_server = None
        self.grpc_port: int | None = None
        self.metrics_port: int | None = None

    @property
    def bootstrap(self) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"[{host}]:{self.grpc_port}" if ":" in host else f"{host}:{self.grpc_port}"

    async def start(self) -> None:
        from cluster.broker.broker import Broker
        from cluster.grpc_server import GrpcServer

        self.broker = await Broker.open(self.settings.broker_config())
        try:
            self.grpc = GrpcServer(self.broker, host=self.settings.host, port=self.settings.grpc_port)
            self.grpc_port = await self.grpc.start()
            if self.settings.metrics_port is not None:
                self._start_metrics()
        except BaseException:
            await self.stop()
            raise

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
        return (f"tidelog ready: grpc={self.bootstrap} metrics={metrics} data_dir={self.settings.data_dir} "
                f"node_id={self.broker.node_id} cluster_id={self.broker.cluster_id}")

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(grace=1.0)
            self.grpc = None
        if self._metrics_server is not None:
            server, self._metrics_server = self._metrics_server, None
            await asyncio.to_thread(_shutdown_http, server)
        if self.broker is not None:
            await self.broker.close()
            self.broker = None


def _shutdown_http(server) -> None:
    server.shutdown()
    server.server_close()
