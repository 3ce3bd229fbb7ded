"""Failpoints for fault-injection tests, in the spirit of etcd's gofail (test hooks, off in production).

Configuration is read once, when this module is first imported, from the environment:

    KVCLUSTER_FAILPOINTS="raftWalFsync=sleep(300)"        # name=term[;name=term...]
    KVCLUSTER_FAILPOINTS_WHILE=/path/to/file              # optional: fire only while it exists

Terms: `sleep(ms)` (block the calling thread that long) and `off`. With
KVCLUSTER_FAILPOINTS_WHILE set, a configured failpoint fires only while that file exists (one
stat per hit), so a test can switch a running member's failpoint on and off, as gofail's HTTP
endpoint allows for etcd.

Zero cost when off: `failpoint(name)` returns None for a name that is not configured, and call
sites keep that in a module-level constant and test it (`if FP: FP()`).

Failpoints in the code (name: where, what it models):
- `raftWalFsync`: cluster/replication/raft_wal.py, before the WAL fsync of a Ready (on the WAL
  worker thread): a slow disk.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Callable

log = logging.getLogger(__name__)

_TERM = re.compile(r"^(?:sleep\((\d+)\)|(off))$")


def _parse(spec: str) -> dict[str, Callable[[], None]]:
    hooks: dict[str, Callable[[], None]] = {}
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, term = item.partition("=")
        m = _TERM.match(term.strip())
        if not name or m is None:
            raise ValueError(f"bad failpoint {item!r} in KVCLUSTER_FAILPOINTS (want name=sleep(ms) or name=off)")
        if m.group(1) is not None:
            seconds = int(m.group(1)) / 1000.0
            hooks[name.strip()] = lambda s=seconds: time.sleep(s)
    return hooks


def _gate(hook: Callable[[], None], path: str) -> Callable[[], None]:
    def gated() -> None:
        if os.path.exists(path):
            hook()
    return gated


_HOOKS = _parse(os.environ.get("KVCLUSTER_FAILPOINTS", ""))
if _HOOKS:
    _while = os.environ.get("KVCLUSTER_FAILPOINTS_WHILE", "")
    if _while:
        _HOOKS = {name: _gate(hook, _while) for name, hook in _HOOKS.items()}
    log.warning("failpoints enabled", extra={"fields": {"failpoints": sorted(_HOOKS), "while": _while or None}})


def failpoint(name: str) -> Callable[[], None] | None:
    """The hook to call at failpoint `name`, or None when it is not enabled."""
    return _HOOKS.get(name)
