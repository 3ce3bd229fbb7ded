"""Normalisation of etcdctl output: remove what legitimately differs between two members.

Two members that apply the same operations from revision 1 must print the same thing, except:

- identities: cluster and member IDs, lease IDs, the raft term and raft index. Each is replaced by
  a token (`<MEMBER1>`, `<LEASE2>`, `<INDEX3>` ...) numbered in order of first appearance, so
  that equal values stay equal and different values stay different;
- timings: timestamps, `took` durations, and a lease's *remaining* TTL when it lies within
  `REMAINING_TTL_SLACK` seconds below its granted TTL (a value outside that window is kept, so a
  wrong TTL still shows as a difference);
- the storage engine: db sizes (bbolt vs LMDB) and the server version string;
- the environment: the endpoint's port, the temporary directory, etcdctl's random client UUIDs;
- Go map iteration order, which etcd itself does not keep stable: the order of `lease list` and of
  a lease's attached keys;
- how watch events are grouped into responses, and the header revision of a response carrying
  events: both depend on timing (each event is still compared, in order).

Revisions, keys, values, counts, hashes of the key-value history, error texts and exit codes are
kept as they are. docs/interop.md explains each rule.
"""

from __future__ import annotations

import json
import re
from typing import Any

REMAINING_TTL_SLACK = 30  # seconds: generous for a loaded machine, still catches a wrong TTL

# JSON fields (etcdctl -w json, and etcdctl's own JSON log lines) by what they hold.
_ID_FIELDS = {
    "cluster_id": "CLUSTER", "member_id": "MEMBER", "leader": "MEMBER",
    "raft_term": "TERM", "raftTerm": "TERM",
    "raftIndex": "INDEX", "raftAppliedIndex": "INDEX",
    # Only lease commands print an ID/id field among the commands we run.
    "ID": "LEASE", "id": "LEASE", "lease": "LEASE",
}
_OPAQUE_FIELDS = {"dbSize": "<SIZE>", "dbSizeInUse": "<SIZE>", "took": "<TOOK>", "ts": "<TS>"}
# Replaced only when they hold a string: a key's "version" is an int and is kept.
_OPAQUE_STRING_FIELDS = {"version": "<VERSION>", "size": "<SIZE>"}

