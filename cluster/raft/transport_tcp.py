"""The TCP carrier of RaftTransport (``--raft-transport tcp``, the default): framed asyncio TCP.

One plain TCP connection per node pair, dialed by the lower node id, TCP_NODELAY on both sides. Every frame
is ``[u32 body length][u8 frame type][body]``:

  HELLO        magic b"TLRT", u8 version, u8 flags, u32 node id (+ room for more). The dialer sends it first;
               the acceptor answers with its own. flags bit 0: a calls-only link (below).
  ENVELOPE     a serialized ``Envelope`` (proto/rpc/raft.proto), exactly what the gRPC carrier streams.
  CALL         u64 correlation id + a serialized ``CallRequest``.
  CALL_RESULT  u64 correlation id + u8 status (0 ok: the payload follows; 1 error: the UTF-8 message follows).
  PING / PONG  u64 sequence number; a PING is answered with a PONG carrying it.

Why not gRPC: a grpc.aio hop costs ~1.2 ms (a poller thread, a completion queue, one write in flight per
stream); here a write is a ``transport.write`` straight into the socket, and the writer awaits ``drain()``
only when the socket's buffer is above HIGH_WATER_BYTES (a slow or stopped peer), so a hop costs tens of µs.

Robustness: a body length above MAX_MESSAGE_BYTES is refused before the body is read; a bad length, an
unknown frame type, an undecodable protobuf, a hello with a bad magic/version or from an unknown node (or
from this node's own id) closes that connection only, logged; the broker carries on. Each side pings a
connection that has been silent for keepalive_ms / 2 and closes it after 2 x keepalive_ms of silence (a dead
or stopped peer, a half-open connection). The acceptor keeps the newest connection a peer opened.

Calls travel on the pair's connection when it is up; otherwise (a peer this node does not dial, a client
that runs no server, a connection still being set up) the caller dials a calls-only link to the peer's
address, kept for the next calls: it carries CALL/CALL_RESULT/PING/PONG only, and is accepted from any node
id, as the gRPC carrier's unary Call is.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

from google.protobuf.message import DecodeError

from proto.rpc import raft_pb2 as pb

from .transport import MAX_MESSAGE_BYTES, Carrier, Connection, PeerUnavailableError, RemoteCallError, _Peer

log = logging.getLogger("tidelog.raft.transport")

KiB = 1 << 10
MiB = 1 << 20

F_HELLO = 1
F_ENVELOPE = 2
F_CALL = 3
F_CALL_RESULT = 4
F_PING = 5
F_PONG = 6
FRAME_TYPES = {F_HELLO: "hello", F_ENVELOPE: "envelope", F_CALL: "call", F_CALL_RESULT: "call result",
               F_PING: "ping", F_PONG: "pong"}

HEADER = struct.Struct(">IB")  # body length, frame type
HELLO = struct.Struct(">4sBBI")  # magic, version, flags, node id
CALL_ID = struct.Struct(">Q")
CALL_RESULT = struct.Struct(">QB")
MAGIC = b"TLRT"
VERSION = 1
HELLO_CALLS_ONLY = 1
MAX_HELLO_BYTES = 1 * KiB  # a hello may grow fields; anything longer is not a hello

HIGH_WATER_BYTES = 4 * MiB  # the writer awaits drain() only above this much unsent data
LOW_WATER_BYTES = 1 * MiB
READ_LIMIT = 1 * MiB  # StreamReader buffer (it pauses the socket at twice this)
READ_CHUNK = 1 * MiB  # a large body is read in chunks, each one a sign of life
MAX_CALLS_IN_FLIGHT = 1024  # served concurrently per connection; more get an error result
HELLO_TIMEOUT_S = 5.0


class ProtocolError(Exception):
    """The peer sent something this carrier does not accept: its connection is closed."""


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bad address {address!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def hello_body(node_id: int, flags: int = 0) -> bytes:
    return HELLO.pack(MAGIC, VERSION, flags, node_id)


async def read_hello(reader: asyncio.StreamReader) -> tuple[int, int]:
    """The first frame of a connection: (node id, flags). Raises ProtocolError if it is not a valid hello."""
    n, ftype = HEADER.unpack(await reader.readexactly(HEADER.size))
    if ftype != F_HELLO or not HELLO.size <= n <= MAX_HELLO_BYTES:
        raise ProtocolError(f"expected a hello, got frame type {ftype} of {n} bytes")
    magic, version, flags, node_id = HELLO.unpack_from(await reader.readexactly(n))
    if magic != MAGIC:
        raise ProtocolError(f"not a tidelog raft connection (magic {magic!r})")
    if version != VERSION:
        raise ProtocolError(f"raft transport version {version}, this node speaks {VERSION}")
    if node_id == 0:
        raise ProtocolError("hello from node id 0")
    return node_id, flags


class TcpConnection(Connection):
    """One connected socket (either side), its pending calls and its tasks."""

    __slots__ = (
        "_ping_seq",
        "calls_only",
        "carrier",
        "last_rx",
        "loop",
        "node_id",
        "pending",
        "reader",
        "serving",
        "tasks",
        "transport",
        "writer",
    )

    def __init__(self, carrier: TcpCarrier, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 node_id: int, calls_only: bool) -> None:
        super().__init__()
        self.carrier = carrier
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.node_id = node_id
        self.calls_only = calls_only
        self.loop = asyncio.get_running_loop()
        self.last_rx = self.loop.time()
        self.pending: dict[int, asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()
        self.serving = 0
        self._ping_seq = 0
        self.transport.set_write_buffer_limits(high=HIGH_WATER_BYTES, low=LOW_WATER_BYTES)
        set_nodelay(writer)
        carrier._conns.add(self)

    def __repr__(self) -> str:
        kind = "calls-only link" if self.calls_only else "connection"
        return f"{kind} node {self.carrier.t.node_id} <-> node {self.node_id}"

    # -- writing ---------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.closed:
            raise ConnectionError("connection closed")
        if self.transport.is_closing():  # the socket died before our reader noticed (a killed peer)
            self.close()
            raise ConnectionError("connection closed by the peer")

    async def write(self, env: pb.Envelope) -> None:
        self._check_writable()
        body = env.SerializeToString()
        if len(body) > MAX_MESSAGE_BYTES:
            raise ValueError(f"an envelope of {len(body)} bytes is above the frame limit of {MAX_MESSAGE_BYTES}")
        transport = self.transport
        transport.writelines((HEADER.pack(len(body), F_ENVELOPE), body))
        # No await per frame (that is where gRPC's latency went): only a peer that does not keep up makes
        # the writer wait, and meanwhile the bounded queue fills and drops.
        if transport.get_write_buffer_size() > HIGH_WATER_BYTES:
            await self.writer.drain()
            if self.closed:
                raise ConnectionError("connection closed")

    def send_frame(self, ftype: int, *parts: bytes) -> None:
        """Write a control frame (call, result, ping) now, ahead of nothing: it never waits."""
        self._check_writable()
        size = sum(len(p) for p in parts)
        self.transport.writelines((HEADER.pack(size, ftype), *parts))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.carrier._conns.discard(self)
        self.transport.abort()  # a dead or replaced connection: what is unsent is lost, Raft retransmits
        if self.pending:
            exc = PeerUnavailableError(f"the connection to node {self.node_id} was lost")
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(exc)
            self.pending.clear()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()

    # -- reading ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read frames until the connection ends (a ping task runs meanwhile); then it is closed."""
        ping = self.loop.create_task(self._ping_loop())
        self.tasks.add(ping)
        ping.add_done_callback(self.tasks.discard)
        me = self.carrier.t.node_id
        try:
            await self._read_loop()
        except asyncio.IncompleteReadError:
            if not self.closed:
                log.debug("node %d: %r closed by the peer", me, self)
        except ProtocolError as exc:
            log.warning("node %d: closing the %r: %s", me, self, exc)
        except (ConnectionError, OSError) as exc:
            if not self.closed:
                log.debug("node %d: %r failed: %s", me, self, exc)
        except Exception:  # a bug here must cost one connection, not the broker
            log.exception("node %d: closing the %r after an unexpected error", me, self)
        finally:
            self.close()

    async def _read_loop(self) -> None:
        readexactly = self.reader.readexactly
        unpack = HEADER.unpack
        loop = self.loop
        while not self.closed:
            n, ftype = unpack(await readexactly(5))
            if n > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"a {FRAME_TYPES.get(ftype, 'unknown')} frame of {n} bytes is above the "
                                    f"limit of {MAX_MESSAGE_BYTES}")
            if n <= READ_CHUNK:
                body = await readexactly(n) if n else b""
            else:
                buf = bytearray()
                while len(buf) < n:
                    buf += await readexactly(min(READ_CHUNK, n - len(buf)))
                    self.last_rx = loop.time()
                body = bytes(buf)
            self.last_rx = loop.time()
            self._dispatch(ftype, body)

    def _dispatch(self, ftype: int, body: bytes) -> None:
        t = self.carrier.t
        if ftype == F_ENVELOPE:
            if self.calls_only:
                raise ProtocolError("an envelope on a calls-only link")
            try:
                env = pb.Envelope.FromString(body)
            except DecodeError as exc:
                raise ProtocolError(f"undecodable envelope: {exc}") from None
            if env.from_node != self.node_id:
                raise ProtocolError(f"an envelope from node {env.from_node} on node {self.node_id}'s connection")
            try:
                t._receive(env)
            except Exception:  # the host's callback failed: its bug, not the peer's
                log.exception("node %d: delivering an envelope from node %d failed", t.node_id, self.node_id)
        elif ftype == F_CALL:
            if len(body) < CALL_ID.size:
                raise ProtocolError("a call frame without an id")
            (cid,) = CALL_ID.unpack_from(body)
            try:
                req = pb.CallRequest.FromString(body[CALL_ID.size:])
            except DecodeError as exc:
                raise ProtocolError(f"undecodable call request: {exc}") from None
            if self.serving >= MAX_CALLS_IN_FLIGHT:
                self.send_frame(F_CALL_RESULT, CALL_RESULT.pack(cid, 1),
                                f"node {t.node_id}: too many calls in flight".encode())
                return
            self.serving += 1
            task = self.loop.create_task(self._serve_call(cid, req))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif ftype == F_CALL_RESULT:
            if len(body) < CALL_RESULT.size:
                raise ProtocolError("a short call result frame")
            cid, status = CALL_RESULT.unpack_from(body)
            fut = self.pending.pop(cid, None)
            if fut is not None and not fut.done():  # else: the caller gave up (timeout)
                data = body[CALL_RESULT.size:]
                if status == 0:
                    fut.set_result(data)
                else:
                    fut.set_exception(RemoteCallError(data.decode("utf-8", errors="replace")))
        elif ftype == F_PING:
            if len(body) > 64:
                raise ProtocolError(f"a ping of {len(body)} bytes")
            self.send_frame(F_PONG, body)
        elif ftype == F_PONG:
            pass  # last_rx is all it is for
        elif ftype == F_HELLO:
            raise ProtocolError("a second hello")
        else:
            raise ProtocolError(f"unknown frame type {ftype}")

    async def _serve_call(self, cid: int, req: pb.CallRequest) -> None:
        try:
            payload, error = await self.carrier.t._serve_call(req.method, req.payload)
            if not error and len(payload) + CALL_RESULT.size > MAX_MESSAGE_BYTES:
                payload, error = b"", f"the result of {req.method} is too large ({len(payload)} bytes)"
            if not self.closed:
                if error:
                    self.send_frame(F_CALL_RESULT, CALL_RESULT.pack(cid, 1), error.encode())
                else:
                    self.send_frame(F_CALL_RESULT, CALL_RESULT.pack(cid, 0), bytes(payload))
        except ConnectionError:
            pass  # the caller lost the connection: its call fails as unavailable on its side
        finally:
            self.serving -= 1

    async def _ping_loop(self) -> None:
        keepalive = self.carrier.t._keepalive_ms / 1000
        interval = keepalive / 2
        loop = self.loop
        last_tick = loop.time()
        while not self.closed:
            await asyncio.sleep(interval)
            now = loop.time()
            stalled = now - last_tick > 3 * interval
            last_tick = now
            if stalled:  # this process did not run for a while: what the peer sent may still wait unread
                continue
            silent = now - self.last_rx
            if silent >= 2 * keepalive:
                log.warning("node %d: nothing from node %d for %.1fs: closing the %r", self.carrier.t.node_id,
                            self.node_id, silent, self)
                self.close()
                return
            if silent >= interval:
                self._ping_seq += 1
                try:
                    self.send_frame(F_PING, CALL_ID.pack(self._ping_seq))
                except ConnectionError:
                    return  # closed: the reader ends the connection


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a test's socketpair)
            pass


