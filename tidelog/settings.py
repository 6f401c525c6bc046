"""Server settings: defaults < TOML file < environment (TIDELOG_*) < command-line flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from tidelog._transport import DEFAULT_PORT

DEFAULT_METRICS_PORT = 7071
DEFAULT_KAFKA_PORT = 9092
ENV_PREFIX = "TIDELOG_"


class SettingsError(ValueError):
    """A bad setting; the message names where it came from."""


@dataclass(slots=True)
class ServerSettings:
    data_dir: Path = Path("tidelog-data")
    host: str = "127.0.0.1"
    grpc_port: int = DEFAULT_PORT  # 0: any free port (printed when ready)
    metrics_port: int | None = DEFAULT_METRICS_PORT  # None: no metrics endpoint; 0: any free port
    kafka_port: int | None = DEFAULT_KAFKA_PORT  # None: no Kafka listener; 0: any free port
    auto_create_topics: bool = True  # Kafka's auto.create.topics.enable
    node_id: int = 0
    log_level: str = "info"
    default_partitions: int = 1
    max_request_bytes: int = 64 * 1024 * 1024
    retention_check_interval_ms: int = 30_000
    compaction_interval_ms: int = 15_000
    topic_defaults: dict[str, str] = field(default_factory=dict)  # cluster defaults, Kafka topic-config names
    # The group coordinator, Kafka's broker setting names: offsets.topic.num.partitions (50; the same on every
    # broker), group.initial.rebalance.delay.ms (3000), group.min/max.session.timeout.ms, offsets.retention.ms...
    group_configs: dict[str, str] = field(default_factory=dict)
    # The cluster (docs/cluster-design.md). Without peers the node is a one-node cluster.
    peers: str | None = None  # "1=127.0.0.1:7113,2=127.0.0.1:7123,...": every broker's raft address
    raft_port: int | None = None  # inter-broker port (default: this node's port in peers; 0: any free port)
    raft_transport: str = "tcp"  # inter-broker carrier on the raft port: "tcp" (framed asyncio TCP) or "grpc"
    controller_voters: str | None = None  # "1,2,3" (default: the first 3 peers)
    rack: str | None = None
    default_replication_factor: int = 3  # of new topics (capped by the number of brokers)

    def broker_config(self):
        from cluster.broker.config import BrokerConfig

        return BrokerConfig(
            data_dir=Path(self.data_dir),
            node_id=self.node_id,
            default_partitions=self.default_partitions,
            topic_defaults=dict(self.topic_defaults),
            max_request_bytes=self.max_request_bytes,
            retention_check_interval_ms=self.retention_check_interval_ms,
            compaction_interval_ms=self.compaction_interval_ms,
        )

    def cluster_settings(self):
        """The node's cluster: --peers, or a one-node cluster of this node alone (node id 1 unless given)."""
        from cluster.replication.runtime import ClusterSettings, parse_node_list, parse_peers

        host = self.host
        advertised = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        if self.peers:
            peers = parse_peers(self.peers)
            node_id = self.node_id
            if node_id not in peers:
                raise SettingsError(f"--node-id {node_id} is not one of --peers {self.peers}")
            own_port = int(peers[node_id].rpartition(":")[2])
            listen_port = self.raft_port if self.raft_port is not None else own_port
        else:
            node_id = self.node_id or 1
            listen_port = self.raft_port or 0
            peers = {node_id: f"{advertised}:{listen_port}"}
        bind = f"[{host}]" if ":" in host else host
        voters = parse_node_list(self.controller_voters) if self.controller_voters else None
        if voters and [v for v in voters if v not in peers]:
            raise SettingsError(f"--controller-voters {self.controller_voters} names nodes not in --peers")
        return ClusterSettings(node_id=node_id, peers=peers, data_dir=Path(self.data_dir), host=advertised,
                               raft_listen=f"{bind}:{listen_port}", raft_transport=self.raft_transport,
                               controller_voters=voters, rack=self.rack,
                               default_replication_factor=self.default_replication_factor)


_INT_FIELDS = {"grpc_port", "node_id", "default_partitions", "max_request_bytes", "retention_check_interval_ms",
               "compaction_interval_ms", "default_replication_factor"}
_FIELD_NAMES = {f.name for f in fields(ServerSettings)}


def _convert(name: str, value: Any, origin: str) -> Any:
    try:
        if name == "data_dir":
            return Path(str(value)).expanduser()
        if name == "auto_create_topics":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError("expected true or false")
            return text in ("true", "1", "yes", "on")
        if name == "peers":
            from cluster.replication.runtime import parse_peers

            parse_peers(str(value))
            return str(value)
        if name == "controller_voters":
            from cluster.replication.runtime import parse_node_list

            parse_node_list(str(value))
            return str(value)
        if name == "raft_port":
            if value is None:
                return None
            port = int(value)
            if not 0 <= port < 65536:
                raise ValueError("not a port number")
            return port
        if name == "rack":
            return str(value) if value not in (None, "") else None
        if name == "raft_transport":
            from cluster.raft.transport import CARRIERS

            text = str(value).strip().lower()
            if text not in CARRIERS:
                raise ValueError(f"expected {' or '.join(CARRIERS)}")
            return text
        if name in ("metrics_port", "kafka_port"):
            if value is None or str(value).strip().lower() in ("off", "none", "disabled", "-1"):
                return None
            port = int(value)
            if not 0 <= port < 65536:
                raise ValueError("not a port number")
            return port
        if name == "topic_defaults":
            if not isinstance(value, Mapping):
                raise ValueError("expected a table of Kafka topic configs")
            return {str(k): str(v) for k, v in value.items()}
        if name == "group_configs":
            if not isinstance(value, Mapping):
                raise ValueError("expected a table of group coordinator settings")
            out = {str(k): str(v) for k, v in value.items()}
            from cluster.groups.service import group_config_from

            group_config_from(out)  # unknown names and non-integers: ValueError
            return out
        if name in _INT_FIELDS:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            number = int(value)
            if name == "grpc_port" and not 0 <= number < 65536:
                raise ValueError("not a port number")
            if name != "grpc_port" and name != "node_id" and number <= 0:
                raise ValueError("must be positive")
            return number
        if name == "log_level":
            level = str(value).lower()
            if level not in ("debug", "info", "warning", "error"):
                raise ValueError("expected debug, info, warning or error")
            return level
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{origin}: invalid {name} {value!r}: {exc}") from None


def load_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _FIELD_NAMES:
            raise SettingsError(f"config file {path}: unknown setting {key!r}")
        out[name] = _convert(name, value, f"config file {path}")
    return out


def load_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for name in _FIELD_NAMES - {"topic_defaults", "group_configs"}:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            out[name] = _convert(name, environ[key], f"environment {key}")
    return out


def resolve(flags: Mapping[str, Any], *, config_file: Path | None = None,
            environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Merge: defaults < file (flag --config or $TIDELOG_CONFIG) < environment < flags (None = not given)."""
    environ = os.environ if environ is None else environ
    settings = ServerSettings()
    path = config_file or (Path(environ["TIDELOG_CONFIG"]) if environ.get("TIDELOG_CONFIG") else None)
    if path is not None:
        settings = replace(settings, **load_file(path))
    settings = replace(settings, **load_env(environ))
    given = {k: _convert(k, v, f"option --{k.replace('_', '-')}") for k, v in flags.items() if v is not None}
    if "group_configs" in given:  # flags add to (and override) the file's table
        given["group_configs"] = {**settings.group_configs, **given["group_configs"]}
    return replace(settings, **given)
