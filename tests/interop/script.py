"""Scripts of etcdctl commands, run against a target, turned into normalised transcripts.

A script is a list of steps (`Cmd`, `Watch`). Running it against a `Target` gives a transcript: one
text with, for every command, its arguments, stdin, exit code, stdout and stderr, all normalised.
Two targets that behave alike give equal transcripts, and a difference reads as a diff.

Scripts are stateful: they run in order on one long-lived member per target, so revisions carry
over from one script to the next. Every target must therefore run the same scripts in the same
order as the reference; `assert_same_as_reference` checks that. A script captures the values it
uses itself, so any subset of a module's tests can run.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
import shlex
from dataclasses import dataclass, field

from cluster.launch import wait_until

from .etcdctl import BackgroundWatch, Etcdctl, Run
from .normalise import Normaliser

WATCH_TIMEOUT = 10.0
LIVE_SYNC_ATTEMPTS = 10
LIVE_SYNC_WAIT = 2.0
UNTIL_TIMEOUT = 20.0
STDIN_SHOWN = 1000  # longer stdin shows as its size only

_GRANTED = re.compile(r"^lease ([0-9a-f]{16}) granted", re.M)


@dataclass(frozen=True)
class Cmd:
    """One etcdctl command line (after `etcdctl --endpoints E`).

    `args` may use values captured by earlier commands as `{name}`, and the target's scratch
    directory as `{tmp}`. Captures: `grant` names the lease ID this command grants (`lease grant`,
    simple output); `revision` names the header revision of its JSON output (`-w json`).
    With `until`, the command is repeated (unrecorded) until its raw stdout contains that text,
    for effects that take time, such as a lease expiring; the last run is recorded.
    """

    args: str
    stdin: str | None = None
    grant: str | None = None
    revision: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class Watch:
    """`etcdctl <args>` (args start with "watch") running in the background while `writes` run.

    After the writes, the harness puts each of `end_keys` (each must lie in the watched range of
    one watcher) with the value "watch-end-N", N counting the target's watches (so the value
    shows nowhere else), and stops etcdctl once every such event shows: events arrive in
    revision order, so everything before them has arrived, and no delay is guessed.

    `stdin` feeds `watch -i` (several watchers on one stream; `{name}` captures allowed). The
    interleaving of different watchers' events on one stream depends on timing, so `unordered`
    groups the output's event lines by key (stably: each key's events keep their order). Use it
    with -w json (one line per event) and watchers on disjoint keys.

    A `live` watch (no --rev) first needs to be established: the harness puts `<end_key>-sync`
    (which must lie in the watched range too) with a "watch-sync-N" value until the watch shows
    one, then discards the output so far. The number of those puts depends on timing, so the
    revisions after it differ between targets: a live watch must be the last step a target runs.
    """

    args: str
    end_keys: tuple[str, ...]
    writes: tuple[Cmd, ...] = ()
    stdin: str | None = None
    unordered: bool = False
    live: bool = False


Step = Cmd | Watch


@dataclass
class Target:
    """One member (or proxy) under test, reached by etcdctl at `endpoint` (host:port)."""

    name: str
    endpoint: str
    tmp_dir: str
    etcdctl: Etcdctl = field(init=False)
    normaliser: Normaliser = field(init=False)
    captured: dict[str, str] = field(default_factory=dict)
    transcripts: dict[str, str] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    watches: int = 0
    ran_live_watch: bool = False

    def __post_init__(self) -> None:
        self.etcdctl = Etcdctl(self.endpoint)
        self.normaliser = Normaliser(self.endpoint, self.tmp_dir)

    def transcript(self, name: str, script: list[Step]) -> str:
        """Run `script` (once: later calls return the first transcript) and return it."""
        if name not in self.transcripts:
            assert not self.ran_live_watch, f"{self.name}: {name} runs after a live watch shifted revisions"
            self.history.append(name)
            self.captured = {}
            self.transcripts[name] = "\n".join(self._step(s) for s in script)
        return self.transcripts[name]

    def _format(self, args: str) -> list[str]:
        try:
            return shlex.split(args.format(tmp=self.tmp_dir, **self.captured))
        except KeyError as e:
            raise AssertionError(f"`{args}` uses {e}, which no earlier step of this script captured") from None

    def _step(self, step: Step) -> str:
        return self._cmd(step) if isinstance(step, Cmd) else self._watch(step)

    def _cmd(self, cmd: Cmd) -> str:
        run = self._run(cmd)
        if cmd.grant or cmd.revision:
            assert run.rc == 0, f"{self.name}: `{cmd.args}` failed, nothing to capture:\n{run.stdout}{run.stderr}"
        if cmd.grant:
            granted = _GRANTED.search(run.stdout)
            assert granted, f"{self.name}: `{cmd.args}` granted no lease:\n{run.stdout}"
            self.captured[cmd.grant] = granted.group(1)
        if cmd.revision:
            self.captured[cmd.revision] = str(json.loads(run.stdout)["header"]["revision"])
        return self._render(f"$ etcdctl {cmd.args}", cmd.stdin, run)

    def _run(self, cmd: Cmd) -> Run:
        argv = self._format(cmd.args)
        run = None

        def done() -> bool:
            nonlocal run
            run = self.etcdctl.run(argv, cmd.stdin)
            return cmd.until is None or cmd.until in run.stdout

        try:
            wait_until(done, UNTIL_TIMEOUT, f"{self.name}: `{cmd.args}` printing {cmd.until!r}", 0.2)
        except TimeoutError:
            pass  # the recorded (last) output shows what was printed instead
        return run

    def _watch(self, w: Watch) -> str:
        stdin = w.stdin.format(**self.captured) if w.stdin else None
        watch = self.etcdctl.watch(self._format(w.args), stdin)
        try:
            lines = [f"$ etcdctl {w.args} &"] + [f"< {line}" for line in (w.stdin or "").splitlines()]
            if w.live:
                self.ran_live_watch = True
                lines.append(self._sync_live_watch(watch, f"{w.end_keys[0]}-sync"))
            lines += [self._cmd(c) for c in w.writes]
            self.watches += 1
            end_value = f"watch-end-{self.watches}"
            lines += [self._cmd(Cmd(f"put {key} {end_value}")) for key in w.end_keys]
            seen = watch.wait_for(_shown(end_value), WATCH_TIMEOUT, f"{w.args}: end events",
                                  times=len(w.end_keys))
        finally:
            run = watch.stop()
        title = f"[watch output{'' if seen else ': END EVENT NOT SEEN'}{', grouped by key' if w.unordered else ''}]"
        lines.append(self._render(title, None, run, sort_stdout=w.unordered))
        return "\n".join(lines)

    def _sync_live_watch(self, watch: BackgroundWatch, key: str) -> str:
        for attempt in range(1, LIVE_SYNC_ATTEMPTS + 1):
            value = f"watch-sync-{attempt}"
            self.etcdctl.run(["put", key, value])
            if watch.wait_for(_shown(value), LIVE_SYNC_WAIT, f"live watch sync {attempt}"):
                watch.discard_output()
                return "[live watch established]"
        return "[live watch NOT established]"

    def _render(self, title: str, stdin: str | None, run: Run, sort_stdout: bool = False) -> str:
        norm = self.normaliser.text
        parts = [title]
        if stdin and len(stdin) > STDIN_SHOWN:
            parts.append(f"< ({len(stdin)} bytes)")
        else:
            parts += [f"< {line}" for line in (stdin or "").splitlines()]
        parts.append(f"exit {run.rc}")
        stdout = norm(run.stdout).splitlines()
        parts += sorted(stdout, key=_event_key) if sort_stdout else stdout
        parts += [f"stderr| {line}" for line in norm(run.stderr).splitlines()]
        return "\n".join(parts)


def _event_key(line: str) -> str:
    """The key of a normalised watch event line (-w json); "" for any other line."""
    try:
        return json.loads(line)["Event"]["kv"]["key"]
    except (ValueError, KeyError, TypeError):
        return ""


def _shown(value: str) -> tuple[str, str]:
    """How a value shows in watch output: as is (simple format) or base64-encoded (-w json)."""
    return value, base64.b64encode(value.encode()).decode()


def assert_same_as_reference(reference: Target, target: Target, name: str, script: list[Step]) -> None:
    """Run `script` on both and assert equal transcripts; the failure message is a unified diff."""
    expected = reference.transcript(name, script)
    actual = target.transcript(name, script)
    assert target.history == reference.history[: len(target.history)], (
        f"scripts ran in a different order: reference {reference.history}, {target.name} {target.history}")
    if actual != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), actual.splitlines(),
                                              f"{reference.name}", target.name, lineterm="", n=2))
        raise AssertionError(f"{name}: {target.name} differs from {reference.name}:\n{diff}")

