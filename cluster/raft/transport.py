"""RaftTransport: the inter-broker link of the Raft host (docs/cluster-design.md, "Transport").

* One connection per node pair, dialed by the lower node id, carrying the Raft messages of every group on
  that pair (multi-raft) plus LeaderHints as protobuf ``Envelope``s (proto/rpc/raft.proto). ``send`` never
  blocks: messages go into the peer's bounded queue and its writer task coalesces everything queued into
  envelopes of about ENVELOPE_TARGET_BYTES, so a host drain's messages for a peer travel together and
  heartbeats of all groups share an envelope.
* Full queue or no connection: the message is dropped and the cores hear ``report_unreachable`` through
  the ``on_unreachable`` callback; Raft retransmits. The host is never blocked by a slow peer.
* The dialer reconnects with exponential backoff and jitter (seeded rng); the acceptor keeps the newest
  connection a peer opened. Keepalive pings detect a dead peer within a few seconds; a killed process is
  noticed at once (its sockets reset).
* ``call(node, method, payload) -> bytes``: a tiny unary RPC for the cluster runtime with a handler registry
  (forward a controller command, a membership change) on the same port.

Two carriers move the same envelopes and calls, picked by ``carrier=`` (``tidelog serve --raft-transport``):
* ``tcp`` (transport_tcp.py, the default): one plain asyncio TCP connection per pair with length-prefixed
  frames; a write is a ``transport.write`` (no await unless the socket buffer is above its high-water mark):
  tens of microseconds per hop.
* ``grpc`` (transport_grpc.py): a bidirectional gRPC ``Stream`` per pair plus a unary ``Call`` RPC (service
  tidelog.internal.v1.Raft); ~1.2 ms per hop (grpc.aio's poller thread and one write in flight per stream).
This module holds what both share: encoding, peer queues, coalescing, hints, the handler registry, stats.

Messages are encoded with entries as packed metadata (term, index, last_index, kind) + one bytes field per
entry holding its data (a RecordBatch) as is.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from proto.rpc import raft_pb2 as pb

from .types import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryKind,
    GroupId,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)

log = logging.getLogger("tidelog.raft.transport")

MiB = 1 << 20
MAX_MESSAGE_BYTES = 256 * MiB  # one envelope; a controller snapshot is the largest thing sent
DEFAULT_QUEUE_MESSAGES = 50_000
DEFAULT_QUEUE_BYTES = 256 * MiB
ENVELOPE_TARGET_BYTES = 8 * MiB  # a writer splits what is queued into envelopes of about this size
CARRIERS = ("tcp", "grpc")
DEFAULT_CARRIER = "tcp"

_F_PRE_VOTE = 1
_F_REJECT = 2
_F_TRANSFER = 4
_KINDS = (EntryKind.DATA, EntryKind.NOOP, EntryKind.CONFIG)


@dataclass(slots=True, frozen=True)
class LeaderHint:
    group_id: GroupId
    leader_id: NodeId
    term: int
    isr: tuple[NodeId, ...]


class RemoteCallError(Exception):
    """The remote handler raised (or the method is unknown); the message is the remote error."""


class PeerUnavailableError(ConnectionError):
    """The peer could not be reached (down, unknown address, connection refused)."""


Handler = Callable[[bytes], Awaitable[bytes]]


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def _set_group(target, group_id: GroupId) -> None:
    if isinstance(group_id, int):
        target.group_number = group_id
    else:
        target.group_name = group_id


def _get_group(source) -> GroupId:
    return source.group_name if source.WhichOneof("group") == "group_name" else source.group_number


def encode_message(m: Message, out: pb.RaftMessage) -> int:
    """Fill ``out`` from ``m``; returns the bytes of entry/snapshot data carried (for queue accounting)."""
    mtype = type(m)
    _set_group(out, m.group_id)
    out.from_node = m.from_id
    out.to_node = m.to_id
    out.term = m.term
    if mtype is AppendEntries:
        out.type = pb.APPEND_ENTRIES
        out.index = m.prev_log_index
        out.log_term = m.prev_log_term
        out.commit = m.commit
        nbytes = 0
        if m.entries:
            meta: list[int] = []
            datas: list[bytes] = []
            for e in m.entries:
                meta += (e.term, e.index, e.last_index, int(e.kind))
                d = e.data
                datas.append(d if type(d) is bytes else bytes(d))
                nbytes += len(d)
            out.entry_meta.extend(meta)
            out.entry_data.extend(datas)
        return nbytes
    if mtype is AppendEntriesResponse:
        out.type = pb.APPEND_ENTRIES_RESPONSE
        out.index = m.index
        if m.reject:
            out.flags = _F_REJECT
            out.reject_hint_index = m.reject_hint_index
            out.reject_hint_term = m.reject_hint_term
        return 0
    if mtype is Heartbeat:
        out.type = pb.HEARTBEAT
        out.commit = m.commit
        return 0
    if mtype is HeartbeatResponse:
        out.type = pb.HEARTBEAT_RESPONSE
        return 0
    if mtype is RequestVote:
        out.type = pb.REQUEST_VOTE
        out.index = m.last_log_index
        out.log_term = m.last_log_term
        out.flags = (_F_PRE_VOTE if m.pre_vote else 0) | (_F_TRANSFER if m.transfer else 0)
        return 0
    if mtype is RequestVoteResponse:
        out.type = pb.REQUEST_VOTE_RESPONSE
        out.flags = (_F_PRE_VOTE if m.pre_vote else 0) | (_F_REJECT if m.reject else 0)
        return 0
    if mtype is InstallSnapshot:
        out.type = pb.INSTALL_SNAPSHOT
        s = m.snapshot
        snap = out.snapshot
        snap.index = s.index
        snap.term = s.term
        snap.voters.extend(sorted(s.configuration.voters))
        snap.learners.extend(sorted(s.configuration.learners))
        snap.data = bytes(s.data)
        return len(s.data)
    if mtype is TimeoutNow:
        out.type = pb.TIMEOUT_NOW
        return 0
    raise TypeError(f"cannot encode {mtype.__name__}")


def decode_message(p: pb.RaftMessage) -> Message:
    """Build the core's message. Raises ValueError on a malformed message."""
    t = p.type
    gid = _get_group(p)
    common = {"group_id": gid, "from_id": p.from_node, "to_id": p.to_node, "term": p.term}
    if t == pb.APPEND_ENTRIES:
        meta = p.entry_meta
        datas = p.entry_data
        n = len(datas)
        if len(meta) != 4 * n:
            raise ValueError("entry metadata does not match the entry data")
        entries = []
        if n:
            meta = list(meta)
            datas = list(datas)
            expect = p.index + 1  # entries are contiguous after prev_log_index
            for i in range(n):
                j = 4 * i
                kind = meta[j + 3]
                if not 0 <= kind <= 2 or meta[j + 1] != expect or meta[j + 2] < expect or meta[j] > p.term:
                    raise ValueError("entries are not contiguous after prev_log_index or have a bad kind/term")
                expect = meta[j + 2] + 1
                entries.append(Entry(meta[j], meta[j + 1], meta[j + 2], _KINDS[kind], datas[i]))
        return AppendEntries(prev_log_index=p.index, prev_log_term=p.log_term, entries=entries,
                             commit=p.commit, **common)
    if t == pb.APPEND_ENTRIES_RESPONSE:
        return AppendEntriesResponse(index=p.index, reject=bool(p.flags & _F_REJECT),
                                     reject_hint_index=p.reject_hint_index if p.flags & _F_REJECT else -1,
                                     reject_hint_term=p.reject_hint_term, **common)
    if t == pb.HEARTBEAT:
        return Heartbeat(commit=p.commit, **common)
    if t == pb.HEARTBEAT_RESPONSE:
        return HeartbeatResponse(**common)
    if t == pb.REQUEST_VOTE:
        return RequestVote(pre_vote=bool(p.flags & _F_PRE_VOTE), last_log_index=p.index,
                           last_log_term=p.log_term, transfer=bool(p.flags & _F_TRANSFER), **common)
    if t == pb.REQUEST_VOTE_RESPONSE:
        return RequestVoteResponse(pre_vote=bool(p.flags & _F_PRE_VOTE), reject=bool(p.flags & _F_REJECT),
                                   **common)
    if t == pb.INSTALL_SNAPSHOT:
        s = p.snapshot
        cfg = Configuration(frozenset(s.voters), frozenset(s.learners))
        return InstallSnapshot(snapshot=Snapshot(s.index, s.term, cfg, s.data), **common)
    if t == pb.TIMEOUT_NOW:
        return TimeoutNow(**common)
    raise ValueError(f"unknown message type {t}")


