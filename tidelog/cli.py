"""The `tidelog` command: run a broker (`serve`) and talk to one (`topic`, `produce`, `consume`).

Every failure prints one line, `tidelog: error: <reason>`, to stderr and exits non-zero (2 for bad usage,
1 otherwise). Client commands take `--bootstrap HOST:PORT` (default $TIDELOG_BOOTSTRAP, else the cluster that
`tidelog cluster up` started in ./data, else 127.0.0.1:7070).
Later subcommands (cluster, group, partition, dlq) plug in through COMMANDS below.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NoReturn

PROG = "tidelog"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        _fail(f"{message}{hint}", 2)


def _fail(message: str, status: int = 1) -> NoReturn:
    line = " ".join(str(message).split())  # one line, whatever the message holds
    try:
        sys.stderr.write(f"{PROG}: error: {line}\n")
        sys.stderr.flush()
    except Exception:
        pass
    raise SystemExit(status)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _port(text: str) -> int:
    value = _non_negative(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _acks(text: str) -> str:
    if text.lower() not in ("0", "1", "-1", "all"):
        raise argparse.ArgumentTypeError(f"expected 0, 1, -1 or all, got {text!r}")
    return text.lower()


def _compression(text: str) -> str:
    if text.lower() not in ("none", "gzip", "snappy", "lz4", "zstd"):
        raise argparse.ArgumentTypeError(f"expected none, gzip, snappy, lz4 or zstd, got {text!r}")
    return text.lower()


def parse_timestamp(text: str) -> int:
    """ISO 8601 (naive means UTC) or milliseconds since the epoch -> milliseconds since the epoch."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00") if stripped.endswith("Z") else stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time (e.g. 2024-05-01T12:00:00Z) or epoch milliseconds, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _timestamp_arg(text: str) -> int:
    return parse_timestamp(text)


# --------------------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    from tidelog import __version__

    parser = _Parser(prog=PROG, description="tidelog: a Kafka-compatible, Raft-replicated log.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    client = _Parser(add_help=False)
    client.add_argument("--bootstrap", metavar="HOST:PORT",
                        help="broker address, or several comma-separated (any broker of a cluster will do; "
                             "default: $TIDELOG_BOOTSTRAP, else the cluster in ./data/cluster.json, "
                             "else 127.0.0.1:7070)")
    client.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="request timeout (default 30)")

    for register in COMMANDS:
        register(commands, client)
    return parser


def _add_serve(commands, client) -> None:
    p = commands.add_parser(
        "serve", help="run a broker",
        description="Run a broker: one node of a cluster (--peers), or a one-node cluster. Settings: flags > "
                    "environment (TIDELOG_*) > --config file > defaults.")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="where logs live (default ./tidelog-data)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--grpc-port", type=_port, metavar="PORT", help="gRPC port (default 7070; 0: any free port)")
    p.add_argument("--metrics-port", type=_port, metavar="PORT",
                   help="Prometheus /metrics port (default 7071; 0: any free port)")
    p.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    p.add_argument("--kafka-port", type=_port, metavar="PORT",
                   help="Kafka protocol port (default 9092; 0: any free port)")
    p.add_argument("--no-kafka", action="store_true", help="do not serve the Kafka protocol")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file (also $TIDELOG_CONFIG)")
    p.add_argument("--node-id", type=_non_negative, metavar="N",
                   help="this broker's id, one of --peers (default 1 without --peers); fixed at first start")
    p.add_argument("--default-partitions", type=_positive, metavar="N", help="partitions of new topics (default 1)")
    p.add_argument("--peers", metavar="ID=HOST:PORT,...",
                   help="every broker of the cluster with its raft address, this one included, e.g. "
                        "1=127.0.0.1:7113,2=127.0.0.1:7123,3=127.0.0.1:7133 (default: a one-node cluster)")
    p.add_argument("--raft-port", type=_port, metavar="PORT",
                   help="inter-broker port to listen on (default: this node's port in --peers; 0: any free port)")
    p.add_argument("--raft-transport", choices=("tcp", "grpc"),
                   help="how brokers talk to each other on the raft port: tcp (framed asyncio TCP, the default, "
                        "~tens of microseconds per hop) or grpc (a gRPC stream per broker pair, ~1 ms per hop); "
                        "every broker of a cluster must use the same")
    p.add_argument("--controller-voters", metavar="ID,...",
                   help="brokers that vote in the controller group (default: the first 3 peers)")
    p.add_argument("--rack", metavar="RACK", help="rack of this broker (replicas are spread across racks)")
    p.add_argument("--default-replication-factor", type=_positive, metavar="N",
                   help="replicas of new topics (default 3, capped by the number of brokers)")
    p.add_argument("--group-config", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="group coordinator setting, Kafka's broker names (repeatable), e.g. "
                        "group.initial.rebalance.delay.ms=0 or offsets.topic.num.partitions=50")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    p.set_defaults(func=cmd_serve)


