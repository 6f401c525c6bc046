"""asyncio flavour of the client: the same Producer, Consumer and Admin, awaitable from any event loop.

    async with AsyncProducer(bootstrap) as producer:
        metadata = await producer.send("topic", b"value", key=b"key")

The work runs where the sync clients run it (the caller's thread for batching, the client loop thread for
I/O); blocking steps (a metadata lookup, a full buffer, a long-poll) are moved off the caller's loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Sequence

from tidelog.admin import Admin
from tidelog.consumer import Consumer
from tidelog.producer import FutureRecordMetadata, Producer, RecordMetadata
from tidelog.records import ConsumerRecord


def _awaitable(future: FutureRecordMetadata) -> asyncio.Future[RecordMetadata]:
    loop = asyncio.get_running_loop()
    result: asyncio.Future[RecordMetadata] = loop.create_future()

    def settle(done: FutureRecordMetadata) -> None:
        if result.done():
            return
        try:
            result.set_result(done.result(0))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            result.set_exception(exc)

    def deliver(done: FutureRecordMetadata) -> None:
        loop.call_soon_threadsafe(settle, done)

    future.add_done_callback(deliver)
    return result


class AsyncProducer:
    def __init__(self, bootstrap: str | None = None, **config: Any) -> None:
        self._bootstrap = bootstrap
        self._config = config
        self._producer: Producer | None = None

    async def start(self) -> "AsyncProducer":
        self._producer = await asyncio.to_thread(Producer, self._bootstrap, **self._config)
        return self

    async def send(self, topic: str, value: bytes | str | None = None, **kwargs: Any) -> RecordMetadata:
        """Send and wait for the acknowledgement."""
        return await (await self.send_nowait(topic, value, **kwargs))

    async def send_nowait(self, topic: str, value: bytes | str | None = None, **kwargs: Any) -> asyncio.Future:
        """Enqueue; returns a future of the RecordMetadata (await it later to pipeline many sends)."""
        producer = self._require()
        if topic not in producer._partition_counts:
            await asyncio.to_thread(producer.partitions_for, topic)
        if producer._buffered >= producer.buffer_memory:
            future = await asyncio.to_thread(producer.send, topic, value, **kwargs)
        else:
            future = producer.send(topic, value, **kwargs)
        return _awaitable(future)

    async def flush(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._require().flush, timeout)

    async def close(self) -> None:
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close)
            self._producer = None

    def _require(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("AsyncProducer not started: use `async with` or `await start()`")
        return self._producer

    async def __aenter__(self) -> "AsyncProducer":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()


class AsyncConsumer:
    """Wraps Consumer: `await poll()`, `async for record in consumer`. Seek and assign are immediate."""

    def __init__(self, bootstrap: str | None = None, **config: Any) -> None:
        self._bootstrap = bootstrap
        self._config = config
        self._consumer: Consumer | None = None

    async def start(self) -> "AsyncConsumer":
        self._consumer = await asyncio.to_thread(Consumer, self._bootstrap, **self._config)
        return self

    @property
    def sync(self) -> Consumer:
        """The underlying Consumer, for assign/seek/position (call them between polls)."""
        if self._consumer is None:
            raise RuntimeError("AsyncConsumer not started: use `async with` or `await start()`")
        return self._consumer

    async def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[ConsumerRecord]:
        return await asyncio.to_thread(self.sync.poll, timeout, max_records)

    async def __aiter__(self) -> AsyncIterator[ConsumerRecord]:
        while True:
            for record in await self.poll(self.sync.fetch_max_wait_ms / 1000, 10_000):
                yield record

    async def close(self) -> None:
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)
            self._consumer = None

    async def __aenter__(self) -> "AsyncConsumer":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()


class AsyncAdmin:
    """Every Admin method, awaitable: `await admin.create_topic("t", 3)`."""

    def __init__(self, bootstrap: str | None = None, **config: Any) -> None:
        self._admin = Admin(bootstrap, **config)

    def __getattr__(self, name: str):
        method = getattr(self._admin, name)
        if not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any):
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def __aenter__(self) -> "AsyncAdmin":
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self._admin.close)


__all__: Sequence[str] = ["AsyncAdmin", "AsyncConsumer", "AsyncProducer"]
