"""Fixtures of the Kafka listener tests (no __init__.py here: a package named `kafka` would shadow kafka-python)."""

import os
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from kafka_listener_harness import BrokerProcess, ListenerThread  # noqa: E402


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """One `python -m cluster.kafka` child per test session (per xdist worker); 3 partitions per new topic."""
    broker = BrokerProcess(tmp_path_factory.mktemp("kafka-broker") / "data", default_partitions=3).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def listener(tmp_path_factory):
    """An in-process broker + listener on a background thread, shared by a test module."""
    with ListenerThread(tmp_path_factory.mktemp("kafka-listener") / "data", default_partitions=3) as lt:
        yield lt
