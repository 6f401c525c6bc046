"""End to end through the CLI: `tidelog serve` in a child process, then topic/produce/consume commands."""

from __future__ import annotations

import subprocess

import pytest

from tidelog.testing import ServeProcess, child_env, cli_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServeProcess(tmp_path_factory.mktemp("cli") / "data", metrics=True) as s:
        yield s


def cli(server, *args, stdin=None, timeout=60):
    result = subprocess.run(cli_command(*args, "--bootstrap", server.bootstrap), input=stdin, capture_output=True,
                            text=True, timeout=timeout, env=child_env())
    return result


def ok(server, *args, stdin=None):
    result = cli(server, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def failure(server, *args, stdin=None):
    result = cli(server, *args, stdin=stdin)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("tidelog: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_topic_commands(server):
    assert "created topic orders with 3 partition(s)" in ok(server, "topic", "create", "orders", "--partitions",
                                                             "3", "--config", "retention.ms=3600000")
    assert "orders" in ok(server, "topic", "list").split()
    described = ok(server, "topic", "describe", "orders")
    assert "Partitions: 3" in described and "retention.ms=3600000" in described
    assert "segment.ms=60000" in ok(server, "topic", "alter-config", "orders", "--set", "segment.ms=60000",
                                     "--delete", "retention.ms")
    described = ok(server, "topic", "describe", "orders", "--json")
    assert '"segment.ms": {\n        "value": "60000",\n        "source": "topic"' in described
    assert "TOPIC_ALREADY_EXISTS" in failure(server, "topic", "create", "orders")
    ok(server, "topic", "create", "orders", "--if-not-exists")
    assert "INVALID_CONFIG" in failure(server, "topic", "create", "bad", "--config", "retention.ms=soon")
    assert "retention.mss" in failure(server, "topic", "alter-config", "orders", "--set", "retention.mss=1")
    assert "UNKNOWN_TOPIC_OR_PARTITION" in failure(server, "topic", "describe", "nope")
    ok(server, "topic", "create", "doomed")
    assert "deleted topic doomed" in ok(server, "topic", "delete", "doomed")
    assert "doomed" not in ok(server, "topic", "list").split()
    assert "UNKNOWN_TOPIC_OR_PARTITION" in failure(server, "topic", "delete", "doomed")
    ok(server, "topic", "delete", "doomed", "--if-exists")


def test_produce_and_consume(server):
    ok(server, "topic", "create", "lines", "--partitions", "2")
    lines = "".join(f"user{i % 4}:event {i}\n" for i in range(40))
    ok(server, "produce", "lines", "--key-separator", ":", "--compression", "lz4", stdin=lines)
    out = ok(server, "consume", "lines", "--from-beginning", "--max-messages", "40", "--format",
             "{partition}:{offset} {key}={value}")
    rows = out.splitlines()
    assert len(rows) == 40
    by_key = {}
    for row in rows:
        where, kv = row.split(" ", 1)
        key, value = kv.split("=", 1)
        by_key.setdefault(key, set()).add(where.split(":")[0])
    assert set(by_key) == {"user0", "user1", "user2", "user3"}
    assert all(len(parts) == 1 for parts in by_key.values())  # one partition per key
    # Order within a partition is send order.
    for p in ("0", "1"):
        events = [int(r.split("event ")[1]) for r in rows if r.startswith(p + ":")]
        assert events == sorted(events)

    ok(server, "produce", "lines", "--partition", "1", "--acks", "1", stdin="plain one\nplain two\n")
    out = ok(server, "consume", "lines", "--partition", "1", "--offset", "0", "--timeout-ms", "1500",
             "--format", "{offset}|{key}|{value}")
    # Offsets follow the partition's Raft no-op control batch (offset 0), so the n-th record is at offset n.
    assert out.splitlines()[-2:] == [f"{len(out.splitlines()) - 1}|null|plain one",
                                     f"{len(out.splitlines())}|null|plain two"]
    # Idle timeout with nothing new: exits 0, prints nothing.
    assert ok(server, "consume", "lines", "--latest", "--timeout-ms", "300") == ""


def test_consume_by_timestamp(server):
    ok(server, "topic", "create", "times")
    ok(server, "produce", "times", stdin="before\n")
    import time

    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    ok(server, "produce", "times", stdin="after1\nafter2\n")
    out = ok(server, "consume", "times", "--timestamp", str(cut), "--max-messages", "2")
    assert out.splitlines() == ["after1", "after2"]
    from datetime import datetime, timezone

    iso = datetime.fromtimestamp(cut / 1000, timezone.utc).isoformat()
    out = ok(server, "consume", "times", "--timestamp", iso, "--max-messages", "2", "--format",
             "{value} {timestamp_iso}")
    assert [line.split()[0] for line in out.splitlines()] == ["after1", "after2"]


def test_cli_failures_are_one_line(server):
    assert "UNKNOWN_TOPIC_OR_PARTITION" in failure(server, "produce", "nope", stdin="x\n")
    assert "UNKNOWN_TOPIC_OR_PARTITION" in failure(server, "consume", "nope", "--timeout-ms", "100")
    ok(server, "topic", "create", "sep")
    assert "no key separator" in failure(server, "produce", "sep", "--key-separator", "=", stdin="a=1\nb\n")
    assert "no partition 5" in failure(server, "consume", "sep", "--partition", "5", "--timeout-ms", "100")
    assert "bad --format" in failure(server, "consume", "sep", "--format", "{nope}", "--timeout-ms", "100")


def test_metrics_endpoint_of_the_served_broker(server):
    import urllib.request

    assert server.metrics_url
    body = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert "tidelog_partitions" in body and "tidelog_request_latency_seconds" in body


def test_client_commands_find_the_cluster_started_in_data(server, tmp_path):
    """After `tidelog cluster up` (data in ./data), client commands need no --bootstrap."""
    ok(server, "topic", "create", "found-by-cluster-json", "--partitions", "1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cluster.json").write_text(
        '{"version": 1, "nodes": [{"node_id": 1, "host": "127.0.0.1", "grpc_port": %d}]}' % server.port)
    result = subprocess.run(cli_command("topic", "list"), capture_output=True, text=True, timeout=60,
                            env=child_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "found-by-cluster-json" in result.stdout
