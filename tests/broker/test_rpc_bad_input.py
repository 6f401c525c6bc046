"""Bad input over gRPC gets the specific error, leaves the log unchanged, and the broker keeps serving."""

from __future__ import annotations

import urllib.request

import grpc
import pytest

from proto.rpc import tidelog_v1_pb2 as pb
from proto.rpc import tidelog_v1_pb2_grpc as pb_grpc
from storage.record_batch import RecordInput, build_batch
from tidelog.embedded import EmbeddedBroker

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with EmbeddedBroker(tmp_path_factory.mktemp("rpc"), max_request_bytes=1 * MiB, metrics_port=0) as broker:
        yield broker


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.bootstrap, options=[("grpc.max_send_message_length", 64 * MiB)])
    yield pb_grpc.AdminServiceStub(channel), pb_grpc.LogServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def topic(stubs):
    admin, _ = stubs
    admin.CreateTopic(pb.CreateTopicRequest(name="bad-input", partitions=1, configs={"max.message.bytes": "10000"}))
    return "bad-input"


def good_batch(value=b"ok"):
    return build_batch([RecordInput(b"k", value, 1_700_000_000_000)])


def log_end(stubs, topic):
    admin, _ = stubs
    return admin.DescribeTopic(pb.DescribeTopicRequest(name=topic)).topic.partitions[0].log_end_offset


def produce(stubs, topic, records, partition=0, **kwargs):
    _, log = stubs
    return log.Produce(pb.ProduceRequest(partitions=[pb.PartitionRecords(topic=topic, partition=partition,
                                                                          records=records)], **kwargs))


def error_name(code: int) -> str:
    return pb.ErrorCode.Name(code)


def status_reason(exc: grpc.RpcError) -> str | None:
    return dict(exc.trailing_metadata() or ()).get("tidelog-error")


def assert_still_serving(stubs, topic):
    before = log_end(stubs, topic)
    response = produce(stubs, topic, good_batch())
    assert error_name(response.partitions[0].error_code) == "NONE"
    assert response.partitions[0].base_offset == before
    assert log_end(stubs, topic) == before + 1


