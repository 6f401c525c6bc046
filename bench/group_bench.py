"""Consumer-group benchmark: rebalance time and group consumption throughput, on a 3-node cluster (RF 3).

    python bench/group_bench.py [--records 300000] [--members 1,3,10] [--clients tidelog,confluent,kafka-python]
    python bench/group_bench.py --single-node     # one group node instead of a cluster

--cluster (the default) starts a replicated cluster with bench/cluster_bench.py's Cluster:
`tidelog cluster up --nodes 3 --data-dir TMP --base-port 7900 --replication-factor 3` plus
`--serve-arg=--group-config=group.initial.rebalance.delay.ms=0` and `...=group.min.session.timeout.ms=1000` (the
printed command list shows the exact line; another free base port if 7900's are taken: --base-port), and stops it
with `tidelog cluster down`, also on Ctrl-C, SIGTERM or a failure. Every broker runs a group coordinator; a
group's coordinator is the leader of its `__consumer_offsets` partition (RF 3). The topics are created with
replication factor 3 and described (every partition: 3 replicas, a leader, 3 in sync) before anything is
measured; the "described:" line shows what was found. Clients get the cluster's bootstrap lists: every broker's gRPC
address for the tidelog GroupConsumer, every Kafka listener for confluent-kafka and kafka-python.
--single-node starts one group node (tests/groups/group_node.py: broker + Kafka listener + gRPC + group
coordinator, no replication) in a child process. In both modes group.initial.rebalance.delay.ms=0, so the
figures show our own cost, not Kafka's 3 s wait.

1. Rebalance time: N members (threads of this process) start at once; time until the coordinator reports
   the group Stable with N members owning all 12 partitions of the topic (GroupAdmin.describe_group, every
   20 ms, one admin connection), for N in --members, per client (tidelog GroupConsumer over gRPC,
   confluent-kafka, kafka-python). The client library is imported before the clock starts, and
   `__consumer_offsets` (which the coordinator creates at the first group lookup: 50 partitions, RF 3) is made
   beforehand by one describe of an unknown group, its leaders awaited, so the first figure does not pay for it.
2. Throughput: --records records of 100 bytes (acks=all) on a 6-partition topic, consumed by a 3-member group,
   each member its own process, behind a start barrier, so that the figure is that of a real 3-member group
   (with group.initial.rebalance.delay.ms=0 the first member to join would otherwise own all 6 partitions
   until the others' joins are noticed, about one 1 s heartbeat, and read most of a small topic alone). The
   members subscribe and join; on every assignment before go they hold their partitions: confluent-kafka
   assigns and pauses them in on_assign, kafka-python pauses them in its ConsumerRebalanceListener, and both
   keep polling (heartbeats and rebalances go on, nothing is fetched); tidelog's GroupConsumer has no pause(),
   so its on_assign blocks until go, before poll() fetches anything, while its background task heartbeats (a
   rebalance it notices makes on_assign raise, poll() returns empty and the next poll() rejoins). Each member
   reports every assignment on stdout. The bench sends "go" (a line on the members' stdin) once the
   coordinator reports the group Stable with 3 members owning 2 partitions each, all 6 once
   (GroupAdmin.describe_group every 50 ms), and each member holds the partitions the coordinator gave it;
   then the members resume and consume. records/s = records seen / (last record seen - go). Each line
   shows that span, the generation at go, how long the barrier took (from starting the member processes; not
   in the figure) and each member's records (share of all, first-last record in s after go): each should be
   about 1/3. The line is flagged "REBALANCED AFTER GO" if the group's generation at the end differs from
   the one at go or a member got an assignment after go, "RECORDS BEFORE GO" if a member was handed records
   while held, and with the number of duplicates if more than --records were seen.

A client that fails shows "error" in its cell and the reason under the table (exit status 1); the other
clients still run.
--data-dir DIR keeps the brokers' logs and the members' stderr (their group events) in DIR.
Progress goes to stderr; the tables, the machine line and the load average to stdout. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "groups"))

SESSION_MS = 10_000
NODES = 3
REPLICATION_FACTOR = 3
REBALANCE_TOPIC, REBALANCE_PARTITIONS = "rebalance", 12
THROUGHPUT_TOPIC, THROUGHPUT_PARTITIONS = "throughput", 6
# Passed to every broker's `tidelog serve` (cluster mode); the single node gets the same through its flags.
GROUP_CONFIGS = {"group.initial.rebalance.delay.ms": "0", "group.min.session.timeout.ms": "1000"}


def log(text: str, end: str = "\n") -> None:
    print(text, file=sys.stderr, end=end, flush=True)


@dataclass(slots=True)
class Target:
    """Where the clients go: gRPC and Kafka bootstrap strings (one address, or a comma-separated list)."""

    grpc: str
    kafka: str


# ----------------------------------------------------------------------------------------- members

def preload(client: str) -> None:
    """Import the client's library now, so that the first timed rebalance does not include it."""
    if client == "tidelog":
        import tidelog.group_consumer  # noqa: F401
    elif client == "confluent":
        import confluent_kafka  # noqa: F401
    elif client == "kafka-python":
        import kafka  # noqa: F401
    else:
        raise ValueError(f"unknown client {client!r} (tidelog, confluent, kafka-python)")


