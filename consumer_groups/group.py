"""One classic consumer group: members, generation, selected protocol, leader, committed offsets, and the
checked state machine. Pure data and rules; the protocol flow (timers, writes, responses) is in
`coordinator.py`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from consumer_groups.consumer_protocol import ConsumerProtocolError, decode_subscription
from consumer_groups.messages import Handle, TopicPartition
from consumer_groups.records import GroupValue, MemberValue
from consumer_groups.state import GroupState, check_transition

CONSUMER_PROTOCOL_TYPE = "consumer"


@dataclass(slots=True)
class OffsetAndMetadata:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int = -1


@dataclass(slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]  # preference order
    assignment: bytes = b""
    # Parked requests; duplicates (a client retrying) share the one answer.
    join_handles: list[Handle] = field(default_factory=list)
    sync_handles: list[Handle] = field(default_factory=list)
    is_new: bool = False  # joined during the current rebalance and never completed one
    server_assignment: bool = False
    supports_skip_assignment: bool = False

    @property
    def awaiting_join(self) -> bool:
        return bool(self.join_handles)

    @property
    def awaiting_sync(self) -> bool:
        return bool(self.sync_handles)

    def metadata(self, protocol_name: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol_name:
                return metadata
        raise KeyError(f"member {self.member_id} does not support protocol {protocol_name!r}")

    def vote(self, candidates: set[str]) -> str:
        """The member's most preferred protocol among those every member supports."""
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise AssertionError(f"member {self.member_id} supports none of {sorted(candidates)}")

    def has_satisfied_heartbeat(self) -> bool:
        # A parked JoinGroup/SyncGroup keeps a member alive (its rebalance timeout rules instead), except a
        # member new to this rebalance: it is dropped after the new-member join timeout (KIP-394).
        return not self.is_new and (self.awaiting_join or self.awaiting_sync)


@dataclass(frozen=True, slots=True)
class GroupView:
    """What a group's durable record holds, plus its state: compared across a coordinator failover."""

    group_id: str
    state: GroupState
    generation_id: int
    protocol_type: str | None
    protocol_name: str | None
    leader_id: str | None
    members: tuple[MemberValue, ...]  # subscription = metadata for the selected protocol


