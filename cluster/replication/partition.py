"""`ReplicatedPartition`: a partition whose log is the log of its Raft group.

The broker core talks to it through `cluster.broker.partition.Partition`; the Raft host talks to it as the
group's listener (`on_committed`, `on_leader_change`, `on_restore`). Offsets are Raft indexes, the leader
epoch of a batch is the Raft term it was proposed in (the host stamps both when it persists the entry).

Produce (leader only): validate the batches (framing, CRC-32C, max.message.bytes), check idempotent producers
(a retry is answered with its original offsets, a gap or a fenced epoch refused), check acks=all against
`min.insync.replicas` counted over the live in-sync voters (NOT_ENOUGH_REPLICAS: never a silent ack), set
LogAppendTime if the topic wants it, and propose each batch as one entry. The acknowledgement waits for the
commit of the last entry with the same term (acks=all), for the local fsync (acks=1), or for nothing.

High watermark = the commit index + 1, raised when the host hands committed entries over; it never goes
back. Reads never return a batch at or above it, and a fetch between it and the log end is answered empty.
Consumers read from the leader only (a follower answers NOT_LEADER_OR_FOLLOWER naming the leader).

Retention runs on every replica on committed data only (Kafka does it per replica); compaction only below the
high watermark; the Raft log starts where the partition log starts.

DeleteRecords (leader only): the new log start offset travels as a LOG_START entry through the group (see
cluster.raft.partition_log), so it reaches every replica in log order and durably; each applies it once
committed (deleting the records before it, moving the Raft log start) and the leader answers once it applied
it itself. One at a time per partition.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from cluster.broker.errors import (
    BrokerError,
    NotLeaderOrFollowerError,
    translate,
)
from cluster.broker.partition import AppendInfo, LogPartition, Partition
from cluster.broker.producer_state import ProducerStates
from cluster.broker.types import ACKS_ALL, ACKS_NONE, TopicPartition

log = logging.getLogger(__name__)

# A follower counts as in sync while it was heard from within the election timeout (Raft's recent_active)
# and its log is at most this many offsets behind the leader's (Kafka measures time; Raft gives offsets).
DEFAULT_MAX_ISR_LAG = 100_000
# After this node stops leading, appends still waiting for their commit get this long (seconds) to be
# committed by the new leader (a leadership transfer keeps them) before they fail NOT_LEADER_OR_FOLLOWER.
DEFAULT_ORPHAN_GRACE_S = 3.0
# Kafka's error for an acks=all produce refused for lack of in-sync replicas.
NOT_ENOUGH_REPLICAS = "NOT_ENOUGH_REPLICAS"


class NotEnoughReplicasError(BrokerError):
    error_name = NOT_ENOUGH_REPLICAS


def not_leader(tp: TopicPartition, leader_id: int | None, what: str = "lead") -> NotLeaderOrFollowerError:
    err = NotLeaderOrFollowerError(
        f"broker does not {what} {tp}; " + (f"the leader is broker {leader_id}" if leader_id is not None and
                                            leader_id >= 0 else "no leader is known right now"))
    err.leader_id = leader_id if leader_id is not None else -1  # type: ignore[attr-defined]
    return err


class RaftGroup(Protocol):
    """What this module needs of a Raft host's group handle (cluster.raft.host)."""

    @property
    def leader_id(self) -> int | None: ...

    @property
    def term(self) -> int: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def commit_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    @property
    def configuration(self) -> Any: ...

    def propose_batch(self, items) -> list[Any]: ...

    def replica_state(self) -> dict[int, Any]: ...

    async def wait_durable(self, proposal, timeout_s: float | None = None) -> Any: ...

    async def apply_retention(self, now_ms: int) -> int: ...

    async def wait_committed(self, proposal, timeout_s: float | None = None) -> Any: ...

    async def apply_log_start(self) -> int: ...


@dataclass(slots=True)
class _Waiter:
    last_offset: int
    term: int
    future: asyncio.Future


