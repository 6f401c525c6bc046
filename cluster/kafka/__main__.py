"""Run a broker core with the Kafka listener only: `python -m cluster.kafka --data-dir DIR --port 0`.

Prints one line `KAFKA_READY host:port node_id=N` on stdout once clients can connect, then serves until
SIGTERM/SIGINT or until stdin closes (with --exit-on-stdin-eof, so a parent test can never leak it).
Until `tidelog serve` grows a --kafka-port flag, tests and bench/kafka_bench.py start brokers this way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cluster.kafka", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True, help="the broker's data directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9092, help="Kafka port (0: any free port; default 9092)")
    p.add_argument("--default-partitions", type=int, default=1, help="partitions of auto-created topics")
    p.add_argument("--node-id", type=int, default=0)
    p.add_argument("--topic-config", action="append", default=[], metavar="KEY=VALUE",
                   help="cluster default topic config (repeatable), e.g. flush.messages=1")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    return p


async def _serve(args) -> None:
    from cluster.broker.broker import Broker
    from cluster.broker.config import BrokerConfig
    from cluster.kafka import start_kafka_listener

    defaults = dict(kv.split("=", 1) for kv in args.topic_config)
    broker = await Broker.open(BrokerConfig(data_dir=args.data_dir, node_id=args.node_id,
                                            default_partitions=args.default_partitions, topic_defaults=defaults))
    try:
        listener = await start_kafka_listener(broker, args.host, args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.exit_on_stdin_eof:
            loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
        print(f"KAFKA_READY {listener.bootstrap} node_id={broker.node_id}", flush=True)
        try:
            await stop.wait()
        finally:
            await listener.close()
    finally:
        await broker.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if any("=" not in kv for kv in args.topic_config):
        print("error: --topic-config takes KEY=VALUE", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop

    try:
        uvloop.run(_serve(args))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
