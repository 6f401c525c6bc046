"""A replicated tidelog cluster against NATS JetStream R3, side by side, on this machine.

    python bench/cluster_bench.py                 # 3 nodes, RF 3, acks=all: 500k x 100 B, 200k x 1 KiB, 5k/s
    python bench/cluster_bench.py --quick         # a fifth of the records, 5 s latency runs, NATS 1 run
    python bench/cluster_bench.py --nodes 1 --replication-factor 1 --no-nats   # whatever runs today

The script starts the cluster with `tidelog cluster up --nodes N` (a fresh data directory, a free port range)
and stops it with `tidelog cluster down`. On it, for each client:
- **gRPC** (`tidelog.Producer` / `tidelog.Consumer`, bootstrap = every broker's gRPC address) and
- **Kafka** (confluent-kafka / librdkafka against the brokers' Kafka ports, if the listener answers):
  produce N records of 100 B and of 1 KiB with acks=all to a topic of `--partitions` partitions with the
  cluster's default replication factor (checked through DescribeCluster), timed until the last ack; replay
  them from offset 0 (timed from the consumer's creation to the last record); then produce 100 B records
  open loop at `--rate` msg/s for `--lat-seconds` and report each record's send -> ack latency, p50/p99
  (the first second dropped as warm-up).
Then, with the tidelog cluster stopped, it runs `/work/shared/bench/peers/nats_jetstream.sh` (3 nats-servers
on loopback, a stream with replicas=3, file storage, its Go load generator) with the same record counts and
rate, and prints one table with the ratios. Figures are medians over `--runs` (tidelog) and `--nats-runs`.
Everything runs on one machine: brokers, servers and clients share its cores (`lscpu` is printed). Progress
goes to stderr; the table (and `--json-out FILE`) to stdout. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.grpc_bench import percentile, progress  # noqa: E402
from bench.kafka_bench import produce as kafka_produce  # noqa: E402
from tidelog import launcher as L  # noqa: E402
from tidelog.testing import child_env, cli_command  # noqa: E402

PEERS_DIR = Path(os.environ.get("PEERS_DIR", "/work/shared/bench/peers"))
COMMANDS: list[str] = []  # every external command run, for the report


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def machine() -> dict:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    lscpu = run("lscpu")
    model = re.search(r"Model name:\s*(.+)", lscpu)
    info = {"cpu": model.group(1).strip() if model else platform.processor(), "cpus": os.cpu_count(),
            "kernel": run("uname", "-r"), "python": platform.python_version()}
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        import confluent_kafka

        info["confluent_kafka"] = f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"
    except ImportError:
        info["confluent_kafka"] = None
    info["nats_server"] = run("nats-server", "--version") or None
    info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


# --------------------------------------------------------------------------------------------------------
# the tidelog cluster, through its CLI


def free_base_port(nodes: int) -> int:
    candidates = [7100] + random.Random().sample(range(20000, 60000 - 10 * nodes, 10), 50)
    for base in candidates:
        ports = [p for i in range(1, nodes + 1) for p in L.node_ports(base, i).values()]
        if not any(L.port_in_use("127.0.0.1", p) for p in ports):
            return base
    raise SystemExit("no free port range for the cluster")


class Cluster:
    """`tidelog cluster up` on entry, `tidelog cluster down` on exit (then SIGKILL by verified PID if needed)."""

    def __init__(self, data_dir: Path, nodes: int, replication_factor: int, timeout: float,
                 serve_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.serve_args = tuple(serve_args)  # extra `tidelog serve` flags of every node
        self.nodes = nodes
        self.replication_factor = replication_factor
        self.timeout = timeout
        self.base_port = free_base_port(nodes)
        self.cluster: L.ClusterFile | None = None

    def _cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        command = cli_command("cluster", *args)
        COMMANDS.append("tidelog " + shlex.join(command[3:]))
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=ROOT)

    def __enter__(self) -> "Cluster":
        log(f"starting a {self.nodes}-node cluster (base port {self.base_port}, data {self.data_dir})")
        result = self._cli("up", "--nodes", str(self.nodes), "--data-dir", str(self.data_dir), "--base-port",
                           str(self.base_port), "--replication-factor", str(self.replication_factor),
                           "--timeout", str(self.timeout), *(f"--serve-arg={a}" for a in self.serve_args),
                           timeout=self.timeout + 60)
        sys.stderr.write(result.stderr)
        if result.returncode != 0:
            self.__exit__()
            raise SystemExit(f"tidelog cluster up failed: {result.stderr.strip().splitlines()[-1:]}")
        log(result.stdout.strip())
        self.cluster = L.load_cluster(self.data_dir)
        return self

    @property
    def grpc_bootstrap(self) -> str:
        return self.cluster.grpc_endpoints

    @property
    def kafka_bootstrap(self) -> str:
        return self.cluster.kafka_bootstrap

    def replicas_of(self, topic: str, timeout: float = 30.0) -> list[int]:
        """Replication factor of each partition of `topic`, once every partition has a leader."""
        deadline = time.monotonic() + timeout
        while True:
            status = L.Launcher(self.data_dir).status(timeout=5.0)
            parts = [p for p in status["partitions"] if p["topic"] == topic]
            if parts and all(p["leader_id"] >= 0 for p in parts) or time.monotonic() > deadline:
                return [len(p["replicas"]) for p in parts]
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if not (self.data_dir / "cluster.json").exists():
            return
        result = self._cli("down", "--data-dir", str(self.data_dir), "--timeout", "30", timeout=120)
        if result.returncode != 0:
            log(f"tidelog cluster down failed: {result.stderr.strip()}; killing by PID")
        cluster = L.load_cluster(self.data_dir)
        for node in cluster.nodes if cluster else []:
            if node.pid and L.owns(node.pid, node):
                os.kill(node.pid, 9)


# --------------------------------------------------------------------------------------------------------
# gRPC client


def grpc_create(bootstrap: str, topic: str, partitions: int) -> None:
    from tidelog import Admin

    with Admin(bootstrap) as admin:
        admin.create_topic(topic, partitions)


def grpc_throughput(cluster: Cluster, topic: str, count: int, size: int, args) -> dict:
    from tidelog import Consumer, Producer, TopicPartition

    grpc_create(cluster.grpc_bootstrap, topic, args.partitions)
    rf = cluster.replicas_of(topic)
    value = os.urandom(size)
    producer = Producer(cluster.grpc_bootstrap, acks="all", linger_ms=args.linger_ms, batch_size=args.batch_size,
                        max_request_size=4 * 1024 * 1024, buffer_memory=256 * 1024 * 1024)
    send = producer.send
    started = time.perf_counter()
    step = max(1, count // 20)
    for i in range(count):
        send(topic, value)
        if i % step == 0:
            progress("grpc produce", i, count, started)
    producer.flush(600)
    produce_s = time.perf_counter() - started
    progress("grpc produce", count, count, started)
    log("")
    producer.close()

    got = 0
    started = time.perf_counter()
    with Consumer(cluster.grpc_bootstrap, auto_offset_reset="earliest", max_partition_fetch_bytes=1024 * 1024,
                  fetch_max_wait_ms=args.replay_max_wait_ms) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(args.partitions)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + 600
        while got < count and time.monotonic() < deadline:
            got += len(consumer.poll(1.0, max_records=1_000_000))
            progress("grpc replay", got, count, started)
    replay_s = time.perf_counter() - started
    log("")
    if got != count:
        raise SystemExit(f"gRPC replay read {got} of {count} records")
    return {"produce_msgs": count / produce_s, "produce_mb": count * size / 1e6 / produce_s,
            "replay_msgs": count / replay_s, "replay_mb": count * size / 1e6 / replay_s, "rf": rf}


def paced_grpc(bootstrap: str, topic: str, rate: int, count: int, linger_ms: float | None
               ) -> tuple[list[float], float, list[float]]:
    """`count` records of 100 B sent open loop at `rate`/s with tidelog.Producer, acks=all.
    -> (send -> ack seconds per record, NaN if never acked; elapsed seconds; request latencies)."""
    from tidelog import Producer

    latencies = [float("nan")] * count
    value = os.urandom(100)
    kwargs = {} if linger_ms is None else {"linger_ms": linger_ms}
    with Producer(bootstrap, acks="all", **kwargs) as producer:
        producer.partitions_for(topic)  # metadata before the clock starts
        started = time.perf_counter()
        for i in range(count):
            due = started + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            sent = time.perf_counter()

            def acked(future, i=i, sent=sent):
                if future.exception() is None:
                    latencies[i] = time.perf_counter() - sent

            producer.send(topic, value).add_done_callback(acked)
            if i % rate == 0:
                progress("grpc paced", i, count, started)
        producer.flush(60)
        elapsed = time.perf_counter() - started
        requests = [r for r, _age in list(producer.batch_latencies)]
    log("")
    return latencies, elapsed, requests


def paced_kafka(bootstrap: str, topic: str, rate: int, count: int, linger_ms: float | None
                ) -> tuple[list[float], float]:
    """`count` records of 100 B sent open loop at `rate`/s with confluent-kafka, acks=all.
    -> (send -> delivery report seconds per record, NaN if never delivered; elapsed seconds)."""
    from confluent_kafka import Producer

    sent_at = [0.0] * count
    latencies = [float("nan")] * count
    conf = {"bootstrap.servers": bootstrap, "acks": "all"}
    if linger_ms is not None:
        conf["linger.ms"] = linger_ms
    p = Producer(conf)
    padding = os.urandom(92)

    def on_delivery(err, msg):
        if err is None:
            (seq,) = struct.unpack_from(">q", msg.value())
            latencies[seq] = time.perf_counter() - sent_at[seq]

    p.list_topics(topic, timeout=10)  # metadata before the clock starts
    started = time.perf_counter()
    for i in range(count):
        due = started + i / rate
        while True:  # serve delivery reports while waiting, so their latency is not our sleep
            now = time.perf_counter()
            if now >= due:
                break
            p.poll(min(0.0005, due - now))
        sent_at[i] = time.perf_counter()
        p.produce(topic, struct.pack(">q", i) + padding, on_delivery=on_delivery)
        p.poll(0)
        if i % rate == 0:
            progress("kafka paced", i, count, started)
    p.flush(60)
    elapsed = time.perf_counter() - started
    log("")
    return latencies, elapsed


def _latency_figures(latencies: list[float], elapsed: float, rate: int) -> dict:
    count = len(latencies)
    measured = [v for v in (latencies[rate:] if count > 2 * rate else latencies) if v == v]  # drop warm-up
    return {"achieved_rate": count / elapsed, "acked": sum(1 for v in latencies if v == v),
            "p50_ms": percentile(measured, 0.5) * 1000, "p99_ms": percentile(measured, 0.99) * 1000}


def grpc_latency(cluster: Cluster, topic: str, rate: int, seconds: float, args) -> dict:
    grpc_create(cluster.grpc_bootstrap, topic, args.partitions)
    cluster.replicas_of(topic)
    latencies, elapsed, _ = paced_grpc(cluster.grpc_bootstrap, topic, rate, int(rate * seconds), args.lat_linger_ms)
    return _latency_figures(latencies, elapsed, rate)


# --------------------------------------------------------------------------------------------------------
# Kafka client (confluent-kafka / librdkafka)


def kafka_available(bootstrap: str) -> str | None:
    """None if a Kafka client can list the cluster's metadata, else why not."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return "confluent-kafka is not installed"
    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except Exception as exc:  # KafkaException: listener down or not answering
        return f"the Kafka listener does not answer ({exc})"
    return None if metadata.brokers else "no brokers in Kafka Metadata"


