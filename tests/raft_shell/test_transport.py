"""RaftTransport over both carriers (tcp, grpc): encoding, one connection per pair carrying every group, hints,
Call, drops and reconnects; then the TCP carrier's framing against malformed, hostile and stalled peers."""

from __future__ import annotations

import asyncio
import random
import socket
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
    CARRIERS,
    DEFAULT_CARRIER,
    ENVELOPE_TARGET_BYTES,
    LeaderHint,
    PeerUnavailableError,
    RaftTransport,
    RemoteCallError,
    decode_message,
    encode_message,
)
from cluster.raft import transport_tcp as tcp
from proto.rpc import raft_pb2 as pb

MiB = 1 << 20

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


@pytest.fixture(params=CARRIERS)
def carrier(request) -> str:
    return request.param


class Net:
    def __init__(self, n: int, carrier: str = DEFAULT_CARRIER) -> None:
        self.n = n
        self.carrier = carrier
        self.t: dict[int, RaftTransport] = {}
        self.got: dict[int, list] = {}
        self.unreachable: dict[int, list] = {}
        self.hints: dict[int, list] = {}

    async def start(self, nid: int, port: int = 0, **kw) -> RaftTransport:
        t = RaftTransport(nid, {}, listen=f"127.0.0.1:{port}", rng=random.Random(nid), backoff_max_s=0.3,
                          carrier=self.carrier, **kw)
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


def test_messages_of_many_groups_hints_and_calls(carrier) -> None:
    async def main() -> None:
        net = Net(3, carrier)
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


def test_undeliverable_messages_are_dropped_and_reported_never_blocking(carrier) -> None:
    async def main() -> None:
        net = Net(2, carrier)
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


def test_a_full_queue_drops_new_messages(carrier) -> None:
    async def main() -> None:
        net = Net(2, carrier)
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


def test_the_dialer_reconnects_after_the_peer_restarts(carrier) -> None:
    async def main() -> None:
        net = Net(2, carrier)
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


def test_calls_to_dead_peers_fail_fast_and_a_client_without_a_server_can_call(carrier) -> None:
    async def main() -> None:
        net = Net(2, carrier)
        await net.start(1)
        t2 = await net.start(2)
        net.wire()
        client = RaftTransport(50, {2: f"127.0.0.1:{t2.port}", 3: "127.0.0.1:1"}, carrier=carrier)  # never started
        hang = asyncio.Event()

        async def stuck(payload: bytes) -> bytes:
            await hang.wait()
            return b""

        t2.register_handler("stuck", stuck)
        try:
            await net.connected()
            assert await client.call(2, "echo", b"c", 5) == b"2:c"
            assert await client.call(2, "echo", b"again", 5) == b"2:again"
            t0 = time.monotonic()
            with pytest.raises(PeerUnavailableError):
                await client.call(3, "echo", b"", 5)  # nobody listens there
            assert time.monotonic() - t0 < 2
            # A call in flight when the peer goes away fails as unavailable, long before its timeout.
            pending = asyncio.ensure_future(net.t[1].call(2, "stuck", b"", 30))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await t2.close()
            with pytest.raises(PeerUnavailableError):
                await pending
            assert time.monotonic() - t0 < 5
            t0 = time.monotonic()
            with pytest.raises(PeerUnavailableError):
                await net.t[1].call(2, "echo", b"", 5)  # dead now: refused at once
            assert time.monotonic() - t0 < 2
        finally:
            hang.set()
            await client.close()
            await net.close()

    asyncio.run(main())


def test_the_carrier_is_chosen_by_name() -> None:
    assert DEFAULT_CARRIER == "tcp" and set(CARRIERS) == {"tcp", "grpc"}
    assert RaftTransport(1, {}, carrier="grpc").carrier == "grpc"
    assert RaftTransport(1, {}).carrier == DEFAULT_CARRIER
    with pytest.raises(ValueError, match="unknown raft transport"):
        RaftTransport(1, {}, carrier="udp")


# ---------------------------------------------------------------------------------------------
# The TCP carrier's framing: [u32 length][u8 type][body]
# ---------------------------------------------------------------------------------------------


def _frame(ftype: int, body: bytes = b"") -> bytes:
    return tcp.HEADER.pack(len(body), ftype) + body


def _hello(node_id: int, flags: int = 0) -> bytes:
    return _frame(tcp.F_HELLO, tcp.hello_body(node_id, flags))


