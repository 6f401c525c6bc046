"""Consumer groups on the three-node cluster: the broker coordinating two groups (it leads their
`__consumer_offsets` partition, replicated on all three brokers) is killed (SIGKILL) while a kafka-python member
and a tidelog GroupConsumer consume a stream. The new leader of that partition loads it and takes the groups
over; both go on, every acknowledged record is processed at least once, their commits land on the new
coordinator, and new members of both groups start exactly at the committed offsets.

Members run as child processes (tests/groups/group_member.py: 3 s sessions, 200 ms auto-commit); every wait
is bounded; only the PIDs started here are signalled."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

_GROUPS = str(Path(__file__).resolve().parents[1] / "groups")
if _GROUPS not in sys.path:
    sys.path.insert(0, _GROUPS)

from cluster_harness import wait_until  # noqa: E402
from groups_harness import Member, processed_values  # noqa: E402

OFFSETS_PARTITIONS = 6
pytestmark = [pytest.mark.slow, pytest.mark.cluster(extra_args=[
    "--group-config", f"offsets.topic.num.partitions={OFFSETS_PARTITIONS}",
    "--group-config", "group.initial.rebalance.delay.ms=200",
    "--group-config", "group.min.session.timeout.ms=1000"])]

pytest.importorskip("kafka")

TOPIC = "gf"
PARTITIONS = 3


def _same_offsets_partition(group: str, prefix: str) -> str:
    """A group id starting with `prefix` whose __consumer_offsets partition is `group`'s."""
    from consumer_groups import partition_for_group

    want = partition_for_group(group, OFFSETS_PARTITIONS)
    for i in range(10_000):
        candidate = f"{prefix}-{i}"
        if partition_for_group(candidate, OFFSETS_PARTITIONS) == want:
            return candidate
    raise AssertionError("no group id found")  # pragma: no cover


def _coordinator(cluster, group: str, node: int) -> int:
    """The broker leading `group`'s __consumer_offsets partition, as `node` sees it (-1: none)."""
    from consumer_groups import partition_for_group

    p = partition_for_group(group, OFFSETS_PARTITIONS)
    return cluster.leaders(node, "__consumer_offsets").get(p, -1)


def _find_coordinator_grpc(bootstrap: str, group: str) -> int:
    import grpc

    from proto.rpc import groups_v1_pb2 as gpb
    from proto.rpc import groups_v1_pb2_grpc as gpb_grpc

    with grpc.insecure_channel(bootstrap) as channel:
        answer = gpb_grpc.GroupServiceStub(channel).FindCoordinator(gpb.FindCoordinatorRequest(group_id=group),
                                                                    timeout=3)
    return answer.node_id if answer.error_code == 0 else -1


def _committed(bootstrap: str, group: str) -> dict[int, int]:
    from tidelog.group_consumer import GroupAdmin

    with GroupAdmin(bootstrap, request_timeout_ms=5000) as admin:
        return {tp.partition: o for tp, o in admin.committed(group).items() if tp.topic == TOPIC}


class Stream:
    """A background tidelog Producer writing unique values round-robin over the partitions (acks=all),
    remembering which were acknowledged."""

    def __init__(self, bootstrap: str) -> None:
        from tidelog import Producer

        self.producer = Producer(bootstrap, acks="all", linger_ms=2, delivery_timeout_ms=60_000)
        self.sent: list[tuple[str, object]] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Stream":
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set() and i < 20_000:
            value = f"v{i}"
            self.sent.append((value, self.producer.send(TOPIC, value.encode(), partition=i % PARTITIONS)))
            i += 1
            self.count = i
            time.sleep(0.004)

    def wait_sent(self, n: int, timeout: float = 30) -> None:
        wait_until(lambda: self.count >= n, timeout, what=f"{n} records sent")

    def stop(self) -> set[str]:
        """Stop, flush; the acknowledged values."""
        self._stop.set()
        self._thread.join(10)
        self.producer.flush(60)
        acked = set()
        self.errors: dict[str, int] = {}
        for value, future in self.sent:
            try:
                future.result(0)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {str(exc)[:100]}"
                self.errors[reason] = self.errors.get(reason, 0) + 1
                continue
            acked.add(value)
        self.producer.close()
        return acked


