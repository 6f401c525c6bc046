"""Multi-process clusters on loopback for the end-to-end tests: N `tidelog serve` children, optionally talking
to each other through a fault-injecting TCP proxy the tests own.

Every wait is bounded; processes are stopped by the PIDs started here (never by name); ports are picked free.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import threading
import time
from pathlib import Path

from tidelog.testing import ServeProcess

HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback, outside the ephemeral range (see tidelog._ports)."""
    from tidelog._ports import free_ports as pick

    return pick(n, HOST)


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a broker restarting: keep polling
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s (last error: {last_exc!r})")
        time.sleep(interval)


class FaultProxy:
    """TCP proxies on loopback, one per directed link (a -> b: what node a dials to reach node b). `cut(n)`
    drops every connection to or from node n and refuses new ones until `heal()`; bytes are forwarded as
    they are otherwise. One selector thread serves every link."""

    def __init__(self, nodes: list[int], upstream: dict[int, int]) -> None:
        self.upstream = dict(upstream)  # node -> its real raft port
        self.ports: dict[tuple[int, int], int] = {}
        self._listeners: dict[socket.socket, tuple[int, int]] = {}
        self._pairs: dict[socket.socket, tuple[socket.socket, tuple[int, int]]] = {}
        self._cut: set[int] = set()
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        for a in nodes:
            for b in nodes:
                if a == b:
                    continue
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((HOST, 0))
                s.listen(64)
                s.setblocking(False)
                self.ports[(a, b)] = s.getsockname()[1]
                self._listeners[s] = (a, b)
                self._sel.register(s, selectors.EVENT_READ, "listen")
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()

    def peers_for(self, node: int) -> str:
        """The --peers value of `node`: itself at its real port, every other node behind a proxy."""
        parts = []
        for n in sorted(self.upstream):
            port = self.upstream[n] if n == node else self.ports[(node, n)]
            parts.append(f"{n}={HOST}:{port}")
        return ",".join(parts)

    def cut(self, node: int) -> None:
        with self._lock:
            self._cut.add(node)
            doomed = [s for s, (_, link) in self._pairs.items() if node in link]
            for s in doomed:
                self._close(s)

    def heal(self) -> None:
        with self._lock:
            self._cut.clear()

    def _close(self, s: socket.socket) -> None:
        entry = self._pairs.pop(s, None)
        with contextlib.suppress(Exception):
            self._sel.unregister(s)
        with contextlib.suppress(OSError):
            s.close()
        if entry is not None:
            other = entry[0]
            if other in self._pairs:
                self._close(other)

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.1):
                sock = key.fileobj
                with self._lock:
                    if key.data == "listen":
                        self._accept(sock)
                    elif sock in self._pairs:
                        self._pump(sock)

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        link = self._listeners[listener]
        if link[0] in self._cut or link[1] in self._cut:
            client.close()
            return
        try:
            upstream = socket.create_connection((HOST, self.upstream[link[1]]), timeout=1.0)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pairs[client] = (upstream, link)
        self._pairs[upstream] = (client, link)
        self._sel.register(client, selectors.EVENT_READ, "pump")
        self._sel.register(upstream, selectors.EVENT_READ, "pump")

    def _pump(self, sock: socket.socket) -> None:
        other, _ = self._pairs[sock]
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(sock)
            return
        try:
            other.setblocking(True)
            other.settimeout(5.0)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._close(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for s in list(self._pairs):
                self._close(s)
            for s in self._listeners:
                with contextlib.suppress(OSError):
                    s.close()
        self._sel.close()


class Cluster:
    """N brokers (node ids 1..N) as `tidelog serve` children with fixed ports (restarts keep them)."""

    def __init__(self, root: Path, nodes: int = 3, *, proxy: bool = False, extra_args: list[str] | None = None,
                 default_partitions: int = 1) -> None:
        self.root = Path(root)
        self.ids = list(range(1, nodes + 1))
        ports = free_ports(3 * nodes)
        self.grpc = {n: ports[3 * (n - 1)] for n in self.ids}
        self.kafka = {n: ports[3 * (n - 1) + 1] for n in self.ids}
        self.raft = {n: ports[3 * (n - 1) + 2] for n in self.ids}
        self.proxy = FaultProxy(self.ids, self.raft) if proxy else None
        self.procs: dict[int, ServeProcess] = {}
        for n in self.ids:
            peers = self.proxy.peers_for(n) if self.proxy else ",".join(f"{i}={HOST}:{self.raft[i]}" for i in self.ids)
            args = ["--node-id", str(n), "--peers", peers, "--raft-port", str(self.raft[n]),
                    "--kafka-port", str(self.kafka[n]), "--default-partitions", str(default_partitions),
                    "--log-level", os.environ.get("TIDELOG_TEST_LOG_LEVEL", "info"), *(extra_args or [])]
            self.procs[n] = ServeProcess(self.root / f"node-{n}", port=self.grpc[n], extra_args=args,
                                         startup_timeout=60)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> "Cluster":
        for n in self.ids:
            self.procs[n].start()
        return self

    def kill(self, node: int) -> None:
        self.procs[node].kill()

    def restart(self, node: int) -> None:
        self.procs[node].start()

    def stop(self, node: int, timeout: float = 20.0) -> int | None:
        return self.procs[node].stop(timeout)

    def alive(self, node: int) -> bool:
        proc = self.procs[node].proc
        return proc is not None and proc.poll() is None

    def close(self) -> None:
        for n in self.ids:
            with contextlib.suppress(Exception):
                self.procs[n].stop(10)
        if self.proxy is not None:
            self.proxy.close()

    def __enter__(self) -> "Cluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # -- addresses and status --------------------------------------------------------------------------

    def bootstrap(self, nodes: list[int] | None = None) -> str:
        return ",".join(f"{HOST}:{self.grpc[n]}" for n in (nodes or self.ids))

    def kafka_bootstrap(self, nodes: list[int] | None = None) -> str:
        return ",".join(f"{HOST}:{self.kafka[n]}" for n in (nodes or self.ids))

    def describe(self, node: int, timeout: float = 3.0):
        """DescribeCluster as `node` answers it (raw protobuf)."""
        import grpc

        from proto.rpc import tidelog_v1_pb2 as pb
        from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc

        with grpc.insecure_channel(f"{HOST}:{self.grpc[node]}") as channel:
            stub = pb_grpc.ClusterServiceStub(channel)
            return stub.DescribeCluster(pb.DescribeClusterRequest(), timeout=timeout)

    def leaders(self, node: int, topic: str) -> dict[int, int]:
        return {p.partition: p.leader_id for p in self.describe(node).partitions if p.topic == topic}

    def wait_healthy(self, topics: list[str] = (), timeout: float = 30.0, nodes: list[int] | None = None) -> None:
        """Every given node answers, agrees on a controller, sees every node registered and alive, and every
        partition of `topics` has a leader."""
        nodes = nodes or [n for n in self.ids if self.alive(n)]

        def healthy():
            answers = [self.describe(n) for n in nodes]
            controllers = {a.controller_id for a in answers}
            if len(controllers) != 1 or -1 in controllers:
                return False
            for a in answers:
                if sorted(b.broker_id for b in a.brokers if b.alive) != sorted(nodes):
                    return False
                for t in topics:
                    parts = [p for p in a.partitions if p.topic == t]
                    if not parts or any(p.leader_id < 0 for p in parts):
                        return False
            return True

        wait_until(healthy, timeout, what=f"healthy cluster {nodes} with topics {list(topics)}")

    def replica_dirs(self, node: int, topic_id: str) -> dict[int, Path]:
        base = self.root / f"node-{node}" / "replicas" / topic_id
        if not base.exists():
            return {}
        return {int(p.name): p for p in base.iterdir() if p.is_dir() and p.name.isdigit()}

    def log_bytes(self, node: int, topic_id: str, partition: int) -> bytes:
        """The partition's segment files on `node`, concatenated in offset order."""
        d = self.root / f"node-{node}" / "replicas" / topic_id / str(partition)
        out = bytearray()
        for seg in sorted(d.glob("*.log")):
            out += seg.read_bytes()
        return bytes(out)

    def stderr(self, node: int) -> str:
        return self.procs[node].stderr()

    def dump_logs(self, dest: Path) -> None:
        for n in self.ids:
            (Path(dest) / f"node-{n}.stderr").write_text(self.stderr(n))


def copy_logs_on_failure(cluster: Cluster, request) -> None:
    """Keep the brokers' stderr next to the test's tmp dir when it failed (debugging aid)."""
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        with contextlib.suppress(Exception):
            cluster.dump_logs(cluster.root)
            shutil.copytree(cluster.root, Path("/tmp") / f"tidelog-e2e-{request.node.name}", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.log", "*.index", "*.timeindex"))