class ReplicatedPartition(LogPartition):
    """One replica of a partition. Create, then `bind(group)` once the host has added the group."""

    def __init__(self, topic_partition: TopicPartition, raft_log, *, node_id: int, min_insync_replicas: int = 1,
                 clock: Callable[[], int] | None = None, max_isr_lag: int = DEFAULT_MAX_ISR_LAG,
                 orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S, election_timeout_s: float = 1.0) -> None:
        self._init_log_partition(topic_partition, raft_log.log)  # the PartitionRaftLog's storage PartitionLog
        self.raft_log = raft_log  # cluster.raft.partition_log.PartitionRaftLog
        self.node_id = node_id
        self._election_timeout = election_timeout_s
        self._leader_since = 0.0
        self._retention: asyncio.Task | None = None
        self._delete_lock = asyncio.Lock()  # one DeleteRecords in flight per partition
        self._log_start_task: asyncio.Task | None = None  # applying committed LOG_START entries
        self._log_start_again = False
        self.min_insync_replicas = min_insync_replicas
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._max_isr_lag = max_isr_lag
        self._orphan_grace = orphan_grace_s
        self._group: RaftGroup | None = None
        self._high_watermark = self._log.log_start_offset
        self._leader_id: int | None = None
        self._term = 0
        self._was_leader = False
        self._waiters: list[tuple[int, int, _Waiter]] = []  # heap by last offset
        self._proposal_terms: dict[int, int] = {}  # last offset of an uncommitted append -> its term
        self._lost: dict[int, int] = {}  # last offsets of appends replaced before their commit
        self._orphan_timer: asyncio.TimerHandle | None = None
        # Set by the cluster runtime: the voters of the group now and their liveness (see `in_sync_replicas`).
        self.replicas: tuple[int, ...] = ()
        self.on_leadership: Callable[[ReplicatedPartition], None] | None = None

    # -- wiring ------------------------------------------------------------------------------------------

    def bind(self, group: RaftGroup) -> None:
        self._group = group
        commit = getattr(group, "commit_index", -1)
        if commit is not None and commit + 1 > self._high_watermark:
            self._advance(min(commit + 1, self._log.log_end_offset))
        self._leader_id = group.leader_id
        self._term = group.term
        if commit is not None and self.raft_log.log_start_due(commit):
            self._apply_log_start()  # committed before a restart, its effect lost in the crash

    @property
    def group(self) -> RaftGroup | None:
        return self._group

    # -- state -------------------------------------------------------------------------------------------

    @property
    def leader_epoch(self) -> int:
        return self._term

    @property
    def leader_id(self) -> int:
        leader = self._group.leader_id if self._group is not None else self._leader_id
        return leader if leader is not None else -1

    @property
    def is_leader(self) -> bool:
        return self._group is not None and self._group.is_leader and not self._closed

    def _check_open(self) -> None:
        self._check_leader()

    def _check_leader(self) -> RaftGroup:
        group = self._group
        if self._closed or group is None:
            raise not_leader(self.topic_partition, None, "host")
        if not group.is_leader:
            raise not_leader(self.topic_partition, group.leader_id)
        return group

    def in_sync_replicas(self) -> list[int]:
        """Voters in sync: the leader, and the followers the host counts in sync (heard from and caught up
        with the log end lately) that were also heard from within the election timeout (Raft's
        recent_active; just after an election every follower gets one timeout to answer) and whose log is
        within the lag bound. On a follower: just the leader, when it knows one."""
        group = self._group
        if group is None or not group.is_leader:
            leader = self.leader_id
            return [leader] if leader >= 0 else []
        states = group.replica_state()
        voters = self._voters(group)
        fresh = time.monotonic() - self._leader_since < 2 * self._election_timeout
        out = []
        for node in voters:
            if node == self.node_id:
                out.append(node)
                continue
            st = states.get(node)
            if st is None:
                continue
            if st.in_sync and (st.recent_active or fresh) and st.lag <= self._max_isr_lag:
                out.append(node)
        return sorted(out)

    def replica_lag(self) -> dict[int, int]:
        """Follower id -> offsets behind the leader (leader only; empty elsewhere)."""
        group = self._group
        if group is None or not group.is_leader:
            return {}
        return {node: max(0, st.lag) for node, st in group.replica_state().items() if node != self.node_id}

    @staticmethod
    def _voters(group) -> list[int]:
        return sorted(group.configuration.voters)

    @staticmethod
    def _last_index(group) -> int:
        return group.last_index

    # -- produce -----------------------------------------------------------------------------------------

    def append(self, records: bytes | bytearray | memoryview, *, now_ms: int, acks: int = ACKS_ALL) -> AppendInfo:
        from storage.record_batch import LOG_OVERHEAD, set_log_append_time, validate_batches_raw

        group = self._check_leader()
        config = self._log.config
        try:
            headers = validate_batches_raw(records, max_batch_bytes=config.max_message_bytes)
        except Exception as exc:
            raise translate(exc) from exc
        if acks == ACKS_ALL:
            isr = self.in_sync_replicas()
            needed = max(self.min_insync_replicas, len(self._voters(group)) // 2 + 1)
            if len(isr) < needed:
                raise NotEnoughReplicasError(
                    f"{self.topic_partition}: {len(isr)} in-sync replica(s) {isr}, acks=all needs {needed} "
                    f"(min.insync.replicas={self.min_insync_replicas}, a majority of {len(self._voters(group))} "
                    f"voters); nothing was written")
        # Offsets between the log end and the next proposal hold Raft entries only (the new leader's no-op).
        duplicate, table = self._check_producers(headers, self._last_index(group) + 1)
        if duplicate is not None:
            return duplicate
        log_append_time = now_ms if config.log_append_time else -1
        # The entry's bytes live on in the Raft log's unstable tail and in messages to followers, so they must
        # not be a view of a buffer a front door reuses: one private copy unless they already are `bytes`.
        data = records if type(records) is bytes and log_append_time < 0 else bytearray(records)
        view = memoryview(data)
        items = []
        pos = 0
        size = 0
        for h in headers:
            length = LOG_OVERHEAD + h[1]
            if log_append_time >= 0:
                set_log_append_time(view, pos, length, log_append_time)
            items.append((data if len(headers) == 1 else view[pos:pos + length], h[12]))
            pos += length
            size += length
        try:
            proposals = group.propose_batch(items)  # all or none
        except BrokerError:
            raise
        except Exception as exc:
            raise self._proposal_error(exc) from exc
        first, last = proposals[0], proposals[-1]
        if table is not None:
            for h, proposal in zip(headers, proposals):
                ProducerStates.record_appended(table, h, proposal.index, proposal.last_index,
                                               log_append_time if log_append_time >= 0 else h[8])
        assert first is not None and last is not None
        self._proposal_terms[last.last_index] = last.term
        return AppendInfo(first.index, last.last_index, log_append_time, last.last_index - first.index + 1, size)

    def _proposal_error(self, exc: Exception) -> BrokerError:
        from cluster.raft.types import NotLeaderError, ProposalDroppedError, ProposalError

        if isinstance(exc, NotLeaderError):
            return not_leader(self.topic_partition, exc.leader_id)
        if isinstance(exc, ProposalDroppedError):
            if "transfer" in str(exc):  # moving to another leader: the client asks the cluster again
                return not_leader(self.topic_partition, self.leader_id)
            # A full uncommitted backlog: retriable, the client backs off.
            return NotEnoughReplicasError(f"{self.topic_partition}: the leader cannot take more writes right now "
                                          f"({exc})")
        if isinstance(exc, ProposalError):
            return not_leader(self.topic_partition, self.leader_id)
        if isinstance(exc, ValueError):
            return BrokerError(str(exc), error_name="CORRUPT_MESSAGE")
        return translate(exc)

    def acknowledged(self, last_offset: int, acks: int = ACKS_ALL) -> bool:
        return acks == ACKS_NONE or self._high_watermark > last_offset

    async def wait_for_ack(self, last_offset: int, acks: int = ACKS_ALL) -> None:
        if last_offset in self._lost:
            raise not_leader(self.topic_partition, self.leader_id,
                             "hold the append any more (a new leader replaced it before it was committed; retry): lead")
        if self._high_watermark > last_offset:
            return
        if self._closed or self._group is None:
            raise not_leader(self.topic_partition, self.leader_id, "host")
        if acks == ACKS_NONE:
            return
        if acks != ACKS_ALL:
            try:
                await self._group.wait_durable(last_offset)
            except KeyError:  # no longer outstanding: committed (so durable), or failed
                if self._high_watermark > last_offset or self._log.durable_end_offset > last_offset:
                    return
                raise not_leader(self.topic_partition, self.leader_id) from None
            except BrokerError:
                raise
            except Exception as exc:
                raise self._proposal_error(exc) from exc
            return
        term = self._term_of(last_offset)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (last_offset, next(self._seq), _Waiter(last_offset, term, future)))
        await future

    def _term_of(self, last_offset: int) -> int:
        """The term of the entry ending at `last_offset`: proposed here (remembered), else as the log has it."""
        term = self._proposal_terms.get(last_offset)
        if term is not None:
            return term
        try:
            return self._log.epoch_for_offset(last_offset)
        except Exception:
            return self._group.term if self._group is not None else self._term

    def _resolve(self, entries) -> None:
        """Committed entries settle the proposals and waiters they cover: success iff the entry that ends at
        the proposal's last offset carries the term it was proposed in (otherwise it was truncated away; an
        acknowledgement asked for later must fail too, so such offsets are remembered in `_lost`)."""
        terms = self._proposal_terms
        if terms:
            last = entries[-1].last_index
            settled = [o for o in terms if o <= last]
            if settled:
                ends = {e.last_index: e.term for e in entries}
                for offset in settled:
                    term = terms.pop(offset)
                    if ends.get(offset) != term:
                        self._lost[offset] = term
                        if len(self._lost) > 10_000:
                            del self._lost[next(iter(self._lost))]
        waiters = self._waiters
        if not waiters:
            return
        for e in entries:
            while waiters and waiters[0][0] <= e.last_index:
                _, _, w = heapq.heappop(waiters)
                if w.future.done():
                    continue
                if w.last_offset == e.last_index and e.term == w.term:
                    w.future.set_result(None)
                else:
                    w.future.set_exception(not_leader(
                        self.topic_partition, self.leader_id,
                        "hold the append any more (a new leader replaced it before it was committed; retry): lead"))
            if not waiters:
                return

    def _fail_waiters(self, error: BrokerError, *, older_than_term: int | None = None) -> None:
        keep = []
        for item in self._waiters:
            w = item[2]
            if older_than_term is not None and w.term >= older_than_term:
                keep.append(item)
            elif not w.future.done():
                w.future.set_exception(error)
        heapq.heapify(keep)
        self._waiters = keep

    # -- DeleteRecords ------------------------------------------------------------------------------------

    async def delete_records(self, offset: int, *, timeout_s: float) -> int:
        from cluster.broker.errors import OffsetOutOfRangeError, RequestTimedOutError
        from cluster.raft.partition_log import MAX_PENDING_LOG_STARTS, log_start_batch

        self._check_leader()
        if not 0 <= offset <= self._high_watermark:
            raise OffsetOutOfRangeError(f"{self.topic_partition}: offset {offset} is outside [0, high watermark "
                                        f"{self._high_watermark}]")
        async with self._delete_lock:
            if offset <= self._log.log_start_offset:
                return self._log.log_start_offset  # nothing to delete: Kafka answers the low watermark
            if self.raft_log.pending_log_starts >= MAX_PENDING_LOG_STARTS:
                raise RequestTimedOutError(f"{self.topic_partition}: too many DeleteRecords pending; retry")
            group = self._check_leader()
            try:
                proposal = group.propose_batch([(log_start_batch(offset), 1)])[0]
            except BrokerError:
                raise
            except Exception as exc:
                raise self._proposal_error(exc) from exc
            try:
                await group.wait_committed(proposal, timeout_s)
            except TimeoutError:
                raise RequestTimedOutError(f"{self.topic_partition}: DeleteRecords not committed within "
                                           f"{timeout_s:g}s") from None
            except BrokerError:
                raise
            except Exception as exc:  # leadership lost, replaced, offline: the client retries at the leader
                raise self._proposal_error(exc) from exc
            # Committed: on_committed started applying it here (it ran before this waiter resumed).
            while self._log.log_start_offset < offset and self._log_start_task is not None:
                task = self._log_start_task
                await asyncio.shield(task)
                if task is self._log_start_task and task.done():
                    break
            if self._log.log_start_offset < offset:
                raise translate(RuntimeError(f"{self.topic_partition}: the committed log start {offset} was not "
                                             "applied (see the broker log)"))
            return self._log.log_start_offset

    def _apply_log_start(self) -> None:
        """Apply the committed LOG_START entries between the host's drains (one task; runs again if more came)."""
        task = self._log_start_task
        if task is not None and not task.done():
            self._log_start_again = True
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the loop (tests driving the listener by hand): the next commit retries
            return
        self._log_start_task = loop.create_task(self._apply_log_starts())

    async def _apply_log_starts(self) -> None:
        group = self._group
        while group is not None and not self._closed:
            self._log_start_again = False
            before = self._log.log_start_offset
            try:
                await group.apply_log_start()
            except Exception as exc:
                log.error("DeleteRecords of %s: applying the log start failed: %s", self.topic_partition, exc)
                return
            if self._log.log_start_offset != before:
                self._producers.invalidate()
            if not self._log_start_again:
                return

    # -- the Raft host's listener --------------------------------------------------------------------------

    def on_committed(self, entries) -> None:
        if not entries:
            return
        self._resolve(entries)
        self._advance(entries[-1].last_index + 1)
        if self.raft_log.log_start_due(entries[-1].last_index):  # a DeleteRecords (LOG_START) committed
            self._apply_log_start()

    def on_leader_change(self, leader_id: int | None, term: int) -> None:
        changed_term = term != self._term
        self._leader_id = leader_id
        self._term = term
        leading = leader_id == self.node_id
        if leading and not self._was_leader:
            self._leader_since = time.monotonic()
        if changed_term or not leading:
            # The log may lose its uncommitted tail: the producer table is rebuilt from it when next needed.
            self._producers.invalidate()
        if self._was_leader and not leading:
            self._schedule_orphan_failure(term)
        self._was_leader = leading
        callback = self.on_leadership
        if callback is not None:
            try:
                callback(self)
            except Exception:  # pragma: no cover - a listener bug must not break the host
                log.exception("leadership callback of %s failed", self.topic_partition)

    def on_restore(self, snapshot) -> None:
        """The log now starts after `snapshot.index` (a follower far behind the leader's log start)."""
        self._producers.invalidate()
        for offset in [o for o in self._proposal_terms if o <= snapshot.index]:
            self._lost[offset] = self._proposal_terms.pop(offset)
        self._fail_waiters(not_leader(self.topic_partition, self.leader_id))
        self._advance(snapshot.index + 1)

    def on_truncated(self, offset: int) -> None:
        """The host cut the log at `offset` (a divergent uncommitted tail)."""
        self._producers.invalidate()

    def _schedule_orphan_failure(self, term: int) -> None:
        if not self._waiters:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._fail_waiters(not_leader(self.topic_partition, self._leader_id))
            return
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()

        def expire() -> None:
            self._orphan_timer = None
            if not self.is_leader:
                self._fail_waiters(not_leader(self.topic_partition, self._leader_id), older_than_term=term + 1)

        self._orphan_timer = loop.call_later(self._orphan_grace, expire)

    # -- fetch -------------------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes | memoryview:
        self._check_leader()
        log_ = self._log
        if self._high_watermark <= offset <= max(log_.log_end_offset, self._last_index(self._group) + 1) and \
                offset >= log_.log_start_offset:
            return b""  # between the high watermark and the log end: nothing visible yet, not an error
        try:
            return log_.read(offset, max_bytes, upper_bound=self._high_watermark)
        except Exception as exc:
            raise translate(exc) from exc

    # -- configuration and housekeeping ------------------------------------------------------------------

    def update_config(self, config) -> None:
        self._log.update_config(config)

    def maintain(self, now_ms: int) -> None:
        """Age-based roll, and retention on committed data only (the host runs it between drains, only when
        every sealed segment is applied, and moves the Raft log start with the log start)."""
        if self._closed or self._group is None:
            return
        log_ = self._log
        try:
            log_.roll_if_due(now_ms)
        except Exception as exc:
            log.error("housekeeping of %s failed: %s", self.topic_partition, exc)
            return
        bases = log_.segment_base_offsets
        if len(bases) < 2 or (self._retention is not None and not self._retention.done()):
            return
        group = self._group

        async def retention() -> None:
            before = log_.log_start_offset
            try:
                await group.apply_retention(now_ms)
            except Exception as exc:
                log.error("retention of %s failed: %s", self.topic_partition, exc)
            if log_.log_start_offset != before:
                self._producers.invalidate()

        self._retention = asyncio.get_running_loop().create_task(retention())

    async def close(self) -> None:
        """Stop serving: pending acknowledgements fail, watchers wake. The log itself belongs to the Raft
        host's group (removed by the runtime)."""
        if self._closed:
            return
        self._closed = True
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None
        if self._compacting is not None:
            await asyncio.gather(self._compacting, return_exceptions=True)
        if self._retention is not None:
            await asyncio.gather(self._retention, return_exceptions=True)
        if self._log_start_task is not None:
            await asyncio.gather(self._log_start_task, return_exceptions=True)
        self._fail_waiters(not_leader(self.topic_partition, None, "host"))
        self._wake_all()


