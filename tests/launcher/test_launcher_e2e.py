"""`tidelog cluster ...` against real `tidelog serve` processes, through the command line.

The one-node tests run with any tidelog; the three-node test needs the clustered broker (`serve --peers`) and
is skipped without it. Every wait is bounded; teardown SIGKILLs whatever cluster.json still names, each PID
only after checking it is that node's broker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from launcher_harness import free_base_port, kill_cluster_processes

from tidelog import launcher as L
from tidelog.testing import child_env, cli_command

CLUSTERED = "--peers" in L.serve_flags()


def cluster_cli(*args, timeout=120):
    return subprocess.run(cli_command("cluster", *args), capture_output=True, text=True, timeout=timeout,
                          env=child_env())


def ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def one_line_error(result, code=1):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("tidelog: error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def status_json(data_dir):
    result = cluster_cli("status", "--data-dir", str(data_dir), "--json", timeout=60)
    return json.loads(result.stdout), result.returncode


def pids_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(L.process_state(pid) in (None, "Z") for pid in pids):
            return True
        time.sleep(0.05)
    return False


def count_records(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> int:
    from tidelog import Consumer, TopicPartition

    with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        got = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            got += len(consumer.poll(0.5))
        return got


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    yield d
    kill_cluster_processes(d)


def test_one_node_cluster_up_status_restart_down(data_dir):
    base = free_base_port(1)
    up = ok(cluster_cli("up", "--nodes", "1", "--data-dir", str(data_dir), "--base-port", str(base),
                        "--timeout", "60"))
    assert f"Kafka bootstrap: 127.0.0.1:{base + 11}" in up.stdout
    assert f"gRPC endpoints:  127.0.0.1:{base + 10}" in up.stdout
    assert "waiting for 1 broker" in up.stderr
    cluster = L.load_cluster(data_dir)
    pid = cluster.nodes[0].pid
    assert L.owns(pid, cluster.nodes[0])  # outlived the `up` process
    assert "tidelog ready" in open(cluster.nodes[0].log_file).read()

    again = one_line_error(cluster_cli("up", "--data-dir", str(data_dir)))
    assert "already running" in again

    from tidelog import Admin, Producer

    bootstrap = f"127.0.0.1:{base + 10}"
    with Admin(bootstrap) as admin:
        admin.create_topic("events", 2)
    with Producer(bootstrap, acks="all") as producer:
        for i in range(100):
            producer.send("events", f"v{i}".encode(), key=f"k{i % 7}".encode())
        producer.flush(30)
    status, code = status_json(data_dir)
    assert code == 0 and status["healthy"] and status["controller_id"] == 1
    assert [(b["node_id"], b["pid"], b["answers"]) for b in status["brokers"]] == [(1, pid, True)]
    assert sorted(p["partition"] for p in status["partitions"] if p["topic"] == "events") == [0, 1]
    # Offsets also count Raft's own entries (control batches), so at least 100.
    assert sum(p["log_end_offset"] for p in status["partitions"] if p["topic"] == "events") >= 100
    assert count_records(bootstrap, "events", 2) == 100

    restarted = ok(cluster_cli("restart-node", "1", "--kill", "--data-dir", str(data_dir), "--timeout", "60"))
    assert "restarted node 1" in restarted.stdout
    assert pids_gone([pid])
    new_pid = L.load_cluster(data_dir).nodes[0].pid
    assert new_pid != pid
    status, code = status_json(data_dir)
    assert code == 0 and status["healthy"]
    assert count_records(bootstrap, "events", 2) == 100  # nothing lost across a kill -9

    ok(cluster_cli("kill-node", "1", "--data-dir", str(data_dir)))
    status, code = status_json(data_dir)
    assert code == 1 and not status["healthy"] and status["brokers"][0]["process"] == "stopped"
    ok(cluster_cli("start-node", "1", "--data-dir", str(data_dir), "--timeout", "60"))
    last_pid = L.load_cluster(data_dir).nodes[0].pid

    down = ok(cluster_cli("down", "--data-dir", str(data_dir)))
    assert "stopped" in down.stdout
    assert pids_gone([last_pid])
    assert L.load_cluster(data_dir).nodes[0].pid is None
    assert "stopped" in open(cluster.nodes[0].log_file).read().splitlines()[-1]  # a graceful stop


def test_a_failing_broker_is_reported_in_one_line(data_dir):
    base = free_base_port(1)
    result = cluster_cli("up", "--nodes", "1", "--data-dir", str(data_dir), "--base-port", str(base),
                         "--serve-arg=--log-level=shout")
    line = one_line_error(result)
    assert "node 1 exited with status 2 while starting" in line and "invalid choice: 'shout'" in line
    assert not (data_dir / "cluster.json").exists()


def test_foreground_stops_the_cluster_on_ctrl_c(data_dir):
    base = free_base_port(1)
    proc = subprocess.Popen(cli_command("cluster", "up", "--nodes", "1", "--data-dir", str(data_dir), "--base-port",
                                        str(base), "--foreground"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        deadline = time.monotonic() + 60
        pid = None
        while time.monotonic() < deadline and pid is None:
            cluster = L.load_cluster(data_dir) if (data_dir / "cluster.json").exists() else None
            if cluster and cluster.nodes[0].pid and status_json(data_dir)[1] == 0:
                pid = cluster.nodes[0].pid
            else:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
        assert pid is not None, "not healthy within 60 s"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out, err)
        assert "Kafka bootstrap" in out and "stopped 1 broker(s)" in out
        assert "1/1 brokers up, controller: 1" in err
        assert pids_gone([pid])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
@pytest.mark.skipif(not CLUSTERED, reason="needs the clustered broker (tidelog serve --peers)")
def test_three_node_cluster_end_to_end(data_dir):
    base = free_base_port(3)
    up = ok(cluster_cli("up", "--nodes", "3", "--data-dir", str(data_dir), "--base-port", str(base),
                        "--timeout", "90", timeout=180))
    kafka = ",".join(f"127.0.0.1:{base + 10 * i + 1}" for i in (1, 2, 3))
    assert f"Kafka bootstrap: {kafka}" in up.stdout
    first = {n.node_id: n.pid for n in L.load_cluster(data_dir).nodes}
    assert len(set(first.values())) == 3 and all(first.values())

    status, code = status_json(data_dir)
    assert code == 0 and status["healthy"], status["problems"]
    assert [b["node_id"] for b in status["brokers"]] == [1, 2, 3]
    assert all(b["answers"] and b["alive"] for b in status["brokers"])
    assert status["controller_id"] in (1, 2, 3)

    from tidelog import Admin, Producer

    bootstrap = f"127.0.0.1:{base + 10}"
    with Admin(bootstrap) as admin:
        admin.create_topic("replicated", 3)
    with Producer(bootstrap, acks="all") as producer:
        for i in range(300):
            producer.send("replicated", f"v{i}".encode(), key=f"k{i}".encode())
        producer.flush(60)
    deadline = time.monotonic() + 60
    while True:
        status, code = status_json(data_dir)
        mine = [p for p in status["partitions"] if p["topic"] == "replicated"]
        if code == 0 and len(mine) == 3 and all(len(p["replicas"]) == 3 and sorted(p["isr"]) == [1, 2, 3]
                                                for p in mine):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    text = ok(cluster_cli("status", "--data-dir", str(data_dir))).stdout
    assert "replicated/0" in text and "controller: node" in text

    ok(cluster_cli("kill-node", "2", "--data-dir", str(data_dir)))
    assert pids_gone([first[2]])
    status, code = status_json(data_dir)
    assert code == 1 and status["brokers"][1]["process"] == "stopped"

    ok(cluster_cli("start-node", "2", "--data-dir", str(data_dir), "--timeout", "90", timeout=180))
    restarted = ok(cluster_cli("restart-node", "1", "--kill", "--data-dir", str(data_dir), "--timeout", "90",
                               timeout=180))
    assert "restarted node 1" in restarted.stdout and pids_gone([first[1]])
    status, code = status_json(data_dir)
    assert code == 0 and status["healthy"], status["problems"]

    last = [n.pid for n in L.load_cluster(data_dir).nodes]
    ok(cluster_cli("down", "--data-dir", str(data_dir), timeout=120))
    assert pids_gone(last)
    assert all(n.pid is None for n in L.load_cluster(data_dir).nodes)
