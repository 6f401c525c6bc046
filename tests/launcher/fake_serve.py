"""A stand-in for `tidelog serve` in the launcher's unit tests: takes the contract's flags, listens on every
port it is given (so port checks and "answering" are real), and stops on SIGTERM.

FAKE_SERVE_MODE (environment): "ok" (default), "crash" (print an error and exit 3 before listening),
"ignore-term" (ignore SIGTERM: only SIGKILL stops it), "slow" (listen only after 1.5 s).
"""

import argparse
import os
import signal
import socket
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    for flag in ("--grpc-port", "--kafka-port", "--metrics-port", "--raft-port"):
        parser.add_argument(flag, type=int)
    args, _rest = parser.parse_known_args()
    mode = os.environ.get("FAKE_SERVE_MODE", "ok")
    print(f"fake broker {args.node_id} starting", flush=True)
    if mode == "crash":
        print(f"fake broker {args.node_id}: error: cannot open the log (simulated)", flush=True)
        return 3
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop = []
    if mode != "ignore-term":
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    if mode == "slow":
        time.sleep(1.5)
    sockets = []
    for port in (args.grpc_port, args.kafka_port, args.metrics_port, args.raft_port):
        if port is None:
            continue
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((args.host, port))
        s.listen(16)
        s.setblocking(False)
        sockets.append(s)
    print(f"tidelog ready: grpc={args.host}:{args.grpc_port} node_id={args.node_id}", flush=True)
    deadline = time.monotonic() + 300  # never outlive a test run by much, whatever happens
    while not stop and time.monotonic() < deadline:
        for s in sockets:
            try:
                conn, _ = s.accept()
                conn.close()
            except BlockingIOError:
                pass
        time.sleep(0.02)
    print(f"fake broker {args.node_id} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