class RemotePartition(Partition):
    """A partition of a topic with no replica on this broker: every request is answered
    NOT_LEADER_OR_FOLLOWER naming the leader (from the leadership table), so clients go there."""

    def __init__(self, topic_partition: TopicPartition, leader: Callable[[], tuple[int, int]]) -> None:
        self.topic_partition = topic_partition
        self._leader = leader  # -> (leader id or -1, leader epoch)

    def _error(self) -> NotLeaderOrFollowerError:
        return not_leader(self.topic_partition, self._leader()[0], "host a replica of")

    @property
    def log_start_offset(self) -> int:
        return -1

    @property
    def log_end_offset(self) -> int:
        return -1

    @property
    def high_watermark(self) -> int:
        return -1

    @property
    def size_bytes(self) -> int:
        return 0

    @property
    def leader_epoch(self) -> int:
        return self._leader()[1]

    @property
    def leader_id(self) -> int:
        return self._leader()[0]

    def append(self, records, *, now_ms: int, acks: int = ACKS_ALL) -> AppendInfo:
        raise self._error()

    async def wait_for_ack(self, last_offset: int, acks: int = ACKS_ALL) -> None:
        raise self._error()

    def read(self, offset: int, max_bytes: int):
        raise self._error()

    def watch(self, offset: int, wake: Callable[[], None]) -> Callable[[], None]:
        wake()
        return _noop

    def list_offset(self, timestamp: int) -> tuple[int, int]:
        raise self._error()

    async def delete_records(self, offset: int, *, timeout_s: float) -> int:
        raise self._error()

    def update_config(self, config) -> None:
        return None

    def maintain(self, now_ms: int) -> None:
        return None

    async def compact(self, now_ms: int, *, bytes_per_second: int | None) -> None:
        return None

    async def close(self) -> None:
        return None


def _noop() -> None:
    return None