async def _raw(port: int, *chunks: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for c in chunks:
        writer.write(c)
    await writer.drain()
    return reader, writer


async def _closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the node sent until it closed the connection (fails if it stays open)."""
    out = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk


async def _still_serving(net: Net, a: int = 1, b: int = 2) -> None:
    before = len(net.got[b])
    net.t[a].send([Heartbeat(group_id="alive", from_id=a, to_id=b, term=1, commit=len(net.got[b]))])
    await _until(lambda: len(net.got[b]) == before + 1)
    assert net.t[a].connected(b) and net.t[b].connected(a)
    assert await net.t[a].call(b, "echo", b"ok", 5) == b"%d:ok" % b


def test_tcp_oversize_garbage_unknown_and_truncated_frames_close_only_their_connection(caplog) -> None:
    async def main() -> None:
        net = Net(2, "tcp")
        await net.start(1)
        t2 = await net.start(2)
        net.wire()
        t2.add_peer(3, "127.0.0.1:1")  # a known peer that this test impersonates (2 < 3: 2 never dials it)
        try:
            await net.connected()
            port = t2.port
            cases = {
                "oversize hello": [tcp.HEADER.pack(tcp.MAX_MESSAGE_BYTES + 1, tcp.F_HELLO)],
                "oversize frame": [_hello(77, tcp.HELLO_CALLS_ONLY),
                                   tcp.HEADER.pack(tcp.MAX_MESSAGE_BYTES + 1, tcp.F_ENVELOPE)],
                "garbage": [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
                "bad magic": [_frame(tcp.F_HELLO, tcp.HELLO.pack(b"NOPE", 1, 0, 5))],
                "bad version": [_frame(tcp.F_HELLO, tcp.HELLO.pack(tcp.MAGIC, 99, 0, 5))],
                "unknown frame type": [_hello(77, tcp.HELLO_CALLS_ONLY), _frame(99, b"x")],
                "undecodable call": [_hello(77, tcp.HELLO_CALLS_ONLY), _frame(tcp.F_CALL, b"\0" * 8 + b"\xff\xff\xff")],
                "envelope on a calls-only link": [_hello(77, tcp.HELLO_CALLS_ONLY), _frame(tcp.F_ENVELOPE, b"")],
                "undecodable envelope": [_hello(3), _frame(tcp.F_ENVELOPE, b"\xff\xff\xff\xff")],
                "envelope from another node": [_hello(3), _frame(tcp.F_ENVELOPE, pb.Envelope(from_node=1)
                                                                 .SerializeToString())],
                "second hello": [_hello(3), _hello(3)],
            }
            for name, chunks in cases.items():
                reader, writer = await _raw(port, *chunks)
                try:
                    await _closed_by_peer(reader)
                except TimeoutError:
                    raise AssertionError(f"{name}: the connection stayed open") from None
                finally:
                    writer.close()
                await _still_serving(net)
            # A truncated frame: the header promises more than ever arrives, then the sender hangs up.
            reader, writer = await _raw(port, _hello(77, tcp.HELLO_CALLS_ONLY), tcp.HEADER.pack(100, tcp.F_CALL),
                                        b"\0" * 10)
            writer.close()
            await _still_serving(net)
            await _until(lambda: all(c.node_id != 77 for c in t2._carrier._conns))
            assert any("above the limit" in r.getMessage() for r in caplog.records)
            assert any("unknown frame type 99" in r.getMessage() for r in caplog.records)
            assert any("undecodable envelope" in r.getMessage() for r in caplog.records)
            assert net.t[2].connected(1) and not net.t[2].connected(3)
        finally:
            await net.close()

    with caplog.at_level("WARNING", logger="tidelog.raft.transport"):
        asyncio.run(main())


def test_tcp_a_hello_from_an_unknown_node_or_this_node_is_refused(caplog) -> None:
    async def main() -> None:
        net = Net(2, "tcp")
        await net.start(1)
        t2 = await net.start(2)
        net.wire()
        try:
            await net.connected()
            for nid in (42, 2):
                reader, writer = await _raw(t2.port, _hello(nid))
                assert await _closed_by_peer(reader) == b""  # no hello back
                writer.close()
            assert t2._carrier.refused == 2
            assert not t2.connected(42) and 42 not in t2.peer_ids
            # A calls-only link from an unknown node (a client, a tool) is answered, for calls only.
            reader, writer = await _raw(t2.port, _hello(42, tcp.HELLO_CALLS_ONLY),
                                        _frame(tcp.F_CALL, tcp.CALL_ID.pack(7) + pb.CallRequest(
                                            method="echo", payload=b"q").SerializeToString()))
            n, ftype = tcp.HEADER.unpack(await reader.readexactly(5))
            assert ftype == tcp.F_HELLO and tcp.HELLO.unpack(await reader.readexactly(n))[3] == 2
            n, ftype = tcp.HEADER.unpack(await reader.readexactly(5))
            assert ftype == tcp.F_CALL_RESULT and await reader.readexactly(n) == tcp.CALL_RESULT.pack(7, 0) + b"2:q"
            writer.close()
            await _still_serving(net)
        finally:
            await net.close()

    with caplog.at_level("WARNING", logger="tidelog.raft.transport"):
        asyncio.run(main())
    assert any("node 42 is not a peer" in r.getMessage() for r in caplog.records)


def test_tcp_a_peer_that_stops_reading_costs_a_bounded_queue_then_its_connection() -> None:
    async def main() -> None:
        net = Net(2, "tcp")
        limit = 4 * MiB
        t2 = await net.start(2, max_queue_messages=1000, max_queue_bytes=limit, keepalive_ms=400)
        t2.add_peer(1, "127.0.0.1:1")  # node 1 dials (1 < 2): this test's socket plays node 1
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", t2.port))
        _reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(_hello(1))
        alive = True

        async def pings() -> None:  # node 1 looks alive (pings) but never reads a byte
            seq = 0
            while alive:
                seq += 1
                writer.write(_frame(tcp.F_PING, tcp.CALL_ID.pack(seq)))
                await asyncio.sleep(0.05)

        pinger = asyncio.ensure_future(pings())
        try:
            await _until(lambda: t2.connected(1))
            chunk = b"x" * (256 * 1024)
            index = 0
            t_end = time.monotonic() + 2.0
            peak_queue = peak_buffer = 0
            while time.monotonic() < t_end:
                entries = [Entry(1, index + i + 1, index + i + 1, EntryKind.DATA, chunk) for i in range(4)]
                t0 = time.monotonic()
                t2.send([AppendEntries(group_id="g", from_id=2, to_id=1, term=1, prev_log_index=index,
                                       prev_log_term=1, commit=0, entries=entries)])
                assert time.monotonic() - t0 < 0.05  # send never blocks
                index += 4
                st = t2.stats()[1]
                peak_queue = max(peak_queue, st["queued_bytes"])
                conn = t2._peers[1].stream
                if conn is not None:
                    peak_buffer = max(peak_buffer, conn.transport.get_write_buffer_size())
                await asyncio.sleep(0.002)
            assert t2.connected(1)  # its pings keep it
            assert peak_queue <= limit
            # The socket buffer holds at most the high-water mark plus one envelope written on top of it.
            assert peak_buffer <= tcp.HIGH_WATER_BYTES + ENVELOPE_TARGET_BYTES + MiB
            assert t2.stats()[1]["dropped"] > 0 and (1, {"g"}) in net.unreachable[2]
            # Silence (no more pings): closed within 2 x keepalive, and the queue is dropped.
            alive = False
            await _until(lambda: not t2.connected(1), timeout=3)
            await _until(lambda: t2.stats()[1]["queued_bytes"] == 0 or t2.stats()[1]["queued"] == 0, timeout=3)
        finally:
            alive = False
            pinger.cancel()
            writer.close()
            await net.close()

    asyncio.run(main())


def test_a_call_over_a_connection_that_just_died_fails_as_unavailable() -> None:
    """The peer's socket is gone but the reader has not noticed yet (a kill -9 a moment ago): the call must
    fail with PeerUnavailableError, not with the event loop's error about writing to a closed handle."""
    import uvloop  # the broker's loop; it raises on a write to a closed transport where asyncio only logs

    async def main() -> None:
        net = Net(2, "tcp")
        await net.start(1)
        await net.start(2)
        net.wire()
        try:
            await net.connected()
            peer = net.t[1]._peers[2]
            conn = peer.stream
            assert isinstance(conn, tcp.TcpConnection) and not conn.closed
            conn.transport.abort()  # the socket closes under the connection ...
            await asyncio.sleep(0)  # ... the loop closes the handle; the reader has not run yet
            assert not conn.closed and conn.transport.is_closing()
            with pytest.raises(PeerUnavailableError):
                await net.t[1].call(2, "echo", b"x", 5)
            assert conn.closed
            # The pair reconnects and calls work again.
            await net.connected()
            assert await net.t[1].call(2, "echo", b"y", 5) == b"2:y"
        finally:
            await net.close()

    uvloop.run(main())
