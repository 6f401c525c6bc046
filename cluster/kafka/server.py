"""The Kafka listener: an asyncio shell around the sans-I/O codec connection and the handler table.

    listener = await start_kafka_listener(broker, "127.0.0.1", 9092)
    ...
    await listener.close()

One `KafkaServerConnection` per socket. Requests are dispatched in arrival order; a handler that has to wait
(produce acks, fetch long-poll, topic admin) runs as a task while later requests of the same connection
proceed, but responses are written strictly in request order, as Kafka guarantees. Per connection at most
`max_in_flight_requests` requests (and `max_in_flight_bytes` of them) are being handled or waiting to be
written; past that, or while the socket's write buffer is full, reading pauses (back-pressure reaches the
client through TCP). Responses go out with one `writelines` per flush: record batches are written from the
buffers the broker returned, never copied.

What a client sends can close its own connection, never the listener: oversize frames (refused on the size
prefix), malformed bodies and unknown API keys close the connection; unsupported versions are answered
UNSUPPORTED_VERSION (ApiVersions with the KIP-511 v0 reply, connection kept); a failing handler closes the
connection and is logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections import deque
from pathlib import Path

import proto.kafka as k
from cluster.kafka.cluster_view import ClusterView, SingleNodeClusterView
from cluster.kafka.config import MiB, KafkaListenerConfig
from cluster.kafka.handlers import CLOSE_CONNECTION, HANDLERS, KafkaServices, served_versions
from cluster.kafka.producer_ids import FileProducerIdBlocks, ProducerIdAllocator

log = logging.getLogger(__name__)

_Request = k.Request
_Unsupported = k.UnsupportedRequest
_ConnectionClosed = k.ConnectionClosed
_NEED_DATA = k.NEED_DATA


class _Slot:
    """One request awaiting its response; `buffers` is set once the response is encoded."""

    __slots__ = ("header", "nbytes", "buffers", "task")

    def __init__(self, header: k.RequestHeader, nbytes: int) -> None:
        self.header = header
        self.nbytes = nbytes
        self.buffers: list | None = None
        self.task: asyncio.Task | None = None


class KafkaConnection(asyncio.Protocol):
    def __init__(self, listener: "KafkaListener") -> None:
        self._listener = listener
        self._svc = listener.services
        config = listener.config
        self._max_in_flight = config.max_in_flight_requests
        self._max_in_flight_bytes = config.max_in_flight_bytes
        self._conn = k.KafkaServerConnection(listener.max_frame_bytes, supported=self._svc.served)
        self._slots: deque[_Slot] = deque()
        self._in_flight_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._barrier: _Slot | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._pumping = False
        self._eof = False
        self._closed = False
        self.last_active = listener.clock()
        self.peer = "?"

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        if isinstance(peer, tuple) and peer:
            # The group coordinator records members' hosts (DescribeGroups, `tidelog group describe`).
            self._svc = dataclasses.replace(self._svc, client_host=f"/{peer[0]}")
        if not self._listener._register(self):
            log.warning("refusing connection from %s: %d connections open", self.peer,
                        self._listener.config.max_connections)
            self._closed = True
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.last_active = self._listener.clock()
        self._conn.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        self._conn.receive_data(b"")
        self._pump()
        return True  # keep the socket open to write the answers still due; closed once they are out

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._listener._unregister(self)
        for slot in self._slots:
            if slot.task is not None:
                slot.task.cancel()
        self._slots.clear()
        self._barrier = None

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._pump()

    # -- request flow ----------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Take requests out of the codec while the in-flight bounds allow, flushing what is ready."""
        if self._pumping or self._closed:
            return
        self._pumping = True
        try:
            while True:
                drained = self._take_requests()
                if self._closed:
                    return
                self._flush()  # answered requests free their slots ...
                if drained or self._closed or not self._has_room():
                    break  # ... so go on unless the codec needs data or handlers are still busy
        finally:
            self._pumping = False
        self._update_reading()

    def _has_room(self) -> bool:
        return (self._barrier is None and not self._writing_paused and len(self._slots) < self._max_in_flight
                and self._in_flight_bytes < self._max_in_flight_bytes)

    def _take_requests(self) -> bool:
        """Dispatch buffered requests until a bound is hit (False) or the codec needs more bytes (True)."""
        conn = self._conn
        while not self._closed and self._has_room():
            before = conn.buffered_bytes
            event = conn.next_event()
            if event is _NEED_DATA:
                return True
            kind = type(event)
            if kind is _Request:
                self._dispatch(event, before - conn.buffered_bytes)
            elif kind is _Unsupported:
                self._unsupported(event)
            elif kind is _ConnectionClosed:
                self._eof = True
                return True
            else:  # ProtocolViolation
                log.info("closing Kafka connection from %s: %s", self.peer, event.reason)
                self._close()
                return True
        return self._closed

    def _dispatch(self, request: k.Request, nbytes: int) -> None:
        header = request.header
        handler = HANDLERS[header.api_key]  # the codec only yields what the table serves
        slot = None
        if request.expects_response:
            slot = _Slot(header, nbytes)
            self._slots.append(slot)
            self._in_flight_bytes += nbytes
        try:
            result = handler.fn(self._svc, header, request.body)
        except Exception:
            log.exception("Kafka %s v%d from %s (client %r) failed; closing the connection",
                          _api_name(header.api_key), header.api_version, self.peer, header.client_id)
            self._close()
            return
        if result is CLOSE_CONNECTION:
            log.info("closing Kafka connection from %s after a failed %s v%d", self.peer,
                     _api_name(header.api_key), header.api_version)
            self._close()
            return
        if slot is None:
            if result is not None and hasattr(result, "close"):
                result.close()  # a coroutine nobody will answer (acks=0)
            return
        if isinstance(result, dict):
            self._complete(slot, result)
            return
        if result is None:
            log.error("Kafka %s handler returned no response; closing %s", _api_name(header.api_key), self.peer)
            self._close()
            return
        slot.task = asyncio.get_running_loop().create_task(self._finish(slot, result))
        if handler.barrier:
            self._barrier = slot

    async def _finish(self, slot: _Slot, awaitable) -> None:
        try:
            body = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception:
            header = slot.header
            log.exception("Kafka %s v%d from %s failed; closing the connection", _api_name(header.api_key),
                          header.api_version, self.peer)
            self._close()
            return
        slot.task = None
        if self._closed:
            return
        if self._barrier is slot:
            self._barrier = None
        self._complete(slot, body)
        self._pump()

    def _complete(self, slot: _Slot, body: dict) -> None:
        header = slot.header
        try:
            slot.buffers = self._conn.send_response_buffers(header, body)
        except Exception:
            log.exception("cannot encode the Kafka %s v%d response for %s; closing the connection",
                          _api_name(header.api_key), header.api_version, self.peer)
            self._close()
            return
        if not self._pumping:
            self._flush()

    def _unsupported(self, event: k.UnsupportedRequest) -> None:
        header = event.header
        log.info("Kafka connection from %s (client %r): %s", self.peer, header.client_id, event.reason)
        if event.response is not None:
            slot = _Slot(header, 0)
            slot.buffers = [event.response]
            self._slots.append(slot)
        if event.close:
            self._flush()
            self._close()

    def _flush(self) -> None:
        """Write every response that is ready and next in request order."""
        slots = self._slots
        if not slots or slots[0].buffers is None:
            if self._eof and not slots and not self._closed:
                self._close()
            return
        out: list = []
        freed = 0
        while slots and slots[0].buffers is not None:
            slot = slots.popleft()
            out.extend(slot.buffers)
            freed += slot.nbytes
        self._in_flight_bytes -= freed
        if self._transport is not None and not self._closed:
            self._transport.writelines(out)
            self.last_active = self._listener.clock()
        if self._eof and not slots:
            self._close()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        pause = (self._barrier is not None or self._writing_paused or len(self._slots) >= self._max_in_flight
                 or self._in_flight_bytes >= self._max_in_flight_bytes)
        if pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            if slot.task is not None:
                slot.task.cancel()
        self._slots.clear()
        if self._transport is not None:
            self._transport.close()  # what was written still goes out first

    def abort(self) -> None:
        self._close()

    def idle_since(self, now: float) -> float:
        """Seconds without traffic and with nothing in flight (0 while a request is pending)."""
        return 0.0 if self._slots else now - self.last_active


