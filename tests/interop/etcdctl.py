"""Running etcdctl 3.4 (API v3) against endpoints: one-shot commands and background commands
(watch, lock, elect)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass

from tests.support.etcd_ref import ETCDCTL_BIN
from cluster.launch import wait_until

COMMAND_TIMEOUT = 30.0


@dataclass
class Run:
    """What one etcdctl process did: exit code and raw (not yet normalised) output."""

    rc: int
    stdout: str
    stderr: str


def etcdctl_env() -> dict[str, str]:
    """The environment for etcdctl: API v3, and no ETCDCTL_* setting leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


class Etcdctl:
    """etcdctl bound to one endpoint (host:port)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def argv(self, args: list[str]) -> list[str]:
        return [ETCDCTL_BIN, "--endpoints", self.endpoint, *args]

    def run(self, args: list[str], stdin: str | None = None) -> Run:
        """Run one command to completion; stdin (if any) is fed whole, then closed."""
        p = subprocess.run(self.argv(args), input=stdin or "", capture_output=True, text=True,
                           timeout=COMMAND_TIMEOUT, env=etcdctl_env())
        return Run(p.returncode, p.stdout, p.stderr)

    def watch(self, args: list[str], stdin: str | None = None) -> "BackgroundWatch":
        """Start `etcdctl watch ...` (args include "watch") in the background.

        `stdin` (for `watch -i`) is written at once and the pipe is kept open until `stop()`:
        interactive etcdctl exits on end of input.
        """
        return BackgroundWatch(self.argv(args), stdin)


class BackgroundWatch:
    """A running `etcdctl watch`, whose stdout and stderr are collected as they arrive."""

    def __init__(self, argv: list[str], stdin: str | None = None):
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                      text=True, env=etcdctl_env())
        if stdin is not None:
            self._proc.stdin.write(stdin)
            self._proc.stdin.flush()
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [threading.Thread(target=self._drain, args=(s, buf), daemon=True)
                         for s, buf in ((self._proc.stdout, self._out), (self._proc.stderr, self._err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _drain(stream, buf: list[str]) -> None:
        for line in stream:
            buf.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    def wait_for(self, texts: tuple[str, ...], timeout: float, what: str, times: int = 1) -> bool:
        """Wait until stdout shows one of `texts` `times` times, or the process exits.

        Returns whether it was shown (False on timeout or exit).
        """
        def shown() -> bool:
            out = self.stdout
            return max(out.count(t) for t in texts) >= times

        try:
            wait_until(lambda: shown() or self._proc.poll() is not None, timeout, what)
        except TimeoutError:
            return False
        return shown()

    def interrupt(self) -> Run:
        """Stop etcdctl with SIGINT, as an operator's Ctrl-C (`lock`/`elect` then give up the
        lock or leadership), wait for it to exit, and return what it printed."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        return self.stop()

    def discard_output(self) -> None:
        """Forget what was printed so far (used once a live watch is known to be established)."""
        del self._out[:]

    def stop(self) -> Run:
        """Stop etcdctl (if it is still running) and return what it printed.

        The exit code of a watch we stopped ourselves is meaningless, so it is reported as 0;
        a watch that ended on its own keeps its real exit code.
        """
        rc = self._proc.poll()
        if rc is None:
            self._proc.kill()
            self._proc.wait(timeout=COMMAND_TIMEOUT)
            rc = 0
        if self._proc.stdin:
            self._proc.stdin.close()
        for t in self._readers:
            t.join(timeout=COMMAND_TIMEOUT)
        return Run(rc, "".join(self._out), "".join(self._err))
