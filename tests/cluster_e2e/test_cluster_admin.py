"""Cluster metadata under failures: topics created and deleted while a broker is down converge when it
returns; the controller leader's death does not stop metadata operations; replicas move by reassignment;
leaders are balanced and a graceful shutdown hands leadership over first."""

from __future__ import annotations

import subprocess
import time

import pytest
from cluster_harness import wait_until

from tidelog.admin import Admin
from tidelog.producer import Producer
from tidelog.testing import child_env, cli_command

pytestmark = pytest.mark.slow


def _fill(bootstrap: str, topic: str, n: int) -> None:
    with Producer(bootstrap, acks="all", delivery_timeout_ms=30_000) as producer:
        for i in range(n):
            producer.send(topic, b"%s-%d" % (topic.encode(), i), key=b"%d" % i)
        producer.flush(30)


def test_topics_created_and_deleted_while_a_broker_is_down_converge(cluster):
    cluster.wait_healthy()
    admin = Admin(cluster.bootstrap())
    old_id = admin.create_topic("old", 2).topic_id
    cluster.wait_healthy(["old"])
    _fill(cluster.bootstrap(), "old", 100)
    wait_until(lambda: len(cluster.replica_dirs(3, old_id)) == 2, 10, what="node 3 hosts old")
    cluster.kill(3)
    admin.delete_topic("old")
    new_id = admin.create_topic("new", 3).topic_id
    assert all(3 in p.replicas for p in admin.describe_topic("new").partitions), "placed on the dead broker too"
    cluster.wait_healthy(["new"], nodes=[1, 2])
    _fill(cluster.bootstrap([1, 2]), "new", 300)
    assert cluster.replica_dirs(3, old_id), "node 3 was down: it still has the deleted topic"
    cluster.restart(3)
    cluster.wait_healthy(["new"], timeout=30)
    wait_until(lambda: not cluster.replica_dirs(3, old_id), 20, what="node 3 deletes the deleted topic")
    wait_until(lambda: sorted(cluster.replica_dirs(3, new_id)) == [0, 1, 2], 20, what="node 3 hosts new")

    def same_bytes():
        return all(len({cluster.log_bytes(n, new_id, p) for n in cluster.ids}) == 1 for p in range(3))

    wait_until(same_bytes, 30, what="node 3's replicas of new equal the others")
    assert "old" not in Admin(cluster.bootstrap([3])).list_topics()


def test_metadata_operations_resume_under_a_new_controller_leader(cluster):
    cluster.wait_healthy()
    controller = cluster.describe(1).controller_id
    others = [n for n in cluster.ids if n != controller]
    cluster.kill(controller)
    admin = Admin(cluster.bootstrap(others))
    started = time.monotonic()
    info = admin.create_topic("after-failover", 2)
    elapsed = time.monotonic() - started
    assert len(info.partitions) == 2 and elapsed < 15, elapsed
    new_controller = cluster.describe(others[0]).controller_id
    assert new_controller in others
    admin.alter_configs("after-failover", {"retention.ms": "3600000"})
    assert admin.describe_configs("after-failover")["retention.ms"].value == "3600000"
    cluster.restart(controller)
    cluster.wait_healthy(["after-failover"], timeout=30)
    restarted = Admin(cluster.bootstrap([controller]))
    # Its controller metadata (what wait_healthy reads) may be ahead of its broker core by the time it takes to
    # open the topic's replicas, as a Kafka broker's metadata cache is eventually consistent: wait, bounded.
    wait_until(lambda: "after-failover" in restarted.list_topics(), 15, what="the restarted broker to list the topic")
    assert restarted.describe_configs("after-failover")["retention.ms"].value == "3600000"


def test_reassignment_balance_and_graceful_shutdown(cluster):
    cluster.wait_healthy()
    admin = Admin(cluster.bootstrap())
    admin.create_topic("bal", 6)
    cluster.wait_healthy(["bal"])
    # Placement makes each broker the preferred leader of two partitions; leadership follows it.
    preferred = {p.partition: p.replicas[0] for p in admin.describe_topic("bal").partitions}
    assert sorted(list(preferred.values()).count(b) for b in cluster.ids) == [2, 2, 2]
    wait_until(lambda: cluster.leaders(1, "bal") == preferred, 30, what="leaders on their preferred replicas")
    # Move a partition with replication factor 2 onto the broker it did not use.
    topic_id = admin.create_topic("mv", 1, replication_factor=2).topic_id
    cluster.wait_healthy(["mv"])
    _fill(cluster.bootstrap(), "mv", 200)
    replicas = list(admin.describe_topic("mv").partitions[0].replicas)
    [spare] = [b for b in cluster.ids if b not in replicas]
    target = [spare, replicas[0]]  # add the spare (as the new preferred leader), drop replicas[1]
    # Through the CLI (the ClusterService.ReassignPartition RPC), waiting for the move to finish.
    done = subprocess.run(cli_command("partition", "reassign", "mv", "0", "--replicas", ",".join(map(str, target)),
                                      "--bootstrap", cluster.bootstrap(), "--timeout-s", "40"),
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"mv-0: replicas {target}"
    assert list(admin.describe_topic("mv").partitions[0].replicas) == target
    leaving = [b for b in replicas if b not in target]
    for b in leaving:
        wait_until(lambda b=b: not cluster.replica_dirs(b, topic_id), 20, what=f"broker {b} drops its replica")
    assert set(admin.describe_topic("mv").partitions[0].isr) <= set(target)
    wait_until(lambda: len({cluster.log_bytes(b, topic_id, 0) for b in target}) == 1, 20,
               what="the new replica holds the partition's bytes")
    assert b"mv-199" in cluster.log_bytes(spare, topic_id, 0)
    # Graceful stop of a broker: its leaderships move before it exits, so the others lead at once.
    victim = 1
    assert victim in cluster.leaders(2, "bal").values()
    assert cluster.stop(victim) == 0
    leaders = cluster.leaders(2, "bal")
    assert victim not in leaders.values() and all(lead in (2, 3) for lead in leaders.values()), leaders
