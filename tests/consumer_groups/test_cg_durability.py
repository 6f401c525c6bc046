"""Durability through `__consumer_offsets`: random operation sequences replay to the same state on a fresh
coordinator; the loading phase; unloading; the record layout; the group -> partition mapping."""

from __future__ import annotations

import dataclasses
import random
import struct
from dataclasses import dataclass

import pytest
from cg_harness import TEST_CONFIG, Shell, assignment, subscription

from consumer_groups import (
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    ErrorCode,
    GroupCoordinator,
    GroupState,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    ListGroupsRequest,
    MemberIdentity,
    OffsetDeleteRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
    partition_for_group,
)
from consumer_groups.records import (
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetKey,
    OffsetValue,
    Record,
    RecordFormatError,
    decode_group_value,
    decode_key,
    decode_offset_value,
    encode_group_key,
    encode_group_value,
    encode_offset_key,
    encode_offset_value,
    java_string_hashcode,
)

SIM_CONFIG = dataclasses.replace(
    TEST_CONFIG,
    offsets_retention_ms=3_600_000,
    offsets_retention_check_interval_ms=60_000,
    initial_rebalance_delay_ms=50,
)
GROUPS = ("g0", "g1", "g2", "g3")
TOPICS = ("t", "u")


@dataclass
class Client:
    """A consumer following the classic protocol, one request in flight at a time."""

    name: str
    group: str
    instance: str | None
    topics: tuple[str, ...]
    member_id: str = ""
    generation: int = -1
    leader: bool = False
    members: tuple[str, ...] = ()
    phase: str = "join"  # join -> sync -> stable; "dead" when crashed, left or fenced
    handle: object = None
    request: object = None


