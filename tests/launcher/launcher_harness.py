"""Helpers of the launcher tests: free port ranges, a fake describer, cleanup by verified PID."""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tidelog import launcher as L

HERE = Path(__file__).resolve().parent
FAKE_SERVE = [sys.executable, str(HERE / "fake_serve.py"), "serve"]
CONTRACT_FLAGS = {"--node-id", "--data-dir", "--host", "--grpc-port", "--kafka-port", "--metrics-port",
                  "--raft-port", "--peers", "--controller-voters", "--rack", "--default-replication-factor",
                  "--log-level"}


def free_base_port(nodes: int, rng: random.Random | None = None) -> int:
    """A base port whose whole layout (base+10 .. base+10*nodes+3) is free on 127.0.0.1 right now."""
    rng = rng or random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(20000, 60000 - 10 * nodes, 10)
        ports = [p for i in range(1, nodes + 1) for p in L.node_ports(base, i).values()]
        if not any(L.port_in_use("127.0.0.1", p) for p in ports):
            return base
    raise RuntimeError("no free port range found")


class FakeDescriber:
    """Stands in for DescribeCluster: a node answers if its gRPC port accepts a connection; everyone names the
    lowest answering node as controller (or `controller`, if set); `partitions` are reported as given."""

    controller: int | None = None
    partitions: list = []
    silent: set = set()  # node ids that never answer (as if wedged)

    def __init__(self, cluster: L.ClusterFile) -> None:
        self.nodes = list(cluster.nodes)

    def describe_all(self, timeout: float) -> dict:
        up = []
        for node in self.nodes:
            if node.node_id in self.silent:
                continue
            try:
                socket.create_connection((node.host, node.grpc_port), timeout=min(timeout, 0.5)).close()
                up.append(node.node_id)
            except OSError:
                pass
        controller = self.controller if self.controller is not None else (min(up) if up else -1)
        brokers = [L.BrokerView(n.node_id, n.host, n.grpc_port, n.kafka_port, n.raft_port, "", n.node_id in up)
                   for n in self.nodes if n.node_id in up]
        out = {}
        for node in self.nodes:
            if node.node_id in up:
                out[node.node_id] = L.ClusterView("fake-cluster", node.node_id, controller, brokers,
                                                  list(self.partitions))
            else:
                out[node.node_id] = "not answering"
        return out

    def close(self) -> None:
        pass


def kill_cluster_processes(data_dir: Path) -> None:
    """Teardown: SIGKILL every process cluster.json names, each only after checking it is that node's."""
    try:
        cluster = L.load_cluster(data_dir)
    except L.LauncherError:
        return
    if cluster is None:
        return
    for node in cluster.nodes:
        if node.pid and L.owns(node.pid, node):
            os.kill(node.pid, signal.SIGKILL)
    for node in cluster.nodes:
        if node.pid:
            deadline = time.monotonic() + 10
            while L.owns(node.pid, node) and time.monotonic() < deadline:
                L._reap(node.pid)
                time.sleep(0.02)


@pytest.fixture
def cluster_dir(tmp_path):
    d = tmp_path / "cluster"
    yield d
    kill_cluster_processes(d)


class RecordingLauncher(L.Launcher):
    """A Launcher that remembers every process it spawned, so teardown can end them even if a test failed
    before cluster.json recorded them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spawned: list = []

    def _spawn(self, node):
        proc = super()._spawn(node)
        self.spawned.append(proc)
        return proc


@pytest.fixture
def make_launcher(cluster_dir, monkeypatch):
    """Launchers over fake brokers (fake_serve.py) and the fake describer; teardown ends what they started."""
    made: list[RecordingLauncher] = []

    def make(mode: str = "ok", describer=FakeDescriber, **kwargs) -> RecordingLauncher:
        env = dict(os.environ, FAKE_SERVE_MODE=mode)
        launcher = RecordingLauncher(cluster_dir, serve_command=FAKE_SERVE, supported_flags=CONTRACT_FLAGS,
                                     describer=describer, env=env, poll_interval=0.05, **kwargs)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        for proc in launcher.spawned:
            if proc.poll() is None:
                proc.kill()  # our own child, by its PID
            try:
                proc.wait(10)
            except Exception:
                pass
