"""An in-process broker for tests and notebooks: `with EmbeddedBroker(data_dir) as b: Producer(b.bootstrap)`.

The broker runs on its own thread and event loop; the gRPC port is picked free unless given.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Mapping

from tidelog.settings import ServerSettings


class EmbeddedBroker:
    def __init__(self, data_dir: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 metrics_port: int | None = None, kafka_port: int | None = None, topic_defaults: Mapping[str, object] | None = None,
                 default_partitions: int = 1, startup_timeout: float = 30.0, **settings) -> None:
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tidelog-")
            data_dir = self._tmp.name
        self.settings = ServerSettings(
            data_dir=Path(data_dir), host=host, grpc_port=port, metrics_port=metrics_port,
            kafka_port=kafka_port,
            default_partitions=default_partitions,
            topic_defaults={k: str(v) for k, v in (topic_defaults or {}).items()}, **settings)
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._node = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def bootstrap(self) -> str:
        return self._node.bootstrap

    @property
    def kafka_bootstrap(self) -> str | None:
        """host:port of the Kafka listener (pass kafka_port=0 to start one on a free port)."""
        return self._node.kafka_bootstrap

    @property
    def port(self) -> int:
        return self._node.grpc_port

    @property
    def metrics_port(self) -> int | None:
        return self._node.metrics_port

    @property
    def broker(self):
        """The broker core (call its methods on `self.loop` only: see `call`)."""
        return self._node.broker

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def call(self, coro, timeout: float = 30.0):
        """Run a coroutine on the broker's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "EmbeddedBroker":
        self._thread = threading.Thread(target=self._run, name="tidelog-embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise TimeoutError(f"embedded broker did not start within {self._startup_timeout:g}s")
        if self._error is not None:
            self._thread.join(5)
            raise self._error
        return self

    def _run(self) -> None:
        import uvloop

        from tidelog.node import Node

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            node = Node(self.settings)
            try:
                await node.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self._node = node
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await node.stop()

        uvloop.run(main())

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
