"""The sans-I/O group coordinator: many classic groups, their committed offsets, and the log they live in.

Every input takes `now_ms` and returns the outputs it caused: `Response`s (maybe for requests parked
earlier) and `Persist`s (records for `__consumer_offsets`). Before and after handling an input, the core
fires every timer due by `now_ms`, each at its own deadline, so a late `poll` behaves like a punctual one.
Rules follow Kafka's `GroupMetadataManager`/`ClassicGroup` (classic protocol) unless a comment says why not.

Durability: answers that promise durable state (OffsetCommit, the assignment in SyncGroup, a static
member's replacement, DeleteGroups, OffsetDelete) wait for `persisted(write_id, ...)`. Offsets become
visible to OffsetFetch only once persisted. Confirmations of one partition are applied in write order even
if they arrive out of order, so memory follows the log.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from consumer_groups.assignors import ASSIGNORS, MemberSubscription, cooperative_sticky_assign
from consumer_groups.consumer_protocol import (
    Assignment,
    ConsumerProtocolError,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    flatten_topic_partitions,
    group_topic_partitions,
)
from consumer_groups.errors import ErrorCode, group_write_error, offset_write_error
from consumer_groups.group import CONSUMER_PROTOCOL_TYPE, ClassicGroup, GroupView, Member, OffsetAndMetadata
from consumer_groups.messages import (
    DeleteGroupResult,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribedGroup,
    DescribedMember,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    Handle,
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupMember,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    LeaveMemberResponse,
    ListedGroup,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchPartition,
    OffsetFetchRequest,
    OffsetFetchResponse,
    Output,
    PartitionError,
    PartitionLag,
    Persist,
    Request,
    Response,
    ResponseBody,
    SyncGroupRequest,
    SyncGroupResponse,
    TopicPartition,
)
from consumer_groups.records import (
    GroupKey,
    GroupValue,
    OffsetKey,
    OffsetValue,
    Record,
    decode_group_value,
    decode_key,
    decode_offset_value,
    group_record,
    offset_record,
    partition_for_group,
)
from consumer_groups.state import GroupState
from consumer_groups.timer import DeadlineTimer, TimerKey

_MAX_STRING_BYTES = 0x7FFF  # int16-length strings in the records
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)
# A client retrying a parked JoinGroup/SyncGroup shares the answer; beyond this many, the oldest is
# answered REBALANCE_IN_PROGRESS (it rejoins) so a misbehaving client cannot grow the list without bound.
MAX_PARKED_PER_MEMBER = 8
_EMPTY, _PREPARING, _COMPLETING, _STABLE, _DEAD = (
    GroupState.EMPTY,
    GroupState.PREPARING_REBALANCE,
    GroupState.COMPLETING_REBALANCE,
    GroupState.STABLE,
    GroupState.DEAD,
)


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Broker settings (Kafka's names and defaults in comments)."""

    num_partitions: int = 50  # offsets.topic.num.partitions
    session_timeout_min_ms: int = 6_000  # group.min.session.timeout.ms
    session_timeout_max_ms: int = 1_800_000  # group.max.session.timeout.ms
    initial_rebalance_delay_ms: int = 3_000  # group.initial.rebalance.delay.ms
    group_max_size: int = 2**31 - 1  # group.max.size
    new_member_join_timeout_ms: int = 300_000  # KIP-394, fixed in Kafka
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000  # offsets.retention.minutes
    offsets_retention_check_interval_ms: int = 600_000  # offsets.retention.check.interval.ms
    offset_metadata_max_bytes: int = 4096  # offset.metadata.max.bytes
    max_pending_writes: int = 100_000  # OffsetCommits beyond this get COORDINATOR_NOT_AVAILABLE (back-pressure)

    def __post_init__(self) -> None:
        if self.num_partitions <= 0:
            raise ValueError("num_partitions must be positive")
        if not 0 < self.session_timeout_min_ms <= self.session_timeout_max_ms:
            raise ValueError("need 0 < session_timeout_min_ms <= session_timeout_max_ms")
        if self.initial_rebalance_delay_ms < 0 or self.new_member_join_timeout_ms <= 0:
            raise ValueError("delays must be non-negative, the new member join timeout positive")
        if self.group_max_size <= 0 or self.max_pending_writes <= 0:
            raise ValueError("group_max_size and max_pending_writes must be positive")
        if self.offsets_retention_ms <= 0 or self.offsets_retention_check_interval_ms <= 0:
            raise ValueError("offsets retention and its check interval must be positive")
        if self.session_timeout_max_ms not in _INT32:
            raise ValueError("session_timeout_max_ms must fit an int32")
        if not 0 <= self.offset_metadata_max_bytes <= _MAX_STRING_BYTES:
            raise ValueError(f"offset_metadata_max_bytes must be in 0..{_MAX_STRING_BYTES}")


_SUCCESS = None
WriteDone = Callable[[ErrorCode | None], None]


@dataclass(slots=True)
class _PendingWrite:
    partition: int
    on_done: WriteDone
    resolved: bool = False
    error: ErrorCode | None = None


@dataclass(slots=True)
class _LoadState:
    offsets: dict[str, dict[TopicPartition, OffsetValue]] = field(default_factory=dict)
    groups: dict[str, GroupValue | None] = field(default_factory=dict)  # None: a tombstone
    skipped_records: int = 0