class TcpCarrier(Carrier):
    name = "tcp"

    def __init__(self, transport) -> None:
        super().__init__(transport)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[TcpConnection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._link_dials: dict[int, asyncio.Task] = {}
        self._call_seq = 0
        self.refused = 0  # connections closed at the hello (stats, tests)

    def _track(self, task: asyncio.Task) -> asyncio.Task:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> int:
        host, port = split_address(self.t.listen)
        self._server = await asyncio.start_server(self._on_accept, host or None, port, limit=READ_LIMIT,
                                                  reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def peer_stopped(self, peer: _Peer) -> None:
        link = peer.link
        peer.link = None
        if isinstance(link, TcpConnection) and link.loop is asyncio.get_running_loop():
            link.close()
        dial = self._link_dials.pop(peer.node_id, None)
        if dial is not None:
            dial.cancel()

    # -- connecting ------------------------------------------------------------------------------

    async def _connect(self, peer: _Peer, flags: int) -> TcpConnection:
        """Dial ``peer``, exchange hellos; the connection is not yet running."""
        if not peer.address:
            raise PeerUnavailableError(f"no address for node {peer.node_id}")
        host, port = split_address(peer.address)
        reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
        try:
            set_nodelay(writer)
            body = hello_body(self.t.node_id, flags)
            writer.write(HEADER.pack(len(body), F_HELLO) + body)
            node_id, _flags = await read_hello(reader)
            if node_id != peer.node_id:
                raise ProtocolError(f"{peer.address} answered as node {node_id}, not node {peer.node_id}")
            return TcpConnection(self, reader, writer, node_id, calls_only=bool(flags & HELLO_CALLS_ONLY))
        except BaseException:
            writer.transport.abort()
            raise

    async def session(self, peer: _Peer) -> bool:
        t = self.t
        conn: TcpConnection | None = None
        try:
            conn = await asyncio.wait_for(self._connect(peer, 0), HELLO_TIMEOUT_S)
            t._attach(peer, conn)
            await conn.run()
        except ProtocolError as exc:
            log.warning("node %d: connection to node %d at %s refused: %s", t.node_id, peer.node_id,
                        peer.address, exc)
        except (OSError, EOFError, TimeoutError, ValueError) as exc:  # EOFError: IncompleteReadError
            log.debug("node %d: connection to node %d failed: %s", t.node_id, peer.node_id, exc)
        except Exception:  # a bug: keep dialing (with backoff) rather than lose the peer for good
            log.exception("node %d: connection to node %d failed", t.node_id, peer.node_id)
        finally:
            if conn is not None:
                t._detach(peer, conn)
                if peer.queue:
                    t._drop_queue(peer)
        return conn is not None

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = self.t
        task = asyncio.current_task()
        if task is not None:
            self._track(task)
        conn: TcpConnection | None = None
        peer: _Peer | None = None
        where = writer.get_extra_info("peername")
        try:
            if t._closed:
                return
            try:
                node_id, flags = await asyncio.wait_for(read_hello(reader), HELLO_TIMEOUT_S)
            except ProtocolError as exc:
                self.refused += 1
                log.warning("node %d: refused a raft connection from %s: %s", t.node_id, where, exc)
                return
            except (OSError, EOFError, TimeoutError) as exc:
                self.refused += 1
                log.info("node %d: a raft connection from %s ended before its hello: %s", t.node_id, where,
                         type(exc).__name__)
                return
            calls_only = bool(flags & HELLO_CALLS_ONLY)
            if node_id == t.node_id:
                self.refused += 1
                log.warning("node %d: refused a raft connection from %s: it says it is this node", t.node_id, where)
                return
            if not calls_only:
                peer = t._peers.get(node_id)
                if peer is None:
                    self.refused += 1
                    log.warning("node %d: refused a raft connection from %s: node %d is not a peer", t.node_id,
                                where, node_id)
                    return
            conn = TcpConnection(self, reader, writer, node_id, calls_only)
            body = hello_body(t.node_id)
            conn.send_frame(F_HELLO, body)
            if peer is not None:
                t._attach(peer, conn)  # the newest connection a peer opened wins
            await conn.run()
        finally:
            if conn is None:
                writer.transport.abort()
            elif peer is not None:
                t._detach(peer, conn)
            else:
                conn.close()

    # -- calls -----------------------------------------------------------------------------------

    async def _link(self, peer: _Peer, loop: asyncio.AbstractEventLoop) -> TcpConnection:
        """A running calls-only link to ``peer`` (one per peer, shared by concurrent callers)."""
        link = peer.link
        if isinstance(link, TcpConnection) and not link.closed and link.loop is loop:
            return link
        task = self._link_dials.get(peer.node_id)
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._link_dials[peer.node_id] = loop.create_task(self._dial_link(peer))
        return await asyncio.shield(task)

    async def _dial_link(self, peer: _Peer) -> TcpConnection:
        try:
            conn = await asyncio.wait_for(self._connect(peer, HELLO_CALLS_ONLY), HELLO_TIMEOUT_S)
        except PeerUnavailableError:
            raise
        except (OSError, EOFError, TimeoutError, ValueError, ProtocolError) as exc:
            raise PeerUnavailableError(f"cannot reach node {peer.node_id} at {peer.address}: "
                                       f"{exc or type(exc).__name__}") from exc
        finally:
            self._link_dials.pop(peer.node_id, None)
        if self.t._closed:
            conn.close()
            raise PeerUnavailableError("the transport is closed")
        peer.link = conn
        self._track(conn.loop.create_task(conn.run()))
        return conn

    async def call(self, peer: _Peer, method: str, payload: bytes, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        body = pb.CallRequest(method=method, payload=payload).SerializeToString()
        if len(body) + CALL_ID.size > MAX_MESSAGE_BYTES:
            raise ValueError(f"call {method}: a request of {len(body)} bytes is above the frame limit")
        try:
            conn = peer.stream
            if not isinstance(conn, TcpConnection) or conn.closed or conn.loop is not loop:
                conn = await asyncio.wait_for(self._link(peer, loop), timeout)
            self._call_seq += 1
            cid = self._call_seq
            fut = loop.create_future()
            conn.send_frame(F_CALL, CALL_ID.pack(cid), body)  # raises ConnectionError on a dead connection
            conn.pending[cid] = fut  # after the send: a failed send leaves no orphan future behind
            try:
                return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            finally:
                conn.pending.pop(cid, None)
        except TimeoutError:
            raise TimeoutError(f"call {method} to node {peer.node_id} timed out after {timeout}s") from None
        except (RemoteCallError, PeerUnavailableError):
            raise
        except (ConnectionError, OSError) as exc:
            raise PeerUnavailableError(f"call {method} to node {peer.node_id} failed: {exc}") from exc
