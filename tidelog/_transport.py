"""The clients' plumbing: a background thread running an event loop that owns one grpc.aio channel.

The sync API (Producer, Consumer, Admin) runs its RPCs on that loop; per-record work (batching, encoding,
decoding) stays in the caller's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any, Awaitable, Callable, TypeVar

import grpc

from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc
from tidelog.errors import BrokerUnavailableError, RequestTimedOutError, TidelogError, error_for

T = TypeVar("T")

DEFAULT_PORT = 7070
DEFAULT_BOOTSTRAP = f"127.0.0.1:{DEFAULT_PORT}"
BOOTSTRAP_ENV = "TIDELOG_BOOTSTRAP"
ERROR_METADATA_KEY = "tidelog-error"
LEADER_METADATA_KEY = "tidelog-leader"
MiB = 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 128 * MiB),
    ("grpc.max_receive_message_length", 128 * MiB),
    # Reconnect quickly after a broker restart (gRPC's default backoff grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
    # A channel of its own: gRPC's process-wide subchannel pool would hand a new client a connection still
    # in reconnect backoff from an older client, failing its first calls after a broker restart.
    ("grpc.use_local_subchannel_pool", 1),
]


def resolve_bootstrap_list(bootstrap: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """`host:port[,host:port...]` (or a list) from the argument, else $TIDELOG_BOOTSTRAP, else
    127.0.0.1:7070. Any one reachable broker of a cluster will do. Raises ValueError."""
    if isinstance(bootstrap, (list, tuple)):
        items = [str(b).strip() for b in bootstrap]
        value = ",".join(items)
    else:
        value = (bootstrap or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP).strip()
        items = [v.strip() for v in value.split(",")]
    out = []
    for item in items:
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bootstrap address {item!r} must be HOST:PORT")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bootstrap address {item!r} has an invalid port")
        if item not in out:
            out.append(item)
    if not out:
        raise ValueError(f"bootstrap address {value!r} must be HOST:PORT")
    return out


def resolve_bootstrap(bootstrap: str | list[str] | None) -> str:
    """The first `host:port` of the bootstrap list (see resolve_bootstrap_list). Raises ValueError."""
    return resolve_bootstrap_list(bootstrap)[0]


def rpc_error(exc: grpc.aio.AioRpcError | grpc.RpcError, target: str) -> TidelogError:
    """Translate a failed RPC: the broker's `tidelog-error` reason if present, else by status code."""
    name = None
    leader = None
    try:
        for key, value in exc.trailing_metadata() or ():
            if key == ERROR_METADATA_KEY:
                name = value
            elif key == LEADER_METADATA_KEY:
                leader = int(value)
    except Exception:
        pass
    details = exc.details() or ""
    if name:
        message = details.split(": ", 1)[1] if details.startswith(f"{name}: ") else details
        error = error_for(name, message)
        if leader is not None:
            error.leader_id = leader
        return error
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return BrokerUnavailableError(f"cannot reach broker at {target}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimedOutError(f"request to {target} timed out")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return error_for("RECORD_LIST_TOO_LARGE", f"request refused by {target}: {details}")
    if code == grpc.StatusCode.CANCELLED:
        return BrokerUnavailableError(f"connection to {target} was closed: {details}")
    return TidelogError(f"{code.name}: {details}")


class LoopThread:
    """A daemon thread running an asyncio event loop (uvloop when available)."""

    def __init__(self, name: str) -> None:
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def alive(self) -> bool:
        return self.pid == os.getpid() and self._thread.is_alive()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        if self.in_loop_thread:
            raise RuntimeError("blocking call from the client's own event loop thread")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimedOutError(f"no answer within {timeout:g}s") from None

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)


_shared: LoopThread | None = None
_shared_lock = threading.Lock()


def client_loop() -> LoopThread:
    """The process-wide loop every client's channel lives on, started on first use and never closed.

    One loop for all clients (rather than one per client) because grpc.aio binds each loop it sees to its
    process-wide completion queue for good: closing a client's own loop would leave gRPC posting late
    events to a closed loop, and every client would leak a loop. Recreated after a fork.
    """
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive:
            _shared = LoopThread("tidelog-client")
        return _shared


class Connection:
    """One broker connection: a grpc.aio channel plus stubs, living on its own LoopThread."""

    def __init__(self, bootstrap: str | None, *, request_timeout_ms: int = 30_000, _on_loop: bool = False) -> None:
        self.target = resolve_bootstrap(bootstrap)
        self.request_timeout = request_timeout_ms / 1000
        self.loop_thread = client_loop()
        self._closed = False
        if _on_loop:
            self._open_now()
        else:
            self.loop_thread.run(self._open())

    @classmethod
    def on_loop(cls, target: str, *, request_timeout_ms: int = 30_000) -> "Connection":
        """Build from the client loop's own thread (the channel binds to that loop)."""
        return cls(target, request_timeout_ms=request_timeout_ms, _on_loop=True)

    async def _open(self) -> None:
        self._open_now()

    def _open_now(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self.admin = pb_grpc.AdminServiceStub(self.channel)
        self.log = pb_grpc.LogServiceStub(self.channel)
        self.cluster = pb_grpc.ClusterServiceStub(self.channel)

    async def _call(self, method, request, timeout: float):
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, self.target) from None

    def call(self, method, request, *, timeout: float | None = None):
        """Run a unary RPC from a caller thread; raises TidelogError subclasses."""
        if self._closed:
            raise TidelogError("the client is closed")
        timeout = self.request_timeout if timeout is None else timeout
        return self.loop_thread.run(self._call(method, request, timeout), timeout + 5)

    async def acall(self, method, request, *, timeout: float | None = None):
        """The same from the connection's own loop."""
        return await self._call(method, request, self.request_timeout if timeout is None else timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def _close() -> None:
            await self.channel.close(grace=None)

        try:
            if self.loop_thread.in_loop_thread:
                self.loop_thread.loop.create_task(_close())
            else:
                self.loop_thread.run(_close(), 5)
        except Exception:
            pass