_CLIENT_UUID = re.compile(r"client-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TOOK = re.compile(r"took = [0-9.]+[µnm]?s")
_LEASE_HEX = re.compile(r"\blease ([0-9a-f]{16})\b")
_LEASE_LIST_HEADER = re.compile(r"^found \d+ leases$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_REMAINING = re.compile(r"granted with TTL\((\d+)s\), remaining\((-?\d+)s\)")
_ATTACHED = re.compile(r"attached keys\(\[(.*)\]\)")
_SIZE = re.compile(r"^\d+(\.\d+)? [kMG]?B$")
# Columns of `endpoint status` (simple format, and the table's header names).
_STATUS_COLUMNS = ["endpoint", "MEMBER", "VERSION", "SIZE", None, None, "TERM", "INDEX", "INDEX", None]
_TABLE_COLUMNS = {
    "ID": "MEMBER", "VERSION": "VERSION", "DB SIZE": "SIZE", "RAFT TERM": "TERM",
    "RAFT INDEX": "INDEX", "RAFT APPLIED INDEX": "INDEX", "TOOK": "TOOK",
}


class IdTokens:
    """Consistent tokens for identities: the same (kind, value) always gets the same token."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, int], str] = {}
        self._counts: dict[str, int] = {}

    def token(self, kind: str, value: int) -> str:
        if value == 0:  # "no lease", "no leader": meaningful, and the same everywhere
            return "0"
        key = (kind, value)
        if key not in self._tokens:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._tokens[key] = f"<{kind}{self._counts[kind]}>"
        return self._tokens[key]


class Normaliser:
    """Normalises the outputs of one target's etcdctl runs, in the order they were produced.

    `endpoint` (host:port) and `tmp_dir` are this target's; both are replaced by fixed tokens.
    """

    def __init__(self, endpoint: str, tmp_dir: str):
        self.endpoint = endpoint
        self.tmp_dir = tmp_dir
        self.ids = IdTokens()
        self._in_table = False  # inside an etcdctl table (borders and | rows)
        self._header_next = False  # the next | row is the table's header
        self._table_kinds: list[str | None] = []

    def text(self, output: str) -> str:
        """Normalise a whole stdout or stderr text, line by line."""
        output = output.replace(self.tmp_dir, "<TMP>").replace(self.endpoint, "<ENDPOINT>")
        self._in_table = False
        out: list[str] = []
        lease_list: list[str] | None = None  # the IDs after "found N leases", in Go map order
        for line in output.splitlines():
            if lease_list is not None and _HEX16.match(line):
                lease_list.append(self.ids.token("LEASE", int(line, 16)))
                continue
            out.extend(sorted(lease_list or []))
            lease_list = [] if _LEASE_LIST_HEADER.match(line) else None
            out.append(self._line(line))
        out.extend(sorted(lease_list or []))
        return "\n".join(out)

    def _line(self, line: str) -> str:
        stripped = line.strip()
        if stripped.startswith(("{", "[")):
            try:
                doc = json.loads(stripped)
            except ValueError:
                pass
            else:
                if isinstance(doc, dict) and "Events" in doc:
                    return self._watch_response(doc)
                return json.dumps(self._json(doc))
        if line.startswith("+-"):
            self._header_next = not self._in_table
            self._in_table = True
            return "+-+"
        if line.startswith("|") and self._in_table:
            return self._table_row(line)
        self._in_table = False
        if line.startswith("<ENDPOINT>, ") and line.count(", ") >= 8:
            return self._status_line(line)
        line = _CLIENT_UUID.sub("client-<UUID>", line)
        line = _TOOK.sub("took = <TOOK>", line)
        line = _LEASE_HEX.sub(lambda m: "lease " + self.ids.token("LEASE", int(m.group(1), 16)), line)
        line = _REMAINING.sub(self._remaining, line)
        return _ATTACHED.sub(lambda m: "attached keys([" + " ".join(sorted(m.group(1).split())) + "])", line)

    def _json(self, doc: Any) -> Any:
        if isinstance(doc, list):
            return [self._json(x) for x in doc]
        if not isinstance(doc, dict):
            return doc
        out: dict[str, Any] = {}
        for k, v in doc.items():
            if k in _ID_FIELDS and isinstance(v, int):
                out[k] = self.ids.token(_ID_FIELDS[k], v)
            elif k in _OPAQUE_FIELDS:
                out[k] = _OPAQUE_FIELDS[k]
            elif k in _OPAQUE_STRING_FIELDS and isinstance(v, str):
                out[k] = _OPAQUE_STRING_FIELDS[k]
            elif isinstance(v, str):
                out[k] = _CLIENT_UUID.sub("client-<UUID>", v)
            else:
                out[k] = self._json(v)
        if "ttl" in doc and "granted-ttl" in doc:  # lease timetolive
            out["ttl"] = _remaining_ttl(doc["granted-ttl"], doc["ttl"])
            if out.get("keys"):
                out["keys"] = sorted(out["keys"])
        if isinstance(out.get("leases"), list):  # lease list
            out["leases"] = sorted(out["leases"], key=lambda x: json.dumps(x, sort_keys=True))
        return out

    def _watch_response(self, doc: dict) -> str:
        """A watch response (-w json) as one line per event, or itself when it has none.

        How etcd groups events into responses, and the store revision in the header, depend on
        timing (catch-up batches, writes racing the watch start), so neither is compared.
        """
        if doc["Events"]:
            return "\n".join(json.dumps({"Event": self._json(e)}) for e in doc["Events"])
        header = {k: v for k, v in doc.get("Header", {}).items() if k != "revision"}
        return json.dumps(self._json({**doc, "Header": header}))

    def _table_row(self, line: str) -> str:
        """A row of an etcdctl table, re-rendered without padding; the header names the columns."""
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if self._header_next:
            self._header_next = False
            self._table_kinds = [_TABLE_COLUMNS.get(name) for name in cells]
        else:
            kinds = self._table_kinds + [None] * (len(cells) - len(self._table_kinds))
            cells = [self._cell(kind, c) for kind, c in zip(kinds, cells)]
        return "| " + " | ".join(cells) + " |"

    def _status_line(self, line: str) -> str:
        cells = line.split(", ")
        return ", ".join(self._cell(kind, c) for kind, c in zip(_STATUS_COLUMNS, cells))

    def _cell(self, kind: str | None, cell: str) -> str:
        """One value of an `endpoint status` / `endpoint health` row (simple or table)."""
        if kind == "MEMBER" and _HEX.match(cell):
            return self.ids.token("MEMBER", int(cell, 16))
        if kind in ("TERM", "INDEX") and cell.isdigit():
            return self.ids.token(kind, int(cell))
        if kind == "SIZE" and _SIZE.match(cell):
            return "<SIZE>"
        if kind in ("VERSION", "TOOK"):
            return f"<{kind}>"
        return cell

    @staticmethod
    def _remaining(m: re.Match) -> str:
        granted, remaining = int(m.group(1)), int(m.group(2))
        return f"granted with TTL({granted}s), remaining({_remaining_ttl(granted, remaining)}s)"


def _remaining_ttl(granted: int, remaining: int) -> int | str:
    """A remaining TTL plausibly just below the granted one is a timing: hide it; else keep it."""
    if granted > 0 and granted - REMAINING_TTL_SLACK <= remaining <= granted:
        return "<REMAINING>"
    return remaining
