"""`tidelog group list | describe | reset-offsets | delete` end to end over gRPC, and the GroupConsumer's
own guarantees (commit of processed records only, static membership, fenced commits)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from groups_harness import ROOT, _env, committed, create_topic, wait_until

from tidelog.cli import main
from tidelog.group_consumer import CommitFailedError, GroupConsumer
from tidelog.producer import Producer
from tidelog.records import TopicPartition

BASE_TS = 1_700_000_000_000


def _produce(grpc: str, topic: str, partitions: int, per_partition: int) -> None:
    with Producer(grpc) as p:
        for i in range(per_partition):
            for part in range(partitions):
                p.send(topic, f"{part}:{i}".encode(), partition=part, timestamp_ms=BASE_TS + i * 1000)
        p.flush(10)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(text: str) -> dict[int, list[str]]:
    """describe's table rows by partition."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) == 9 and cells[2].isdigit():
            rows[int(cells[2])] = cells
    return rows


def test_group_cli_end_to_end(node, capsys):
    g = ["--bootstrap", node.grpc]
    topic, group = "cli-topic", "cli-group"
    create_topic(node.grpc, topic, 3)
    _produce(node.grpc, topic, 3, 10)
    consumer = GroupConsumer(node.grpc, group, [topic], client_id="cli-client", enable_auto_commit=False)
    try:
        wait_until(lambda: consumer.poll(0.2) or consumer.assignment(), 20, what="an assignment")
        consumer.commit({TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 10})
        code, out, err = _run(capsys, "group", "list", *g)
        assert code == 0 and any(line.split()[:2] == [group, "Stable"] for line in out.splitlines()), out
        code, out, err = _run(capsys, "group", "describe", group, *g)
        assert code == 0, err
        assert out.splitlines()[1].split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET",
                                               "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"]
        rows = _rows(out)
        assert rows[0][3:6] == ["4", "10", "6"] and rows[1][3:6] == ["10", "10", "0"]
        assert rows[2][3:6] == ["-", "10", "-"]  # assigned, nothing committed
        assert {r[6] for r in rows.values()} == {consumer.member_id} and rows[0][8] == "cli-client"
        # An active group's offsets cannot be reset.
        code, out, err = _run(capsys, "group", "reset-offsets", group, "--topic", topic, "--to-earliest",
                              "--execute", *g)
        assert code == 1 and "inactive" in err and len(err.strip().splitlines()) == 1
    finally:
        consumer.close()
    wait_until(lambda: _run(capsys, "group", "list", "--state", "Empty", *g)[1].find(group) >= 0, 10,
               what="the group to be empty")

    before = committed(node.grpc, group)
    code, out, err = _run(capsys, "group", "reset-offsets", group, "--topic", topic, "--to-earliest", *g)
    assert code == 0 and "dry run" in err and committed(node.grpc, group) == before
    assert [line.split()[2:] for line in out.splitlines()[1:]] == [["0", "4", "0"], ["1", "10", "0"], ["2", "-", "0"]]
    expectations = [
        (["--to-earliest"], {0: 0, 1: 0, 2: 0}),
        (["--shift-by", "3"], {0: 3, 1: 3, 2: 3}),
        (["--shift-by", "-5"], {0: 0, 1: 0, 2: 0}),  # clamped to the log start
        (["--to-offset", "100"], {0: 10, 1: 10, 2: 10}),  # clamped to the log end
        (["--to-datetime", "2023-11-14T22:13:25Z"], {0: 5, 1: 5, 2: 5}),  # BASE_TS + 5 s
        (["--to-latest", "--partition", "1"], {0: 5, 1: 10, 2: 5}),
    ]
    for flags, want in expectations:
        code, out, err = _run(capsys, "group", "reset-offsets", group, "--topic", topic, *flags, "--execute", *g)
        assert code == 0, (flags, err)
        assert committed(node.grpc, group) == {(topic, p): o for p, o in want.items()}, flags
    code, out, err = _run(capsys, "group", "describe", group, *g)
    assert [r[3:6] for _, r in sorted(_rows(out).items())] == [["5", "10", "5"], ["10", "10", "0"], ["5", "10", "5"]]

    # Bad input: one line, non-zero.
    for args, status in [(["group", "reset-offsets", group, "--topic", topic], 2),
                         (["group", "reset-offsets", group, "--topic", "nope", "--to-latest"], 1),
                         (["group", "describe", "no-such-group"], 1),
                         (["group", "delete", "no-such-group"], 1)]:
        code, out, err = _run(capsys, *args, *g)
        assert code == status and len(err.strip().splitlines()) == 1 and err.startswith("tidelog: error:"), (args, err)

    code, out, err = _run(capsys, "group", "delete", group, *g)
    assert code == 0 and f"deleted group {group}" in out
    assert group not in _run(capsys, "group", "list", *g)[1]
    assert committed(node.grpc, group) == {}


