"""`tidelog serve` settings: flags > environment (TIDELOG_*) > TOML file > defaults; bad values named."""

from pathlib import Path

import pytest

from tidelog.settings import ServerSettings, SettingsError, resolve


def test_precedence(tmp_path):
    config = tmp_path / "tidelog.toml"
    config.write_text('data_dir = "/from/file"\ngrpc_port = 1111\nmetrics_port = 2222\nhost = "127.0.0.2"\n'
                      'default_partitions = 3\n[topic_defaults]\n"retention.ms" = 1000\n')
    settings = resolve({}, config_file=config, environ={})
    assert settings.data_dir == Path("/from/file") and settings.grpc_port == 1111 and settings.metrics_port == 2222
    assert settings.default_partitions == 3 and settings.topic_defaults == {"retention.ms": "1000"}
    env = {"TIDELOG_GRPC_PORT": "3333", "TIDELOG_HOST": "127.0.0.3", "TIDELOG_METRICS_PORT": "off"}
    settings = resolve({}, config_file=config, environ=env)
    assert (settings.grpc_port, settings.host, settings.metrics_port) == (3333, "127.0.0.3", None)
    settings = resolve({"grpc_port": 4444, "host": None}, config_file=config, environ=env)
    assert (settings.grpc_port, settings.host, settings.data_dir) == (4444, "127.0.0.3", Path("/from/file"))
    settings = resolve({}, environ={"TIDELOG_CONFIG": str(config)})
    assert settings.grpc_port == 1111
    assert resolve({}, environ={}) == ServerSettings()


@pytest.mark.parametrize("text,needle", [
    ("grpc_port = 99999\n", "grpc_port"),
    ("grpc_port = true\n", "grpc_port"),
    ("default_partitions = 0\n", "default_partitions"),
    ("log_level = 'loud'\n", "log_level"),
    ("topic_defaults = 5\n", "topic_defaults"),
    ("unknown = 1\n", "unknown"),
    ("grpc_port = \n", "tidelog.toml"),
    ("raft_transport = 'udp'\n", "raft_transport"),
])
def test_bad_file_values_are_named(tmp_path, text, needle):
    config = tmp_path / "tidelog.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=needle):
        resolve({}, config_file=config, environ={})


def test_bad_environment_values_are_named():
    with pytest.raises(SettingsError, match="TIDELOG_NODE_ID"):
        resolve({}, environ={"TIDELOG_NODE_ID": "x"})


def test_group_configs_from_file_and_flags(tmp_path):
    config = tmp_path / "tidelog.toml"
    config.write_text('[group_configs]\n"offsets.topic.num.partitions" = 6\n'
                      '"group.initial.rebalance.delay.ms" = 100\n')
    settings = resolve({"group_configs": {"group.initial.rebalance.delay.ms": "0"}}, config_file=config, environ={})
    assert settings.group_configs == {"offsets.topic.num.partitions": "6", "group.initial.rebalance.delay.ms": "0"}
    with pytest.raises(SettingsError, match="group_configs"):
        resolve({"group_configs": {"group.no.such.setting": "1"}}, environ={})
    with pytest.raises(SettingsError, match="group_configs"):
        resolve({"group_configs": {"offsets.topic.num.partitions": "many"}}, environ={})


def test_raft_transport_reaches_the_cluster_settings(tmp_path):
    peers = "1=127.0.0.1:7813,2=127.0.0.1:7823"
    settings = resolve({"peers": peers, "node_id": 1}, environ={})
    assert settings.raft_transport == "tcp" and settings.cluster_settings().raft_transport == "tcp"
    settings = resolve({"peers": peers, "node_id": 2}, environ={"TIDELOG_RAFT_TRANSPORT": "GRPC"})
    assert settings.cluster_settings().raft_transport == "grpc"
    settings = resolve({"peers": peers, "node_id": 2, "raft_transport": "tcp"},
                       environ={"TIDELOG_RAFT_TRANSPORT": "grpc"})
    assert settings.cluster_settings().raft_transport == "tcp"
    with pytest.raises(SettingsError, match="TIDELOG_RAFT_TRANSPORT"):
        resolve({}, environ={"TIDELOG_RAFT_TRANSPORT": "quic"})