def test_groups_survive_the_kill_of_their_coordinator(cluster, tmp_path):
    from tidelog import Admin, Producer, TopicPartition

    cluster.wait_healthy()
    bootstrap = cluster.bootstrap()
    with Admin(bootstrap) as admin:
        admin.create_topic(TOPIC, PARTITIONS, replication_factor=3)
    cluster.wait_healthy([TOPIC])
    kp_group = "kp-readers"
    tl_group = _same_offsets_partition(kp_group, "tl-readers")
    node = SimpleNamespace(kafka=cluster.kafka_bootstrap(), grpc=bootstrap)
    stream = Stream(bootstrap).start()
    members = [Member("kafka-python", node, kp_group, TOPIC, "kp-0", tmp_path),
               Member("tidelog", node, tl_group, TOPIC, "tl-0", tmp_path)]
    try:
        stream.wait_sent(400)
        # Both groups are consuming and committing on their first coordinator.
        for group in (kp_group, tl_group):
            wait_until(lambda: len(_committed(bootstrap, group)) == PARTITIONS, 60, what=f"{group} to commit")
        victim = _coordinator(cluster, kp_group, 1)
        assert victim in cluster.ids
        offsets_p = cluster.describe(victim)
        replicas = [p for p in offsets_p.partitions if p.topic == "__consumer_offsets"]
        assert replicas and all(sorted(p.replicas) == [1, 2, 3] for p in replicas), "offsets not replicated 3x"
        before = {m.name: len(m.log().records) for m in members}

        cluster.kill(victim)  # mid-stream, mid-consumption
        killed_at = time.monotonic()
        survivors = [n for n in cluster.ids if n != victim]
        survivor_bootstrap = cluster.bootstrap(survivors)
        new = wait_until(lambda: (c := _coordinator(cluster, kp_group, survivors[0])) in survivors and c, 30,
                         what="a new leader of the groups' __consumer_offsets partition")
        wait_until(lambda: _find_coordinator_grpc(cluster.bootstrap([survivors[1]]), tl_group) == new, 30,
                   what="FindCoordinator to answer the new coordinator")
        stream.wait_sent(stream.count + 600, timeout=60)  # the stream goes on through the failover
        acked = stream.stop()
        assert len(acked) >= 0.9 * stream.count, f"only {len(acked)} of {stream.count} sends acknowledged: {stream.errors}"

        for m in members:
            wait_until(lambda: processed_values([m]) >= acked, 90,
                       what=f"{m.name} to process every acknowledged record after the failover "
                            f"({m.stderr_tail()})")
            assert m.alive(), m.stderr_tail()
            assert len(m.log().records) > before[m.name]
        took = time.monotonic() - killed_at
        with Admin(survivor_bootstrap) as admin:
            ends = {tp.partition: off for tp, (off, _) in admin.list_offsets(
                {TopicPartition(TOPIC, p): "latest" for p in range(PARTITIONS)}).items()}
        for group in (kp_group, tl_group):
            wait_until(lambda: _committed(survivor_bootstrap, group) == ends, 30,
                       what=f"{group}'s commits to reach the log ends {ends} on the new coordinator")
        print(f"coordinator {victim} killed; node {new} took over; everything processed {took:.1f}s later")

        # New members start exactly at the committed offsets kept by the new coordinator.
        for m in members:
            m.stop()
        late = [Member("kafka-python", node, kp_group, TOPIC, "kp-1", tmp_path),
                Member("tidelog", node, tl_group, TOPIC, "tl-1", tmp_path)]
        members += late
        with Producer(survivor_bootstrap, acks="all", linger_ms=2) as producer:
            futures = [producer.send(TOPIC, f"w{i}".encode(), partition=i % PARTITIONS) for i in range(60)]
            producer.flush(30)
            for f in futures:
                f.result(30)
        fresh = {f"w{i}" for i in range(60)}
        for m in late:
            wait_until(lambda: processed_values([m]) >= fresh, 60, what=f"{m.name} to read the new records "
                                                                         f"({m.stderr_tail()})")
            assert processed_values([m]) == fresh, f"{m.name} re-read records before the committed offsets"
    finally:
        for m in members:
            m.stop()
        if not stream._stop.is_set():
            stream.stop()