def _add_topic(commands, client) -> None:
    p = commands.add_parser("topic", help="create, list, describe, delete topics; add partitions; alter configs",
                            description="Topic administration.")
    sub = p.add_subparsers(dest="topic_command", metavar="ACTION", parser_class=_Parser)
    sub.required = True

    c = sub.add_parser("create", parents=[client], help="create a topic", description="Create a topic.")
    c.add_argument("name")
    c.add_argument("--partitions", type=_positive, default=0, metavar="N", help="default: the broker's default")
    c.add_argument("--replication-factor", type=_positive, default=0, metavar="N",
                   help="replicas per partition (default: the cluster's default, 3 on a 3-node cluster)")
    c.add_argument("--config", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="topic config override, Kafka names (repeatable), e.g. retention.ms=86400000")
    c.add_argument("--if-not-exists", action="store_true", help="succeed if the topic exists")
    c.set_defaults(func=cmd_topic_create)

    lst = sub.add_parser("list", parents=[client], help="list topics", description="List topics, one per line.")
    lst.add_argument("--json", action="store_true", help="JSON output")
    lst.set_defaults(func=cmd_topic_list)

    d = sub.add_parser("describe", parents=[client], help="show partitions, offsets and configs",
                       description="Describe topics (all when none named).")
    d.add_argument("names", nargs="*", metavar="NAME")
    d.add_argument("--json", action="store_true", help="JSON output")
    d.set_defaults(func=cmd_topic_describe)

    rm = sub.add_parser("delete", parents=[client], help="delete a topic", description="Delete a topic and its data.")
    rm.add_argument("name")
    rm.add_argument("--if-exists", action="store_true", help="succeed if the topic does not exist")
    rm.set_defaults(func=cmd_topic_delete)

    ap = sub.add_parser("add-partitions", parents=[client], help="grow a topic to N partitions",
                        description="Grow a topic to N partitions in total (the count only grows; records "
                                    "already written stay where they are, new keys may hash elsewhere).")
    ap.add_argument("name")
    ap.add_argument("--count", type=_positive, required=True, metavar="N", help="the new total number of partitions")
    ap.set_defaults(func=cmd_topic_add_partitions)

    a = sub.add_parser("alter-config", parents=[client], help="set or delete per-topic config overrides",
                       description="Set or delete per-topic config overrides (Kafka names).")
    a.add_argument("name")
    a.add_argument("--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE", dest="set_")
    a.add_argument("--delete", action="append", default=[], metavar="KEY", help="back to the cluster default")
    a.set_defaults(func=cmd_topic_alter_config)


def _add_produce(commands, client) -> None:
    p = commands.add_parser("produce", parents=[client], help="send stdin lines as records",
                            description="Send each line of stdin as one record.")
    p.add_argument("topic")
    p.add_argument("--key-separator", metavar="SEP",
                   help="split each line at the first SEP into key and value (a line without SEP is an error)")
    p.add_argument("--partition", type=_non_negative, metavar="N", help="send everything to this partition")
    p.add_argument("--acks", type=_acks, default="all", help="0, 1 or all (default all)")
    p.add_argument("--compression", type=_compression, default="none", help="none, gzip, snappy, lz4, zstd")
    p.add_argument("--header", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="header added to every record (repeatable)")
    p.add_argument("--linger-ms", type=_non_negative, default=5, metavar="MS")
    p.add_argument("--batch-size", type=_positive, default=65536, metavar="BYTES")
    p.set_defaults(func=cmd_produce)


