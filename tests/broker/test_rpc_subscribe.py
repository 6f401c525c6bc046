"""Subscribe: tails a partition from an offset or a timestamp, and a slow reader holds the server back."""

from __future__ import annotations

import itertools
import threading
import time

import grpc
import pytest

from proto.rpc import tidelog_v1_pb2 as pb
from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc
from storage.record_batch import iter_records
from tidelog import Admin, Producer
from tidelog.embedded import EmbeddedBroker


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with EmbeddedBroker(tmp_path_factory.mktemp("subscribe")) as broker:
        yield broker


def bytes_out(server, topic) -> float:
    return server.broker.metrics.registry.get_sample_value("tidelog_bytes_out_total", {"topic": topic}) or 0.0


def test_subscribe_from_offset_and_timestamp_then_tail(server):
    with Admin(server.bootstrap) as admin:
        admin.create_topic("tail", 1)
    with Producer(server.bootstrap, linger_ms=0) as producer:
        base = None  # the first record follows the partition's Raft no-op control batch
        for i in range(10):
            offset = producer.send("tail", b"%d" % i, timestamp_ms=1000 * (i + 1)).result(10).offset
            base = offset if base is None else base
    channel = grpc.insecure_channel(server.bootstrap)
    log = pb_grpc.LogServiceStub(channel)
    stream = log.Subscribe(pb.SubscribeRequest(topic="tail", partition=0, offset=base + 4), timeout=30)
    first = next(stream)
    records = [r for r in iter_records(first.records) if r.offset >= first.start_offset]
    assert first.start_offset == base + 4 and records[0].offset == base + 4
    seen = [r.value for r in records]
    while len(seen) < 6:
        msg = next(stream)
        seen += [r.value for r in iter_records(msg.records) if r.offset >= msg.start_offset]
    assert seen == [b"%d" % i for i in range(4, 10)]

    got = []
    reader = threading.Thread(target=lambda: got.append(next(stream)))
    reader.start()
    time.sleep(0.2)
    assert not got  # tailing: waits for new data, no busy answers
    with Producer(server.bootstrap) as producer:
        producer.send("tail", b"live").result(10)
    reader.join(10)
    assert [r.value for r in iter_records(got[0].records)] == [b"live"] and got[0].next_offset == base + 11
    stream.cancel()

    by_time = log.Subscribe(pb.SubscribeRequest(topic="tail", partition=0, timestamp_ms=7500), timeout=30)
    msg = next(by_time)
    assert msg.start_offset == base + 7
    by_time.cancel()
    latest = log.Subscribe(pb.SubscribeRequest(topic="tail", partition=0, position=pb.OFFSET_SPEC_LATEST),
                           timeout=1)
    with pytest.raises(grpc.RpcError) as exc_info:  # nothing new within the deadline
        next(latest)
    assert exc_info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    channel.close()


def test_a_slow_subscriber_holds_the_server_back(server):
    with Admin(server.bootstrap) as admin:
        admin.create_topic("flood", 1, {"max.message.bytes": str(2 * 1024 * 1024)})
    value = bytes(100 * 1024)
    total = 400  # 40 MB
    with Producer(server.bootstrap, batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024) as producer:
        for _ in range(total):
            producer.send("flood", value)
        producer.flush(60)
    # No BDP probing: the reader's flow-control window stays at its initial size, whatever the timing.
    channel = grpc.insecure_channel(server.bootstrap, options=[("grpc.max_receive_message_length", 8 << 20),
                                                               ("grpc.http2.bdp_probe", 0)])
    log = pb_grpc.LogServiceStub(channel)
    before = bytes_out(server, "flood")
    stream = log.Subscribe(pb.SubscribeRequest(topic="flood", partition=0, offset=0, max_bytes=1024 * 1024),
                           timeout=60)
    first = next(stream)
    time.sleep(1.0)  # the reader stalls; HTTP/2 flow control must stop the server
    sent_while_stalled = bytes_out(server, "flood") - before
    assert sent_while_stalled < 8 * 1024 * 1024, sent_while_stalled
    count = 0
    offset = None
    for msg in itertools.chain([first], stream):
        for record in iter_records(msg.records):
            if record.offset >= msg.start_offset:
                if offset is None:
                    offset = record.offset  # the first record follows the partition's Raft no-op
                assert record.offset == offset
                offset += 1
                count += 1
        if count == total:
            break
    assert count == total
    stream.cancel()
    channel.close()
