"""The launcher driving real processes (fake brokers, tests/launcher/fake_serve.py) through its whole life:
up, refusing a second up, status, kill/start/restart/pause a node, down; failures stop what was started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from launcher_harness import FakeDescriber, free_base_port

from tidelog import launcher as L


def _all_gone(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:
            L._reap(pid)
        if all(L.process_state(pid) in (None, "Z") for pid in pids):
            return True
        time.sleep(0.02)
    return False


def test_up_status_and_down(make_launcher, cluster_dir, capsys):
    launcher = make_launcher()
    base = free_base_port(3)
    cluster, health = launcher.up(nodes=3, base_port=base, timeout=20)
    assert health.healthy and health.controller_id == 1
    pids = [n.pid for n in cluster.nodes]
    assert all(pids) and len(set(pids)) == 3
    on_disk = L.load_cluster(cluster_dir)
    assert on_disk == cluster and on_disk.base_port == base
    for node in on_disk.nodes:
        assert L.owns(node.pid, node)
        assert os.getsid(node.pid) == node.pid  # its own session: outlives the launcher, no terminal's Ctrl-C
        assert L.port_in_use("127.0.0.1", node.kafka_port)
        assert "fake broker" in open(node.log_file).read()
    assert "waiting for 3 brokers..." in capsys.readouterr().err  # progress shown

    status = launcher.status()
    assert status["healthy"] and status["controller_id"] == 1
    assert [b["node_id"] for b in status["brokers"]] == [1, 2, 3]
    assert all(b["answers"] and b["alive"] and b["process"] == "running" for b in status["brokers"])
    assert status["kafka_bootstrap"] == ",".join(f"127.0.0.1:{base + 10 * i + 1}" for i in (1, 2, 3))
    text = L.format_status(status)
    assert "controller: node 1" in text and text.rstrip().endswith("healthy")

    cluster, notes = launcher.down(timeout=10)
    assert notes == []
    assert _all_gone(pids)
    assert all(n.pid is None for n in L.load_cluster(cluster_dir).nodes)


def test_a_second_up_is_refused_while_brokers_live(make_launcher, cluster_dir):
    launcher = make_launcher()
    base = free_base_port(2)
    cluster, _ = launcher.up(nodes=2, base_port=base, timeout=20)
    before = (cluster_dir / "cluster.json").read_text()
    with pytest.raises(L.LauncherError, match=r"already running in .* \(node 1 pid \d+, node 2 pid") as info:
        make_launcher().up(nodes=2, base_port=base, timeout=5)
    assert "tidelog cluster down" in str(info.value)
    assert (cluster_dir / "cluster.json").read_text() == before  # untouched
    launcher.kill_node(2)
    with pytest.raises(L.LauncherError, match="already running"):  # one live broker is enough to refuse
        launcher.up(timeout=5)
    launcher.down(timeout=10)
    # Stopped: `up` restarts it with its own layout; a different layout is refused.
    with pytest.raises(L.LauncherError, match="describes a 2-node cluster"):
        launcher.up(nodes=3, timeout=5)
    cluster2, health = launcher.up(timeout=20)
    assert cluster2.base_port == base and len(cluster2.nodes) == 2 and health.healthy
    launcher.down(timeout=10)


def test_up_refuses_a_taken_port_and_names_it(make_launcher, cluster_dir):
    base = free_base_port(3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 22))  # metrics of node 2
        s.listen()
        with pytest.raises(L.LauncherError, match=f"port {base + 22} \\(metrics port of node 2\\) is already in use"):
            make_launcher().up(nodes=3, base_port=base, timeout=10)
    assert not (cluster_dir / "cluster.json").exists()
    assert not list(cluster_dir.glob("node-*/broker.log"))  # nothing was started


def test_a_broker_that_exits_fails_up_with_its_log_and_stops_the_others(make_launcher, cluster_dir):
    launcher = make_launcher(mode="crash")
    with pytest.raises(L.LauncherError) as info:
        launcher.up(nodes=3, base_port=free_base_port(3), timeout=20)
    message = str(info.value)
    assert "exited with status 3 while starting" in message and "cannot open the log (simulated)" in message
    assert "\n" not in message
    assert all(p.poll() is not None for p in launcher.spawned)  # every broker it started is stopped
    assert not (cluster_dir / "cluster.json").exists()  # a failed first start leaves nothing to restart


def test_up_times_out_with_the_suspect_log_and_stops_everything(make_launcher, cluster_dir):
    class NeverElects(FakeDescriber):
        controller = -1

    launcher = make_launcher(describer=NeverElects)
    started = time.monotonic()
    with pytest.raises(L.LauncherError, match="not healthy within 1.5s: no controller leader elected yet; node 1 "
                                              "log: .*tidelog ready"):
        launcher.up(nodes=2, base_port=free_base_port(2), timeout=1.5)
    assert time.monotonic() - started < 15
    assert len(launcher.spawned) == 2 and all(p.poll() is not None for p in launcher.spawned)


def test_wait_for_a_slow_broker(make_launcher):
    launcher = make_launcher(mode="slow")
    cluster, health = launcher.up(nodes=1, base_port=free_base_port(1), timeout=20)
    assert health.healthy
    launcher.down(timeout=10)


def test_kill_start_restart_pause_resume(make_launcher, cluster_dir):
    launcher = make_launcher()
    cluster, _ = launcher.up(nodes=3, base_port=free_base_port(3), timeout=20)
    first = {n.node_id: n.pid for n in cluster.nodes}

    killed = launcher.kill_node(2)
    assert killed.pid == first[2] and _all_gone([first[2]])
    assert L.load_cluster(cluster_dir).node(2).pid is None
    status = launcher.status()
    assert not status["healthy"] and status["brokers"][1]["process"] == "stopped"
    with pytest.raises(L.LauncherError, match="node 2 is not running"):
        launcher.kill_node(2)
    with pytest.raises(L.LauncherError, match="there is no node 7"):
        launcher.kill_node(7)

    node, health = launcher.start_node(2, timeout=20)
    assert health.healthy and node.pid not in first.values()
    assert L.load_cluster(cluster_dir).node(2).pid == node.pid
    with pytest.raises(L.LauncherError, match="node 2 is already running"):
        launcher.start_node(2, timeout=5)

    for kill in (False, True):
        before = L.load_cluster(cluster_dir).node(3).pid
        node, health = launcher.restart_node(3, kill=kill, timeout=20)
        assert health.healthy and node.pid != before and _all_gone([before])
        assert L.owns(node.pid, L.load_cluster(cluster_dir).node(3))

    # Two nodes down: starting one of them waits for the nodes that run, not for the one still stopped.
    launcher.kill_node(2)
    launcher.kill_node(3)
    node, health = launcher.start_node(3, timeout=20)
    assert health.healthy and health.answering == [1, 3]
    assert L.node_process(L.load_cluster(cluster_dir).node(2)) == "stopped"
    launcher.start_node(2, timeout=20)

    paused = launcher.pause_node(1)
    assert L.node_process(L.load_cluster(cluster_dir).node(1)) == "paused"
    assert launcher.status()["brokers"][0]["process"] == "paused"
    launcher.pause_node(1, resume=True)
    assert L.node_process(L.load_cluster(cluster_dir).node(1)) == "running"

    launcher.pause_node(1)  # down must stop a paused broker too (SIGCONT after SIGTERM)
    final = [n.pid for n in L.load_cluster(cluster_dir).nodes]
    launcher.down(timeout=10)
    assert _all_gone(final + [paused.pid])


def test_restart_waits_for_the_node_to_rejoin_the_isr(make_launcher, cluster_dir):
    class CatchingUp(FakeDescriber):
        calls = 0

        def describe_all(self, timeout):
            CatchingUp.calls += 1
            out = super().describe_all(timeout)
            isr = [1, 2, 3] if CatchingUp.calls > 6 else [1, 2]
            for view in out.values():
                if isinstance(view, L.ClusterView):
                    view.partitions = [L.PartitionView("t", 0, 1, 1, [1, 2, 3], isr, 5, 5, {2: 0, 3: 5})]
            return out

    class NeverCatchesUp(FakeDescriber):
        partitions = [L.PartitionView("t", 0, 1, 1, [1, 2, 3], [1, 2], 5, 5, {3: 5})]

    launcher = make_launcher(describer=CatchingUp)
    launcher.up(nodes=3, base_port=free_base_port(3), timeout=20)
    CatchingUp.calls = 0
    node, health = launcher.restart_node(3, timeout=20)
    assert CatchingUp.calls > 6 and health.healthy

    stuck = make_launcher(describer=NeverCatchesUp)
    with pytest.raises(L.CatchUpTimeout, match="still not in the ISR of 1 partition\\(s\\) \\(t/0\\); it was left "
                                               "running"):
        stuck.restart_node(3, timeout=1.0)
    assert L.node_process(L.load_cluster(cluster_dir).node(3)) == "running"
    stuck.down(timeout=10)


def test_down_never_signals_a_recycled_pid(make_launcher, cluster_dir):
    launcher = make_launcher()
    cluster, _ = launcher.up(nodes=2, base_port=free_base_port(2), timeout=20)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Node 2 died and the kernel handed its PID to an unrelated program: simulate by rewriting the file.
        launcher.kill_node(2)
        edited = L.load_cluster(cluster_dir)
        edited.node(2).pid = bystander.pid
        L.save_cluster(cluster_dir, edited)
        assert L.node_process(edited.node(2)) == "foreign"
        _, notes = launcher.down(timeout=10)
        assert notes == [f"node 2: pid {bystander.pid} is no longer its broker; not signalled"]
        assert bystander.poll() is None  # untouched
        with pytest.raises(L.LauncherError, match="not running"):
            launcher.kill_node(2)
    finally:
        bystander.kill()
        bystander.wait(5)


def test_down_kills_a_broker_that_ignores_sigterm(make_launcher, cluster_dir):
    launcher = make_launcher(mode="ignore-term")
    cluster, _ = launcher.up(nodes=2, base_port=free_base_port(2), timeout=20)
    pids = [n.pid for n in cluster.nodes]
    started = time.monotonic()
    _, notes = launcher.down(timeout=0.5)
    assert time.monotonic() - started < 10
    assert len(notes) == 2 and all("did not stop within 0.5s: killed" in n for n in notes)
    assert _all_gone(pids)


def test_a_concurrent_mutating_command_is_refused(cluster_dir):
    cluster_dir.mkdir(parents=True)
    with L.cluster_lock(cluster_dir):
        with pytest.raises(L.LauncherError, match="another 'tidelog cluster' command is working on"):
            with L.cluster_lock(cluster_dir, timeout=0.2):
                pass
    with L.cluster_lock(cluster_dir, timeout=0.2):
        pass