def _add_consume(commands, client) -> None:
    p = commands.add_parser("consume", parents=[client], help="print records",
                            description="Print records of a topic, one line each.")
    p.add_argument("topic")
    p.add_argument("--partition", type=_non_negative, action="append", metavar="N",
                   help="read only this partition (repeatable; default all)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--offset", type=_non_negative, metavar="N", help="start at offset N (each partition)")
    start.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    start.add_argument("--timestamp", type=_timestamp_arg, metavar="ISO8601",
                       help="start at the first record at or after this time (naive times are UTC)")
    start.add_argument("--latest", action="store_true", help="only new records (the default)")
    p.add_argument("--max-messages", type=_positive, metavar="N", help="stop after N records")
    p.add_argument("--timeout-ms", type=_non_negative, metavar="MS", help="stop after MS without a record")
    p.add_argument("--format", default="{value}", metavar="TEMPLATE",
                   help="fields: {topic} {partition} {offset} {timestamp} {timestamp_iso} {key} {value} "
                        "{headers}; default '{value}'")
    p.set_defaults(func=cmd_consume)


# Subcommand registrars; later issues add cluster, group, partition and dlq here.
COMMANDS: list[Callable] = [_add_serve, _add_topic, _add_produce, _add_consume]


def _add_cluster(commands, client) -> None:
    from tidelog.launcher import add_cluster_commands  # `tidelog cluster up|status|down|...-node`

    add_cluster_commands(commands)


COMMANDS.append(_add_cluster)


def _add_group(commands, client) -> None:
    from tidelog.group_cli import add_group_commands  # `tidelog group list|describe|reset-offsets|delete`

    add_group_commands(commands, client)


def _add_dlq(commands, client) -> None:
    from tidelog.dlq import add_dlq_commands  # `tidelog dlq replay`

    add_dlq_commands(commands, client)


COMMANDS += [_add_group, _add_dlq]


def _add_partition(commands, client) -> None:
    from tidelog.partition_cli import add_partition_commands  # `tidelog partition reassign`

    add_partition_commands(commands, client)


COMMANDS.append(_add_partition)


# --------------------------------------------------------------------------------------------------------
# commands


def cmd_serve(args) -> int:
    import asyncio
    import logging
    import signal

    from tidelog.settings import SettingsError, resolve

    flags = {
        "data_dir": args.data_dir,
        "host": args.host,
        "grpc_port": args.grpc_port,
        "metrics_port": "off" if args.no_metrics else args.metrics_port,
        "kafka_port": "off" if args.no_kafka else args.kafka_port,
        "node_id": args.node_id,
        "default_partitions": args.default_partitions,
        "log_level": args.log_level,
        "peers": args.peers,
        "raft_port": args.raft_port,
        "raft_transport": args.raft_transport,
        "controller_voters": args.controller_voters,
        "rack": args.rack,
        "default_replication_factor": args.default_replication_factor,
        "group_configs": dict(args.group_config) if args.group_config else None,
    }
    try:
        settings = resolve(flags, config_file=args.config)
        settings.cluster_settings()  # bad --peers / --node-id / --controller-voters: one line, exit 1
    except (SettingsError, ValueError) as exc:
        raise CliError(str(exc)) from None
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("tidelog.serve")

    async def main() -> None:
        from tidelog.node import Node

        node = Node(settings)
        await node.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("%s", node.ready_line())
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await node.stop()
            log.info("stopped")

    import uvloop

    try:
        uvloop.run(main())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        from cluster.broker.errors import BrokerError

        if isinstance(exc, BrokerError):
            raise CliError(str(exc)) from None
        raise
    return 0


