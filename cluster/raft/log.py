"""The core's view of the log: durable storage plus the unstable tail not yet handed to the shell.

Entries become stable when the shell acknowledges the Ready that carried them (advance). The
unstable tail may replace a suffix of storage (a follower truncating a conflicting suffix); then
``_offset`` (the first unstable offset) is below storage's last index and storage entries at or
after ``_offset`` are ignored.
"""

from __future__ import annotations

from bisect import bisect_left
from operator import attrgetter

from .storage import CompactedError, Storage
from .types import Entry, Snapshot

_LAST_INDEX = attrgetter("last_index")


class RaftLog:
    __slots__ = ("storage", "_unstable", "_offset", "_snapshot", "committed", "applied")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._unstable: list[Entry] = []
        self._offset = storage.last_index() + 1
        self._snapshot: Snapshot | None = None  # received, not yet persisted
        self.committed = storage.snapshot().index
        self.applied = self.committed

    # -- positions ----------------------------------------------------------------------------

    def first_index(self) -> int:
        if self._snapshot is not None:
            return self._snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._unstable[-1].last_index
        if self._snapshot is not None:
            return self._snapshot.index
        return self.storage.last_index()

    def last_term(self) -> int:
        if self._unstable:
            return self._unstable[-1].term
        t = self.term(self.last_index())
        assert t is not None
        return t

    def stable_last_index(self) -> int:
        """Last index already durable (what a leader may count for itself in the quorum)."""
        if self._snapshot is not None:
            return -1  # everything is being replaced; count nothing until it is persisted
        return min(self.storage.last_index(), self._offset - 1)

    def term(self, index: int) -> int | None:
        """Term of the entry containing ``index``; None if compacted or beyond the end."""
        u = self._unstable
        if u and index >= self._offset:
            last = u[-1]
            if index >= last.index:
                return last.term if index <= last.last_index else None
            return u[bisect_left(u, index, key=_LAST_INDEX)].term
        snap = self._snapshot
        if snap is not None:
            return snap.term if index == snap.index else None
        return self.storage.term(index)

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry_span(self, index: int) -> tuple[int, int, int] | None:
        u = self._unstable
        if u and index >= self._offset:
            if index > u[-1].last_index:
                return None
            e = u[bisect_left(u, index, key=_LAST_INDEX)]
            return (e.index, e.last_index, e.term)
        if self._snapshot is not None:
            return None
        return self.storage.entry_span(index)

    def is_boundary(self, index: int) -> bool:
        """True if an entry ends exactly at ``index`` (or it is the snapshot point)."""
        if index == self.first_index() - 1:
            return True
        span = self.entry_span(index)
        return span is not None and span[1] == index

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: the candidate's log is at least as up-to-date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # -- reading entries ------------------------------------------------------------------------

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries in [lo, hi) (lo an entry start), capped by bytes but at least one entry.

        Raises CompactedError if lo is below the first index."""
        if lo < self.first_index():
            raise CompactedError(lo)
        out: list[Entry] = []
        if lo < self._offset:
            out = self.storage.entries(lo, min(hi, self._offset), max_bytes)
            if not out:
                return out
            if out[-1].last_index + 1 < min(hi, self._offset):
                return out  # byte cap reached inside storage
            size = sum(e.size for e in out)
        else:
            size = 0
        u = self._unstable
        if u and hi > self._offset and (not out or out[-1].last_index + 1 >= self._offset):
            start = max(lo, self._offset)
            pos = bisect_left(u, start, key=_LAST_INDEX)
            assert pos == len(u) or u[pos].index == start, f"{start} is not an entry start"
            for i in range(pos, len(u)):
                e = u[i]
                if e.index >= hi:
                    break
                size += e.size
                if out and size > max_bytes:
                    break
                out.append(e)
        return out

    def has_next_committed(self) -> bool:
        return self._snapshot is None and self.committed > self.applied

    def next_committed(self, max_bytes: int) -> list[Entry]:
        if self._snapshot is not None or self.committed <= self.applied:
            return []
        return self.entries(self.applied + 1, self.committed + 1, max_bytes)

    # -- conflict search ------------------------------------------------------------------------

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest entry boundary b <= index with term(b) <= term, as (b, term(b)).

        Walks back one entry (not one offset) at a time. Below the snapshot the answer is
        unknown: returns (b, 0) with b compacted, which makes a leader send a snapshot.
        """
        index = min(index, self.last_index())
        snap_index = self.first_index() - 1
        while True:
            if index < snap_index:
                return (index, 0)
            if index == snap_index:
                t = self.term(index)
                assert t is not None
                return (index, t) if t <= term else (index - 1, 0)
            span = self.entry_span(index)
            assert span is not None, index
            start, end, t = span
            if end == index and t <= term:
                return (index, t)
            index = start - 1

    # -- writing --------------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append (leader) or truncate-and-append (follower) at entries[0].index."""
        if not entries:
            return
        start = entries[0].index
        assert start > self.committed, f"truncating committed offset {start} <= {self.committed}"
        u = self._unstable
        if start == self.last_index() + 1:
            if not u:
                self._offset = start
            u.extend(entries)
        elif start <= self._offset:
            # Replaces (part of) the stable log: the shell truncates storage at `start`.
            assert start >= self.first_index()
            assert self.is_boundary(start - 1), "truncation must fall on an entry start"
            self._unstable = list(entries)
            self._offset = start
        else:
            pos = bisect_left(u, start, key=_LAST_INDEX)
            assert u[pos].index == start, "truncation must fall on an entry start"
            del u[pos:]
            u.extend(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: list[Entry]
    ) -> tuple[int, int] | None:
        """Follower side of AppendEntries. Returns (last new index, first truncated offset or
        -2 if nothing was truncated), or None if prev does not match."""
        if not self.match_term(prev_index, prev_term):
            return None
        # prev matched, so our entry containing prev ends exactly at prev (entries of one term
        # come from one leader, which cut them identically).
        assert self.is_boundary(prev_index), f"matched prev {prev_index} is not a boundary"
        last_new = entries[-1].last_index if entries else prev_index
        truncated = -2
        if entries:
            # First entry we do not already have (same index and term means same entry).
            conflict_pos = len(entries)
            last = self.last_index()
            for i, e in enumerate(entries):
                if e.index > last or self.term(e.index) != e.term:
                    conflict_pos = i
                    break
            if conflict_pos < len(entries):
                first = entries[conflict_pos].index
                if first <= last:
                    truncated = first
                self.append(entries[conflict_pos:] if conflict_pos else entries)
        self.commit_to(min(commit, last_new))
        return (last_new, truncated)

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} beyond last {self.last_index()}"
            self.committed = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot (follower catching up via InstallSnapshot)."""
        assert snapshot.index > self.committed
        self._unstable = []
        self._offset = snapshot.index + 1
        self._snapshot = snapshot
        self.committed = snapshot.index

    # -- handing to / acknowledged by the shell ------------------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return self._unstable

    def unstable_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def stable_to(self, entries: list[Entry], snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            assert snapshot is self._snapshot
            self._snapshot = None
        if entries:
            assert entries is self._unstable, "advance() with a Ready from another round"
            self._offset = entries[-1].last_index + 1
            self._unstable = []

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, (self.applied, index, self.committed)
        self.applied = index
