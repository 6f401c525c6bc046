"""The launcher's pieces without processes: port layout, command lines, cluster.json, health, identity."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
from launcher_harness import CONTRACT_FLAGS, FAKE_SERVE

from tidelog import launcher as L


def test_port_layout_matches_the_contract():
    assert L.node_ports(7100, 1) == {"grpc_port": 7110, "kafka_port": 7111, "metrics_port": 7112, "raft_port": 7113}
    assert L.node_ports(7100, 3) == {"grpc_port": 7130, "kafka_port": 7131, "metrics_port": 7132, "raft_port": 7133}
    assert L.node_ports(20000, 12)["raft_port"] == 20123
    every = [p for i in range(1, 10) for p in L.node_ports(7100, i).values()]
    assert len(every) == len(set(every))  # no two nodes share a port
    with pytest.raises(ValueError):
        L.node_ports(7100, 0)


@pytest.mark.parametrize("nodes, base, message", [
    (0, 7100, "--nodes must be between 1"),
    (100, 7100, "--nodes must be between 1"),
    (3, 65510, "too high for 3 nodes"),
    (3, 0, "--base-port must be positive"),
])
def test_layout_refusals(nodes, base, message):
    with pytest.raises(L.LauncherError, match=message):
        L.check_layout(nodes, base)
    L.check_layout(3, 65535 - 33)  # the highest base that fits 3 nodes


def test_plan_passes_the_contract_flags(tmp_path):
    launcher = L.Launcher(tmp_path / "d", serve_command=["tidelog", "serve"], supported_flags=CONTRACT_FLAGS)
    cluster = launcher.plan(3, 7100)
    assert [n.node_id for n in cluster.nodes] == [1, 2, 3]
    n2 = cluster.nodes[1]
    assert n2.data_dir == str((tmp_path / "d" / "node-2").absolute())
    assert n2.log_file == str((tmp_path / "d" / "node-2" / "broker.log").absolute())
    args = n2.args
    assert args[:2] == ["tidelog", "serve"]
    flags = dict(zip(args[2::2], args[3::2]))
    assert flags == {
        "--node-id": "2", "--data-dir": n2.data_dir, "--host": "127.0.0.1", "--grpc-port": "7120",
        "--kafka-port": "7121", "--metrics-port": "7122", "--raft-port": "7123",
        "--peers": "1=127.0.0.1:7113,2=127.0.0.1:7123,3=127.0.0.1:7133",
        "--default-replication-factor": "3",
    }
    assert cluster.kafka_bootstrap == "127.0.0.1:7111,127.0.0.1:7121,127.0.0.1:7131"
    assert cluster.grpc_endpoints == "127.0.0.1:7110,127.0.0.1:7120,127.0.0.1:7130"
    five = launcher.plan(5, 7100, replication_factor=2, controller_voters=[1, 2, 3], log_level="debug",
                         extra_args=["--rack", "r1"])
    args = five.nodes[4].args
    assert args[args.index("--controller-voters") + 1] == "1,2,3"
    assert args[args.index("--default-replication-factor") + 1] == "2"
    assert args[-4:] == ["--log-level", "debug", "--rack", "r1"]
    with pytest.raises(L.LauncherError, match="outside 1..3"):
        launcher.plan(3, 7100, controller_voters=[1, 4])


def test_plan_against_a_single_node_serve(tmp_path):
    """A serve without the cluster flags runs a 1-node cluster and refuses more, in one line."""
    plain = {"--node-id", "--data-dir", "--host", "--grpc-port", "--kafka-port", "--metrics-port"}
    launcher = L.Launcher(tmp_path, serve_command=["tidelog", "serve"], supported_flags=plain)
    args = launcher.plan(1, 7100).nodes[0].args
    assert "--peers" not in args and "--raft-port" not in args
    with pytest.raises(L.LauncherError, match="only --nodes 1"):
        launcher.plan(3, 7100)


def test_every_planned_command_line_parses_with_the_real_serve_parser(tmp_path):
    """What the launcher passes is accepted by this tidelog's own `serve` (whatever stage it is at)."""
    from tidelog.cli import build_parser

    parser = build_parser()
    launcher = L.Launcher(tmp_path)  # the real serve command and the real flags
    clustered = "--peers" in launcher.supported_flags
    for nodes in ((1, 3, 5) if clustered else (1,)):
        for node in launcher.plan(nodes, 7100).nodes:
            assert node.args[:4] == [sys.executable, "-m", "tidelog.cli", "serve"]
            args = parser.parse_args(node.args[3:])
            assert args.command == "serve" and args.node_id == node.node_id
            assert args.grpc_port == node.grpc_port and args.kafka_port == node.kafka_port