def _admin(args):
    from tidelog.admin import Admin

    try:
        return Admin(args.bootstrap, request_timeout_ms=int(args.timeout * 1000))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_topic_create(args) -> int:
    from tidelog.errors import TopicAlreadyExistsError

    with _admin(args) as admin:
        try:
            info = admin.create_topic(args.name, args.partitions, dict(args.config),
                                      replication_factor=args.replication_factor)
        except TopicAlreadyExistsError:
            if args.if_not_exists:
                return 0
            raise
    print(f"created topic {info.name} with {len(info.partitions)} partition(s)")
    return 0


def cmd_topic_list(args) -> int:
    with _admin(args) as admin:
        topics = admin.list_topics()
    if args.json:
        print(json.dumps(topics, indent=2))
    else:
        for name in topics:
            print(name)
    return 0


def cmd_topic_describe(args) -> int:
    with _admin(args) as admin:
        names = args.names or list(admin.list_topics())
        descriptions = [admin.describe_topic(n) for n in names]
    if args.json:
        print(json.dumps([{
            "name": d.name,
            "topic_id": d.topic_id,
            "partitions": [{"partition": p.partition, "log_start_offset": p.log_start_offset,
                            "log_end_offset": p.log_end_offset, "high_watermark": p.high_watermark,
                            "size_bytes": p.size_bytes, "leader_id": p.leader_id} for p in d.partitions],
            "configs": {c.name: {"value": c.value, "source": c.source} for c in d.configs.values()},
        } for d in descriptions], indent=2))
        return 0
    for d in descriptions:
        print(f"Topic: {d.name}\tTopicId: {d.topic_id}\tPartitions: {len(d.partitions)}")
        overrides = [f"{c.name}={c.value}" for c in d.configs.values() if c.source != "default"]
        print(f"\tConfigs: {', '.join(overrides) if overrides else '(defaults)'}")
        print("\tPartition\tLogStart\tLogEnd\tHighWatermark\tSizeBytes\tLeader")
        for p in d.partitions:
            print(f"\t{p.partition}\t{p.log_start_offset}\t{p.log_end_offset}\t{p.high_watermark}\t{p.size_bytes}"
                  f"\t{p.leader_id}")
    return 0


def cmd_topic_delete(args) -> int:
    from tidelog.errors import UnknownTopicOrPartitionError

    with _admin(args) as admin:
        try:
            admin.delete_topic(args.name)
        except UnknownTopicOrPartitionError:
            if args.if_exists:
                return 0
            raise
    print(f"deleted topic {args.name}")
    return 0


def cmd_topic_add_partitions(args) -> int:
    with _admin(args) as admin:
        info = admin.create_partitions(args.name, args.count)
    print(f"topic {info.name} now has {len(info.partitions)} partition(s)")
    return 0


def cmd_topic_alter_config(args) -> int:
    if not args.set_ and not args.delete:
        raise CliError("nothing to change: give --set KEY=VALUE and/or --delete KEY")
    with _admin(args) as admin:
        configs = admin.alter_configs(args.name, dict(args.set_), args.delete)
    overrides = [f"{c.name}={c.value}" for c in configs.values() if c.source == "topic"]
    print(f"topic {args.name} overrides: {', '.join(overrides) if overrides else '(none)'}")
    return 0


def cmd_produce(args) -> int:
    from tidelog.producer import Producer

    separator = args.key_separator.encode() if args.key_separator else None
    if args.key_separator == "":
        raise CliError("--key-separator must not be empty")
    headers = [(k, v.encode()) for k, v in args.header]
    try:
        producer = Producer(args.bootstrap, acks=args.acks, compression=args.compression, linger_ms=args.linger_ms,
                            batch_size=args.batch_size, request_timeout_ms=int(args.timeout * 1000),
                            delivery_timeout_ms=int(max(args.timeout, 1) * 1000) + 5000, retries=3)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    futures = []
    failed = None
    try:
        stdin = sys.stdin.buffer
        for number, line in enumerate(stdin, 1):
            line = line.rstrip(b"\r\n") if line.endswith(b"\n") else line
            key = None
            if separator is not None:
                key, sep, value = line.partition(separator)
                if not sep:
                    failed = f"line {number} has no key separator {args.key_separator!r}"
                    break
            else:
                value = line
            futures.append(producer.send(args.topic, value, key=key, partition=args.partition, headers=headers))
            if len(futures) >= 10_000:
                _check(futures)
                futures = []
        producer.flush(args.timeout + 5)
        _check(futures)
    finally:
        producer.close(timeout=5)
    if failed:
        raise CliError(failed)
    return 0


