"""RaftTransport: encoding, one stream per pair carrying every group, hints, Call, drops and reconnects."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from cluster.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from cluster.raft.transport import (
    LeaderHint,
    PeerUnavailableError,
    RaftTransport,
    RemoteCallError,
    decode_message,
    encode_message,
)
from proto.rpc import raft_pb2 as pb

SAMPLES = [
    RequestVote(group_id="t/0", from_id=1, to_id=2, term=5, pre_vote=True, last_log_index=-1, last_log_term=0,
                transfer=True),
    RequestVoteResponse(group_id=3, from_id=2, to_id=1, term=5, pre_vote=False, reject=True),
    AppendEntries(group_id="t/0", from_id=1, to_id=2, term=5, prev_log_index=9, prev_log_term=4, commit=9,
                  entries=[Entry(5, 10, 10, EntryKind.NOOP, b""), Entry(5, 11, 13, EntryKind.DATA, b"x" * 5000),
                           Entry(5, 14, 14, EntryKind.CONFIG, b"1,2;3")]),
    AppendEntries(group_id="t/0", from_id=1, to_id=2, term=5, prev_log_index=-1, prev_log_term=0, commit=-1),
    AppendEntriesResponse(group_id="t/0", from_id=2, to_id=1, term=5, index=13),
    AppendEntriesResponse(group_id="t/0", from_id=2, to_id=1, term=5, index=9, reject=True, reject_hint_index=4,
                          reject_hint_term=3),
    Heartbeat(group_id="__controller", from_id=1, to_id=3, term=2, commit=-1),
    HeartbeatResponse(group_id="__controller", from_id=3, to_id=1, term=2),
    InstallSnapshot(group_id="t/1", from_id=1, to_id=3, term=7,
                    snapshot=Snapshot(99, 6, Configuration(frozenset({1, 3}), frozenset({4})), b"state")),
    TimeoutNow(group_id=12, from_id=1, to_id=2, term=8),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_type_round_trips(msg) -> None:
    p = pb.RaftMessage()
    encode_message(msg, p)
    back = decode_message(pb.RaftMessage.FromString(p.SerializeToString()))
    assert back == msg


def test_malformed_entries_are_rejected() -> None:
    msg = SAMPLES[2]
    p = pb.RaftMessage()
    encode_message(msg, p)
    bad = pb.RaftMessage()
    bad.CopyFrom(p)
    bad.entry_meta[5] = 12  # second entry no longer follows the first
    with pytest.raises(ValueError):
        decode_message(bad)
    bad.CopyFrom(p)
    del bad.entry_data[-1]
    with pytest.raises(ValueError):
        decode_message(bad)
    bad.CopyFrom(p)
    bad.type = 99  # type: ignore[assignment]
    with pytest.raises(ValueError):
        decode_message(bad)


class Net:
    def __init__(self, n: int) -> None:
        self.n = n
        self.t: dict[int, RaftTransport] = {}
        self.got: dict[int, list] = {}
        self.unreachable: dict[int, list] = {}
        self.hints: dict[int, list] = {}

    async def start(self, nid: int, port: int = 0, **kw) -> RaftTransport:
        t = RaftTransport(nid, {}, listen=f"127.0.0.1:{port}", rng=random.Random(nid), backoff_max_s=0.3, **kw)
        self.got.setdefault(nid, [])
        self.unreachable.setdefault(nid, [])
        self.hints.setdefault(nid, [])
        t.set_receiver(self.got[nid].extend, lambda to, groups, nid=nid: self.unreachable[nid].append((to, groups)))
        t.on_leader_hint(lambda frm, hs, nid=nid: self.hints[nid].extend((frm, h) for h in hs))

        async def echo(payload: bytes, nid=nid) -> bytes:
            if payload == b"fail":
                raise RuntimeError("handler failed")
            return b"%d:" % nid + payload

        t.register_handler("echo", echo)
        await t.start()
        self.t[nid] = t
        return t

    def wire(self) -> None:
        for i, a in self.t.items():
            for j, b in self.t.items():
                if i != j:
                    a.add_peer(j, f"127.0.0.1:{b.port}")

    async def connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(a.connected(j) for i, a in self.t.items() for j in self.t if j != i):
            assert time.monotonic() < deadline, {i: a.stats() for i, a in self.t.items()}
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for t in self.t.values():
            await t.close()


async def _until(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_messages_of_many_groups_hints_and_calls() -> None:
    async def main() -> None:
        net = Net(3)
        for i in (1, 2, 3):
            await net.start(i)
        net.wire()
        try:
            await net.connected()
            to2 = [m for m in SAMPLES if m.to_id == 2]
            net.t[1].send(to2)
            net.t[1].send([Heartbeat(group_id=f"p/{g}", from_id=1, to_id=3, term=1, commit=g) for g in range(500)])
            await _until(lambda: len(net.got[2]) == len(to2) and len(net.got[3]) == 500)
            assert net.got[2] == to2  # in order
            assert [m.group_id for m in net.got[3]] == [f"p/{g}" for g in range(500)]
            # 500 heartbeats of 500 groups travelled in a handful of envelopes, not 500.
            assert net.t[1].stats()[3]["sent_envelopes"] < 20
            # Node 3 (the acceptor side of both of its streams) answers on them.
            net.t[3].send([HeartbeatResponse(group_id="p/1", from_id=3, to_id=1, term=1)])
            await _until(lambda: any(isinstance(m, HeartbeatResponse) for m in net.got[1]))
            hint = LeaderHint("p/1", 2, 4, (1, 2))
            net.t[2].publish_hints([hint])
            await _until(lambda: all((2, hint) in net.hints[i] for i in (1, 2, 3)))
            assert await net.t[3].call(1, "echo", b"hi", 5) == b"1:hi"
            assert await net.t[1].call(1, "echo", b"self", 5) == b"1:self"
            with pytest.raises(RemoteCallError, match="handler failed"):
                await net.t[1].call(2, "echo", b"fail", 5)
            with pytest.raises(RemoteCallError, match="no handler"):
                await net.t[1].call(2, "nope", b"", 5)
            with pytest.raises(PeerUnavailableError):
                await net.t[1].call(9, "echo", b"", 1)
        finally:
            await net.close()

    asyncio.run(main())


def test_undeliverable_messages_are_dropped_and_reported_never_blocking() -> None:
    async def main() -> None:
        net = Net(2)
        await net.start(1, max_queue_messages=10)
        t1 = net.t[1]
        try:
            t1.add_peer(2, "127.0.0.1:1")  # nobody listens there
            t0 = time.monotonic()
            t1.send([Heartbeat(group_id="g", from_id=1, to_id=2, term=1, commit=0),
                     Heartbeat(group_id="h", from_id=1, to_id=7, term=1, commit=0)])
            assert time.monotonic() - t0 < 0.1
            assert (2, {"g"}) in net.unreachable[1] and (7, {"h"}) in net.unreachable[1]
        finally:
            await net.close()

    asyncio.run(main())


def test_a_full_queue_drops_new_messages() -> None:
    async def main() -> None:
        net = Net(2)
        await net.start(1, max_queue_messages=5)
        await net.start(2)
        net.wire()
        try:
            await net.connected()
            t1 = net.t[1]
            # Everything is queued synchronously before the writer task runs: the queue holds 5.
            t1.send([Heartbeat(group_id=f"g{i}", from_id=1, to_id=2, term=1, commit=0) for i in range(8)])
            assert sum(len(g) for _to, g in net.unreachable[1]) == 3
            await _until(lambda: len(net.got[2]) == 5)
        finally:
            await net.close()

    asyncio.run(main())


def test_the_dialer_reconnects_after_the_peer_restarts() -> None:
    async def main() -> None:
        net = Net(2)
        await net.start(1)
        t2 = await net.start(2)
        net.wire()
        try:
            await net.connected()
            port = t2.port
            await t2.close()
            await _until(lambda: not net.t[1].connected(2))
            net.t[1].send([Heartbeat(group_id="g", from_id=1, to_id=2, term=1, commit=0)])
            assert net.unreachable[1]
            net.got[2].clear()
            t2 = await net.start(2, port=port)
            t2.add_peer(1, f"127.0.0.1:{net.t[1].port}")
            await _until(lambda: net.t[1].connected(2) and t2.connected(1), timeout=10)
            net.t[1].send([Heartbeat(group_id="g", from_id=1, to_id=2, term=1, commit=1)])
            t2.send([HeartbeatResponse(group_id="g", from_id=2, to_id=1, term=1)])
            await _until(lambda: len(net.got[2]) == 1 and any(isinstance(m, HeartbeatResponse) for m in net.got[1]))
        finally:
            await net.close()

    asyncio.run(main())


def test_the_internal_service_is_versioned() -> None:
    assert pb.DESCRIPTOR.package == "tidelog.internal.v1"
    assert set(pb.DESCRIPTOR.services_by_name) == {"Raft"}
    assert set(pb.DESCRIPTOR.services_by_name["Raft"].methods_by_name) == {"Stream", "Call"}
