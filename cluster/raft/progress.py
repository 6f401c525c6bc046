"""The leader's view of each follower: how far it matches and how to send it more.

PROBE: we do not know where the follower's log matches ours; send one AppendEntries and wait.
REPLICATE: matched; stream entries optimistically, bounded by the in-flight window.
SNAPSHOT: the entries it needs are compacted; an InstallSnapshot is on its way.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


PROBE = ProgressState.PROBE
REPLICATE = ProgressState.REPLICATE
SNAPSHOT = ProgressState.SNAPSHOT


@dataclass(slots=True)
class Progress:
    match: int  # highest offset known to be durable on the follower and equal to ours
    next: int  # first offset to send next (always an entry start in the leader's log)
    max_inflight_msgs: int
    max_inflight_bytes: int
    is_learner: bool = False
    state: ProgressState = PROBE
    probe_sent: bool = False  # PROBE: one AppendEntries is out, wait for its answer
    pending_snapshot: int = -1  # SNAPSHOT: index of the snapshot being sent
    snapshot_stale: bool = False  # SNAPSHOT: survived one quorum check without an answer
    recent_active: bool = False  # heard from since the last CheckQuorum
    # In-flight AppendEntries in REPLICATE state: (last offset carried, bytes), oldest first.
    inflights: deque[tuple[int, int]] = field(default_factory=deque)
    inflight_bytes: int = 0

    def __post_init__(self) -> None:
        assert self.match < self.next

    # -- state transitions --------------------------------------------------------------------

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = -1
        self.snapshot_stale = False
        self.inflights.clear()
        self.inflight_bytes = 0

    def become_probe(self) -> None:
        if self.state is SNAPSHOT:
            # Resume right after the snapshot if it arrived, else after what we know matches.
            pending = self.pending_snapshot
            self._reset(PROBE)
            self.next = max(self.match + 1, pending + 1) if pending >= 0 else self.match + 1
        else:
            self._reset(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(SNAPSHOT)
        self.pending_snapshot = snapshot_index

    # -- updates --------------------------------------------------------------------------------

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged ``index``. Returns True if match advanced."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected prev_log_index ``rejected``; ``match_hint`` is where the leader
        now guesses the logs match (an entry boundary). Returns False for a stale reject."""
        if self.state is REPLICATE:
            if rejected <= self.match:
                return False  # answer to a message sent before we knew the match
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # not the answer to our current probe
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int, nbytes: int) -> None:
        """An AppendEntries carrying entries up to ``last_index`` was sent."""
        if self.state is REPLICATE:
            self.next = last_index + 1
            self.inflights.append((last_index, nbytes))
            self.inflight_bytes += nbytes
            assert len(self.inflights) <= self.max_inflight_msgs
        elif self.state is PROBE:
            self.probe_sent = True
        else:  # pragma: no cover
            raise AssertionError("sending entries in SNAPSHOT state")

    def free_inflights_to(self, index: int) -> None:
        q = self.inflights
        while q and q[0][0] <= index:
            self.inflight_bytes -= q.popleft()[1]

    def free_first_inflight(self) -> None:
        if self.inflights:
            self.inflight_bytes -= self.inflights.popleft()[1]

    def inflight_full(self) -> bool:
        return len(self.inflights) >= self.max_inflight_msgs or (
            self.max_inflight_bytes > 0 and self.inflight_bytes >= self.max_inflight_bytes
        )

    def is_paused(self) -> bool:
        state = self.state
        if state is REPLICATE:
            return self.inflight_full()
        if state is PROBE:
            return self.probe_sent
        return True