class Barrier:
    """The throughput members' start barrier: partitions are held (paused) on assignment until `go` is set;
    every assignment is reported through `report` (called on the thread that got the assignment)."""

    def __init__(self, report) -> None:
        self.go = threading.Event()
        self.stop = threading.Event()
        self.report = report
        self.after_go = 0  # assignments received after go: a rebalance during the measurement
        self.released = False  # the member may fetch: resumed after go (set on the polling thread)


class _Rejoin(Exception):
    """Raised from the tidelog on_assign while waiting for go when the group rebalances: poll() then returns
    before fetching anything, and the next poll() rejoins."""


def make_member(client: str, node: Target, group: str, topic: str, name: str, barrier: Barrier | None = None):
    """-> (poll_once(), close(), resume()) for one member. With a barrier, assigned partitions are held until
    barrier.go; resume() (called on the polling thread after go) releases them."""

    def assigned(partitions: list[int], generation: int | None) -> bool:
        """Report an assignment; -> True if the partitions must be held (go not yet given)."""
        held = not barrier.go.is_set()
        if not held:
            barrier.after_go += 1
        barrier.report({"assigned": sorted(partitions), "generation": generation, "held": held})
        import logging

        logging.getLogger("group_bench.member").info("%s: assigned %s, generation %s, %s", name, sorted(partitions),
                                                     generation, "held until go" if held else "after go")
        return held

    if client == "tidelog":
        from tidelog.group_consumer import GroupConsumer

        c = None

        def on_assign(partitions) -> None:
            # GroupConsumer has no pause(): block here, before poll() fetches anything, until go. Heartbeats run
            # on the client's loop thread meanwhile; a rebalance they notice (c._rejoin) must be served by
            # poll(), so leave through _Rejoin, which poll() raises before fetching.
            if assigned([tp.partition for tp in partitions], c.generation_id):
                while not barrier.go.wait(0.02):
                    if c._rejoin.is_set() or barrier.stop.is_set():
                        raise _Rejoin()
            barrier.released = True  # poll() goes on to fetch

        c = GroupConsumer(node.grpc, group, [topic], client_id=name, session_timeout_ms=SESSION_MS,
                          heartbeat_interval_ms=1000, on_assign=on_assign if barrier else None)

        def poll() -> int:
            try:
                return len(c.poll(0.1))
            except _Rejoin:
                return 0

        return poll, c.close, lambda: None
    if client == "confluent":
        from confluent_kafka import Consumer

        c = Consumer({"bootstrap.servers": node.kafka, "group.id": group, "client.id": name,
                      "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_MS,
                      "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 100})

        def on_assign(consumer, partitions) -> None:
            consumer.assign(partitions)  # what confluent-kafka does after the callback; pause needs it first
            if assigned([tp.partition for tp in partitions], None):
                consumer.pause(partitions)

        if barrier:
            c.subscribe([topic], on_assign=on_assign)
        else:
            c.subscribe([topic])

        def poll() -> int:
            messages = c.consume(1000, 0.1)
            for m in messages:
                if m.error() is not None and m.error().fatal():
                    raise RuntimeError(f"confluent-kafka: {m.error()}")
            return len([m for m in messages if m.error() is None])

        return poll, c.close, lambda: c.resume(c.assignment())
    if client == "kafka-python":
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        c = KafkaConsumer(bootstrap_servers=node.kafka.split(","), group_id=group, client_id=name,
                          auto_offset_reset="earliest", session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000,
                          fetch_max_wait_ms=100)

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked) -> None:
                pass

            def on_partitions_assigned(self, partitions) -> None:
                if assigned([tp.partition for tp in partitions], None):
                    c.pause(*partitions)

        c.subscribe([topic], listener=Listener() if barrier else None)
        return ((lambda: sum(len(v) for v in c.poll(timeout_ms=100).values())), c.close,
                lambda: c.resume(*c.assignment()))
    raise ValueError(client)


def stable(admin, group: str, members: int, wanted: set) -> bool:
    """The group is Stable with `members` members that together own exactly `wanted`, each partition once."""
    try:
        d = admin.describe_group(group)
    except Exception:  # not yet known to its coordinator, coordinator moving: ask again
        return False
    if d.state != "Stable" or len(d.members) != members:
        return False
    owned = Counter((tp.topic, tp.partition) for m in d.members for tp in m.assignment)
    return set(owned) == wanted and all(n == 1 for n in owned.values())


def rebalance_time(client: str, node: Target, members: int, topic: str, partitions: int) -> float:
    from tidelog.group_consumer import GroupAdmin

    preload(client)
    group = f"rb-{client}-{members}-{time.monotonic_ns()}"
    stop = threading.Event()
    errors: list[BaseException] = []
    closers = []

    def run(i: int) -> None:
        try:
            poll, close, _ = make_member(client, node, group, topic, f"{client}-{i}")
            closers.append(close)
            while not stop.is_set():
                poll()
        except BaseException as exc:
            errors.append(exc)

    wanted = {(topic, p) for p in range(partitions)}
    took = None
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(members)]
    finished = False
    try:
        with GroupAdmin(node.grpc, request_timeout_ms=5000) as admin:
            started = time.monotonic()
            for t in threads:
                t.start()
            while time.monotonic() - started < 120 and not errors:
                if stable(admin, group, members, wanted):
                    took = time.monotonic() - started
                    break
                time.sleep(0.02)
        finished = True
    finally:  # also on Ctrl-C: the members leave before the cluster goes down (without waiting long)
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(30 if finished else 2)
        for close in closers:
            try:
                close()
            except Exception:  # a member that failed may not close cleanly; its error is reported below
                pass
    if errors:
        raise errors[0]
    if took is None:
        raise RuntimeError(f"{members} members never settled within 120 s")
    return took


