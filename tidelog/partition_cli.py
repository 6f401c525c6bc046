"""`tidelog partition ...`: partition placement commands (registered by tidelog.cli).

    tidelog partition reassign TOPIC PARTITION --replicas 2,3,4 [--no-wait] [--timeout-s 60]

Moves the partition's replicas through Raft membership changes (the controller records the target; the
partition leader adds the new replicas as learners, promotes them once caught up, removes the old ones).
The first broker listed becomes the preferred leader.
"""

from __future__ import annotations

import argparse


def _replica_list(text: str) -> list[int]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) <= 0:
            raise argparse.ArgumentTypeError(f"expected broker ids like 2,3,4, got {text!r}")
        out.append(int(item))
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"broker {text!r} is listed twice")
    return out


def add_partition_commands(commands, client) -> None:
    from tidelog.cli import _non_negative, _Parser

    p = commands.add_parser("partition", help="move partition replicas between brokers",
                            description="Partition placement.")
    sub = p.add_subparsers(dest="partition_command", metavar="ACTION", parser_class=_Parser)
    sub.required = True
    r = sub.add_parser("reassign", parents=[client], help="move a partition's replicas to other brokers",
                       description="Move a partition's replicas (Raft membership changes, one at a time). The "
                                   "first broker listed becomes the preferred leader.")
    r.add_argument("topic")
    r.add_argument("partition", type=_non_negative)
    r.add_argument("--replicas", type=_replica_list, required=True, metavar="ID,...",
                   help="the new replica list, e.g. 2,3,4")
    r.add_argument("--no-wait", action="store_true", help="return once the target is recorded")
    r.add_argument("--timeout-s", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the move (default 60)")
    r.set_defaults(func=cmd_partition_reassign)


def cmd_partition_reassign(args) -> int:
    import sys

    from tidelog.admin import Admin

    with Admin(args.bootstrap, request_timeout_ms=int(max(args.timeout, args.timeout_s) * 1000)) as admin:
        if not args.no_wait:
            print(f"moving {args.topic}-{args.partition} to brokers {args.replicas} ...", file=sys.stderr,
                  flush=True)
        replicas, pending = admin.reassign_partition(args.topic, args.partition, args.replicas,
                                                     wait=not args.no_wait, timeout=args.timeout_s)
    if pending:
        print(f"{args.topic}-{args.partition}: replicas {replicas}, moving to {pending}")
    else:
        print(f"{args.topic}-{args.partition}: replicas {replicas}")
    return 0
