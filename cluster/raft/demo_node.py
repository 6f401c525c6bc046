"""A stand-alone Raft node for tests and benchmarks: one RaftHost + RaftTransport + N partition-log groups.

    python -m cluster.raft.demo_node --node-id 1 --peers 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 \\
        --data-dir /tmp/n1 [--groups 1] [--tick-ms 50] [--transport tcp|grpc]

Listens on its own address from --peers. Prints ``READY node=N port=P pid=PID`` on stdout when serving.
Internal Call methods (RaftTransport.call), all JSON in and out:
  propose  {"group", "batch_hex"}        -> {"ok", "index", "last_index", "term"} | {"ok": false, "error", "leader"}
  status   {}                            -> {group: {"role", "leader", "term", "commit", "first", "last"}}
  digest   {"group"}                     -> {"sha256", "first", "last", "commit", "values"?}
  load     {"seconds", "inflight", "payload", "records"} -> {"count", "bytes", "latencies_ms", "groups"}
  transfer {"group", "to"}               -> {"ok"}
SIGTERM/SIGINT close everything cleanly (logs flushed); exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import sys
import time

from storage.config import LogConfig
from storage.record_batch import RecordInput, build_batch, iter_records

from .host import GroupListener, RaftGroup, RaftHost
from .partition_log import PartitionRaftLog
from .transport import CARRIERS, DEFAULT_CARRIER, RaftTransport
from .types import NotLeaderError, ProposalDroppedError, ProposalError, Role

log = logging.getLogger("tidelog.raft.demo")


def parse_peers(text: str) -> dict[int, str]:
    peers: dict[int, str] = {}
    for item in text.split(","):
        nid, sep, addr = item.strip().partition("=")
        if not sep or not nid.isdigit() or int(nid) <= 0 or ":" not in addr:
            raise argparse.ArgumentTypeError(f"bad peer {item!r}: expected ID=HOST:PORT")
        peers[int(nid)] = addr
    if not peers:
        raise argparse.ArgumentTypeError("no peers")
    return peers


def group_ids(n: int) -> list[str]:
    return [f"g{i}" for i in range(n)]


class Node:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.node_id: int = args.node_id
        self.peers: dict[int, str] = args.peers
        self.logs: dict[str, PartitionRaftLog] = {}
        self.groups: dict[str, RaftGroup] = {}
        rng = random.Random(args.seed * 1000 + self.node_id)
        self.transport = RaftTransport(self.node_id, self.peers, listen=self.peers[self.node_id], rng=rng,
                                       carrier=args.transport)
        self.host = RaftHost(self.node_id, self.transport, state_dir=os.path.join(args.data_dir, "raft"),
                             tick_ms=args.tick_ms, election_ticks=args.election_ticks,
                             heartbeat_ticks=args.heartbeat_ticks, rng=rng, io_threads=args.io_threads)

    async def start(self) -> None:
        t = self.transport
        for name in ("propose", "status", "digest", "load", "transfer"):
            t.register_handler(name, getattr(self, f"_h_{name}"))
        await t.start()
        await self.host.start()
        voters = sorted(self.peers)
        config = LogConfig(segment_bytes=self.args.segment_bytes)
        for gid in group_ids(self.args.groups):
            lg = PartitionRaftLog.open(os.path.join(self.args.data_dir, gid), config)
            self.logs[gid] = lg
            self.groups[gid] = self.host.add_group(gid, lg, voters=voters, listener=GroupListener(),
                                                   skip_committed=True)

    async def close(self) -> None:
        await self.host.close()
        await self.transport.close()
        for lg in self.logs.values():
            lg.close()

    # -- handlers ---------------------------------------------------------------------------------

    async def _h_propose(self, payload: bytes) -> bytes:
        req = json.loads(payload)
        g = self.groups[req["group"]]
        batch = bytes.fromhex(req["batch_hex"])
        count = req.get("count", 1)
        try:
            p = g.propose(batch, count)
            await g.wait_committed(p, req.get("timeout", 10.0))
        except NotLeaderError as exc:
            return json.dumps({"ok": False, "error": "not_leader", "leader": exc.leader_id}).encode()
        except (ProposalError, TimeoutError) as exc:
            return json.dumps({"ok": False, "error": type(exc).__name__, "leader": g.leader_id}).encode()
        return json.dumps({"ok": True, "index": p.index, "last_index": p.last_index, "term": p.term}).encode()

    async def _h_status(self, payload: bytes) -> bytes:
        out = {}
        for gid, g in self.groups.items():
            n = g.node
            out[gid] = {"role": n.role.value, "leader": n.leader_id, "term": n.term, "commit": n.commit_index,
                        "first": n.first_index, "last": n.last_index, "failed": repr(g.failed) if g.failed else None}
        if json.loads(payload or b"{}").get("host"):
            h = self.host
            out["_host"] = {"drains": h.drains, "drain_s": h.drain_seconds, "persist_rounds": h.persist_rounds,
                            "persist_s": h.persist_seconds, "files": h.persisted_files, "thread_s": h.sync_thread_seconds}
        return json.dumps(out).encode()

    async def _h_digest(self, payload: bytes) -> bytes:
        req = json.loads(payload)
        g = self.groups[req["group"]]
        lg = self.logs[req["group"]]
        upto = req.get("upto", lg.last_index())
        data = lg.stored_bytes(upto=upto)
        out = {"sha256": hashlib.sha256(data).hexdigest(), "first": lg.first_index(), "last": lg.last_index(),
               "commit": g.commit_index, "upto": upto}
        if req.get("values"):
            out["values"] = [r.value.decode() for r in iter_records(data) if r.value is not None]
        return json.dumps(out).encode()

    async def _h_transfer(self, payload: bytes) -> bytes:
        req = json.loads(payload)
        try:
            self.groups[req["group"]].transfer_leadership(req["to"])
        except (NotLeaderError, ValueError) as exc:
            return json.dumps({"ok": False, "error": str(exc)}).encode()
        return json.dumps({"ok": True}).encode()

    async def _h_load(self, payload: bytes) -> bytes:
        """Closed-loop load on every group this node leads: ``inflight`` proposals per group."""
        req = json.loads(payload)
        seconds = float(req["seconds"])
        records = int(req.get("records", 1))
        value = os.urandom(int(req["payload"]) // max(1, records))
        batch = build_batch([RecordInput(b"k%d" % i, value, 1) for i in range(records)])
        led = [g for g in self.groups.values() if g.node.role is Role.LEADER]
        latencies: list[float] = []
        count = 0
        deadline = time.perf_counter() + seconds

        async def worker(g: RaftGroup) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    p = g.propose(batch, records)
                    await g.wait_committed(p, 30)
                except ProposalDroppedError:
                    await asyncio.sleep(0.001)
                    continue
                except (NotLeaderError, ProposalError):
                    return
                latencies.append(time.perf_counter() - t0)
                count += 1

        await asyncio.gather(*(worker(g) for g in led for _ in range(int(req["inflight"]))))
        rng = random.Random(0)
        sample = latencies if len(latencies) <= 50_000 else rng.sample(latencies, 50_000)
        return json.dumps({"count": count, "bytes": count * len(batch), "batch_bytes": len(batch),
                           "latencies_ms": [round(x * 1000, 3) for x in sample],
                           "groups": [g.group_id for g in led]}).encode()


# ---------------------------------------------------------------------------------------------
# Driving a cluster of demo nodes from another process (tests, bench/raft_bench.py)
# ---------------------------------------------------------------------------------------------


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    from tidelog._ports import free_ports as pick

    return pick(n, host)


class DemoCluster:
    """N demo-node processes on 127.0.0.1 with free ports. Only ever signals the PIDs it started."""

    def __init__(self, root: str, n: int = 3, *, groups: int = 1, extra_args: tuple[str, ...] = (),
                 startup_timeout: float = 30.0, transport: str = DEFAULT_CARRIER) -> None:
        self.root = root
        self.ids = list(range(1, n + 1))
        ports = free_ports(n)
        self.addresses = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports)}
        self.groups = groups
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.procs: dict[int, object] = {}
        self.transport = transport
        self.client = RaftTransport(10_000, self.addresses, carrier=transport)  # never started: calls only

    def data_dir(self, nid: int) -> str:
        return os.path.join(self.root, f"node{nid}")

    def start(self, nid: int) -> int:
        import subprocess

        peers = ",".join(f"{i}={a}" for i, a in self.addresses.items())
        args = [sys.executable, "-m", "cluster.raft.demo_node", "--node-id", str(nid), "--peers", peers,
                "--data-dir", self.data_dir(nid), "--groups", str(self.groups), "--transport", self.transport,
                *self.extra_args]
        os.makedirs(self.data_dir(nid), exist_ok=True)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(self.root, f"node{nid}.stderr"), "ab") as err:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=repo)
        self.procs[nid] = proc
        deadline = time.monotonic() + self.startup_timeout
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=0.2):
                    line = proc.stdout.readline().decode()
                    if line.startswith("READY"):
                        return proc.pid
                    if not line and proc.poll() is not None:
                        break
                elif proc.poll() is not None:
                    break
        finally:
            sel.close()
        self.kill(nid)
        raise RuntimeError(f"node {nid} did not start: {self.stderr(nid)[-2000:]}")

    def start_all(self) -> None:
        for nid in self.ids:
            self.start(nid)

    def stderr(self, nid: int) -> str:
        try:
            with open(os.path.join(self.root, f"node{nid}.stderr"), "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def pid(self, nid: int) -> int | None:
        proc = self.procs.get(nid)
        return proc.pid if proc is not None and proc.poll() is None else None  # type: ignore[attr-defined]

    def kill(self, nid: int) -> None:
        """kill -9 the node's process (by its PID) and reap it."""
        proc = self.procs.pop(nid, None)
        if proc is not None and proc.poll() is None:  # type: ignore[attr-defined]
            os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        if proc is not None:
            proc.wait(10)  # type: ignore[attr-defined]
            proc.stdout.close()  # type: ignore[attr-defined]

    def stop(self, nid: int, timeout: float = 15.0) -> int | None:
        """SIGTERM (clean close), SIGKILL if it does not exit in time. Returns the exit status."""
        import subprocess

        proc = self.procs.pop(nid, None)
        if proc is None:
            return None
        if proc.poll() is None:  # type: ignore[attr-defined]
            os.kill(proc.pid, signal.SIGTERM)  # type: ignore[attr-defined]
            try:
                proc.wait(timeout)  # type: ignore[attr-defined]
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
                proc.wait(10)  # type: ignore[attr-defined]
        proc.stdout.close()  # type: ignore[attr-defined]
        return proc.returncode  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for nid in list(self.procs):
            self.stop(nid)

    async def call(self, nid: int, method: str, req: dict, timeout: float = 10.0) -> dict:
        return json.loads(await self.client.call(nid, method, json.dumps(req).encode(), timeout))

    async def status(self, nid: int, timeout: float = 2.0) -> dict | None:
        try:
            return await self.call(nid, "status", {}, timeout)
        except (ConnectionError, TimeoutError, OSError):
            return None

    async def leaders(self, group: str, nodes: list[int] | None = None) -> dict[int, int]:
        """{node: term} of the nodes that say they lead ``group``."""
        out = {}
        for nid in nodes or list(self.procs):
            st = await self.status(nid)
            if st is not None and st[group]["role"] == "leader":
                out[nid] = st[group]["term"]
        return out

    async def wait_leader(self, group: str, timeout: float, *, nodes: list[int] | None = None,
                          above_term: int = 0, poll_s: float = 0.05) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = {n: t for n, t in (await self.leaders(group, nodes)).items() if t > above_term}
            if found:
                nid = max(found, key=found.__getitem__)
                return nid, found[nid]
            await asyncio.sleep(poll_s)
        raise TimeoutError(f"no leader of {group} within {timeout}s")

    async def aclose(self) -> None:
        await self.client.close()


