"""Raft host + transport throughput and commit latency: 3 processes (cluster.raft.demo_node) on loopback.

    python bench/raft_bench.py                  # 1 and 100 groups x 100 B and 16 KiB batches, 10 s each
    python bench/raft_bench.py --seconds 3      # quicker
    python bench/raft_bench.py --transport grpc # the gRPC carrier between the nodes (default: tcp)

Each workload starts a fresh 3-node cluster (every node a voter of every group, real connections between
the processes, fsync per drain on the local disk), waits for every group to have a leader, then asks every
node to run a closed loop on the groups it leads (multi-group runs first spread the leaders evenly):
``--inflight`` proposals outstanding per group (1 group) or
``--inflight-multi`` per group (100 groups), each a RecordBatch of the given size, each awaited until
committed. Reports proposals/s, MB/s of batches and the commit latency (propose -> committed at the leader)
p50/p99. Not a test: prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster.raft.demo_node import DemoCluster
from cluster.raft.transport import CARRIERS, DEFAULT_CARRIER


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def leaders(c: DemoCluster) -> dict[str, int]:
    led: dict[str, int] = {}
    for n in c.ids:
        st = await c.status(n, 5.0)
        for gid, g in (st or {}).items():
            if g["role"] == "leader":
                led[gid] = n
    return led


async def balance(c: DemoCluster, led: dict[str, int], deadline: float) -> dict[str, int]:
    """Transfer group i's leadership to node ids[i % n] until it holds (bounded by ``deadline``)."""
    want = {gid: c.ids[i % len(c.ids)] for i, gid in enumerate(sorted(led))}
    while time.monotonic() < deadline:
        wrong = {gid: n for gid, n in led.items() if want[gid] != n}
        if not wrong:
            break
        for gid, n in wrong.items():
            await c.call(n, "transfer", {"group": gid, "to": want[gid]})
        await asyncio.sleep(1.0)
        led = await leaders(c)
    return led


async def run_workload(root: str, groups: int, payload: int, inflight: int, seconds: float,
                       transport: str = DEFAULT_CARRIER) -> dict:
    c = DemoCluster(root, 3, groups=groups, transport=transport)
    try:
        c.start_all()
        deadline = time.monotonic() + 60
        while True:  # every group has a leader
            led = await leaders(c)
            if len(led) == groups:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(led)}/{groups} groups have a leader")
            await asyncio.sleep(0.1)
        if groups > 1:  # spread the leaders evenly (elections favour the first node started)
            led = await balance(c, led, time.monotonic() + 30)
        req = {"seconds": seconds, "inflight": inflight, "payload": payload, "records": 1}
        t0 = time.perf_counter()
        results = await asyncio.gather(*(c.call(n, "load", req, timeout=seconds + 60) for n in c.ids))
        elapsed = time.perf_counter() - t0
        count = sum(r["count"] for r in results)
        nbytes = sum(r["bytes"] for r in results)
        lat = [x for r in results for x in r["latencies_ms"]]
        per_node = {n: len(r["groups"]) for n, r in zip(c.ids, results)}
        return {"groups": groups, "batch": results[0]["batch_bytes"], "inflight": inflight,
                "per_s": count / elapsed, "mb_s": nbytes / 1e6 / elapsed,
                "p50": percentile(lat, 0.50), "p99": percentile(lat, 0.99), "leaders": per_node}
    finally:
        c.stop_all()
        await c.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per workload")
    parser.add_argument("--inflight", type=int, default=256, help="outstanding proposals, 1-group runs")
    parser.add_argument("--inflight-multi", type=int, default=8, help="outstanding proposals per group, 100 groups")
    parser.add_argument("--groups", type=int, default=100, help="group count of the multi-raft runs")
    parser.add_argument("--dir", default=None, help="data directory (default: a temporary one)")
    parser.add_argument("--transport", choices=CARRIERS, default=DEFAULT_CARRIER,
                        help=f"inter-node carrier of the demo nodes (default {DEFAULT_CARRIER})")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}", file=sys.stderr)
    workloads = [(1, 100, args.inflight), (1, 16384, args.inflight),
                 (args.groups, 100, args.inflight_multi), (args.groups, 16384, args.inflight_multi)]
    rows = []
    for groups, payload, inflight in workloads:
        root = tempfile.mkdtemp(prefix="raft-bench-", dir=args.dir)
        try:
            print(f"  running {groups} group(s) x {payload} B ...", file=sys.stderr, flush=True)
            rows.append(asyncio.run(run_workload(root, groups, payload, inflight, args.seconds, args.transport)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'groups':>6} {'batch B':>8} {'inflight':>9} {'proposals/s':>12} {'MB/s':>8} "
          f"{'p50 ms':>8} {'p99 ms':>8}  leaders per node")
    for r in rows:
        print(f"{r['groups']:>6} {r['batch']:>8} {r['inflight']:>9} {r['per_s']:>12,.0f} {r['mb_s']:>8.1f} "
              f"{r['p50']:>8.2f} {r['p99']:>8.2f}  {r['leaders']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