class ClassicGroup:
    def __init__(self, group_id: str, now_ms: int, state: GroupState = GroupState.EMPTY) -> None:
        self.group_id = group_id
        self.state = state
        self.previous_state = state
        self.state_timestamp_ms = now_ms
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}  # insertion order = join order (leader succession)
        self.static_members: dict[str, str] = {}  # group instance id -> member id
        self.pending_members: set[str] = set()  # got MEMBER_ID_REQUIRED, not yet rejoined
        self.pending_sync_members: set[str] = set()
        self.new_member_added = False  # during the initial (delayed) rebalance
        self.subscribed_topics: frozenset[str] | None = None  # None = unknown
        self.server_assigned = False  # this generation's assignment is computed by the coordinator
        self.follow_up_rebalance = False  # cooperative server-side assignment left partitions to hand over
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self.pending_offset_commits: Counter[TopicPartition] = Counter()
        self.metadata_write_id: int | None = None  # in-flight SyncGroup assignment write
        self.num_awaiting_join = 0

    # --- state machine ---------------------------------------------------------------------------

    def transition_to(self, new_state: GroupState, now_ms: int) -> None:
        check_transition(self.state, new_state)
        self.previous_state = self.state
        self.state = new_state
        self.state_timestamp_ms = now_ms

    def is_in(self, *states: GroupState) -> bool:
        return self.state in states

    def can_rebalance(self) -> bool:
        return self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY)

    # --- membership ------------------------------------------------------------------------------

    def add(self, member: Member) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        assert member.protocol_type == self.protocol_type, "protocol type checked before add"
        assert member.member_id not in self.members
        self.members[member.member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader_id is None:
            self.leader_id = member.member_id
        if member.awaiting_join:
            self.num_awaiting_join += 1
        self.pending_members.discard(member.member_id)

    def remove(self, member_id: str) -> Member | None:
        member = self.members.pop(member_id, None)
        if member is not None:
            if member.awaiting_join:
                self.num_awaiting_join -= 1
            if member.group_instance_id is not None and self.static_members.get(member.group_instance_id) == member_id:
                del self.static_members[member.group_instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        self.pending_members.discard(member_id)
        self.pending_sync_members.discard(member_id)
        return member

    def set_join_handles(self, member: Member, handles: list[Handle]) -> None:
        """Park or clear a member's JoinGroup, keeping the awaiting-join count right."""
        self.num_awaiting_join += int(bool(handles)) - int(member.awaiting_join)
        member.join_handles = handles

    def replace_static_member(self, instance_id: str, old_member_id: str, new_member_id: str) -> Member:
        old = self.members.pop(old_member_id)
        assert not old.awaiting_join, "the old member's parked requests are fenced first"
        new = Member(
            new_member_id,
            instance_id,
            old.client_id,
            old.client_host,
            old.rebalance_timeout_ms,
            old.session_timeout_ms,
            old.protocol_type,
            old.protocols,
            old.assignment,
            server_assignment=old.server_assignment,
        )
        self.members[new_member_id] = new
        if self.leader_id == old_member_id:
            self.leader_id = new_member_id
        if old_member_id in self.pending_sync_members:
            self.pending_sync_members.discard(old_member_id)
            self.pending_sync_members.add(new_member_id)
        self.static_members[instance_id] = new_member_id
        return new

    def has_all_members_joined(self) -> bool:
        return self.num_awaiting_join == len(self.members) and not self.pending_members

    def not_yet_rejoined_members(self) -> list[Member]:
        return [m for m in self.members.values() if not m.awaiting_join]

    def maybe_elect_new_joined_leader(self) -> bool:
        """If the leader did not rejoin, hand leadership to the first member that did. False when none did."""
        if self.leader_id is None:
            return True
        if self.members[self.leader_id].awaiting_join:
            return True
        for member in self.members.values():
            if member.awaiting_join:
                self.leader_id = member.member_id
                return True
        return False

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    # --- protocols -------------------------------------------------------------------------------

    def candidate_protocols(self) -> set[str]:
        counts = Counter(name for m in self.members.values() for name in {n for n, _ in m.protocols})
        return {name for name, n in counts.items() if n == len(self.members)}

    def supports_protocols(self, protocol_type: str, protocols: tuple[tuple[str, bytes], ...]) -> bool:
        if not protocol_type or not protocols:
            return False
        if not self.members:
            return True
        if protocol_type != self.protocol_type:
            return False
        candidates = self.candidate_protocols()
        return any(name in candidates for name, _ in protocols)

    def select_protocol(self) -> str:
        """The protocol all members support with the most first-choice votes; a tie goes to the earliest
        member's preference order (deterministic, unlike Kafka's hash-map order)."""
        candidates = self.candidate_protocols()
        if not candidates:
            raise AssertionError(f"group {self.group_id}: members share no protocol")
        votes = Counter(m.vote(candidates) for m in self.members.values())
        best = max(votes.values())
        tied = {name for name, n in votes.items() if n == best}
        for member in self.members.values():
            for name, _ in member.protocols:
                if name in tied:
                    return name
        raise AssertionError("unreachable: a tied protocol is some member's vote")

    def init_next_generation(self, now_ms: int) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self._compute_subscribed_topics()
            self.transition_to(GroupState.COMPLETING_REBALANCE, now_ms)
        else:
            self.protocol_name = None
            self.subscribed_topics = None
            self.transition_to(GroupState.EMPTY, now_ms)
        self.pending_sync_members.clear()

    def _compute_subscribed_topics(self) -> frozenset[str] | None:
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            try:
                topics.update(decode_subscription(member.metadata(self.protocol_name))[1].topics)
            except ConsumerProtocolError:
                return None  # a client's private format: assume it may be subscribed to anything
        return frozenset(topics)

    def is_subscribed_to_topic(self, topic: str) -> bool:
        return self.subscribed_topics is None or topic in self.subscribed_topics

    # --- durable form ----------------------------------------------------------------------------

    def record_value(self, assignments: dict[str, bytes] | None = None) -> GroupValue:
        assignments = assignments if assignments is not None else {}
        return GroupValue(
            protocol_type=self.protocol_type or "",
            generation_id=self.generation_id,
            protocol_name=self.protocol_name,
            leader_id=self.leader_id,
            state_timestamp_ms=self.state_timestamp_ms,
            members=tuple(
                MemberValue(
                    m.member_id,
                    m.group_instance_id,
                    m.client_id,
                    m.client_host,
                    m.rebalance_timeout_ms,
                    # A member rejoining mid-rebalance may have dropped the old protocol: nothing to show.
                    m.session_timeout_ms,
                    dict(m.protocols).get(self.protocol_name or "", b""),
                    assignments.get(m.member_id, m.assignment),
                )
                for m in self.members.values()
            ),
        )

    @classmethod
    def from_record(cls, group_id: str, value: GroupValue, now_ms: int) -> ClassicGroup:
        state = GroupState.STABLE if value.members else GroupState.EMPTY
        group = cls(group_id, value.state_timestamp_ms if value.state_timestamp_ms >= 0 else now_ms, state)
        group.generation_id = value.generation_id
        group.protocol_type = value.protocol_type or None
        group.protocol_name = value.protocol_name
        for mv in value.members:
            group.add(
                Member(
                    # Timeouts clamped: a record's zero or negative timeout must not spin the timers.
                    mv.member_id,
                    mv.group_instance_id,
                    mv.client_id,
                    mv.client_host,
                    max(1, mv.rebalance_timeout_ms),
                    max(1, mv.session_timeout_ms),
                    value.protocol_type,
                    ((value.protocol_name or "", mv.subscription),),
                    mv.assignment,
                )
            )
        group.leader_id = value.leader_id if value.leader_id in group.members else next(iter(group.members), None)
        group.subscribed_topics = group._compute_subscribed_topics() if group.members else None
        return group

    def view(self) -> GroupView:
        return GroupView(
            self.group_id,
            self.state,
            self.generation_id,
            self.protocol_type,
            self.protocol_name,
            self.leader_id,
            self.record_value().members,
        )
