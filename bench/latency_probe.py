"""Produce-latency probe of a replicated cluster: open-loop 100 B records, send -> ack, per client and linger.

    python bench/latency_probe.py                        # 3 nodes, RF 3, acks=all, 5,000 msg/s, 10 s per run
    python bench/latency_probe.py --linger default,1,0   # client default linger, then 1 ms, then 0 ms
    python bench/latency_probe.py --clients grpc --seconds 5 --repeat 3
    python bench/latency_probe.py --raft-transport grpc  # brokers talk over gRPC instead of framed TCP

One cluster (`tidelog cluster up`, as bench/cluster_bench.py starts it) serves every run; each run produces to
a fresh topic of `--partitions` partitions. For each client (`grpc`: tidelog.Producer; `kafka`: confluent-kafka)
and each linger ("default" leaves the client's own default: tidelog.Producer linger_ms=5, librdkafka 2.x
linger.ms=5), the records go out at `--rate` msg/s for `--seconds`; the first second is dropped as warm-up.
Prints p50/p90/p99/p99.9/max of the send -> ack latency (ms) per run, and for the gRPC client also the
request latency (request written -> answered, i.e. without the client's linger). `--py-spy SECONDS` records
a py-spy profile of the leader-heavy broker during the first run (if py-spy is installed). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cluster_bench import Cluster, grpc_create, kafka_create, log, paced_grpc, paced_kafka  # noqa: E402
from bench.grpc_bench import percentile  # noqa: E402

QS = (0.5, 0.9, 0.99, 0.999)


def summary(values: list[float]) -> dict:
    values = [v for v in values if v == v]
    out = {f"p{str(q * 100).rstrip('0').rstrip('.')}": percentile(values, q) * 1000 for q in QS}
    out["max"] = max(values) * 1000 if values else float("nan")
    out["n"] = len(values)
    return out


def grpc_run(cluster: Cluster, topic: str, rate: int, seconds: float, linger: float | None, partitions: int) -> dict:
    grpc_create(cluster.grpc_bootstrap, topic, partitions)
    cluster.replicas_of(topic)
    latencies, elapsed, requests = paced_grpc(cluster.grpc_bootstrap, topic, rate, int(rate * seconds), linger)
    out = summary(latencies[rate:] if len(latencies) > 2 * rate else latencies)
    out["rate"] = len(latencies) / elapsed
    out["request"] = summary(requests[len(requests) // max(1, int(seconds)):])
    return out


def kafka_run(cluster: Cluster, topic: str, rate: int, seconds: float, linger: float | None, partitions: int,
              rf: int) -> dict:
    kafka_create(cluster.kafka_bootstrap, topic, partitions, rf)
    cluster.replicas_of(topic)
    latencies, elapsed = paced_kafka(cluster.kafka_bootstrap, topic, rate, int(rate * seconds), linger)
    out = summary(latencies[rate:] if len(latencies) > 2 * rate else latencies)
    out["rate"] = len(latencies) / elapsed
    return out


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        log("py-spy is not installed; no profile")
        return None
    return subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                             "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(pids: list[int]) -> list[float]:
    """utime + stime of each process (its threads included), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)
        except OSError:
            out.append(float("nan"))
    return out


def fmt(r: dict) -> str:
    return (f"p50 {r['p50']:7.2f}  p90 {r['p90']:7.2f}  p99 {r['p99']:7.2f}  p99.9 {r['p99.9']:7.2f}  "
            f"max {r['max']:7.2f}  (n={r['n']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--replication-factor", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="grpc,kafka")
    parser.add_argument("--linger", default="1", help='comma list of ms values or "default" (default: 1)')
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (client, linger)")
    parser.add_argument("--py-spy", type=float, default=0.0, metavar="SECONDS",
                        help="profile broker 1 with py-spy during the first run (raw output in --data-dir)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--raft-transport", choices=("tcp", "grpc"), default=None,
                        help="inter-broker carrier of the nodes (default: tidelog serve's, tcp)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    lingers = [None if x.strip() == "default" else float(x) for x in args.linger.split(",")]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tidelog-latency-probe-"))
    rows = []
    try:
        serve_args = (f"--raft-transport={args.raft_transport}",) if args.raft_transport else ()
        with Cluster(data_dir / "cluster", args.nodes, args.replication_factor, 120.0, serve_args) as cluster:
            n = 0
            for rep in range(args.repeat):
                for client in clients:
                    for linger in lingers:
                        topic = f"lat-{client}-{n}"
                        n += 1
                        spy = None
                        if args.py_spy and n == 1:
                            spy = py_spy(cluster.cluster.nodes[0].pid, args.py_spy, data_dir / "py-spy.txt")
                        label = "default" if linger is None else f"{linger:g}"
                        log(f"{client} linger={label} run {rep + 1}/{args.repeat}: {args.rate}/s for {args.seconds:g}s")
                        pids = [node.pid for node in cluster.cluster.nodes]
                        cpu0, own0, wall0 = cpu_seconds(pids), os.times(), time.perf_counter()
                        if client == "grpc":
                            r = grpc_run(cluster, topic, args.rate, args.seconds, linger, args.partitions)
                        else:
                            r = kafka_run(cluster, topic, args.rate, args.seconds, linger, args.partitions,
                                          args.replication_factor)
                        wall = time.perf_counter() - wall0
                        own = os.times()
                        r["cpu_brokers"] = [round((b - a) / wall, 2) for a, b in zip(cpu0, cpu_seconds(pids))]
                        r["cpu_client"] = round((own.user + own.system - own0.user - own0.system) / wall, 2)
                        if spy is not None:
                            spy.wait(args.py_spy + 30)
                        r.update(client=client, linger=label, run=rep + 1)
                        rows.append(r)
                        line = (f"{client:5} linger {label:>7}: {fmt(r)}  rate {r['rate']:,.0f}/s  CPU brokers "
                                f"{r['cpu_brokers']} client {r['cpu_client']}")
                        if "request" in r:
                            line += f"\n{'':5}   request only: {fmt(r['request'])}"
                        log(line)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"{args.nodes} nodes, RF {args.replication_factor}, {args.partitions} partitions, acks=all, "
          f"{args.rate:,} msg/s x 100 B, {args.seconds:g} s per run (first second dropped); latency ms")
    for r in rows:
        print(f"{r['client']:5} linger {r['linger']:>7} run {r['run']}: {fmt(r)}  CPU {r['cpu_brokers']} "
              f"client {r['cpu_client']}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
