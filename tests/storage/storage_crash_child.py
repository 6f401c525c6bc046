"""Child process of test_storage_crash: appends with fsync-before-ack (group commit) and prints every
acknowledged record as "<offset> <value>" until it is killed."""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from storage.config import LogConfig
from storage.flusher import GroupCommitter
from storage.log import PartitionLog
from storage.record_batch import RecordInput, build_batch

PRODUCERS = 8
T0 = 1_700_000_000_000


async def produce(log: PartitionLog, committer: GroupCommitter, producer: int, tag: bytes, out) -> None:
    seq = 0
    while True:
        value = b"p%d.%s-%d" % (producer, tag, seq)
        res = log.append(build_batch([RecordInput(b"p%d" % producer, value, T0 + seq)]), leader_epoch=1,
                         now_ms=T0 + seq)
        await committer.wait_durable(log, res.last_offset)
        out.write(b"%d %s\n" % (res.base_offset, value))  # acknowledged: durable
        out.flush()
        seq += 1


async def main(directory: str, tag: bytes) -> None:
    config = LogConfig(segment_bytes=32 * 1024, index_interval_bytes=512, flush_messages=1)
    log = PartitionLog.open(directory, config, now_ms=T0)
    committer = GroupCommitter()
    out = sys.stdout.buffer
    out.write(b"ready %d\n" % log.log_end_offset)
    out.flush()
    await asyncio.gather(*(produce(log, committer, p, tag, out) for p in range(PRODUCERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2].encode()))
