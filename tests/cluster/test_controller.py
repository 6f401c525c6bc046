"""The controller's command path and snapshots, sans network: a scripted `__controller` group."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from cluster.controller.controller import Controller, ControllerError, decode_command, encode_command
from cluster.raft.types import Configuration, Entry, EntryKind, NotLeaderError, Snapshot


@dataclass
class _Proposal:
    index: int
    last_index: int
    term: int


class FakeControllerGroup:
    """Commits every proposal at the next `drain()`, like the host would with a healthy quorum."""

    def __init__(self, controller: Controller, *, leader: int = 1, term: int = 1) -> None:
        self.controller = controller
        self.leader_id, self.term = leader, term
        self.next_index = 0
        self.pending: list[Entry] = []
        self.compactions: list[tuple[int, bytes]] = []

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.controller.node_id

    def propose(self, data, count):
        if not self.is_leader:
            raise NotLeaderError(self.leader_id, self.term)
        e = Entry(self.term, self.next_index, self.next_index, EntryKind.DATA, bytes(data))
        self.next_index += 1
        self.pending.append(e)
        return _Proposal(e.index, e.last_index, e.term)

    def drain(self, *, replace_term: int | None = None) -> None:
        entries, self.pending = self.pending, []
        if replace_term is not None:  # a new leader overwrote them: same offsets, other entries
            entries = [Entry(replace_term, e.index, e.last_index, EntryKind.NOOP, b"") for e in entries]
        if entries:
            self.controller.on_committed(entries)

    async def compact(self, index, data):
        self.compactions.append((index, data))


class LoopTransport:
    """transport.call straight into another broker's controller."""

    def __init__(self, controllers: dict[int, Controller]) -> None:
        self.controllers = controllers

    async def call(self, node, method, payload, timeout):
        return await self.controllers[node].handle_propose(payload)


def _register(broker: int) -> dict:
    return {"type": "register_broker", "broker_id": broker, "host": "h", "grpc_port": 1, "kafka_port": 2,
            "raft_port": 3}


def test_commands_commit_apply_and_answer_on_every_broker():
    async def body():
        leader, follower = Controller(1, snapshot_every=3), Controller(2)
        group = FakeControllerGroup(leader)
        leader.bind(group, LoopTransport({1: leader}))
        follower_group = FakeControllerGroup(follower)
        follower.bind(follower_group, LoopTransport({1: leader}))
        changes = []
        follower.add_listener(lambda md: changes.append(md.applied_index))

        async def host():  # the leader's drain, and the follower learning the same entries
            while True:
                entries = list(group.pending)
                group.drain()
                if entries:
                    follower.on_committed(entries)
                await asyncio.sleep(0.001)

        task = asyncio.ensure_future(host())
        try:
            reg = await follower.submit(_register(2), timeout=5)  # forwarded to the leader
            assert reg["broker_id"] == 2 and 2 in follower.metadata.brokers and 2 in leader.metadata.brokers
            first = await leader.submit({"type": "allocate_producer_ids", "count": 10, "request_id": "r1"})
            again = await follower.submit({"type": "allocate_producer_ids", "count": 10, "request_id": "r1"})
            assert first == again == [0, 10], "a retried request is answered, not applied twice"
            with pytest.raises(ControllerError) as exc:
                await follower.submit({"type": "delete_topic", "name": "nope"}, timeout=5)
            assert exc.value.error_name == "UNKNOWN_TOPIC_OR_PARTITION"
            assert changes, "listeners hear about applied commands"
            await asyncio.sleep(0.01)
            assert group.compactions, "snapshot every 3 applied entries"
            index, data = group.compactions[-1]
            restored = Controller(3)
            restored.on_restore(Snapshot(index, 1, Configuration(frozenset({1})), data))
            assert restored.metadata.applied_index == index and restored.metadata.snapshot() == data
            assert set(restored.metadata.brokers) == {2}
        finally:
            task.cancel()

    asyncio.run(asyncio.wait_for(body(), 10))


def test_a_replaced_proposal_is_retried_under_the_new_leader():
    async def body():
        c = Controller(1)
        group = FakeControllerGroup(c)
        c.bind(group, None)
        submitted = asyncio.ensure_future(c.submit(_register(1), timeout=5))
        await asyncio.sleep(0.01)
        group.drain(replace_term=2)  # lost: the same offset committed with another term's entry
        await asyncio.sleep(0.06)  # the controller retries (still the leader here)
        group.drain()
        assert (await submitted)["broker_id"] == 1
        assert c.metadata.brokers[1].incarnation == 0, "applied once"

    asyncio.run(asyncio.wait_for(body(), 10))


def test_command_batches_round_trip():
    cmd = {"type": "delete_topic", "name": "x"}
    assert json.loads(decode_command(encode_command(cmd))) == cmd
    assert decode_command(b"garbage") is None
