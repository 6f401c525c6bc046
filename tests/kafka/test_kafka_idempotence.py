"""Idempotent producers: a retried batch is answered with its original offset and never stored twice; sequence
gaps and fenced epochs are refused; the state survives a restart (rebuilt from the log's batch headers)."""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter

import pytest

import proto.kafka as k
from kafka_listener_harness import (HOST, ListenerThread, RawClient, batch, create_topic, fetch_body,
                                    fetch_partition, headers_of, produce_body, records_of, wait_until)

A = k.ApiKey
E = k.ErrorCode
_I32 = struct.Struct(">i")


def _init_pid(c: RawClient) -> int:
    r = c.request(A.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 60000,
                                          "producer_id": -1, "producer_epoch": -1})
    assert r["error_code"] == 0
    return r["producer_id"]


def _idem(values: list[bytes], pid: int, epoch: int, seq: int) -> bytes:
    return batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def _send_frame(c: RawClient, frame: bytes) -> dict:
    """Send a captured produce frame byte for byte (a client retry) and read its answer."""
    c.send_raw(frame)
    cid = _I32.unpack_from(frame, 8)[0]
    got, body = k.decode_response(A.PRODUCE, 9, c.recv_frame())
    assert got == cid
    return body["responses"][0]["partition_responses"][0]


def _frame(topic: str, records: bytes, correlation_id: int) -> bytes:
    return k.encode_request(A.PRODUCE, 9, correlation_id, produce_body(topic, 0, records))


