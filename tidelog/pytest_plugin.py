"""pytest plugin (entry point `tidelog`): fixtures for testing against a real in-process broker.

    def test_roundtrip(tidelog_broker):
        with Producer(tidelog_broker.bootstrap) as p: ...

Kept import-light: nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def tidelog_broker(tmp_path):
    """A fresh EmbeddedBroker (loopback, free port, data in tmp_path), stopped after the test."""
    from tidelog.embedded import EmbeddedBroker

    with EmbeddedBroker(tmp_path / "tidelog-data") as broker:
        yield broker


@pytest.fixture
def tidelog_broker_factory(tmp_path):
    """Start brokers with custom settings: `tidelog_broker_factory(default_partitions=3, topic_defaults={...})`."""
    from tidelog.embedded import EmbeddedBroker

    started = []

    def start(**kwargs):
        kwargs.setdefault("data_dir", tmp_path / f"tidelog-data-{len(started)}")
        broker = EmbeddedBroker(**kwargs).start()
        started.append(broker)
        return broker

    yield start
    for broker in reversed(started):
        broker.stop()
