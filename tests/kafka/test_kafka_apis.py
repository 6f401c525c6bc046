"""Each served API and version, over a real socket, against an in-process broker + listener."""

from __future__ import annotations

import time
import uuid

import pytest

import proto.kafka as k
from cluster.kafka.handlers import served_versions
from kafka_listener_harness import (RawClient, batch, create_topic, fetch_body, fetch_partition, headers_of,
                                    metadata_body, produce_body, produce_result, records_of)

A = k.ApiKey
E = k.ErrorCode
ZERO = uuid.UUID(int=0)


@pytest.fixture
def client(listener):
    with RawClient(listener.port) as c:
        yield c


def _topic(name: str, client: RawClient, partitions: int = 3, configs=None) -> str:
    create_topic(client, name, partitions, configs)
    return name


# ---------------------------------------------------------------------------------------------- ApiVersions

@pytest.mark.parametrize("version", range(5))
def test_api_versions_advertises_what_the_handlers_serve(client, version):
    body = {"client_software_name": "tidelog-test", "client_software_version": "1.0"}
    response = client.request(A.API_VERSIONS, version, body)
    assert response["error_code"] == 0
    advertised = {e["api_key"]: (e["min_version"], e["max_version"]) for e in response["api_keys"]}
    assert advertised == served_versions()
    # What the four clients need (README §2.2): Produce ∋ 0, 3, 7 (kcat compression and MsgVer2), Fetch ∋ 4,
    # 10, FindCoordinator ∋ 0, InitProducerId, OffsetForLeaderEpoch ∋ 2, ListOffsets 10 (kafka-python 4.0).
    for key, needed in ((A.PRODUCE, (0, 3, 7, 9, 10)), (A.FETCH, (4, 10, 11, 12, 16)), (A.FIND_COORDINATOR, (0,)),
                        (A.INIT_PRODUCER_ID, (0, 4)), (A.OFFSET_FOR_LEADER_EPOCH, (2,)),
                        (A.LIST_OFFSETS, (1, 2, 3, 7, 10)), (A.METADATA, (4, 5, 12))):
        lo, hi = advertised[key]
        assert all(lo <= v <= hi for v in needed), (key, advertised[key])
    assert A.END_TXN not in advertised, "no transaction coordinator yet: do not advertise transactions"


@pytest.mark.parametrize("name,version", [("", "1"), ("-bad", "1"), ("ok", "bad version!"), ("ok.", "1")])
def test_api_versions_v3_checks_the_client_software_name(client, name, version):
    response = client.request(A.API_VERSIONS, 3, {"client_software_name": name, "client_software_version": version})
    assert response["error_code"] == E.INVALID_REQUEST and response["api_keys"] == []
    assert client.request(A.API_VERSIONS, 0, {})["error_code"] == 0, "the connection stays usable"


# ------------------------------------------------------------------------------------------------ Metadata

@pytest.mark.parametrize("version", range(13))
def test_metadata_every_version(listener, client, version):
    name = _topic(f"md-{version}", client, partitions=2)
    response = client.request(A.METADATA, version, metadata_body([name]))
    [broker] = response["brokers"]
    assert (broker["node_id"], broker["host"], broker["port"]) == (0, "127.0.0.1", listener.port)
    if version >= 1:
        assert response["controller_id"] == 0
    if version >= 2:
        assert response["cluster_id"] == listener.broker.cluster_id
    [topic] = response["topics"]
    assert topic["error_code"] == 0 and topic["name"] == name
    if version >= 10:
        assert topic["topic_id"] == uuid.UUID(listener.broker.describe_topic(name).topic_id) != ZERO
    parts = sorted(topic["partitions"], key=lambda p: p["partition_index"])
    assert [p["partition_index"] for p in parts] == [0, 1]
    for p in parts:
        assert (p["error_code"], p["leader_id"], p["replica_nodes"], p["isr_nodes"]) == (0, 0, [0], [0])
        if version >= 7:
            assert p["leader_epoch"] == 0


