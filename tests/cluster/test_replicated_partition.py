"""ReplicatedPartition logic, sans network: a scripted Raft group over a real PartitionRaftLog.

The fake group plays the host's part: proposals are queued with predicted offsets, `persist()` writes them
(stamped) to the log, `commit(upto)` hands committed entries to the partition like the host's drain, and a
leader change (with or without a divergent tail) is one call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from cluster.broker.errors import BrokerError
from cluster.broker.types import TopicPartition
from cluster.raft.partition_log import PartitionRaftLog
from cluster.raft.types import Configuration, Entry, EntryKind, NotLeaderError
from cluster.replication.partition import ReplicatedPartition
from storage.config import LogConfig
from storage.record_batch import RecordInput, build_batch, iter_records

ME = 1


@dataclass
class _Proposal:
    index: int
    last_index: int
    term: int


@dataclass
class _Replica:
    match_index: int
    recent_active: bool
    in_sync: bool
    lag: int
    is_learner: bool = False


class FakeGroup:
    def __init__(self, log: PartitionRaftLog, listener, voters=(1, 2, 3)) -> None:
        self.log = log
        self.listener = listener
        self.configuration = Configuration(frozenset(voters))
        self.term = 1
        self.leader_id: int | None = ME
        self.commit_index = log.last_index()
        self.pending: list[Entry] = []  # proposed, not yet in the log
        self.followers = {v: True for v in voters if v != ME}  # alive and caught up?

    @property
    def is_leader(self) -> bool:
        return self.leader_id == ME

    @property
    def last_index(self) -> int:
        return self.pending[-1].last_index if self.pending else self.log.last_index()

    def propose_batch(self, items):
        if not self.is_leader:
            raise NotLeaderError(self.leader_id, self.term)
        out = []
        index = self.last_index + 1
        for data, count in items:
            e = Entry(self.term, index, index + count - 1, EntryKind.DATA, bytes(data))
            self.pending.append(e)
            out.append(_Proposal(e.index, e.last_index, e.term))
            index += count
        return out

    def replica_state(self):
        if not self.is_leader:
            return {}
        out = {ME: _Replica(self.last_index, True, True, 0)}
        for node, ok in self.followers.items():
            out[node] = _Replica(self.last_index if ok else -1, ok, ok, 0 if ok else 10**9)
        return out

    async def wait_durable(self, proposal, timeout_s=None):
        self.persist()

    async def apply_retention(self, now_ms):
        return 0

    # -- test controls ------------------------------------------------------------------------------

    def persist(self) -> None:
        if self.pending:
            self.log.append(self.pending)
            self.pending = []

    def commit(self, upto: int | None = None) -> None:
        self.persist()
        upto = self.log.last_index() if upto is None else upto
        entries = self.log.entries(self.commit_index + 1, upto + 1, 1 << 30)
        self.commit_index = upto
        self.listener.on_committed(entries)

    def elect(self, leader: int | None, term: int) -> None:
        self.leader_id, self.term = leader, term
        self.listener.on_leader_change(leader, term)


def _batch(values, *, pid=-1, epoch=-1, seq=-1):
    return build_batch([RecordInput(None, v, 1_700_000_000_000, []) for v in values], producer_id=pid,
                       producer_epoch=epoch, base_sequence=seq)


def _setup(tmp_path, voters=(1, 2, 3), **kwargs):
    log = PartitionRaftLog.open(str(tmp_path / "p"), LogConfig(), bootstrap=Configuration(frozenset(voters)))
    part = ReplicatedPartition(TopicPartition("t", 0), log, node_id=ME, **kwargs)
    group = FakeGroup(log, part, voters)
    part.bind(group)
    group.elect(ME, 1)
    return part, group, log


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_offsets_come_from_the_proposal_and_the_high_watermark_from_the_commit(tmp_path):
    part, group, log = _setup(tmp_path)
    info = part.append(_batch([b"a", b"b", b"c"]), now_ms=0)
    assert (info.base_offset, info.last_offset) == (0, 2)
    assert part.high_watermark == 0 and not part.acknowledged(2)
    group.persist()
    assert part.read(0, 1 << 20) == b"", "written but not committed: invisible"
    assert part.read(3, 1 << 20) == b"", "between the high watermark and the log end: empty, not an error"
    group.commit()
    assert part.high_watermark == 3
    assert [r.value for r in iter_records(bytes(part.read(0, 1 << 20)))] == [b"a", b"b", b"c"]
    assert part.leader_epoch == 1
    log.close()


def test_acks_all_waits_for_the_commit_of_the_same_term(tmp_path):
    part, group, log = _setup(tmp_path)

    async def body():
        info = part.append(_batch([b"x"]), now_ms=0)
        waiter = asyncio.ensure_future(part.wait_for_ack(info.last_offset))
        await asyncio.sleep(0)
        assert not waiter.done()
        group.commit()
        await waiter
        # A proposal whose offsets a new leader fills with other entries fails: never a false ack.
        info = part.append(_batch([b"lost"]), now_ms=0)
        waiter = asyncio.ensure_future(part.wait_for_ack(info.last_offset))
        group.pending = []  # the entry never reached the log
        group.elect(2, 2)
        group.log.append([Entry(2, info.base_offset, info.last_offset, EntryKind.DATA, _batch([b"other"]))])
        group.commit()
        with pytest.raises(BrokerError) as exc:
            await waiter
        assert exc.value.error_name == "NOT_LEADER_OR_FOLLOWER"

    _run(body())
    assert part.high_watermark == 2
    log.close()


def test_followers_refuse_with_the_leader_id(tmp_path):
    part, group, log = _setup(tmp_path)
    group.elect(3, 2)
    for call in (lambda: part.append(_batch([b"x"]), now_ms=0), lambda: part.read(0, 100),
                 lambda: part.list_offset(-1)):
        with pytest.raises(BrokerError) as exc:
            call()
        assert exc.value.error_name == "NOT_LEADER_OR_FOLLOWER" and exc.value.leader_id == 3
    log.close()


def test_min_insync_replicas_refuses_before_writing(tmp_path):
    part, group, log = _setup(tmp_path, min_insync_replicas=3)
    group.followers[3] = False
    with pytest.raises(BrokerError) as exc:
        part.append(_batch([b"x"]), now_ms=0)
    assert exc.value.error_name == "NOT_ENOUGH_REPLICAS"
    assert group.pending == [], "nothing was proposed"
    part.append(_batch([b"y"]), now_ms=0, acks=1)  # acks=1 does not ask for in-sync replicas
    # A majority is needed for acks=all even with min.insync.replicas=1: it could never commit otherwise.
    part.min_insync_replicas = 1
    group.followers[2] = False
    with pytest.raises(BrokerError) as exc:
        part.append(_batch([b"z"]), now_ms=0)
    assert exc.value.error_name == "NOT_ENOUGH_REPLICAS"
    log.close()


def test_corrupt_batches_are_refused(tmp_path):
    part, group, log = _setup(tmp_path)
    data = bytearray(_batch([b"hello"]))
    data[-1] ^= 0xFF
    with pytest.raises(BrokerError) as exc:
        part.append(bytes(data), now_ms=0)
    assert exc.value.error_name == "CORRUPT_MESSAGE" and group.pending == []
    log.close()


def test_idempotent_retries_get_their_offsets_and_survive_a_leader_change(tmp_path):
    part, group, log = _setup(tmp_path)
    first = _batch([b"a", b"b"], pid=7, epoch=0, seq=0)
    assert part.append(first, now_ms=0).base_offset == 0
    dup = part.append(first, now_ms=0)
    assert dup.duplicate and (dup.base_offset, dup.last_offset) == (0, 1), "a retry before the commit"
    with pytest.raises(BrokerError) as exc:
        part.append(_batch([b"gap"], pid=7, epoch=0, seq=5), now_ms=0)
    assert exc.value.error_name == "OUT_OF_ORDER_SEQUENCE_NUMBER"
    group.commit()
    # Leadership goes away and comes back in a new term: the table is rebuilt from the log's headers.
    group.elect(2, 2)
    group.elect(ME, 3)
    again = part.append(first, now_ms=0)
    assert again.duplicate and again.base_offset == 0
    assert part.append(_batch([b"c"], pid=7, epoch=0, seq=2), now_ms=0).base_offset == 2
    log.close()


def test_log_append_time_is_set_before_replication(tmp_path):
    log = PartitionRaftLog.open(str(tmp_path / "p"), LogConfig(message_timestamp_type="LogAppendTime"),
                                bootstrap=Configuration(frozenset({1})))
    part = ReplicatedPartition(TopicPartition("t", 0), log, node_id=ME)
    group = FakeGroup(log, part, (1,))
    part.bind(group)
    group.elect(ME, 1)
    info = part.append(_batch([b"a"]), now_ms=1234)
    assert info.log_append_time_ms == 1234
    group.commit()
    [record] = list(iter_records(bytes(part.read(0, 1 << 20))))
    assert record.timestamp == 1234
    log.close()


class _CommittingGroup(FakeGroup):
    """Commits what is proposed as soon as someone waits for it; applies LOG_START entries like the host's op."""

    async def wait_committed(self, proposal, timeout_s=None):
        self.commit()
        return proposal

    async def apply_log_start(self):
        return self.log.apply_log_start(self.commit_index)


