"""Fixtures of the consumer-group tests (no __init__.py: helpers import by module name, as in tests/kafka)."""

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
for _path in (_ROOT, _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from groups_harness import GroupNode  # noqa: E402


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    """One group node child per test session (per xdist worker): fast rebalances, 1 s minimum session."""
    n = GroupNode(tmp_path_factory.mktemp("group-node") / "data").start()
    yield n
    n.stop()