def test_metadata_all_topics_null_and_empty_list(client):
    name = _topic("md-all", client)
    every = client.request(A.METADATA, 12, metadata_body(None))
    assert name in {t["name"] for t in every["topics"]}
    assert client.request(A.METADATA, 12, metadata_body([]))["topics"] == [], "v1+: an empty list means none"
    assert name in {t["name"] for t in client.request(A.METADATA, 0, {"topics": []})["topics"]}, \
        "v0: an empty list means all"


def test_metadata_by_topic_id(listener, client):
    name = _topic("md-by-id", client)
    topic_id = uuid.UUID(listener.broker.describe_topic(name).topic_id)
    response = client.request(A.METADATA, 12, {"topics": [{"topic_id": topic_id, "name": None},
                                                         {"topic_id": uuid.uuid4(), "name": None}],
                                              "allow_auto_topic_creation": False})
    found, missing = response["topics"]
    assert found["name"] == name and found["error_code"] == 0
    assert missing["error_code"] == E.UNKNOWN_TOPIC_ID


def test_metadata_auto_creates_topics_with_num_partitions(listener, client):
    response = client.request(A.METADATA, 9, metadata_body(["auto-made"]))
    [topic] = response["topics"]
    assert topic["error_code"] == 0 and len(topic["partitions"]) == 3, "num.partitions default of the broker"
    assert listener.call(lambda: listener.broker.describe_topic("auto-made").partition_count) == 3
    v0 = client.request(A.METADATA, 0, {"topics": [{"name": "auto-made-v0"}]})
    assert v0["topics"][0]["error_code"] == 0, "v0-3 always ask for auto creation"


def test_metadata_without_auto_creation_and_invalid_names(listener, client):
    response = client.request(A.METADATA, 12, metadata_body(["never-made", "bad/name"], auto_create=False))
    assert [t["error_code"] for t in response["topics"]] == [E.UNKNOWN_TOPIC_OR_PARTITION,
                                                            E.INVALID_TOPIC_EXCEPTION]
    response = client.request(A.METADATA, 12, metadata_body(["bad/name"]))
    assert response["topics"][0]["error_code"] == E.INVALID_TOPIC_EXCEPTION
    names = {t.name for t in listener.call(listener.broker.list_topics)}
    assert "never-made" not in names


# ------------------------------------------------------------------------------------------------- Produce

def test_produce_v3_to_v11_appends_and_answers_offsets(client):
    name = _topic("pr-versions", client, partitions=1)
    expected = 0
    for version in range(3, 12):
        result = produce_result(client.request(A.PRODUCE, version, produce_body(name, 0, batch([b"a", b"b"]))))
        assert (result["error_code"], result["base_offset"]) == (0, expected), (version, result)
        if version >= 5:
            assert result["log_start_offset"] == 0
        expected += 2
    data = fetch_partition(client.request(A.FETCH, 12, fetch_body(name, 0, 0)))["records"]
    assert len(records_of(data)) == expected


@pytest.mark.parametrize("version", [0, 1, 2])
def test_produce_v0_to_v2_is_advertised_but_answered_unsupported_version(client, version):
    name = _topic(f"pr-old-{version}", client, partitions=1)
    response = client.request(A.PRODUCE, version, produce_body(name, 0, batch([b"x"])))
    assert produce_result(response)["error_code"] == E.UNSUPPORTED_VERSION
    assert fetch_partition(client.request(A.FETCH, 12, fetch_body(name, 0, 0)))["high_watermark"] == 0