def test_delete_records_commits_a_log_start_entry_and_applies_it(tmp_path):
    from cluster.broker.types import EARLIEST_TIMESTAMP
    from cluster.raft.partition_log import log_start_of

    log = PartitionRaftLog.open(str(tmp_path / "p"), LogConfig(segment_bytes=200),
                                bootstrap=Configuration(frozenset((1, 2, 3))))
    part = ReplicatedPartition(TopicPartition("t", 0), log, node_id=ME)
    group = _CommittingGroup(log, part)
    part.bind(group)
    group.elect(ME, 1)

    async def main() -> None:
        for _ in range(5):
            part.append(_batch([b"a", b"b"]), now_ms=0)
        group.commit()
        assert part.high_watermark == 10
        with pytest.raises(BrokerError) as info:
            await part.delete_records(11, timeout_s=1)
        assert info.value.error_name == "OFFSET_OUT_OF_RANGE"
        assert await part.delete_records(3, timeout_s=1) == 3
        entry = log.entries(10, 11, 1 << 20)[0]  # the LOG_START entry, after the records it trims
        assert log_start_of(entry.data) == 3 and part.high_watermark == 11
        assert part.log_start_offset == 3 and part.list_offset(EARLIEST_TIMESTAMP) == (3, -1)
        assert await part.delete_records(2, timeout_s=1) == 3  # never goes back, nothing proposed
        assert log.last_index() == 10
        assert await part.delete_records(11, timeout_s=1) == 11  # everything, the entry included
        group.elect(2, 2)
        with pytest.raises(BrokerError) as info:
            await part.delete_records(11, timeout_s=1)
        assert info.value.error_name == "NOT_LEADER_OR_FOLLOWER"

    _run(main())
    log.close()
