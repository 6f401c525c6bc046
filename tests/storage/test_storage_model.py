"""Random sequences of append / truncate / reopen / crash / retention / DeleteRecords against an in-memory model."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from unittest import mock

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from storage_helpers import T0, batch, open_log, read_all, records

from storage.config import LogConfig
from storage.log import PartitionLog


@dataclass
class ModelBatch:
    base: int
    epoch: int
    values: list[bytes]
    stamps: list[int]

    @property
    def last(self) -> int:
        return self.base + len(self.values) - 1


class LogModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # This test checks logic, not durability (test_storage_crash does): skip the disk's fsync latency.
        self._patches = [mock.patch.object(os, "fdatasync", lambda fd: None),
                         mock.patch.object(os, "fsync", lambda fd: None)]
        for p in self._patches:
            p.start()
        self.dir = tempfile.mkdtemp(prefix="tidelog-model-")
        self.cfg = {"segment_bytes": 400, "index_interval_bytes": 90, "retention_ms": -1}
        self.log: PartitionLog = open_log(self.dir, **self.cfg)
        self.batches: list[ModelBatch] = []
        self.start = 0
        self.end = 0
        self.epoch = 0
        self.clock = T0
        self.counter = 0

    def teardown(self) -> None:
        for seg in self.log._segments:
            seg.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        for p in self._patches:
            p.stop()

    def _live(self) -> list[ModelBatch]:
        return [b for b in self.batches if b.last >= self.start]

    @rule(n=st.integers(1, 6), bump=st.booleans(), spread=st.integers(0, 50))
    def append(self, n, bump, spread):
        if bump:
            self.epoch += 1
        values = []
        for _ in range(n):
            values.append(b"v%d" % self.counter)
            self.counter += 1
        stamps = [self.clock + i * spread for i in range(n)]
        self.clock += n * spread + 1
        res = self.log.append(batch(values, ts=stamps), leader_epoch=self.epoch, now_ms=self.clock)
        assert res.base_offset == self.end
        self.batches.append(ModelBatch(self.end, self.epoch, values, stamps))
        self.end += n

    @precondition(lambda self: len(self._live()) > 0)
    @rule(data=st.data())
    def truncate(self, data):
        live = self._live()
        k = data.draw(st.integers(0, len(live) - 1))
        offset = max(live[k].base, self.start)
        if live[k].base < self.start:
            return  # the log start sits inside this batch: not a batch boundary of the readable log
        self.log.truncate_to(offset)
        self.batches = [b for b in self.batches if b.base < offset]
        self.end = offset
        self.epoch = max([b.epoch for b in self.batches], default=self.epoch)

    @rule(crash=st.booleans())
    def reopen(self, crash):
        if crash:
            for seg in self.log._segments:  # the process dies: no flush, no clean-shutdown marker
                seg.close()
        else:
            self.log.close()
        self.log = open_log(self.dir, now_ms=self.clock, **self.cfg)

    @rule(limit=st.integers(0, 2000))
    def retention_by_size(self, limit):
        bases = self.log.segment_base_offsets
        sizes = [os.path.getsize(os.path.join(self.dir, f"{b:020d}.log")) for b in bases]
        # Expected: segments wholly below the log start, then the oldest while the rest still holds >= limit;
        # never the active one.
        doomed = 0
        while doomed + 1 < len(bases) and bases[doomed + 1] <= self.start:
            doomed += 1
        remaining = sum(sizes[doomed:])
        while doomed + 1 < len(bases) and remaining - sizes[doomed] >= limit:
            remaining -= sizes[doomed]
            doomed += 1
        self.log.update_config(LogConfig(**{**self.cfg, "retention_bytes": limit}))
        assert self.log.apply_retention(self.clock) == doomed
        self.log.update_config(LogConfig(**self.cfg))
        assert self.log.segment_base_offsets == bases[doomed:]
        assert self.log.size_bytes == remaining
        self.start = max(self.start, bases[doomed])

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def delete_records(self, data):
        offset = data.draw(st.integers(self.start, self.end))
        assert self.log.delete_records_before(offset) == offset
        self.start = offset

    @rule()
    def flush(self):
        assert self.log.flush() == self.end

    @invariant()
    def matches_model(self):
        log = self.log
        assert (log.log_start_offset, log.log_end_offset) == (self.start, self.end)
        live = self._live()
        got = [(r.offset, r.value, r.timestamp) for r in records(read_all(log))]
        want = [(b.base + i, v, t) for b in live for i, (v, t) in enumerate(zip(b.values, b.stamps))]
        assert got == want
        bases = [b.base for b in live]
        for b in live[:3] + live[-3:]:
            for offset in {max(b.base, self.start), b.last}:
                assert log.epoch_for_offset(offset) == b.epoch
                first = records(log.read(offset, 1))
                assert first[0].offset == b.base and first[-1].offset == b.last
        if live:
            epoch = live[-1].epoch
            assert log.end_offset_for_epoch(epoch) == (epoch, self.end)
            # Offset for a timestamp: first live record with timestamp >= T.
            for t in (live[0].stamps[0] - 1, live[len(live) // 2].stamps[-1], self.clock + 1):
                expect = next(((b.base + i, s) for b in live for i, s in enumerate(b.stamps)
                               if s >= t and b.base + i >= self.start), None)
                assert log.offset_for_timestamp(t) == expect
        assert bases == sorted(bases)
        assert log.durable_end_offset <= log.log_end_offset


TestLogModel = LogModel.TestCase
TestLogModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                 suppress_health_check=[HealthCheck.too_slow])