def test_group_commands_have_help_and_fail_cleanly_without_a_broker():
    for args in (["group", "--help"], ["group", "list", "--help"], ["group", "describe", "--help"],
                 ["group", "reset-offsets", "--help"], ["group", "delete", "--help"], ["dlq", "replay", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "tidelog.cli", *args], capture_output=True, timeout=60, cwd=ROOT,
                              env=_env())
        assert proc.returncode == 0 and b"usage:" in proc.stdout, args
    proc = subprocess.run([sys.executable, "-m", "tidelog.cli", "group", "list", "--bootstrap", "127.0.0.1:1",
                           "--timeout", "2"], capture_output=True, timeout=60, cwd=ROOT, env=_env())
    assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1, proc.stderr


def test_group_consumer_commits_only_processed_records(node):
    topic = "processed"
    create_topic(node.grpc, topic, 1)
    _produce(node.grpc, topic, 1, 10)
    tp = TopicPartition(topic, 0)
    with GroupConsumer(node.grpc, "processed-g", [topic], enable_auto_commit=True, auto_commit_interval_ms=1,
                       max_poll_records=4) as c:
        first = wait_until(lambda: c.poll(0.5), 20, what="records")
        assert [r.offset for r in first] == [0, 1, 2, 3]
        time.sleep(0.05)
        c.poll(0.5, max_records=4)  # the first four are processed now; these four are not yet
        assert committed(node.grpc, "processed-g") == {(topic, 0): 4}
        it = iter(c)
        assert next(it).offset == 8
        c.poll(0)  # a poll marks the previous poll's records processed, and auto-commits
        assert committed(node.grpc, "processed-g")[(topic, 0)] == 8  # 8 was handed out, not yet processed
        assert c.committed([tp]) == {tp: 8}


class _Poller:
    """Polls a GroupConsumer on its own thread (members of one group must poll concurrently to join)."""

    def __init__(self, consumer: GroupConsumer) -> None:
        import threading

        self.consumer = consumer
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.consumer.poll(0.1)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(40)
        assert not self._thread.is_alive() and self.error is None, self.error


def test_static_member_restart_and_fenced_commit(node):
    topic, group = "static-t", "static-g"
    create_topic(node.grpc, topic, 2)
    fast = dict(heartbeat_interval_ms=300, rebalance_timeout_ms=2000)  # the group waits 2 s for rejoins
    a = GroupConsumer(node.grpc, group, [topic], group_instance_id="a", **fast)
    b = GroupConsumer(node.grpc, group, [topic], group_instance_id="b", **fast)
    pa, pb = _Poller(a), _Poller(b)
    cleanup = [pb, b]
    try:
        wait_until(lambda: a.assignment() and b.assignment() and a.generation_id == b.generation_id, 20,
                   what="two static members")
        generation, owned = a.generation_id, a.assignment()
        pa.stop()
        a.close(leave=False)  # "a" goes away (a static member sends no LeaveGroup) ...
        a2 = GroupConsumer(node.grpc, group, [topic], group_instance_id="a", **fast)
        pa2 = _Poller(a2)  # ... and comes back with the same group.instance.id
        cleanup[:0] = [pa2, a2]
        wait_until(lambda: a2.assignment(), 10, what="the static member to come back")
        assert a2.generation_id == generation and a2.assignment() == owned  # no rebalance
        time.sleep(1.0)  # a few heartbeats: b sees no rebalance either
        assert b.generation_id == generation and not b._rejoin.is_set()

        # b stops polling; a dynamic member joins; b misses the rebalance (2 s) and is fenced.
        pb.stop()
        c = GroupConsumer(node.grpc, group, [topic], **fast)
        pc = _Poller(c)
        cleanup[:0] = [pc, c]
        wait_until(lambda: c.assignment() and a2.generation_id > generation, 20, what="a rebalance without b")
        with pytest.raises(CommitFailedError):
            b.commit({TopicPartition(topic, 0): 1})
    finally:
        for thing in cleanup:
            if isinstance(thing, _Poller):
                thing.stop()
            else:
                thing.close()
