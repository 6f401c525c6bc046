"""Routing for the clients in a cluster: bootstrap list, one connection per broker, partition leaders.

`ClusterClient` lives on the client loop thread (tidelog._transport.client_loop). It learns the cluster with
the `ClusterService.DescribeCluster` RPC of any reachable broker (the bootstrap addresses first, then every
broker it has learnt): broker id -> gRPC address, and (topic, partition) -> leader. Produce, fetch and list
offsets go to the partition's leader; admin calls go to any broker (brokers forward them to the controller).
After NOT_LEADER_OR_FOLLOWER (the leader id it names is taken at once), a connection loss or a timeout, the
metadata is refreshed, at most every `min_refresh_s`, concurrent callers sharing one refresh.

A one-node cluster, or a broker reachable only under the bootstrap address (port forwarding), works the same:
when the answering broker's advertised address is not reachable, its bootstrap address stands in for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import grpc

from proto.rpc import tidelog_v1_pb2 as pb
from tidelog._transport import Connection, client_loop, resolve_bootstrap_list, rpc_error
from tidelog.errors import METADATA_STALE, BrokerUnavailableError, TidelogError

MIN_REFRESH_S = 0.1
DESCRIBE_TIMEOUT_S = 5.0


class ClusterClient:
    """See the module docstring. Thread-safe entry points: `run`, `call_any`, `leader_of`, `invalidate`."""

    def __init__(self, bootstrap: str | list[str] | None, *, request_timeout_ms: int = 30_000) -> None:
        self.bootstrap = resolve_bootstrap_list(bootstrap)
        self.request_timeout = request_timeout_ms / 1000
        self._request_timeout_ms = request_timeout_ms
        self.loop_thread = client_loop()
        self._conns: dict[str, Connection] = {}
        self._brokers: dict[int, str] = {}  # broker id -> gRPC address
        self._node_by_address: dict[str, int] = {}  # bootstrap address -> the broker that answered there
        self._leaders: dict[tuple[str, int], int] = {}
        self._partition_counts: dict[str, int] = {}
        self._preferred: str = self.bootstrap[0]
        self._refreshing: asyncio.Future | None = None
        self._last_refresh = 0.0
        self._stale = True
        self._closed = False
        self._background: asyncio.Task | None = None
        self.controller_id = -1
        self.cluster_id = ""

    @property
    def target(self) -> str:
        return self._preferred

    # -- connections (loop thread) ---------------------------------------------------------------------

    def connection(self, address: str) -> Connection:
        conn = self._conns.get(address)
        if conn is None:
            conn = self._conns[address] = Connection.on_loop(address, request_timeout_ms=self._request_timeout_ms)
        return conn

    def address_of(self, node_id: int) -> str | None:
        addr = self._brokers.get(node_id)
        if addr is None:
            for boot, nid in self._node_by_address.items():
                if nid == node_id:
                    return boot
        return addr

    def broker_addresses(self) -> list[str]:
        """The gRPC address of every broker learnt (sorted), else the bootstrap list."""
        return sorted(set(self._brokers.values())) or list(self.bootstrap)

    def _candidates(self) -> list[str]:
        out = [self._preferred]
        for addr in self.bootstrap + sorted(set(self._brokers.values())):
            if addr not in out:
                out.append(addr)
        return out

    # -- metadata (loop thread) ------------------------------------------------------------------------

    def invalidate(self) -> None:
        """The metadata may be wrong (a request failed): refresh it soon, in the background. Routing callers
        that never ask for a refresh themselves while the leader they know is still listed (the producer's
        sender, after a connection failure) would otherwise keep dialing a broker that is gone."""
        self._stale = True
        if self._closed:
            return
        if self.loop_thread.in_loop_thread:
            self._refresh_in_background()
        else:
            self.loop_thread.call_soon(self._refresh_in_background)

    def _refresh_in_background(self) -> None:
        if self._closed or self._refreshing is not None or \
                (self._background is not None and not self._background.done()):
            return

        async def refresh() -> None:
            try:
                await asyncio.sleep(0)
                if not self._closed:
                    await self.refresh()
            except Exception:  # pragma: no cover - the next caller refreshes again
                pass

        self._background = self.loop_thread.loop.create_task(refresh())

    def learn_leader(self, topic: str, partition: int, leader_id: int) -> None:
        if leader_id is not None and leader_id >= 0 and leader_id in self._brokers:
            self._leaders[(topic, partition)] = leader_id
        else:
            self._leaders.pop((topic, partition), None)
            self._stale = True

    async def refresh(self, *, force: bool = False) -> None:
        """Ask a broker for the cluster's brokers and leaders (shared by concurrent callers, rate-limited)."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        now = time.monotonic()
        if not force and not self._stale and now - self._last_refresh < 30.0:
            return
        wait = MIN_REFRESH_S - (now - self._last_refresh)
        future = asyncio.get_running_loop().create_future()
        self._refreshing = future
        try:
            if wait > 0:
                await asyncio.sleep(wait)
            error = await self._refresh_once()
            future.set_result(error)
        except BaseException as exc:  # pragma: no cover
            future.set_result(exc)
            raise
        finally:
            self._refreshing = None
            self._last_refresh = time.monotonic()

    async def _refresh_once(self) -> Exception | None:
        last: Exception | None = None
        timeout = min(self.request_timeout, DESCRIBE_TIMEOUT_S)
        for address in self._candidates():
            conn = self.connection(address)
            try:
                response = await conn.cluster.DescribeCluster(pb.DescribeClusterRequest(), timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                last = rpc_error(exc, address)
                continue
            self._apply(address, response)
            return None
        return last

    def _apply(self, address: str, response: pb.DescribeClusterResponse) -> None:
        self._preferred = address
        self.cluster_id = response.cluster_id
        self.controller_id = response.controller_id
        if address in self.bootstrap:
            self._node_by_address[address] = response.node_id
        brokers: dict[int, str] = {}
        for b in response.brokers:
            if b.grpc_port > 0 and b.host:
                host = b.host if ":" not in b.host else f"[{b.host}]"
                brokers[b.broker_id] = f"{host}:{b.grpc_port}"
        if response.node_id not in brokers:
            brokers[response.node_id] = address
        self._brokers = brokers
        leaders: dict[tuple[str, int], int] = {}
        counts: dict[str, int] = {}
        for p in response.partitions:
            if p.leader_id >= 0:
                leaders[(p.topic, p.partition)] = p.leader_id
            counts[p.topic] = max(counts.get(p.topic, 0), p.partition + 1)
        self._leaders = leaders
        self._partition_counts = counts
        self._stale = False

    def leader_address(self, topic: str, partition: int) -> str | None:
        leader = self._leaders.get((topic, partition))
        if leader is None:
            return None
        return self.address_of(leader)

    async def leader_connection(self, topic: str, partition: int) -> Connection | None:
        """The leader's connection, refreshing the metadata when the leader is unknown (None if still so)."""
        address = self.leader_address(topic, partition)
        if address is None:
            await self.refresh(force=True)
            address = self.leader_address(topic, partition)
        if address is None and len(self._brokers) <= 1:
            address = self._preferred  # one broker (or none learnt): it is the leader if anyone is
        return self.connection(address) if address is not None else None

    def note_error(self, error: TidelogError, topic: str | None = None, partition: int | None = None) -> None:
        """React to a failed partition request: take the leader hint, mark the metadata stale."""
        if error.error_name not in METADATA_STALE:
            return
        self._stale = True
        if topic is not None and partition is not None:
            hint = getattr(error, "leader_id", -1)
            if error.error_name == "NOT_LEADER_OR_FOLLOWER" and hint is not None and hint >= 0 \
                    and hint in self._brokers:
                self._leaders[(topic, partition)] = hint
            else:
                self._leaders.pop((topic, partition), None)

    # -- calls -----------------------------------------------------------------------------------------

    async def acall_any(self, method: Callable[[Connection], Any], request, *, timeout: float | None = None):
        """A unary RPC on any reachable broker (the last one that answered first). Raises TidelogError."""
        timeout = self.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last: TidelogError | None = None
        for address in self._candidates():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn = self.connection(address)
            try:
                response = await method(conn)(request, timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                error = rpc_error(exc, address)
                if isinstance(error, BrokerUnavailableError) or exc.code() == grpc.StatusCode.UNAVAILABLE and \
                        error.error_name in ("BROKER_NOT_AVAILABLE", "NOT_CONTROLLER"):
                    last = error
                    self._stale = True
                    continue
                raise error from None
            self._preferred = address
            return response
        raise last or BrokerUnavailableError(f"no broker of {','.join(self.bootstrap)} answered")

    def call_any(self, method: Callable[[Connection], Any], request, *, timeout: float | None = None):
        """`acall_any` from a caller thread."""
        if self._closed:
            raise TidelogError("the client is closed")
        timeout = self.request_timeout if timeout is None else timeout
        return self.loop_thread.run(self.acall_any(method, request, timeout=timeout), timeout + 5)

    def run(self, coro, timeout: float | None = None):
        return self.loop_thread.run(coro, timeout)

    def partition_count(self, topic: str) -> int | None:
        return self._partition_counts.get(topic)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()


def _error_name(code: int) -> str:
    try:
        return pb.ErrorCode.Name(code)
    except ValueError:
        return "UNKNOWN_SERVER_ERROR"


async def routed_partition_call(cluster: ClusterClient, items: list, key: Callable[[Any], tuple[str, int]],
                                send: Callable[[Connection, list], Any], results_of: Callable[[Any], list],
                                *, timeout: float) -> list:
    """Send per-partition requests to each partition's leader (one request per leader), retrying the
    partitions answered NOT_LEADER_OR_FOLLOWER / unreachable after a metadata refresh until `timeout`.
    `send(conn, items, timeout)` returns an awaitable response; `results_of(response)` its per-partition results
    (each with topic, partition, error_code, leader_id), in request order. Returns the final results in the
    order of `items`."""
    from tidelog.errors import error_for

    deadline = time.monotonic() + timeout
    pending = list(range(len(items)))
    final: list[Any] = [None] * len(items)
    delay = 0.05
    while pending:
        groups: dict[str, list[int]] = {}
        unrouted: list[int] = []
        for i in pending:
            topic, partition = key(items[i])
            conn = await cluster.leader_connection(topic, partition)
            if conn is None:
                unrouted.append(i)
            else:
                groups.setdefault(conn.target, []).append(i)
        retry: list[int] = list(unrouted)
        last_failure: TidelogError | None = None

        async def one(address: str, indexes: list[int]) -> None:
            nonlocal last_failure
            conn = cluster.connection(address)
            remaining = max(0.05, deadline - time.monotonic())
            try:
                response = await send(conn, [items[i] for i in indexes], remaining)
            except grpc.aio.AioRpcError as exc:
                error = rpc_error(exc, address)
                cluster.invalidate()
                last_failure = error
                if error.retriable or isinstance(error, BrokerUnavailableError):
                    retry.extend(indexes)
                    return
                raise error from None
            for i, r in zip(indexes, results_of(response)):
                final[i] = r
                if r.error_code:
                    name = _error_name(r.error_code)
                    if name in METADATA_STALE:
                        err = error_for(name, r.error_message)
                        err.leader_id = r.leader_id if name == "NOT_LEADER_OR_FOLLOWER" else -1
                        cluster.note_error(err, *key(items[i]))
                        retry.append(i)

        await asyncio.gather(*(one(address, idx) for address, idx in groups.items()))
        if not retry:
            break
        if time.monotonic() + delay >= deadline:
            if last_failure is not None and any(final[i] is None for i in retry):
                raise last_failure
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
        await cluster.refresh()
        pending = sorted(set(retry))
    for i, r in enumerate(final):
        if r is None:
            raise BrokerUnavailableError(f"no leader reachable for {key(items[i])[0]}-{key(items[i])[1]}")
    return final