@pytest.mark.parametrize("magic", [0, 1])
def test_produce_of_old_message_formats_is_refused(client, magic):
    name = _topic(f"pr-magic-{magic}", client, partitions=1)
    # A magic 0/1 message set: offset, size, crc, magic, attributes, (timestamp), key, value.
    body = (b"\x00" * 8 + (14 + 8 * magic).to_bytes(4, "big") + b"\x00\x00\x00\x00" + bytes([magic, 0])
            + b"\x00" * (8 * magic) + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x00")
    result = produce_result(client.request(A.PRODUCE, 7, produce_body(name, 0, body)))
    assert result["error_code"] == E.UNSUPPORTED_FOR_MESSAGE_FORMAT


def test_produce_refuses_corrupt_and_multi_batch_record_sets(client):
    name = _topic("pr-bad", client, partitions=1)
    good = batch([b"x"])
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    cases = [(bytes(corrupt), E.CORRUPT_MESSAGE), (good + good, E.INVALID_RECORD), (good[:40], E.CORRUPT_MESSAGE),
             (b"", E.INVALID_RECORD), (None, E.INVALID_RECORD)]
    for records, code in cases:
        result = produce_result(client.request(A.PRODUCE, 9, produce_body(name, 0, records)))
        assert result["error_code"] == code, (records and records[:20], result)
        assert result["error_message"], "v8+ explains the error"
    assert fetch_partition(client.request(A.FETCH, 12, fetch_body(name, 0, 0)))["high_watermark"] == 0


def test_produce_unknown_topic_partition_and_bad_acks(client):
    name = _topic("pr-unknown", client, partitions=1)
    assert produce_result(client.request(A.PRODUCE, 9, produce_body("no-such-topic", 0, batch([b"x"]))))[
        "error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    assert produce_result(client.request(A.PRODUCE, 9, produce_body(name, 5, batch([b"x"]))))[
        "error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    assert produce_result(client.request(A.PRODUCE, 9, produce_body(name, 0, batch([b"x"]), acks=2)))[
        "error_code"] == E.INVALID_REQUIRED_ACKS


def test_produce_acks_0_gets_no_response_and_acks_1_and_all_do(client):
    name = _topic("pr-acks", client, partitions=1)
    client.send(A.PRODUCE, 9, produce_body(name, 0, batch([b"fire", b"forget"]), acks=0))
    client._pending.popitem()  # no response will come for it
    cid = client.send(A.API_VERSIONS, 0, {})
    got, _ = client.recv()
    assert got == cid, "the next response on the connection belongs to the next request"
    for acks in (1, -1):
        assert produce_result(client.request(A.PRODUCE, 9, produce_body(name, 0, batch([b"x"]), acks=acks)))[
            "base_offset"] in (2, 3)
    data = fetch_partition(client.request(A.FETCH, 12, fetch_body(name, 0, 0)))["records"]
    assert [r.value for r in records_of(data)] == [b"fire", b"forget", b"x", b"x"]


def test_produce_acks_0_failure_closes_the_connection(client):
    name = _topic("pr-acks0-bad", client, partitions=1)
    client.send(A.PRODUCE, 9, produce_body(name, 0, b"\x00" * 70, acks=0))
    assert client.is_closed(), "Kafka closes the connection to tell an acks=0 producer that a write failed"


def test_produce_with_transactional_id_is_refused(client):
    name = _topic("pr-txn", client, partitions=1)
    body = produce_body(name, 0, batch([b"x"]))
    body["transactional_id"] = "txn-1"
    result = produce_result(client.request(A.PRODUCE, 9, body))
    assert result["error_code"] == E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


# --------------------------------------------------------------------------------------------------- Fetch

@pytest.fixture(scope="module")
def fetch_topic(listener):
    """One partition holding three batches: offsets 0-2, 3-4, 5."""
    with RawClient(listener.port) as c:
        create_topic(c, "fetch-data", 1)
        for values in ([b"a", b"b", b"c"], [b"d", b"e"], [b"f"]):
            assert produce_result(c.request(A.PRODUCE, 9, produce_body("fetch-data", 0, batch(values))))[
                "error_code"] == 0
    return "fetch-data", uuid.UUID(listener.call(lambda: listener.broker.describe_topic("fetch-data").topic_id))


@pytest.mark.parametrize("version", range(18))
def test_fetch_every_version_returns_the_whole_batch_holding_the_offset(client, fetch_topic, version):
    name, topic_id = fetch_topic
    response = client.request(A.FETCH, version, fetch_body(name, 0, 4, version=version, topic_id=topic_id))
    part = fetch_partition(response)
    assert part["error_code"] == 0 and part["high_watermark"] == 6
    assert [h.base_offset for h in headers_of(part["records"])] == [3, 5], "from the batch holding offset 4"
    assert [r.offset for r in records_of(part["records"])] == [3, 4, 5]
    if version >= 4:
        assert part["last_stable_offset"] == 6
    if version >= 5:
        assert part["log_start_offset"] == 0
    if version >= 7:
        assert response["session_id"] == 0, "fetch sessions are declined"
    if version >= 13:
        assert response["responses"][0]["topic_id"] == topic_id


def test_fetch_errors(client, fetch_topic):
    name, _ = fetch_topic
    assert fetch_partition(client.request(A.FETCH, 12, fetch_body(name, 0, 99)))["error_code"] == \
        E.OFFSET_OUT_OF_RANGE
    assert fetch_partition(client.request(A.FETCH, 12, fetch_body("nope", 0, 0)))["error_code"] == \
        E.UNKNOWN_TOPIC_OR_PARTITION
    assert fetch_partition(client.request(A.FETCH, 13, fetch_body(name, 0, 0, version=13, topic_id=uuid.uuid4())))[
        "error_code"] == E.UNKNOWN_TOPIC_ID
    at_end = fetch_partition(client.request(A.FETCH, 12, fetch_body(name, 0, 6)))
    assert at_end["error_code"] == 0 and not at_end["records"], "at the high watermark: nothing, no error"


def test_fetch_sessions_are_declined(client, fetch_topic):
    name, _ = fetch_topic
    new = client.request(A.FETCH, 12, fetch_body(name, 0, 0, session_id=0, session_epoch=0))
    assert new["session_id"] == 0 and new["error_code"] == 0 and fetch_partition(new)["records"]
    incremental = client.request(A.FETCH, 12, fetch_body(name, 0, 0, session_id=77, session_epoch=3))
    assert incremental["error_code"] == E.FETCH_SESSION_ID_NOT_FOUND


def test_fetch_checks_the_leader_epoch(client, fetch_topic):
    name, _ = fetch_topic
    body = fetch_body(name, 0, 0)
    body["topics"][0]["partitions"][0]["current_leader_epoch"] = 3
    assert fetch_partition(client.request(A.FETCH, 12, body))["error_code"] == E.UNKNOWN_LEADER_EPOCH
    body["topics"][0]["partitions"][0]["current_leader_epoch"] = 0
    assert fetch_partition(client.request(A.FETCH, 12, body))["error_code"] == 0


@pytest.mark.parametrize("version", [0, 11, 15])
def test_fetch_from_a_client_posing_as_replica_is_refused(client, fetch_topic, version):
    name, topic_id = fetch_topic
    response = client.request(A.FETCH, version, fetch_body(name, 0, 0, version=version, replica_id=1,
                                                             topic_id=topic_id))
    part = fetch_partition(response)
    assert part["error_code"] == E.CLUSTER_AUTHORIZATION_FAILED and not part["records"]
    assert client.request(A.API_VERSIONS, 0, {})["error_code"] == 0, "the connection stays open"


def test_fetch_long_poll_waits_for_data_and_for_max_wait(listener, client):
    name = _topic("fetch-poll", client, partitions=1)
    started = time.monotonic()
    empty = fetch_partition(client.request(A.FETCH, 12, fetch_body(name, 0, 0, max_wait_ms=300)))
    waited = time.monotonic() - started
    assert empty["error_code"] == 0 and not empty["records"] and 0.25 <= waited < 3, waited
    cid = client.send(A.FETCH, 12, fetch_body(name, 0, 0, max_wait_ms=5000))
    time.sleep(0.2)
    started = time.monotonic()
    with RawClient(listener.port) as producer:
        producer.request(A.PRODUCE, 9, produce_body(name, 0, batch([b"wake"])))
    got, response = client.recv()
    assert got == cid and time.monotonic() - started < 2.5, "answered when data arrived, not at max_wait"
    assert [r.value for r in records_of(fetch_partition(response)["records"])] == [b"wake"]


# --------------------------------------------------------------------------------------------- ListOffsets

@pytest.fixture(scope="module")
def timed_topic(listener):
    """Offsets 0-4 with timestamps 1000, 2000, ... 5000 (one batch of two, then three of one)."""
    with RawClient(listener.port) as c:
        create_topic(c, "timed", 1)
        for values, ts in (([b"0", b"1"], 1000), ([b"2"], 3000), ([b"3"], 4000), ([b"4"], 5000)):
            c.request(A.PRODUCE, 9, produce_body("timed", 0, batch(values, timestamp=ts, step=1000)))
    return "timed"


def _list(client, version, topic, ts, max_num=1):
    body = {"replica_id": -1, "isolation_level": 0, "timeout_ms": 1000, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "timestamp": ts, "max_num_offsets": max_num,
                                        "current_leader_epoch": -1}]}]}
    return client.request(A.LIST_OFFSETS, version, body)["topics"][0]["partitions"][0]


