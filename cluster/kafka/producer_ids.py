"""Producer ids for InitProducerId: unique for the life of the cluster, never reused after a restart.

Ids come in blocks (Kafka's ProducerIdManager): a block is reserved durably before any id of it is handed
out, so a crash can skip ids but never repeat one. On a single node the reservation is a small JSON file in
the data directory (`FileProducerIdBlocks`); in a cluster it becomes the controller's
`allocate_producer_ids` command (cluster.controller.metadata), behind the same `reserve(count)` callable.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Awaitable, Callable

FILE_FORMAT_VERSION = 1
MAX_PRODUCER_ID = (1 << 63) - 1


class ProducerIdAllocator:
    def __init__(self, reserve: Callable[[int], Awaitable[int]], *, block_size: int = 1000) -> None:
        assert block_size > 0
        self._reserve = reserve
        self._block_size = block_size
        self._next = 0
        self._end = 0  # ids in [_next, _end) are reserved and unused
        self._lock = asyncio.Lock()

    async def allocate(self) -> int:
        if self._next >= self._end:
            async with self._lock:
                if self._next >= self._end:
                    first = await self._reserve(self._block_size)
                    assert first >= self._end, "producer id blocks only grow"
                    self._next, self._end = first, first + self._block_size
        pid = self._next
        self._next += 1
        return pid


class ProducerIdFileError(Exception):
    error_name = "KAFKA_STORAGE_ERROR"


class FileProducerIdBlocks:
    """`reserve(count)` over a JSON file {"version": 1, "next_block_start": N}, written atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._next: int | None = None

    def _load(self) -> int:
        try:
            with open(self.path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise ProducerIdFileError(f"cannot read {self.path}: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != FILE_FORMAT_VERSION:
            raise ProducerIdFileError(f"{self.path}: unsupported format {doc!r:.80}")
        value = doc.get("next_block_start")
        if not isinstance(value, int) or value < 0:
            raise ProducerIdFileError(f"{self.path}: bad next_block_start {value!r}")
        return value

    def _store(self, value: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"version": FILE_FORMAT_VERSION, "next_block_start": value}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def reserve_sync(self, count: int) -> int:
        if self._next is None:
            self._next = self._load()
        first = self._next
        if first + count > MAX_PRODUCER_ID:
            raise ProducerIdFileError("producer ids exhausted")
        self._store(first + count)
        self._next = first + count
        return first

    async def reserve(self, count: int) -> int:
        try:
            return await asyncio.to_thread(self.reserve_sync, count)
        except OSError as exc:
            raise ProducerIdFileError(f"cannot write {self.path}: {exc}") from exc
