"""Group commit: one fsync covers every waiter; flush() is safe while the loop appends; flush policies."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from storage_helpers import T0, open_log, values_batch

from storage.errors import StorageError
from storage.flusher import GroupCommitter


class _Calls(list):
    delay: dict[str, float]


@pytest.fixture
def fsyncs(monkeypatch):
    """Count os.fdatasync calls (log.flush uses it for data); optionally slow them down."""
    calls = _Calls()
    real = os.fdatasync
    delay = {"s": 0.0}

    def counting(fd):
        calls.append(fd)
        if delay["s"]:
            time.sleep(delay["s"])
        return real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    calls.delay = delay
    return calls


def test_many_concurrent_waiters_few_fsyncs(tmp_path, fsyncs):
    log = open_log(tmp_path)
    committer = GroupCommitter()

    async def producer(i):
        res = log.append(values_batch(0, 1), leader_epoch=0, now_ms=T0)
        await committer.wait_durable(log, res.last_offset)
        assert log.durable_end_offset > res.last_offset
        return res.last_offset

    async def main():
        return await asyncio.gather(*(producer(i) for i in range(300)))

    log.append(values_batch(0, 1), leader_epoch=0, now_ms=T0)
    log.flush()  # the first flush also writes the new epoch's checkpoint (one more fdatasync)
    fsyncs.clear()
    done = asyncio.run(main())
    assert sorted(done) == list(range(1, 301))
    assert len(fsyncs) == 1 and committer.flushes == 1


def test_waiters_arriving_during_a_flush_share_the_next_one(tmp_path, fsyncs):
    log = open_log(tmp_path)
    committer = GroupCommitter()
    fsyncs.delay["s"] = 0.02

    async def producer(i):
        await asyncio.sleep(i * 0.001)  # 150 producers over ~150 ms, each fsync takes 20 ms
        res = log.append(values_batch(0, 1), leader_epoch=0, now_ms=T0)
        await committer.wait_durable(log, res.last_offset)
        return res.last_offset

    async def main():
        return await asyncio.gather(*(producer(i) for i in range(150)))

    log.append(values_batch(0, 1), leader_epoch=0, now_ms=T0)
    log.flush()
    fsyncs.clear()
    assert sorted(asyncio.run(main())) == list(range(1, 151))
    assert 2 <= len(fsyncs) <= 40  # ~150 ms / 20 ms per fsync (more on a loaded machine), not 150


def test_flush_in_a_thread_only_claims_what_was_written_before_the_fsync(tmp_path, fsyncs, monkeypatch):
    log = open_log(tmp_path, segment_bytes=20_000)
    fsyncs.delay["s"] = 0.001
    ends_at_fsync: list[int] = []
    counting = os.fdatasync

    def recording(fd):
        ends_at_fsync.append(log.log_end_offset)
        return counting(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    stop = threading.Event()
    results: list[tuple[int, int, int]] = []

    def flusher():
        while not stop.is_set():
            ends_at_fsync.clear()
            before = log.log_end_offset
            durable = log.flush()
            # No fsync at all: nothing new was written, the durable end did not move past what was there.
            results.append((before, durable, min(ends_at_fsync) if ends_at_fsync else durable))

    t = threading.Thread(target=flusher)
    t.start()
    deadline = time.monotonic() + 0.5
    n = 0
    while time.monotonic() < deadline:
        log.append(values_batch(0, 2), leader_epoch=0, now_ms=T0)  # rolls segments too
        assert log.log_start_offset <= log.durable_end_offset <= log.log_end_offset
        n += 1
        if n % 20 == 0:
            time.sleep(0.0002)  # an event loop idles in epoll now and then; a pure CPU loop starves threads
    assert len(log.segment_base_offsets) > 3
    stop.set()
    t.join(5)
    assert len(results) >= 3
    for before, durable, end_at_first_fsync in results:
        assert before <= durable <= end_at_first_fsync
    assert log.flush() == log.log_end_offset


def test_background_policy_flush_messages_and_flush_ms(tmp_path, fsyncs):
    by_count = open_log(tmp_path / "count", flush_messages=10)
    by_time = open_log(tmp_path / "time", flush_messages=10**9, flush_ms=1000)
    committer = GroupCommitter()

    async def main():
        committer.register(by_time)
        for i in range(9):
            by_count.append(values_batch(0, 1), leader_epoch=0, now_ms=T0)
            committer.notify_append(by_count)
        await asyncio.sleep(0.05)
        assert by_count.durable_end_offset == 0  # 9 < flush.messages
        by_count.append(values_batch(0, 1), leader_epoch=0, now_ms=T0)
        committer.notify_append(by_count)
        await committer.close()
        assert by_count.durable_end_offset == 10

        by_time.append(values_batch(0, 3), leader_epoch=0, now_ms=T0)
        assert committer.poll(T0) == 0  # starts the clock
        assert committer.poll(T0 + 999) == 0
        assert committer.poll(T0 + 1000) == 1
        await committer.close()
        assert by_time.durable_end_offset == 3

    asyncio.run(main())


def test_waiting_for_a_truncated_offset_fails(tmp_path):
    log = open_log(tmp_path)
    committer = GroupCommitter()

    async def main():
        res = log.append(values_batch(0, 3), leader_epoch=0, now_ms=T0)
        log.truncate_to(0)
        with pytest.raises(StorageError):
            await committer.wait_durable(log, res.last_offset)

    asyncio.run(main())


def test_failed_fsync_takes_the_log_offline(tmp_path, monkeypatch):
    log = open_log(tmp_path)
    committer = GroupCommitter()

    def failing(fd):
        raise OSError(5, "Input/output error")

    async def main():
        res = log.append(values_batch(0, 1), leader_epoch=0, now_ms=T0)
        monkeypatch.setattr(os, "fdatasync", failing)
        waiters = [committer.wait_durable(log, res.last_offset) for _ in range(3)]
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(o, StorageError) for o in outcomes)
        with pytest.raises(StorageError) as err:
            log.append(values_batch(0, 1), leader_epoch=0, now_ms=T0)
        assert err.value.error_name == "KAFKA_STORAGE_ERROR"
        assert log.read(0, 100)  # reads still work

    asyncio.run(main())