def corrupt(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF  # inside the CRC-covered records
    return bytes(flipped)


@pytest.mark.parametrize("records,expected", [
    (corrupt(good_batch()), "CORRUPT_MESSAGE"),
    (good_batch(b"x" * 20_000), "MESSAGE_TOO_LARGE"),
    (b"definitely not a record batch, but long enough to hold a header.......", "CORRUPT_MESSAGE"),
    (good_batch()[:40], "CORRUPT_MESSAGE"),
    (b"", "INVALID_RECORD"),
    (good_batch() + corrupt(good_batch()), "CORRUPT_MESSAGE"),  # all or nothing
])
def test_bad_batches_get_the_kafka_error_and_change_nothing(stubs, topic, records, expected):
    before = log_end(stubs, topic)
    response = produce(stubs, topic, records)
    result = response.partitions[0]
    assert error_name(result.error_code) == expected, result.error_message
    assert result.error_message
    assert log_end(stubs, topic) == before
    assert_still_serving(stubs, topic)


def test_unknown_topic_or_partition(stubs, topic):
    admin, log = stubs
    result = produce(stubs, "no-such-topic", good_batch()).partitions[0]
    assert error_name(result.error_code) == "UNKNOWN_TOPIC_OR_PARTITION"
    result = produce(stubs, topic, good_batch(), partition=5).partitions[0]
    assert error_name(result.error_code) == "UNKNOWN_TOPIC_OR_PARTITION"
    with pytest.raises(grpc.RpcError) as exc_info:
        admin.DescribeTopic(pb.DescribeTopicRequest(name="no-such-topic"))
    assert exc_info.value.code() == grpc.StatusCode.NOT_FOUND
    assert status_reason(exc_info.value) == "UNKNOWN_TOPIC_OR_PARTITION"
    fetched = log.Fetch(pb.FetchRequest(partitions=[pb.FetchPartition(topic="no-such-topic", partition=0)]))
    assert error_name(fetched.partitions[0].error_code) == "UNKNOWN_TOPIC_OR_PARTITION"
    assert_still_serving(stubs, topic)


def test_negative_offset_and_fetch_past_the_end(stubs, topic):
    _, log = stubs
    end = log_end(stubs, topic)
    for offset in (-1, -100, end + 1, end + 1000):
        fetched = log.Fetch(pb.FetchRequest(max_wait_ms=2000, partitions=[
            pb.FetchPartition(topic=topic, partition=0, fetch_offset=offset)]))
        result = fetched.partitions[0]
        assert error_name(result.error_code) == "OFFSET_OUT_OF_RANGE", offset
        assert result.records == b"" and result.high_watermark == end
    for request in (pb.SubscribeRequest(topic=topic, partition=0, offset=-5),
                    pb.SubscribeRequest(topic=topic, partition=0, offset=end + 10)):
        with pytest.raises(grpc.RpcError) as exc_info:
            next(iter(log.Subscribe(request, timeout=10)))
        assert exc_info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert status_reason(exc_info.value) == "OFFSET_OUT_OF_RANGE"
    listed = log.ListOffsets(pb.ListOffsetsRequest(partitions=[
        pb.ListOffsetsPartition(topic=topic, partition=0, timestamp_ms=-7)]))
    assert error_name(listed.partitions[0].error_code) == "INVALID_REQUEST"
    assert_still_serving(stubs, topic)


def test_invalid_config_values(stubs, topic):
    admin, _ = stubs
    for configs in ({"retention.ms": "forever"}, {"cleanup.policy": "shred"}, {"no.such.config": "1"},
                    {"segment.bytes": "1"}):
        with pytest.raises(grpc.RpcError) as exc_info:
            admin.CreateTopic(pb.CreateTopicRequest(name="never-created", partitions=1, configs=configs))
        assert exc_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert status_reason(exc_info.value) == "INVALID_CONFIG"
        assert next(iter(configs)) in exc_info.value.details()
        with pytest.raises(grpc.RpcError) as exc_info:
            admin.AlterConfigs(pb.AlterConfigsRequest(topic=topic, set=configs))
        assert status_reason(exc_info.value) == "INVALID_CONFIG"
    names = [t.name for t in admin.ListTopics(pb.ListTopicsRequest()).topics]
    assert "never-created" not in names
    configs = {c.name: c.value for c in admin.DescribeConfigs(pb.DescribeConfigsRequest(topic=topic)).configs}
    assert configs["max.message.bytes"] == "10000" and configs["cleanup.policy"] == "delete"
    with pytest.raises(grpc.RpcError) as exc_info:
        admin.CreateTopic(pb.CreateTopicRequest(name=topic, partitions=1))
    assert exc_info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert status_reason(exc_info.value) == "TOPIC_ALREADY_EXISTS"
    assert_still_serving(stubs, topic)


def test_oversize_requests(stubs, topic):
    before = log_end(stubs, topic)
    big_batches = b"".join(good_batch(bytes(9000)) for _ in range(170))  # ~1.5 MiB: over the broker's limit
    with pytest.raises(grpc.RpcError) as exc_info:
        produce(stubs, topic, big_batches)
    assert exc_info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_reason(exc_info.value) == "RECORD_LIST_TOO_LARGE"
    with pytest.raises(grpc.RpcError) as exc_info:  # over the transport limit: refused before it is read
        produce(stubs, topic, bytes(4 * MiB))
    assert exc_info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert log_end(stubs, topic) == before
    assert_still_serving(stubs, topic)


def test_bad_acks_and_garbage_messages(server, stubs, topic):
    with pytest.raises(grpc.RpcError) as exc_info:
        produce(stubs, topic, good_batch(), acks=3)
    assert exc_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_reason(exc_info.value) == "INVALID_REQUIRED_ACKS"
    channel = grpc.insecure_channel(server.bootstrap)
    raw = channel.unary_unary("/tidelog.v1.LogService/Produce")  # bytes in, bytes out
    with pytest.raises(grpc.RpcError):
        raw(b"\xff\xff\xff\xff not protobuf", timeout=10)
    channel.close()
    assert_still_serving(stubs, topic)


def test_produce_stream_survives_bad_requests(stubs, topic):
    _, log = stubs
    before = log_end(stubs, topic)
    requests = [
        pb.ProduceRequest(correlation_id=1, partitions=[pb.PartitionRecords(topic=topic, records=good_batch())]),
        pb.ProduceRequest(correlation_id=2, partitions=[pb.PartitionRecords(topic=topic,
                                                                             records=corrupt(good_batch()))]),
        pb.ProduceRequest(correlation_id=3, acks=7, partitions=[pb.PartitionRecords(topic=topic,
                                                                                     records=good_batch())]),
        pb.ProduceRequest(correlation_id=4, partitions=[pb.PartitionRecords(topic="nope", records=good_batch())]),
        pb.ProduceRequest(correlation_id=5, partitions=[pb.PartitionRecords(topic=topic, records=good_batch())]),
        pb.ProduceRequest(correlation_id=6, acks=0, partitions=[pb.PartitionRecords(topic=topic,
                                                                                     records=good_batch())]),
    ]
    responses = {r.correlation_id: r for r in log.ProduceStream(iter(requests), timeout=30)}
    assert set(responses) == {1, 2, 3, 4, 5}  # acks=0 gets no answer
    codes = {cid: error_name(r.partitions[0].error_code) for cid, r in responses.items()}
    assert codes == {1: "NONE", 2: "CORRUPT_MESSAGE", 3: "INVALID_REQUIRED_ACKS",
                     4: "UNKNOWN_TOPIC_OR_PARTITION", 5: "NONE"}
    assert responses[5].partitions[0].base_offset == before + 1
    assert log_end(stubs, topic) == before + 3
    assert_still_serving(stubs, topic)


def test_metrics_endpoint(server, stubs, topic):
    assert_still_serving(stubs, topic)
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    assert f'tidelog_records_in_total{{topic="{topic}"}}' in body
    assert 'tidelog_request_latency_seconds_bucket{api="produce"' in body
    assert f'tidelog_log_size_bytes{{partition="0",topic="{topic}"}}' in body
    assert "tidelog_partitions" in body
    assert 'tidelog_request_errors_total{api="produce",error="CORRUPT_MESSAGE"}' in body
