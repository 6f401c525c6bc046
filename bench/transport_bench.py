"""Inter-broker transport round trip, tcp vs grpc carrier: two processes on loopback, one RaftTransport each.

    python bench/transport_bench.py                    # both carriers, 5,000 sequential round trips each
    python bench/transport_bench.py --count 20000 --carriers tcp

Node 1 (this process) sends a Heartbeat to node 2 (a child process), whose receiver answers at once with a
HeartbeatResponse; one message in flight at a time. Reports the round trip (send -> response delivered)
p50/p99 per carrier (two hops, no Raft, no disk), then the same with a 16 KiB AppendEntries each way out.
Not a test: prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster.raft.transport import CARRIERS, RaftTransport  # noqa: E402
from cluster.raft.types import AppendEntries, Entry, EntryKind, Heartbeat, HeartbeatResponse  # noqa: E402


def _echo_node(carrier: str, port_out, stop) -> None:
    import uvloop

    async def main() -> None:
        t = RaftTransport(2, {}, carrier=carrier, rng=random.Random(2))

        def on_messages(msgs) -> None:
            t.send([HeartbeatResponse(group_id=m.group_id, from_id=2, to_id=1, term=m.term) for m in msgs])

        t.set_receiver(on_messages, lambda *_: None)
        await t.start()
        t.add_peer(1, "127.0.0.1:1")  # node 1 dials (1 < 2)
        port_out.send(t.port)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await t.close()

    uvloop.run(main())


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure(carrier: str, port: int, count: int) -> list[tuple[str, float, float]]:
    got: asyncio.Queue[float] = asyncio.Queue()
    t = RaftTransport(1, {2: f"127.0.0.1:{port}"}, carrier=carrier, rng=random.Random(1))
    t.set_receiver(lambda msgs: [got.put_nowait(time.perf_counter()) for _ in msgs], lambda *_: None)
    await t.start()
    deadline = time.monotonic() + 10
    while not t.connected(2):
        if time.monotonic() > deadline:
            raise SystemExit(f"{carrier}: no connection to the echo node")
        await asyncio.sleep(0.01)
    rows = []
    data = b"x" * 16384
    for name in ("heartbeat", "append 16 KiB"):
        lat = []
        for i in range(count + count // 10):  # the first tenth is warm-up
            if name == "heartbeat":
                m = Heartbeat(group_id="g", from_id=1, to_id=2, term=1, commit=i)
            else:
                m = AppendEntries(group_id="g", from_id=1, to_id=2, term=1, prev_log_index=i, prev_log_term=1,
                                  commit=i, entries=[Entry(1, i + 1, i + 1, EntryKind.DATA, data)])
            t0 = time.perf_counter()
            t.send([m])
            t1 = await asyncio.wait_for(got.get(), 10)
            if i >= count // 10:
                lat.append((t1 - t0) * 1e3)
        rows.append((name, percentile(lat, 0.5), percentile(lat, 0.99)))
    await t.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="round trips per carrier and message kind")
    parser.add_argument("--carriers", default=",".join(CARRIERS), help="comma list (default tcp,grpc)")
    args = parser.parse_args()
    import uvloop

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
          file=sys.stderr)
    print(f"{'carrier':>7} {'message':>14} {'rtt p50 ms':>11} {'rtt p99 ms':>11}")
    for carrier in [c.strip() for c in args.carriers.split(",") if c.strip()]:
        ctx = multiprocessing.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        stop = ctx.Event()
        child = ctx.Process(target=_echo_node, args=(carrier, send, stop), daemon=True)
        child.start()
        try:
            if not recv.poll(30):
                raise SystemExit(f"{carrier}: the echo node did not start")
            port = recv.recv()
            for name, p50, p99 in uvloop.run(measure(carrier, port, args.count)):
                print(f"{carrier:>7} {name:>14} {p50:>11.3f} {p99:>11.3f}", flush=True)
        finally:
            stop.set()
            child.join(10)
            if child.is_alive():
                child.kill()  # the child this run started, by its handle
                child.join(5)
    print(f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
