"""Keyed one-shot deadlines for the sans-I/O coordinator (Kafka's `CoordinatorTimer`, without threads).

Scheduling a key again replaces its deadline; the shell asks `next_deadline_ms()` and calls the core's
`poll(now_ms)` then, so nothing busy-polls. Stale heap entries are skipped lazily and compacted when they
outnumber the live ones."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
# Timer keys are tuples (kind, group_id, member_id); the group id lets a group's timers go in one call.
# A group id of None marks a coordinator-wide timer.
TimerKey = tuple[str, str | None, str]


class DeadlineTimer(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, TimerKey]] = []
        self._live: dict[TimerKey, tuple[int, int, Callable[[], T]]] = {}
        self._keys_by_group: dict[str | None, set[TimerKey]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._live

    def schedule(self, key: TimerKey, deadline_ms: int, action: Callable[[], T]) -> None:
        self._seq += 1
        self._live[key] = (deadline_ms, self._seq, action)
        self._keys_by_group.setdefault(key[1], set()).add(key)
        heapq.heappush(self._heap, (deadline_ms, self._seq, key))
        if len(self._heap) > 64 + 2 * len(self._live):
            self._compact()

    def deadline_of(self, key: TimerKey) -> int | None:
        entry = self._live.get(key)
        return None if entry is None else entry[0]

    def cancel(self, key: TimerKey) -> None:
        if self._live.pop(key, None) is not None:
            keys = self._keys_by_group[key[1]]
            keys.discard(key)
            if not keys:
                del self._keys_by_group[key[1]]

    def cancel_group(self, group_id: str) -> None:
        for key in self._keys_by_group.pop(group_id, set()):
            del self._live[key]

    def next_deadline_ms(self) -> int | None:
        self._drop_stale_head()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> tuple[int, Callable[[], T]] | None:
        """The earliest live timer due at or before now_ms (removed), or None. Ties fire in schedule order."""
        self._drop_stale_head()
        if not self._heap or self._heap[0][0] > now_ms:
            return None
        deadline, _, key = heapq.heappop(self._heap)
        _, _, action = self._live[key]
        self.cancel(key)
        return deadline, action

    def _drop_stale_head(self) -> None:
        heap = self._heap
        while heap:
            deadline, seq, key = heap[0]
            live = self._live.get(key)
            if live is not None and live[1] == seq:
                return
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [(d, s, k) for k, (d, s, _) in self._live.items()]
        heapq.heapify(self._heap)
