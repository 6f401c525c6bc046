"""Consumer groups over the tidelog gRPC API: `GroupConsumer` (a member of a group) and `GroupAdmin` (list,
describe with lag, reset offsets, delete).

    with GroupConsumer("127.0.0.1:7070", "billing", ["orders"], on_assign=..., on_revoke=...) as consumer:
        for record in consumer:
            handle(record)                  # processed once the next record is asked for

The coordinator assigns partitions (server-side assignors: range, roundrobin, sticky, cooperative-sticky).
A background task on the client's loop heartbeats; a rebalance is handled inside `poll()` on the caller's
thread: offsets of processed records are committed (auto-commit), `on_revoke` runs, the member rejoins,
`on_assign` runs and fetching resumes from the committed offsets (else `auto_offset_reset`). The join itself
runs on the client's loop: the coordinator may hold it until every member has rejoined (up to the rebalance
timeout), and `poll(timeout)` waits for it no longer than `timeout` (returning no records), the next poll
carrying on; `close()` abandons a pending join and leaves the group.

`pause()` / `resume()` / `paused()` stop and restart fetching of assigned partitions without leaving the
group, as in Kafka's clients.

At-least-once by default: only offsets of records that were returned to the application *and* processed
are committed. A record returned by `poll()` counts as processed when `poll()` is called again (or the
iterator moves past it, or `commit()`/`close()` is called); auto-commit commits those every
`auto_commit_interval_ms` and always before partitions are revoked. Records are fetched with
`tidelog.Consumer`'s machinery (one long-poll Fetch for all assigned partitions).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
from typing import Callable, Iterable, Iterator, Mapping

from tidelog.errors import BrokerUnavailableError, RequestTimedOutError, TidelogError
from tidelog.records import ConsumerRecord, TopicPartition

log = logging.getLogger("tidelog.group_consumer")

# Kafka error codes the group API answers with (numbers from Kafka's Errors.java).
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
MEMBER_ID_REQUIRED = 79
REBALANCE_IN_PROGRESS = 27
FENCED_INSTANCE_ID = 82
_RETRY_COORDINATOR = {COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR}
_FIND_TIMEOUT_S = 5.0
_FENCED = {ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID}
_EAGER = ("range", "roundrobin", "sticky")
ASSIGNORS = (*_EAGER, "cooperative-sticky")

Callback = Callable[[list[TopicPartition]], None]


def _error_name(code: int) -> str:
    from consumer_groups.errors import ErrorCode

    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"


class GroupError(TidelogError):
    """A group call failed; `error_name` is Kafka's name for the reason (e.g. ILLEGAL_GENERATION)."""

    def __init__(self, code: int, message: str = "") -> None:
        name = _error_name(code)
        super().__init__(message or name, error_name=name)
        self.code = code

    @property
    def retriable(self) -> bool:
        return self.code in _RETRY_COORDINATOR or self.code == REBALANCE_IN_PROGRESS or super().retriable


class CommitFailedError(GroupError):
    """The commit was refused because the group rebalanced (the member's generation is over): the records
    will be processed again by whoever owns their partitions now (at-least-once)."""


