"""Helpers for the Kafka listener tests: a broker child process, an in-process broker thread, a raw client.

Every wait is bounded; only processes started here are stopped, by their PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable

import proto.kafka as k
from storage.record_batch import RecordInput, build_batch, iter_headers, iter_records

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
_I32 = struct.Struct(">i")


# ----------------------------------------------------------------------------------------- partitioners

def murmur2_partition(key: bytes, partitions: int) -> int:
    """Java / kafka-python / aiokafka / librdkafka murmur2_random placement of a keyed record."""
    from tidelog.partitioner import partition_for_key

    return partition_for_key(key, partitions)


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default consistent_random placement of a non-empty key: CRC32(key) % partitions."""
    return zlib.crc32(key) % partitions


# ------------------------------------------------------------------------------------------ child broker

class BrokerProcess:
    """`python -m cluster.kafka` in a child process (its own interpreter, so clients and broker use both cores)."""

    def __init__(self, data_dir: Path, *, default_partitions: int = 3, extra: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.default_partitions = default_partitions
        self.extra = list(extra or [])
        self.proc: subprocess.Popen | None = None
        self.host = HOST
        self.port = 0
        self.stderr_path = self.data_dir.parent / f"{self.data_dir.name}.stderr"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> "BrokerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.kafka", "--data-dir", str(self.data_dir), "--host", HOST,
             "--port", str(self.port), "--default-partitions", str(self.default_partitions),
             "--exit-on-stdin-eof", "--log-level", "warning", *self.extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT, env=env)
        line = _readline(self.proc, timeout)
        if not line.startswith("KAFKA_READY "):
            self.stop()
            raise RuntimeError(f"broker did not start: {line!r}; stderr: {self.stderr_tail()}")
        self.port = int(line.split()[1].rsplit(":", 1)[1])
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            return self.stderr_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()
        self._stderr.close()
        return proc.returncode

    def restart(self) -> "BrokerProcess":
        """Stop and start again on the same data directory and port."""
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
            break
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace").strip()


# ---------------------------------------------------------------------------------- in-process listener

