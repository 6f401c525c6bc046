"""Who leads each partition, as this broker knows it.

Brokers learn leaders in two ways: for replicas they host, from their own Raft group; for the others, from
the `LeaderHint`s each leader broadcasts over the transport (group, leader, term, in-sync voters). The table
keeps, per partition replica group, the hint with the highest term (a newer term always wins; an older one
is ignored), so a broker answers Kafka Metadata and routes misdirected requests with the current leader.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Leadership:
    leader_id: int  # -1: none known
    term: int
    isr: tuple[int, ...]


UNKNOWN = Leadership(-1, -1, ())


class LeadershipTable:
    def __init__(self) -> None:
        self._by_group: dict[str, Leadership] = {}

    def update(self, group_id: str, leader_id: int | None, term: int, isr=()) -> bool:
        """Record a hint; returns True when it changed what the table says."""
        current = self._by_group.get(group_id)
        leader = leader_id if leader_id is not None and leader_id > 0 else -1
        if current is not None:
            if term < current.term:
                return False
            if term == current.term:
                if leader < 0 and current.leader_id >= 0:
                    return False  # "no leader" in the same term says less than a leader does
                if leader == current.leader_id and tuple(isr) == current.isr:
                    return False
                if leader < 0:
                    leader = current.leader_id
        self._by_group[group_id] = Leadership(leader, term, tuple(sorted(isr)) if isr else
                                              ((leader,) if leader >= 0 else ()))
        return True

    def get(self, group_id: str) -> Leadership:
        return self._by_group.get(group_id, UNKNOWN)

    def forget(self, group_id: str) -> None:
        self._by_group.pop(group_id, None)

    def retain(self, group_ids: set[str]) -> None:
        """Drop what belongs to groups that no longer exist (deleted topics)."""
        for gid in [g for g in self._by_group if g not in group_ids]:
            del self._by_group[gid]

    def leaders(self) -> dict[str, Leadership]:
        return dict(self._by_group)

    def __len__(self) -> int:
        return len(self._by_group)