# ----------------------------------------------------------------------------------------- throughput

def member_process(args) -> int:
    """Child mode: join, hold the assigned partitions until the line "go" arrives on stdin, then consume until
    stdin closes. Stdout, JSON lines: every assignment {"assigned": [partitions], "generation", "held"}, and
    progress {"count", "first", "last", "early", "after_go"} every 0.2 s (records seen, wall-clock times of the
    first and last, records returned before go (should be 0), assignments received after go (should be 0))."""
    import logging

    # Warnings, and the clients' group events (joins, assignments) with a timestamp, on stderr: kept with
    # --data-dir (member-*.stderr), shown when a member fails.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("kafka.coordinator", "tidelog.group_consumer", "group_bench.member"):
        logging.getLogger(name).setLevel(logging.INFO)
    node = Target(grpc=args.grpc, kafka=args.kafka)
    out_lock = threading.Lock()

    def emit(obj: dict) -> None:  # kafka-python calls its listener on its own thread
        with out_lock:
            print(json.dumps(obj), flush=True)

    barrier = Barrier(emit)
    done = barrier.stop

    def read_stdin() -> None:
        if sys.stdin.readline().strip() == "go":
            barrier.go.set()
        sys.stdin.read()
        done.set()

    poll, close, resume = make_member(args.member, node, args.group, args.topic, args.name, barrier)
    threading.Thread(target=read_stdin, daemon=True).start()
    count = early = 0
    first = last = None
    resumed = False
    reported, reported_count = 0.0, 0

    def state() -> dict:
        return {"count": count, "first": first, "last": last, "early": early, "after_go": barrier.after_go}

    while not done.is_set():
        if not resumed and barrier.go.is_set():
            resume()
            resumed = barrier.released = True
        n = poll()
        now = time.time()
        if n:
            count += n
            if not barrier.released:  # (tidelog: released inside poll(), when on_assign lets it go on)
                early += n
            first = first or now
            last = now
        if count != reported_count and (now - reported > 0.2 or not n):
            reported, reported_count = now, count
            emit(state())
    emit(state())
    close()
    return 0


