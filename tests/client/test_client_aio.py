"""The asyncio flavour of the client, and the pytest plugin's fixture."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.aio import AsyncAdmin, AsyncConsumer, AsyncProducer
from tidelog.errors import UnknownTopicOrPartitionError


def test_async_roundtrip(tidelog_broker):
    bootstrap = tidelog_broker.bootstrap

    async def body():
        async with AsyncAdmin(bootstrap) as admin:
            await admin.create_topic("aio", 2)
            assert (await admin.list_topics()) == {"aio": 2}
            with pytest.raises(UnknownTopicOrPartitionError):
                await admin.describe_topic("missing")
        async with AsyncProducer(bootstrap, linger_ms=1) as producer:
            first = await producer.send("aio", b"v0", key=b"k")
            pending = [await producer.send_nowait("aio", b"v%d" % i, key=b"k") for i in range(1, 50)]
            rest = await asyncio.gather(*pending)
        # Consecutive offsets (the first follows the Raft leader's no-op control batch of a new partition).
        assert [m.offset for m in [first, *rest]] == list(range(first.offset, first.offset + 50))
        assert len({m.partition for m in rest}) == 1
        async with AsyncConsumer(bootstrap, topics=["aio"]) as consumer:
            got = []
            async for record in consumer:
                got.append(record.value)
                if len(got) == 50:
                    break
        assert got == [b"v%d" % i for i in range(50)]

    asyncio.run(asyncio.wait_for(body(), 60))
