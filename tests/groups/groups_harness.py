"""Helpers of the consumer-group tests: a group node child process (broker + Kafka listener + gRPC server +
group coordinator), member child processes, and readers of what members report.

Every wait is bounded; only processes started here are stopped, by their PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE.parent / "kafka") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "kafka"))

from kafka_listener_harness import _readline  # noqa: E402  (a bounded read of a child's ready line)
HOST = "127.0.0.1"
SESSION_S = 3.0  # group_member.py's session timeout


def free_port() -> int:
    from tidelog._ports import free_port as pick

    return pick(HOST)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


class GroupNode:
    """tests/groups/group_node.py in a child process, restartable on the same data directory and ports."""

    def __init__(self, data_dir: Path, *, offsets_partitions: int = 10, min_session_ms: int = 1000,
                 initial_delay_ms: int = 300, default_partitions: int = 1) -> None:
        self.data_dir = Path(data_dir)
        self.grpc_port = free_port()
        self.kafka_port = free_port()
        self.extra = ["--offsets-partitions", str(offsets_partitions), "--min-session-ms", str(min_session_ms),
                      "--initial-delay-ms", str(initial_delay_ms), "--default-partitions", str(default_partitions)]
        self.proc: subprocess.Popen | None = None
        self.stderr_path = self.data_dir.parent / f"{self.data_dir.name}.stderr"

    @property
    def grpc(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def kafka(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    def start(self, timeout: float = 30.0) -> "GroupNode":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            with open(self.stderr_path, "ab") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, str(HERE / "group_node.py"), "--data-dir", str(self.data_dir),
                     "--grpc-port", str(self.grpc_port), "--kafka-port", str(self.kafka_port), *self.extra],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=_env())
            line = _readline(self.proc, max(1.0, deadline - time.monotonic()))
            if line.startswith("GROUPS_READY "):
                return self
            self.stop()
            if time.monotonic() > deadline:  # e.g. the port is still held by a killed predecessor
                raise RuntimeError(f"group node did not start: {line!r}; stderr: {self.stderr_tail()}")
            time.sleep(0.3)

    def stderr_tail(self, n: int = 3000) -> str:
        try:
            return self.stderr_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            _close_pipes(proc)

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        _close_pipes(proc)


def _close_pipes(proc: subprocess.Popen) -> None:
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(Exception):
            stream.close()


@dataclass
class MemberLog:
    """What one member reported (group_member.py's lines)."""

    assigns: list[tuple[int, frozenset]] = field(default_factory=list)  # (generation, {(topic, p)})
    records: list[tuple[int, int, str]] = field(default_factory=list)  # (partition, offset, value)
    events: list[tuple] = field(default_factory=list)  # everything in order


def read_log(path: Path) -> MemberLog:
    out = MemberLog()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if parts[0] == "A":
            tps = frozenset((t, int(p)) for t, p in (x.rsplit(":", 1) for x in parts[3].split(",") if x)) \
                if len(parts) > 3 else frozenset()
            out.assigns.append((int(parts[1]), tps))
            out.events.append(("A", tps))
        elif parts[0] == "M" and len(parts) == 4:
            rec = (int(parts[1]), int(parts[2]), parts[3])
            out.records.append(rec)
            out.events.append(("M",) + rec)
    return out


class Member:
    """group_member.py in a child process."""

    def __init__(self, client: str, node: GroupNode, group: str, topic: str, name: str, out_dir: Path,
                 **options: str) -> None:
        self.name = name
        self.out = Path(out_dir) / f"{name}.log"
        args = [sys.executable, str(HERE / "group_member.py"), "--client", client, "--kafka", node.kafka,
                "--grpc", node.grpc, "--group", group, "--topic", topic, "--name", name, "--out", str(self.out)]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", value]
        self.stderr_path = Path(out_dir) / f"{name}.stderr"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         cwd=ROOT, env=_env())

    def log(self) -> MemberLog:
        return read_log(self.out)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def stderr_tail(self, n: int = 2000) -> str:
        try:
            return self.stderr_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


def produce(grpc: str, topic: str, partitions: int, per_partition: int, start: int = 0) -> list[str]:
    """Values "p:i" for i in [start, start+per_partition) to each partition, acks=all. -> the values."""
    from tidelog.producer import Producer

    values = []
    with Producer(grpc, acks="all", linger_ms=2) as producer:
        futures = []
        for i in range(start, start + per_partition):
            for p in range(partitions):
                value = f"{p}:{i}"
                values.append(value)
                futures.append(producer.send(topic, value.encode(), partition=p))
        producer.flush(30)
        for f in futures:
            f.result(30)
    return values


def create_topic(grpc: str, topic: str, partitions: int) -> None:
    from tidelog.admin import Admin

    with Admin(grpc) as admin:
        admin.create_topic(topic, partitions)


def processed_values(members: list[Member]) -> set[str]:
    return {v for m in members for _, _, v in m.log().records}


def group_state(grpc: str, group: str):
    from tidelog.group_consumer import GroupAdmin

    with GroupAdmin(grpc, request_timeout_ms=5000) as admin:
        return admin.describe_group(group)


def stable_assignment(grpc: str, group: str, members: int, partitions: set) -> dict[str, frozenset] | None:
    """client id -> assigned partitions once the group is Stable with `members` members that together own
    exactly `partitions`, each partition once; None otherwise."""
    try:
        d = group_state(grpc, group)
    except Exception:
        return None
    if d.state != "Stable" or len(d.members) != members:
        return None
    owned = defaultdict(int)
    result = {}
    for m in d.members:
        tps = frozenset((tp.topic, tp.partition) for tp in m.assignment)
        result[m.client_id] = tps
        for tp in tps:
            owned[tp] += 1
    if set(owned) != partitions or any(n != 1 for n in owned.values()):
        return None
    return result


def committed(grpc: str, group: str) -> dict[tuple[str, int], int]:
    from tidelog.group_consumer import GroupAdmin

    with GroupAdmin(grpc, request_timeout_ms=5000) as admin:
        return {(tp.topic, tp.partition): o for tp, o in admin.committed(group).items()}
