"""`AlarmSet`: the cluster's active alarms (NOSPACE, CORRUPT), as etcd's alarm store.

Alarms change only by applying an AlarmRequest entry (so every member agrees). They live in the
MVCC store (a server record, `WriteBatch.put_server_meta(b"alarms", ...)`), written in the same
transaction as the batch that applies the entry: they are durable exactly with the applied
index, and a leader's snapshot image carries them to a follower (`reload` after the install).

Threads: `apply` runs on the apply thread inside a batch; what it changes is *staged* until the
applier calls `commit_staged` (the batch committed) or `discard_staged` (the batch was aborted).
Later entries of the same batch see the staged set (`no_space_staged`). The event loop (Status,
Alarm GET, the write gate, /health) reads `active`, a tuple that is replaced, never mutated.
"""

from __future__ import annotations

import json

from protos.etcdserverpb import rpc_pb2

NOSPACE = rpc_pb2.NOSPACE
STORE_RECORD = b"alarms"

Alarms = tuple[tuple[int, int], ...]


def _decode(raw: bytes | None) -> Alarms:
    return tuple((int(m), int(a)) for m, a in json.loads(raw)) if raw else ()


class AlarmSet:
    """Active alarms as (member_id, alarm type) pairs, kept in `store`."""

    def __init__(self, store):
        self._store = store
        self._active: Alarms = ()
        self._staged: Alarms | None = None
        self.reload()

    def reload(self) -> None:
        """Read the alarms from the store (at start, and after the store installed an image)."""
        self._active = _decode(self._store.server_meta(STORE_RECORD))
        self._staged = None

    @property
    def active(self) -> Alarms:
        return self._active

    @property
    def no_space(self) -> bool:
        return any(a == NOSPACE for _, a in self._active)

    def no_space_staged(self) -> bool:
        """Apply thread: NOSPACE as of the entries applied so far in the open batch."""
        current = self._active if self._staged is None else self._staged
        return any(a == NOSPACE for _, a in current)

    def members(self) -> list[rpc_pb2.AlarmMember]:
        return [rpc_pb2.AlarmMember(memberID=m, alarm=a) for m, a in self._active]

    def apply(self, batch, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        """Apply thread: ACTIVATE/DEACTIVATE in `batch`; the response lists the alarm changed,
        as etcd's."""
        current = self._active if self._staged is None else self._staged
        resp = rpc_pb2.AlarmResponse()
        pair = (req.memberID, int(req.alarm))
        if req.action == rpc_pb2.AlarmRequest.ACTIVATE:
            if req.alarm == rpc_pb2.NONE:
                return resp
            if pair not in current:
                self._stage(batch, current + (pair,))
            resp.alarms.add(memberID=pair[0], alarm=pair[1])
        elif req.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            if pair in current:
                self._stage(batch, tuple(p for p in current if p != pair))
                resp.alarms.add(memberID=pair[0], alarm=pair[1])
        else:
            resp.alarms.extend(rpc_pb2.AlarmMember(memberID=m, alarm=a) for m, a in current)
        return resp

    def commit_staged(self) -> None:
        if self._staged is not None:
            self._active, self._staged = self._staged, None

    def discard_staged(self) -> None:
        self._staged = None

    def _stage(self, batch, alarms: Alarms) -> None:
        batch.put_server_meta(STORE_RECORD, json.dumps([list(p) for p in alarms]).encode())
        self._staged = alarms
