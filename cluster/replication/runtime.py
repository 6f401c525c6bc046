"""The cluster runtime of one broker: transport, Raft host, controller, reconciler, balancing, failover.

    runtime = ClusterRuntime(ClusterSettings(node_id=1, peers={1: "127.0.0.1:7113", 2: ..., 3: ...}, ...))
    broker = await Broker.open(config, cluster=runtime)    # the runtime is the broker's ClusterBackend
    await runtime.start(broker)
    runtime.set_endpoints(grpc_port, kafka_port)           # once the front doors listen: registration
    ...
    await runtime.close(graceful=True)                     # hands every leadership away first

What runs here:
- the inter-broker `RaftTransport` (--raft-port) and one `RaftHost` for every group of this broker;
- the `__controller` group (voters --controller-voters, the other brokers learners) whose listener is the
  `Controller`: every broker holds the replicated `ClusterMetadata`;
- registration: the broker registers (ports, rack) through the controller, again on every start;
- the reconciler: after every metadata change it starts the partition groups assigned here (bootstrapped
  with voters = the assignment) and stops and deletes the others (cluster.replication.reconciler), and
  installs every topic in the broker core (local replicas as `ReplicatedPartition`s, the rest as
  `RemotePartition`s answering NOT_LEADER_OR_FOLLOWER with the leader);
- the leadership table (own groups + the leaders' LeaderHints) behind Kafka Metadata and DescribeCluster;
- balancing, on the partitions this broker leads: hand leadership to the preferred replica (replicas[0]) when
  it is alive and caught up (with hysteresis), and move replicas towards a reassignment target one
  membership change at a time (add learner, wait caught up, promote, remove), then report completion;
- graceful shutdown: leadership of every group goes to a caught-up voter before the broker stops.

Liveness of brokers: this broker's transport connection to them (a killed broker's stream resets at once).
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cluster.broker.errors import (
    BrokerError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidRequestError,
    NotControllerError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from cluster.broker.types import TopicPartition
from cluster.controller.controller import CONTROLLER_GROUP, PROPOSE_METHOD, Controller, ControllerError
from cluster.controller.metadata import ClusterMetadata, MetadataError, assign_replicas
from cluster.replication.leadership import LeadershipTable
from cluster.replication.partition import RemotePartition, ReplicatedPartition
from cluster.replication.reconciler import (
    ReplicaKey,
    ReplicaSpec,
    parse_group_id,
    plan,
    replica_dir,
    stray_replica_dirs,
)

log = logging.getLogger("tidelog.cluster")

CONTROLLER_DIR = "__controller"
RAFT_STATE_DIR = "raft"
DEFAULT_CONTROLLER_VOTERS = 3
ADMIN_TIMEOUT_S = 30.0
# A created topic is answered once its partitions have leaders, or after this long (clients retry anyway).
CREATE_WAIT_LEADERS_S = 10.0
BALANCE_INTERVAL_S = 1.0
# Preferred-leader hysteresis: the preferred replica must have been alive and caught up this long, and this
# broker must have led the partition this long, before leadership moves back.
PREFERRED_STABLE_S = 3.0
# A learner is promoted once its log is within this many offsets of the leader's.
CATCH_UP_LAG = 1000
SHUTDOWN_TRANSFER_S = 5.0
# A restarting broker replays its own controller log and opens its replicas before it is ready (bounded).
STARTUP_REPLAY_S = 30.0
# How long topic creation waits for brokers to register (a cluster that is just starting).
REGISTRATION_WAIT_S = 10.0


@dataclass(slots=True)
class ClusterSettings:
    node_id: int
    peers: dict[int, str]  # broker id -> "host:raft port" (this broker's own entry included)
    data_dir: Path
    host: str = "127.0.0.1"  # the address other brokers and clients reach this broker at
    raft_listen: str | None = None  # where the transport listens (default: the own entry of peers)
    raft_transport: str = "tcp"  # the inter-broker carrier: "tcp" (framed asyncio TCP) or "grpc"
    controller_voters: list[int] | None = None  # default: the first 3 peers (all if fewer)
    rack: str | None = None
    default_replication_factor: int = 3
    tick_ms: int = 50
    election_ticks: int = 20
    heartbeat_ticks: int = 2
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    def voters(self) -> list[int]:
        if self.controller_voters:
            return sorted(set(self.controller_voters))
        return sorted(self.peers)[:DEFAULT_CONTROLLER_VOTERS]


class ClusterRuntime:
    """See the module docstring. Implements cluster.broker.broker.ClusterBackend."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        if self.node_id <= 0:
            raise InvalidConfigError(f"node ids of a cluster start at 1, got {self.node_id}")
        if self.node_id not in settings.peers:
            raise InvalidConfigError(f"--peers does not name this node ({self.node_id}): {settings.peers}")
        unknown = [v for v in settings.voters() if v not in settings.peers]
        if unknown:
            raise InvalidConfigError(f"controller voters {unknown} are not in --peers")
        self.data_dir = Path(settings.data_dir)
        self.broker = None
        self.transport = None
        self.host = None
        self.controller: Controller | None = None
        self._controller_log = None
        self.leaders = LeadershipTable()
        self._replicas: dict[ReplicaKey, ReplicatedPartition] = {}
        self._by_tp: dict[tuple[str, int], tuple[ReplicaKey, ReplicatedPartition]] = {}
        self._remote: dict[tuple[str, int, str], RemotePartition] = {}
        self._reconcile_wake = asyncio.Event()
        self._reconciled_index = -1
        self._reconciled_waiters: list[tuple[int, asyncio.Future]] = []
        self._tasks: list[asyncio.Task] = []
        self._grpc_port = 0
        self._kafka_port = 0
        self._registered = asyncio.Event()
        self._pref_ok_since: dict[ReplicaKey, float] = {}
        self._moving: set[ReplicaKey] = set()
        self._closing = False
        self._closed = False
        self._rng = random.Random(settings.seed)
        self._leadership_listeners: list = []

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, broker) -> None:
        from cluster.raft.host import RaftHost
        from cluster.raft.partition_log import PartitionRaftLog
        from cluster.raft.transport import RaftTransport

        s = self.settings
        self.broker = broker
        listen = s.raft_listen or s.peers[self.node_id]
        self.transport = RaftTransport(self.node_id, dict(s.peers), listen=listen, rng=self._rng,
                                       carrier=s.raft_transport)
        self.transport.on_leader_hint(self._on_hints)
        self.controller = Controller(self.node_id)
        self.transport.register_handler(PROPOSE_METHOD, self.controller.handle_propose)
        try:
            await self.transport.start()
        except Exception as exc:
            raise OSError(f"cannot listen for other brokers on {listen}: {exc}") from exc
        self.host = RaftHost(self.node_id, self.transport, state_dir=str(self.data_dir / RAFT_STATE_DIR),
                             tick_ms=s.tick_ms, election_ticks=s.election_ticks, heartbeat_ticks=s.heartbeat_ticks,
                             rng=self._rng)
        await self.host.start()
        # The controller group: restore the state from its snapshot, then the host replays what follows.
        (self.data_dir / CONTROLLER_DIR).mkdir(parents=True, exist_ok=True)
        clog = await asyncio.to_thread(PartitionRaftLog.open, str(self.data_dir / CONTROLLER_DIR))
        self._controller_log = clog
        snap = clog.snapshot()
        if snap.data:
            self.controller.metadata = ClusterMetadata.restore(snap.data)
            self.controller._last_snapshot_index = self.controller.metadata.applied_index
        voters = s.voters()
        learners = [p for p in sorted(s.peers) if p not in voters]
        self.controller.add_listener(lambda md: self._reconcile_wake.set())
        self.controller.add_leader_listener(self._on_controller_leader)
        group = self.host.add_group(CONTROLLER_GROUP, clog, voters=voters, learners=learners,
                                    listener=self.controller)
        self.controller.bind(group, self.transport)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._reconcile_loop(), name="reconciler"),
            loop.create_task(self._balance_loop(), name="leader balance"),
        ]
        self._reconcile_wake.set()
        # Before the broker says it is ready: replay what this broker already knows (its controller log up to
        # its own commit index: no quorum needed) and open the replicas it hosts, so a restarted broker serves
        # its partitions at once and has recovered their logs.
        known = group.commit_index
        try:
            await self.controller.wait_applied(known, STARTUP_REPLAY_S)
            await self._wait_reconciled(self.metadata.applied_index, STARTUP_REPLAY_S)
        except RequestTimedOutError as exc:
            log.warning("node %d starts before its metadata is replayed: %s", self.node_id, exc)
        log.info("cluster runtime of node %d started: peers %s, controller voters %s, raft on %s (%s)",
                 self.node_id, s.peers, voters, listen, s.raft_transport)

    def set_endpoints(self, grpc_port: int, kafka_port: int | None) -> None:
        """The front doors listen: register this broker with the controller (in the background)."""
        self._grpc_port = grpc_port
        self._kafka_port = kafka_port or 0
        self._tasks.append(asyncio.get_running_loop().create_task(self._register_loop(), name="register"))

    async def close(self, *, graceful: bool = True) -> None:
        if self._closed:
            return
        self._closing = True
        if graceful and self.host is not None:
            try:
                await self.transfer_leaderships(SHUTDOWN_TRANSFER_S)
            except Exception as exc:
                log.warning("handing leaderships over failed: %s", exc)
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.controller is not None:
            self.controller.close()
        for key in list(self._replicas):
            await self._stop_replica(key, delete=False, remove_group=False)
        if self.host is not None:
            await self.host.close()
        if self.transport is not None:
            await self.transport.close()
        if self._controller_log is not None:
            await asyncio.to_thread(self._controller_log.close)
            self._controller_log = None
        for _, future in self._reconciled_waiters:
            if not future.done():
                future.cancel()

    async def transfer_leaderships(self, timeout: float) -> None:
        """Graceful shutdown: hand every group this broker leads to a caught-up voter, then wait (bounded)
        until the others lead."""
        host = self.host
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            leading = [g for g in host.groups.values() if g.is_leader]
            if not leading:
                return
            moved = 0
            for g in leading:
                target = self._transfer_target(g)
                if target is None:
                    continue
                try:
                    g.transfer_leadership(target)
                    moved += 1
                except Exception:
                    pass
            if moved == 0:
                return  # nobody to hand over to (a single node, or no caught-up voter alive)
            await asyncio.sleep(0.1)
        log.info("graceful shutdown: %d group(s) still led here after %.1fs", sum(g.is_leader for g in
                                                                                 host.groups.values()), timeout)

    def _transfer_target(self, group) -> int | None:
        best = None
        for node, st in group.replica_state().items():
            if node == self.node_id or st.is_learner or node not in group.configuration.voters:
                continue
            if not self.is_alive(node) or not st.recent_active:
                continue
            if best is None or st.lag < best[1]:
                best = (node, st.lag)
        return best[0] if best is not None else None

    # -- facts ---------------------------------------------------------------------------------------------

    @property
    def metadata(self) -> ClusterMetadata:
        return self.controller.metadata if self.controller is not None else ClusterMetadata()

    @property
    def cluster_id(self) -> str:
        """The cluster's id (named by its first controller leader); this broker's own until it knows it."""
        named = self.metadata.cluster_id
        if named:
            return named
        return self.broker.data_directory.cluster_id if self.broker is not None else ""

    @property
    def controller_id(self) -> int:
        if self.controller is None:
            return -1
        cid = self.controller.controller_id
        return cid if cid >= 0 and self.is_alive(cid) else -1

    def is_alive(self, broker_id: int) -> bool:
        if broker_id == self.node_id:
            return True
        return self.transport is not None and self.transport.connected(broker_id)

    def local_replica(self, topic: str, partition: int) -> ReplicatedPartition | None:
        found = self._by_tp.get((topic, partition))
        return found[1] if found is not None else None

    def leadership(self, topic: str, partition: int, topic_id: str) -> tuple[int, int, tuple[int, ...]]:
        """(leader id or -1, leader epoch, in-sync replicas) of a partition as this broker knows it; a leader
        this broker has no connection to is reported as -1."""
        from cluster.replication.reconciler import group_id_of

        gid = group_id_of(topic, partition, topic_id)
        hint = self.leaders.get(gid)
        leader, term, isr = hint.leader_id, hint.term, hint.isr
        found = self._by_tp.get((topic, partition))
        if found is not None and found[0].topic_id == topic_id and found[1].group is not None:
            replica = found[1]
            group = replica.group
            if group.term >= term:
                if group.is_leader:
                    leader, term, isr = self.node_id, group.term, tuple(replica.in_sync_replicas())
                elif group.leader_id is not None:
                    if group.term > term or group.leader_id != leader:
                        isr = (group.leader_id,)
                    leader, term = group.leader_id, group.term
                elif group.term > term:
                    leader, term, isr = -1, group.term, ()
        if leader is None or leader < 0 or not self.is_alive(leader):
            return -1, max(term, 0), ()
        return leader, max(term, 0), isr

    def placement(self, topic: str, partition: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        t = self.metadata.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return (), ()
        replicas = tuple(t.partitions[partition].replicas)
        _, _, isr = self.leadership(topic, partition, t.topic_id)
        return replicas, isr

    def _on_hints(self, from_node: int, hints) -> None:
        for h in hints:
            if isinstance(h.group_id, str) and parse_group_id(h.group_id) is not None:
                self.leaders.update(h.group_id, h.leader_id, h.term, h.isr)

    def _on_controller_leader(self, leader_id: int | None, term: int) -> None:
        if leader_id == self.node_id and not self.metadata.cluster_id and not self._closing:
            # The first controller leader names the cluster (after this node's data directory's id).
            name = self.broker.data_directory.cluster_id if self.broker is not None else uuid.uuid4().hex
            self._spawn(self._submit_quietly({"type": "init_cluster", "cluster_id": name}))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _submit_quietly(self, cmd: dict) -> None:
        try:
            await self.controller.submit(cmd, timeout=ADMIN_TIMEOUT_S)
        except Exception as exc:
            log.debug("controller command %s: %s", cmd.get("type"), exc)

    # -- registration ----------------------------------------------------------------------------------------

    def _registration(self) -> dict:
        s = self.settings
        raft_port = int(s.peers[self.node_id].rpartition(":")[2])
        if self.transport is not None and self.transport.port:
            raft_port = self.transport.port
        return {"type": "register_broker", "broker_id": self.node_id, "host": s.host, "grpc_port": self._grpc_port,
                "kafka_port": self._kafka_port, "raft_port": raft_port, "rack": s.rack}

    async def _register_loop(self) -> None:
        cmd = self._registration()
        delay = 0.1
        while not self._closing:
            try:
                await self.controller.submit(cmd, timeout=10.0)
                log.info("node %d registered with the controller (grpc %d, kafka %d, rack %s)", self.node_id,
                         self._grpc_port, self._kafka_port, self.settings.rack)
                self._registered.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("registering node %d with the controller: %s; retrying", self.node_id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- topic administration (ClusterBackend) -------------------------------------------------------------

    async def _submit(self, cmd: dict, timeout: float = ADMIN_TIMEOUT_S):
        try:
            return await self.controller.submit(cmd, timeout=timeout)
        except ControllerError as exc:
            raise _broker_error(exc.error_name, str(exc)) from None

    def _brokers_for_placement(self) -> dict[int, str | None]:
        """Every registered broker (a dead one too: a Raft group tolerates a minority down, and the broker gets
        its replicas when it returns), with its rack."""
        return {b: r.rack for b, r in self.metadata.brokers.items()}

    async def _wait_brokers(self, count: int, timeout: float) -> None:
        """Placement needs `count` registered brokers: right after a cluster starts, they are registering."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.metadata.brokers) < count:
            if loop.time() >= deadline:
                raise _broker_error("INVALID_REPLICATION_FACTOR",
                                    f"replication factor {count} is larger than the {len(self.metadata.brokers)} "
                                    f"registered broker(s)")
            await asyncio.sleep(0.05)

    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           replication_factor: int | None = None, assignments: list[list[int]] | None = None,
                           validate_only: bool = False, internal: bool = False) -> None:
        if name in self.metadata.topics:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        rf = replication_factor or min(self.settings.default_replication_factor, len(self.settings.peers))
        if not assignments:
            await self._wait_brokers(min(rf, len(self.settings.peers)) if replication_factor is None else rf,
                                     REGISTRATION_WAIT_S)
        md = self.metadata
        if assignments:
            unknown = sorted({b for a in assignments for b in a if b not in md.brokers})
            if unknown:
                raise _broker_error("INVALID_REPLICA_ASSIGNMENT", f"unknown broker(s) {unknown}")
            placement = [list(a) for a in assignments]
        else:
            brokers = self._brokers_for_placement()
            try:
                placement = assign_replicas(brokers, partitions, rf, md.replica_load())
            except MetadataError as exc:
                raise _broker_error(exc.error_name, str(exc)) from None
        self._check_min_insync(configs, min(len(a) for a in placement))
        if validate_only:
            return
        cmd = {"type": "create_topic", "name": name, "topic_id": uuid.uuid4().hex, "assignments": placement,
               "configs": dict(configs)}
        if internal:
            cmd["internal"] = True
        await self._submit(cmd)
        await self._wait_reconciled(self.metadata.applied_index, ADMIN_TIMEOUT_S)
        await self._wait_leaders(name, CREATE_WAIT_LEADERS_S)

    def _check_min_insync(self, configs: dict[str, str], rf: int) -> None:
        value = configs.get("min.insync.replicas")
        if value is not None and str(value).strip().isdigit() and int(value) > rf:
            raise InvalidConfigError(f"min.insync.replicas={value} is larger than the replication factor {rf}: "
                                     "no acks=all produce could ever succeed")

    async def _wait_leaders(self, name: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            t = self.metadata.topics.get(name)
            if t is None:
                return
            if all(self.leadership(name, i, t.topic_id)[0] >= 0 for i in range(len(t.partitions))):
                return
            await asyncio.sleep(0.05)

    async def delete_topic(self, name: str) -> None:
        if name not in self.metadata.topics:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        await self._submit({"type": "delete_topic", "name": name})
        await self._wait_reconciled(self.metadata.applied_index, ADMIN_TIMEOUT_S)

    async def alter_configs(self, name: str, configs: dict[str, str]) -> None:
        t = self.metadata.topics.get(name)
        if t is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        self._check_min_insync(configs, min(len(p.replicas) for p in t.partitions))
        await self._submit({"type": "alter_configs", "name": name, "configs": dict(configs), "replace": True})
        await self._wait_reconciled(self.metadata.applied_index, ADMIN_TIMEOUT_S)

    async def create_partitions(self, name: str, count: int, *, validate_only: bool = False,
                                assignments: list[list[int]] | None = None) -> None:
        """Grow a topic to `count` partitions; the reconciler of every broker then starts the replicas of the
        new partitions assigned to it, and installs the grown topic in its broker core."""
        md = self.metadata
        t = md.topics.get(name)
        if t is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        current = len(t.partitions)
        if count <= current:
            raise InvalidPartitionsError(f"topic {name!r} has {current} partitions; the count can only grow")
        rf = len(t.partitions[0].replicas)
        if assignments is not None:
            if len(assignments) != count - current:
                raise _broker_error("INVALID_REPLICA_ASSIGNMENT", f"{len(assignments)} replica lists given for "
                                                                  f"{count - current} new partition(s)")
            for replicas in assignments:
                unknown = sorted(b for b in replicas if b not in md.brokers)
                if not replicas or len(set(replicas)) != len(replicas) or unknown:
                    raise _broker_error("INVALID_REPLICA_ASSIGNMENT",
                                        f"replicas {list(replicas)} must be distinct registered brokers"
                                        + (f" (unknown: {unknown})" if unknown else ""))
                if len(replicas) != rf:
                    raise _broker_error("INVALID_REPLICA_ASSIGNMENT",
                                        f"replicas {list(replicas)}: the topic's replication factor is {rf}")
            placement = [list(r) for r in assignments]
        else:
            try:
                placement = assign_replicas(self._brokers_for_placement(), count - current, rf, md.replica_load())
            except MetadataError as exc:
                raise _broker_error(exc.error_name, str(exc)) from None
        if validate_only:
            return
        await self._submit({"type": "create_partitions", "name": name, "assignments": placement,
                            "current": current})
        await self._wait_reconciled(self.metadata.applied_index, ADMIN_TIMEOUT_S)
        await self._wait_leaders(name, CREATE_WAIT_LEADERS_S)

    async def reserve_producer_ids(self, count: int) -> int:
        """A block of producer ids unique across the cluster (InitProducerId): the first id."""
        result = await self._submit({"type": "allocate_producer_ids", "count": count})
        return int(result[0])

    async def reassign_partition(self, topic: str, partition: int, replicas: list[int], *, wait: bool,
                                 timeout: float) -> tuple[list[int], list[int] | None]:
        md = self.metadata
        t = md.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            raise UnknownTopicOrPartitionError(f"unknown partition {topic}-{partition}")
        if len(set(replicas)) != len(replicas):
            raise _broker_error("INVALID_REPLICA_ASSIGNMENT", f"replica list {replicas} repeats a broker")
        unknown = [b for b in replicas if b not in md.brokers]
        if unknown:
            raise _broker_error("INVALID_REPLICA_ASSIGNMENT", f"unknown broker(s) {unknown}")
        await self._submit({"type": "reassign_partition", "name": topic, "partition": partition,
                            "target": list(replicas)})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            a = self.metadata.partition(topic, partition)
            if a is None:
                raise UnknownTopicOrPartitionError(f"{topic}-{partition} was deleted")
            if not wait or a.target is None:
                return list(a.replicas), list(a.target) if a.target else None
            if loop.time() >= deadline:
                raise RequestTimedOutError(f"{topic}-{partition} is still moving from {a.replicas} to {a.target} "
                                           f"after {timeout:g}s (it goes on in the background)")
            await asyncio.sleep(0.1)

    # -- the reconciler --------------------------------------------------------------------------------------

    async def _wait_reconciled(self, index: int, timeout: float) -> None:
        if self._reconciled_index >= index:
            return
        future = asyncio.get_running_loop().create_future()
        self._reconciled_waiters.append((index, future))
        self._reconcile_wake.set()
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimedOutError(f"this broker has not caught up with the metadata within {timeout:g}s") \
                from None

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile_wake.wait()
            self._reconcile_wake.clear()
            try:
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciling the partitions of node %d failed; retrying", self.node_id)
                await asyncio.sleep(1.0)
                self._reconcile_wake.set()

    async def _reconcile(self) -> None:
        md = self.metadata
        index = md.applied_index
        todo = plan(self.node_id, md, set(self._replicas))
        for key in todo.stop:
            log.info("node %d: stopping replica %s-%d (%s) and deleting its data", self.node_id, key.topic,
                     key.partition, key.topic_id)
            await self._stop_replica(key, delete=True)
        for spec in todo.start:
            await self._start_replica(spec)
        for spec in todo.keep:
            replica = self._replicas[spec.key]
            replica.replicas = spec.replicas
            replica.min_insync_replicas = self.broker.broker_topic_config(spec.configs, "min.insync.replicas")
        self._install_topics(md)
        if md.applied_index >= 0 and (todo.stop or not self._reconciled_once):
            strays = await asyncio.to_thread(stray_replica_dirs, self.data_dir, frozenset(self._replicas))
            for path in strays:
                log.info("node %d: removing stray replica directory %s", self.node_id, path)
                await asyncio.to_thread(shutil.rmtree, path, True)
            self._reconciled_once = True
        self._reconciled_index = index
        keep = []
        for want, future in self._reconciled_waiters:
            if want <= index:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((want, future))
        self._reconciled_waiters = keep

    _reconciled_once = False

    async def _start_replica(self, spec: ReplicaSpec) -> None:
        from cluster.raft.partition_log import PartitionRaftLog

        key = spec.key
        broker = self.broker
        directory = replica_dir(self.data_dir, key)
        config = broker._log_config(spec.configs, context=f"topic {key.topic}")
        try:
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
            raft_log = await asyncio.to_thread(PartitionRaftLog.open, str(directory), config)
        except Exception as exc:
            log.error("node %d: cannot open replica %s-%d: %s", self.node_id, key.topic, key.partition, exc)
            raise
        if self._closing or key in self._replicas:
            await asyncio.to_thread(raft_log.close)
            return
        s = self.settings
        replica = ReplicatedPartition(
            TopicPartition(key.topic, key.partition), raft_log, node_id=self.node_id,
            min_insync_replicas=broker.broker_topic_config(spec.configs, "min.insync.replicas"),
            clock=broker.clock, election_timeout_s=s.tick_ms * s.election_ticks / 1000)
        replica.replicas = spec.replicas
        replica.on_leadership = lambda r, key=key: self._on_replica_leader(key, r)
        group = self.host.add_group(key.group_id, raft_log, voters=spec.voters, listener=replica,
                                    skip_committed=True)
        replica.bind(group)
        self._replicas[key] = replica
        self._by_tp[(key.topic, key.partition)] = (key, replica)
        log.info("node %d: hosting replica %s-%d (voters %s%s)", self.node_id, key.topic, key.partition,
                 list(spec.voters) or "from the leader", f", moving to {list(spec.target)}" if spec.target else "")

    def _on_replica_leader(self, key: ReplicaKey, replica: ReplicatedPartition) -> None:
        group = replica.group
        if group is not None:
            self.leaders.update(key.group_id, group.leader_id, group.term,
                                   (group.leader_id,) if group.leader_id else ())
        self._tell_leadership(key, replica.is_leader)

    # -- leadership listeners ----------------------------------------------------------------------------

    def add_leadership_listener(self, listener) -> None:
        """`listener(topic, partition, is_leader)` is called (soon, on the loop; never inside the Raft host's
        drain) whenever this broker's leadership of a local replica may have changed, and with False when a
        replica stops here. Replicas this broker leads right now are reported at once (True)."""
        self._leadership_listeners.append(listener)
        for (topic, partition), (key, replica) in list(self._by_tp.items()):
            if replica.is_leader:
                self._tell_leadership(key, True)

    def _tell_leadership(self, key: ReplicaKey, is_leader: bool) -> None:
        if not self._leadership_listeners:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - the host calls back on its loop
            return

        def tell() -> None:
            # The replica may have been replaced meanwhile (topic recreated): report only the current one.
            found = self._by_tp.get((key.topic, key.partition))
            if is_leader and (found is None or found[0] != key):
                return
            for listener in list(self._leadership_listeners):
                try:
                    listener(key.topic, key.partition, is_leader)
                except Exception:  # pragma: no cover - a listener bug must not break the runtime
                    log.exception("leadership listener failed for %s-%d", key.topic, key.partition)

        loop.call_soon(tell)

    async def _stop_replica(self, key: ReplicaKey, *, delete: bool, remove_group: bool = True) -> None:
        replica = self._replicas.pop(key, None)
        if replica is None:
            return
        if self._by_tp.get((key.topic, key.partition), (None,))[0] == key:
            del self._by_tp[(key.topic, key.partition)]
        self._pref_ok_since.pop(key, None)
        self._tell_leadership(key, False)
        await replica.close()
        if remove_group and self.host is not None:
            await self.host.remove_group(key.group_id)
        await asyncio.to_thread(replica.raft_log.close)
        self.leaders.forget(key.group_id)
        if delete:
            await asyncio.to_thread(shutil.rmtree, replica_dir(self.data_dir, key), True)

    def _install_topics(self, md: ClusterMetadata) -> None:
        broker = self.broker
        wanted = set()
        for name, t in md.topics.items():
            wanted.add(name)
            parts = []
            for i in range(len(t.partitions)):
                found = self._by_tp.get((name, i))
                if found is not None and found[0].topic_id == t.topic_id:
                    parts.append(found[1])
                else:
                    parts.append(self._remote_partition(name, i, t.topic_id))
            installed = broker.installed_topic(name)
            if installed is None or installed[0] != t.topic_id or installed[1] != parts or \
                    broker._topics[name].meta.configs != t.configs:
                broker.install_topic(name, t.topic_id, t.configs, parts)
        for name in [n for n in list(broker._topics) if n not in wanted]:
            broker.uninstall_topic(name)
        self._remote = {k: v for k, v in self._remote.items() if k[0] in wanted}
        live_groups = {f"{n}/{i}/{t.topic_id}" for n, t in md.topics.items() for i in range(len(t.partitions))}
        self.leaders.retain(live_groups)

    def _remote_partition(self, topic: str, partition: int, topic_id: str) -> RemotePartition:
        k = (topic, partition, topic_id)
        part = self._remote.get(k)
        if part is None:
            part = self._remote[k] = RemotePartition(
                TopicPartition(topic, partition), lambda: self.leadership(topic, partition, topic_id)[:2])
        return part

    # -- balancing and reassignment --------------------------------------------------------------------------

    async def _balance_loop(self) -> None:
        while True:
            await asyncio.sleep(BALANCE_INTERVAL_S)
            if self._closing:
                return
            try:
                self._balance_once()
            except Exception:
                log.exception("leader balancing failed")

    def _balance_once(self) -> None:
        md = self.metadata
        now = time.monotonic()
        for key, replica in list(self._replicas.items()):
            group = replica.group
            if group is None or not group.is_leader:
                self._pref_ok_since.pop(key, None)
                continue
            assignment = md.partition(key.topic, key.partition)
            t = md.topics.get(key.topic)
            if assignment is None or t is None or t.topic_id != key.topic_id:
                continue
            if assignment.target is not None:
                if key not in self._moving:
                    self._moving.add(key)
                    self._spawn(self._move(key, replica))
                continue
            preferred = assignment.replicas[0]
            if preferred == self.node_id or preferred not in group.configuration.voters:
                self._pref_ok_since.pop(key, None)
                continue
            st = group.replica_state().get(preferred)
            ok = (st is not None and st.in_sync and st.recent_active and st.lag == 0 and self.is_alive(preferred)
                  and now - replica._leader_since >= PREFERRED_STABLE_S)
            if not ok:
                self._pref_ok_since.pop(key, None)
                continue
            since = self._pref_ok_since.setdefault(key, now)
            if now - since >= PREFERRED_STABLE_S:
                self._pref_ok_since.pop(key, None)
                try:
                    group.transfer_leadership(preferred)
                    log.info("node %d: handing leadership of %s-%d to its preferred replica %d", self.node_id,
                             key.topic, key.partition, preferred)
                except Exception as exc:
                    log.debug("preferred leader transfer of %s failed: %s", key, exc)

    async def _move(self, key: ReplicaKey, replica: ReplicatedPartition) -> None:
        """Move the group towards the assignment's target, one membership change at a time, while this
        broker leads it; then record completion with the controller."""
        from cluster.raft.types import ConfChange, ConfChangeOp

        try:
            while not self._closing:
                group = replica.group
                assignment = self.metadata.partition(key.topic, key.partition)
                if group is None or not group.is_leader or assignment is None or assignment.target is None:
                    return
                target = list(assignment.target)
                cfg = group.configuration
                states = group.replica_state()
                change = None
                for node in target:
                    if node not in cfg.voters and node not in cfg.learners:
                        change = ConfChange(ConfChangeOp.ADD_LEARNER, node)
                        break
                if change is None:
                    for node in target:
                        if node in cfg.learners:
                            st = states.get(node)
                            if st is not None and st.recent_active and st.lag <= CATCH_UP_LAG:
                                change = ConfChange(ConfChangeOp.PROMOTE_LEARNER, node)
                            break
                if change is None and all(n in cfg.voters for n in target):
                    extra = sorted(cfg.members - set(target))
                    others = [n for n in extra if n != self.node_id]
                    if others:
                        change = ConfChange(ConfChangeOp.REMOVE_NODE, others[0])
                    elif extra:
                        # Only this broker is left to go: hand the leadership to a caught-up target voter; the
                        # new leader finishes the move.
                        to = self._transfer_target(group)
                        if to is not None and to in target:
                            group.transfer_leadership(to)
                        await asyncio.sleep(0.5)
                        continue
                    else:
                        await self._submit({"type": "reassign_partition", "name": key.topic,
                                            "partition": key.partition, "replicas": target})
                        log.info("node %d: %s-%d now on %s", self.node_id, key.topic, key.partition, target)
                        return
                if change is None:
                    await asyncio.sleep(0.2)  # a learner catching up
                    continue
                try:
                    log.info("node %d: %s-%d membership change %s %d", self.node_id, key.topic, key.partition,
                             change.op.value, change.node_id)
                    await group.change_membership(change, timeout_s=10.0)
                except Exception as exc:
                    log.info("membership change %s of %s-%d: %s; retrying", change, key.topic, key.partition, exc)
                    await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("moving %s-%d failed", key.topic, key.partition)
        finally:
            self._moving.discard(key)

    # -- status ----------------------------------------------------------------------------------------------

    def describe_cluster(self):
        from proto.rpc import tidelog_v1_pb2 as pb

        md = self.metadata
        brokers = [pb.BrokerStatus(broker_id=b.broker_id, host=b.host, grpc_port=b.grpc_port,
                                   kafka_port=b.kafka_port, raft_port=b.raft_port, rack=b.rack or "",
                                   alive=self.is_alive(b.broker_id))
                   for b in sorted(md.brokers.values(), key=lambda b: b.broker_id)]
        partitions = []
        for name in sorted(md.topics):
            t = md.topics[name]
            for i, a in enumerate(t.partitions):
                leader, epoch, isr = self.leadership(name, i, t.topic_id)
                status = pb.PartitionStatus(topic=name, partition=i, leader_id=leader, leader_epoch=epoch,
                                            replicas=list(a.replicas), isr=list(isr), high_watermark=-1,
                                            log_end_offset=-1, target_replicas=list(a.target or []))
                found = self._by_tp.get((name, i))
                if found is not None and found[0].topic_id == t.topic_id:
                    replica = found[1]
                    status.high_watermark = replica.high_watermark
                    status.log_end_offset = replica.log_end_offset
                    for node, lag in replica.replica_lag().items():
                        status.replica_lag[node] = lag
                partitions.append(status)
        return pb.DescribeClusterResponse(cluster_id=self.cluster_id,
                                          node_id=self.node_id, controller_id=self.controller_id, brokers=brokers,
                                          partitions=partitions)


def _broker_error(name: str, message: str) -> BrokerError:
    if name == "NOT_CONTROLLER":
        return NotControllerError(message)
    if name == "TOPIC_ALREADY_EXISTS":
        return TopicAlreadyExistsError(message)
    if name == "UNKNOWN_TOPIC_OR_PARTITION":
        return UnknownTopicOrPartitionError(message)
    if name == "INVALID_REQUEST":
        return InvalidRequestError(message)
    return BrokerError(message, error_name=name)


def parse_peers(text: str) -> dict[int, str]:
    """`1=127.0.0.1:7113,2=127.0.0.1:7123` -> {1: "127.0.0.1:7113", ...}. Raises ValueError."""
    peers: dict[int, str] = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        nid, sep, addr = item.partition("=")
        host, colon, port = addr.rpartition(":")
        if not sep or not nid.strip().isdigit() or int(nid) <= 0 or not colon or not host or not port.isdigit() \
                or not 0 < int(port) < 65536:
            raise ValueError(f"bad peer {item!r}: expected ID=HOST:PORT with ID >= 1")
        if int(nid) in peers:
            raise ValueError(f"peer {nid} is listed twice")
        peers[int(nid)] = addr.strip()
    if not peers:
        raise ValueError("no peers given")
    return peers


def parse_node_list(text: str) -> list[int]:
    """`1,2,3` -> [1, 2, 3]. Raises ValueError."""
    out = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or int(item) <= 0:
            raise ValueError(f"bad node id {item!r}")
        out.append(int(item))
    if not out:
        raise ValueError("no node ids given")
    return out


__all__ = ["ClusterRuntime", "ClusterSettings", "parse_node_list", "parse_peers"]