def kafka_create(bootstrap: str, topic: str, partitions: int, replication_factor: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, replication_factor)]).values():
        future.result(30)


def kafka_throughput(cluster: Cluster, topic: str, count: int, size: int, args) -> dict:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    kafka_create(cluster.kafka_bootstrap, topic, args.partitions, args.replication_factor)
    rf = cluster.replicas_of(topic)
    produce_s = kafka_produce(cluster.kafka_bootstrap, topic, count, size, args)  # acks=all, linger.ms

    c = Consumer({"bootstrap.servers": cluster.kafka_bootstrap, "group.id": f"bench-{topic}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": args.replay_max_wait_ms})
    started = time.perf_counter()
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(args.partitions)])
    got = 0
    deadline = started + 600
    while got < count and time.perf_counter() < deadline:
        for m in c.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None:
                got += 1
        progress("kafka replay", got, count, started)
    replay_s = time.perf_counter() - started
    log("")
    c.close()
    if got != count:
        raise SystemExit(f"Kafka replay read {got} of {count} records")
    return {"produce_msgs": count / produce_s, "produce_mb": count * size / 1e6 / produce_s,
            "replay_msgs": count / replay_s, "replay_mb": count * size / 1e6 / replay_s, "rf": rf}


def kafka_latency(cluster: Cluster, topic: str, rate: int, seconds: float, args) -> dict:
    kafka_create(cluster.kafka_bootstrap, topic, args.partitions, args.replication_factor)
    cluster.replicas_of(topic)
    latencies, elapsed = paced_kafka(cluster.kafka_bootstrap, topic, rate, int(rate * seconds), args.lat_linger_ms)
    return _latency_figures(latencies, elapsed, rate)