def test_duplicates_gaps_epochs_and_restart(tmp_path):
    lt = ListenerThread(tmp_path / "data").start()
    try:
        with RawClient(lt.port) as c:
            create_topic(c, "idem", 1)
            pid = _init_pid(c)
            first = _frame("idem", _idem([b"a", b"b", b"c"], pid, 0, 0), 1001)
            second = _frame("idem", _idem([b"d", b"e"], pid, 0, 3), 1002)
            r = _send_frame(c, first)
            assert (r["error_code"], r["base_offset"]) == (0, 0)
            r = _send_frame(c, first)
            assert (r["error_code"], r["base_offset"]) == (0, 0), "a retry gets success and its original offset"
            assert (_send_frame(c, second)["base_offset"]) == 3
            assert (_send_frame(c, first)["base_offset"]) == 0, "still one of the last five batches"
            gap = _send_frame(c, _frame("idem", _idem([b"x"], pid, 0, 9), 1003))
            assert gap["error_code"] == E.OUT_OF_ORDER_SEQUENCE_NUMBER
            bumped = _frame("idem", _idem([b"f"], pid, 1, 0), 1004)
            assert _send_frame(c, bumped)["base_offset"] == 5
            fenced = _send_frame(c, _frame("idem", _idem([b"y"], pid, 0, 5), 1005))
            assert fenced["error_code"] == E.INVALID_PRODUCER_EPOCH
            other = _init_pid(c)
            assert _send_frame(c, _frame("idem", _idem([b"g"], other, 0, 0), 1006))["base_offset"] == 6
            stored = records_of(fetch_partition(c.request(A.FETCH, 12, fetch_body("idem", 0, 0)))["records"])
            assert [r.value for r in stored] == [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]

        lt.restart()  # producer state is rebuilt from the log's batch headers
        with RawClient(lt.port) as c:
            assert _send_frame(c, bumped)["base_offset"] == 5, "a retry after a restart: original offset"
            assert _send_frame(c, _frame("idem", _idem([b"z"], pid, 0, 6), 1007))["error_code"] == \
                E.INVALID_PRODUCER_EPOCH, "the epoch survives the restart"
            assert _send_frame(c, _frame("idem", _idem([b"z"], pid, 1, 2), 1008))["error_code"] == \
                E.OUT_OF_ORDER_SEQUENCE_NUMBER, "so does the sequence"
            assert _send_frame(c, _frame("idem", _idem([b"h"], pid, 1, 1), 1009))["base_offset"] == 7
            assert _init_pid(c) > other, "producer ids are never handed out twice"
            stored = records_of(fetch_partition(c.request(A.FETCH, 12, fetch_body("idem", 0, 0)))["records"])
            assert [r.value for r in stored] == [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"]
    finally:
        lt.stop()


def test_state_follows_appends_from_another_front_door(tmp_path):
    """Batches appended without this listener (the gRPC door, another process) are scanned before checks."""
    with ListenerThread(tmp_path / "data") as lt, RawClient(lt.port) as c:
        create_topic(c, "idem-side", 1)
        pid = _init_pid(c)
        from cluster.broker.types import ProducePartition

        side = _idem([b"s0", b"s1"], pid, 0, 0)
        lt.call(lambda: lt.broker.produce([ProducePartition("idem-side", 0, side)], acks=1))
        r = _send_frame(c, _frame("idem-side", side, 7))
        assert (r["error_code"], r["base_offset"]) == (0, 0), "recognised as a duplicate of the side append"
        assert _send_frame(c, _frame("idem-side", _idem([b"s2"], pid, 0, 2), 8))["base_offset"] == 2


# ------------------------------------------------------------------- kafka-python retries through a proxy

class DroppingProxy:
    """A TCP proxy that forwards Kafka frames, records every produced batch's (partition, pid, epoch, seq),
    and drops the responses of chosen produce requests by cutting the connection (the client must retry)."""

    def __init__(self, upstream_port: int, drop_produce_responses: set[int]) -> None:
        self.upstream_port = upstream_port
        self.drop = set(drop_produce_responses)  # ordinal numbers of produce requests (0-based)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.batches: list[tuple[int, int, int, int]] = []
        self.dropped = 0
        self._produce_count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> "DroppingProxy":
        self._accept.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
            doomed: dict[int, bool] = {}  # correlation id -> drop its response
            for target, args in ((self._requests, (client, upstream, doomed)),
                                 (self._responses, (upstream, client, doomed))):
                t = threading.Thread(target=target, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def _frames(self, src: socket.socket):
        buf = b""
        src.settimeout(0.2)
        while not self._stop.is_set():
            while len(buf) >= 4 and len(buf) >= 4 + _I32.unpack_from(buf, 0)[0]:
                size = _I32.unpack_from(buf, 0)[0]
                yield buf[:4 + size]
                buf = buf[4 + size:]
            try:
                chunk = src.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk

    def _requests(self, client, upstream, doomed) -> None:
        for frame in self._frames(client):
            api_key, version, cid = struct.unpack_from(">hhi", frame, 4)
            if api_key == A.PRODUCE:
                _, body = k.decode_request(frame)
                with self._lock:
                    for t in body["topic_data"]:
                        for p in t["partition_data"]:
                            pid, epoch, seq = struct.unpack_from(">qhi", p["records"], 43)
                            self.batches.append((p["index"], pid, epoch, seq))
                    doomed[cid] = self._produce_count in self.drop
                    self._produce_count += 1
            try:
                upstream.sendall(frame)
            except OSError:
                break
        _close_both(client, upstream)

    def _responses(self, upstream, client, doomed) -> None:
        for frame in self._frames(upstream):
            cid = _I32.unpack_from(frame, 4)[0]
            if doomed.pop(cid, False):
                with self._lock:
                    self.dropped += 1
                break  # the response is lost with the connection: the producer retries elsewhere
            try:
                client.sendall(frame)
            except OSError:
                break
        _close_both(client, upstream)


def _close_both(*socks) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


@pytest.fixture
def proxied(tmp_path):
    """A listener that advertises a proxy in front of it, so every client connection goes through the proxy."""
    from tidelog._ports import free_port

    lt_port = free_port(HOST)
    lt = ListenerThread(tmp_path / "data")
    lt.port = lt_port
    proxy = DroppingProxy(lt_port, drop_produce_responses={1, 4}).start()
    lt.advertised_port = proxy.port
    lt.start()
    try:
        yield lt, proxy
    finally:
        proxy.close()
        lt.stop()


def test_kafka_python_retries_after_lost_responses_store_each_record_once(proxied):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    lt, proxy = proxied
    with RawClient(lt.port) as admin:
        create_topic(admin, "orders-idem", 3)
    producer = KafkaProducer(bootstrap_servers=f"{HOST}:{proxy.port}", acks="all", enable_idempotence=True,
                             linger_ms=5, request_timeout_ms=5000, retry_backoff_ms=50,
                             key_serializer=str.encode, value_serializer=str.encode)
    sent = {}
    try:
        for round_ in range(6):
            futures = {i: producer.send("orders-idem", key=f"customer-{i % 11}", value=f"order-{i}")
                       for i in range(round_ * 50, round_ * 50 + 50)}
            producer.flush(timeout=30)
            sent.update({i: f.get(timeout=30) for i, f in futures.items()})
    finally:
        producer.close(timeout=10)
    assert proxy.dropped == 2, "two produce responses were lost on the way back"
    repeats = [b for b, n in Counter(proxy.batches).items() if n > 1]
    assert repeats, "the producer re-sent a batch with the same producer id, epoch and sequence"

    consumer = KafkaConsumer(bootstrap_servers=f"{HOST}:{proxy.port}", group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition("orders-idem", p) for p in range(3)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        got = []
        assert wait_until(lambda: got.extend(m for ms in consumer.poll(timeout_ms=200).values() for m in ms)
                          or len(got) >= 300, timeout=30)
    finally:
        consumer.close()
    values = [m.value.decode() for m in got]
    assert len(values) == 300 and len(set(values)) == 300, "every record exactly once"
    stored = {(m.partition, m.offset): m.value.decode() for m in got}
    for i, meta in sent.items():
        assert stored[(meta.partition, meta.offset)] == f"order-{i}", "the answered offset holds that record"


def test_librdkafka_idempotent_producer(kafka_broker):
    """confluent-kafka with enable.idempotence: InitProducerId, sequenced batches, each record stored once."""
    from confluent_kafka import Producer

    with RawClient(kafka_broker.port) as c:
        create_topic(c, "ck-idempotent", 3)
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    delivered, errors = [], []
    for i in range(3000):
        p.produce("ck-idempotent", key=f"k{i % 17}", value=f"v{i}",
                  on_delivery=lambda e, m: errors.append(e) if e else delivered.append((m.partition(), m.offset())))
    assert p.flush(30) == 0 and not errors
    assert len(set(delivered)) == 3000
    with RawClient(kafka_broker.port) as c:
        stored = []
        for partition in range(3):
            data = fetch_partition(c.request(A.FETCH, 12, fetch_body("ck-idempotent", partition, 0,
                                                                     partition_max_bytes=8 << 20)))["records"]
            assert all(h.producer_id >= 0 and h.base_sequence >= 0 for h in headers_of(data))
            stored += [r.value for r in records_of(data)]
    assert sorted(stored) == sorted(f"v{i}".encode() for i in range(3000))
