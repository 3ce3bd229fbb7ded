"""Free loopback ports and subprocesses that are always cleaned up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable, Sequence

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when asked (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it is true; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class ProcessGroup:
    """Starts subprocesses and guarantees they are gone when `close()` runs.

    Each process runs in its own session so that `close()` can kill its whole process group
    (workers and children included). Output goes to a log file under `log_dir`, whose tail is
    available for assertion messages through `log_tail(name)`.
    """

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        os.makedirs(log_dir, exist_ok=True)

    def start(self, name: str, argv: Sequence[str], env: dict | None = None) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            with open(os.path.join(self.log_dir, f"{name}.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, name: str, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
        """Signal the process group of `name` and reap it (SIGKILL if it outlives `wait`)."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=wait)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGKILL)