def test_cluster_file_round_trip_and_atomic_write(tmp_path):
    launcher = L.Launcher(tmp_path, serve_command=FAKE_SERVE, supported_flags=CONTRACT_FLAGS)
    cluster = launcher.plan(3, 7100)
    cluster.nodes[0].pid = 4242
    L.save_cluster(tmp_path, cluster)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.json"]  # no temporary file left
    data = json.loads((tmp_path / "cluster.json").read_text())
    assert data["version"] == 1 and data["base_port"] == 7100
    assert set(data["nodes"][0]) >= {"node_id", "pid", "host", "grpc_port", "kafka_port", "metrics_port",
                                     "raft_port", "data_dir", "log_file", "args"}
    assert data["nodes"][0]["pid"] == 4242 and data["nodes"][1]["pid"] is None
    again = L.load_cluster(tmp_path)
    assert again == cluster
    assert L.load_cluster(tmp_path / "nowhere") is None


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('{"version": 2, "base_port": 7100, "nodes": []}', "unsupported version 2"),
    ('{"version": 1, "base_port": 7100, "nodes": []}', "no nodes"),
    ('{"version": 1, "base_port": 7100, "nodes": [{"node_id": 1}]}', "missing field"),
])
def test_a_damaged_cluster_file_is_one_clear_error(tmp_path, content, message):
    (tmp_path / "cluster.json").write_text(content)
    with pytest.raises(L.LauncherError, match=message) as info:
        L.load_cluster(tmp_path)
    assert "\n" not in str(info.value)


def _view(node_id, controller, brokers=(1, 2, 3), dead=(), partitions=()):
    return L.ClusterView("c", node_id, controller,
                         [L.BrokerView(b, "127.0.0.1", 0, 0, 0, "", b not in dead) for b in brokers],
                         list(partitions))


def _partition(leader, replicas=(1, 2, 3), isr=(1, 2, 3), name="t", number=0):
    return L.PartitionView(name, number, leader, 1, list(replicas), list(isr), 10, 10, {})


def test_health_follows_the_contract():
    ids = [1, 2, 3]
    ok = {n: _view(n, 2, partitions=[_partition(1)]) for n in ids}
    health = L.evaluate(ids, ok)
    assert health.healthy and health.controller_id == 2 and health.answering == ids and health.view.node_id == 2

    silent = {**ok, 3: "not answering"}
    health = L.evaluate(ids, silent)
    assert not health.healthy and health.suspect == 3 and "node 3 not answering" in health.problems[0]

    electing = {n: _view(n, -1) for n in ids}
    assert L.evaluate(ids, electing).problems == ["no controller leader elected yet"]

    split = {1: _view(1, 1), 2: _view(2, 2), 3: _view(3, 2)}
    assert "disagree" in L.evaluate(ids, split).problems[0]

    unregistered = {n: _view(n, 1, brokers=(1, 2)) for n in ids}
    health = L.evaluate(ids, unregistered)
    assert health.problems == ["broker 3 is not registered with the controller"] and health.suspect == 3

    dead = {n: _view(n, 1, dead=(2,)) for n in ids}
    assert L.evaluate(ids, dead).problems == ["broker 2 is not alive for the controller"]

    leaderless = {n: _view(n, 1, partitions=[_partition(-1, number=i) for i in range(7)]) for n in ids}
    problem = L.evaluate(ids, leaderless).problems[0]
    assert problem.startswith("7 partition(s) without a leader: t/0, t/1") and "and 2 more" in problem

    stranger = {n: _view(n, 9) for n in ids}
    assert "not a node of this cluster" in L.evaluate(ids, stranger).problems[0]


def test_lagging_partitions():
    view = _view(1, 1, partitions=[_partition(1, isr=(1, 2)), _partition(1, replicas=(1, 2), isr=(1,), number=1),
                                   _partition(2, number=2)])
    assert L.lagging_partitions(view.partitions, 3) == ["t/0"]
    assert L.lagging_partitions(view.partitions, 2) == ["t/1"]


def test_owns_accepts_only_the_recorded_command_line(tmp_path):
    args = [sys.executable, "-c", "import time; time.sleep(60)", "serve", "--data-dir", str(tmp_path / "node-1")]
    proc = subprocess.Popen(args)
    try:
        node = L.NodeSpec(1, "127.0.0.1", 1, 2, 3, 4, str(tmp_path / "node-1"), "log", args, proc.pid)
        assert L.owns(proc.pid, node) and L.node_process(node) == "running"
        other_dir = L.NodeSpec(1, "127.0.0.1", 1, 2, 3, 4, "x", "log", args[:-1] + [str(tmp_path / "node-2")],
                               proc.pid)
        assert not L.owns(proc.pid, other_dir) and L.node_process(other_dir) == "foreign"
        # A recycled PID: the recorded PID now belongs to some other program (here: this test process).
        recycled = L.NodeSpec(1, "127.0.0.1", 1, 2, 3, 4, "x", "log", args, os.getpid())
        assert not L.owns(os.getpid(), recycled)
        assert not L._signal(os.getpid(), recycled, 0)
        assert not L.owns(None, node) and not L.owns(0, node) and not L.owns(-1, node)
        os.kill(proc.pid, 19)  # SIGSTOP
        deadline = time.monotonic() + 5
        while L.node_process(node) != "paused" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert L.node_process(node) == "paused"
        os.kill(proc.pid, 18)  # SIGCONT
    finally:
        proc.kill()
    deadline = time.monotonic() + 5
    while L.process_state(proc.pid) not in ("Z", None) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not L.owns(proc.pid, node)  # a zombie is not a broker
    proc.wait(5)
    assert L.process_state(proc.pid) is None and L.node_process(node) == "gone"