class Simulation:
    """Clients against one coordinator, with crashes, restarts, leaves, subscription changes, stale requests,
    admin calls, time jumps, and writes confirmed late and out of order (all eventually succeed)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.shell = Shell(SIM_CONFIG, seed=seed, auto_persist=False)
        self.clients: list[Client] = []
        self.sent: list[object] = []
        self.spawned = 0

    def send(self, request: object, client: Client | None = None) -> None:
        handle = self.shell.send(request)
        self.sent.append(handle)
        if client is not None:
            client.handle, client.request = handle, request

    def spawn(self, group: str | None = None, instance: str | None = None, topics: tuple[str, ...] = ()) -> None:
        self.spawned += 1
        group = group or self.rng.choice(GROUPS)
        if instance is None and self.rng.random() < 0.3:
            instance = f"{group}-static-{self.rng.randrange(2)}"
        topics = topics or tuple(sorted(self.rng.sample(TOPICS, self.rng.randint(1, 2))))
        self.clients.append(Client(f"c{self.spawned}", group, instance, topics))

    def live(self) -> list[Client]:
        return [c for c in self.clients if c.phase != "dead"]

    def act(self, c: Client) -> None:
        rng = self.rng
        if c.handle is not None:
            answer = self.shell.answer(c.handle)
            if answer is None:
                return  # parked
            c.handle = None
            self.react(c, answer)
            return
        if c.phase == "join":
            self.send(
                JoinGroupRequest(
                    c.group,
                    c.member_id,
                    "consumer",
                    (("range", subscription(*c.topics)),),
                    10_000,
                    20_000,
                    c.instance,
                    require_known_member_id=rng.random() < 0.7,
                    client_id=c.name,
                ),
                c,
            )
        elif c.phase == "sync":
            plan = {m: assignment((rng.choice(TOPICS), rng.randrange(4))) for m in c.members} if c.leader else {}
            self.send(
                SyncGroupRequest(c.group, c.generation, c.member_id, c.instance, assignments=tuple(plan.items())), c
            )
        elif rng.random() < 0.6:
            self.send(HeartbeatRequest(c.group, c.generation, c.member_id, c.instance), c)
        else:
            offsets = {(rng.choice(TOPICS), rng.randrange(2)): rng.randrange(1000) for _ in range(rng.randint(1, 2))}
            handle = self.shell.commit(
                c.group, offsets, c.generation, c.member_id, c.instance, metadata=rng.choice([None, "m"])
            )
            self.sent.append(handle)
            c.handle = handle

    def react(self, c: Client, answer: object) -> None:
        error = getattr(answer, "error", ErrorCode.NONE)
        if error == ErrorCode.FENCED_INSTANCE_ID:
            c.phase = "dead"
        elif isinstance(answer, JoinGroupResponse):
            if error == ErrorCode.NONE:
                c.member_id, c.generation, c.phase = answer.member_id, answer.generation_id, "sync"
                c.leader = answer.leader == answer.member_id
                c.members = tuple(m.member_id for m in answer.members)
            elif error == ErrorCode.MEMBER_ID_REQUIRED:
                c.member_id = answer.member_id
            elif error == ErrorCode.UNKNOWN_MEMBER_ID:
                c.member_id = ""
        elif error in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.ILLEGAL_GENERATION):
            c.member_id, c.phase = "", "join"
        elif error == ErrorCode.REBALANCE_IN_PROGRESS:
            c.phase = "join"
        elif error == ErrorCode.NONE and c.phase == "sync":
            c.phase = "stable"
        elif error == ErrorCode.COORDINATOR_NOT_AVAILABLE:
            c.phase = "join"

    def chaos(self) -> None:
        rng, live = self.rng, self.live()
        if not live:
            return
        c = rng.choice(live)
        roll = rng.random()
        if roll < 0.3:  # crash; a static member comes back under the same instance id
            c.phase = "dead"
            if c.instance is not None and rng.random() < 0.7:
                self.spawn(c.group, c.instance, c.topics)
        elif roll < 0.5:
            c.phase = "dead"
            self.send(LeaveGroupRequest(c.group, (MemberIdentity(c.member_id, c.instance),)))
        elif roll < 0.7 and c.handle is None:
            c.topics, c.phase = tuple(sorted(rng.sample(TOPICS, rng.randint(1, 2)))), "join"
        else:  # a zombie request with a stale generation or a made-up member
            self.send(HeartbeatRequest(c.group, c.generation - rng.randrange(2), rng.choice([c.member_id, "ghost"])))

    def admin(self) -> None:
        rng, group = self.rng, self.rng.choice(GROUPS)
        roll = rng.random()
        if roll < 0.3:
            self.send(DeleteGroupsRequest((group,)))
        elif roll < 0.6:
            self.send(OffsetDeleteRequest(group, ((rng.choice(TOPICS), rng.randrange(4)),)))
        elif roll < 0.8:
            self.send(OffsetFetchRequest(group, None, rng.random() < 0.5))
        else:
            self.sent.append(
                self.shell.commit(group, {("t", rng.randrange(4)): 1}, retention_ms=rng.choice([-1, 90_000]))
            )

    def step(self) -> None:
        rng, shell = self.rng, self.shell
        roll = rng.random()
        if roll < 0.06 and len(self.live()) < 12:
            self.spawn()
        elif roll < 0.55 and self.live():
            self.act(rng.choice(self.live()))
        elif roll < 0.72 and shell.pending:
            # Confirm some writes, often newest first; the coordinator applies them in log order.
            writes = rng.sample(shell.pending, min(len(shell.pending), rng.randint(1, 4)))
            if rng.random() < 0.5:
                writes.sort(key=lambda w: -w.write_id)
            for write in writes:
                shell.confirm(write.write_id)
        elif roll < 0.82:
            shell.advance(rng.choice([10, 300, 1_000, 3_000]))
        elif roll < 0.85:
            shell.advance(rng.choice([12_000, 25_000, 3_700_000]))
        elif roll < 0.95:
            self.chaos()
        else:
            self.admin()

    def settle(self, rounds: int) -> None:
        """No more chaos: every live client follows the protocol, writes are confirmed promptly."""
        for _ in range(rounds):
            for c in self.live():
                self.act(c)
                self.shell.confirm_all()
            self.shell.advance(1_000)
            self.shell.confirm_all()


def assert_replays_to_same_state(shell: Shell) -> None:
    original = shell.coord
    fresh = GroupCoordinator(SIM_CONFIG, random.Random(0), active_partitions=())
    fresh.load(shell.log, shell.now)
    assert set(fresh.group_ids()) <= set(original.group_ids())
    for group_id in original.group_ids():
        assert fresh.committed_offsets(group_id) == original.committed_offsets(group_id), group_id
        view = original.group_view(group_id)
        assert view is not None
        persisted_before = view.generation_id > 0 or original.committed_offsets(group_id)
        if view.state in (GroupState.STABLE, GroupState.EMPTY) and persisted_before:
            assert fresh.group_view(group_id) == view, group_id


@pytest.mark.parametrize("seed", range(40))
def test_random_operations_replay_to_the_same_state(seed: int) -> None:
    sim = Simulation(seed)
    for _ in range(8):
        for _ in range(50):
            sim.step()
        sim.shell.confirm_all()
        assert_replays_to_same_state(sim.shell)
    sim.settle(25)
    assert_replays_to_same_state(sim.shell)
    # Left alone, every parked request is answered (exactly once: the harness checks) and the groups
    # settle; the log still replays to the same state.
    for _ in range(20):
        sim.shell.advance(30_000)
        sim.shell.confirm_all()
    assert all(sim.shell.answer(h) is not None for h in sim.sent)
    assert all(sim.shell.coord.group_view(g).state is GroupState.EMPTY for g in sim.shell.coord.group_ids())
    assert_replays_to_same_state(sim.shell)


def test_loading_phase() -> None:
    shell = Shell()
    gen, members = shell.stable_group("g", 2)
    shell.commit("g", {("t", 0): 33}, gen, members[0])
    shell.advance(1_000)
    partition = shell.coord.partition_for("g")

    new = GroupCoordinator(TEST_CONFIG, random.Random(1), active_partitions=())
    successor = Shell(coordinator=new, now_ms=shell.now)
    assert successor.heartbeat("g", members[0], gen) == ErrorCode.NOT_COORDINATOR
    assert successor.commit_errors(successor.commit("g", {("t", 0): 1})) == {ErrorCode.NOT_COORDINATOR}
    assert successor.call(DescribeGroupsRequest(("g",))).groups[0].error == ErrorCode.NOT_COORDINATOR
    new.begin_loading(partition)
    assert successor.heartbeat("g", members[0], gen) == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert successor.call(OffsetFetchRequest("g")).error == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert successor.call(ListGroupsRequest()).error == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    new.load_records(partition, shell.log[:1])
    future_record_type = Record(struct.pack(">hh1s", 5, 1, b"g"), b"whatever a newer broker writes")
    new.load_records(partition, [future_record_type, *shell.log[1:]])
    successor.feed(new.complete_loading(partition, successor.now))
    # The members carry on with the loaded generation; their sessions restarted at load time.
    assert successor.heartbeat("g", members[0], gen) == ErrorCode.NONE
    assert new.group_view("g") == shell.coord.group_view("g")
    assert {tp: o.offset for tp, o in new.committed_offsets("g").items()} == {("t", 0): 33}
    # The member that never heartbeats to the new coordinator expires: a rebalance starts.
    successor.advance(6_000)
    assert successor.heartbeat("g", members[0], gen) == ErrorCode.NONE
    successor.advance(5_000)
    assert [m.member_id for m in new.group_view("g").members] == [members[0]]
    assert successor.heartbeat("g", members[0], gen) == ErrorCode.REBALANCE_IN_PROGRESS


def test_unload_answers_parked_requests_not_coordinator() -> None:
    shell = Shell()
    gen, (member,) = shell.stable_group("g", 1)
    shell.auto_persist = False
    parked_join = shell.join_new("g")
    pending_commit = shell.commit("g", {("t", 0): 1}, gen, member)
    assert shell.answer(parked_join) is None and shell.answer(pending_commit) is None
    shell.feed(shell.coord.unload(shell.coord.partition_for("g"), shell.now))
    assert shell.answer(parked_join).error == ErrorCode.NOT_COORDINATOR
    assert shell.commit_errors(pending_commit) == {ErrorCode.NOT_COORDINATOR}
    assert shell.coord.group_view("g") is None
    assert shell.heartbeat("g", member, gen) == ErrorCode.NOT_COORDINATOR
    shell.confirm_all()  # late confirmations of dropped writes are ignored


def test_record_layout_is_kafkas() -> None:
    assert encode_offset_key("g", "t", 3) == struct.pack(">hh1sh1si", 1, 1, b"g", 1, b"t", 3)
    assert encode_group_key("grp") == struct.pack(">hh3s", 2, 3, b"grp")
    value = OffsetValue(offset=42, leader_epoch=5, metadata="m", commit_timestamp_ms=1000)
    assert encode_offset_value(value) == struct.pack(">hqih1sq", 3, 42, 5, 1, b"m", 1000)
    expiring = OffsetValue(42, -1, "", 1000, expire_timestamp_ms=2000)
    assert encode_offset_value(expiring) == struct.pack(">hqhqq", 1, 42, 0, 1000, 2000)
    member = MemberValue("m1", None, "c", "h", 300, 100, b"S", b"A")
    group = GroupValue("consumer", 7, "range", "m1", 99, (member,))
    assert encode_group_value(group) == (
        struct.pack(">hh8sih5sh2sqi", 3, 8, b"consumer", 7, 5, b"range", 2, b"m1", 99, 1)
        + struct.pack(">h2shh1sh1siii1si1s", 2, b"m1", -1, 1, b"c", 1, b"h", 300, 100, 1, b"S", 1, b"A")
    )
    # Round trips, including the older versions Kafka wrote.
    assert decode_key(encode_offset_key("g", "t", 3)) == OffsetKey("g", "t", 3)
    assert decode_key(struct.pack(">hh1sh1si", 0, 1, b"g", 1, b"t", 3)) == OffsetKey("g", "t", 3)
    assert decode_key(encode_group_key("grp")) == GroupKey("grp")
    assert decode_key(struct.pack(">hh1s", 3, 1, b"x")) is None  # a newer record type: skipped
    assert decode_offset_value(encode_offset_value(value)) == value
    assert decode_offset_value(encode_offset_value(expiring)) == expiring
    assert decode_offset_value(struct.pack(">hqh1sq", 0, 42, 1, b"m", 1000)) == OffsetValue(42, -1, "m", 1000)
    assert decode_group_value(encode_group_value(group)) == group
    v0 = struct.pack(">hh8sih5sh2si", 0, 8, b"consumer", 7, 5, b"range", 2, b"m1", 1) + struct.pack(
        ">h2sh1sh1sii1si1s", 2, b"m1", 1, b"c", 1, b"h", 100, 1, b"S", 1, b"A"
    )
    assert decode_group_value(v0) == GroupValue(
        "consumer", 7, "range", "m1", -1, (MemberValue("m1", None, "c", "h", 100, 100, b"S", b"A"),)
    )


@pytest.mark.parametrize(
    "bad", [b"", b"\x00", b"\x00\x01\x00\x05ab", encode_offset_key("g", "t", 1) + b"x", b"\xff\xff\x00\x00"]
)
def test_malformed_keys_are_clear_errors(bad: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_key(bad)


def test_malformed_values_are_clear_errors() -> None:
    for bad in (b"", b"\x00\x09" + bytes(20), encode_offset_value(OffsetValue(1, 1, "x", 1))[:-1]):
        with pytest.raises(RecordFormatError):
            decode_offset_value(bad)
    with pytest.raises(RecordFormatError):
        decode_group_value(encode_group_value(GroupValue("c", 1, None, None, 0, ()))[:-2])
    coordinator = GroupCoordinator(TEST_CONFIG, random.Random(0), active_partitions=())
    with pytest.raises(RecordFormatError):
        coordinator.load([Record(encode_group_key("g"), b"\x00\x07")], 0)


def reference_hashcode(s: str) -> int:
    h = 0
    for ch in s:
        for unit in (
            [ord(ch)]
            if ord(ch) < 0x10000
            else [0xD800 + ((ord(ch) - 0x10000) >> 10), 0xDC00 + ((ord(ch) - 0x10000) & 0x3FF)]
        ):
            h = (h * 31 + unit) % 2**32
    return h - 2**32 if h >= 2**31 else h


def test_partition_for_group_is_kafkas_formula() -> None:
    # Java's String.hashCode values: "hello" -> 99162322, "Aa" and "BB" collide at 2112,
    # "polygenelubricants" -> Integer.MIN_VALUE, which Kafka's Utils.abs maps to 0.
    assert java_string_hashcode("hello") == 99162322 and partition_for_group("hello", 50) == 99162322 % 50
    assert java_string_hashcode("Aa") == java_string_hashcode("BB") == 2112
    assert java_string_hashcode("polygenelubricants") == -(2**31)
    assert partition_for_group("polygenelubricants", 50) == 0  # Math.abs would have stayed negative
    # For a negative hash, Utils.abs is -h, not h & 0x7fffffff.
    negative = next(s for s in (f"group-{i}" for i in range(1000)) if java_string_hashcode(s) < 0)
    h = java_string_hashcode(negative)
    assert partition_for_group(negative, 50) == (-h) % 50
    assert any(
        (-java_string_hashcode(f"group-{i}")) % 50 != (java_string_hashcode(f"group-{i}") & 0x7FFFFFFF) % 50
        for i in range(1000)
        if java_string_hashcode(f"group-{i}") < 0
    )
    rng = random.Random(3)
    for _ in range(300):
        s = "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF), rng.randrange(0x10000, 0x10FFFF)]))
            for _ in range(rng.randrange(0, 12))
        )
        assert java_string_hashcode(s) == reference_hashcode(s)