class GroupCoordinator:
    """All groups of the `__consumer_offsets` partitions this node leads. Not thread-safe; not re-entrant."""

    def __init__(
        self,
        config: GroupConfig,
        rng: random.Random,
        *,
        active_partitions: Iterable[int] | None = None,
        member_id_factory: Callable[[str], str] | None = None,
        now_ms: int = 0,
    ) -> None:
        """`active_partitions`: partitions served from the start with no state to load (default all);
        others are NOT_COORDINATOR until loaded. `member_id_factory(prefix)` overrides the member ids made
        from `rng` (prefix = client id, or group instance id for static members)."""
        self.config = config
        self._rng = rng
        self._make_member_id = member_id_factory or self._random_member_id
        self._now = now_ms
        self._groups: dict[str, ClassicGroup] = {}
        self._timer: DeadlineTimer[None] = DeadlineTimer()
        all_partitions = range(config.num_partitions)
        self._active: set[int] = set(all_partitions if active_partitions is None else active_partitions)
        if not self._active <= set(all_partitions):
            raise ValueError("active partition out of range")
        self._loading: dict[int, _LoadState] = {}
        self._pending_writes: dict[int, _PendingWrite] = {}
        self._write_order: dict[int, deque[int]] = {}
        self._next_write_id = 1
        self._partition_counts: dict[str, int] = {}
        self._out: list[Output] = []
        self._in_input = False
        self._schedule_offset_expiry()

    # ================================================================ inputs

    def handle_request(self, handle: Handle, request: Request, now_ms: int) -> list[Output]:
        handler = self._HANDLERS.get(type(request))
        if handler is None:
            raise TypeError(f"not a group coordinator request: {type(request).__name__}")
        return self._run(now_ms, lambda: handler(self, handle, request))

    def poll(self, now_ms: int) -> list[Output]:
        """Fire the timers due by now_ms (session/rebalance/sync timeouts, initial delay, offset expiry)."""
        return self._run(now_ms, lambda: None)

    def next_deadline_ms(self) -> int | None:
        """When the shell should call `poll` next (None: no timer pending)."""
        return self._timer.next_deadline_ms()

    def persisted(self, write_id: int, now_ms: int, error: int | None = None) -> list[Output]:
        """The shell's confirmation of a `Persist`: error None (or 0) = durable, else the append error code
        (e.g. NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT). Unknown or unloaded write ids are ignored."""
        return self._run(now_ms, lambda: self._on_persisted(write_id, error))

    def set_partition_counts(self, partition_counts: Mapping[str, int], now_ms: int) -> list[Output]:
        """Topic -> partition count, for server-side assignment; a change rebalances the server-assigned
        groups subscribed to the changed topics."""
        return self._run(now_ms, lambda: self._update_partition_counts(dict(partition_counts)))

    def begin_loading(self, partition: int) -> list[Output]:
        """This node became leader of `partition`: its groups answer COORDINATOR_LOAD_IN_PROGRESS until
        `complete_loading`. Feed the partition's records, oldest first, to `load_records`."""
        self._check_partition(partition)
        if partition in self._active or partition in self._loading:
            raise ValueError(f"partition {partition} is already active or loading")
        self._loading[partition] = _LoadState()
        return []

    def load_records(self, partition: int, records: Iterable[Record]) -> list[Output]:
        """Replay records of a loading partition. Raises RecordFormatError on a record it cannot decode
        (newer record types are skipped, not errors)."""
        state = self._loading.get(partition)
        if state is None:
            raise ValueError(f"partition {partition} is not loading")
        for record in records:
            self._replay(partition, state, record)
        return []

    def complete_loading(self, partition: int, now_ms: int) -> list[Output]:
        if partition not in self._loading:
            raise ValueError(f"partition {partition} is not loading")
        return self._run(now_ms, lambda: self._activate(partition))

    def unload(self, partition: int, now_ms: int) -> list[Output]:
        """This node stopped leading `partition`: parked requests and unconfirmed writes are answered
        NOT_COORDINATOR and the partition's groups are dropped (a new leader rebuilds them from the log)."""
        self._check_partition(partition)
        return self._run(now_ms, lambda: self._unload(partition))

    def load(self, records: Iterable[Record], now_ms: int) -> list[Output]:
        """Rebuild every partition from `records` (log order), e.g. on a fresh coordinator in tests."""
        outputs: list[Output] = []
        for partition in range(self.config.num_partitions):
            if partition in self._active or partition in self._loading:
                outputs += self.unload(partition, now_ms)
            self.begin_loading(partition)
        for record in records:
            key = decode_key(record.key)
            if key is not None:
                partition = self.partition_for(key.group_id)
                self._replay(partition, self._loading[partition], record)
        for partition in range(self.config.num_partitions):
            outputs += self.complete_loading(partition, now_ms)
        return outputs

    # ================================================================ queries (no outputs)

    def partition_for(self, group_id: str) -> int:
        return partition_for_group(group_id, self.config.num_partitions)

    def group_ids(self) -> list[str]:
        return sorted(self._groups)

    def group_view(self, group_id: str) -> GroupView | None:
        group = self._groups.get(group_id)
        return None if group is None else group.view()

    def committed_offsets(self, group_id: str) -> dict[TopicPartition, OffsetAndMetadata]:
        group = self._groups.get(group_id)
        return {} if group is None else dict(group.offsets)

    def lag(self, group_id: str, log_end_offsets: Mapping[TopicPartition, int]) -> list[PartitionLag]:
        """Per partition given: log end offset - committed offset (never negative); None if nothing committed."""
        offsets = self.committed_offsets(group_id)
        result = []
        for (topic, partition), log_end in sorted(log_end_offsets.items()):
            committed = offsets.get((topic, partition))
            committed_offset = None if committed is None else committed.offset
            lag = None if committed_offset is None else max(0, log_end - committed_offset)
            result.append(PartitionLag(topic, partition, committed_offset, log_end, lag))
        return result

    # ================================================================ plumbing

    def _run(self, now_ms: int, action: Callable[[], None]) -> list[Output]:
        if self._in_input:
            raise RuntimeError("GroupCoordinator inputs are not re-entrant")
        self._in_input = True
        self._out = []
        try:
            self._advance(now_ms)
            action()
            self._advance(now_ms)  # timers the input scheduled with zero delay
            out, self._out = self._out, []
            return out
        finally:
            self._in_input = False

    def _advance(self, now_ms: int) -> None:
        target = max(self._now, now_ms)  # a clock stepping back never moves the core back
        while (due := self._timer.pop_due(target)) is not None:
            deadline, action = due
            self._now = max(self._now, deadline)
            action()
        self._now = target

    def _respond(self, handle: Handle, body: ResponseBody) -> None:
        self._out.append(Response(handle, body))

    def _persist(self, group_id: str, records: list[Record], on_done: WriteDone) -> int:
        partition = self.partition_for(group_id)
        assert partition in self._active, "writes only for partitions this coordinator leads"
        write_id = self._next_write_id
        self._next_write_id += 1
        self._pending_writes[write_id] = _PendingWrite(partition, on_done)
        self._write_order.setdefault(partition, deque()).append(write_id)
        self._out.append(Persist(write_id, partition, tuple(records)))
        return write_id

    def _on_persisted(self, write_id: int, error: int | None) -> None:
        pending = self._pending_writes.get(write_id)
        if pending is None or pending.resolved:
            return
        pending.resolved = True
        pending.error = None if error in (None, 0) else _as_error_code(error)
        order = self._write_order[pending.partition]
        while order and self._pending_writes[order[0]].resolved:
            done = self._pending_writes.pop(order.popleft())
            done.on_done(done.error)

    def _partition_error(self, group_id: str) -> ErrorCode | None:
        partition = self.partition_for(group_id)
        if partition in self._loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        if partition not in self._active:
            return ErrorCode.NOT_COORDINATOR
        return None

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.config.num_partitions:
            raise ValueError(f"partition {partition} not in 0..{self.config.num_partitions - 1}")

    def _random_member_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"

    def _schedule(self, key: TimerKey, delay_ms: int, action: Callable[[], None]) -> None:
        self._timer.schedule(key, self._now + delay_ms, action)

    def _group_action(self, group: ClassicGroup, action: Callable[[ClassicGroup], None]) -> Callable[[], None]:
        """A timer/write callback that only runs while `group` is still the registered, live group."""

        def run() -> None:
            if self._groups.get(group.group_id) is group and group.state is not _DEAD:
                action(group)

        return run

    def _drop_if_unused(self, group: ClassicGroup) -> None:
        # A group created by a request that then failed, never persisted: forget it.
        if (
            group.state is _EMPTY
            and group.generation_id == 0
            and not group.members
            and not group.pending_members
            and not group.offsets
            and not group.pending_offset_commits
            and self._groups.get(group.group_id) is group
        ):
            self._remove_group(group)

    def _remove_group(self, group: ClassicGroup) -> None:
        if group.state is not _DEAD:
            group.transition_to(_DEAD, self._now)
        self._timer.cancel_group(group.group_id)
        if self._groups.get(group.group_id) is group:
            del self._groups[group.group_id]

    # ================================================================ membership: helpers

    def _validate_member(self, group: ClassicGroup, member_id: str, instance_id: str | None) -> ErrorCode | None:
        if instance_id is not None:
            existing = group.static_members.get(instance_id)
            if existing is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if existing != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        elif member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    def _schedule_heartbeat(self, group: ClassicGroup, member_id: str, timeout_ms: int) -> None:
        self._schedule(
            ("heartbeat", group.group_id, member_id),
            timeout_ms,
            self._group_action(group, lambda g: self._heartbeat_expired(g, member_id)),
        )

    def _complete_join(self, group: ClassicGroup, member: Member, response: JoinGroupResponse) -> None:
        for handle in member.join_handles:
            self._respond(handle, response)
        group.set_join_handles(member, [])

    def _complete_sync(self, member: Member, response: SyncGroupResponse) -> None:
        for handle in member.sync_handles:
            self._respond(handle, response)
        member.sync_handles = []

    def _join_response(
        self,
        group: ClassicGroup,
        member: Member,
        *,
        leader: str | None = None,
        with_members: bool = False,
        skip_assignment: bool = False,
    ) -> JoinGroupResponse:
        members = ()
        if with_members:
            members = tuple(
                JoinGroupMember(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
                for m in group.members.values()
            )
        return JoinGroupResponse(
            ErrorCode.NONE,
            group.generation_id,
            group.protocol_type,
            group.protocol_name,
            (group.leader_id or "") if leader is None else leader,
            skip_assignment,
            member.member_id,
            members,
        )

    def _drop_member(self, group: ClassicGroup, member: Member) -> None:
        """Remove a member, answering anything it has parked with UNKNOWN_MEMBER_ID."""
        self._complete_join(group, member, JoinGroupResponse(ErrorCode.UNKNOWN_MEMBER_ID))
        self._complete_sync(member, SyncGroupResponse(ErrorCode.UNKNOWN_MEMBER_ID))
        group.remove(member.member_id)
        self._timer.cancel(("heartbeat", group.group_id, member.member_id))

    def _remove_member_and_update_group(self, group: ClassicGroup, member: Member) -> None:
        self._drop_member(group, member)
        if group.is_in(_STABLE, _COMPLETING):
            self._maybe_prepare_rebalance_or_complete_join(group)
        elif group.state is _PREPARING and group.has_all_members_joined():
            self._complete_group_join(group)

    def _heartbeat_expired(self, group: ClassicGroup, member_id: str) -> None:
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            if group.state is _PREPARING and group.has_all_members_joined():
                self._complete_group_join(group)
            self._drop_if_unused(group)
        elif member_id in group.members:
            member = group.members[member_id]
            if not member.has_satisfied_heartbeat():
                self._remove_member_and_update_group(group, member)

    # ================================================================ rebalance

    def _maybe_prepare_rebalance_or_complete_join(self, group: ClassicGroup) -> None:
        if group.can_rebalance():
            self._prepare_rebalance(group)
        else:
            self._maybe_complete_join_phase(group)

    def _prepare_rebalance(self, group: ClassicGroup) -> None:
        if group.state is _COMPLETING:
            # Members parked on SyncGroup must rejoin instead.
            self._reset_and_propagate_assignment_with_error(group, ErrorCode.REBALANCE_IN_PROGRESS)
        group.pending_sync_members.clear()
        group.follow_up_rebalance = False
        group.metadata_write_id = None  # a write for the old generation is moot; its callback checks that
        self._timer.cancel(("sync", group.group_id, ""))
        initial = group.state is _EMPTY
        group.transition_to(_PREPARING, self._now)
        if initial:
            # A new group: wait a little for more members before the first generation (KIP-134).
            delay = self.config.initial_rebalance_delay_ms
            remaining = max(group.rebalance_timeout_ms() - delay, 0)
            self._schedule_initial_rebalance(group, delay, remaining)
        elif group.has_all_members_joined():
            self._complete_group_join(group)
        else:
            self._schedule_join_timeout(group)

    def _schedule_initial_rebalance(self, group: ClassicGroup, delay_ms: int, remaining_ms: int) -> None:
        def expired(g: ClassicGroup) -> None:
            if g.new_member_added and remaining_ms != 0:
                g.new_member_added = False
                self._schedule_initial_rebalance(
                    g, min(self.config.initial_rebalance_delay_ms, remaining_ms), max(remaining_ms - delay_ms, 0)
                )
            else:
                self._complete_group_join(g)

        self._schedule(("join", group.group_id, ""), delay_ms, self._group_action(group, expired))

    def _schedule_join_timeout(self, group: ClassicGroup) -> None:
        self._schedule(
            ("join", group.group_id, ""),
            group.rebalance_timeout_ms(),
            self._group_action(group, self._complete_group_join),
        )

    def _maybe_complete_join_phase(self, group: ClassicGroup) -> None:
        # The initial rebalance completes only by its delay timer, to collect more members.
        if group.state is _PREPARING and group.previous_state is not _EMPTY and group.has_all_members_joined():
            self._complete_group_join(group)

    def _complete_group_join(self, group: ClassicGroup) -> None:
        if group.state is not _PREPARING:
            return
        self._timer.cancel(("join", group.group_id, ""))
        # Dynamic members that did not rejoin in time are out; static ones keep their seat until their
        # session expires (KIP-345).
        for member in group.not_yet_rejoined_members():
            if member.group_instance_id is None:
                self._drop_member(group, member)
        if not group.maybe_elect_new_joined_leader() and group.members:
            # Only static members remain and none rejoined: wait again (their sessions will expire). The
            # floor keeps a tiny rebalance timeout from turning this into a busy loop.
            self._schedule(
                ("join", group.group_id, ""),
                max(group.rebalance_timeout_ms(), self.config.session_timeout_min_ms),
                self._group_action(group, self._complete_group_join),
            )
            return
        group.init_next_generation(self._now)
        if group.state is _EMPTY:
            # Nobody left: persist the empty generation (best effort, no answer depends on it).
            self._persist(group.group_id, [group_record(group.group_id, group.record_value())], lambda error: None)
            return
        group.server_assigned = (
            group.protocol_type == CONSUMER_PROTOCOL_TYPE
            and group.protocol_name in ASSIGNORS
            and all(m.server_assignment for m in group.members.values())
        )
        for member in list(group.members.values()):
            is_leader = member.member_id == group.leader_id
            self._complete_join(
                group,
                member,
                self._join_response(
                    group,
                    member,
                    with_members=is_leader and not group.server_assigned,
                    skip_assignment=group.server_assigned,
                ),
            )
            self._schedule_heartbeat(group, member.member_id, member.session_timeout_ms)
            member.is_new = False
            group.pending_sync_members.add(member.member_id)
        generation = group.generation_id
        self._schedule(
            ("sync", group.group_id, ""),
            group.rebalance_timeout_ms(),
            self._group_action(group, lambda g: self._expire_pending_sync(g, generation)),
        )
        if group.server_assigned:
            self._assign_on_server(group)

    def _expire_pending_sync(self, group: ClassicGroup, generation: int) -> None:
        if generation != group.generation_id or not group.is_in(_COMPLETING, _STABLE):
            return
        if group.pending_sync_members:
            for member_id in list(group.pending_sync_members):
                self._drop_member(group, group.members[member_id])
            self._prepare_rebalance(group)

    def _reset_and_propagate_assignment_with_error(self, group: ClassicGroup, error: ErrorCode) -> None:
        assert group.state is _COMPLETING
        for member in group.members.values():
            member.assignment = b""
        self._propagate_assignment(group, error)

    def _propagate_assignment(self, group: ClassicGroup, error: ErrorCode) -> None:
        ok = error is ErrorCode.NONE
        for member in group.members.values():
            if member.sync_handles:
                self._complete_sync(
                    member,
                    SyncGroupResponse(
                        error,
                        group.protocol_type if ok else None,
                        group.protocol_name if ok else None,
                        member.assignment if ok else b"",
                    ),
                )
                # Its session clock restarts now: it may have expired while the member waited on us.
                self._schedule_heartbeat(group, member.member_id, member.session_timeout_ms)

    def _store_assignment(self, group: ClassicGroup, assignments: dict[str, bytes]) -> None:
        """Persist the generation with its assignment; on success the group turns Stable and the parked
        SyncGroups get their assignment."""
        assignments = {m: assignments.get(m, b"") for m in group.members}
        generation = group.generation_id

        def done(error: ErrorCode | None) -> None:
            # Another rebalance may have started meanwhile: then this generation is moot.
            if self._groups.get(group.group_id) is not group or group.state is not _COMPLETING:
                return
            if group.generation_id != generation:
                return
            group.metadata_write_id = None
            if error is not _SUCCESS:
                self._reset_and_propagate_assignment_with_error(group, group_write_error(error))
                self._maybe_prepare_rebalance_or_complete_join(group)
                return
            for member in group.members.values():
                member.assignment = assignments.get(member.member_id, b"")
            self._propagate_assignment(group, ErrorCode.NONE)
            group.transition_to(_STABLE, self._now)
            self._maybe_follow_up_rebalance(group)

        group.metadata_write_id = self._persist(
            group.group_id, [group_record(group.group_id, group.record_value(assignments))], done
        )

    def _maybe_follow_up_rebalance(self, group: ClassicGroup) -> None:
        # Cooperative server-side assignment: once every member has its (shrunk) assignment, rebalance
        # again to hand the revoked partitions to their targets.
        if group.follow_up_rebalance and group.state is _STABLE and not group.pending_sync_members:
            group.follow_up_rebalance = False
            self._prepare_rebalance(group)

    def _assign_on_server(self, group: ClassicGroup) -> None:
        protocol = group.protocol_name
        assert protocol is not None
        subscriptions = []
        for member in group.members.values():
            try:
                _, sub = decode_subscription(member.metadata(protocol))
            except ConsumerProtocolError:
                topics: frozenset[str] = frozenset()
                owned: list[TopicPartition] = []
                generation = -1
            else:
                topics, owned, generation = (
                    frozenset(sub.topics),
                    flatten_topic_partitions(sub.owned_partitions),
                    sub.generation_id,
                )
            if member.assignment:  # what the coordinator gave it last generation beats what it claims
                try:
                    owned = flatten_topic_partitions(decode_assignment(member.assignment)[1].partitions)
                    generation = group.generation_id - 1
                except ConsumerProtocolError:
                    pass
            subscriptions.append(
                MemberSubscription(member.member_id, topics, tuple(owned), member.group_instance_id, generation)
            )
        if protocol == "cooperative-sticky":
            result = cooperative_sticky_assign(subscriptions, self._partition_counts)
            assignment_map = result.assignment
            group.follow_up_rebalance = any(result.revoked.values())
        else:
            assignment_map = ASSIGNORS[protocol](subscriptions, self._partition_counts)
        assignments = {
            member_id: encode_assignment(Assignment(group_topic_partitions(tps)))
            for member_id, tps in assignment_map.items()
        }
        self._store_assignment(group, assignments)

    def _update_partition_counts(self, counts: dict[str, int]) -> None:
        changed = {
            t
            for t in counts.keys() | self._partition_counts.keys()
            if counts.get(t, 0) != self._partition_counts.get(t, 0)
        }
        self._partition_counts = counts
        if not changed:
            return
        for group in list(self._groups.values()):
            subscribed = group.subscribed_topics
            if group.server_assigned and group.is_in(_STABLE, _COMPLETING) and subscribed and subscribed & changed:
                self._prepare_rebalance(group)

    # ================================================================ JoinGroup

    def _join_group(self, handle: Handle, req: JoinGroupRequest) -> None:
        def fail(error: ErrorCode, member_id: str = req.member_id) -> None:
            self._respond(handle, JoinGroupResponse(error, member_id=member_id))

        error = _membership_group_id_error(req.group_id) or self._partition_error(req.group_id)
        if error is not None:
            return fail(error)
        # Front doors may hand lists or memoryviews: equality checks below need one canonical form.
        req = replace(req, protocols=tuple((str(name), bytes(metadata)) for name, metadata in req.protocols))
        if not self.config.session_timeout_min_ms <= req.session_timeout_ms <= self.config.session_timeout_max_ms:
            return fail(ErrorCode.INVALID_SESSION_TIMEOUT)
        if any(
            len(s.encode()) > _MAX_STRING_BYTES
            for s in (
                req.group_instance_id or "",
                req.client_id,
                req.client_host,
                req.protocol_type,
                req.member_id,
                *(name for name, _ in req.protocols),
            )
        ) or len({name for name, _ in req.protocols}) != len(req.protocols):
            return fail(ErrorCode.INVALID_REQUEST)
        if req.server_assignment and not _server_assignable(req):
            return fail(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if req.rebalance_timeout_ms == -1:
            req = replace(req, rebalance_timeout_ms=req.session_timeout_ms)
        elif req.rebalance_timeout_ms <= 0 or req.rebalance_timeout_ms not in _INT32:
            return fail(ErrorCode.INVALID_REQUEST)
        is_new_member = req.member_id == ""
        group = self._groups.get(req.group_id)
        if group is None:
            if not is_new_member:
                return fail(ErrorCode.UNKNOWN_MEMBER_ID)
            group = ClassicGroup(req.group_id, self._now)
            self._groups[req.group_id] = group
        if not self._accept_joining_member(group, req.member_id):
            member = group.members.get(req.member_id)
            if member is not None:
                self._drop_member(group, member)
                self._maybe_complete_join_phase(group)
            group.pending_members.discard(req.member_id)
            fail(ErrorCode.GROUP_MAX_SIZE_REACHED, "")
        elif group.state is _DEAD:
            # Being deleted: the client rediscovers the coordinator and retries.
            fail(ErrorCode.COORDINATOR_NOT_AVAILABLE, "" if is_new_member else req.member_id)
        elif not group.supports_protocols(req.protocol_type, req.protocols):
            fail(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, "" if is_new_member else req.member_id)
        elif is_new_member:
            self._join_new_member(handle, req, group)
        else:
            self._join_existing_member(handle, req, group)
        self._drop_if_unused(group)

    def _accept_joining_member(self, group: ClassicGroup, member_id: str) -> bool:
        limit = self.config.group_max_size
        if group.is_in(_EMPTY, _DEAD):
            return True
        if group.state is _PREPARING:
            # Awaiting members count, not members: the max may have shrunk, and late joiners are the ones cut.
            member = group.members.get(member_id)
            return (member is not None and member.awaiting_join) or group.num_awaiting_join < limit
        return member_id in group.members or len(group.members) < limit

    def _join_new_member(self, handle: Handle, req: JoinGroupRequest, group: ClassicGroup) -> None:
        instance_id = req.group_instance_id
        new_member_id = self._make_member_id(instance_id if instance_id is not None else req.client_id)
        if instance_id is not None:
            existing = group.static_members.get(instance_id)
            if existing is not None:
                self._replace_static_member(handle, req, group, existing, new_member_id)
            else:
                self._add_member_and_rebalance(handle, req, group, new_member_id)
        elif req.require_known_member_id:
            # KIP-394: hand out the id first, so a client that times out and retries does not pile up
            # phantom members; the pending id expires after a session timeout.
            group.pending_members.add(new_member_id)
            self._schedule_heartbeat(group, new_member_id, req.session_timeout_ms)
            self._respond(handle, JoinGroupResponse(ErrorCode.MEMBER_ID_REQUIRED, member_id=new_member_id))
        else:
            self._add_member_and_rebalance(handle, req, group, new_member_id)

    def _join_existing_member(self, handle: Handle, req: JoinGroupRequest, group: ClassicGroup) -> None:
        member_id = req.member_id
        if member_id in group.pending_members:
            if req.group_instance_id is not None:  # pending ids are only ever handed to dynamic members
                return self._respond(handle, JoinGroupResponse(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))
            return self._add_member_and_rebalance(handle, req, group, member_id)
        error = self._validate_member(group, member_id, req.group_instance_id)
        if error is not None:
            return self._respond(handle, JoinGroupResponse(error, member_id=member_id))
        member = group.members[member_id]
        matches = member.protocols == req.protocols
        if group.state is _PREPARING:
            self._update_member_and_rebalance(handle, req, group, member)
        elif group.state is _COMPLETING:
            if matches:
                # It probably missed the JoinGroup answer: repeat it.
                self._respond(
                    handle,
                    self._join_response(
                        group,
                        member,
                        with_members=member_id == group.leader_id and not group.server_assigned,
                        skip_assignment=group.server_assigned,
                    ),
                )
            else:
                self._update_member_and_rebalance(handle, req, group, member)
        elif group.state is _STABLE:
            if member_id == group.leader_id or not matches:
                # A leader rejoining asks for a new assignment (e.g. topic metadata changed).
                self._update_member_and_rebalance(handle, req, group, member)
            else:
                self._respond(handle, self._join_response(group, member, skip_assignment=group.server_assigned))
        else:
            self._respond(handle, JoinGroupResponse(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))

    def _add_member_and_rebalance(
        self, handle: Handle, req: JoinGroupRequest, group: ClassicGroup, member_id: str
    ) -> None:
        member = Member(
            member_id,
            req.group_instance_id,
            req.client_id,
            req.client_host,
            req.rebalance_timeout_ms,
            req.session_timeout_ms,
            req.protocol_type,
            req.protocols,
            is_new=True,
            server_assignment=req.server_assignment,
            supports_skip_assignment=req.supports_skip_assignment,
        )
        if group.state is _PREPARING and group.previous_state is _EMPTY:
            group.new_member_added = True
        group.add(member)
        group.set_join_handles(member, [handle])
        # A parked JoinGroup cannot heartbeat; new members get a bounded wait instead (KIP-394).
        self._schedule_heartbeat(group, member_id, self.config.new_member_join_timeout_ms)
        self._maybe_prepare_rebalance_or_complete_join(group)

    def _update_member(self, handle: Handle, req: JoinGroupRequest, group: ClassicGroup, member: Member) -> None:
        member.protocols = req.protocols
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        member.session_timeout_ms = req.session_timeout_ms
        member.server_assignment = req.server_assignment
        member.supports_skip_assignment = req.supports_skip_assignment
        handles = [*member.join_handles, handle]
        for evicted in handles[:-MAX_PARKED_PER_MEMBER]:
            self._respond(evicted, JoinGroupResponse(ErrorCode.REBALANCE_IN_PROGRESS, member_id=member.member_id))
        group.set_join_handles(member, handles[-MAX_PARKED_PER_MEMBER:])

    def _update_member_and_rebalance(
        self, handle: Handle, req: JoinGroupRequest, group: ClassicGroup, member: Member
    ) -> None:
        self._update_member(handle, req, group, member)
        self._maybe_prepare_rebalance_or_complete_join(group)

    def _replace_static_member(
        self, handle: Handle, req: JoinGroupRequest, group: ClassicGroup, old_member_id: str, new_member_id: str
    ) -> None:
        """A static member came back with no member id (a restart): it takes over its seat under a new id,
        and the old incarnation is fenced."""
        instance_id = req.group_instance_id
        assert instance_id is not None
        old = group.members[old_member_id]
        previous_leader = group.leader_id
        self._complete_join(group, old, JoinGroupResponse(ErrorCode.FENCED_INSTANCE_ID, member_id=old_member_id))
        self._complete_sync(old, SyncGroupResponse(ErrorCode.FENCED_INSTANCE_ID))
        self._timer.cancel(("heartbeat", group.group_id, old_member_id))
        member = group.replace_static_member(instance_id, old_member_id, new_member_id)
        self._schedule_heartbeat(group, new_member_id, req.session_timeout_ms)
        old_protocols, old_rebalance, old_session = (
            member.protocols,
            member.rebalance_timeout_ms,
            member.session_timeout_ms,
        )
        self._update_member(handle, req, group, member)

        if group.state is _STABLE:
            if group.select_protocol() != group.protocol_name or not self._same_subscription(
                group, old_protocols, req.protocols
            ):
                self._maybe_prepare_rebalance_or_complete_join(group)
                return

            # Same protocol and topics: keep the assignment, no rebalance; persist the new member id.
            def done(error: ErrorCode | None) -> None:
                if self._groups.get(group.group_id) is not group or handle not in member.join_handles:
                    return  # unloaded, or a rebalance started and will answer it
                if group.state is not _STABLE or group.members.get(new_member_id) is not member:
                    return
                if error is not _SUCCESS:
                    # Not durable: undo, so the old incarnation keeps its seat.
                    member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms = (
                        old_protocols,
                        old_rebalance,
                        old_session,
                    )
                    self._complete_join(
                        group,
                        member,
                        JoinGroupResponse(
                            group_write_error(error),
                            group.generation_id,
                            group.protocol_type,
                            group.protocol_name,
                            previous_leader or "",
                        ),
                    )
                    self._timer.cancel(("heartbeat", group.group_id, new_member_id))
                    group.replace_static_member(instance_id, new_member_id, old_member_id)
                    self._schedule_heartbeat(group, old_member_id, old_session)
                    return
                is_leader = group.leader_id == new_member_id
                if member.supports_skip_assignment:
                    # KIP-814: a returning leader gets the members but must not reassign.
                    response = self._join_response(group, member, with_members=is_leader, skip_assignment=is_leader)
                else:
                    # Older clients would run an assignment if told they lead: name the old id as leader.
                    response = self._join_response(group, member, leader=previous_leader or "")
                self._complete_join(group, member, response)

            self._persist(group.group_id, [group_record(group.group_id, group.record_value())], done)
        elif group.state is _COMPLETING:
            # The leader may be assigning to the old id: rebalance so the new id gets an assignment.
            self._prepare_rebalance(group)
        else:
            assert group.state is _PREPARING, f"static member in a {group.state.value} group"
            self._maybe_complete_join_phase(group)

    def _same_subscription(
        self, group: ClassicGroup, old: tuple[tuple[str, bytes], ...], new: tuple[tuple[str, bytes], ...]
    ) -> bool:
        old_metadata, new_metadata = dict(old).get(group.protocol_name), dict(new).get(group.protocol_name)
        if new_metadata is None or old_metadata is None:
            return False
        if old_metadata == new_metadata:
            return True
        if group.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return False
        # Owned partitions, generation or user data differ after a restart; the topics are what matter.
        try:
            return set(decode_subscription(old_metadata)[1].topics) == set(decode_subscription(new_metadata)[1].topics)
        except ConsumerProtocolError:
            return False

    # ================================================================ SyncGroup, Heartbeat, LeaveGroup

    def _generation_member_error(
        self, group_id: str, member_id: str, instance_id: str | None, generation_id: int
    ) -> tuple[ErrorCode | None, ClassicGroup | None]:
        """The checks SyncGroup and Heartbeat share: coordinator, group, member, generation."""
        error = _membership_group_id_error(group_id) or self._partition_error(group_id)
        group = self._groups.get(group_id)
        if error is None:
            if group is None:
                error = ErrorCode.UNKNOWN_MEMBER_ID
            elif group.state is _DEAD:
                error = ErrorCode.COORDINATOR_NOT_AVAILABLE
            else:
                error = self._validate_member(group, member_id, instance_id)
                if error is None and generation_id != group.generation_id:
                    error = ErrorCode.ILLEGAL_GENERATION
                if error is None and group.state is _EMPTY:
                    error = ErrorCode.UNKNOWN_MEMBER_ID
        return error, group

    def _sync_group(self, handle: Handle, req: SyncGroupRequest) -> None:
        error, group = self._generation_member_error(
            req.group_id, req.member_id, req.group_instance_id, req.generation_id
        )
        if error is None:
            assert group is not None
            if (req.protocol_type is not None and req.protocol_type != group.protocol_type) or (
                req.protocol_name is not None and req.protocol_name != group.protocol_name
            ):
                error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            elif group.state is _PREPARING:
                error = ErrorCode.REBALANCE_IN_PROGRESS
        if error is not None:
            return self._respond(handle, SyncGroupResponse(error))
        assert group is not None
        member = group.members[req.member_id]
        group.pending_sync_members.discard(req.member_id)
        if group.state is _COMPLETING:
            member.sync_handles.append(handle)
            while len(member.sync_handles) > MAX_PARKED_PER_MEMBER:
                self._respond(member.sync_handles.pop(0), SyncGroupResponse(ErrorCode.REBALANCE_IN_PROGRESS))
            is_leader = req.member_id == group.leader_id
            if is_leader and not group.server_assigned and group.metadata_write_id is None:
                self._store_assignment(group, dict(req.assignments))
        else:
            assert group.state is _STABLE
            self._respond(
                handle, SyncGroupResponse(ErrorCode.NONE, group.protocol_type, group.protocol_name, member.assignment)
            )
            self._maybe_follow_up_rebalance(group)

    def _heartbeat(self, handle: Handle, req: HeartbeatRequest) -> None:
        error, group = self._generation_member_error(
            req.group_id, req.member_id, req.group_instance_id, req.generation_id
        )
        if error is None:
            assert group is not None
            member = group.members[req.member_id]
            self._schedule_heartbeat(group, member.member_id, member.session_timeout_ms)
            if group.state is _PREPARING:
                error = ErrorCode.REBALANCE_IN_PROGRESS
        self._respond(handle, HeartbeatResponse(error or ErrorCode.NONE))

    def _leave_group(self, handle: Handle, req: LeaveGroupRequest) -> None:
        error = _membership_group_id_error(req.group_id) or self._partition_error(req.group_id)
        group = self._groups.get(req.group_id)
        if error is None and group is None:
            error = ErrorCode.UNKNOWN_MEMBER_ID
        elif error is None and group is not None and group.state is _DEAD:
            error = ErrorCode.COORDINATOR_NOT_AVAILABLE
        if error is not None:
            return self._respond(handle, LeaveGroupResponse(error))
        assert group is not None
        results: list[LeaveMemberResponse] = []
        leaving: list[str] = []
        pending_left = False
        for identity in req.members:
            member_id, instance_id = identity.member_id, identity.group_instance_id
            member_error: ErrorCode | None = None
            if member_id == "" and instance_id is not None:
                # Admin removal of a static member by instance id.
                found = group.static_members.get(instance_id)
                if found is None:
                    member_error = ErrorCode.UNKNOWN_MEMBER_ID
                else:
                    member_id = found
            elif member_id in group.pending_members:
                group.pending_members.discard(member_id)
                self._timer.cancel(("heartbeat", group.group_id, member_id))
                pending_left = True
                results.append(LeaveMemberResponse(member_id, instance_id, ErrorCode.NONE))
                continue
            else:
                member_error = self._validate_member(group, member_id, instance_id)
            if member_error is None and member_id not in leaving:
                leaving.append(member_id)
            results.append(LeaveMemberResponse(member_id, instance_id, member_error or ErrorCode.NONE))
        for member_id in leaving:
            self._drop_member(group, group.members[member_id])
        if leaving and group.is_in(_STABLE, _COMPLETING):
            self._maybe_prepare_rebalance_or_complete_join(group)
        elif (leaving or pending_left) and group.state is _PREPARING and group.has_all_members_joined():
            self._complete_group_join(group)
        self._respond(handle, LeaveGroupResponse(ErrorCode.NONE, tuple(results)))

    # ================================================================ offsets

    def _offset_commit(self, handle: Handle, req: OffsetCommitRequest) -> None:
        def fail_all(error: ErrorCode) -> None:
            self._respond(
                handle, OffsetCommitResponse(tuple(PartitionError(p.topic, p.partition, error) for p in req.partitions))
            )

        error = _group_id_error(req.group_id) or self._partition_error(req.group_id)
        if error is not None:
            return fail_all(error)
        if len(self._pending_writes) >= self.config.max_pending_writes:
            return fail_all(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        group = self._groups.get(req.group_id)
        if group is None:
            if req.generation_id >= 0:
                return fail_all(ErrorCode.ILLEGAL_GENERATION)  # a member of a group that no longer exists
            group = ClassicGroup(req.group_id, self._now)  # offsets-only ("simple") group
            self._groups[req.group_id] = group
        error = self._validate_offset_commit(group, req)
        if error is not None:
            self._drop_if_unused(group)
            return fail_all(error)

        results: dict[TopicPartition, ErrorCode] = {}
        values: dict[TopicPartition, OffsetValue] = {}
        expire_ms = -1 if req.retention_time_ms == -1 else self._now + req.retention_time_ms
        for p in req.partitions:
            tp = (p.topic, p.partition)
            metadata = p.metadata or ""
            if len(metadata.encode()) > self.config.offset_metadata_max_bytes:
                results[tp] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            elif (
                p.partition not in _INT32 or p.partition < 0 or not p.topic or len(p.topic.encode()) > _MAX_STRING_BYTES
            ):
                results[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif p.offset not in _INT64 or p.leader_epoch not in _INT32 or p.commit_timestamp_ms not in _INT64:
                results[tp] = ErrorCode.INVALID_REQUEST
            else:
                results[tp] = ErrorCode.NONE
                commit_ms = self._now if p.commit_timestamp_ms == -1 else p.commit_timestamp_ms
                values[tp] = OffsetValue(p.offset, p.leader_epoch, metadata, commit_ms, expire_ms)
        if not values:
            self._drop_if_unused(group)
            return self._respond(handle, _commit_response(req, results))
        for tp in values:
            group.pending_offset_commits[tp] += 1

        def done(error: ErrorCode | None) -> None:
            for tp in values:
                group.pending_offset_commits[tp] -= 1
                if group.pending_offset_commits[tp] <= 0:
                    del group.pending_offset_commits[tp]
            if error is _SUCCESS:
                if self._groups.get(group.group_id) is group:
                    for tp, v in values.items():
                        group.offsets[tp] = OffsetAndMetadata(
                            v.offset, v.leader_epoch, v.metadata, v.commit_timestamp_ms, v.expire_timestamp_ms
                        )
            else:
                mapped = offset_write_error(error)
                for tp in values:
                    results[tp] = mapped
                self._drop_if_unused(group)
            self._respond(handle, _commit_response(req, results))

        self._persist(req.group_id, [offset_record(req.group_id, t, p, v) for (t, p), v in values.items()], done)

    def _validate_offset_commit(self, group: ClassicGroup, req: OffsetCommitRequest) -> ErrorCode | None:
        if group.state is _DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if req.generation_id < 0 and group.state is _EMPTY:
            return None  # no group management: allowed while nobody is a member
        if req.generation_id >= 0 or req.member_id or req.group_instance_id is not None:
            error = self._validate_member(group, req.member_id, req.group_instance_id)
            if error is not None:
                return error
            if req.generation_id != group.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
        elif group.state is not _EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID  # a v0-style commit into a managed group
        if group.state is _COMPLETING:
            # Valid member and generation, but the assignment is not settled yet.
            return ErrorCode.REBALANCE_IN_PROGRESS
        return None

    def _offset_fetch(self, handle: Handle, req: OffsetFetchRequest) -> None:
        error = _group_id_error(req.group_id) or self._partition_error(req.group_id)
        if error is not None:
            return self._respond(handle, OffsetFetchResponse(error))
        group = self._groups.get(req.group_id)
        offsets = {} if group is None or group.state is _DEAD else group.offsets
        pending = group.pending_offset_commits if group is not None and req.require_stable else {}
        wanted = sorted(offsets.keys() | pending.keys()) if req.partitions is None else list(req.partitions)
        partitions = []
        for tp in wanted:
            committed = offsets.get(tp)
            if tp in pending:
                partitions.append(OffsetFetchPartition(tp[0], tp[1], -1, -1, "", ErrorCode.UNSTABLE_OFFSET_COMMIT))
            elif committed is None:
                partitions.append(OffsetFetchPartition(tp[0], tp[1], -1, -1, "", ErrorCode.NONE))
            else:
                partitions.append(
                    OffsetFetchPartition(
                        tp[0], tp[1], committed.offset, committed.leader_epoch, committed.metadata, ErrorCode.NONE
                    )
                )
        self._respond(handle, OffsetFetchResponse(ErrorCode.NONE, tuple(partitions)))

    def _offset_delete(self, handle: Handle, req: OffsetDeleteRequest) -> None:
        error = _group_id_error(req.group_id) or self._partition_error(req.group_id)
        group = self._groups.get(req.group_id)
        if error is None and (group is None or group.state is _DEAD):
            error = ErrorCode.GROUP_ID_NOT_FOUND
        if (
            error is None
            and group is not None
            and group.state is not _EMPTY
            and group.protocol_type != CONSUMER_PROTOCOL_TYPE
        ):
            error = ErrorCode.NON_EMPTY_GROUP
        if error is not None:
            return self._respond(handle, OffsetDeleteResponse(error))
        assert group is not None
        results: dict[TopicPartition, ErrorCode] = {}
        to_delete: list[TopicPartition] = []
        for tp in req.partitions:
            if group.state is not _EMPTY and group.is_subscribed_to_topic(tp[0]):
                results[tp] = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
            else:
                results[tp] = ErrorCode.NONE
                if (tp in group.offsets or tp in group.pending_offset_commits) and tp not in to_delete:
                    to_delete.append(tp)

        def respond(error: ErrorCode | None = None) -> None:
            if error is not _SUCCESS:
                return self._respond(handle, OffsetDeleteResponse(offset_write_error(error)))
            if self._groups.get(group.group_id) is group:
                for tp in to_delete:
                    group.offsets.pop(tp, None)
            self._respond(
                handle,
                OffsetDeleteResponse(ErrorCode.NONE, tuple(PartitionError(t, p, e) for (t, p), e in results.items())),
            )

        if not to_delete:
            return respond()
        self._persist(req.group_id, [offset_record(req.group_id, t, p, None) for t, p in to_delete], respond)

    def _schedule_offset_expiry(self) -> None:
        self._timer.schedule(
            ("offsets-expiry", None, ""),
            self._now + self.config.offsets_retention_check_interval_ms,
            self._expire_offsets,
        )

    def _expire_offsets(self) -> None:
        for group in list(self._groups.values()):
            if group.state is _DEAD:
                continue
            expired = self._expired_offsets(group)
            for tp in expired:
                del group.offsets[tp]
            delete_group = (
                group.state is _EMPTY
                and not group.offsets
                and not group.pending_offset_commits
                and not group.pending_members
            )
            records = [offset_record(group.group_id, t, p, None) for t, p in expired]
            if delete_group:
                records.append(group_record(group.group_id, None))
                group.transition_to(_DEAD, self._now)
                self._timer.cancel_group(group.group_id)
                self._persist(group.group_id, records, lambda error, g=group: self._remove_group(g))
            elif records:
                self._persist(group.group_id, records, lambda error: None)
        self._schedule_offset_expiry()

    def _expired_offsets(self, group: ClassicGroup) -> list[TopicPartition]:
        """Kafka's OffsetExpirationCondition: an empty group's offsets age from when it became empty; a
        stable consumer group's offsets of topics it no longer subscribes to, and an offsets-only group's,
        age from their commit."""
        if group.protocol_type is None:
            candidates, base = list(group.offsets), None
        elif group.state is _EMPTY:
            candidates, base = list(group.offsets), group.state_timestamp_ms
        elif (
            group.state is _STABLE
            and group.protocol_type == CONSUMER_PROTOCOL_TYPE
            and group.subscribed_topics is not None
        ):
            candidates, base = [tp for tp in group.offsets if tp[0] not in group.subscribed_topics], None
        else:
            return []
        now, retention = self._now, self.config.offsets_retention_ms
        expired = []
        for tp in candidates:
            if tp in group.pending_offset_commits:
                continue
            o = group.offsets[tp]
            if o.expire_timestamp_ms != -1:
                is_expired = now >= o.expire_timestamp_ms
            else:
                is_expired = now - (o.commit_timestamp_ms if base is None else base) >= retention
            if is_expired:
                expired.append(tp)
        return expired

    # ================================================================ admin

    def _list_groups(self, handle: Handle, req: ListGroupsRequest) -> None:
        wanted = {s.lower() for s in req.states_filter}
        groups = tuple(
            ListedGroup(g.group_id, g.protocol_type or "", g.state.value)
            for g in sorted(self._groups.values(), key=lambda g: g.group_id)
            if g.state is not _DEAD and (not wanted or g.state.value.lower() in wanted)
        )
        error = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS if self._loading else ErrorCode.NONE
        self._respond(handle, ListGroupsResponse(error, groups))

    def _describe_groups(self, handle: Handle, req: DescribeGroupsRequest) -> None:
        described = []
        for group_id in req.group_ids:
            error = _group_id_error(group_id) or self._partition_error(group_id)
            group = self._groups.get(group_id)
            if error is not None:
                described.append(DescribedGroup(error, group_id, "", "", ""))
            elif group is None or group.state is _DEAD:
                described.append(DescribedGroup(ErrorCode.NONE, group_id, _DEAD.value, "", ""))
            else:
                stable = group.state is _STABLE
                members = tuple(
                    DescribedMember(
                        m.member_id,
                        m.group_instance_id,
                        m.client_id,
                        m.client_host,
                        m.metadata(group.protocol_name) if stable else b"",
                        m.assignment if stable else b"",
                    )
                    for m in group.members.values()
                )
                described.append(
                    DescribedGroup(
                        ErrorCode.NONE,
                        group_id,
                        group.state.value,
                        group.protocol_type or "",
                        (group.protocol_name or "") if stable else "",
                        members,
                    )
                )
        self._respond(handle, DescribeGroupsResponse(tuple(described)))

    def _delete_groups(self, handle: Handle, req: DeleteGroupsRequest) -> None:
        results: dict[str, ErrorCode] = {}
        waiting: set[str] = set()

        def finish() -> None:
            self._respond(handle, DeleteGroupsResponse(tuple(DeleteGroupResult(g, e) for g, e in results.items())))

        for group_id in dict.fromkeys(req.group_ids):
            # Kafka refuses an empty group id here (INVALID_GROUP_ID), unlike the offset APIs.
            error = _membership_group_id_error(group_id) or self._partition_error(group_id)
            group = self._groups.get(group_id)
            if error is None and (group is None or group.state is _DEAD):
                error = ErrorCode.GROUP_ID_NOT_FOUND
            if error is None and group is not None and group.state is not _EMPTY:
                error = ErrorCode.NON_EMPTY_GROUP
            if error is not None:
                results[group_id] = error
                continue
            assert group is not None
            results[group_id] = ErrorCode.NONE
            tps = sorted(group.offsets.keys() | group.pending_offset_commits.keys())
            records = [offset_record(group_id, t, p, None) for t, p in tps] + [group_record(group_id, None)]
            # Dead until the tombstones are durable: meanwhile the group answers COORDINATOR_NOT_AVAILABLE.
            group.transition_to(_DEAD, self._now)
            self._timer.cancel_group(group_id)
            waiting.add(group_id)

            def done(error: ErrorCode | None, group: ClassicGroup = group) -> None:
                self._remove_group(group)
                if error is not _SUCCESS:
                    results[group.group_id] = group_write_error(error)
                waiting.discard(group.group_id)
                if not waiting:
                    finish()

            self._persist(group_id, records, done)
        if not waiting:
            finish()

    # ================================================================ loading

    def _replay(self, partition: int, state: _LoadState, record: Record) -> None:
        key = decode_key(record.key)
        if key is None or partition_for_group(key.group_id, self.config.num_partitions) != partition:
            state.skipped_records += 1  # newer record types, or a group that does not live here
            return
        if isinstance(key, OffsetKey):
            offsets = state.offsets.setdefault(key.group_id, {})
            tp = (key.topic, key.partition)
            if record.value is None:
                offsets.pop(tp, None)
            else:
                offsets[tp] = decode_offset_value(record.value)
        else:
            assert isinstance(key, GroupKey)
            state.groups[key.group_id] = None if record.value is None else decode_group_value(record.value)

    def _activate(self, partition: int) -> None:
        state = self._loading.pop(partition)
        self._active.add(partition)
        for group_id in sorted(state.groups.keys() | state.offsets.keys()):
            value = state.groups.get(group_id)
            offsets = state.offsets.get(group_id, {})
            if value is None and not offsets:
                continue
            group = (
                ClassicGroup.from_record(group_id, value, self._now)
                if value is not None
                else ClassicGroup(group_id, self._now)
            )
            for tp, v in offsets.items():
                group.offsets[tp] = OffsetAndMetadata(
                    v.offset, v.leader_epoch, v.metadata, v.commit_timestamp_ms, v.expire_timestamp_ms
                )
            self._groups[group_id] = group
            for member in group.members.values():
                self._schedule_heartbeat(group, member.member_id, member.session_timeout_ms)

    def _unload(self, partition: int) -> None:
        self._loading.pop(partition, None)
        self._active.discard(partition)
        for group in [g for g in self._groups.values() if self.partition_for(g.group_id) == partition]:
            for member in group.members.values():
                if member.join_handles:
                    self._complete_join(
                        group, member, JoinGroupResponse(ErrorCode.NOT_COORDINATOR, member_id=member.member_id)
                    )
                self._complete_sync(member, SyncGroupResponse(ErrorCode.NOT_COORDINATOR))
            self._remove_group(group)
        order = self._write_order.pop(partition, deque())
        for write_id in order:
            pending = self._pending_writes.pop(write_id)
            pending.on_done(ErrorCode.NOT_COORDINATOR)

    _HANDLERS: dict[type, Callable[[GroupCoordinator, Handle, Request], None]] = {
        JoinGroupRequest: _join_group,
        SyncGroupRequest: _sync_group,
        HeartbeatRequest: _heartbeat,
        LeaveGroupRequest: _leave_group,
        OffsetCommitRequest: _offset_commit,
        OffsetFetchRequest: _offset_fetch,
        OffsetDeleteRequest: _offset_delete,
        ListGroupsRequest: _list_groups,
        DescribeGroupsRequest: _describe_groups,
        DeleteGroupsRequest: _delete_groups,
    }  # type: ignore[dict-item]


# ==================================================================== module helpers


def _as_error_code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.UNKNOWN_SERVER_ERROR


def _group_id_error(group_id: str) -> ErrorCode | None:
    return ErrorCode.INVALID_GROUP_ID if len(group_id.encode()) > _MAX_STRING_BYTES else None


def _membership_group_id_error(group_id: str) -> ErrorCode | None:
    # Join/Sync/Heartbeat/Leave need a real group id; offset APIs accept "" as Kafka does.
    return ErrorCode.INVALID_GROUP_ID if not group_id else _group_id_error(group_id)


def _server_assignable(req: JoinGroupRequest) -> bool:
    if req.protocol_type != CONSUMER_PROTOCOL_TYPE:
        return False
    for name, metadata in req.protocols:
        if name not in ASSIGNORS:
            return False
        try:
            decode_subscription(metadata)
        except ConsumerProtocolError:
            return False
    return True


def _commit_response(req: OffsetCommitRequest, results: dict[TopicPartition, ErrorCode]) -> OffsetCommitResponse:
    return OffsetCommitResponse(
        tuple(PartitionError(p.topic, p.partition, results[(p.topic, p.partition)]) for p in req.partitions)
    )