def test_log_tail_is_one_line(tmp_path):
    log = tmp_path / "broker.log"
    log.write_text("starting\n\n  Traceback (most recent call last):\n    boom\nOSError: [Errno 98] in use\n")
    tail = L.log_tail(log)
    assert "\n" not in tail and tail.endswith("OSError: [Errno 98] in use") and "starting" not in tail
    log.write_text("x" * 5000)
    assert len(L.log_tail(log)) <= 403
    assert L.log_tail(tmp_path / "missing.log") == "(no log)"


def test_progress_on_a_pipe_prints_changes_at_most_once_a_second_and_a_heartbeat():
    now = [0.0]
    out = io.StringIO()
    progress = L.Progress(out, clock=lambda: now[0])
    progress.update("a")          # printed: first
    now[0] = 0.5
    progress.update("b")          # changed, but < 1 s since the last line
    now[0] = 1.2
    progress.update("b")          # printed
    now[0] = 3.0
    progress.update("b")          # unchanged
    now[0] = 6.5
    progress.update("b")          # unchanged for 5 s: printed again
    assert out.getvalue().splitlines() == ["a [0s]", "b [1s]", "b [6s]"]


def test_progress_on_a_terminal_rewrites_one_line():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    progress = L.Progress(out, clock=lambda: 0.0)
    progress.update("waiting for 3 brokers... 1/3 ready")
    progress.update("waiting for 3 brokers... 3/3")
    progress.done()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 2


def test_port_in_use(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert L.port_in_use("127.0.0.1", port)
        node = L.NodeSpec(2, "127.0.0.1", port + 0, port, port, port, "d", "l", [])
        with pytest.raises(L.LauncherError, match=f"port {port} \\(grpc port of node 2\\) is already in use"):
            L.check_ports_free([node])
    assert not L.port_in_use("127.0.0.1", port)


def test_status_takes_each_partition_from_its_leader():
    controller_view = _view(1, 1, partitions=[
        L.PartitionView("t", 0, 2, 3, [1, 2, 3], [1, 2, 3], -1, 7, {}),
        L.PartitionView("t", 1, 1, 3, [1, 2, 3], [1, 2], 9, 9, {2: 0, 3: 4}),
        L.PartitionView("a", 0, 3, 1, [1, 2, 3], [1, 2, 3], -1, 1, {}),
    ])
    leader_view = _view(2, 1, partitions=[L.PartitionView("t", 0, 2, 3, [1, 2, 3], [1, 2, 3], 7, 7, {1: 0, 3: 0})])
    merged = L.merged_partitions(controller_view, {1: controller_view, 2: leader_view, 3: "not answering"})
    assert [(p.topic, p.partition, p.high_watermark) for p in merged] == [("a", 0, -1), ("t", 0, 7), ("t", 1, 9)]
    assert merged[1].replica_lag == {1: 0, 3: 0}
    assert L.merged_partitions(None, {}) == []


def test_log_tail_leads_with_the_runs_first_error(tmp_path):
    log = tmp_path / "broker.log"
    log.write_text(
        "=== 2026-01-01 00:00:00 tidelog cluster: starting node 1: old run\n"
        "2026-01-01 00:00:01,000 ERROR x: an error of the previous run\n"
        "=== 2026-01-02 00:00:00 tidelog cluster: starting node 1: tidelog serve ...\n"
        "2026-01-02 00:00:01,000 INFO x: ready\n"
        "2026-01-02 00:00:02,000 ERROR tidelog.raft: applying a Ready failed\n"
        "Traceback (most recent call last):\n  File ...\nNameError: name 'listener' is not defined\n"
        "2026-01-02 00:00:02,001 CRITICAL tidelog.raft: group __controller goes offline\n"
        + "".join(f"2026-01-02 00:00:{10 + i},000 INFO x: retrying {i}\n" for i in range(5)))
    tail = L.log_tail(log)
    assert tail.startswith("first error: 2026-01-02 00:00:02,001 CRITICAL tidelog.raft: group __controller goes")
    assert tail.endswith("retrying 2 | 2026-01-02 00:00:13,000 INFO x: retrying 3 | 2026-01-02 00:00:14,000 INFO x: "
                         "retrying 4")
    assert "previous run" not in tail and "\n" not in tail