async def amain(args: argparse.Namespace) -> int:
    node = Node(args)
    await node.start()
    print(f"READY node={node.node_id} port={node.transport.port} pid={os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.raft.demo_node", description=__doc__.splitlines()[0])
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--peers", type=parse_peers, required=True, help="ID=HOST:PORT,... (this node included)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--groups", type=int, default=1, help="Raft groups g0..gN-1, every node a voter")
    parser.add_argument("--tick-ms", type=int, default=50)
    parser.add_argument("--election-ticks", type=int, default=20)
    parser.add_argument("--heartbeat-ticks", type=int, default=2)
    parser.add_argument("--segment-bytes", type=int, default=1 << 30)
    parser.add_argument("--io-threads", type=int, default=32, help="fsync thread pool size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transport", choices=CARRIERS, default=DEFAULT_CARRIER,
                        help=f"inter-node carrier (default {DEFAULT_CARRIER})")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--profile", default=None, help="write cProfile stats of the run to this file")
    args = parser.parse_args(argv)
    if args.node_id not in args.peers:
        parser.error(f"--node-id {args.node_id} is not in --peers")
    if args.groups < 1:
        parser.error("--groups must be >= 1")
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s node{args.node_id} %(levelname)s %(name)s: %(message)s")
    import uvloop

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        return uvloop.run(amain(args))
    except KeyboardInterrupt:
        return 0
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)


if __name__ == "__main__":
    sys.exit(main())