class ListenerThread:
    """A Broker and its Kafka listener on a background uvloop thread, for tests that look inside."""

    def __init__(self, data_dir: Path, *, default_partitions: int = 3, config=None,
                 cluster_factory: Callable[[Any, int], Any] | None = None, advertised_port: int | None = None,
                 **broker_settings) -> None:
        self.data_dir = Path(data_dir)
        self.default_partitions = default_partitions
        self.config = config
        self.cluster_factory = cluster_factory
        self.advertised_port = advertised_port
        self.broker_settings = broker_settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.broker = None
        self.listener = None
        self.port = 0
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> "ListenerThread":
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="kafka-listener-test", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("listener thread did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        import uvloop

        from cluster.broker.broker import Broker
        from cluster.broker.config import BrokerConfig
        from cluster.kafka import KafkaListenerConfig, SingleNodeClusterView, start_kafka_listener

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self.broker = await Broker.open(BrokerConfig(data_dir=self.data_dir,
                                                             default_partitions=self.default_partitions,
                                                             **self.broker_settings))
                cluster = None
                if self.advertised_port is not None:
                    cluster = SingleNodeClusterView(self.broker, HOST, self.advertised_port)
                self.listener = await start_kafka_listener(self.broker, HOST, self.port,
                                                           config=self.config or KafkaListenerConfig(),
                                                           cluster=cluster)
                if self.cluster_factory is not None:  # the view may need the bound port
                    self.listener.services.cluster = self.cluster_factory(
                        self.broker, self.advertised_port or self.listener.port)
                self.port = self.listener.port
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                if self.broker is not None:
                    await self.broker.close()
                return
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.listener.close()
                await self.broker.close()

        uvloop.run(main())

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run `fn()` on the broker's loop (a coroutine result is awaited) and return its result."""
        async def run():
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "listener thread did not stop"
        self._thread = None

    def restart(self) -> "ListenerThread":
        self.stop()
        return self.start()

    def __enter__(self) -> "ListenerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------- raw client

class ConnectionClosedError(Exception):
    pass


class RawClient:
    """A blocking Kafka client speaking our codec: exact requests, no retries, bounded waits."""

    def __init__(self, port: int, host: str = HOST, *, timeout: float = 10.0, client_id: str | None = "raw-test"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.client_id = client_id
        self._correlation = 0
        self._pending: dict[int, tuple[int, int]] = {}
        self._buf = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, api_key: int, version: int, body: dict) -> int:
        self._correlation += 1
        cid = self._correlation
        frame = k.encode_request(api_key, version, cid, body, self.client_id)
        self.sock.sendall(frame)
        self._pending[cid] = (api_key, version)
        return cid

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self, timeout: float | None = None) -> bytes:
        """One size-prefixed response frame; ConnectionClosedError if the broker closed the socket."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self._buf) >= 4:
                size = _I32.unpack_from(self._buf, 0)[0]
                if len(self._buf) >= 4 + size:
                    frame, self._buf = self._buf[:4 + size], self._buf[4 + size:]
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no response in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError("no response in time") from None
            except ConnectionResetError:
                raise ConnectionClosedError("connection reset") from None
            if not chunk:
                raise ConnectionClosedError("connection closed by the broker")
            self._buf += chunk

    def recv(self, timeout: float | None = None) -> tuple[int, dict]:
        frame = self.recv_frame(timeout)
        cid = _I32.unpack_from(frame, 4)[0]
        api_key, version = self._pending.pop(cid)
        return k.decode_response(api_key, version, frame)

    def request(self, api_key: int, version: int, body: dict, timeout: float | None = None) -> dict:
        cid = self.send(api_key, version, body)
        got, response = self.recv(timeout)
        assert got == cid, f"response {got} for request {cid}"
        return response

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True once the broker closes the socket (data it still sends is read and dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
        return False


# --------------------------------------------------------------------------------------- request bodies

def batch(values: list[bytes], *, keys: list[bytes | None] | None = None, timestamp: int = 1_700_000_000_000,
          step: int = 1, **kwargs) -> bytes:
    keys = keys or [None] * len(values)
    return build_batch([RecordInput(key, value, timestamp + i * step) for i, (key, value) in
                        enumerate(zip(keys, values))], **kwargs)


def produce_body(topic: str, partition: int, records: bytes | None, *, acks: int = -1,
                 timeout_ms: int = 10_000) -> dict:
    return {"transactional_id": None, "acks": acks, "timeout_ms": timeout_ms, "topic_data": [
        {"name": topic, "partition_data": [{"index": partition, "records": records}]}]}


def produce_result(response: dict) -> dict:
    return response["responses"][0]["partition_responses"][0]


def fetch_body(topic: str, partition: int, offset: int, *, version: int = 12, max_wait_ms: int = 0,
               min_bytes: int = 1, topic_id=None, replica_id: int = -1, partition_max_bytes: int = 1 << 20,
               session_id: int = 0, session_epoch: int = -1) -> dict:
    return {"replica_id": replica_id, "replica_state": {"replica_id": replica_id, "replica_epoch": -1},
            "max_wait_ms": max_wait_ms, "min_bytes": min_bytes, "max_bytes": 50 << 20, "isolation_level": 0,
            "session_id": session_id, "session_epoch": session_epoch,
            "topics": [{"topic": topic, "topic_id": topic_id or uuid.UUID(int=0), "partitions": [
                {"partition": partition, "fetch_offset": offset, "partition_max_bytes": partition_max_bytes}]}],
            "forgotten_topics_data": [], "rack_id": ""}


def fetch_partition(response: dict) -> dict:
    return response["responses"][0]["partitions"][0]


def records_of(data) -> list:
    return list(iter_records(bytes(data or b"")))


def headers_of(data) -> list:
    return [h for _, h in iter_headers(bytes(data or b""))]


def metadata_body(topics: list[str] | None, *, auto_create: bool = True) -> dict:
    return {"topics": None if topics is None else [{"name": t} for t in topics],
            "allow_auto_topic_creation": auto_create}


def create_topic(client: RawClient, name: str, partitions: int = 3, configs: dict | None = None) -> dict:
    response = client.request(k.ApiKey.CREATE_TOPICS, 7, {"topics": [
        {"name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
         "configs": [{"name": n, "value": v} for n, v in (configs or {}).items()]}], "timeout_ms": 10_000})
    result = response["topics"][0]
    assert result["error_code"] == 0, result
    return result


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def healthy(port: int, topic: str = "health-check") -> None:
    """A fresh connection can negotiate, look up metadata, produce and fetch: the listener is fine."""
    with RawClient(port) as c:
        av = c.request(k.ApiKey.API_VERSIONS, 3, {"client_software_name": "health",
                                                   "client_software_version": "1"})
        assert av["error_code"] == 0 and av["api_keys"]
        md = c.request(k.ApiKey.METADATA, 12, metadata_body([topic]))
        assert md["topics"][0]["error_code"] == 0, md
        res = produce_result(c.request(k.ApiKey.PRODUCE, 9, produce_body(topic, 0, batch([b"ok"]))))
        assert res["error_code"] == 0, res
        got = fetch_partition(c.request(k.ApiKey.FETCH, 12, fetch_body(topic, 0, res["base_offset"])))
        assert got["error_code"] == 0 and [r.value for r in records_of(got["records"])][-1] == b"ok"
