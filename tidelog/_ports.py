"""Free loopback ports for the brokers that tests, benchmarks and the demo cluster start as child processes.

A port found by binding port 0 comes from the kernel's ephemeral range, which outgoing connections use too:
between the pick and the child's bind, any client socket may take it ("address already in use"). So ports are
picked at random below that range (checked free by binding them), where no outgoing connection lands."""

from __future__ import annotations

import os
import random
import socket
import time

_FLOOR = 10_000
_rng = random.Random(os.getpid() ^ time.time_ns())


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default; other systems start theirs higher still


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports on `host` that are free now and outside the ephemeral range."""
    high = _ephemeral_low()
    if high - _FLOOR < 1_000:  # a system whose ephemeral range starts low: let the kernel choose
        return _kernel_ports(n, host)
    chosen: list[int] = []
    for _ in range(50 * n + 100):  # bounded: a busy range fails loudly instead of looping
        if len(chosen) == n:
            return chosen
        port = _rng.randrange(_FLOOR, high)
        if port in chosen:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        chosen.append(port)
    if len(chosen) == n:
        return chosen
    raise OSError(f"found only {len(chosen)} of {n} free ports on {host} in [{_FLOOR}, {high})")


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def _kernel_ports(n: int, host: str) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