# --------------------------------------------------------------------------------------------------------
# NATS JetStream R3 (the peers' script)


def run_nats(args, counts: dict[int, int]) -> dict:
    script = PEERS_DIR / "nats_jetstream.sh"
    if not script.exists():
        return {"error": f"{script} not found"}
    if shutil.which("nats-server") is None or shutil.which("go") is None:
        return {"error": "nats-server or go is not installed"}
    env = dict(os.environ, SETUPS=args.nats_setups, RUNS=str(args.nats_runs), TESTS="pub lat",
               LAT_RATES=str(args.rate), LAT_DUR=f"{int(args.lat_seconds)}s", R3_MSGS_100=str(counts[100]),
               R3_MSGS_1K=str(counts[1024]))
    knobs = " ".join(f"{k}={shlex.quote(env[k])}" for k in ("SETUPS", "RUNS", "TESTS", "LAT_RATES", "LAT_DUR",
                                                            "R3_MSGS_100", "R3_MSGS_1K"))
    COMMANDS.append(f"{knobs} bash {script}")
    log(f"NATS JetStream: {knobs} bash {script}")
    lines: list[str] = []
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 3600
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("RESULT"):
                fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
                shown = fields.get("msgs_per_s") or f"p50 {fields.get('p50_us')} us p99 {fields.get('p99_us')} us"
                log(f"  nats {fields.get('label')} {fields.get('mode')} {fields.get('consumer', '')} "
                    f"{fields.get('size')} B: {shown}")
            if time.monotonic() > deadline:
                break
        proc.wait(60)
    finally:
        if proc.poll() is None:  # the script ends its own servers on SIGTERM (its EXIT/TERM trap)
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    if proc.returncode != 0:
        return {"error": f"nats_jetstream.sh exited with {proc.returncode}: {' | '.join(lines[-3:])}"}
    return parse_nats(lines, args.nats_setups.split()[0])


