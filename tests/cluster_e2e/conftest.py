import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster(nodes=3, proxy=False, extra_args=None): how the `cluster` "
                                       "fixture starts its brokers")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def cluster(tmp_path, request):
    """Three brokers (`tidelog serve` children) on loopback; their stderr is kept when the test fails."""
    from cluster_harness import Cluster, copy_logs_on_failure

    marker = request.node.get_closest_marker("cluster")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    with Cluster(tmp_path / "c", kwargs.pop("nodes", 3), **kwargs) as c:
        yield c
        copy_logs_on_failure(c, request)