class _GroupConnection:
    """GroupService calls, each routed to its group's coordinator.

    In a cluster every group has one coordinator: the broker leading the group's `__consumer_offsets`
    partition. It is found with FindCoordinator on any broker (the bootstrap list first, then every broker
    learnt with DescribeCluster) and remembered per group. NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE answers
    and lost connections forget it and the call is sent again after a fresh lookup; COORDINATOR_LOAD_IN_PROGRESS
    is retried on the same broker; all of it until the call's timeout (then the last answer is returned, or
    BrokerUnavailableError raised). Every RPC runs on the client loop (tidelog._transport.client_loop)."""

    def __init__(self, bootstrap: str | None, request_timeout_ms: int, retry_backoff_ms: int = 100) -> None:
        from tidelog._cluster import ClusterClient

        self.cluster = ClusterClient(bootstrap, request_timeout_ms=request_timeout_ms)
        self.loop_thread = self.cluster.loop_thread
        self.request_timeout = request_timeout_ms / 1000
        self.retry_backoff = max(0.01, retry_backoff_ms / 1000)
        self._coordinators: dict[str, str] = {}  # group id -> the coordinator's gRPC address
        self._stubs: dict[str, object] = {}
        self._learnt = False
        self._closed = False

    @property
    def target(self) -> str:
        return self.cluster.target

    def coordinator(self, group_id: str) -> str | None:
        """The address last found for `group_id`'s coordinator (None: unknown)."""
        return self._coordinators.get(group_id)

    def _stub(self, address: str):
        from proto.rpc import groups_v1_pb2_grpc as gpb_grpc

        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = gpb_grpc.GroupServiceStub(self.cluster.connection(address).channel)
        return stub

    def _forget(self, group_id: str, address: str) -> None:
        if self._coordinators.get(group_id) == address:
            del self._coordinators[group_id]

    async def _learn_brokers(self) -> None:
        """DescribeCluster once, so that lookups can go to any broker, not just the bootstrap ones."""
        if self._learnt:
            return
        self._learnt = True
        try:
            await self.cluster.refresh(force=True)
        except Exception as exc:  # pragma: no cover - the bootstrap list is still there
            log.debug("learning the brokers failed: %s", exc)

    async def _find(self, group_id: str, timeout: float) -> tuple[str | None, str]:
        """(the coordinator's address or None, why not)."""
        from proto.rpc import groups_v1_pb2 as gpb

        await self._learn_brokers()
        try:
            response = await self.cluster.acall_any(lambda conn: self._stub(conn.target).FindCoordinator,
                                                    gpb.FindCoordinatorRequest(group_id=group_id),
                                                    timeout=max(0.05, min(timeout, _FIND_TIMEOUT_S)))
        except TidelogError as exc:
            if str(exc).startswith("UNIMPLEMENTED"):  # a broker without FindCoordinator coordinates alone
                return self.cluster.target, ""
            self.cluster.invalidate()
            return None, str(exc)
        if response.error_code:
            return None, response.error_message or _error_name(response.error_code)
        if response.host and response.grpc_port > 0:
            host = f"[{response.host}]" if ":" in response.host else response.host
            address = f"{host}:{response.grpc_port}"
        else:
            address = self.cluster.target  # "the broker that answered" (acall_any just set it)
        self._coordinators[group_id] = address
        return address, ""

    async def acall(self, name: str, request, timeout: float | None = None):
        """GroupService.`name`(request) on the coordinator of `request.group_id`, from the client loop."""
        if name == "GroupList":
            return await self._list_everywhere(request, timeout)
        from grpc import aio as grpc_aio

        timeout = self.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        group_id = request.group_id
        last_response = None
        why = ""
        while not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            address = self._coordinators.get(group_id)
            if address is None:
                address, why = await self._find(group_id, remaining)
            if address is not None:
                try:
                    response = await getattr(self._stub(address), name)(request, timeout=max(0.05, remaining))
                except grpc_aio.AioRpcError as exc:
                    from tidelog._transport import rpc_error

                    error = rpc_error(exc, address)
                    if not isinstance(error, (BrokerUnavailableError, RequestTimedOutError)) and \
                            error.error_name != "COORDINATOR_NOT_AVAILABLE":
                        raise error from None
                    self._forget(group_id, address)
                    self.cluster.invalidate()
                    why = str(error)
                else:
                    code = response.error_code
                    if code not in _RETRY_COORDINATOR:
                        return response
                    if code != COORDINATOR_LOAD_IN_PROGRESS:  # moved: look it up again
                        self._forget(group_id, address)
                    last_response = response
                    why = response.error_message or _error_name(code)
            await asyncio.sleep(max(0.0, min(self.retry_backoff, deadline - time.monotonic())))
        if last_response is not None:
            return last_response
        raise BrokerUnavailableError(f"no coordinator of group {group_id!r} answered {name} within {timeout:g}s"
                                     + (f" ({why})" if why else ""))

    async def _list_everywhere(self, request, timeout: float | None):
        """GroupList of every broker, merged (each lists the groups it coordinates)."""
        timeout = self.request_timeout if timeout is None else timeout
        try:
            await self.cluster.refresh(force=True)
        except Exception:  # pragma: no cover
            pass
        addresses = self.cluster.broker_addresses() or [self.cluster.target]
        answers = await asyncio.gather(*(self._stub(a).GroupList(request, timeout=timeout) for a in addresses),
                                       return_exceptions=True)
        good = [a for a in answers if not isinstance(a, BaseException) and not a.error_code]
        if not good:
            for a in answers:
                if not isinstance(a, BaseException):
                    return a
            from tidelog._transport import rpc_error

            from grpc import aio as grpc_aio

            first = answers[0]
            if isinstance(first, grpc_aio.AioRpcError):
                raise rpc_error(first, addresses[0]) from None
            raise BrokerUnavailableError(f"no broker answered GroupList: {first}")
        merged = type(good[0])()
        seen: set[str] = set()
        for a in good:
            for g in a.groups:
                if g.group_id not in seen:
                    seen.add(g.group_id)
                    merged.groups.append(g)
        return merged

    def call(self, name: str, request, timeout: float | None = None):
        """The same from a caller thread."""
        if self._closed:
            raise TidelogError("the client is closed")
        timeout = self.request_timeout if timeout is None else timeout
        return self.loop_thread.run(self.acall(name, request, timeout), timeout + 10)

    def close(self) -> None:
        self._closed = True
        self.cluster.close()