def parse_nats(lines: list[str], label: str) -> dict:
    rows = [dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv) for line in lines
            if line.startswith("RESULT")]
    rows = [r for r in rows if r.get("label") == label]
    out: dict = {"label": label}
    for size in (100, 1024):
        pubs = [float(r["msgs_per_s"]) for r in rows if r["mode"] == "pub" and r["size"] == str(size)]
        subs = [float(r["msgs_per_s"]) for r in rows if r["mode"] == "sub" and r.get("consumer") == "ordered"
                and r["size"] == str(size)]
        out[size] = {"produce_msgs": median(pubs), "produce_mb": median(pubs) * size / 1e6,
                     "replay_msgs": median(subs), "replay_mb": median(subs) * size / 1e6, "runs": len(pubs)}
    lat = [r for r in rows if r["mode"] == "lat"]
    out["latency"] = {"p50_ms": median([float(r["p50_us"]) / 1000 for r in lat]),
                      "p99_ms": median([float(r["p99_us"]) / 1000 for r in lat]),
                      "achieved_rate": median([float(r["achieved_rate"]) for r in lat]), "runs": len(lat)}
    return out


# --------------------------------------------------------------------------------------------------------
# report


def table(results: dict, counts: dict[int, int], args) -> str:
    columns = [c for c in ("grpc", "kafka") if c in results and "error" not in results[c]]
    nats = results.get("nats", {})
    has_nats = "error" not in nats and bool(nats)
    names = {"grpc": "tidelog gRPC", "kafka": "tidelog Kafka"}
    header = ["measure"] + [names[c] for c in columns] + (["NATS JS R3"] if has_nats else []) + \
        ([f"{names[c]} / NATS" for c in columns] if has_nats else [])
    rows = []

    def add(label: str, values: list[float], nats_value: float | None, fmt: str, higher_is_better: bool) -> None:
        cells = [label] + [format(v, fmt) if v == v else "-" for v in values]
        if has_nats:
            cells.append(format(nats_value, fmt) if nats_value == nats_value else "-")
            for v in values:
                cells.append(f"{v / nats_value:.2f}x" if nats_value and v == v and nats_value == nats_value else "-")
        rows.append(cells)

    for size in (100, 1024):
        label = "100 B" if size == 100 else "1 KiB"
        tp = [results[c][size] for c in columns]
        nv = nats.get(size, {}) if has_nats else {}
        add(f"produce {label} acks=all, msg/s", [t["produce_msgs"] for t in tp], nv.get("produce_msgs"), ",.0f",
            True)
        add(f"produce {label}, MB/s", [t["produce_mb"] for t in tp], nv.get("produce_mb"), ",.1f", True)
        add(f"replay {label} from offset 0, msg/s", [t["replay_msgs"] for t in tp], nv.get("replay_msgs"), ",.0f",
            True)
    lat = [results[c]["latency"] for c in columns]
    nl = nats.get("latency", {}) if has_nats else {}
    add(f"ack latency p50 @ {args.rate:,}/s x 100 B, ms", [x["p50_ms"] for x in lat], nl.get("p50_ms"), ".2f", False)
    add(f"ack latency p99 @ {args.rate:,}/s x 100 B, ms", [x["p99_ms"] for x in lat], nl.get("p99_ms"), ".2f", False)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the records, 5 s latency runs")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--replication-factor", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--msgs-100", type=int, help="records of 100 B (default 500,000; --quick 100,000)")
    parser.add_argument("--msgs-1k", type=int, help="records of 1 KiB (default 200,000; --quick 40,000)")
    parser.add_argument("--rate", type=int, default=5000, help="open-loop latency rate, msg/s (default 5,000)")
    parser.add_argument("--lat-seconds", type=float, help="latency run length (default 10; --quick 5)")
    parser.add_argument("--linger-ms", type=float, default=5.0, help="producers' linger for throughput (5)")
    parser.add_argument("--lat-linger-ms", type=float, default=1.0, help="producers' linger for latency (1)")
    parser.add_argument("--batch-size", type=int, default=256 * 1024, help="gRPC producer batch size")
    parser.add_argument("--replay-max-wait-ms", type=int, default=100,
                        help="consumers' fetch long-poll (gRPC fetch_max_wait_ms, librdkafka fetch.wait.max.ms; "
                             "default 100: with 500, the clients' default, the end of a replay waits on drained "
                             "partitions)")
    parser.add_argument("--runs", type=int, default=1, help="tidelog runs per measurement (median)")
    parser.add_argument("--nats-runs", type=int, help="NATS runs (default 3; --quick 1)")
    parser.add_argument("--nats-setups", default="r3", help='peers script SETUPS ("r3", "r3g1": GOMAXPROCS=1)')
    parser.add_argument("--no-grpc", action="store_true")
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument("--no-nats", action="store_true")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory, removed afterwards")
    parser.add_argument("--json-out", type=Path, help="also write every figure as JSON here")
    args = parser.parse_args(argv)
    counts = {100: args.msgs_100 or (100_000 if args.quick else 500_000),
              1024: args.msgs_1k or (40_000 if args.quick else 200_000)}
    args.lat_seconds = args.lat_seconds or (5.0 if args.quick else 10.0)
    args.nats_runs = args.nats_runs or (1 if args.quick else 3)

    info = machine()
    log(f"machine: {info}")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tidelog-cluster-bench-"))
    results: dict = {"machine": info, "settings": {**{k: (str(v) if isinstance(v, Path) else v)
                                                      for k, v in vars(args).items()}, "counts": counts}}
    started = time.monotonic()
    try:
        if not (args.no_grpc and args.no_kafka):
            with Cluster(data_dir / "cluster", args.nodes, args.replication_factor, args.startup_timeout) as cluster:
                clients = [c for c in ("grpc", "kafka") if not getattr(args, f"no_{c}")]
                if "kafka" in clients:
                    why = kafka_available(cluster.kafka_bootstrap)
                    if why:
                        log(f"skipping the Kafka client: {why}")
                        results["kafka"] = {"error": why}
                        clients.remove("kafka")
                for client in clients:
                    throughput = grpc_throughput if client == "grpc" else kafka_throughput
                    latency = grpc_latency if client == "grpc" else kafka_latency
                    out: dict = {}
                    for size in (100, 1024):
                        runs = []
                        for run in range(args.runs):
                            log(f"{client}: {counts[size]:,} x {size} B, run {run + 1}/{args.runs}")
                            runs.append(throughput(cluster, f"{client}-{size}-{run}", counts[size], size, args))
                        out[size] = {k: median([r[k] for r in runs]) for k in runs[0] if k != "rf"}
                        out[size]["rf"] = runs[0]["rf"]
                    lat_runs = []
                    for run in range(args.runs):
                        log(f"{client}: open loop {args.rate:,} msg/s x 100 B for {args.lat_seconds:g}s, run "
                            f"{run + 1}/{args.runs}")
                        lat_runs.append(latency(cluster, f"{client}-lat-{run}", args.rate, args.lat_seconds, args))
                    out["latency"] = {k: median([r[k] for r in lat_runs]) for k in lat_runs[0]}
                    results[client] = out
        if not args.no_nats:
            results["nats"] = run_nats(args, counts)
            if "error" in results["nats"]:
                log(f"NATS: {results['nats']['error']}")
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    results["commands"] = COMMANDS
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    print(f"machine: {info['cpu']}, {info['cpus']} CPUs, {info.get('mem_gib')} GiB, kernel {info['kernel']}, "
          f"Python {info['python']}, confluent-kafka {info['confluent_kafka']}, {info['nats_server']}; "
          f"load average {info['loadavg_start']} at the start, {info['loadavg_end']} at the end")
    rfs = {c: results[c][100]["rf"] for c in ("grpc", "kafka") if c in results and "error" not in results[c]}
    print(f"tidelog: {args.nodes} nodes, {args.partitions} partitions, replication factor per partition {rfs}, "
          f"acks=all; linger {args.linger_ms:g} ms (throughput), {args.lat_linger_ms:g} ms (latency); "
          f"{counts[100]:,} x 100 B, {counts[1024]:,} x 1 KiB; median of {args.runs} run(s)")
    if "nats" in results and "error" not in results["nats"]:
        print(f"NATS JetStream: setup {results['nats']['label']}, median of {args.nats_runs} run(s)")
    print(table(results, counts, args))
    print("commands:")
    for command in COMMANDS:
        print(f"  {command}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
