"""`tidelog group list | describe GROUP | reset-offsets GROUP ... | delete GROUP`: consumer group administration
over gRPC (registered by tidelog.cli), a thin layer over `tidelog.group_consumer.GroupAdmin`."""

from __future__ import annotations

from tidelog.group_consumer import GroupAdmin


def add_group_commands(commands, client) -> None:
    """`tidelog group list | describe GROUP | reset-offsets GROUP ... | delete GROUP` (registered by tidelog.cli)."""
    from tidelog.cli import _Parser, _timestamp_arg

    p = commands.add_parser("group", help="list, describe, reset offsets of, delete consumer groups",
                            description="Consumer group administration (over gRPC).")
    sub = p.add_subparsers(dest="group_command", metavar="ACTION", parser_class=_Parser)
    sub.required = True

    lst = sub.add_parser("list", parents=[client], help="list groups",
                         description="List consumer groups: GROUP STATE PROTOCOL-TYPE.")
    lst.add_argument("--state", action="append", default=[], metavar="STATE",
                     help="only groups in this state (repeatable), e.g. Stable, Empty")
    lst.add_argument("--json", action="store_true", help="JSON output")
    lst.set_defaults(func=_cmd_group_list)

    d = sub.add_parser("describe", parents=[client], help="members, committed offsets and lag per partition",
                       description="Describe a group: per partition TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET "
                                   "LAG CONSUMER-ID HOST CLIENT-ID.")
    d.add_argument("group")
    d.add_argument("--json", action="store_true", help="JSON output")
    d.set_defaults(func=_cmd_group_describe)

    r = sub.add_parser("reset-offsets", parents=[client], help="move an inactive group's committed offsets",
                       description="Compute (and with --execute commit) new offsets for an inactive group. "
                                   "Without --execute this is a dry run.")
    r.add_argument("group")
    r.add_argument("--topic", required=True, help="the topic whose offsets move")
    r.add_argument("--partition", type=int, action="append", default=[], metavar="N",
                   help="only this partition (repeatable; default all)")
    target = r.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="the log start offset")
    target.add_argument("--to-latest", action="store_true", help="the log end offset")
    target.add_argument("--to-offset", type=int, metavar="N", help="offset N (clamped to the log)")
    target.add_argument("--to-datetime", type=_timestamp_arg, metavar="ISO8601",
                        help="the first record at or after this time (naive times are UTC)")
    target.add_argument("--shift-by", type=int, metavar="N", help="move by N (negative: back), clamped")
    r.add_argument("--execute", action="store_true", help="apply the plan (default: only print it)")
    r.set_defaults(func=_cmd_group_reset)

    rm = sub.add_parser("delete", parents=[client], help="delete an empty group and its offsets",
                        description="Delete a group (it must have no members) and its committed offsets.")
    rm.add_argument("group")
    rm.set_defaults(func=_cmd_group_delete)


def _group_admin(args) -> GroupAdmin:
    from tidelog.cli import CliError

    try:
        return GroupAdmin(args.bootstrap, request_timeout_ms=int(args.timeout * 1000))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _table(rows: list[list[str]]) -> str:
    from tidelog.launcher import _table as table_lines

    return "\n".join(table_lines(rows))


def _cmd_group_list(args) -> int:
    import json

    with _group_admin(args) as admin:
        groups = admin.list_groups(args.state)
    if args.json:
        print(json.dumps([{"group": g, "protocol_type": t, "state": s} for g, t, s in groups], indent=2))
    elif groups:
        print(_table([["GROUP", "STATE", "PROTOCOL-TYPE"]] + [[g, s, t or "-"] for g, t, s in groups]))
    return 0


def _cmd_group_describe(args) -> int:
    import json

    from tidelog.cli import CliError

    with _group_admin(args) as admin:
        d = admin.describe_group(args.group)
    if d.state == "Dead" or (d.state == "Empty" and not d.members and not d.partitions):
        raise CliError(f"consumer group {args.group!r} does not exist")
    if args.json:
        print(json.dumps({
            "group": d.group_id, "state": d.state, "protocol_type": d.protocol_type, "protocol": d.protocol,
            "generation": d.generation_id, "coordinator": d.coordinator_id,
            "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id or None,
                         "client_id": m.client_id, "host": m.client_host,
                         "assignment": [[tp.topic, tp.partition] for tp in m.assignment]} for m in d.members],
            "partitions": [{"topic": p.topic, "partition": p.partition,
                            "current_offset": p.current_offset if p.current_offset >= 0 else None,
                            "log_end_offset": p.log_end_offset, "lag": p.lag if p.lag >= 0 else None,
                            "consumer_id": p.member_id or None, "host": p.client_host or None,
                            "client_id": p.client_id or None} for p in d.partitions]}, indent=2))
        return 0
    print(f"Group {d.group_id}: state {d.state}, {len(d.members)} member(s), protocol {d.protocol or '-'}, "
          f"generation {d.generation_id}, coordinator {d.coordinator_id}")
    rows = [["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
             "CLIENT-ID"]]
    for p in d.partitions:
        rows.append([d.group_id, p.topic, str(p.partition), str(p.current_offset) if p.current_offset >= 0 else "-",
                     str(p.log_end_offset) if p.log_end_offset >= 0 else "-", str(p.lag) if p.lag >= 0 else "-",
                     p.member_id or "-", p.client_host or "-", p.client_id or "-"])
    if len(rows) > 1:
        print(_table(rows))
    return 0


def _cmd_group_reset(args) -> int:
    import sys

    with _group_admin(args) as admin:
        changes = admin.reset_offsets(
            args.group, args.topic, to_earliest=args.to_earliest, to_latest=args.to_latest,
            to_offset=args.to_offset, to_timestamp_ms=args.to_datetime, shift_by=args.shift_by,
            partitions=args.partition, execute=args.execute)
    rows = [["GROUP", "TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET"]]
    rows += [[args.group, t, str(p), str(old) if old >= 0 else "-", str(new)] for t, p, old, new in changes]
    print(_table(rows))
    if args.execute:
        print(f"reset {len(changes)} partition(s) of group {args.group}", file=sys.stderr)
    else:
        print("dry run: nothing changed (add --execute to apply)", file=sys.stderr)
    return 0


def _cmd_group_delete(args) -> int:
    with _group_admin(args) as admin:
        admin.delete_group(args.group)
    print(f"deleted group {args.group}")
    return 0