@pytest.mark.parametrize("version", range(1, 11))
def test_list_offsets_latest_earliest_and_by_timestamp(client, timed_topic, version):
    assert (_list(client, version, timed_topic, -1)["offset"], _list(client, version, timed_topic, -2)["offset"]) \
        == (5, 0)
    at = _list(client, version, timed_topic, 2500)
    assert (at["offset"], at["timestamp"]) == (2, 3000), "the first record at or after the timestamp"
    assert _list(client, version, timed_topic, 2000)["offset"] == 1
    assert _list(client, version, timed_topic, 9999)["offset"] == -1
    if version >= 4:
        assert _list(client, version, timed_topic, -1)["leader_epoch"] == 0
    if version >= 7:
        top = _list(client, version, timed_topic, -3)
        assert (top["offset"], top["timestamp"]) == (4, 5000), "KIP-734 max timestamp"
    else:
        assert _list(client, version, timed_topic, -3)["error_code"] == E.UNSUPPORTED_VERSION


def test_list_offsets_v0_old_style_offsets(client, timed_topic):
    assert _list(client, 0, timed_topic, -1)["old_style_offsets"] == [5]
    assert _list(client, 0, timed_topic, -2)["old_style_offsets"] == [0]
    assert _list(client, 0, timed_topic, 3500)["old_style_offsets"] == [3]
    assert _list(client, 0, timed_topic, -1, max_num=0)["old_style_offsets"] == []


