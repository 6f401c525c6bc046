"""bench/cluster_bench.py's own logic (parsing the NATS peers' RESULT lines, the comparison table); the
benchmark itself is run by hand, not in the suite."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import cluster_bench as B  # noqa: E402

NATS_LINES = """# nats-server nats-server: v2.9.10  (data: /tmp/x)  2 cores
RESULT mode=pub label=r3 replicas=3 storage=file size=100 msgs=500000 pubs=1 pending=1000 server=n2 leader=n2 secs=10.5 msgs_per_s=40000 MB_per_s=4.0 errors=0
RESULT mode=sub label=r3 consumer=ordered replicas=3 size=100 msgs=500000 server=n2 leader=n2 secs=1.3 msgs_per_s=400000 MB_per_s=40.0
RESULT mode=sub label=r3 consumer=pull replicas=3 size=100 msgs=500000 server=n2 leader=n2 secs=3.1 msgs_per_s=160000 MB_per_s=16.0
RESULT mode=pub label=r3 replicas=3 storage=file size=100 msgs=500000 pubs=1 pending=1000 server=n1 leader=n1 secs=9.3 msgs_per_s=60000 MB_per_s=6.0 errors=0
RESULT mode=pub label=r3 replicas=3 storage=file size=100 msgs=500000 pubs=1 pending=1000 server=n1 leader=n1 secs=9.3 msgs_per_s=50000 MB_per_s=5.0 errors=0
RESULT mode=pub label=r3 replicas=3 storage=file size=1024 msgs=200000 pubs=1 pending=1000 server=n1 leader=n1 secs=8.2 msgs_per_s=25000 MB_per_s=25.6 errors=0
RESULT mode=sub label=r3 consumer=ordered replicas=3 size=1024 msgs=200000 server=n1 leader=n1 secs=0.9 msgs_per_s=200000 MB_per_s=204.8
RESULT mode=lat label=r3 replicas=3 storage=file size=100 rate=5000 achieved_rate=5000 n=50000 server=n3 leader=n3 p50_us=400 p90_us=900 p99_us=3600 p999_us=6514 max_us=9682 max_send_lag_us=5499 errors=0
RESULT mode=pub label=r3g1 replicas=3 storage=file size=100 msgs=500000 pubs=1 pending=1000 server=n1 leader=n1 secs=5.3 msgs_per_s=92636 MB_per_s=9.26 errors=0
""".splitlines()


def test_parse_nats_takes_medians_of_one_setup():
    nats = B.parse_nats(NATS_LINES, "r3")
    assert nats[100]["produce_msgs"] == 50000 and nats[100]["runs"] == 3  # median of 40k, 60k, 50k (not r3g1)
    assert nats[100]["replay_msgs"] == 400000  # the ordered push consumer, not pull
    assert nats[1024]["produce_mb"] == 25000 * 1024 / 1e6
    assert nats["latency"] == {"p50_ms": 0.4, "p99_ms": 3.6, "achieved_rate": 5000, "runs": 1}


def test_table_shows_ratios_against_nats():
    args = argparse.Namespace(rate=5000)
    tidelog = {100: {"produce_msgs": 100000, "produce_mb": 10.0, "replay_msgs": 200000, "replay_mb": 20.0},
               1024: {"produce_msgs": 50000, "produce_mb": 51.2, "replay_msgs": 100000, "replay_mb": 102.4},
               "latency": {"p50_ms": 2.0, "p99_ms": 7.2}}
    results = {"grpc": tidelog, "kafka": {"error": "listener down"}, "nats": B.parse_nats(NATS_LINES, "r3")}
    text = B.table(results, {100: 500000, 1024: 200000}, args)
    lines = text.splitlines()
    assert "tidelog gRPC" in lines[0] and "NATS JS R3" in lines[0] and "tidelog gRPC / NATS" in lines[0]
    assert "tidelog Kafka" not in lines[0]
    produce = next(line for line in lines if line.startswith("| produce 100 B acks=all"))
    assert "100,000" in produce and "50,000" in produce and "2.00x" in produce
    p50 = next(line for line in lines if "p50" in line)
    assert "5.00x" in p50  # 2.0 ms vs 0.4 ms
    assert len({len(line) for line in lines}) == 1  # aligned


def test_table_without_nats():
    args = argparse.Namespace(rate=5000)
    row = {"produce_msgs": 1.0, "produce_mb": 1.0, "replay_msgs": 1.0, "replay_mb": 1.0}
    text = B.table({"grpc": {100: row, 1024: row, "latency": {"p50_ms": 1.0, "p99_ms": 2.0}},
                    "nats": {"error": "nats-server is not installed"}}, {100: 1, 1024: 1}, args)
    assert "NATS" not in text and "tidelog gRPC" in text
