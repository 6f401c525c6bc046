"""Group commit: one fsync covers every append that is waiting for it.

Per log there are at most two shared futures: the flush in flight (with the end offset captured before its
fsync started) and the next flush, which every waiter arriving meanwhile joins. So the bookkeeping is O(1)
per log however many produce requests wait, and fsyncs run back to back: while one runs, the next batch of
waiters gathers. `PartitionLog.flush` runs in an executor thread; the event loop keeps appending.

Flush policy: a log with flush.messages=1 (tidelog's default) is fsynced before acknowledging: the broker
awaits `wait_durable(log, last_offset)`. Other logs are flushed in the background: `notify_append` after
each append (flush.messages) and `poll(now_ms)` on a timer (flush.ms); `run()` drives `poll` from the loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

from storage.errors import StorageError
from storage.log import PartitionLog


@dataclass(slots=True)
class _FlushState:
    log: PartitionLog
    task: asyncio.Task[None] | None = None
    inflight: asyncio.Future[None] | None = None
    inflight_end: int = 0  # log end offset captured before the in-flight fsync started
    pending: asyncio.Future[None] | None = None  # the next flush, shared by everyone who joined it
    last_flush_ms: int | None = None  # for flush.ms (poll's clock)


class GroupCommitter:
    def __init__(self, *, executor: Executor | None = None) -> None:
        self._executor = executor
        self._states: dict[int, _FlushState] = {}
        self.flushes = 0  # completed log.flush() calls, for metrics and tests
        self._closed = False

    def _state(self, log: PartitionLog) -> _FlushState:
        st = self._states.get(id(log))
        if st is None or st.log is not log:
            st = self._states[id(log)] = _FlushState(log)
        return st

    def register(self, log: PartitionLog) -> None:
        """Track `log` for the background policy (flush.ms / flush.messages). wait_durable registers too."""
        self._state(log)

    def forget(self, log: PartitionLog) -> None:
        """Stop tracking a log (partition deleted or moved). Waiters already queued are still served."""
        st = self._states.get(id(log))
        if st is not None and st.log is log:
            del self._states[id(log)]

    async def wait_durable(self, log: PartitionLog, offset: int) -> None:
        """Return once `log.durable_end_offset > offset`. Raises StorageError when the offset was truncated
        away before it became durable, or the flush failed (the log is then offline)."""
        while log.durable_end_offset <= offset:
            if offset >= log.log_end_offset:
                raise StorageError(f"offset {offset} is not in {log.directory} (log end {log.log_end_offset}); "
                                   "it was truncated before it became durable")
            st = self._state(log)
            if st.inflight is not None and st.inflight_end > offset:
                fut = st.inflight
            else:
                fut = self._request(st)
            # shield: one cancelled produce request must not cancel the flush everyone else shares.
            await asyncio.shield(fut)

    async def flush(self, log: PartitionLog) -> int:
        """Flush `log` now (joining a flush about to start) and return its durable end offset."""
        end = log.log_end_offset
        if end > log.durable_end_offset:
            await self.wait_durable(log, end - 1)
        return log.durable_end_offset

    def notify_append(self, log: PartitionLog) -> None:
        """Call after an append to a log flushed in the background: starts a flush once flush.messages
        offsets are waiting. (Logs fsynced before acknowledging are flushed by their waiters.)"""
        config = log.config
        if config.fsync_before_ack:
            return
        if log.log_end_offset - log.durable_end_offset >= config.flush_messages:
            self._request(self._state(log))

    def poll(self, now_ms: int) -> int:
        """flush.ms: start a flush of every tracked log holding data older than its flush.ms. Returns how many
        flushes it started."""
        started = 0
        for st in list(self._states.values()):
            log = st.log
            if log.closed:
                continue
            if log.durable_end_offset >= log.log_end_offset:
                st.last_flush_ms = now_ms
                continue
            if st.last_flush_ms is None:
                st.last_flush_ms = now_ms
            if now_ms - st.last_flush_ms >= log.config.flush_ms:
                st.last_flush_ms = now_ms
                self._request(st)
                started += 1
        return started

    async def run(self, *, interval_ms: int = 100) -> None:
        """Drive `poll` from the event loop's clock until `close()`. Run it as a task."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            self.poll(int(loop.time() * 1000))
            await asyncio.sleep(interval_ms / 1000)

    async def close(self) -> None:
        """Stop `run` and wait for the flushes in flight."""
        self._closed = True
        tasks = [st.task for st in self._states.values() if st.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _request(self, st: _FlushState) -> asyncio.Future[None]:
        """The next flush of this log (created on demand), and the task that runs it."""
        loop = asyncio.get_running_loop()
        if st.pending is None:
            st.pending = loop.create_future()
        if st.task is None:
            st.task = loop.create_task(self._drain(st))
        return st.pending

    async def _drain(self, st: _FlushState) -> None:
        loop = asyncio.get_running_loop()
        try:
            while st.pending is not None:
                fut, st.pending = st.pending, None
                st.inflight = fut
                st.inflight_end = st.log.log_end_offset  # captured before the fsync; flush() re-captures >= it
                try:
                    await loop.run_in_executor(self._executor, st.log.flush)
                except BaseException as exc:  # includes cancellation: every waiter must hear of it
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else StorageError("flush cancelled"))
                        fut.exception()  # retrieved: background flushes may have no waiter to read it
                    if not isinstance(exc, Exception):
                        if st.pending is not None and not st.pending.done():
                            st.pending.set_exception(StorageError("flush cancelled"))
                            st.pending.exception()
                            st.pending = None
                        raise
                else:
                    self.flushes += 1
                    fut.set_result(None)
                finally:
                    st.inflight = None
        finally:
            st.task = None
