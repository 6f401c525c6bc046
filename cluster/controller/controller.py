"""The controller on one broker: the `__controller` Raft group's listener and command path.

Every broker is a member of `__controller` (the voters from --controller-voters, the others learners), so
every broker applies the same committed commands to its own `ClusterMetadata` and can answer from it.
Commands are JSON documents carried as one-record batches (the controller log is a PartitionRaftLog like any
partition's). A command proposed on any broker reaches the controller leader: proposed locally when this
broker leads, else forwarded with the transport's `Call` RPC (method `controller.propose`); the leader
proposes it, waits for its commit, applies it and answers with the result. Every command carries a request
id, so a retry after a lost answer is answered from the state machine instead of being applied twice.

Snapshots: every `snapshot_every` applied entries the metadata is snapshotted into the group
(`group.compact`), which drops the log below it; a lagging member restores from the snapshot.

Broker liveness is not logged: the cluster runtime judges it from the inter-broker transport's connections
(a killed broker's streams reset at once; keepalives catch a silent one within seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, Callable

from cluster.broker.errors import BrokerError, NotControllerError, RequestTimedOutError
from cluster.controller.metadata import ClusterMetadata, MetadataError, result_from_json, result_to_json

log = logging.getLogger(__name__)

CONTROLLER_GROUP = "__controller"
PROPOSE_METHOD = "controller.propose"
DEFAULT_SNAPSHOT_EVERY = 1000
MAX_COMMAND_BYTES = 1 << 20


def encode_command(cmd: dict[str, Any], *, timestamp_ms: int = 0) -> bytes:
    """A command as the one-record batch the controller log stores."""
    from storage.record_batch import RecordInput, build_batch

    value = json.dumps(cmd, sort_keys=True, separators=(",", ":")).encode()
    if len(value) > MAX_COMMAND_BYTES:
        raise BrokerError(f"controller command of {len(value)} bytes is too large", error_name="INVALID_REQUEST")
    return build_batch([RecordInput(None, value, timestamp_ms, [])])


def decode_command(data: bytes | memoryview) -> bytes | None:
    """The JSON of a command batch (None for anything else: a control batch, garbage)."""
    from storage.record_batch import decode_records, parse_header

    try:
        header = parse_header(data)
        if header.is_control:
            return None
        records = decode_records(data, header)
    except Exception:
        return None
    if len(records) != 1 or records[0].value is None:
        return None
    return records[0].value


class ControllerError(BrokerError):
    """A refused command (MetadataError) as a broker error with the same Kafka error name."""


class Controller:
    """See the module docstring. `bind(group)` once the host added the group; `close()` to stop."""

    def __init__(self, node_id: int, *, snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
                 metadata: ClusterMetadata | None = None) -> None:
        self.node_id = node_id
        self.metadata = metadata if metadata is not None else ClusterMetadata()
        self.group = None
        self.snapshot_every = snapshot_every
        self._last_snapshot_index = self.metadata.applied_index
        self._snapshotting: asyncio.Task | None = None
        self._proposals: dict[int, tuple[int, asyncio.Future]] = {}  # last index -> (term, future)
        self._applied_waiters: list[tuple[int, asyncio.Future]] = []
        self._listeners: list[Callable[[ClusterMetadata], None]] = []
        self._leader_listeners: list[Callable[[int | None, int], None]] = []
        self.leader_id: int | None = None
        self.term = 0
        self._closed = False
        self._transport = None

    # -- wiring ------------------------------------------------------------------------------------------

    def bind(self, group, transport=None) -> None:
        self.group = group
        self._transport = transport
        self.leader_id = group.leader_id
        self.term = group.term

    def add_listener(self, fn: Callable[[ClusterMetadata], None]) -> None:
        """`fn(metadata)` after every batch of applied commands (and after a snapshot restore)."""
        self._listeners.append(fn)

    def add_leader_listener(self, fn: Callable[[int | None, int], None]) -> None:
        self._leader_listeners.append(fn)

    @property
    def is_leader(self) -> bool:
        return self.group is not None and self.group.is_leader and not self._closed

    @property
    def controller_id(self) -> int:
        leader = self.group.leader_id if self.group is not None else self.leader_id
        return leader if leader is not None else -1

    # -- the Raft host's listener ----------------------------------------------------------------------------

    def on_committed(self, entries) -> None:
        from cluster.raft.types import EntryKind

        md = self.metadata
        changed = False
        for e in entries:
            if e.last_index <= md.applied_index:
                continue  # already in the state (replayed after a snapshot restore)
            result: Any = None
            command = decode_command(e.data) if e.kind is EntryKind.DATA else None
            if command is not None:
                result = md.apply(e.last_index, command)
                changed = True
            else:
                md.applied_index = e.last_index
            waiter = self._proposals.pop(e.last_index, None)
            if waiter is not None:
                term, future = waiter
                if future.done():
                    pass
                elif term == e.term and command is not None:
                    future.set_result((e.last_index, result))
                else:
                    future.set_exception(NotControllerError("the command was replaced by a new controller leader"))
        # Proposals at or below the applied index that never came out were truncated away.
        for index in [i for i in self._proposals if i <= md.applied_index]:
            _, future = self._proposals.pop(index)
            if not future.done():
                future.set_exception(NotControllerError("the command was replaced by a new controller leader"))
        if changed:
            self._notify()
        self._wake_applied()
        self._maybe_snapshot()

    def on_leader_change(self, leader_id: int | None, term: int) -> None:
        self.leader_id = leader_id
        self.term = term
        for fn in list(self._leader_listeners):
            try:
                fn(leader_id, term)
            except Exception:  # pragma: no cover
                log.exception("controller leader listener failed")

    def on_restore(self, snapshot) -> None:
        data = bytes(getattr(snapshot, "data", b"") or b"")
        if not data:
            return
        try:
            self.metadata = ClusterMetadata.restore(data)
        except ValueError as exc:
            log.error("cannot restore the controller snapshot at %s: %s", getattr(snapshot, "index", "?"), exc)
            return
        self._last_snapshot_index = self.metadata.applied_index
        self._notify()
        self._wake_applied()

    def _notify(self) -> None:
        md = self.metadata
        for fn in list(self._listeners):
            try:
                fn(md)
            except Exception:
                log.exception("metadata listener failed")

    def _maybe_snapshot(self) -> None:
        group = self.group
        md = self.metadata
        if group is None or md.applied_index - self._last_snapshot_index < self.snapshot_every:
            return
        if self._snapshotting is not None and not self._snapshotting.done():
            return
        index, data = md.applied_index, md.snapshot()
        self._last_snapshot_index = index

        async def compact() -> None:
            try:
                await group.compact(index, data)
                log.info("controller snapshot at index %d (%d bytes); log compacted", index, len(data))
            except Exception as exc:  # the host refused (e.g. the group is being removed): try again later
                log.warning("controller snapshot at %d failed: %s", index, exc)
                self._last_snapshot_index = index - self.snapshot_every // 2

        try:
            self._snapshotting = asyncio.get_running_loop().create_task(compact())
        except RuntimeError:  # no loop (a unit test applying entries synchronously)
            self._last_snapshot_index = index - self.snapshot_every

    def _wake_applied(self) -> None:
        applied = self.metadata.applied_index
        keep = []
        for index, future in self._applied_waiters:
            if index <= applied:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((index, future))
        self._applied_waiters = keep

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Until this broker's metadata has applied `index` (the leader's answer carries the index)."""
        if self.metadata.applied_index >= index:
            return
        future = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimedOutError(f"this broker has not learnt controller entry {index} within {timeout:g}s "
                                       "(the command is committed)") from None

    # -- proposing -----------------------------------------------------------------------------------------

    def _propose_local(self, cmd: dict[str, Any]) -> asyncio.Future:
        from cluster.raft.types import NotLeaderError, ProposalError

        group = self.group
        if group is None or self._closed:
            raise NotControllerError("the controller is not running")
        try:
            proposal = group.propose(encode_command(cmd, timestamp_ms=int(time.time() * 1000)), 1)
        except NotLeaderError as exc:
            raise NotControllerError(f"not the controller leader (leader: {exc.leader_id})") from None
        except ProposalError as exc:
            raise NotControllerError(f"the controller leader refused the command for now: {exc}") from None
        future = asyncio.get_running_loop().create_future()
        self._proposals[proposal.last_index] = (proposal.term, future)
        return future

    async def submit(self, cmd: dict[str, Any], *, timeout: float = 30.0) -> Any:
        """Commit `cmd` through the controller leader (wherever it is) and return its result as JSON data; a
        refused command raises ControllerError with the refusal's Kafka error name. Waits until this broker's
        metadata has applied it too, so what the caller reads next reflects it."""
        cmd = dict(cmd)
        cmd.setdefault("request_id", uuid.uuid4().hex)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.05
        last_error = "no controller leader is known"
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                raise RequestTimedOutError(f"controller command {cmd.get('type')} not committed within "
                                           f"{timeout:g}s: {last_error}")
            try:
                if self.is_leader:
                    index, result = await asyncio.wait_for(self._propose_local(cmd), remaining)
                else:
                    leader = self.controller_id
                    if leader < 0 or self._transport is None:
                        raise NotControllerError("no controller leader is known")
                    answer = await self._transport.call(leader, PROPOSE_METHOD, json.dumps(cmd).encode(),
                                                        timeout=min(remaining, 10.0))
                    reply = json.loads(answer)
                    if "not_controller" in reply:
                        raise NotControllerError(reply["not_controller"])
                    index, result = reply["index"], result_from_json(reply["result"])
                await self.wait_applied(index, max(0.1, deadline - loop.time()))
                if isinstance(result, MetadataError):
                    raise ControllerError(str(result), error_name=result.error_name)
                return result_to_json(result)
            except (NotControllerError, TimeoutError, OSError, ConnectionError) as exc:
                last_error = str(exc) or type(exc).__name__
            except ControllerError:
                raise
            except BrokerError as exc:
                if exc.error_name != "REQUEST_TIMED_OUT":
                    raise
                last_error = str(exc)
            except Exception as exc:  # a transport failure (unreachable leader): retry until the deadline
                last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.5)

    async def handle_propose(self, payload: bytes) -> bytes:
        """The `controller.propose` Call handler (runs on the leader)."""
        try:
            cmd = json.loads(payload)
            if not isinstance(cmd, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            result = MetadataError("INVALID_REQUEST", f"malformed controller command: {exc}")
            return json.dumps({"index": -1, "result": result_to_json(result)}).encode()
        try:
            if not self.is_leader:
                raise NotControllerError(f"broker {self.node_id} is not the controller leader")
            index, result = await asyncio.wait_for(self._propose_local(cmd), 15.0)
        except (NotControllerError, TimeoutError) as exc:
            return json.dumps({"not_controller": str(exc) or "timed out", "leader": self.controller_id}).encode()
        return json.dumps({"index": index, "result": result_to_json(result)}).encode()

    def close(self) -> None:
        self._closed = True
        for _, future in self._proposals.values():
            if not future.done():
                future.set_exception(NotControllerError("the controller is shutting down"))
        self._proposals.clear()
        for _, future in self._applied_waiters:
            if not future.done():
                future.cancel()
        self._applied_waiters.clear()
