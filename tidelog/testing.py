"""Helpers for tests and benchmarks: run `tidelog serve` as a child process.

    with ServeProcess(data_dir) as server:
        Producer(server.bootstrap) ...
        server.kill()      # SIGKILL, by PID
        server.start()     # again, same port

The port is picked by the server itself (`--grpc-port 0`) on the first start and reused on restarts; the
ready line on stderr tells it. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_READY = re.compile(r"tidelog ready: grpc=(\S+):(\d+) kafka=(\S+) metrics=(\S+)")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child `python -m tidelog.cli`: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    for key in [k for k in env if k.startswith("TIDELOG_")]:
        del env[key]
    env.update(extra or {})
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tidelog.cli", *args]


class ServeProcess:
    def __init__(self, data_dir: str | Path, *, port: int = 0, metrics: bool = False,
                 extra_args: list[str] | None = None, startup_timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.metrics = metrics
        self.metrics_url: str | None = None
        self.kafka_bootstrap: str | None = None
        self.extra_args = list(extra_args or [])
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []  # of every run, in order
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "ServeProcess":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("already running")
        args = cli_command("serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                           "--grpc-port", str(self.port))
        args += ["--metrics-port", "0"] if self.metrics else ["--no-metrics"]
        if not any(a in ("--kafka-port", "--no-kafka") for a in self.extra_args):
            args += ["--kafka-port", "0"]
        args += self.extra_args
        self._ready.clear()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=child_env())
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"tidelog serve exited with {self.proc.returncode}: {self.stderr()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"tidelog serve not ready within {self.startup_timeout:g}s: {self.stderr()[-2000:]}")
        return self

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            match = _READY.search(line)
            if match and proc is self.proc:
                self.port = int(match.group(2))
                self.kafka_bootstrap = match.group(3) if match.group(3) != "off" else None
                self.metrics_url = match.group(4) if match.group(4) != "off" else None
                self._ready.set()

    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def kill(self) -> None:
        """SIGKILL (a crash), by PID; waits for the process to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._join_reader()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL if it does not exit within `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join_reader()
        return self.proc.returncode

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(5)

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
