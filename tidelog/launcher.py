"""`tidelog cluster ...`: start, inspect and stop a local multi-broker cluster.

Each broker is its own `tidelog serve` process, detached in its own session (it outlives the launcher), with
ports from a base port (docs/cluster-design.md, "Node flags, the launcher and cluster status"): node i
(1-based) listens on gRPC base+10*i, Kafka base+10*i+1, metrics base+10*i+2, raft base+10*i+3. Data and the
log of node i live in DIR/node-i; DIR/cluster.json records every node's ports, PID and command line, and is
what `status`, `down`, `kill-node`, `start-node`, `restart-node` read. It is rewritten atomically.

Health ("healthy" in the contract): every node answers DescribeCluster, all agree on a controller leader,
every broker is registered and alive in the controller's view, and every partition has a leader.

A PID is signalled only if /proc/PID/cmdline is exactly the command line cluster.json recorded for that
node (so a recycled PID, or any other process, is never touched), and never by name.

The command-line glue is at the end (`add_cluster_commands`, registered by tidelog/cli.py). This module
imports only the standard library at import time so `tidelog --help` stays fast; gRPC is loaded when a
broker is asked something.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, TextIO

from tidelog.errors import TidelogError

CLUSTER_FILE = "cluster.json"
LOCK_FILE = ".cluster.lock"
FORMAT_VERSION = 1
DEFAULT_NODES = 3
DEFAULT_BASE_PORT = 7100
DEFAULT_DATA_DIR = Path("data")
DEFAULT_HOST = "127.0.0.1"
MAX_NODES = 99  # base + 10*i + 3 must stay a port, and node-i names stay short
PORT_ROLES = ("grpc", "kafka", "metrics", "raft")  # offsets 0..3 within a node's block of ten


class LauncherError(TidelogError):
    """A user-facing failure of a cluster command: `tidelog` prints it as one line and exits 1.

    A TidelogError (not cli.CliError) because `python -m tidelog.cli` runs cli.py as __main__, whose
    CliError is another class than tidelog.cli.CliError; tidelog.errors is imported once either way."""

    error_name = ""  # no Kafka error name to append to the message


class CatchUpTimeout(LauncherError):
    """A started node answers and the cluster is healthy, but the node is not back in every ISR yet."""


# --------------------------------------------------------------------------------------------------------
# the cluster file


def node_ports(base_port: int, node_id: int) -> dict[str, int]:
    """The contract's port layout: node i gets base+10*i+{0: gRPC, 1: Kafka, 2: metrics, 3: raft}."""
    if node_id < 1:
        raise ValueError(f"node ids start at 1, got {node_id}")
    first = base_port + 10 * node_id
    return {f"{role}_port": first + offset for offset, role in enumerate(PORT_ROLES)}


def check_layout(nodes: int, base_port: int) -> None:
    if not 1 <= nodes <= MAX_NODES:
        raise LauncherError(f"--nodes must be between 1 and {MAX_NODES}, got {nodes}")
    if base_port < 1:
        raise LauncherError(f"--base-port must be positive, got {base_port}")
    highest = node_ports(base_port, nodes)["raft_port"]
    if highest > 65535:
        raise LauncherError(f"--base-port {base_port} is too high for {nodes} nodes: node {nodes} would need port "
                            f"{highest} (at most {65535 - 10 * nodes - 3})")


