"""`AlarmSet`: the cluster's active alarms (NOSPACE, CORRUPT), as etcd's alarm store.

Alarms change only by applying an AlarmRequest entry (so every member agrees). They are kept in
memory and persisted to a small JSON file beside the store, rewritten atomically on each change;
changes happen on the apply thread, reads (Status, Alarm GET, the write gate) on the event loop
take the tuple snapshot, which is replaced, never mutated.
"""

from __future__ import annotations

import json
import os

from protos.etcdserverpb import rpc_pb2

NOSPACE = rpc_pb2.NOSPACE


class AlarmSet:
    """Active alarms as (member_id, alarm type) pairs."""

    def __init__(self, path: str):
        self._path = path
        self._active: tuple[tuple[int, int], ...] = ()
        try:
            with open(path) as f:
                self._active = tuple((int(m), int(a)) for m, a in json.load(f))
        except FileNotFoundError:
            pass

    @property
    def active(self) -> tuple[tuple[int, int], ...]:
        return self._active

    @property
    def no_space(self) -> bool:
        return any(a == NOSPACE for _, a in self._active)

    def members(self) -> list[rpc_pb2.AlarmMember]:
        return [rpc_pb2.AlarmMember(memberID=m, alarm=a) for m, a in self._active]

    def apply(self, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        """Apply thread: ACTIVATE/DEACTIVATE; the response lists the alarm changed, as etcd."""
        resp = rpc_pb2.AlarmResponse()
        pair = (req.memberID, int(req.alarm))
        if req.action == rpc_pb2.AlarmRequest.ACTIVATE:
            if req.alarm == rpc_pb2.NONE:
                return resp
            if pair not in self._active:
                self._save(self._active + (pair,))
            resp.alarms.add(memberID=pair[0], alarm=pair[1])
        elif req.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            if pair in self._active:
                self._save(tuple(p for p in self._active if p != pair))
                resp.alarms.add(memberID=pair[0], alarm=pair[1])
        else:
            resp.alarms.extend(self.members())
        return resp

    def _save(self, active: tuple[tuple[int, int], ...]) -> None:
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            json.dump([list(p) for p in active], f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        self._active = active
