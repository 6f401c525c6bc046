"""The coordinator shell in-process (a broker core, no sockets): leadership moves unload and reload a
`__consumer_offsets` partition from the log, the timer fires session timeouts with no further input, a
failed write answers NOT_COORDINATOR and rebuilds the partition from the log, FindCoordinator's answers."""

from __future__ import annotations

import asyncio

import pytest

from cluster.broker.broker import Broker
from cluster.broker.config import BrokerConfig
from cluster.broker.errors import NotLeaderOrFollowerError
from cluster.groups import OFFSETS_TOPIC, start_group_coordinator
from consumer_groups import (ErrorCode, GroupConfig, HeartbeatRequest, JoinGroupRequest, OffsetCommitPartition,
                             OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest)
from consumer_groups.consumer_protocol import Subscription, encode_subscription

CONFIG = GroupConfig(num_partitions=4, session_timeout_min_ms=100, initial_rebalance_delay_ms=0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _setup(tmp_path, **kwargs):
    broker = await Broker.open(BrokerConfig(data_dir=tmp_path / "data"))
    await broker.create_topic("t", 2)
    service = await start_group_coordinator(broker, config=CONFIG, **kwargs)
    return broker, service


async def _member(service, group: str, session_ms: int = 10_000):
    joined = await service.call(JoinGroupRequest(group, "", "consumer",
                                                 (("range", encode_subscription(Subscription(("t",)))),), session_ms))
    assert joined.error == ErrorCode.NONE
    synced = await service.call(SyncGroupRequest(group, joined.generation_id, joined.member_id))
    assert synced.error == ErrorCode.NONE
    return joined


async def _commit(service, group: str, offset: int, generation: int = -1, member: str = ""):
    answer = await service.call(OffsetCommitRequest(group, (OffsetCommitPartition("t", 0, offset),), generation, member))
    return answer.partitions[0].error


async def _fetched(service, group: str) -> int:
    answer = await service.call(OffsetFetchRequest(group, (("t", 0),)))
    return answer.partitions[0].offset if answer.error == ErrorCode.NONE else -int(answer.error)


def test_leadership_moves_unload_and_reload_from_the_log(tmp_path):
    async def main():
        broker, service = await _setup(tmp_path)
        try:
            joined = await _member(service, "g")
            assert await _commit(service, "g", 42, joined.generation_id, joined.member_id) == ErrorCode.NONE
            p = service.partition_for("g")
            assert service.locate("g") == (0, broker.node_id)
            assert broker.partition(OFFSETS_TOPIC, p).high_watermark > 0  # written through the partition seam

            service.on_partition_leadership(p, False)
            assert service.locate("g")[0] == ErrorCode.NOT_COORDINATOR
            assert await _fetched(service, "g") == -ErrorCode.NOT_COORDINATOR
            service.on_partition_leadership(p, True)
            await service.wait_loaded()
            assert await _fetched(service, "g") == 42  # rebuilt from __consumer_offsets
            view = service.group_view("g")
            assert view.generation_id == joined.generation_id and len(view.members) == 1
        finally:
            await service.close()
            await broker.close()

    run(main())


def test_offsets_survive_a_restart_of_the_service(tmp_path):
    async def main():
        broker, service = await _setup(tmp_path)
        assert await _commit(service, "simple", 7) == ErrorCode.NONE
        await service.close()
        await broker.close()
        broker, service = await _setup_existing(tmp_path)
        try:
            assert await _fetched(service, "simple") == 7
        finally:
            await service.close()
            await broker.close()

    async def _setup_existing(path):
        broker = await Broker.open(BrokerConfig(data_dir=path / "data"))
        return broker, await start_group_coordinator(broker, config=CONFIG)

    run(main())


def test_session_timeout_fires_without_further_input(tmp_path):
    async def main():
        broker, service = await _setup(tmp_path)
        try:
            joined = await _member(service, "quiet", session_ms=300)
            assert service.coord.next_deadline_ms() is not None
            await asyncio.sleep(0.6)  # no request, no poll: only the timer can expire the member
            view = service.group_view("quiet")
            assert view.members == () and view.state.name == "EMPTY"
            answer = await service.call(HeartbeatRequest("quiet", joined.generation_id, joined.member_id))
            assert answer.error == ErrorCode.UNKNOWN_MEMBER_ID
        finally:
            await service.close()
            await broker.close()

    run(main())


def test_failed_write_answers_not_coordinator_and_reloads(tmp_path, monkeypatch):
    async def main():
        broker, service = await _setup(tmp_path)
        try:
            assert await _commit(service, "w", 5) == ErrorCode.NONE
            part = broker.partition(OFFSETS_TOPIC, service.partition_for("w"))

            def refuse(*args, **kwargs):
                raise NotLeaderOrFollowerError("leadership moved")

            monkeypatch.setattr(part, "append", refuse)
            assert await _commit(service, "w", 6) == ErrorCode.NOT_COORDINATOR
            monkeypatch.undo()
            await service.wait_loaded()
            assert await _fetched(service, "w") == 5  # memory follows the log
            assert await _commit(service, "w", 8) == ErrorCode.NONE
            assert await _fetched(service, "w") == 8
        finally:
            await service.close()
            await broker.close()

    run(main())


def test_topic_created_on_first_use_compacted(tmp_path):
    async def main():
        broker, service = await _setup(tmp_path)
        try:
            assert OFFSETS_TOPIC not in {t.name for t in broker.list_topics()}
            assert await _commit(service, "first", 1) == ErrorCode.NONE
            info = broker.describe_topic(OFFSETS_TOPIC)
            assert info.partition_count == CONFIG.num_partitions
            assert {c.name: c.value for c in info.configs}["cleanup.policy"] == "compact"
            assert service.replication_factor() == 1
        finally:
            await service.close()
            await broker.close()

    run(main())


@pytest.mark.parametrize("leader,expected", [(-1, ErrorCode.COORDINATOR_NOT_AVAILABLE), (7, ErrorCode.NONE)])
def test_find_coordinator_follows_the_partition_leader(tmp_path, leader, expected):
    from cluster.kafka.cluster_view import PartitionPlacement

    class View:  # a clustered view: this node leads nothing, node 7 or nobody leads everything
        def placement(self, topic, partition):
            return PartitionPlacement(partition, leader, 1, (7,), (7,))

        def brokers(self):
            return [object()] * 3

    async def main():
        broker = await Broker.open(BrokerConfig(data_dir=tmp_path / "data"))
        service = await start_group_coordinator(broker, config=CONFIG, cluster=View(), lead_all_partitions=False)
        try:
            error, node = service.locate("g")
            assert error == expected and (node == leader if expected == ErrorCode.NONE else node == -1)
            assert service.replication_factor() == 3
            assert (await _fetched(service, "g")) == -ErrorCode.NOT_COORDINATOR
        finally:
            await service.close()
            await broker.close()

    run(main())
