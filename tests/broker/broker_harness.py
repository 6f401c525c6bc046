"""Helpers for broker-core tests: run a coroutine on uvloop with a time bound, open a broker, make batches."""

from __future__ import annotations

import asyncio
import contextlib

import uvloop

from cluster.broker.broker import Broker
from cluster.broker.config import BrokerConfig
from cluster.broker.types import FetchPartition, ProducePartition
from storage.record_batch import RecordInput, build_batch, iter_records


def run(coro, timeout: float = 60.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return uvloop.run(bounded())


@contextlib.asynccontextmanager
async def open_broker(path, clock=None, **settings):
    kwargs = {"clock": clock} if clock is not None else {}
    broker = await Broker.open(BrokerConfig(data_dir=path, **settings), **kwargs)
    try:
        yield broker
    finally:
        await broker.close()


def batch(values, *, keys=None, timestamp=1_700_000_000_000, step=0, headers=()):
    keys = keys or [None] * len(values)
    return build_batch([RecordInput(k, v, timestamp + i * step, list(headers)) for i, (k, v) in
                        enumerate(zip(keys, values))])


async def produce(broker, topic, partition, data, acks=-1):
    [result] = await broker.produce([ProducePartition(topic, partition, data)], acks=acks)
    assert result.error_name == "NONE", result
    return result


async def fetch_all(broker, topic, partition, offset=0, max_bytes=1 << 20):
    [result] = await broker.fetch([FetchPartition(topic, partition, offset, max_bytes)], max_wait_ms=0)
    assert result.error_name == "NONE", result
    return list(iter_records(bytes(result.records)))
