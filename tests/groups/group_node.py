"""A broker with its Kafka listener, gRPC server and group coordinator, assembled the way a node wires them:
`python tests/groups/group_node.py --data-dir DIR [--grpc-port P] [--kafka-port P] ...`.

Prints `GROUPS_READY grpc=HOST:PORT kafka=HOST:PORT pid=N` on stdout once clients can connect, then serves
until SIGTERM/SIGINT or until stdin closes (so a parent test can never leak it). Used by tests/groups and
bench/group_bench.py: a standalone broker core (no Raft) with the coordinator leading every partition, so
those tests exercise the coordinator itself. `tidelog serve` wires the same coordinator to the Raft leadership
of `__consumer_offsets` (tests/groups/test_groups_serve.py, tests/cluster_e2e/test_cluster_groups.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--kafka-port", type=int, default=0)
    p.add_argument("--default-partitions", type=int, default=1)
    p.add_argument("--offsets-partitions", type=int, default=50, help="offsets.topic.num.partitions")
    p.add_argument("--min-session-ms", type=int, default=6000, help="group.min.session.timeout.ms")
    p.add_argument("--initial-delay-ms", type=int, default=3000, help="group.initial.rebalance.delay.ms")
    p.add_argument("--log-level", default="warning")
    return p


async def serve(args) -> None:
    from cluster.broker.broker import Broker
    from cluster.broker.config import BrokerConfig
    from cluster.grpc_server import GrpcServer
    from cluster.groups import add_group_service, start_group_coordinator
    from cluster.kafka import start_kafka_listener
    from consumer_groups import GroupConfig

    broker = await Broker.open(BrokerConfig(data_dir=args.data_dir, default_partitions=args.default_partitions))
    listener = grpc = groups = None
    try:
        listener = await start_kafka_listener(broker, args.host, args.kafka_port)
        config = GroupConfig(num_partitions=args.offsets_partitions, session_timeout_min_ms=args.min_session_ms,
                             initial_rebalance_delay_ms=args.initial_delay_ms)
        groups = await start_group_coordinator(broker, config=config, cluster=listener.services.cluster)
        grpc = GrpcServer(broker, host=args.host, port=args.grpc_port)
        add_group_service(grpc, groups)
        grpc_port = await grpc.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
        print(f"GROUPS_READY grpc={args.host}:{grpc_port} kafka={listener.bootstrap} pid={os.getpid()}", flush=True)
        await stop.wait()
    finally:
        if grpc is not None:
            await grpc.stop(0.5)
        if groups is not None:
            await groups.close()
        if listener is not None:
            await listener.close()
        await broker.close()


def main() -> int:
    args = _parser().parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop

    try:
        uvloop.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
