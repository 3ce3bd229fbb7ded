"""ApplyLoop over a real MVCCStore: alarms are kept in the store with the applied index, and a
full LMDB map neither stops the member nor half-applies a batch (it asks for NOSPACE)."""

from __future__ import annotations

import asyncio

from cluster.mvcc import MVCCStore
from cluster.server.alarms import AlarmSet
from cluster.server.applier import ApplyLoop
from cluster.server.lessor import Lessor
from cluster.server.request_wait import RequestWait
from cluster.server.seam import Entry
from protos.etcdserverpb import rpc_pb2
from protos.kvpb import internal_pb2

TINY_MAP = 1 << 20
MEMBER = 0xABC


def entry(index: int, **request) -> Entry:
    return Entry(index, 1, internal_pb2.InternalRequest(id=index, **request).SerializeToString())


def nospace(action) -> dict:
    return {"alarm": rpc_pb2.AlarmRequest(action=action, memberID=MEMBER, alarm=rpc_pb2.NOSPACE)}


class Applier:
    """An ApplyLoop on `path`, recording whether it asked for the NOSPACE alarm."""

    def __init__(self, path: str, map_size: int = 8 << 30, quota_bytes: int = 0):
        self.store = MVCCStore(path, map_size=map_size)
        self.alarms = AlarmSet(self.store)
        self.store_full_calls = 0
        self.loop = ApplyLoop(self.store, Lessor(5, lambda _id: None), self.alarms, RequestWait(),
                              lambda changes, rev: None, quota_bytes=quota_bytes,
                              on_no_space=self._store_full)

    def _store_full(self) -> None:
        self.store_full_calls += 1
        return None  # as when an alarm is already active: answers are not held

    async def close(self) -> None:
        await self.loop.close()
        self.store.close()


def test_alarms_are_committed_with_the_batch_and_survive_reopening(tmp_path):
    async def run():
        a = Applier(str(tmp_path / "db"))
        await a.loop.apply([entry(1, **nospace(rpc_pb2.AlarmRequest.ACTIVATE)),
                            entry(2, put=rpc_pb2.PutRequest(key=b"k", value=b"v"))])
        assert a.alarms.active == ((MEMBER, rpc_pb2.NOSPACE),)
        assert a.store.range(rpc_pb2.RangeRequest(key=b"k")).count == 0  # refused in the same batch
        await a.close()
        b = Applier(str(tmp_path / "db"))
        assert b.alarms.active == ((MEMBER, rpc_pb2.NOSPACE),) and b.store.applied_index == 2
        await b.loop.apply([entry(3, **nospace(rpc_pb2.AlarmRequest.DEACTIVATE)),
                            entry(4, put=rpc_pb2.PutRequest(key=b"k", value=b"v"))])
        assert b.alarms.active == () and b.store.range(rpc_pb2.RangeRequest(key=b"k")).count == 1
        await b.close()
        c = Applier(str(tmp_path / "db"))
        assert c.alarms.active == ()
        await c.close()

    asyncio.run(run())


def test_a_full_map_applies_the_whole_batch_in_a_grown_map_and_asks_for_nospace(tmp_path):
    async def run():
        a = Applier(str(tmp_path / "db"), map_size=TINY_MAP)
        value = b"x" * 4000
        batch = [entry(i, put=rpc_pb2.PutRequest(key=b"k%04d" % i, value=value)) for i in range(1, 600)]
        await a.loop.apply(batch)  # ~2.4 MB into a 1 MiB map
        assert a.store_full_calls == 1
        assert a.store.map_size > TINY_MAP
        assert a.store.applied_index == 599
        assert a.store.range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l", count_only=True)).count == 599
        await a.loop.apply([entry(600, **nospace(rpc_pb2.AlarmRequest.ACTIVATE))])
        assert a.alarms.no_space
        await a.close()

    asyncio.run(run())


def test_a_write_past_the_quota_is_applied_but_answered_nospace(tmp_path):
    """etcd's quotaApplierV3: every member applies the write; it answers NO_SPACE and asks for
    the alarm when its own store reaches the quota."""
    async def run():
        a = Applier(str(tmp_path / "db"), quota_bytes=200_000)
        wait = a.loop.wait
        futures = {i: wait.register(i) for i in (1, 2)}
        await a.loop.apply([entry(1, put=rpc_pb2.PutRequest(key=b"small", value=b"v"))])
        assert (await futures[1]).header is not None and a.store_full_calls == 0
        await a.loop.apply([entry(2, put=rpc_pb2.PutRequest(key=b"big", value=b"x" * 300_000))])
        try:
            await futures[2]
            raise AssertionError("the put past the quota was acknowledged")
        except Exception as exc:
            assert getattr(exc, "message", "") == "etcdserver: mvcc: database space exceeded"
        assert a.store_full_calls == 1
        assert a.store.range(rpc_pb2.RangeRequest(key=b"big")).count == 1  # applied all the same
        await a.close()

    asyncio.run(run())