def test_list_offsets_errors(client, timed_topic):
    assert _list(client, 5, "nope", -1)["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    assert _list(client, 5, timed_topic, -7)["error_code"] == E.INVALID_REQUEST


# ------------------------------------------------------------------------------------ OffsetForLeaderEpoch

@pytest.mark.parametrize("version", range(5))
def test_offset_for_leader_epoch(client, timed_topic, version):
    def ask(epoch, current=-1):
        body = {"replica_id": -1, "topics": [{"topic": timed_topic, "partitions": [
            {"partition": 0, "current_leader_epoch": current, "leader_epoch": epoch}]}]}
        return client.request(A.OFFSET_FOR_LEADER_EPOCH, version, body)["topics"][0]["partitions"][0]

    latest = ask(0)
    assert (latest["error_code"], latest["end_offset"]) == (0, 5)
    if version >= 1:
        assert latest["leader_epoch"] == 0
    assert ask(9)["end_offset"] == -1, "an epoch newer than any known has no end offset"
    if version >= 2:
        assert ask(0, current=4)["error_code"] == E.UNKNOWN_LEADER_EPOCH


# ------------------------------------------------------------------------------------------ InitProducerId

@pytest.mark.parametrize("version", range(6))
def test_init_producer_id_hands_out_fresh_ids(client, version):
    body = {"transactional_id": None, "transaction_timeout_ms": 60000, "producer_id": -1, "producer_epoch": -1}
    first = client.request(A.INIT_PRODUCER_ID, version, body)
    second = client.request(A.INIT_PRODUCER_ID, version, body)
    assert first["error_code"] == second["error_code"] == 0
    assert second["producer_id"] > first["producer_id"] >= 0 and first["producer_epoch"] == 0
    body["transactional_id"] = "txn"
    assert client.request(A.INIT_PRODUCER_ID, version, body)["error_code"] == \
        E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


# -------------------------------------------------------------------------------------------- topic admin

@pytest.mark.parametrize("version", range(8))
def test_create_topics(listener, client, version):
    name = f"ct-{version}"
    topics = [{"name": name, "num_partitions": 2 if version < 4 else -1, "replication_factor": 1, "assignments": [],
               "configs": [{"name": "retention.ms", "value": "60000"}]},
              {"name": f"{name}-rf3", "num_partitions": 1, "replication_factor": 3, "assignments": [], "configs": []},
              {"name": f"{name}-badcfg", "num_partitions": 1, "replication_factor": 1, "assignments": [],
               "configs": [{"name": "no.such.config", "value": "1"}]}]
    response = client.request(A.CREATE_TOPICS, version, {"topics": topics, "timeout_ms": 5000,
                                                         "validate_only": False})
    ok, rf3, badcfg = response["topics"]
    assert ok["error_code"] == 0
    assert rf3["error_code"] == E.INVALID_REPLICATION_FACTOR
    assert badcfg["error_code"] == E.INVALID_CONFIG
    info = listener.call(lambda: listener.broker.describe_topic(name))
    assert info.partition_count == (2 if version < 4 else 3), "num_partitions -1: the broker default"
    assert {c.name: c.value for c in info.configs}["retention.ms"] == "60000"
    if version >= 5:
        assert ok["num_partitions"] == info.partition_count and ok["replication_factor"] == 1
        assert {c["name"]: c["value"] for c in ok["configs"]}["retention.ms"] == "60000"
    if version >= 7:
        assert ok["topic_id"] == uuid.UUID(info.topic_id)
    again = client.request(A.CREATE_TOPICS, version, {"topics": topics[:1], "timeout_ms": 5000})
    assert again["topics"][0]["error_code"] == E.TOPIC_ALREADY_EXISTS


def test_create_topics_validate_only_and_duplicates(listener, client):
    body = {"topics": [{"name": "ct-dry", "num_partitions": 4, "replication_factor": 1, "assignments": [],
                        "configs": []}], "timeout_ms": 5000, "validate_only": True}
    assert client.request(A.CREATE_TOPICS, 7, body)["topics"][0]["error_code"] == 0
    assert "ct-dry" not in {t.name for t in listener.call(listener.broker.list_topics)}
    body["topics"] *= 2
    body["validate_only"] = False
    assert [t["error_code"] for t in client.request(A.CREATE_TOPICS, 7, body)["topics"]] == [E.INVALID_REQUEST] * 2


@pytest.mark.parametrize("version", range(7))
def test_delete_topics(listener, client, version):
    name = _topic(f"dt-{version}", client)
    if version >= 6:
        topic_id = uuid.UUID(listener.call(lambda: listener.broker.describe_topic(name).topic_id))
        body = {"topics": [{"name": None, "topic_id": topic_id}, {"name": "dt-missing", "topic_id": ZERO},
                           {"name": None, "topic_id": uuid.uuid4()}], "timeout_ms": 5000}
    else:
        body = {"topic_names": [name, "dt-missing"], "timeout_ms": 5000}
    results = client.request(A.DELETE_TOPICS, version, body)["responses"]
    assert results[0]["error_code"] == 0 and results[0]["name"] == name
    assert results[1]["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    if version >= 6:
        assert results[2]["error_code"] == E.UNKNOWN_TOPIC_ID
    assert name not in {t.name for t in listener.call(listener.broker.list_topics)}


@pytest.mark.parametrize("version", range(4))
def test_create_partitions_answers_a_clear_error(client, version):
    name = _topic(f"cp-{version}", client, partitions=2)
    body = {"topics": [{"name": name, "count": 4, "assignments": None}, {"name": name + "-x", "count": 4,
                                                                         "assignments": None}],
            "timeout_ms": 5000, "validate_only": False}
    grow, missing = client.request(A.CREATE_PARTITIONS, version, body)["results"]
    assert grow["error_code"] == E.INVALID_REQUEST and "cannot add partitions" in grow["error_message"]
    assert missing["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    body["topics"] = [{"name": name, "count": 1, "assignments": None}]
    assert client.request(A.CREATE_PARTITIONS, version, body)["results"][0]["error_code"] == E.INVALID_PARTITIONS


@pytest.mark.parametrize("version", range(5))
def test_describe_configs(client, version):
    name = _topic(f"dc-{version}", client, configs={"cleanup.policy": "compact"})
    body = {"resources": [{"resource_type": 2, "resource_name": name, "configuration_keys": None},
                          {"resource_type": 2, "resource_name": name, "configuration_keys": ["retention.ms"]},
                          {"resource_type": 4, "resource_name": "0", "configuration_keys": None},
                          {"resource_type": 2, "resource_name": "dc-none", "configuration_keys": None},
                          {"resource_type": 8, "resource_name": "0", "configuration_keys": None}],
            "include_synonyms": True, "include_documentation": False}
    full, filtered, broker, missing, logger = client.request(A.DESCRIBE_CONFIGS, version, body)["results"]
    configs = {c["name"]: c for c in full["configs"]}
    assert configs["cleanup.policy"]["value"] == "compact"
    if version >= 1:
        assert configs["cleanup.policy"]["config_source"] == 1 and configs["retention.ms"]["config_source"] == 5
    else:
        assert configs["retention.ms"]["is_default"] and not configs["cleanup.policy"]["is_default"]
    assert [c["name"] for c in filtered["configs"]] == ["retention.ms"]
    assert {c["name"]: c["value"] for c in broker["configs"]}["num.partitions"] == "3"
    assert missing["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    assert logger["error_code"] == E.INVALID_REQUEST


@pytest.mark.parametrize("version", range(2))
def test_describe_cluster(listener, client, version):
    response = client.request(A.DESCRIBE_CLUSTER, version, {"include_cluster_authorized_operations": False,
                                                            "endpoint_type": 1})
    assert response["error_code"] == 0 and response["controller_id"] == 0
    assert response["cluster_id"] == listener.broker.cluster_id
    assert [(b["broker_id"], b["port"]) for b in response["brokers"]] == [(0, listener.port)]


@pytest.mark.parametrize("version", range(3))
def test_delete_records(client, version):
    name = _topic(f"dr-{version}", client, partitions=1)
    for _ in range(3):
        client.request(A.PRODUCE, 9, produce_body(name, 0, batch([b"x", b"y"])))
    body = {"topics": [{"name": name, "partitions": [{"partition_index": 0, "offset": 3},
                                                     {"partition_index": 7, "offset": 0}]}], "timeout_ms": 5000}
    ok, bad = client.request(A.DELETE_RECORDS, version, body)["topics"][0]["partitions"]
    assert (ok["error_code"], ok["low_watermark"]) == (0, 3)
    assert bad["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    assert _list(client, 1, name, -2)["offset"] == 3
    assert fetch_partition(client.request(A.FETCH, 12, fetch_body(name, 0, 1)))["error_code"] == \
        E.OFFSET_OUT_OF_RANGE
    body["topics"][0]["partitions"] = [{"partition_index": 0, "offset": 99}]
    assert client.request(A.DELETE_RECORDS, version, body)["topics"][0]["partitions"][0]["error_code"] == \
        E.OFFSET_OUT_OF_RANGE
    body["topics"][0]["partitions"] = [{"partition_index": 0, "offset": -1}]
    assert client.request(A.DELETE_RECORDS, version, body)["topics"][0]["partitions"][0]["low_watermark"] == 6


def test_create_topics_is_a_barrier_for_pipelined_requests(client):
    """A Metadata pipelined behind a CreateTopics on one connection sees the new topic."""
    create = client.send(A.CREATE_TOPICS, 7, {"topics": [{"name": "barrier-topic", "num_partitions": 2,
                                                          "replication_factor": 1, "assignments": [],
                                                          "configs": []}], "timeout_ms": 5000})
    meta = client.send(A.METADATA, 12, metadata_body(["barrier-topic"], auto_create=False))
    first, created = client.recv()
    second, described = client.recv()
    assert (first, second) == (create, meta)
    assert created["topics"][0]["error_code"] == 0
    assert described["topics"][0]["error_code"] == 0 and len(described["topics"][0]["partitions"]) == 2


# ----------------------------------------------------------------------------------- groups, SASL (not yet)

GROUP_CASES = [
    (A.FIND_COORDINATOR, {"key": "g", "key_type": 0, "coordinator_keys": ["g"]}),
    (A.JOIN_GROUP, {"group_id": "g", "session_timeout_ms": 10000, "member_id": "", "protocol_type": "consumer",
                    "protocols": [{"name": "range", "metadata": b""}]}),
    (A.SYNC_GROUP, {"group_id": "g", "generation_id": 1, "member_id": "m", "assignments": []}),
    (A.HEARTBEAT, {"group_id": "g", "generation_id": 1, "member_id": "m"}),
    (A.LEAVE_GROUP, {"group_id": "g", "member_id": "m", "members": [{"member_id": "m"}]}),
    (A.OFFSET_COMMIT, {"group_id": "g", "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "committed_offset": 5, "committed_metadata": ""}]}]}),
    (A.OFFSET_FETCH, {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [0]}],
                      "groups": [{"group_id": "g", "topics": None}]}),
    (A.LIST_GROUPS, {}),
    (A.DESCRIBE_GROUPS, {"groups": ["g"]}),
    (A.OFFSET_DELETE, {"group_id": "g", "topics": []}),
]


def _group_errors(api, version, response) -> list[int]:
    if api == A.FIND_COORDINATOR:
        return [c["error_code"] for c in response["coordinators"]] if version >= 4 else [response["error_code"]]
    if api == A.OFFSET_COMMIT:
        return [p["error_code"] for t in response["topics"] for p in t["partitions"]]
    if api == A.OFFSET_FETCH:
        if version >= 8:
            return [g["error_code"] for g in response["groups"]]
        if version < 2:
            return [p["error_code"] for t in response["topics"] for p in t["partitions"]]
    if api == A.DESCRIBE_GROUPS:
        return [g["error_code"] for g in response["groups"]]
    return [response["error_code"]]


@pytest.mark.parametrize("api,body", GROUP_CASES, ids=[a.name for a, _ in GROUP_CASES])
def test_group_apis_answer_coordinator_not_available(client, api, body):
    lo, hi = served_versions()[api]
    for version in range(lo, hi + 1):
        response = client.request(api, version, body)
        assert _group_errors(api, version, response) == [E.COORDINATOR_NOT_AVAILABLE], (api, version, response)


def test_sasl_answers_a_clean_error(client):
    for version in range(2):
        assert client.request(A.SASL_HANDSHAKE, version, {"mechanism": "PLAIN"})["error_code"] == \
            E.UNSUPPORTED_SASL_MECHANISM
    for version in range(3):
        assert client.request(A.SASL_AUTHENTICATE, version, {"auth_bytes": b"x"})["error_code"] == \
            E.ILLEGAL_SASL_STATE
