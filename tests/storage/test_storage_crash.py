"""kill -9 a process that appends with fsync-before-ack: every acknowledged record survives, once, in order."""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time

from storage_helpers import open_log, records

CHILD = os.path.join(os.path.dirname(__file__), "storage_crash_child.py")


def _run_and_kill(directory: str, tag: str, rng: random.Random) -> list[tuple[int, bytes]]:
    proc = subprocess.Popen([sys.executable, CHILD, directory, tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acked: list[tuple[int, bytes]] = []
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        # Wait (bounded) for the child to be ready, then let it run a random, bounded time.
        start = time.monotonic()
        kill_at = None
        while True:
            now = time.monotonic()
            # The random delay starts with the first acknowledgement, so every round kills a busy writer.
            if kill_at is None and buf.count(b"\n") >= 2:
                kill_at = now + rng.uniform(0.05, 0.6)
            if kill_at is not None and now >= kill_at:
                break
            assert now - start < 20, f"child never got ready: {proc.stderr.read1(4096) if proc.poll() else ''}"
            if sel.select(timeout=0.01):
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                assert chunk, f"child exited early: {proc.stderr.read()}"
                buf += chunk
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        buf += proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
    for line in buf.split(b"\n")[:-1]:  # the last piece may be a line cut by the kill
        if line.startswith(b"ready"):
            continue
        offset, value = line.split(b" ")
        acked.append((int(offset), value))
    return acked


def test_acknowledged_records_survive_kill_9(tmp_path):
    rng = random.Random(20240607)
    directory = str(tmp_path / "p0")
    all_acked: list[tuple[int, bytes]] = []
    for _round in range(2):  # the second round also recovers the first round's unclean tail, then appends
        acked = _run_and_kill(directory, f"r{_round}", rng)
        assert acked
        all_acked += acked
        log = open_log(directory)
        stored = records(log.read(0, 1 << 30))
        by_offset = {r.offset: r.value for r in stored}
        # Every acknowledged record is present at its offset ...
        for offset, value in all_acked:
            assert by_offset.get(offset) == value, (offset, value)
        # ... once, in order: offsets strictly increase and no value appears twice.
        offsets = [r.offset for r in stored]
        assert offsets == sorted(set(offsets)) == list(range(len(offsets)))
        values = [r.value for r in stored]
        assert len(values) == len(set(values))
        # Each producer's records are in its own sequence order.
        per_producer: dict[bytes, list[int]] = {}
        for v in values:
            p, seq = v.split(b"-")
            per_producer.setdefault(p, []).append(int(seq))
        assert all(seqs == sorted(seqs) for seqs in per_producer.values())
        log.close()