class GroupConsumer:
    """A member of consumer group `group_id` reading `topics`. Not thread-safe: use it from one thread."""

    def __init__(
        self,
        bootstrap: str | None,
        group_id: str,
        topics: Iterable[str],
        *,
        assignor: str = "range",
        group_instance_id: str | None = None,
        client_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        auto_offset_reset: str = "earliest",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        rebalance_timeout_ms: int = 30_000,
        on_assign: Callback | None = None,
        on_revoke: Callback | None = None,
        max_poll_records: int = 500,
        fetch_max_wait_ms: int = 500,
        consumer_timeout_ms: int | None = None,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
    ) -> None:
        if not group_id:
            raise ValueError("group_id must not be empty")
        self.topics = sorted(set([topics] if isinstance(topics, str) else topics))
        if not self.topics:
            raise ValueError("subscribe to at least one topic")
        if assignor not in ASSIGNORS:
            raise ValueError(f"assignor must be one of {', '.join(ASSIGNORS)}, got {assignor!r}")
        if not 0 < heartbeat_interval_ms < session_timeout_ms:
            raise ValueError("need 0 < heartbeat_interval_ms < session_timeout_ms")
        self.group_id = group_id
        self.assignor = assignor
        self.group_instance_id = group_instance_id
        self.client_id = client_id or f"tidelog-{socket.gethostname()}-{os.getpid()}"
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.max_poll_records = max_poll_records
        self.consumer_timeout_ms = consumer_timeout_ms
        self.request_timeout = request_timeout_ms / 1000
        self.retry_backoff = retry_backoff_ms / 1000
        self.member_id = ""
        self.generation_id = -1
        self._assignment: list[TopicPartition] = []
        self._delivered: dict[TopicPartition, int] = {}  # next offset after the records returned
        self._processed: dict[TopicPartition, int] = {}  # next offset after the records processed
        self._committed: dict[TopicPartition, int] = {}  # what this member last committed
        self._pending_delivery: dict[TopicPartition, int] = {}  # returned by the last poll, not yet processed
        self._next_auto_commit = time.monotonic() + self.auto_commit_interval
        self._rejoin = threading.Event()  # set by the heartbeat task
        self._fenced = False
        self._joined = False
        self._joining = False
        self._join_future: concurrent.futures.Future | None = None  # the join running on the client loop
        self._heartbeat_task: asyncio.Future | None = None
        self._heartbeat_stop: asyncio.Event | None = None
        self._closed = False
        self._group = _GroupConnection(bootstrap, request_timeout_ms, retry_backoff_ms)
        from tidelog.consumer import Consumer

        try:
            self._consumer = Consumer(bootstrap, auto_offset_reset=auto_offset_reset,
                                      fetch_max_wait_ms=fetch_max_wait_ms, max_poll_records=max_poll_records,
                                      request_timeout_ms=request_timeout_ms, retry_backoff_ms=retry_backoff_ms)
        except BaseException:
            self._group.close()
            raise

    # ------------------------------------------------------------------------------------------ reading

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[ConsumerRecord]:
        """Records within `timeout` seconds (maybe none). Calling poll again marks the records the previous
        poll returned as processed (their offsets become committable)."""
        self._check_open()
        self._mark_processed()
        deadline = time.monotonic() + timeout
        while True:
            if not self._ensure_member(deadline):
                return []  # the join goes on in the background; the next poll picks it up
            self._maybe_auto_commit()
            remaining = deadline - time.monotonic()
            records = self._consumer.poll(timeout=max(0.0, min(remaining, 0.2)),
                                          max_records=max_records or self.max_poll_records)
            if records:  # still ours even if a rebalance just started: we rejoin on the next poll
                for r in records:
                    self._pending_delivery[TopicPartition(r.topic, r.partition)] = r.offset + 1
                    self._delivered[TopicPartition(r.topic, r.partition)] = r.offset + 1
                return records
            if time.monotonic() >= deadline:
                return []

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Yield records one by one; a record counts as processed when the next one is asked for. Stops
        after consumer_timeout_ms without records (never when None)."""
        idle_since = time.monotonic()
        while not self._closed:
            records = self.poll(timeout=0.5)
            if not records:
                if self.consumer_timeout_ms is not None and \
                        (time.monotonic() - idle_since) * 1000 >= self.consumer_timeout_ms:
                    return
                continue
            idle_since = time.monotonic()
            self._pending_delivery.clear()  # tracked record by record below
            for record in records:
                yield record
                tp = TopicPartition(record.topic, record.partition)
                if tp in self._delivered:  # still ours: the generator resumes only when asked for more
                    self._processed[tp] = max(self._processed.get(tp, 0), record.offset + 1)

    def _mark_processed(self) -> None:
        for tp, offset in self._pending_delivery.items():
            if tp in self._delivered:
                self._processed[tp] = max(self._processed.get(tp, 0), offset)
        self._pending_delivery.clear()

    # ------------------------------------------------------------------------------------------ commits

    def commit(self, offsets: Mapping[TopicPartition | tuple[str, int], int] | None = None) -> None:
        """Commit `offsets` (next offset to read, per partition), or by default every record returned so
        far (the application says it processed them). Raises CommitFailedError after a rebalance."""
        self._check_open()
        if offsets is None:
            self._mark_processed()
            offsets = dict(self._processed)
        else:
            offsets = {(tp if isinstance(tp, TopicPartition) else TopicPartition(*tp)): o for tp, o in offsets.items()}
            for tp, o in offsets.items():
                self._processed[tp] = max(self._processed.get(tp, 0), o)
        self._commit(offsets, raise_errors=True)

    def _commit(self, offsets: Mapping[TopicPartition, int], *, raise_errors: bool) -> bool:
        todo = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
        if not todo or self.generation_id < 0:
            return True
        from proto.rpc import groups_v1_pb2 as gpb

        request = gpb.GroupCommitRequest(
            group_id=self.group_id, member_id=self.member_id, generation_id=self.generation_id,
            offsets=[gpb.GroupOffset(topic=tp.topic, partition=tp.partition, offset=o) for tp, o in todo.items()])
        if self.group_instance_id is not None:
            request.group_instance_id = self.group_instance_id
        deadline = time.monotonic() + self.request_timeout
        while True:
            try:
                response = self._group.call("GroupCommit", request)
            except (BrokerUnavailableError, RequestTimedOutError) as exc:
                if time.monotonic() > deadline:
                    if raise_errors:
                        raise
                    log.warning("commit of group %s failed: %s", self.group_id, exc)
                    return False
                time.sleep(self.retry_backoff)
                continue
            code = response.error_code
            if code in _RETRY_COORDINATOR and time.monotonic() < deadline:
                time.sleep(self.retry_backoff)
                continue
            break
        for r in response.results:
            if r.error_code == NONE:
                self._committed[TopicPartition(r.topic, r.partition)] = todo[TopicPartition(r.topic, r.partition)]
        if code == NONE:
            return True
        if code in _FENCED or code == REBALANCE_IN_PROGRESS:
            if code in _FENCED:
                self._fenced = True
                self._rejoin.set()
            error: GroupError = CommitFailedError(code, f"commit refused: {_error_name(code)} (the group "
                                                        f"{self.group_id} rebalanced)")
        else:
            error = GroupError(code, response.error_message or _error_name(code))
        if raise_errors:
            raise error
        log.warning("commit of group %s failed: %s", self.group_id, error)
        return False

    def _maybe_auto_commit(self) -> None:
        if self.enable_auto_commit and time.monotonic() >= self._next_auto_commit:
            self._next_auto_commit = time.monotonic() + self.auto_commit_interval
            self._commit(dict(self._processed), raise_errors=False)

    def committed(self, partitions: Iterable[TopicPartition | tuple[str, int]] | None = None,
                  ) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""
        from proto.rpc import groups_v1_pb2 as gpb

        tps = [tp if isinstance(tp, TopicPartition) else TopicPartition(*tp) for tp in (partitions or ())]
        response = self._group.call("GroupFetchOffsets", gpb.GroupFetchOffsetsRequest(
            group_id=self.group_id, partitions=[gpb.GroupTopicPartition(topic=tp.topic, partition=tp.partition)
                                                for tp in tps]))
        if response.error_code:
            raise GroupError(response.error_code, response.error_message)
        return {TopicPartition(o.topic, o.partition): (o.offset if o.offset >= 0 else None) for o in response.offsets}

    # ------------------------------------------------------------------------------------------ membership

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def pause(self, *partitions: TopicPartition | tuple[str, int] | Iterable) -> None:
        """Stop fetching these assigned partitions until resume(): the member stays in the group (heartbeats go
        on), the partitions keep their position, and records of theirs already fetched are not returned (they
        are fetched again after resume()). A rebalance that revokes a paused partition unpauses it (with the
        eager assignors every rebalance revokes everything: pause again in on_assign)."""
        self._check_open()
        self._consumer.pause(*partitions)

    def resume(self, *partitions: TopicPartition | tuple[str, int] | Iterable) -> None:
        """Fetch these partitions again, from their position."""
        self._check_open()
        self._consumer.resume(*partitions)

    def paused(self) -> set[TopicPartition]:
        return self._consumer.paused()

    def _ensure_member(self, deadline: float) -> bool:
        """Join (or rejoin after a rebalance) before fetching; revocation happens here, on the caller's thread.
        The join runs on the client loop: the coordinator may hold it for up to the rebalance timeout, while
        this waits only until `deadline` (as Kafka's poll does). -> True once joined (False: still joining)."""
        if self._join_future is None:
            if self._joined and not self._rejoin.is_set():
                return True
            cooperative = self.assignor == "cooperative-sticky"
            if self._joined and not cooperative:
                self._revoke(list(self._assignment))  # eager: give everything back before rejoining
            if self._fenced:
                self._revoke(list(self._assignment))
            self._check_open()
            self._rejoin.clear()
            self._joining = True  # no heartbeats meanwhile: the pending join keeps the session alive
            self._join_future = self._group.loop_thread.submit(self._join())
        future = self._join_future
        try:
            response = future.result(max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            return False
        except concurrent.futures.CancelledError:
            self._join_future = None
            self._joining = False
            self._check_open()
            return False
        except BaseException:
            self._join_future = None
            self._joining = False
            raise
        self._join_future = None
        self._joining = False
        self.member_id = response.member_id
        self.generation_id = response.generation_id
        new = sorted(TopicPartition(tp.topic, tp.partition) for tp in response.assignment)
        revoked = [tp for tp in self._assignment if tp not in new]
        if revoked:
            self._revoke(revoked)
        added = [tp for tp in new if tp not in self._assignment]
        self._assignment = new
        self._joined = True
        self._fenced = False
        self._start_heartbeat()
        self._consumer.assign(new)
        if added:
            committed = self._fetch_committed(added)
            for tp in added:
                offset = committed.get(tp)
                if offset is not None:
                    self._consumer.seek(tp, offset)
                    self._committed[tp] = offset
                    self._processed[tp] = offset
                    self._delivered[tp] = offset
        if self.on_assign is not None:
            self.on_assign(list(added))  # eager: everything was revoked, so this is the whole assignment
        log.info("member %s of %s: generation %d, assigned %s", self.member_id, self.group_id,
                 self.generation_id, ", ".join(map(str, new)) or "nothing")
        return True

    async def _join(self):
        """GroupJoin (join + sync) until it succeeds, on the client loop; retriable answers are retried here.
        -> the successful GroupJoinResponse. Cancelled by close()."""
        from proto.rpc import groups_v1_pb2 as gpb

        timeout = self.rebalance_timeout_ms / 1000 + self.request_timeout
        while not self._closed:
            request = gpb.GroupJoinRequest(
                group_id=self.group_id, member_id=self.member_id, topics=self.topics, assignor=self.assignor,
                session_timeout_ms=self.session_timeout_ms, rebalance_timeout_ms=self.rebalance_timeout_ms,
                client_id=self.client_id, generation_id=self.generation_id,
                owned_partitions=[gpb.GroupTopicPartition(topic=tp.topic, partition=tp.partition)
                                  for tp in self._assignment])
            if self.group_instance_id is not None:
                request.group_instance_id = self.group_instance_id
            try:
                response = await self._group.acall("GroupJoin", request, timeout=timeout)
            except (BrokerUnavailableError, RequestTimedOutError) as exc:
                if self._closed:
                    raise
                log.info("joining %s: %s; retrying", self.group_id, exc)
                await asyncio.sleep(max(self.retry_backoff, 0.2))
                continue
            except TidelogError as exc:
                if exc.error_name != "COORDINATOR_NOT_AVAILABLE":
                    raise
                await asyncio.sleep(max(self.retry_backoff, 0.2))
                continue
            code = response.error_code
            if code == NONE:
                return response
            if code == MEMBER_ID_REQUIRED and response.member_id:
                fresh = response.member_id != self.member_id
                self.member_id = response.member_id  # a first join: rejoin under the id given
                if fresh:
                    continue  # at once (a repeat waits the backoff below)
            elif code == UNKNOWN_MEMBER_ID:
                self.member_id = ""
            elif code == ILLEGAL_GENERATION or code == REBALANCE_IN_PROGRESS:
                self.member_id = response.member_id or self.member_id
            elif code == FENCED_INSTANCE_ID:
                raise GroupError(code, f"another member uses group.instance.id {self.group_instance_id!r}")
            elif code not in _RETRY_COORDINATOR:
                raise GroupError(code, response.error_message or f"joining group {self.group_id} failed")
            await asyncio.sleep(self.retry_backoff)
        raise TidelogError("the group consumer is closed")

    def _fetch_committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        deadline = time.monotonic() + self.request_timeout
        while True:
            try:
                return self.committed(tps)
            except GroupError as exc:
                if exc.code not in _RETRY_COORDINATOR or time.monotonic() > deadline:
                    raise
            except (BrokerUnavailableError, RequestTimedOutError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(self.retry_backoff)

    def _revoke(self, partitions: list[TopicPartition]) -> None:
        """Commit what was processed of `partitions` (auto-commit), tell the application, stop reading them."""
        if not partitions:
            return
        self._mark_processed()
        if self.enable_auto_commit and not self._fenced:
            self._commit({tp: o for tp, o in self._processed.items() if tp in partitions}, raise_errors=False)
        if self.on_revoke is not None:
            self.on_revoke(list(partitions))
        keep = [tp for tp in self._assignment if tp not in partitions]
        self._assignment = keep
        self._consumer.assign(keep)
        for tp in partitions:
            self._delivered.pop(tp, None)
            self._processed.pop(tp, None)
            self._committed.pop(tp, None)
            self._pending_delivery.pop(tp, None)

    # ------------------------------------------------------------------------------------------ heartbeats

    def _start_heartbeat(self) -> None:
        if self._heartbeat_task is not None and not self._heartbeat_task.done():
            return
        loop_thread = self._group.loop_thread

        async def start() -> None:
            self._heartbeat_stop = asyncio.Event()

        loop_thread.run(start(), 5)
        self._heartbeat_task = loop_thread.submit(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        from proto.rpc import groups_v1_pb2 as gpb

        stop = self._heartbeat_stop
        while not self._closed:
            try:
                await asyncio.wait_for(stop.wait(), self.heartbeat_interval)
                return
            except TimeoutError:
                pass
            if self._joining:
                continue  # the caller's thread is rejoining: the join keeps the session alive meanwhile
            generation = self.generation_id
            request = gpb.GroupHeartbeatRequest(group_id=self.group_id, member_id=self.member_id,
                                                generation_id=generation)
            if self.group_instance_id is not None:
                request.group_instance_id = self.group_instance_id
            try:
                response = await self._group.acall("GroupHeartbeat", request,
                                                   timeout=max(1.0, self.session_timeout_ms / 1000))
            except TidelogError as exc:
                log.debug("heartbeat of %s failed: %s", self.group_id, exc)
                continue
            code = response.error_code
            if self._joining or generation != self.generation_id:
                continue  # answered for a generation that is over
            if code == REBALANCE_IN_PROGRESS:
                self._rejoin.set()
            elif code in _FENCED or code == FENCED_INSTANCE_ID:
                self._fenced = True
                if code == UNKNOWN_MEMBER_ID:
                    self.member_id = ""
                self._rejoin.set()

    def _stop_heartbeat(self) -> None:
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is None:
            return
        stop = self._heartbeat_stop
        if stop is not None:
            self._group.loop_thread.call_soon(stop.set)
        try:
            task.result(5)
        except Exception:
            task.cancel()

    # ------------------------------------------------------------------------------------------ lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise TidelogError("the group consumer is closed")

    def close(self, *, leave: bool = True) -> None:
        """Commit what was processed (auto-commit), revoke, leave the group and close the connections.
        leave=False closes like a crash: no commit, no leave; the group notices after the session timeout."""
        if self._closed:
            return
        try:
            joining = self._cancel_join()
            if leave and (self._joined or joining):
                if self._joined:
                    self._mark_processed()
                    if self.enable_auto_commit and not self._fenced:
                        self._commit(dict(self._processed), raise_errors=False)
                    if self.on_revoke is not None and self._assignment:
                        self.on_revoke(list(self._assignment))
                self._closed = True
                self._stop_heartbeat()
                self._leave()
        finally:
            self._closed = True
            self._stop_heartbeat()
            self._consumer.close()
            self._group.close()

    def _cancel_join(self) -> bool:
        """Stop a join that is still running on the client loop (the coordinator may hold it for the rebalance
        timeout). -> whether one was pending (the member may then be in the group: leave it)."""
        future, self._join_future = self._join_future, None
        if future is None:
            return False
        future.cancel()
        self._joining = False
        if future.done() and not future.cancelled() and future.exception() is None:
            self.member_id = future.result().member_id  # answered but not yet applied by poll()
        return True

    def _leave(self) -> None:
        from proto.rpc import groups_v1_pb2 as gpb

        if self.group_instance_id is not None:
            return  # a static member keeps its partitions until its session times out (restart without rebalance)
        if not self.member_id:
            return  # a first join that was never answered: the coordinator has no id of ours to remove
        try:
            self._group.call("GroupLeave", gpb.GroupLeaveRequest(group_id=self.group_id, member_id=self.member_id),
                             timeout=5)
        except TidelogError as exc:
            log.info("leaving %s: %s", self.group_id, exc)

    def __enter__(self) -> "GroupConsumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- admin

class GroupAdmin:
    """Group administration over gRPC: list, describe (with lag), reset offsets, delete."""

    def __init__(self, bootstrap: str | None = None, *, request_timeout_ms: int = 30_000) -> None:
        self._group = _GroupConnection(bootstrap, request_timeout_ms)

    def _call(self, name: str, request):
        response = self._group.call(name, request)
        if response.error_code:
            raise GroupError(response.error_code, response.error_message or _error_name(response.error_code))
        return response

    def list_groups(self, states: Iterable[str] = ()) -> list[tuple[str, str, str]]:
        """[(group id, protocol type, state)], sorted by group id."""
        from proto.rpc import groups_v1_pb2 as gpb

        response = self._call("GroupList", gpb.GroupListRequest(states=list(states)))
        return sorted((g.group_id, g.protocol_type, g.state) for g in response.groups)

    def describe_group(self, group_id: str):
        """The GroupDescribeResponse: state, members with their partitions, and per partition the committed
        offset, log end offset, lag and owner."""
        from proto.rpc import groups_v1_pb2 as gpb

        return self._call("GroupDescribe", gpb.GroupDescribeRequest(group_id=group_id))

    def committed(self, group_id: str) -> dict[TopicPartition, int]:
        from proto.rpc import groups_v1_pb2 as gpb

        response = self._call("GroupFetchOffsets", gpb.GroupFetchOffsetsRequest(group_id=group_id))
        return {TopicPartition(o.topic, o.partition): o.offset for o in response.offsets if o.offset >= 0}

    def reset_offsets(self, group_id: str, topic: str, *, to_earliest: bool = False, to_latest: bool = False,
                      to_offset: int | None = None, to_timestamp_ms: int | None = None, shift_by: int | None = None,
                      partitions: Iterable[int] = (), execute: bool = False):
        """Plan (and with execute=True apply) new committed offsets for an inactive group.
        -> [(topic, partition, old offset or -1, new offset)]."""
        from proto.rpc import groups_v1_pb2 as gpb

        chosen = [name for name, value in (("to_earliest", to_earliest or None), ("to_latest", to_latest or None),
                                           ("to_offset", to_offset), ("to_timestamp_ms", to_timestamp_ms),
                                           ("shift_by", shift_by)) if value is not None]
        if len(chosen) != 1:
            raise ValueError("give exactly one of to_earliest, to_latest, to_offset, to_timestamp_ms, shift_by")
        request = gpb.GroupResetOffsetsRequest(group_id=group_id, topic=topic, partitions=list(partitions),
                                               execute=execute)
        value = {"to_earliest": True, "to_latest": True, "to_offset": to_offset, "to_timestamp_ms": to_timestamp_ms,
                 "shift_by": shift_by}[chosen[0]]
        setattr(request, chosen[0], value)
        response = self._call("GroupResetOffsets", request)
        return [(c.topic, c.partition, c.old_offset, c.new_offset) for c in response.changes]

    def delete_group(self, group_id: str) -> None:
        from proto.rpc import groups_v1_pb2 as gpb

        self._call("GroupDelete", gpb.GroupDeleteRequest(group_id=group_id))

    def close(self) -> None:
        self._group.close()

    def __enter__(self) -> "GroupAdmin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["GroupConsumer", "GroupAdmin", "GroupError", "CommitFailedError", "ASSIGNORS"]