def _check(futures) -> None:
    for future in futures:
        future.result()  # raises the delivery error


class _Formatter:
    def __init__(self, template: str) -> None:
        self.template = template.encode().decode("unicode_escape") if "\\" in template else template
        try:
            self.template.format(**_fields_of(None))
        except (KeyError, IndexError, ValueError) as exc:
            raise CliError(f"bad --format template {template!r}: {exc}") from None

    def __call__(self, record) -> str:
        return self.template.format(**_fields_of(record))


def _text(data: bytes | None) -> str:
    return "null" if data is None else data.decode("utf-8", errors="backslashreplace")


def _fields_of(record) -> dict:
    if record is None:
        return dict(topic="t", partition=0, offset=0, timestamp=0, timestamp_iso="", key="", value="", headers="")
    return dict(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        timestamp_iso=datetime.fromtimestamp(record.timestamp / 1000, timezone.utc).isoformat(timespec="milliseconds"),
        key=_text(record.key),
        value=_text(record.value),
        headers=",".join(f"{k}={_text(v)}" for k, v in record.headers),
    )


def cmd_consume(args) -> int:
    from tidelog.consumer import Consumer, TopicPartition

    formatter = _Formatter(args.format)
    try:
        consumer = Consumer(args.bootstrap, auto_offset_reset="latest", request_timeout_ms=int(args.timeout * 1000),
                            fetch_max_wait_ms=500)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with consumer:
        count = consumer.partitions_for(args.topic)
        partitions = args.partition if args.partition is not None else list(range(count))
        for p in partitions:
            if p >= count:
                raise CliError(f"topic {args.topic!r} has {count} partition(s); there is no partition {p}")
        tps = [TopicPartition(args.topic, p) for p in partitions]
        consumer.assign(tps)
        if args.offset is not None:
            for tp in tps:
                consumer.seek(tp, args.offset)
        elif args.from_beginning:
            consumer.seek_to_beginning()
        elif args.timestamp is not None:
            consumer.seek_to_timestamp(args.timestamp)
        else:
            consumer.seek_to_end()
        printed = 0
        idle_limit = None if args.timeout_ms is None else args.timeout_ms / 1000
        import time

        idle_since = time.monotonic()
        out = sys.stdout
        while True:
            wait = 0.5 if idle_limit is None else max(0.0, min(0.5, idle_limit - (time.monotonic() - idle_since)))
            records = consumer.poll(timeout=wait, max_records=10_000)
            if records:
                idle_since = time.monotonic()
                lines = []
                for record in records:
                    lines.append(formatter(record))
                    printed += 1
                    if args.max_messages is not None and printed >= args.max_messages:
                        break
                out.write("\n".join(lines) + "\n")
                out.flush()
                if args.max_messages is not None and printed >= args.max_messages:
                    return 0
            elif idle_limit is not None and time.monotonic() - idle_since >= idle_limit:
                return 0


# --------------------------------------------------------------------------------------------------------


def _local_cluster_bootstrap(data_dir: Path = Path("data")) -> str | None:
    """The gRPC endpoints of a cluster started by `tidelog cluster up` in this folder (its default data dir),
    so client commands work right after the README's first command without --bootstrap."""
    try:
        doc = json.loads((data_dir / "cluster.json").read_text())
        endpoints = [f"{n['host']}:{n['grpc_port']}" for n in doc["nodes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ",".join(endpoints) or None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "bootstrap", "") is None and not os.environ.get("TIDELOG_BOOTSTRAP"):
        args.bootstrap = _local_cluster_bootstrap()
    from tidelog.errors import TidelogError

    try:
        return args.func(args) or 0
    except CliError as exc:
        _fail(str(exc))
    except TidelogError as exc:
        name = getattr(exc, "error_name", "")
        reason = str(exc)
        _fail(f"{reason} [{name}]" if name and name not in reason else reason)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
