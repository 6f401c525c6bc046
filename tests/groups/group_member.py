"""One consumer-group member in its own process, for the group tests: `python group_member.py --client C ...`.

C is tidelog (GroupConsumer over gRPC), kafka-python, confluent or aiokafka. It consumes until killed (or
SIGTERM: clean close) and appends to --out, with one os.write per poll (before the next poll, so a record is
in the file before its offset can be committed):
    A <generation> <client_id> t:p,t:p,...    after an assignment (the whole assignment; -1: unknown generation)
    R <client_id> t:p,...                     on a revocation
    M <partition> <offset> <value>            one line per processed record
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SESSION_MS = 3000
HEARTBEAT_MS = 500
COMMIT_MS = 200

stop = False


def _on_term(*_):
    global stop
    stop = True


class Out:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, lines: list[str]) -> None:
        if lines:
            os.write(self.fd, ("\n".join(lines) + "\n").encode())


def _tps(pairs) -> str:
    return ",".join(f"{t}:{p}" for t, p in sorted(pairs))


def run_tidelog(args, out: Out) -> None:
    from tidelog.group_consumer import GroupConsumer

    holder = {}

    def assigned(tps):
        c = holder["c"]
        out.write([f"A {c.generation_id} {args.name} {_tps((tp.topic, tp.partition) for tp in c.assignment())}"])

    def revoked(tps):
        out.write([f"R {args.name} {_tps((tp.topic, tp.partition) for tp in tps)}"])

    c = GroupConsumer(args.grpc, args.group, [args.topic], client_id=args.name, session_timeout_ms=SESSION_MS,
                      heartbeat_interval_ms=HEARTBEAT_MS, auto_commit_interval_ms=COMMIT_MS, assignor=args.assignor,
                      on_assign=assigned, on_revoke=revoked,
                      group_instance_id=args.instance_id, max_poll_records=50)
    holder["c"] = c
    while not stop:
        records = c.poll(0.2)
        out.write([f"M {r.partition} {r.offset} {r.value.decode()}" for r in records])
    c.close()


def run_kafka_python(args, out: Out) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.errors import KafkaError

    c = KafkaConsumer(bootstrap_servers=args.kafka, group_id=args.group, client_id=args.name,
                      auto_offset_reset="earliest", session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
                      enable_auto_commit=True, auto_commit_interval_ms=COMMIT_MS, max_poll_records=50,
                      group_instance_id=args.instance_id)

    def generation() -> int:
        try:
            return c._coordinator._generation.generation_id
        except Exception:
            return -1

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            out.write([f"R {args.name} {_tps((tp.topic, tp.partition) for tp in revoked)}"])

        def on_partitions_assigned(self, assigned):
            out.write([f"A {generation()} {args.name} {_tps((tp.topic, tp.partition) for tp in assigned)}"])

    c.subscribe([args.topic], listener=Listener())
    while not stop:
        try:
            batches = c.poll(timeout_ms=200)
        except KafkaError as exc:
            # kafka-python's poll raises what it could not do while no broker is reachable (a coordinator
            # restarting: ECONNREFUSED); an application polls again, as Kafka's Java consumer does itself.
            if not exc.retriable:
                raise
            time.sleep(0.1)
            continue
        out.write([f"M {tp.partition} {m.offset} {m.value.decode()}" for tp, ms in batches.items() for m in ms])
    c.close()


def run_confluent(args, out: Out) -> None:
    from confluent_kafka import Consumer

    config = {"bootstrap.servers": args.kafka, "group.id": args.group, "client.id": args.name,
              "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_MS,
              "heartbeat.interval.ms": HEARTBEAT_MS, "enable.auto.commit": True,
              "auto.commit.interval.ms": COMMIT_MS, "enable.auto.offset.store": False}
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    c = Consumer(config)

    def assigned(consumer, partitions):
        out.write([f"A -1 {args.name} {_tps((tp.topic, tp.partition) for tp in partitions)}"])

    def revoked(consumer, partitions):
        out.write([f"R {args.name} {_tps((tp.topic, tp.partition) for tp in partitions)}"])

    c.subscribe([args.topic], on_assign=assigned, on_revoke=revoked)
    while not stop:
        messages = [m for m in c.consume(50, 0.2) if m.error() is None]
        out.write([f"M {m.partition()} {m.offset()} {m.value().decode()}" for m in messages])
        for m in messages:  # stored only once written: at-least-once
            c.store_offsets(m)
    c.close()


def run_aiokafka(args, out: Out) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            out.write([f"R {args.name} {_tps((tp.topic, tp.partition) for tp in revoked)}"])

        def on_partitions_assigned(self, assigned):
            out.write([f"A -1 {args.name} {_tps((tp.topic, tp.partition) for tp in assigned)}"])

    async def main() -> None:
        c = AIOKafkaConsumer(bootstrap_servers=args.kafka, group_id=args.group, client_id=args.name,
                             auto_offset_reset="earliest", session_timeout_ms=SESSION_MS,
                             heartbeat_interval_ms=HEARTBEAT_MS, enable_auto_commit=True,
                             auto_commit_interval_ms=COMMIT_MS, max_poll_records=50)
        c.subscribe([args.topic], listener=Listener())
        await c.start()
        try:
            while not stop:
                batches = await c.getmany(timeout_ms=200)
                out.write([f"M {tp.partition} {m.offset} {m.value.decode()}" for tp, ms in batches.items() for m in ms])
        finally:
            await c.stop()

    asyncio.run(main())


CLIENTS = {"tidelog": run_tidelog, "kafka-python": run_kafka_python, "confluent": run_confluent,
           "aiokafka": run_aiokafka}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--client", choices=sorted(CLIENTS), required=True)
    p.add_argument("--kafka", default="")
    p.add_argument("--grpc", default="")
    p.add_argument("--group", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--assignor", default="range")
    p.add_argument("--instance-id", default=None)
    args = p.parse_args()
    if os.environ.get("GROUP_MEMBER_LOG"):  # debugging aid: the client library's log on stderr
        import logging

        logging.basicConfig(level=os.environ["GROUP_MEMBER_LOG"].upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_term)
    CLIENTS[args.client](args, Out(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