def _api_name(api_key: int) -> str:
    api = k.APIS.get(api_key)  # type: ignore[call-overload]
    return api.name if api is not None else f"api {api_key}"


class KafkaListener:
    """The Kafka front door of one broker. `await start()`, then `await close()`."""

    def __init__(self, broker, host: str = "127.0.0.1", port: int = 9092, *,
                 config: KafkaListenerConfig | None = None, cluster: ClusterView | None = None,
                 producer_id_reserve=None, groups=None) -> None:
        self.broker = broker
        self._groups = groups  # the group coordinator service (None: found with cluster.groups.service_for)
        self.host = host
        self.requested_port = port
        config = config if config is not None else KafkaListenerConfig()
        if config.max_frame_bytes is None:
            config = dataclasses.replace(config, max_frame_bytes=broker.config.max_request_bytes + MiB)
        self.config = config
        self.max_frame_bytes: int = config.max_frame_bytes
        self._cluster = cluster
        # async reserve(count) -> first id of a block unique cluster-wide (the controller's, in a cluster);
        # None: a file in the data directory (a standalone broker).
        self._producer_id_reserve = producer_id_reserve
        self.port: int | None = None
        self.services: KafkaServices | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[KafkaConnection] = set()
        self._sweeper: asyncio.Task | None = None
        self.clock = time.monotonic

    @property
    def advertised_host(self) -> str:
        if self.config.advertised_host:
            return self.config.advertised_host
        return "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host

    @property
    def bootstrap(self) -> str:
        host = self.advertised_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: KafkaConnection(self), self.host, self.requested_port,
                                                    reuse_address=True, backlog=1024)
        except OSError as exc:
            raise OSError(f"cannot listen for Kafka clients on {self.host}:{self.requested_port}: {exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        broker = self.broker
        reserve = self._producer_id_reserve
        if reserve is None:
            id_file = self.config.producer_id_file or Path(broker.config.data_dir) / "kafka-producer-ids.json"
            reserve = FileProducerIdBlocks(id_file).reserve
        self.services = KafkaServices(
            broker=broker,
            cluster=self._cluster or SingleNodeClusterView(broker, self.advertised_host, self.port),
            config=self.config,
            producer_ids=ProducerIdAllocator(reserve, block_size=self.config.producer_id_block),
            served=served_versions(),
            groups=self._groups,
        )
        self._sweeper = loop.create_task(self._close_idle_connections(), name="kafka idle connections")
        log.info("Kafka listener on %s:%d (advertised %s)", self.host, self.port, self.bootstrap)
        return self.port

    async def _close_idle_connections(self) -> None:
        limit = self.config.connections_max_idle_ms / 1000
        while True:
            await asyncio.sleep(min(30.0, max(0.05, limit / 4)))
            now = self.clock()
            for conn in list(self._connections):
                if conn.idle_since(now) > limit:
                    log.info("closing Kafka connection from %s: idle for %.0f s", conn.peer, limit)
                    conn.abort()

    def _register(self, conn: KafkaConnection) -> bool:
        if len(self._connections) >= self.config.max_connections:
            return False
        self._connections.add(conn)
        return True

    def _unregister(self, conn: KafkaConnection) -> None:
        self._connections.discard(conn)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        server.close()
        for conn in list(self._connections):
            conn.abort()
        await server.wait_closed()
        # Let the transports deliver connection_lost (cancelling handler tasks) before the broker closes.
        for _ in range(3):
            await asyncio.sleep(0)


async def start_kafka_listener(broker, host: str = "127.0.0.1", port: int = 9092, *,
                               config: KafkaListenerConfig | None = None,
                               cluster: ClusterView | None = None, producer_id_reserve=None,
                               groups=None) -> KafkaListener:
    """Listen for Kafka clients next to `broker` (on its event loop). Port 0 picks a free port. `groups`: the
    broker's group coordinator service (cluster.groups), if any."""
    listener = KafkaListener(broker, host, port, config=config, cluster=cluster,
                             producer_id_reserve=producer_id_reserve, groups=groups)
    await listener.start()
    return listener
