"""A fake shell around GroupCoordinator for tests: it keeps the clock, records every response by handle
(asserting each handle is answered exactly once), and appends Persists to an in-memory log, confirming
them at once or on demand."""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Iterable

from consumer_groups import (
    ErrorCode,
    GroupConfig,
    GroupCoordinator,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupResponse,
    OffsetCommitPartition,
    OffsetCommitRequest,
    Output,
    Persist,
    Record,
    Response,
    SyncGroupRequest,
)
from consumer_groups.consumer_protocol import Assignment, Subscription, encode_assignment, encode_subscription

TEST_CONFIG = GroupConfig(num_partitions=4, initial_rebalance_delay_ms=0)
SESSION_MS = 10_000
REBALANCE_MS = 30_000


def subscription(*topics: str, version: int = 0) -> bytes:
    return encode_subscription(Subscription(tuple(topics)), version)


def assignment(*pairs: tuple[str, int]) -> bytes:
    by_topic: dict[str, list[int]] = {}
    for t, p in pairs:
        by_topic.setdefault(t, []).append(p)
    return encode_assignment(Assignment(tuple((t, tuple(ps)) for t, ps in sorted(by_topic.items()))))


class Shell:
    def __init__(
        self,
        config: GroupConfig = TEST_CONFIG,
        *,
        seed: int = 7,
        auto_persist: bool = True,
        coordinator: GroupCoordinator | None = None,
        now_ms: int = 0,
    ) -> None:
        self.now = now_ms
        self.coord = coordinator or GroupCoordinator(config, random.Random(seed), now_ms=now_ms)
        self.auto_persist = auto_persist
        self.responses: dict[Hashable, object] = {}
        self.pending: list[Persist] = []
        self.writes: list[Persist] = []  # every Persist, in emission (= log append) order
        self.durable: set[int] = set()
        self._handles = itertools.count()

    @property
    def log(self) -> list[Record]:
        """The durable records, in log order (a write's place in the log is fixed when it is emitted)."""
        return [r for w in self.writes if w.write_id in self.durable for r in w.records]

    # --- plumbing ---------------------------------------------------------------------------------

    def feed(self, outputs: Iterable[Output]) -> None:
        for out in outputs:
            if isinstance(out, Response):
                assert out.handle not in self.responses, f"handle {out.handle!r} answered twice"
                self.responses[out.handle] = out.body
            else:
                assert isinstance(out, Persist)
                self.pending.append(out)
                self.writes.append(out)
        while self.auto_persist and self.pending:
            self.confirm(self.pending[0].write_id)

    def confirm(self, write_id: int, error: int | None = None) -> None:
        (write,) = [w for w in self.pending if w.write_id == write_id]
        self.pending.remove(write)
        if error is None:
            self.durable.add(write_id)
        self.feed(self.coord.persisted(write_id, self.now, error))

    def confirm_all(self, error: int | None = None) -> None:
        while self.pending:
            self.confirm(self.pending[0].write_id, error)

    def handle(self) -> str:
        return f"h{next(self._handles)}"

    def send(self, request: object, handle: Hashable | None = None) -> Hashable:
        """Send a request; returns its handle (its answer may come later)."""
        handle = self.handle() if handle is None else handle
        self.feed(self.coord.handle_request(handle, request, self.now))
        return handle

    def call(self, request: object) -> object:
        """Send a request that must be answered at once; returns the answer."""
        handle = self.send(request)
        assert handle in self.responses, f"{type(request).__name__} was parked"
        return self.responses[handle]

    def answer(self, handle: Hashable) -> object | None:
        return self.responses.get(handle)

    def advance(self, ms: int) -> None:
        self.now += ms
        self.feed(self.coord.poll(self.now))

    # --- group helpers ----------------------------------------------------------------------------

    def join(
        self,
        group: str,
        member_id: str = "",
        *,
        topics: tuple[str, ...] = ("t",),
        protocols: tuple[tuple[str, bytes], ...] | None = None,
        instance: str | None = None,
        session_ms: int = SESSION_MS,
        rebalance_ms: int = REBALANCE_MS,
        require_known: bool = False,
        client_id: str = "client",
        skip: bool = False,
        server: bool = False,
    ) -> Hashable:
        request = JoinGroupRequest(
            group_id=group,
            member_id=member_id,
            protocol_type="consumer",
            protocols=protocols if protocols is not None else (("range", subscription(*topics)),),
            session_timeout_ms=session_ms,
            rebalance_timeout_ms=rebalance_ms,
            group_instance_id=instance,
            require_known_member_id=require_known,
            supports_skip_assignment=skip,
            client_id=client_id,
            client_host="/127.0.0.1",
            server_assignment=server,
        )
        return self.send(request)

    def join_new(self, group: str, **kwargs: object) -> Hashable:
        """A v4+ first join: MEMBER_ID_REQUIRED, then the join with the given id (returns its handle)."""
        first = self.call_join(group, require_known=True, **kwargs)
        assert first.error == ErrorCode.MEMBER_ID_REQUIRED and first.member_id
        return self.join(group, first.member_id, require_known=True, **kwargs)  # type: ignore[arg-type]

    def call_join(self, group: str, member_id: str = "", **kwargs: object) -> JoinGroupResponse:
        handle = self.join(group, member_id, **kwargs)  # type: ignore[arg-type]
        response = self.responses.get(handle)
        assert isinstance(response, JoinGroupResponse), "join was parked"
        return response

    def sync(
        self,
        group: str,
        member_id: str,
        generation: int,
        assignments: dict[str, bytes] | None = None,
        instance: str | None = None,
    ) -> Hashable:
        return self.send(
            SyncGroupRequest(group, generation, member_id, instance, assignments=tuple((assignments or {}).items()))
        )

    def heartbeat(self, group: str, member_id: str, generation: int, instance: str | None = None) -> ErrorCode:
        return self.call(HeartbeatRequest(group, generation, member_id, instance)).error  # type: ignore[attr-defined]

    def commit(
        self,
        group: str,
        offsets: dict[tuple[str, int], int],
        generation: int = -1,
        member_id: str = "",
        instance: str | None = None,
        metadata: str | None = None,
        retention_ms: int = -1,
    ) -> Hashable:
        parts = tuple(OffsetCommitPartition(t, p, o, metadata=metadata) for (t, p), o in offsets.items())
        return self.send(OffsetCommitRequest(group, parts, generation, member_id, instance, retention_ms))

    def commit_errors(self, handle: Hashable) -> set[ErrorCode]:
        return {p.error for p in self.responses[handle].partitions}  # type: ignore[attr-defined]

    def stable_group(self, group: str, n: int, *, topics: tuple[str, ...] = ("t",)) -> tuple[int, list[str]]:
        """Bring n dynamic members to Stable (initial delay 0 assumed); -> (generation, member ids)."""
        members: list[str] = []
        for _ in range(n):
            handles = [self.join_new(group, topics=topics)]
            # Everyone already in rejoins.
            handles += [self.join(group, m, topics=topics) for m in members]
            answers = [self.responses[h] for h in handles]
            assert all(isinstance(a, JoinGroupResponse) and a.error == ErrorCode.NONE for a in answers), answers
            members = [a.member_id for a in answers]  # type: ignore[attr-defined]
            generation = answers[0].generation_id  # type: ignore[attr-defined]
            leader = answers[0].leader  # type: ignore[attr-defined]
            syncs = [
                self.sync(
                    group,
                    m,
                    generation,
                    {m: assignment(("t", i)) for i, m in enumerate(members)} if m == leader else None,
                )
                for m in members
            ]
            assert all(self.responses[s].error == ErrorCode.NONE for s in syncs)  # type: ignore[attr-defined]
        return generation, members