def throughput(client: str, node: Target, topic: str, partitions: int, expected: int,
               work_dir: Path) -> tuple[float, int, str]:
    """3 member processes join and hold their partitions; once the coordinator reports the group Stable with
    the 3 owning 2 partitions each (as each member reports too), "go" to all; stop them once together they have
    seen `expected` records (or after 300 s, or once every member has exited). -> (records/s from go to the
    last record, records, details)."""
    from tidelog.group_consumer import GroupAdmin

    members = 3
    group = f"tp-{client}-{time.monotonic_ns()}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs: list[subprocess.Popen] = []
    err_paths = [work_dir / f"member-{client}-{i}.stderr" for i in range(members)]
    latest: list[dict] = [{"count": 0, "first": None, "last": None, "early": 0, "after_go": 0}
                          for _ in range(members)]
    assigned: list[dict | None] = [None] * members

    def read(i: int) -> None:
        for line in procs[i].stdout:
            msg = json.loads(line)
            if "assigned" in msg:
                assigned[i] = msg
            else:
                latest[i] = msg

    wanted = {(topic, p) for p in range(partitions)}
    per_member = partitions // members

    def settled(admin) -> tuple[bool, object]:
        """Coordinator: Stable, 3 members, `per_member` partitions each, all partitions once; every member
        process holds the partitions the coordinator gave it (and, where the client tells, its generation)."""
        try:
            d = admin.describe_group(group)
        except Exception as exc:
            return False, exc
        if d.state != "Stable" or len(d.members) != members:
            return False, d
        owned = Counter((tp.topic, tp.partition) for m in d.members for tp in m.assignment)
        if set(owned) != wanted or any(n != 1 for n in owned.values()) or \
                any(len(m.assignment) != per_member for m in d.members):
            return False, d
        if any(a is None or not a["held"] for a in assigned):
            return False, d
        by_coordinator = sorted(sorted(tp.partition for tp in m.assignment) for m in d.members)
        if sorted(a["assigned"] for a in assigned) != by_coordinator or \
                any(a["generation"] not in (None, d.generation_id) for a in assigned):
            return False, d
        return True, d

    def shown(d) -> str:
        if isinstance(d, Exception):
            return f"{type(d).__name__}: {d}"
        return (f"state {d.state}, generation {d.generation_id}, members " +
                ", ".join(f"{m.client_id}: {sorted(tp.partition for tp in m.assignment)}" for m in d.members))

    go_time = None
    try:
        for i in range(members):
            with open(err_paths[i], "wb") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--member", client, "--grpc", node.grpc, "--kafka", node.kafka,
                     "--group", group, "--topic", topic, "--name", f"{client}-{i}"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT))
        readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(members)]
        for r in readers:
            r.start()
        with GroupAdmin(node.grpc, request_timeout_ms=5000) as admin:
            spawned = time.monotonic()
            while True:
                ok, d = settled(admin)
                if ok:
                    break
                if time.monotonic() - spawned > 60 or any(p.poll() is not None for p in procs):
                    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode is not None]
                    raise RuntimeError(
                        f"start barrier: no Stable group of {members} x {per_member} partitions held by the "
                        f"members after {time.monotonic() - spawned:.0f}s: {shown(d)}; members report {assigned}"
                        + "".join(f"; member {i} exit {rc}: {tail(err_paths[i])}" for i, rc in failed))
                time.sleep(0.05)
            barrier_s = time.monotonic() - spawned
            gen_at_go = d.generation_id
            at_go = shown(d)
            log(f"  barrier: {at_go} ({barrier_s:.1f}s after the members were started); go")
            go_time = time.time()
            for proc in procs:
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            started = time.perf_counter()
            deadline = time.monotonic() + 300
            from bench.grpc_bench import progress

            last_shown = 0.0
            while time.monotonic() < deadline:
                seen = sum(x["count"] for x in latest)
                if time.monotonic() - last_shown > 0.5:
                    last_shown = time.monotonic()
                    progress(f"{client} group consume", seen, expected, started)
                if seen >= expected or all(p.poll() is not None for p in procs):
                    break
                time.sleep(0.05)
            progress(f"{client} group consume", sum(x["count"] for x in latest), expected, started)
            log("")
            try:  # before the members leave (which is a rebalance of its own)
                end = admin.describe_group(group)
                gen_at_end, at_end = end.generation_id, shown(end)
            except Exception as exc:
                gen_at_end, at_end = None, f"{type(exc).__name__}: {exc}"
        for proc in procs:
            proc.stdin.close()
        for proc, r in zip(procs, readers):
            proc.wait(60)
            r.join(10)
    finally:  # normally they have ended (stdin closed); on an interrupt or a timeout, no grace
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode]
    total = sum(x["count"] for x in latest)
    if failed or total < expected:
        tails = "; ".join(f"member {i} exit {rc}: {tail(err_paths[i])}" for i, rc in failed)
        raise RuntimeError(f"{total} of {expected} records consumed" + (f"; {tails}" if tails else "")
                           + ("" if failed else f"; member stderr: {tail(err_paths[0])}"))
    span = max(x["last"] for x in latest if x["last"]) - go_time
    shares = " / ".join(
        f"{x['count']} ({100 * x['count'] / total:.1f}%, {x['first'] - go_time:.2f}-{x['last'] - go_time:.2f})"
        if x["first"] else "0" for x in latest)
    flags = []
    if gen_at_end != gen_at_go or any(x["after_go"] for x in latest):
        flags.append(f"REBALANCED AFTER GO: generation {gen_at_go} at go, {gen_at_end} at the end ({at_end}); "
                     f"assignments after go per member {[x['after_go'] for x in latest]}")
    if any(x["early"] for x in latest):
        flags.append(f"RECORDS BEFORE GO per member {[x['early'] for x in latest]}")
    if total > expected:
        flags.append(f"{total - expected} duplicates")
    log(f"  per member: {shares}" + "".join(f"; {f}" for f in flags))
    detail = (f"{span:.2f}s from go to the last record; generation {gen_at_go}, barrier {barrier_s:.1f}s; "
              f"per member: records (share, first-last s after go) {shares}")
    return total / span, total, detail + "".join(f"; FLAG {f}" for f in flags)