@dataclass(slots=True)
class NodeSpec:
    node_id: int
    host: str
    grpc_port: int
    kafka_port: int
    metrics_port: int
    raft_port: int
    data_dir: str  # absolute, so cluster.json means the same from any working directory
    log_file: str
    args: list[str]  # the exact command line; /proc/PID/cmdline must equal it before PID is signalled
    pid: int | None = None  # None: not running (stopped or never started)

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def kafka_address(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    def ports(self) -> dict[str, int]:
        return {f"{role}_port": getattr(self, f"{role}_port") for role in PORT_ROLES}


@dataclass(slots=True)
class ClusterFile:
    base_port: int
    nodes: list[NodeSpec]
    version: int = FORMAT_VERSION

    def node(self, node_id: int) -> NodeSpec:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        ids = ", ".join(str(n.node_id) for n in self.nodes)
        raise LauncherError(f"there is no node {node_id} in this cluster (nodes: {ids})")

    @property
    def grpc_endpoints(self) -> str:
        return ",".join(n.grpc_address for n in self.nodes)

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(n.kafka_address for n in self.nodes)

    def to_json(self) -> dict:
        return {"version": self.version, "base_port": self.base_port, "nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_json(cls, data: object, origin: str = CLUSTER_FILE) -> "ClusterFile":
        try:
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r} (this tidelog reads {FORMAT_VERSION})")
            nodes = []
            for raw in data["nodes"]:
                pid = raw.get("pid")
                nodes.append(NodeSpec(
                    node_id=int(raw["node_id"]), host=str(raw["host"]), grpc_port=int(raw["grpc_port"]),
                    kafka_port=int(raw["kafka_port"]), metrics_port=int(raw["metrics_port"]),
                    raft_port=int(raw["raft_port"]), data_dir=str(raw["data_dir"]), log_file=str(raw["log_file"]),
                    args=[str(a) for a in raw["args"]], pid=None if pid is None else int(pid)))
            if not nodes:
                raise ValueError("no nodes")
            if len({n.node_id for n in nodes}) != len(nodes):
                raise ValueError("duplicate node ids")
            return cls(base_port=int(data["base_port"]), nodes=nodes)
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise LauncherError(f"{origin} is not a valid cluster file: {what}") from None


def cluster_path(data_dir: Path) -> Path:
    return Path(data_dir) / CLUSTER_FILE


def load_cluster(data_dir: Path) -> ClusterFile | None:
    """The cluster file of `data_dir`, or None if there is none."""
    path = cluster_path(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LauncherError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LauncherError(f"{path} is not valid JSON: {exc}") from None
    return ClusterFile.from_json(data, str(path))


def require_cluster(data_dir: Path) -> ClusterFile:
    cluster = load_cluster(data_dir)
    if cluster is None:
        raise LauncherError(f"no cluster in {data_dir}: {cluster_path(data_dir)} does not exist "
                            f"(start one with 'tidelog cluster up --data-dir {data_dir}')")
    return cluster


def save_cluster(data_dir: Path, cluster: ClusterFile) -> None:
    """Write cluster.json atomically: a temporary file, fsync, rename over the old one, fsync the directory."""
    path = cluster_path(data_dir)
    tmp = path.with_name(f".{CLUSTER_FILE}.{os.getpid()}.tmp")
    payload = json.dumps(cluster.to_json(), indent=2) + "\n"
    try:
        with open(tmp, "w") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LauncherError(f"cannot write {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def cluster_lock(data_dir: Path, timeout: float = 10.0) -> Iterator[None]:
    """One mutating cluster command at a time per data dir (two `up`s racing would both start brokers)."""
    import fcntl

    path = Path(data_dir) / LOCK_FILE
    if not Path(data_dir).is_dir():
        raise LauncherError(f"no cluster in {data_dir}: the directory does not exist")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LauncherError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LauncherError(f"another 'tidelog cluster' command is working on {data_dir} "
                                        f"(lock {path} held for {timeout:g}s)") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------------------------------------
# processes: identity, state, signals


def process_state(pid: int) -> str | None:
    """The /proc state letter of `pid` (R, S, D, T, Z, ...), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses, so split after the last ')'.
    rest = stat.rpartition(")")[2].split()
    return rest[0] if rest else None


def process_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not raw:
        return None  # a zombie or a kernel thread
    return [part.decode("utf-8", "surrogateescape") for part in raw.rstrip(b"\0").split(b"\0")]


def owns(pid: int | None, node: NodeSpec) -> bool:
    """True if `pid` is a live process running exactly the command line recorded for `node`.

    The recorded command names this node's --data-dir, so a match is a tidelog serve of this data dir; a PID
    the kernel recycled for another program (or for another node) does not match and is never signalled.
    """
    if not pid or pid <= 0:
        return False
    deadline = time.monotonic() + 1.0
    while True:
        state = process_state(pid)
        if state is None or state in ("Z", "X"):
            return False
        cmdline = process_cmdline(pid)
        if cmdline is not None or time.monotonic() > deadline:
            return cmdline == node.args
        time.sleep(0.005)  # just exec'd: the kernel shows an empty cmdline for a few milliseconds


def node_process(node: NodeSpec) -> str:
    """'running', 'paused' (SIGSTOPped), 'stopped' (no PID recorded), 'gone' (its PID is dead), or 'foreign'
    (the PID is alive but is not this node's process any more)."""
    if node.pid is None:
        return "stopped"
    if not owns(node.pid, node):
        return "gone" if process_state(node.pid) in (None, "Z", "X") else "foreign"
    return "paused" if process_state(node.pid) in ("T", "t") else "running"


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our own child (else it would linger as a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal(pid: int, node: NodeSpec, sig: int) -> bool:
    """Send `sig` to the node's PID after checking it is that node's process. False if it is not."""
    if not owns(pid, node):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _gone(pid: int, node: NodeSpec) -> bool:
    """The node's process has exited and released everything (its ports too)."""
    _reap(pid)
    if owns(pid, node):
        return False
    # A multi-threaded process's main thread shows as a zombie while its other threads are still exiting,
    # and its sockets stay open until the last one is gone.
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1 if process_state(pid) == "Z" else True
    except OSError:
        return True


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on host:port (probed the way a server binds: with SO_REUSEADDR, so
    connections lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise LauncherError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    return False


def check_ports_free(nodes: Iterable[NodeSpec], roles: Iterable[str] = PORT_ROLES) -> None:
    roles = list(roles)
    for node in nodes:
        for role in roles:
            port = getattr(node, f"{role}_port")
            if port_in_use(node.host, port):
                raise LauncherError(f"port {port} ({role} port of node {node.node_id}) is already in use on "
                                    f"{node.host}; pick another --base-port")


def wait_ports_free(nodes: list[NodeSpec], roles: Iterable[str], timeout: float) -> None:
    """check_ports_free, retried for up to `timeout` (a process that just exited may still hold them)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check_ports_free(nodes, roles)
        except LauncherError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def log_tail(path: str | Path, lines: int = 3, max_chars: int = 400) -> str:
    """The end of a broker's log (its current run), as one line: the last few non-empty lines, preceded by
    the run's first CRITICAL or ERROR line when there is one (the cause, which the last lines, often
    retries, may not show)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    run = text.rpartition("\n=== ")[2] if "\n=== " in text else text  # after the launcher's last start marker
    all_lines = [" ".join(line.split()) for line in run.splitlines() if line.strip()]
    if all_lines and all_lines[0].startswith(("=== ", "20")) and "tidelog cluster: starting" in all_lines[0]:
        all_lines = all_lines[1:]
    if not all_lines:
        return "(log is empty)"
    picked = all_lines[-lines:]

    def clip(line: str, limit: int) -> str:
        return line if len(line) <= limit else line[:limit] + "..."

    joined = " | ".join(picked)
    if len(joined) > max_chars:
        joined = "..." + joined[-max_chars:]
    severe = [line for line in all_lines if " CRITICAL " in line] or [line for line in all_lines if " ERROR " in line]
    if severe and severe[0] not in picked:
        return f"first error: {clip(severe[0], max_chars // 2)} ... last: {joined}"
    return joined


# --------------------------------------------------------------------------------------------------------
# what brokers say: DescribeCluster, as plain data


@dataclass(slots=True)
class BrokerView:
    broker_id: int
    host: str
    grpc_port: int
    kafka_port: int
    raft_port: int
    rack: str
    alive: bool


@dataclass(slots=True)
class PartitionView:
    topic: str
    partition: int
    leader_id: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    high_watermark: int
    log_end_offset: int
    replica_lag: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class ClusterView:
    """One node's answer to DescribeCluster."""
    cluster_id: str
    node_id: int
    controller_id: int  # -1: unknown
    brokers: list[BrokerView]
    partitions: list[PartitionView]
    source: str = "DescribeCluster"  # or "topics" (a single node without DescribeCluster: see GrpcDescriber)


class Describer(Protocol):
    def describe_all(self, timeout: float) -> dict[int, ClusterView | str]: ...  # node id -> view or error text
    def close(self) -> None: ...


DescriberFactory = Callable[["ClusterFile"], Describer]


def view_from_proto(response) -> ClusterView:
    return ClusterView(
        cluster_id=response.cluster_id,
        node_id=response.node_id,
        controller_id=response.controller_id,
        brokers=[BrokerView(b.broker_id, b.host, b.grpc_port, b.kafka_port, b.raft_port, b.rack, b.alive)
                 for b in response.brokers],
        partitions=[PartitionView(p.topic, p.partition, p.leader_id, p.leader_epoch, list(p.replicas), list(p.isr),
                                  p.high_watermark, p.log_end_offset, dict(p.replica_lag))
                    for p in response.partitions],
    )


class GrpcDescriber:
    """Asks every node DescribeCluster in parallel over one channel per node.

    A broker built before ClusterService existed (no generated stub, or UNIMPLEMENTED) is described from
    its topics instead: itself as the only broker and controller, every partition led by it. That is exact
    for a one-node cluster and never reports a multi-node cluster healthy (each node names itself controller).
    """

    def __init__(self, cluster: ClusterFile) -> None:
        import grpc

        from proto.rpc import tidelog_v1_pb2 as pb
        from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc

        self._grpc = grpc
        self._pb = pb
        self.nodes = list(cluster.nodes)
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 500), ("grpc.enable_retries", 0),
                   ("grpc.use_local_subchannel_pool", 1)]
        self._channels = {n.node_id: grpc.insecure_channel(n.grpc_address, options=options) for n in self.nodes}
        self._has_cluster_service = hasattr(pb_grpc, "ClusterServiceStub") and hasattr(pb, "DescribeClusterRequest")
        self._cluster = {nid: pb_grpc.ClusterServiceStub(ch) for nid, ch in self._channels.items()} \
            if self._has_cluster_service else {}
        self._admin = {nid: pb_grpc.AdminServiceStub(ch) for nid, ch in self._channels.items()}

    def describe_all(self, timeout: float) -> dict[int, ClusterView | str]:
        grpc = self._grpc
        timeout = max(0.05, timeout)
        pending = {}
        for node in self.nodes:
            if self._has_cluster_service:
                pending[node.node_id] = self._cluster[node.node_id].DescribeCluster.future(
                    self._pb.DescribeClusterRequest(), timeout=timeout)
        out: dict[int, ClusterView | str] = {}
        for node in self.nodes:
            future = pending.get(node.node_id)
            try:
                if future is None:
                    out[node.node_id] = self._from_topics(node, timeout)
                    continue
                out[node.node_id] = view_from_proto(future.result())
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    try:
                        out[node.node_id] = self._from_topics(node, timeout)
                    except grpc.RpcError as exc2:
                        out[node.node_id] = _rpc_text(exc2)
                else:
                    out[node.node_id] = _rpc_text(exc)
        return out

    def _from_topics(self, node: NodeSpec, timeout: float) -> ClusterView:
        pb = self._pb
        admin = self._admin[node.node_id]
        topics = admin.ListTopics(pb.ListTopicsRequest(), timeout=timeout).topics
        partitions = []
        for topic in topics:
            try:
                described = admin.DescribeTopic(pb.DescribeTopicRequest(name=topic.name), timeout=timeout).topic
            except self._grpc.RpcError:
                continue  # deleted meanwhile
            for p in described.partitions:
                partitions.append(PartitionView(topic.name, p.partition, node.node_id, p.leader_epoch,
                                                [node.node_id], [node.node_id], p.high_watermark, p.log_end_offset))
        me = BrokerView(node.node_id, node.host, node.grpc_port, node.kafka_port, node.raft_port, "", True)
        return ClusterView("", node.node_id, node.node_id, [me], partitions, source="topics")

    def close(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                channel.close()


def _rpc_text(exc) -> str:
    code = exc.code()
    if code.name == "UNAVAILABLE":
        return "not answering (connection refused)" if "refused" in (exc.details() or "").lower() \
            else "not answering"
    if code.name == "DEADLINE_EXCEEDED":
        return "no answer in time"
    return f"{code.name}: {' '.join((exc.details() or '').split())[:200]}"


# --------------------------------------------------------------------------------------------------------
# health


@dataclass(slots=True)
class Health:
    healthy: bool
    answering: list[int]
    controller_id: int | None  # agreed by every answering node, else None
    problems: list[str]
    suspect: int | None  # the node whose log explains the first problem
    view: ClusterView | None  # the controller's answer (else any answer): the cluster-wide picture


def evaluate(expected: list[int], answers: dict[int, ClusterView | str]) -> Health:
    """The contract's health: every node answers, all agree on a controller leader, every broker is
    registered and alive, every partition has a leader (the last two judged from the controller's answer)."""
    views = {nid: a for nid, a in answers.items() if isinstance(a, ClusterView)}
    answering = sorted(views)
    problems: list[str] = []
    suspect: int | None = None
    for nid in expected:
        if nid not in views:
            problems.append(f"node {nid} {answers.get(nid, 'not asked')}")
            suspect = suspect or nid
    controllers = {v.controller_id for v in views.values()}
    controller_id: int | None = None
    if not views:
        pass
    elif controllers == {-1}:
        problems.append("no controller leader elected yet")
    elif len(controllers) > 1:
        said = ", ".join(f"node {nid}: {v.controller_id}" for nid, v in sorted(views.items()))
        problems.append(f"nodes disagree on the controller leader ({said})")
    else:
        controller_id = controllers.pop()
        if controller_id == -1 or controller_id not in expected:
            problems.append(f"controller leader {controller_id} is not a node of this cluster")
            controller_id = None
    view = views.get(controller_id) if controller_id is not None else None
    if view is None and views:
        view = views[answering[0]]
    if view is not None and controller_id is not None:
        registered = {b.broker_id: b for b in view.brokers}
        for nid in expected:
            broker = registered.get(nid)
            if broker is None:
                problems.append(f"broker {nid} is not registered with the controller")
                suspect = suspect or nid
            elif not broker.alive:
                problems.append(f"broker {nid} is not alive for the controller")
                suspect = suspect or nid
        leaderless = [f"{p.topic}/{p.partition}" for p in view.partitions if p.leader_id < 0]
        if leaderless:
            shown = ", ".join(leaderless[:5]) + (f" and {len(leaderless) - 5} more" if len(leaderless) > 5 else "")
            problems.append(f"{len(leaderless)} partition(s) without a leader: {shown}")
    if problems and suspect is None and expected:
        suspect = controller_id if controller_id is not None else expected[0]
    return Health(healthy=not problems, answering=answering, controller_id=controller_id, problems=problems,
                  suspect=suspect, view=view)


def merged_partitions(view: ClusterView | None, answers: dict[int, ClusterView | str]) -> list[PartitionView]:
    """The partitions of `view` (the controller's answer), each as its leader reports it when the leader
    answered: only the leader knows the exact high watermark and every follower's lag."""
    if view is None:
        return []
    out = []
    for p in sorted(view.partitions, key=lambda p: (p.topic, p.partition)):
        leader_view = answers.get(p.leader_id)
        if isinstance(leader_view, ClusterView) and leader_view is not view:
            p = next((q for q in leader_view.partitions if (q.topic, q.partition) == (p.topic, p.partition)), p)
        out.append(p)
    return out


def lagging_partitions(partitions: list[PartitionView], node_id: int) -> list[str]:
    """Partitions that have `node_id` as a replica but not (yet) in their ISR."""
    return [f"{p.topic}/{p.partition}" for p in partitions if node_id in p.replicas and node_id not in p.isr]


# --------------------------------------------------------------------------------------------------------
# progress


class Progress:
    """One status line on stderr: rewritten in place on a terminal; on a pipe or a file, a line each time
    the state changes (at most one a second) and at least every 5 s, so logs show a wait is alive."""

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.started = clock()
        try:
            self.tty = stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._last_text: str | None = None
        self._last_time = float("-inf")
        self._width = 0

    def update(self, text: str) -> None:
        now = self.clock()
        elapsed = f"{now - self.started:.0f}s"
        if self.tty:
            line = f"{text} [{elapsed}]"
            self._write("\r" + line + " " * max(0, self._width - len(line)))
            self._width = len(line)
            return
        changed = text != self._last_text
        if (changed and now - self._last_time >= 1.0) or now - self._last_time >= 5.0:
            self._write(f"{text} [{elapsed}]\n")
            self._last_text = text
            self._last_time = now

    def done(self) -> None:
        if self.tty and self._width:
            self._write("\n")
            self._width = 0

    def _write(self, text: str) -> None:
        with contextlib.suppress(Exception):
            self.stream.write(text)
            self.stream.flush()


def _status_text(expected: int, health: Health, what: str = "brokers") -> str:
    if health.controller_id is not None:
        controller = f"node {health.controller_id}"
    elif health.answering:
        controller = "electing"
    else:
        controller = "unknown"
    what = what if expected != 1 else what.rstrip("s")
    return f"waiting for {expected} {what}... {len(health.answering)}/{expected} ready, controller: {controller}"


# --------------------------------------------------------------------------------------------------------
# the launcher


def default_serve_command() -> list[str]:
    return [sys.executable, "-m", "tidelog.cli", "serve"]


def serve_flags() -> set[str]:
    """The options this tidelog's `serve` accepts (read from the real parser, so the launcher never passes a
    flag the broker it starts would reject)."""
    from tidelog.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps subparsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction) and "serve" in action.choices:
            return {opt for a in action.choices["serve"]._actions for opt in a.option_strings}
    return set()


REJOIN_SETTLE_S = 1.0


class Launcher:
    """Start, inspect and stop the brokers of one data dir. The CLI's `tidelog cluster ...` commands are thin
    wrappers; tests inject a fake `serve_command` and `describer`."""

    def __init__(self, data_dir: Path | str = DEFAULT_DATA_DIR, *, host: str = DEFAULT_HOST,
                 serve_command: list[str] | None = None, supported_flags: set[str] | None = None,
                 describer: DescriberFactory | None = None, err: TextIO | None = None,
                 env: dict[str, str] | None = None, poll_interval: float = 0.25) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.host = host
        self.serve_command = list(serve_command) if serve_command else default_serve_command()
        self._supported_flags = supported_flags
        self.describer_factory: DescriberFactory = describer or GrpcDescriber
        self.err = err if err is not None else sys.stderr
        self.env = env
        self.poll_interval = poll_interval

    # ---- planning

    @property
    def supported_flags(self) -> set[str]:
        if self._supported_flags is None:
            self._supported_flags = serve_flags()
        return self._supported_flags

    def plan(self, nodes: int, base_port: int, *, replication_factor: int | None = None,
             controller_voters: list[int] | None = None, log_level: str | None = None,
             extra_args: list[str] | None = None) -> ClusterFile:
        """The cluster file for a new cluster: ports, paths and each node's exact command line."""
        check_layout(nodes, base_port)
        flags = self.supported_flags
        clustered = all(f in flags for f in ("--peers", "--raft-port"))
        if nodes > 1 and not clustered:
            raise LauncherError("this tidelog's 'serve' has no --peers/--raft-port (the clustered broker is not "
                                "available in this build), so only --nodes 1 can run")
        if controller_voters:
            unknown = [v for v in controller_voters if not 1 <= v <= nodes]
            if unknown:
                raise LauncherError(f"--controller-voters names node(s) {unknown} outside 1..{nodes}")
        specs = []
        layouts = {i: node_ports(base_port, i) for i in range(1, nodes + 1)}
        peers = ",".join(f"{i}={self.host}:{layouts[i]['raft_port']}" for i in layouts)
        for i, ports in layouts.items():
            node_dir = self.data_dir / f"node-{i}"
            args = [*self.serve_command, "--node-id", str(i), "--data-dir", str(node_dir), "--host", self.host,
                    "--grpc-port", str(ports["grpc_port"]), "--kafka-port", str(ports["kafka_port"]),
                    "--metrics-port", str(ports["metrics_port"])]
            if clustered:
                args += ["--raft-port", str(ports["raft_port"]), "--peers", peers]
                if controller_voters:
                    args += ["--controller-voters", ",".join(map(str, controller_voters))]
                if "--default-replication-factor" in flags:
                    args += ["--default-replication-factor", str(replication_factor or min(3, nodes))]
            elif replication_factor not in (None, 1):
                raise LauncherError("this tidelog's 'serve' has no --default-replication-factor (the clustered "
                                    "broker is not available in this build)")
            if log_level:
                args += ["--log-level", log_level]
            args += list(extra_args or [])
            specs.append(NodeSpec(node_id=i, host=self.host, data_dir=str(node_dir),
                                  log_file=str(node_dir / "broker.log"), args=args, **ports))
        return ClusterFile(base_port=base_port, nodes=specs)

    # ---- up

    def up(self, *, nodes: int | None = None, base_port: int | None = None, timeout: float = 60.0,
           **plan_options) -> tuple[ClusterFile, Health]:
        """Start every broker, wait until the cluster is healthy, write cluster.json, leave them running.

        Refuses if cluster.json names live brokers or a port is taken. On failure (a broker exits, or no
        health within `timeout`), stops what it started and raises LauncherError with the failing broker's
        log tail. An existing cluster.json with no live brokers is restarted with its own node count and
        base port (its data is kept)."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LauncherError(f"cannot create {self.data_dir}: {exc.strerror or exc}") from None
        with cluster_lock(self.data_dir):
            existing = load_cluster(self.data_dir)
            if existing is not None:
                live = [n for n in existing.nodes if node_process(n) in ("running", "paused")]
                if live:
                    shown = ", ".join(f"node {n.node_id} pid {n.pid}" for n in live)
                    raise LauncherError(f"a cluster is already running in {self.data_dir} ({shown}); stop it with "
                                        f"'tidelog cluster down --data-dir {self.data_dir}' or use another --data-dir")
                if nodes is not None and nodes != len(existing.nodes) or \
                        base_port is not None and base_port != existing.base_port:
                    raise LauncherError(
                        f"{cluster_path(self.data_dir)} describes a {len(existing.nodes)}-node cluster on base port "
                        f"{existing.base_port}; run 'tidelog cluster up' without --nodes/--base-port to restart "
                        f"it, or use another --data-dir")
                cluster = existing
                if plan_options:
                    fresh = self.plan(len(existing.nodes), existing.base_port, **plan_options)
                    for old, new in zip(cluster.nodes, fresh.nodes):
                        old.args = new.args
            else:
                cluster = self.plan(nodes or DEFAULT_NODES,
                                    DEFAULT_BASE_PORT if base_port is None else base_port, **plan_options)
            roles = [r for r in PORT_ROLES if r != "raft" or "--raft-port" in cluster.nodes[0].args]
            check_ports_free(cluster.nodes, roles)
            procs: dict[int, subprocess.Popen] = {}
            try:
                for node in cluster.nodes:
                    procs[node.node_id] = self._spawn(node)
                    node.pid = procs[node.node_id].pid
                save_cluster(self.data_dir, cluster)  # now, so `down` can stop them even if we die while waiting
                health = self._wait_healthy(cluster, timeout, procs, label="brokers")
            except BaseException:
                self._abandon(cluster, [n for n in cluster.nodes if n.node_id in procs], procs)
                if existing is None:  # a first start that failed leaves no cluster file behind to restart
                    with contextlib.suppress(OSError):
                        cluster_path(self.data_dir).unlink()
                raise
        return cluster, health

    def _abandon(self, cluster: ClusterFile, started: list[NodeSpec], procs: dict[int, subprocess.Popen]) -> None:
        """Stop what this command started (after a failure or an interrupt) and record it as stopped."""
        with contextlib.suppress(LauncherError):
            self._stop_nodes(cluster, started, timeout=10.0, quiet=True)
        for proc in procs.values():  # our own unreaped children: their PIDs cannot have been recycled
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        with contextlib.suppress(LauncherError):
            current = load_cluster(self.data_dir) or cluster  # the caller holds the lock; reread all the same
            for node in started:
                node.pid = None
                with contextlib.suppress(LauncherError):
                    current.node(node.node_id).pid = None
            save_cluster(self.data_dir, current)

    def _spawn(self, node: NodeSpec) -> subprocess.Popen:
        node_dir = Path(node.data_dir)
        try:
            node_dir.mkdir(parents=True, exist_ok=True)
            log = open(node.log_file, "ab", buffering=0)
        except OSError as exc:
            raise LauncherError(f"cannot prepare {node_dir}: {exc.strerror or exc}") from None
        with log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"=== {stamp} tidelog cluster: starting node {node.node_id}: {' '.join(node.args)}\n".encode())
            try:
                return subprocess.Popen(node.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=str(self.data_dir), env=self._child_env(), start_new_session=True,
                                        close_fds=True)
            except OSError as exc:
                raise LauncherError(f"cannot start node {node.node_id} ({node.args[0]}): {exc.strerror or exc}") \
                    from None

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        # The brokers run the same tidelog as the launcher, whatever the working directory.
        package_root = str(Path(__file__).resolve().parent.parent)
        paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
        if package_root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
        env["PYTHONUNBUFFERED"] = "1"  # the log tail shown on failure is current
        return env

    def _wait_healthy(self, cluster: ClusterFile, timeout: float, procs: dict[int, subprocess.Popen], *,
                      label: str, rejoin: int | None = None) -> Health:
        """Poll DescribeCluster until healthy (and, with `rejoin`, that node in the ISR of its partitions).

        Judged over the nodes being started (`procs`) and those running now: a node someone stopped on
        purpose does not keep `start-node` of another one from succeeding."""
        watched = [n for n in cluster.nodes if n.node_id in procs or node_process(n) == "running"]
        expected = [n.node_id for n in watched]
        deadline = time.monotonic() + timeout
        progress = Progress(self.err)
        describer = self.describer_factory(ClusterFile(cluster.base_port, watched))
        # A rejoining node must stay healthy and in the ISRs for a second: leaderships move right after a
        # broker comes back (preferred leaders), and a new leader re-learns its followers.
        settled_since: float | None = None
        try:
            while True:
                for nid, proc in procs.items():
                    code = proc.poll()
                    if code is not None:
                        node = cluster.node(nid)
                        raise LauncherError(f"node {nid} exited with status {code} while starting: "
                                            f"{log_tail(node.log_file)} (log: {node.log_file})")
                for node in watched:
                    if node.node_id not in procs and node_process(node) != "running":
                        raise LauncherError(f"node {node.node_id} stopped while waiting ({node_process(node)}); "
                                            f"start it with 'tidelog cluster start-node {node.node_id}'")
                remaining = deadline - time.monotonic()
                answers = describer.describe_all(timeout=max(0.2, min(2.0, remaining)))
                health = evaluate(expected, answers)
                text = _status_text(len(expected), health, label)
                waiting_isr: list[str] = []
                if health.healthy and rejoin is not None and health.view is not None:
                    waiting_isr = lagging_partitions(merged_partitions(health.view, answers), rejoin)
                    if waiting_isr:
                        text = f"node {rejoin} catching up: not yet in the ISR of {len(waiting_isr)} partition(s)"
                if health.healthy and not waiting_isr:
                    if rejoin is None:
                        progress.done()
                        return health
                    now = time.monotonic()
                    settled_since = settled_since if settled_since is not None else now
                    if now - settled_since >= REJOIN_SETTLE_S:
                        progress.done()
                        return health
                    text = f"node {rejoin} back in every ISR; checking it stays"
                else:
                    settled_since = None
                progress.update(text)
                if time.monotonic() >= deadline:
                    progress.done()
                    if not health.problems:
                        raise CatchUpTimeout(f"node {rejoin} answers and the cluster is healthy, but after "
                                             f"{timeout:g}s it is still not in the ISR of {len(waiting_isr)} "
                                             f"partition(s) ({', '.join(waiting_isr[:5])}); it was left running")
                    reason = "; ".join(health.problems[:3])
                    suspect = cluster.node(health.suspect) if health.suspect is not None else None
                    tail = f"; node {suspect.node_id} log: {log_tail(suspect.log_file)}" if suspect else ""
                    raise LauncherError(f"cluster not healthy within {timeout:g}s: {reason}{tail}")
                time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
        finally:
            progress.done()
            describer.close()

    # ---- stop

    def _stop_nodes(self, cluster: ClusterFile, nodes: list[NodeSpec], *, timeout: float, kill: bool = False,
                    quiet: bool = False) -> list[str]:
        """SIGTERM (or SIGKILL) each node's verified PID, wait up to `timeout`, SIGKILL stragglers. Returns
        notes about PIDs it refused to signal."""
        notes = []
        signalled: list[NodeSpec] = []
        for node in nodes:
            pid = node.pid
            if pid is None:
                continue
            if not owns(pid, node):
                _reap(pid)
                if process_state(pid) not in (None, "Z", "X"):
                    notes.append(f"node {node.node_id}: pid {pid} is no longer its broker; not signalled")
                continue
            _signal(pid, node, signal.SIGKILL if kill else signal.SIGTERM)
            _signal(pid, node, signal.SIGCONT)  # a paused broker must run to handle SIGTERM
            signalled.append(node)
        progress = None if quiet else Progress(self.err)
        deadline = time.monotonic() + timeout
        try:
            while signalled:
                alive = [n for n in signalled if not _gone(n.pid, n)]
                if not alive:
                    break
                if time.monotonic() >= deadline:
                    for node in alive:
                        _signal(node.pid, node, signal.SIGKILL)
                        notes.append(f"node {node.node_id} (pid {node.pid}) did not stop within {timeout:g}s: killed")
                    kill_deadline = time.monotonic() + 10
                    while any(not _gone(n.pid, n) for n in alive) and time.monotonic() < kill_deadline:
                        time.sleep(0.05)
                    break
                if progress is not None:
                    progress.update(f"stopping {len(signalled)} broker(s)... "
                                    f"{len(signalled) - len(alive)}/{len(signalled)} stopped")
                time.sleep(0.05)
        finally:
            if progress is not None:
                progress.done()
        still = [n for n in signalled if not _gone(n.pid, n)]
        if still:
            raise LauncherError("could not stop " + ", ".join(f"node {n.node_id} (pid {n.pid})" for n in still))
        for node in nodes:
            if node.pid is not None and not owns(node.pid, node):
                node.pid = None
        return notes

    def down(self, *, timeout: float = 30.0) -> tuple[ClusterFile, list[str]]:
        with cluster_lock(self.data_dir):
            cluster = require_cluster(self.data_dir)
            notes = self._stop_nodes(cluster, cluster.nodes, timeout=timeout)
            for node in cluster.nodes:
                node.pid = None
            save_cluster(self.data_dir, cluster)
        return cluster, notes

    # ---- single nodes

    def kill_node(self, node_id: int) -> NodeSpec:
        with cluster_lock(self.data_dir):
            cluster = require_cluster(self.data_dir)
            node = cluster.node(node_id)
            if node_process(node) not in ("running", "paused"):
                raise LauncherError(f"node {node_id} is not running ({node_process(node)})")
            pid = node.pid
            self._stop_nodes(cluster, [node], timeout=10.0, kill=True, quiet=True)
            node.pid = None
            save_cluster(self.data_dir, cluster)
            node.pid = pid  # for the caller's message
        return node

    def stop_node(self, node_id: int, *, timeout: float = 30.0) -> NodeSpec:
        with cluster_lock(self.data_dir):
            cluster = require_cluster(self.data_dir)
            node = cluster.node(node_id)
            if node_process(node) not in ("running", "paused"):
                raise LauncherError(f"node {node_id} is not running ({node_process(node)})")
            self._stop_nodes(cluster, [node], timeout=timeout)
            node.pid = None
            save_cluster(self.data_dir, cluster)
        return node

    def start_node(self, node_id: int, *, timeout: float = 60.0, wait_isr: bool = True) -> tuple[NodeSpec, Health]:
        """Start a stopped node with its recorded command line; wait until it answers, the cluster is healthy
        and (with wait_isr) the node is back in the ISR of every partition it replicates."""
        with cluster_lock(self.data_dir):
            cluster = require_cluster(self.data_dir)
            node = cluster.node(node_id)
            state = node_process(node)
            if state in ("running", "paused"):
                raise LauncherError(f"node {node_id} is already running (pid {node.pid})")
            roles = [r for r in PORT_ROLES if r != "raft" or "--raft-port" in node.args]
            wait_ports_free([node], roles, timeout=10.0)
            proc = self._spawn(node)
            node.pid = proc.pid
            save_cluster(self.data_dir, cluster)
        try:
            health = self._wait_healthy(cluster, timeout, {node_id: proc}, label="brokers",
                                        rejoin=node_id if wait_isr else None)
        except CatchUpTimeout:
            raise  # healthy but still catching up: leave it running
        except BaseException:
            with cluster_lock(self.data_dir):
                self._abandon(cluster, [node], {node_id: proc})
            raise
        return node, health

    def restart_node(self, node_id: int, *, kill: bool = False, timeout: float = 60.0,
                     wait_isr: bool = True) -> tuple[NodeSpec, Health]:
        cluster = require_cluster(self.data_dir)
        node = cluster.node(node_id)
        if node_process(node) in ("running", "paused"):
            if kill:
                self.kill_node(node_id)
            else:
                self.stop_node(node_id, timeout=min(30.0, timeout))
        return self.start_node(node_id, timeout=timeout, wait_isr=wait_isr)

    def pause_node(self, node_id: int, *, resume: bool = False) -> NodeSpec:
        cluster = require_cluster(self.data_dir)
        node = cluster.node(node_id)
        state = node_process(node)
        if state not in ("running", "paused"):
            raise LauncherError(f"node {node_id} is not running ({state})")
        if not _signal(node.pid, node, signal.SIGCONT if resume else signal.SIGSTOP):
            raise LauncherError(f"node {node_id} (pid {node.pid}) is not its broker any more")
        want = "running" if resume else "paused"
        deadline = time.monotonic() + 5.0  # signals are delivered asynchronously
        while node_process(node) != want:
            if time.monotonic() > deadline:
                raise LauncherError(f"node {node_id} (pid {node.pid}) is {node_process(node)}, not {want}, 5s after "
                                    f"the signal")
            time.sleep(0.01)
        return node

    # ---- status

    def status(self, *, timeout: float = 3.0) -> dict:
        cluster = require_cluster(self.data_dir)
        running = [n for n in cluster.nodes if node_process(n) == "running"]
        answers: dict[int, ClusterView | str] = {}
        if running:
            describer = self.describer_factory(ClusterFile(cluster.base_port, running))
            try:
                answers = describer.describe_all(timeout=timeout)
            finally:
                describer.close()
        for node in cluster.nodes:
            answers.setdefault(node.node_id, node_process(node) if node.pid is not None else "stopped")
        health = evaluate([n.node_id for n in cluster.nodes], answers)
        view = health.view
        registered = {b.broker_id: b for b in view.brokers} if view is not None else {}
        brokers = []
        for node in cluster.nodes:
            answer = answers.get(node.node_id)
            broker = registered.get(node.node_id)
            brokers.append({
                "node_id": node.node_id, "pid": node.pid, "process": node_process(node),
                "host": node.host, **node.ports(),
                "answers": isinstance(answer, ClusterView),
                "error": None if isinstance(answer, ClusterView) else answer,
                "registered": broker is not None, "alive": broker.alive if broker is not None else False,
                "rack": broker.rack if broker is not None else "",
                "log_file": node.log_file,
            })
        partitions = [
            {"topic": p.topic, "partition": p.partition, "leader_id": p.leader_id, "leader_epoch": p.leader_epoch,
             "replicas": p.replicas, "isr": p.isr, "high_watermark": p.high_watermark,
             "log_end_offset": p.log_end_offset, "replica_lag": {str(k): v for k, v in sorted(p.replica_lag.items())}}
            for p in merged_partitions(view, answers)]
        return {
            "data_dir": str(self.data_dir),
            "cluster_id": view.cluster_id if view is not None else None,
            "controller_id": health.controller_id,
            "answered_by": view.node_id if view is not None else None,
            "source": view.source if view is not None else None,
            "healthy": health.healthy,
            "problems": health.problems,
            "grpc_endpoints": cluster.grpc_endpoints,
            "kafka_bootstrap": cluster.kafka_bootstrap,
            "brokers": brokers,
            "partitions": partitions,
        }


# --------------------------------------------------------------------------------------------------------
# output


def format_up(cluster: ClusterFile, health: Health | None, elapsed: float, data_dir: Path) -> str:
    controller = f"controller: node {health.controller_id}" if health and health.controller_id is not None else ""
    head = f"tidelog cluster: {len(cluster.nodes)} broker(s) healthy in {elapsed:.1f}s ({controller}), data in "
    lines = [head + str(data_dir)]
    for n in cluster.nodes:
        lines.append(f"  node {n.node_id}: pid {n.pid}  grpc {n.grpc_address}  kafka {n.kafka_address}  "
                     f"metrics http://{n.host}:{n.metrics_port}/metrics  raft {n.raft_port}  log {n.log_file}")
    lines.append(f"gRPC endpoints:  {cluster.grpc_endpoints}")
    lines.append(f"Kafka bootstrap: {cluster.kafka_bootstrap}")
    lines.append(f"status: tidelog cluster status --data-dir {data_dir}   stop: tidelog cluster down --data-dir "
                 f"{data_dir}")
    return "\n".join(lines)


def format_status(status: dict) -> str:
    lines = []
    controller = status["controller_id"]
    head = f"cluster {status['cluster_id'] or '?'}  data {status['data_dir']}  controller: " + \
        (f"node {controller}" if controller is not None else "none")
    lines.append(head)
    rows = [("NODE", "PID", "PROCESS", "ANSWERS", "ALIVE", "GRPC", "KAFKA", "METRICS", "RAFT")]
    for b in status["brokers"]:
        rows.append((str(b["node_id"]), str(b["pid"] or "-"), b["process"], "yes" if b["answers"] else "no",
                     "yes" if b["alive"] else ("no" if b["registered"] else "-"), str(b["grpc_port"]),
                     str(b["kafka_port"]), str(b["metrics_port"]), str(b["raft_port"])))
    lines += _table(rows)
    if status["partitions"]:
        lines.append("")
        rows = [("PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "HW", "LEO", "LAG")]
        for p in status["partitions"]:
            lag = " ".join(f"{k}:{v}" for k, v in p["replica_lag"].items()) or "-"
            rows.append((f"{p['topic']}/{p['partition']}", str(p["leader_id"]) if p["leader_id"] >= 0 else "none",
                         str(p["leader_epoch"]), ",".join(map(str, p["replicas"])) or "-",
                         ",".join(map(str, p["isr"])) or "-", str(p["high_watermark"]), str(p["log_end_offset"]),
                         lag))
        lines += _table(rows)
    elif status["cluster_id"] is not None:
        lines.append("(no partitions)")
    lines.append("")
    lines.append("healthy" if status["healthy"] else "NOT healthy: " + "; ".join(status["problems"]))
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


# --------------------------------------------------------------------------------------------------------
# command line (registered by tidelog/cli.py)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated node ids, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one node id")
    return values


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def add_cluster_commands(commands) -> None:
    """Add `tidelog cluster ...` to the top-level subparsers (its parser class gives the one-line errors)."""
    from tidelog.cli import _port, _positive

    cluster = commands.add_parser(
        "cluster", help="run a local multi-broker cluster: up, status, down, restart-node, ...",
        description="Run a local cluster: each broker a `tidelog serve` process of its own, ports from a base "
                    "port (node i: gRPC base+10i, Kafka +1, metrics +2, raft +3), data and logs in "
                    "DIR/node-i, the running cluster recorded in DIR/cluster.json.")
    parser_class = type(cluster)
    sub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", parser_class=parser_class)
    sub.required = True

    data_dir = parser_class(add_help=False)
    data_dir.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                          help="the cluster's directory (default ./data)")

    up = sub.add_parser("up", parents=[data_dir], help="start a local cluster and wait until it is healthy",
                        description="Start N brokers (each its own process, detached: they keep running after "
                                    "this command returns), wait until the cluster is healthy, print the gRPC "
                                    "endpoints and the Kafka bootstrap list, write DIR/cluster.json. A DIR whose "
                                    "cluster is stopped is restarted with its data.")
    up.add_argument("--nodes", type=_positive, metavar="N",
                    help=f"number of brokers (default {DEFAULT_NODES}, or the stopped cluster's count)")
    up.add_argument("--base-port", type=_port, metavar="PORT",
                    help=f"port layout base (default {DEFAULT_BASE_PORT}: node 1 is gRPC 7110, Kafka 7111, "
                         "metrics 7112, raft 7113)")
    up.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                    help="give up (and stop what was started) if not healthy within S seconds (default 60)")
    up.add_argument("--foreground", action="store_true",
                    help="stay attached, show a status line, stop the cluster on Ctrl-C / SIGTERM")
    up.add_argument("--replication-factor", type=_positive, metavar="N",
                    help="default replication factor of new topics (default min(3, nodes))")
    up.add_argument("--controller-voters", type=_int_list, metavar="IDS",
                    help="controller Raft voters, e.g. 1,2,3 (default: the broker's own default)")
    up.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="brokers' log level")
    up.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every `tidelog serve` (repeatable), e.g. "
                         "--serve-arg=--default-partitions=3")
    up.set_defaults(func=cmd_cluster_up)

    status = sub.add_parser("status", parents=[data_dir], help="brokers, controller, partitions (leader, ISR, lag)",
                            description="Ask every broker of DIR/cluster.json (DescribeCluster) and show the "
                                        "brokers (id, pid, alive, ports), the controller leader and each "
                                        "partition's leader, replicas, ISR and lag. Exits 1 if not healthy.")
    status.add_argument("--json", action="store_true", help="JSON output")
    status.add_argument("--timeout", type=_seconds, default=3.0, metavar="S", help="per-broker answer timeout")
    status.set_defaults(func=cmd_cluster_status)

    down = sub.add_parser("down", parents=[data_dir], help="stop every broker (SIGTERM, then SIGKILL)",
                          description="Stop the cluster: SIGTERM to each broker's PID from cluster.json (only if "
                                      "that PID still runs that broker's command line), wait, SIGKILL stragglers.")
    down.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                      help="wait S seconds for a graceful stop before SIGKILL (default 30)")
    down.set_defaults(func=cmd_cluster_down)

    def node_command(name: str, help_text: str, description: str, func, *, timeout: float | None = None):
        p = sub.add_parser(name, parents=[data_dir], help=help_text, description=description)
        p.add_argument("node", type=_positive, metavar="N", help="node id (1-based)")
        if timeout is not None:
            p.add_argument("--timeout", type=_seconds, default=timeout, metavar="S",
                           help=f"bound on the wait (default {timeout:g})")
        p.set_defaults(func=func)
        return p

    restart = node_command("restart-node", "stop a broker and start it again; wait until it rejoined",
                           "Stop node N gracefully (or kill -9 with --kill), start it again with the same "
                           "command line, and wait until it answers, the cluster is healthy and the node is "
                           "back in the ISR of its partitions.", cmd_cluster_restart_node, timeout=60.0)
    restart.add_argument("--kill", action="store_true", help="SIGKILL instead of a graceful stop")
    restart.add_argument("--no-wait-isr", action="store_true", help="do not wait for the node to rejoin the ISRs")
    start = node_command("start-node", "start a stopped broker; wait until it rejoined",
                         "Start node N with its recorded command line and wait until it answers, the cluster is "
                         "healthy and the node is back in the ISR of its partitions.", cmd_cluster_start_node,
                         timeout=60.0)
    start.add_argument("--no-wait-isr", action="store_true", help="do not wait for the node to rejoin the ISRs")
    node_command("kill-node", "kill -9 one broker (a crash)", "SIGKILL node N's process (by its verified PID).",
                 cmd_cluster_kill_node)
    node_command("stop-node", "stop one broker gracefully", "SIGTERM node N, SIGKILL it if it does not stop "
                 "within the timeout.", cmd_cluster_stop_node, timeout=30.0)
    node_command("pause-node", "freeze one broker (SIGSTOP)", "SIGSTOP node N: it stays alive but silent, like "
                 "a hung process or a partitioned node. Undo with resume-node.", cmd_cluster_pause_node)
    node_command("resume-node", "unfreeze a paused broker (SIGCONT)", "SIGCONT node N.", cmd_cluster_resume_node)


def _install_sigterm_as_interrupt() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, handler)


def cmd_cluster_up(args) -> int:
    launcher = Launcher(args.data_dir)
    plan = {}
    if args.replication_factor is not None:
        plan["replication_factor"] = args.replication_factor
    if args.controller_voters:
        plan["controller_voters"] = args.controller_voters
    if args.log_level:
        plan["log_level"] = args.log_level
    if args.serve_arg:
        plan["extra_args"] = args.serve_arg
    _install_sigterm_as_interrupt()
    started = time.monotonic()
    cluster, health = launcher.up(nodes=args.nodes, base_port=args.base_port, timeout=args.timeout, **plan)
    print(format_up(cluster, health, time.monotonic() - started, launcher.data_dir), flush=True)
    if not args.foreground:
        return 0
    return _foreground(launcher, cluster)


def _foreground(launcher: Launcher, cluster: ClusterFile) -> int:
    """Stream a short status line until Ctrl-C / SIGTERM, then stop the cluster."""
    progress = Progress(launcher.err)
    print("running in the foreground; Ctrl-C stops the cluster", file=launcher.err, flush=True)
    try:
        while True:
            try:
                status = launcher.status(timeout=2.0)
                up = sum(1 for b in status["brokers"] if b["answers"])
                leaders = sum(1 for p in status["partitions"] if p["leader_id"] >= 0)
                line = (f"{up}/{len(status['brokers'])} brokers up, controller: "
                        f"{status['controller_id'] if status['controller_id'] is not None else 'none'}, "
                        f"{leaders}/{len(status['partitions'])} partitions led, "
                        f"{'healthy' if status['healthy'] else 'NOT healthy'}")
            except LauncherError as exc:
                line = f"status unavailable: {exc}"
            progress.update(line)
            time.sleep(2.0)
    except KeyboardInterrupt:
        progress.done()
        print("stopping the cluster...", file=launcher.err, flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave brokers half-stopped
        _, notes = launcher.down(timeout=30.0)
        for note in notes:
            print(note, file=launcher.err)
        print(f"stopped {len(cluster.nodes)} broker(s)", flush=True)
        return 0


def cmd_cluster_status(args) -> int:
    status = Launcher(args.data_dir).status(timeout=args.timeout)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(format_status(status))
    sys.stdout.flush()
    if not status["healthy"]:
        raise LauncherError("cluster not healthy: " + "; ".join(status["problems"][:3]))
    return 0


def cmd_cluster_down(args) -> int:
    cluster, notes = Launcher(args.data_dir).down(timeout=args.timeout)
    for note in notes:
        print(note, file=sys.stderr)
    print(f"cluster in {Path(args.data_dir)} stopped ({len(cluster.nodes)} node(s))")
    return 0


def cmd_cluster_kill_node(args) -> int:
    node = Launcher(args.data_dir).kill_node(args.node)
    print(f"killed node {node.node_id} (pid {node.pid})")
    return 0


def cmd_cluster_stop_node(args) -> int:
    node = Launcher(args.data_dir).stop_node(args.node, timeout=args.timeout)
    print(f"stopped node {node.node_id}")
    return 0


def _started(node: NodeSpec, health: Health, started: float, verb: str) -> None:
    controller = f", controller: node {health.controller_id}" if health.controller_id is not None else ""
    print(f"{verb} node {node.node_id} (pid {node.pid}, grpc {node.grpc_address}, kafka {node.kafka_address}); "
          f"rejoined in {time.monotonic() - started:.1f}s{controller}")


def cmd_cluster_start_node(args) -> int:
    started = time.monotonic()
    node, health = Launcher(args.data_dir).start_node(args.node, timeout=args.timeout, wait_isr=not args.no_wait_isr)
    _started(node, health, started, "started")
    return 0


def cmd_cluster_restart_node(args) -> int:
    started = time.monotonic()
    node, health = Launcher(args.data_dir).restart_node(args.node, kill=args.kill, timeout=args.timeout,
                                                        wait_isr=not args.no_wait_isr)
    _started(node, health, started, "restarted")
    return 0


def cmd_cluster_pause_node(args) -> int:
    node = Launcher(args.data_dir).pause_node(args.node)
    print(f"paused node {node.node_id} (pid {node.pid}); resume with 'tidelog cluster resume-node {node.node_id}'")
    return 0


def cmd_cluster_resume_node(args) -> int:
    node = Launcher(args.data_dir).pause_node(args.node, resume=True)
    print(f"resumed node {node.node_id} (pid {node.pid})")
    return 0
