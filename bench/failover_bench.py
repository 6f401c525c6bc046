"""Failover time of a partition leader: kill -9 it, measure until a new leader acknowledges acks=all.

    python bench/failover_bench.py                 # 3 brokers, 10 kills, default timeouts
    python bench/failover_bench.py --trials 20

Three `tidelog serve` children on loopback (default Raft timing: tick 50 ms, election 20 ticks, i.e. an
election timeout randomized in [1 s, 2 s), heartbeat 2 ticks, PreVote and CheckQuorum on). One topic with one
partition, replication factor 3. Each trial: find the leader, SIGKILL it, then every 20 ms try an acks=all
produce (200 ms timeout) on each surviving broker directly; the failover time is from the kill to the first
acknowledged produce. The killed broker is restarted and the cluster is left to settle (its replica catches
up, the preferred leader may take over again) before the next trial. Not a test: prints figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from proto.rpc import tidelog_v1_pb2 as pb  # noqa: E402
from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc  # noqa: E402
from storage.record_batch import RecordInput, build_batch  # noqa: E402
from tidelog import Admin  # noqa: E402
from tidelog.testing import ServeProcess  # noqa: E402

HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    from tidelog._ports import free_ports as pick

    return pick(n, HOST)


def describe(port: int):
    with grpc.insecure_channel(f"{HOST}:{port}") as ch:
        return pb_grpc.ClusterServiceStub(ch).DescribeCluster(pb.DescribeClusterRequest(), timeout=2)


def leader_of(port: int, topic: str) -> int:
    for p in describe(port).partitions:
        if p.topic == topic:
            return p.leader_id
    return -1


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"failover_bench: {what} not reached within {timeout:g}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds between trials (default 8)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tidelog-failover-"))
    ids = [1, 2, 3]
    ports = free_ports(9)
    grpc_ports = {n: ports[3 * (n - 1)] for n in ids}
    raft_ports = {n: ports[3 * (n - 1) + 2] for n in ids}
    peers = ",".join(f"{n}={HOST}:{raft_ports[n]}" for n in ids)
    procs = {n: ServeProcess(root / f"node-{n}", port=grpc_ports[n], extra_args=[
        "--node-id", str(n), "--peers", peers, "--no-kafka"]) for n in ids}
    times: list[float] = []
    try:
        for p in procs.values():
            p.start()
        wait(lambda: all(len([b for b in describe(grpc_ports[n]).brokers if b.alive]) == 3 for n in ids), 30,
             "a registered cluster")
        with Admin(",".join(f"{HOST}:{grpc_ports[n]}" for n in ids)) as admin:
            admin.create_topic("failover", 1)
        wait(lambda: leader_of(grpc_ports[1], "failover") > 0, 30, "a leader")
        batch = build_batch([RecordInput(None, b"x", 0, [])])
        request = pb.ProduceRequest(acks=-1, timeout_ms=200, partitions=[
            pb.PartitionRecords(topic="failover", partition=0, records=batch)])
        for trial in range(args.trials):
            leader = leader_of(grpc_ports[ids[0]] if procs[ids[0]].proc.poll() is None else grpc_ports[ids[1]],
                               "failover")
            survivors = [n for n in ids if n != leader]
            channels = {n: grpc.insecure_channel(f"{HOST}:{grpc_ports[n]}") for n in survivors}
            stubs = {n: pb_grpc.LogServiceStub(ch) for n, ch in channels.items()}
            for stub in stubs.values():  # connect before the kill
                try:
                    stub.Produce(pb.ProduceRequest(), timeout=2)
                except grpc.RpcError:
                    pass
            procs[leader].kill()
            killed = time.monotonic()
            elapsed = None
            while elapsed is None and time.monotonic() - killed < 30:
                for n, stub in stubs.items():
                    try:
                        r = stub.Produce(request, timeout=0.5).partitions[0]
                    except grpc.RpcError:
                        continue
                    if r.error_code == 0:
                        elapsed = time.monotonic() - killed
                        break
                time.sleep(0.02)
            for ch in channels.values():
                ch.close()
            if elapsed is None:
                print(f"trial {trial + 1}: no new leader within 30 s", file=sys.stderr)
            else:
                times.append(elapsed)
                print(f"trial {trial + 1}: killed leader {leader}, writes accepted again after {elapsed:.2f} s",
                      file=sys.stderr)
            procs[leader].start()
            time.sleep(args.settle)
    finally:
        for p in procs.values():
            p.stop(10)
        shutil.rmtree(root, ignore_errors=True)
    if times:
        q = statistics.quantiles(times, n=10) if len(times) >= 2 else times
        print(f"failover (kill -9 of the partition leader -> first acks=all ack), {len(times)} trials, "
              f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}:")
        print(f"  median {statistics.median(times):.2f} s, p90 {q[-1]:.2f} s, min {min(times):.2f} s, "
              f"max {max(times):.2f} s")
    return 0 if len(times) == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
