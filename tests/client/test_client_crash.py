"""Crash safety with a real `tidelog serve` child: kill -9 under acks=all load, restart, nothing acknowledged
is lost or duplicated; a corrupted tail is cut on restart and logged."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import pytest

from storage.record_batch import iter_headers
from tidelog import Admin, Consumer, Producer
from tidelog.errors import TidelogError
from tidelog.testing import ServeProcess

pytestmark = pytest.mark.slow


def read_everything(bootstrap, topic, partitions, timeout=30.0):
    """Every record of every partition, read until each reaches its end offset."""
    with Consumer(bootstrap) as consumer:
        tps = [(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        records = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, "timed out reading back"
            records += consumer.poll(1.0, max_records=100_000)
        return records


def test_kill_9_under_acks_all_loses_no_acknowledged_record(tmp_path):
    with ServeProcess(tmp_path / "data") as server:
        with Admin(server.bootstrap) as admin:
            admin.create_topic("crash", 2)
        acked: list[tuple[int, int, bytes]] = []
        futures = []
        stop = threading.Event()
        producer = Producer(server.bootstrap, acks="all", retries=0, linger_ms=1, batch_size=4096,
                            request_timeout_ms=5000, delivery_timeout_ms=10_000)

        def produce():
            seq = 0
            while not stop.is_set() and seq < 2_000_000:
                futures.append(producer.send("crash", b"%08d" % seq, key=b"k%d" % (seq % 10)))
                seq += 1
                if seq % 500 == 0:
                    time.sleep(0.001)  # let the sender breathe

        thread = threading.Thread(target=produce)
        thread.start()
        deadline = time.monotonic() + 20
        while sum(1 for f in futures[:20_000] if f.done()) < 20_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()  # SIGKILL while the producer is still sending
        stop.set()
        thread.join(30)
        try:
            producer.flush(30)
        except TidelogError:
            pass
        failed = 0
        for future in futures:
            try:
                md = future.result(30)
            except TidelogError:
                failed += 1
                continue
            acked.append((md.partition, md.offset, future._batch.records[future._index].value))
        producer.close(5)
        assert len(acked) >= 20_000, "too few acknowledged before the kill for a meaningful test"

        server.start()  # same data dir, same port
        records = read_everything(server.bootstrap, "crash", 2)
        stored = {(r.partition, r.offset): r.value for r in records}
        counts = collections.Counter(r.value for r in records)
        for partition, offset, value in acked:
            assert stored.get((partition, offset)) == value, (partition, offset)
            assert counts[value] == 1, value
        for p in (0, 1):  # acknowledged records keep send order within a partition
            values = [v for (pp, _, v) in sorted(acked) if pp == p]
            assert values == sorted(values)
        # The restarted broker takes new writes after what survived (and after its new term's Raft no-op).
        with Producer(server.bootstrap) as again:
            md = again.send("crash", b"after", partition=0).result(10)
        assert max(o for (p, o) in stored if p == 0) < md.offset <= max(o for (p, o) in stored if p == 0) + 2


def test_a_flipped_byte_in_the_tail_is_cut_on_restart_and_logged(tmp_path):
    data_dir = tmp_path / "data"
    with ServeProcess(data_dir) as server:
        with Admin(server.bootstrap) as admin:
            admin.create_topic("tail", 1)
            with Producer(server.bootstrap, linger_ms=0) as producer:
                for i in range(5):  # five batches of 100 records
                    for j in range(100):
                        producer.send("tail", b"%d-%d" % (i, j))
                    producer.flush(10)
            topic_id = admin.describe_topic("tail").topic_id
        server.kill()  # no clean shutdown: the restart must check the tail
        segment = Path(data_dir, "replicas", topic_id, "0", "%020d.log" % 0)
        data = bytearray(segment.read_bytes())
        batches = list(iter_headers(bytes(data)))
        first = next(h.base_offset for _, h in batches if not h.is_control)  # after the Raft leader's no-op
        assert batches[-1][1].next_offset == first + 500 and len(batches) >= 5
        last_pos, last = batches[-1]
        data[last_pos + 61 + 10] ^= 0x40  # inside the last batch's CRC-covered records
        segment.write_bytes(bytes(data))

        server.start()
        assert f"recovery cut the log at offset {last.base_offset}" in server.stderr()
        records = read_everything(server.bootstrap, "tail", 1)
        assert [r.offset for r in records] == list(range(first, last.base_offset))
        expected = [b"%d-%d" % (i, j) for i in range(5) for j in range(100)][: last.base_offset - first]
        assert [r.value for r in records] == expected
        with Producer(server.bootstrap) as producer:
            # Right after what survived and the restarted leader's Raft no-op.
            assert producer.send("tail", b"next").result(10).offset == last.base_offset + 1


def test_the_producer_retries_across_a_broker_restart(tmp_path):
    with ServeProcess(tmp_path / "data") as server:
        with Admin(server.bootstrap) as admin:
            admin.create_topic("retry", 1)
        with Producer(server.bootstrap, retry_backoff_ms=100, delivery_timeout_ms=30_000,
                      request_timeout_ms=3000) as producer:
            before = producer.send("retry", b"before").result(10).offset
            server.kill()
            futures = [producer.send("retry", b"during-%d" % i) for i in range(100)]
            time.sleep(1.0)
            assert not any(f.done() for f in futures)  # retrying, not failed
            server.start()
            offsets = [f.result(30).offset for f in futures]
            # In send order, after the restarted leader's Raft no-op.
            assert offsets == list(range(offsets[0], offsets[0] + 100)) and offsets[0] > before
        records = read_everything(server.bootstrap, "retry", 1)
        assert [r.value for r in records] == [b"before"] + [b"during-%d" % i for i in range(100)]
