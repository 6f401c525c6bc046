"""The listener shell: ordered pipelining, back-pressure, limits, failure isolation, and the ClusterView seam."""

from __future__ import annotations

import time

import pytest

import proto.kafka as k
from cluster.kafka import BrokerEndpoint, KafkaListenerConfig, PartitionPlacement, SingleNodeClusterView
from cluster.kafka.handlers import HANDLERS, Handler
from kafka_listener_harness import (ConnectionClosedError, ListenerThread, RawClient, batch, create_topic,
                                    fetch_body, fetch_partition, healthy, metadata_body, produce_body,
                                    produce_result, records_of, wait_until)

A = k.ApiKey
E = k.ErrorCode


def _connections(lt: ListenerThread):
    return lt.call(lambda: list(lt.listener._connections))


def test_responses_come_in_request_order_while_handlers_run_concurrently(listener):
    with RawClient(listener.port) as c, RawClient(listener.port) as observer:
        create_topic(c, "order", 2)
        started = time.monotonic()
        ids = [c.send(A.FETCH, 12, fetch_body("order", 0, 0, max_wait_ms=600)),
               c.send(A.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"}),
               c.send(A.PRODUCE, 9, produce_body("order", 1, batch([b"behind-the-fetch"]))),
               c.send(A.METADATA, 12, metadata_body(["order"]))]
        # The produce behind the waiting fetch is appended already (handlers run concurrently) ...
        assert wait_until(lambda: fetch_partition(observer.request(A.FETCH, 12, fetch_body("order", 1, 0)))[
            "high_watermark"] == 1, timeout=0.5)
        # ... but its answer waits for the fetch's: responses leave in request order.
        got = [c.recv()[0] for _ in ids]
        assert got == ids
        assert time.monotonic() - started >= 0.5


def test_in_flight_requests_are_bounded_and_reading_pauses(tmp_path):
    config = KafkaListenerConfig(max_in_flight_requests=4)
    with ListenerThread(tmp_path / "data", config=config) as lt, RawClient(lt.port) as c:
        create_topic(c, "bp", 1)
        ids = [c.send(A.FETCH, 12, fetch_body("bp", 0, 0, max_wait_ms=1500))]
        ids += [c.send(A.API_VERSIONS, 0, {}) for _ in range(30)]

        def state():
            [conn] = _connections(lt)
            return len(conn._slots), conn._reading_paused

        assert wait_until(lambda: state() == (4, True), timeout=1.0), state()
        assert [c.recv()[0] for _ in ids] == ids, "every request is answered once the head completes"
        assert state() == (0, False)


def test_a_client_that_does_not_read_is_paused_by_the_write_buffer(tmp_path):
    with ListenerThread(tmp_path / "data") as lt, RawClient(lt.port) as c:
        create_topic(c, "slow-reader", 1)
        big = batch([b"x" * 1_000_000])
        assert produce_result(c.request(A.PRODUCE, 9, produce_body("slow-reader", 0, big)))["error_code"] == 0
        ids = [c.send(A.FETCH, 12, fetch_body("slow-reader", 0, 0)) for _ in range(40)]

        def paused():
            conns = _connections(lt)
            return bool(conns) and conns[0]._reading_paused

        assert wait_until(paused, timeout=5.0), "40 MB of answers nobody reads must stop the reading"
        assert [c.recv(timeout=20)[0] for _ in ids] == ids


def test_frame_limit_from_config_and_connection_limit(tmp_path):
    config = KafkaListenerConfig(max_frame_bytes=64 * 1024, max_connections=2)
    with ListenerThread(tmp_path / "data", config=config) as lt:
        with RawClient(lt.port) as c:
            create_topic(c, "limits", 1)
            c.send(A.PRODUCE, 9, produce_body("limits", 0, batch([b"y" * 100_000])))
            assert c.is_closed(), "a frame over max_frame_bytes closes the connection"
        with RawClient(lt.port) as one, RawClient(lt.port) as two, RawClient(lt.port) as three:
            assert one.request(A.API_VERSIONS, 0, {})["error_code"] == 0
            assert two.request(A.API_VERSIONS, 0, {})["error_code"] == 0
            assert three.is_closed(), "a third connection is over max_connections"
        assert wait_until(lambda: len(_connections(lt)) == 0)
        healthy(lt.port)


def test_idle_connections_are_closed_but_waiting_ones_are_not(tmp_path):
    config = KafkaListenerConfig(connections_max_idle_ms=300)
    with ListenerThread(tmp_path / "data", config=config) as lt, RawClient(lt.port) as idle, \
            RawClient(lt.port) as waiting:
        create_topic(waiting, "idle", 1)
        cid = waiting.send(A.FETCH, 12, fetch_body("idle", 0, 0, max_wait_ms=1200))
        assert idle.is_closed(timeout=3), "connections.max.idle.ms closes a silent connection"
        assert waiting.recv()[0] == cid, "a connection waiting for its answer is not idle"


def test_a_failing_handler_closes_only_its_connection(listener):
    original = HANDLERS[A.DESCRIBE_CLUSTER]

    def boom(svc, header, body):
        raise RuntimeError("handler bug")

    async def boom_later(svc, header, body):
        raise RuntimeError("async handler bug")

    try:
        for fn in (boom, lambda s, h, b: boom_later(s, h, b)):
            HANDLERS[A.DESCRIBE_CLUSTER] = Handler(A.DESCRIBE_CLUSTER, 0, 1, fn)
            with RawClient(listener.port) as c:
                c.send(A.DESCRIBE_CLUSTER, 0, {})
                with pytest.raises(ConnectionClosedError):
                    c.recv()
            healthy(listener.port)
    finally:
        HANDLERS[A.DESCRIBE_CLUSTER] = original


def test_close_with_waiting_requests_is_prompt(tmp_path):
    lt = ListenerThread(tmp_path / "data").start()
    c = RawClient(lt.port)
    try:
        create_topic(c, "closing", 1)
        c.send(A.FETCH, 12, fetch_body("closing", 0, 0, max_wait_ms=30_000))
        time.sleep(0.1)
        started = time.monotonic()
        lt.stop(timeout=10)
        assert time.monotonic() - started < 5
        assert c.is_closed()
    finally:
        c.close()
        lt.stop()


# ------------------------------------------------------------------------------------- the ClusterView seam

class _OtherLeaderView(SingleNodeClusterView):
    """Partition 1 of every topic is led by broker 7 (as a multi-broker view would say)."""

    OTHER = BrokerEndpoint(7, "127.0.0.1", 1)

    def brokers(self):
        return super().brokers() + [self.OTHER]

    def _move(self, p: PartitionPlacement) -> PartitionPlacement:
        if p.partition != 1:
            return p
        return PartitionPlacement(1, 7, 3, (7, 0), (7,))

    def topics(self, names=None):
        from dataclasses import replace

        return {n: replace(t, partitions=tuple(self._move(p) for p in t.partitions))
                for n, t in super().topics(names).items()}

    def placement(self, topic, partition):
        found = super().placement(topic, partition)
        return None if found is None else self._move(found)

    def is_local_leader(self, topic, partition):
        found = self.placement(topic, partition)
        return found is None or found.leader_id == self.local_node_id


@pytest.fixture(scope="module")
def misrouted(tmp_path_factory):
    def factory(broker, port):
        return _OtherLeaderView(broker, "127.0.0.1", port)

    with ListenerThread(tmp_path_factory.mktemp("misrouted") / "data", cluster_factory=factory) as lt:
        with RawClient(lt.port) as c:
            create_topic(c, "routed", 2)
        yield lt


def test_metadata_reports_leaders_replicas_and_isr_from_the_cluster_view(misrouted):
    with RawClient(misrouted.port) as c:
        response = c.request(A.METADATA, 12, metadata_body(["routed"]))
    assert sorted((b["node_id"], b["port"]) for b in response["brokers"]) == [(0, misrouted.port), (7, 1)]
    parts = {p["partition_index"]: p for p in response["topics"][0]["partitions"]}
    assert (parts[0]["leader_id"], parts[0]["replica_nodes"], parts[0]["isr_nodes"]) == (0, [0], [0])
    assert (parts[1]["leader_id"], parts[1]["leader_epoch"], parts[1]["replica_nodes"], parts[1]["isr_nodes"]) == \
        (7, 3, [7, 0], [7])


def test_requests_for_partitions_led_elsewhere_get_not_leader_or_follower(misrouted):
    NL = E.NOT_LEADER_OR_FOLLOWER
    with RawClient(misrouted.port) as c:
        ok = produce_result(c.request(A.PRODUCE, 9, produce_body("routed", 0, batch([b"here"]))))
        assert ok["error_code"] == 0
        moved = produce_result(c.request(A.PRODUCE, 10, produce_body("routed", 1, batch([b"there"]))))
        assert moved["error_code"] == NL
        assert moved["current_leader"] == {"leader_id": 7, "leader_epoch": 3}, "v10+ names the leader"
        assert fetch_partition(c.request(A.FETCH, 12, fetch_body("routed", 1, 0)))["error_code"] == NL
        assert [r.value for r in records_of(fetch_partition(c.request(A.FETCH, 12, fetch_body("routed", 0, 0)))[
            "records"])] == [b"here"]
        lo = c.request(A.LIST_OFFSETS, 5, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": "routed", "partitions": [{"partition_index": 1, "timestamp": -1}]}]})
        assert lo["topics"][0]["partitions"][0]["error_code"] == NL
        ofle = c.request(A.OFFSET_FOR_LEADER_EPOCH, 2, {"topics": [{"topic": "routed", "partitions": [
            {"partition": 1, "current_leader_epoch": -1, "leader_epoch": 0}]}]})
        assert ofle["topics"][0]["partitions"][0]["error_code"] == NL
        dr = c.request(A.DELETE_RECORDS, 1, {"topics": [{"name": "routed", "partitions": [
            {"partition_index": 1, "offset": 0}]}], "timeout_ms": 1000})
        assert dr["topics"][0]["partitions"][0]["error_code"] == NL