# ---------------------------------------------------------------------------------------------
# Peers and connections (shared by both carriers)
# ---------------------------------------------------------------------------------------------


class Connection:
    """One connected link to a peer, as the shared writer sees it. A carrier subclasses it."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    async def write(self, env: pb.Envelope) -> None:
        """Send one envelope. Raises ConnectionError when the link is dead; ValueError when the envelope
        cannot be sent at all (too large): it is dropped."""
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


class _Peer:
    __slots__ = (
        "address",
        "connected_once",
        "dialer",
        "dropped",
        "hints",
        "link",
        "node_id",
        "queue",
        "queued_bytes",
        "sent_envelopes",
        "stream",
        "wake",
        "writer",
        "writing",
    )

    def __init__(self, node_id: NodeId, address: str | None) -> None:
        self.node_id = node_id
        self.address = address
        self.link: object | None = None  # the carrier's own per-peer state (gRPC channel, a calls-only link)
        self.stream: Connection | None = None
        self.queue: deque[tuple[Message, int]] = deque()  # (message, data bytes)
        self.hints: list[LeaderHint] = []
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.writer: asyncio.Task | None = None
        self.dialer: asyncio.Task | None = None
        self.connected_once = False
        self.sent_envelopes = 0
        self.dropped = 0
        self.writing: Connection | None = None  # the connection a write is in flight on


def _data_bytes(m: Message) -> int:
    mtype = type(m)
    if mtype is AppendEntries:
        return sum(len(e.data) for e in m.entries)  # type: ignore[attr-defined]
    if mtype is InstallSnapshot:
        return len(m.snapshot.data)  # type: ignore[attr-defined]
    return 0


class Carrier:
    """What moves envelopes and calls between brokers (transport_tcp.TcpCarrier, transport_grpc.GrpcCarrier).
    It calls back into the transport: ``_attach``/``_detach`` a peer's connection, ``_receive`` an envelope,
    ``_serve_call`` a call, ``_drop_queue`` on a lost connection."""

    name = ""

    def __init__(self, transport: RaftTransport) -> None:
        self.t = transport

    async def start(self) -> int:
        """Listen on ``transport.listen``; returns the port."""
        raise NotImplementedError

    async def close(self) -> None:
        """After every peer is stopped: end the server and every connection and task left."""
        raise NotImplementedError

    async def session(self, peer: _Peer) -> bool:
        """Dial ``peer``, attach the connection and serve it until it ends. Returns whether it got connected
        (the transport's dial loop then restarts its backoff). Connection failures are logged, not raised."""
        raise NotImplementedError

    def peer_stopped(self, peer: _Peer) -> None:
        """``peer`` was removed (or the transport closes): release its per-peer state."""

    async def call(self, peer: _Peer, method: str, payload: bytes, timeout: float) -> bytes:
        raise NotImplementedError


class RaftTransport:
    """See the module docstring. Build, ``set_receiver`` (the host does), ``await start()``.
    ``carrier``: "tcp" (framed asyncio TCP, the default) or "grpc"."""

    def __init__(
        self,
        node_id: NodeId,
        peers: dict[NodeId, str],
        *,
        listen: str = "127.0.0.1:0",
        rng: random.Random | None = None,
        max_queue_messages: int = DEFAULT_QUEUE_MESSAGES,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        keepalive_ms: int = 2000,
        carrier: str = DEFAULT_CARRIER,
    ) -> None:
        assert node_id > 0
        if carrier not in CARRIERS:
            raise ValueError(f"unknown raft transport {carrier!r}: expected one of {', '.join(CARRIERS)}")
        self.node_id = node_id
        self.listen = listen
        self.port: int | None = None
        self._rng = rng or random.Random()
        self._max_msgs = max_queue_messages
        self._max_bytes = max_queue_bytes
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._keepalive_ms = keepalive_ms
        self._peers: dict[NodeId, _Peer] = {}
        for nid, addr in peers.items():
            if nid != node_id:
                self._peers[nid] = _Peer(nid, addr)
        self._handlers: dict[str, Handler] = {}
        self._on_messages: Callable[[list[Message]], None] | None = None
        self._on_unreachable: Callable[[NodeId, set[GroupId]], None] | None = None
        self._hint_callbacks: list[Callable[[NodeId, list[LeaderHint]], None]] = []
        self._closed = False
        self._started = False
        self.received_envelopes = 0
        self.bad_messages = 0
        if carrier == "tcp":
            from .transport_tcp import TcpCarrier

            self._carrier: Carrier = TcpCarrier(self)
        else:
            from .transport_grpc import GrpcCarrier

            self._carrier = GrpcCarrier(self)

    @property
    def carrier(self) -> str:
        return self._carrier.name

    # -- wiring ---------------------------------------------------------------------------------

    def set_receiver(self, on_messages: Callable[[list[Message]], None],
                     on_unreachable: Callable[[NodeId, set[GroupId]], None]) -> None:
        """The host: inbound Raft messages (per envelope, in order) and undeliverable destinations."""
        self._on_messages = on_messages
        self._on_unreachable = on_unreachable

    def on_leader_hint(self, callback: Callable[[NodeId, list[LeaderHint]], None]) -> None:
        """``callback(from_node, hints)`` for every hint received, and for this node's own (publish_hints)."""
        self._hint_callbacks.append(callback)

    def register_handler(self, method: str, handler: Handler) -> None:
        if method in self._handlers:
            raise ValueError(f"a handler for {method!r} is already registered")
        self._handlers[method] = handler

    def add_peer(self, node_id: NodeId, address: str) -> None:
        """A new broker joined (or moved): connect to it."""
        if node_id == self.node_id:
            return
        peer = self._peers.get(node_id)
        if peer is not None and peer.address == address:
            return
        if peer is not None:
            self._stop_peer(peer)
        peer = self._peers[node_id] = _Peer(node_id, address)
        if self._started:
            self._start_peer(peer)

    def remove_peer(self, node_id: NodeId) -> None:
        peer = self._peers.pop(node_id, None)
        if peer is not None:
            self._stop_peer(peer)

    @property
    def peer_ids(self) -> list[NodeId]:
        return sorted(self._peers)

    def connected(self, node_id: NodeId) -> bool:
        peer = self._peers.get(node_id)
        return peer is not None and peer.stream is not None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.port = await self._carrier.start()
        self._started = True
        for peer in self._peers.values():
            self._start_peer(peer)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [t for p in self._peers.values() for t in (p.writer, p.dialer) if t is not None]
        for peer in self._peers.values():
            self._stop_peer(peer)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._carrier.close()

    def _start_peer(self, peer: _Peer) -> None:
        loop = asyncio.get_running_loop()
        peer.writer = loop.create_task(self._write_loop(peer))
        if self.node_id < peer.node_id and peer.address:
            peer.dialer = loop.create_task(self._dial_loop(peer))

    async def _dial_loop(self, peer: _Peer) -> None:
        """Keep a connection to ``peer`` (this node dials it): exponential backoff with jitter (seeded rng)."""
        initial, cap = self._backoff
        delay = initial
        while not self._closed:
            if await self._carrier.session(peer):
                delay = initial
            if self._closed:
                return
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(cap, delay * 2)

    def _stop_peer(self, peer: _Peer) -> None:
        for t in (peer.writer, peer.dialer):
            if t is not None:
                t.cancel()
        if peer.stream is not None:
            peer.stream.close()
            peer.stream = None
        self._carrier.peer_stopped(peer)

    # -- sending ---------------------------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> None:
        """Queue messages for their destinations. Never blocks; undeliverable ones are reported."""
        unreachable: dict[NodeId, set[GroupId]] = {}
        woken: set[NodeId] = set()
        peers = self._peers
        for m in messages:
            to = m.to_id
            peer = peers.get(to)
            nbytes = _data_bytes(m)
            if (
                peer is None
                or peer.stream is None
                or len(peer.queue) >= self._max_msgs
                or (peer.queued_bytes + nbytes > self._max_bytes and peer.queue)
            ):
                if peer is not None:
                    peer.dropped += 1
                unreachable.setdefault(to, set()).add(m.group_id)
                continue
            peer.queue.append((m, nbytes))
            peer.queued_bytes += nbytes
            if to not in woken:
                woken.add(to)
                peer.wake.set()
        if unreachable and self._on_unreachable is not None:
            for to, groups in unreachable.items():
                self._on_unreachable(to, groups)

    def publish_hints(self, hints: list[LeaderHint]) -> None:
        """Tell every peer (and this node's own hint callbacks) who leads these groups."""
        if not hints:
            return
        for peer in self._peers.values():
            if peer.stream is not None:
                peer.hints.extend(hints)
                peer.wake.set()
        self._deliver_hints(self.node_id, hints)

    def _deliver_hints(self, from_node: NodeId, hints: list[LeaderHint]) -> None:
        for cb in self._hint_callbacks:
            try:
                cb(from_node, hints)
            except Exception:  # a runtime bug must not kill the transport
                log.exception("leader hint callback failed")

    async def _write_loop(self, peer: _Peer) -> None:
        """Coalesce whatever is queued into envelopes of about ENVELOPE_TARGET_BYTES and write them. The gRPC
        carrier awaits each write (what piles up meanwhile leaves together next); the TCP carrier's write
        returns at once unless the socket's buffer is above its high-water mark."""
        while True:
            await peer.wake.wait()
            peer.wake.clear()
            while peer.queue or peer.hints:
                stream = peer.stream
                if stream is None:
                    self._drop_queue(peer)
                    break
                env = pb.Envelope(from_node=self.node_id)
                groups: set[GroupId] = set()
                size = 0
                q = peer.queue
                add = env.messages.add
                try:
                    while q and size < ENVELOPE_TARGET_BYTES:
                        m, nbytes = q.popleft()
                        peer.queued_bytes -= nbytes
                        size += encode_message(m, add()) + 64
                        groups.add(m.group_id)
                except Exception:
                    log.exception("cannot encode a Raft message for node %d; dropping the envelope", peer.node_id)
                    continue
                if peer.hints:
                    for h in peer.hints:
                        ph = env.hints.add(leader_id=h.leader_id, term=h.term, isr=h.isr)
                        _set_group(ph, h.group_id)
                    peer.hints = []
                peer.writing = stream
                try:
                    await stream.write(env)
                    peer.sent_envelopes += 1
                except ValueError as exc:  # this envelope cannot travel (too large): Raft retransmits
                    log.error("node %d: dropping an envelope for node %d: %s", self.node_id, peer.node_id, exc)
                    self._report(peer.node_id, groups)
                except ConnectionError as exc:
                    log.debug("write to node %d failed: %s", peer.node_id, exc)
                    self._detach(peer, stream)
                    self._report(peer.node_id, groups)
                    self._drop_queue(peer)
                    break
                except asyncio.CancelledError:
                    # The connection died or was replaced under a write that would never finish (see
                    # _unblock_writer): what it carried is lost; Raft retransmits.
                    self._report(peer.node_id, groups)
                    raise
                finally:
                    peer.writing = None

    def _drop_queue(self, peer: _Peer) -> None:
        groups = {m.group_id for m, _ in peer.queue}
        peer.dropped += len(peer.queue)
        peer.queue.clear()
        peer.queued_bytes = 0
        peer.hints = []
        self._report(peer.node_id, groups)

    def _report(self, node_id: NodeId, groups: set[GroupId]) -> None:
        if groups and self._on_unreachable is not None:
            self._on_unreachable(node_id, groups)

    # -- connections (the carriers call these) ---------------------------------------------------

    def _unblock_writer(self, peer: _Peer, stream: Connection) -> None:
        """A write on a dead connection may never complete: restart the peer's writer."""
        if peer.writing is stream and peer.writer is not None and not self._closed:
            peer.writer.cancel()
            peer.writing = None
            peer.writer = asyncio.get_running_loop().create_task(self._write_loop(peer))
            peer.wake.set()

    def _attach(self, peer: _Peer, stream: Connection) -> None:
        old = peer.stream
        if old is not None and old is not stream:
            old.close()
            self._unblock_writer(peer, old)
        peer.stream = stream
        if not peer.connected_once:
            log.info("node %d: connected to node %d (%s)", self.node_id, peer.node_id, self.carrier)
        else:
            log.info("node %d: reconnected to node %d (%s)", self.node_id, peer.node_id, self.carrier)
        peer.connected_once = True

    def _detach(self, peer: _Peer, stream: Connection) -> None:
        stream.close()
        self._unblock_writer(peer, stream)
        if peer.stream is stream:
            peer.stream = None
            log.info("node %d: lost the connection to node %d", self.node_id, peer.node_id)

    def _receive(self, env: pb.Envelope) -> None:
        self.received_envelopes += 1
        if env.messages and self._on_messages is not None:
            msgs: list[Message] = []
            me = self.node_id
            for p in env.messages:
                try:
                    m = decode_message(p)
                except (ValueError, TypeError) as exc:
                    self.bad_messages += 1
                    log.warning("node %d: dropping a malformed Raft message from node %d: %s", me,
                                env.from_node, exc)
                    continue
                if m.to_id != me or m.from_id != env.from_node:
                    self.bad_messages += 1
                    continue
                msgs.append(m)
            if msgs:
                self._on_messages(msgs)
        if env.hints:
            hints = [LeaderHint(_get_group(h), h.leader_id, h.term, tuple(h.isr)) for h in env.hints]
            self._deliver_hints(env.from_node, hints)

    def _accept_peer(self, peer_id: NodeId) -> _Peer | None:
        """A node dialed us: its peer record (the gRPC carrier answers nodes it has no address for)."""
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = _Peer(peer_id, None)
            if self._started:
                self._start_peer(peer)
        return peer

    # -- unary calls -----------------------------------------------------------------------------

    async def call(self, node_id: NodeId, method: str, payload: bytes, timeout: float) -> bytes:
        """Invoke ``method`` on ``node_id`` (this node: the local handler). Raises RemoteCallError,
        PeerUnavailableError or TimeoutError."""
        if node_id == self.node_id:
            return await self._invoke(method, payload)
        peer = self._peers.get(node_id)
        if peer is None:
            raise PeerUnavailableError(f"unknown node {node_id}")
        return await self._carrier.call(peer, method, payload, timeout)

    async def _invoke(self, method: str, payload: bytes) -> bytes:
        handler = self._handlers.get(method)
        if handler is None:
            raise RemoteCallError(f"no handler for method {method!r} on node {self.node_id}")
        return await handler(payload)

    async def _serve_call(self, method: str, payload: bytes) -> tuple[bytes, str]:
        """Run a peer's call: (payload, "") or (b"", error)."""
        try:
            return await self._invoke(method, payload), ""
        except RemoteCallError as exc:
            return b"", str(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the caller gets the error; this node carries on
            log.debug("handler %s failed", method, exc_info=True)
            return b"", f"{type(exc).__name__}: {exc}"

    def stats(self) -> dict[NodeId, dict[str, int | bool]]:
        return {nid: {"connected": p.stream is not None, "queued": len(p.queue), "queued_bytes": p.queued_bytes,
                      "dropped": p.dropped, "sent_envelopes": p.sent_envelopes} for nid, p in self._peers.items()}