def tail(path: Path, chars: int = 600) -> str:
    try:
        text = path.read_bytes()[-chars:].decode(errors="replace").strip()
    except OSError:
        return ""
    return " | ".join(text.splitlines()[-4:])


def produce(node: Target, topic: str, partitions: int, records: int) -> float:
    """`records` x 100 B round-robin over the partitions, acks=all. -> seconds."""
    from bench.grpc_bench import progress
    from tidelog.producer import Producer

    value = b"x" * 100
    started = time.perf_counter()
    step = max(1, records // 20)
    with Producer(node.grpc, acks="all", linger_ms=5, batch_size=256 * 1024) as producer:
        for i in range(records):
            producer.send(topic, value, partition=i % partitions)
            if i % step == 0:
                progress("produce", i, records, started)
        producer.flush(300)
    progress("produce", records, records, started)
    log("")
    return time.perf_counter() - started


# ----------------------------------------------------------------------------------------- targets

def create_topic(node: Target, topic: str, partitions: int, replication_factor: int) -> None:
    from tidelog.admin import Admin

    with Admin(node.grpc) as admin:
        admin.create_topic(topic, partitions, replication_factor=replication_factor)


def check_replication(node: Target, topic: str, partitions: int, replication_factor: int,
                      timeout: float = 60.0) -> str:
    """Describe `topic` until every partition has `replication_factor` replicas, a leader and a full ISR;
    -> a summary. SystemExit if it does not happen within `timeout`."""
    from tidelog.admin import Admin

    deadline = time.monotonic() + timeout
    with Admin(node.grpc) as admin:
        while True:
            try:
                d = admin.describe_topic(topic)
                parts = d.partitions
            except Exception as exc:
                parts, why = [], str(exc)
            else:
                why = ""
            rfs = Counter(len(p.replicas) for p in parts)
            leaders = Counter(p.leader_id for p in parts)
            ok = len(parts) == partitions and set(rfs) == {replication_factor} and -1 not in leaders and \
                all(p.leader_id >= 0 and len(p.isr) == replication_factor for p in parts)
            if ok:
                return (f"{topic}: {len(parts)} partitions, replicas per partition {dict(rfs)}, ISR full, "
                        f"leaders by node {dict(sorted(leaders.items()))}")
            if time.monotonic() > deadline:
                shown = [(p.partition, p.replicas, p.isr, p.leader_id) for p in parts]
                raise SystemExit(f"{topic}: not {partitions} partitions x RF {replication_factor} with leaders "
                                 f"after {timeout:g}s: (partition, replicas, isr, leader) {shown} {why}")
            time.sleep(0.2)


def pick_base_port(wanted: int, nodes: int) -> int:
    from bench.cluster_bench import free_base_port
    from tidelog import launcher as L

    ports = [p for i in range(1, nodes + 1) for p in L.node_ports(wanted, i).values()]
    if not any(L.port_in_use("127.0.0.1", p) for p in ports):
        return wanted
    base = free_base_port(nodes)
    log(f"a port of base {wanted} is taken: using base port {base}")
    return base


def cluster_with_group_configs(data_dir: Path, base_port: int, timeout: float):
    """bench/cluster_bench.py's Cluster on `base_port`, every broker started with GROUP_CONFIGS."""
    from bench.cluster_bench import Cluster

    class GroupCluster(Cluster):
        def _cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
            if args and args[0] == "up":
                args += tuple(f"--serve-arg=--group-config={k}={v}" for k, v in GROUP_CONFIGS.items())
            return super()._cli(*args, timeout=timeout)

    cluster = GroupCluster(data_dir, NODES, REPLICATION_FACTOR, timeout)
    cluster.base_port = pick_base_port(base_port, NODES)
    return cluster


# ----------------------------------------------------------------------------------------- the run

def measure(node: Target, clients: list[str], members: list[int], records: int, work_dir: Path,
            replication_factor: int, check_rf: bool) -> dict:
    out: dict = {"rebalance": {}, "throughput": {}, "errors": [], "rf": []}
    create_topic(node, REBALANCE_TOPIC, REBALANCE_PARTITIONS, replication_factor)
    if check_rf:
        out["rf"].append(check_replication(node, REBALANCE_TOPIC, REBALANCE_PARTITIONS, replication_factor))
        log(out["rf"][-1])
    for client in clients:
        row = out["rebalance"][client] = {}
        for n in members:
            log(f"rebalance: {client}, {n} member(s)")
            try:
                row[n] = rebalance_time(client, node, n, REBALANCE_TOPIC, REBALANCE_PARTITIONS)
                log(f"  {row[n]:.3f} s")
            except Exception as exc:
                row[n] = None
                out["errors"].append(f"rebalance {client} N={n}: {type(exc).__name__}: {exc}")
                log(f"  error: {out['errors'][-1]}")

    create_topic(node, THROUGHPUT_TOPIC, THROUGHPUT_PARTITIONS, replication_factor)
    if check_rf:
        out["rf"].append(check_replication(node, THROUGHPUT_TOPIC, THROUGHPUT_PARTITIONS, replication_factor))
        log(out["rf"][-1])
    log(f"producing {records:,} records of 100 B (acks=all) to {THROUGHPUT_TOPIC}")
    out["produce_s"] = produce(node, THROUGHPUT_TOPIC, THROUGHPUT_PARTITIONS, records)
    for client in clients:
        log(f"throughput: {client}, 3-member group")
        try:
            out["throughput"][client] = throughput(client, node, THROUGHPUT_TOPIC, THROUGHPUT_PARTITIONS, records, work_dir)
        except Exception as exc:
            out["throughput"][client] = None
            out["errors"].append(f"throughput {client}: {type(exc).__name__}: {exc}")
            log(f"  error: {out['errors'][-1]}")
    return out


def warm_up_coordinators(node: Target, clustered: bool, timeout: float = 60.0) -> str:
    """Create `__consumer_offsets` before the clock runs: the coordinator makes it (50 partitions, RF 3 on a
    cluster) at the first FindCoordinator, which would otherwise land in the first measured rebalance. On a
    cluster, wait until each of its partitions has a leader and a full ISR (DescribeCluster). -> a summary."""
    from cluster.groups import OFFSETS_TOPIC
    from tidelog.admin import Admin
    from tidelog.group_consumer import GroupAdmin

    log(f"warming up: creating {OFFSETS_TOPIC} (a describe of a group that does not exist)")
    started = time.monotonic()
    with GroupAdmin(node.grpc, request_timeout_ms=int(timeout * 1000)) as admin:
        try:
            admin.describe_group("group-bench-warm-up")
        except Exception as exc:  # the answer does not matter, the lookup does
            log(f"  warm-up describe_group: {type(exc).__name__}: {exc}")
    if not clustered:
        return f"{OFFSETS_TOPIC}: ready after {time.monotonic() - started:.1f}s"
    deadline = started + timeout
    why = ""
    with Admin(node.grpc) as admin:
        while True:
            try:
                parts = [p for p in admin.describe_cluster().partitions if p.topic == OFFSETS_TOPIC]
            except Exception as exc:
                parts, why = [], f"{type(exc).__name__}: {exc}"
            if parts and all(p.leader_id >= 0 and len(p.isr) == len(p.replicas) for p in parts):
                rfs = Counter(len(p.replicas) for p in parts)
                leaders = Counter(p.leader_id for p in parts)
                return (f"{OFFSETS_TOPIC}: {len(parts)} partitions, replicas per partition {dict(rfs)}, ISR full, "
                        f"leaders (= coordinators) by node {dict(sorted(leaders.items()))}, ready "
                        f"{time.monotonic() - started:.1f}s after the first lookup")
            if time.monotonic() > deadline:
                missing = sum(1 for p in parts if p.leader_id < 0)
                return (f"{OFFSETS_TOPIC}: after {timeout:g}s {len(parts)} partitions, {missing} without a leader "
                        f"{why}")
            time.sleep(0.2)


def report(results: dict, clients: list[str], members: list[int], records: int, header: list[str],
           info: dict) -> None:
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs, {info.get('mem_gib')} GiB, kernel {info['kernel']}, "
          f"Python {info['python']}, confluent-kafka {info['confluent_kafka']}, kafka-python "
          f"{info.get('kafka_python')}; load average {info['loadavg_start']} at the start, {info['loadavg_end']} "
          f"at the end")
    for line in header:
        print(line)
    print(f"\nrebalance time (s): N members start at once -> group Stable, all {REBALANCE_PARTITIONS} partitions "
          f"owned")
    print(f"{'client':<14}" + "".join(f"{'N=' + str(n):>10}" for n in members))
    for client in clients:
        row = results["rebalance"].get(client, {})
        print(f"{client:<14}" + "".join(f"{row[n]:>10.3f}" if row.get(n) is not None else f"{'error':>10}"
                                        for n in members))
    print(f"\nproduced {records} records of 100 B in {results['produce_s']:.1f}s")
    print(f"3-member group on {THROUGHPUT_PARTITIONS} partitions, each member a process, {THROUGHPUT_PARTITIONS // 3} "
          f"partitions each from go (start barrier) to the last record:")
    for client in clients:
        got = results["throughput"].get(client)
        if got is None:
            print(f"{client:<14}{'error':>12}")
        else:
            print(f"{client:<14}{got[0]:>12,.0f} records/s  ({got[1]} records consumed in {got[2]})")
    if results["errors"]:
        print("\nerrors:")
        for e in results["errors"]:
            print(f"  {e}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cluster", dest="single_node", action="store_false",
                      help=f"a {NODES}-node cluster, RF {REPLICATION_FACTOR} (the default)")
    mode.add_argument("--single-node", action="store_true", help="one group node (tests/groups/group_node.py)")
    p.set_defaults(single_node=False)
    p.add_argument("--records", type=int, default=300_000)
    p.add_argument("--members", default="1,3,10")
    p.add_argument("--clients", default="tidelog,confluent,kafka-python")
    p.add_argument("--base-port", type=int, default=7900, help="cluster port layout base (default 7900; another "
                   "free one if taken)")
    p.add_argument("--startup-timeout", type=float, default=120.0, help="cluster up timeout, s (default 120)")
    p.add_argument("--data-dir", type=Path, help="keep the cluster's (or node's) data and broker logs here "
                   "(default: a temporary directory, removed afterwards)")
    p.add_argument("--member", help=argparse.SUPPRESS)
    p.add_argument("--grpc", help=argparse.SUPPRESS)
    p.add_argument("--kafka", help=argparse.SUPPRESS)
    p.add_argument("--group", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.member:
        return member_process(args)

    clients = args.clients.split(",")
    members = [int(n) for n in args.members.split(",")]
    for client in clients:
        try:
            preload(client)
        except ValueError as exc:
            p.error(str(exc))
        except ImportError as exc:
            p.error(f"client {client}: {exc}")

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)  # so that the cluster / node is stopped on the way out

    from bench.cluster_bench import COMMANDS, machine

    info = machine()
    info.pop("nats_server", None)
    try:
        import kafka

        info["kafka_python"] = kafka.__version__
    except ImportError:
        info["kafka_python"] = None
    log(f"machine: {info}")
    with tempfile.TemporaryDirectory(prefix="group-bench-") as tmp:
        work_dir = Path(tmp)
        if args.data_dir:  # the members' stderr too
            work_dir = data_dir = args.data_dir.absolute()
            data_dir.mkdir(parents=True, exist_ok=True)
        else:
            data_dir = work_dir
        if args.single_node:
            from groups_harness import GroupNode

            group_node = GroupNode(data_dir / "data", initial_delay_ms=0, min_session_ms=1000)
            log("starting one group node")
            group_node.start()
            try:
                node = Target(group_node.grpc, group_node.kafka)
                offsets = warm_up_coordinators(node, clustered=False)
                log(offsets)
                results = measure(node, clients, members, args.records, work_dir, 0, check_rf=False)
            finally:
                group_node.stop()
            header = [(f"tidelog: one group node (tests/groups/group_node.py), no replication; "
                       f"group.initial.rebalance.delay.ms=0; {args.records:,} x 100 B"),
                      "described: " + offsets]
        else:
            with cluster_with_group_configs(data_dir / "cluster", args.base_port, args.startup_timeout) as cluster:
                node = Target(cluster.grpc_bootstrap, cluster.kafka_bootstrap)
                offsets = warm_up_coordinators(node, clustered=True)
                log(offsets)
                results = measure(node, clients, members, args.records, work_dir, REPLICATION_FACTOR,
                                  check_rf=True)
            configs = ", ".join(f"{k}={v}" for k, v in GROUP_CONFIGS.items())
            header = [(f"tidelog: {NODES}-node cluster (tidelog cluster up, base port {cluster.base_port}), topics "
                       f"created with replication factor {REPLICATION_FACTOR}; {configs}; {args.records:,} x 100 B"),
                      "described: " + "; ".join(results["rf"] + [offsets]),
                      "commands: " + "; ".join(COMMANDS)]
    report(results, clients, members, args.records, header, info)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the cluster (or node) and the members were stopped on the way
        log("\ninterrupted")
        sys.exit(130)
