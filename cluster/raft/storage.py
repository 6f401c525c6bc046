"""The log-storage protocol the Raft core reads, and MemoryStorage.

The core only *reads* storage; the shell *writes* it while handling a Ready (append, hard state,
snapshot install) and when compacting. Offsets follow cluster.raft.types: entries span
``[index, last_index]``; the snapshot point ``first_index() - 1`` is the last compacted offset
(-1 with term 0 for a log that starts at offset 0).

Adapter notes (on-disk partition log): ``term(i)`` is the partitionLeaderEpoch of the batch
holding offset i (the leader-epoch cache answers it without reading batches); ``entry_span`` is
the batch's (baseOffset, lastOffset, epoch); ``snapshot()`` for a partition log is metadata
only (index = logStartOffset - 1, the term of that offset, the configuration in force there,
empty data), so the adapter must remember the term and configuration at the log start when
retention deletes segments. ``config_entries`` should come from a small side index of CONFIG
batches rather than a scan.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from operator import attrgetter
from typing import Protocol

from .types import Configuration, Entry, EntryKind, HardState, Snapshot

_LAST_INDEX = attrgetter("last_index")


def entries_between(ents: Sequence[Entry], lo: int, hi: int, max_bytes: int) -> list[Entry]:
    """The entries of the sorted run `ents` from the one starting at `lo` up to (not including) index `hi`,
    at most `max_bytes` of them but always at least one (a Raft log's `entries` contract)."""
    pos = bisect_left(ents, lo, key=_LAST_INDEX)
    assert pos < len(ents) and ents[pos].index == lo, f"{lo} is not an entry start"
    out: list[Entry] = []
    size = 0
    for i in range(pos, len(ents)):
        e = ents[i]
        if e.index >= hi:
            break
        size += e.size
        if out and size > max_bytes:
            break
        out.append(e)
    return out


class StorageError(Exception):
    pass


class CompactedError(StorageError):
    """The requested entries were removed by compaction or retention: send a snapshot."""


class Storage(Protocol):
    def hard_state(self) -> HardState:
        """The durable hard state (term, vote, commit) at startup."""
        ...

    def config_entries(self) -> Sequence[Entry]:
        """Every CONFIG entry with index > snapshot().index, ascending (read at startup)."""
        ...

    def first_index(self) -> int:
        """First offset still in the log (snapshot().index + 1)."""
        ...

    def last_index(self) -> int:
        """Last offset in the log; snapshot().index when it holds no entry."""
        ...

    def term(self, index: int) -> int | None:
        """Term of the entry containing ``index``; the snapshot's term at first_index() - 1;
        None outside [first_index() - 1, last_index()]."""
        ...

    def entry_span(self, index: int) -> tuple[int, int, int] | None:
        """(index, last_index, term) of the entry containing ``index``, None if absent."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries starting at offset ``lo`` (an entry start) up to, excluding, offset ``hi``
        (an entry start or last_index() + 1), at most ``max_bytes`` of Entry.size but always at
        least one entry. Raises CompactedError if lo < first_index()."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (its index is first_index() - 1)."""
        ...


class MemoryStorage:
    """In-memory Storage plus the write side the shell uses (simulator and tests)."""

    __slots__ = ("_hard_state", "_snapshot", "_entries")

    def __init__(
        self, configuration: Configuration | None = None, *, log_start: int = 0, term: int = 0
    ) -> None:
        # A fresh log is a snapshot at log_start - 1 carrying the bootstrap configuration.
        self._snapshot = Snapshot(log_start - 1, term, configuration or Configuration())
        self._hard_state = HardState(term, None, log_start - 1)
        self._entries: list[Entry] = []

    # -- Storage protocol ---------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def config_entries(self) -> list[Entry]:
        return [e for e in self._entries if e.kind is EntryKind.CONFIG]

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        ents = self._entries
        return ents[-1].last_index if ents else self._snapshot.index

    def term(self, index: int) -> int | None:
        ents = self._entries
        if ents:
            last = ents[-1]
            if index >= last.index:  # fast path: the tail is what replication asks about
                return last.term if index <= last.last_index else None
            if index >= ents[0].index:
                return ents[bisect_left(ents, index, key=_LAST_INDEX)].term
        if index == self._snapshot.index:
            return self._snapshot.term
        return None

    def entry_span(self, index: int) -> tuple[int, int, int] | None:
        ents = self._entries
        if not ents or index < ents[0].index or index > ents[-1].last_index:
            return None
        e = ents[bisect_left(ents, index, key=_LAST_INDEX)]
        return (e.index, e.last_index, e.term)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo < self.first_index():
            raise CompactedError(lo)
        return entries_between(self._entries, lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side (the shell) -----------------------------------------------------------------

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        """Truncate the log at entries[0].index (dropping everything from there) and append."""
        if not entries:
            return
        start = entries[0].index
        assert start >= self.first_index(), "cannot rewrite compacted offsets"
        assert start <= self.last_index() + 1, "gap in the log"
        ents = self._entries
        if ents and start <= ents[-1].last_index:
            pos = bisect_left(ents, start, key=_LAST_INDEX)
            assert ents[pos].index == start, "truncation must fall on an entry start"
            del ents[pos:]
        ents.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot received from the leader: the whole log is replaced."""
        assert snapshot.index >= self._snapshot.index
        self._snapshot = snapshot
        self._entries = []

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries up to snapshot.index (made by RaftNode.compact) and keep the snapshot."""
        if snapshot.index <= self._snapshot.index:
            return
        assert snapshot.index <= self.last_index()
        ents = self._entries
        pos = bisect_left(ents, snapshot.index, key=_LAST_INDEX)
        assert ents[pos].last_index == snapshot.index, "compaction must end on an entry boundary"
        assert ents[pos].term == snapshot.term
        del ents[: pos + 1]
        self._snapshot = snapshot

    def copy(self) -> MemoryStorage:
        """An independent copy (entries are immutable, so they are shared)."""
        other = MemoryStorage.__new__(MemoryStorage)
        other._hard_state = self._hard_state
        other._snapshot = self._snapshot
        other._entries = list(self._entries)
        return other
