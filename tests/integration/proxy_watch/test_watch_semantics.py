"""Watch semantics through `kvproxy` are etcd 3.4.23's: the same scripted session is run against a
fresh etcd directly and against another fresh etcd through the proxy, and the transcripts (every
response, per watch id, in order) must be equal.

The script covers: auto and client-chosen watch ids, etcd's duplicate-id error, prev_kv on/off on
one key, NOPUT/NODELETE filters, replay from an old revision, a compacted start revision, a future
start revision, a prefix watch, cancel (known and unknown id), WatchProgressRequest, and fragment
(a response above etcd's 2 MiB limit, split for the watcher that asked and whole for the others).
"""

from __future__ import annotations

import asyncio

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.etcd_ref import ClusterSpec, start_etcd_cluster

from .harness import WatchClient, start_healthy_kvproxy

BIG = 700 * 1024  # two of these with their prev_kvs exceed etcd's 2 MiB fragment limit


def normalise(resp: rpc_pb2.WatchResponse) -> tuple:
    events = tuple(
        (e.type, e.kv.key, e.kv.value[:16], len(e.kv.value), e.kv.mod_revision, e.kv.version,
         e.HasField("prev_kv"), e.prev_kv.value[:16], e.prev_kv.mod_revision)
        for e in resp.events)
    return (resp.watch_id, resp.created, resp.canceled, resp.compact_revision, resp.cancel_reason,
            resp.fragment, resp.header.revision, events)


async def session(kv_addr: str, watch_addr: str) -> list[list[tuple]]:
    """Run the script; returns the responses of each phase, sorted by watch id (stable)."""
    kv_channel = grpc.aio.insecure_channel(kv_addr, options=[("grpc.max_receive_message_length", -1)])
    watch_channel = grpc.aio.insecure_channel(watch_addr, options=[("grpc.max_receive_message_length", -1)])
    kv = rpc_pb2_grpc.KVStub(kv_channel)
    w = WatchClient(watch_channel)
    phases: list[list[tuple]] = []

    async def phase(count: int) -> None:
        got = [normalise(await w.read(10)) for _ in range(count)]
        phases.append(sorted(got, key=lambda r: r[0]))

    try:
        for i in range(5):
            await kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"v%d" % i))    # revisions 2..6
        await kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"x"))              # 7
        await kv.Compact(rpc_pb2.CompactionRequest(revision=3, physical=True))

        create = rpc_pb2.WatchCreateRequest
        w.create(b"a")                                       # auto id 0
        await phase(1)
        w.create(b"a", prev_kv=True, watch_id=7)
        await phase(1)
        w.create(b"a", watch_id=7)                           # duplicate
        await phase(1)
        w.create(b"a", start_revision=4, prev_kv=True)       # replay 4..6 (auto id 1)
        await phase(2)
        w.create(b"a", start_revision=2)                     # compacted (auto id 2)
        await phase(2)
        w.send(rpc_pb2.WatchRequest(create_request=create(key=b"a", filters=[create.NOPUT])))    # id 3
        await phase(1)
        w.send(rpc_pb2.WatchRequest(create_request=create(key=b"a", filters=[create.NODELETE])))  # id 4
        await phase(1)
        w.create(b"a", start_revision=9)                     # future (id 5)
        await phase(1)
        w.create(b"", range_end=b"\0", watch_id=100)         # every key
        await phase(1)

        await kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"v5"))      # 8
        await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a"))   # 9
        await kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"v6"))      # 10
        # 0: 3 events in up to 3 responses ... counted per watcher: 0,7,1 get 3; 3 gets 1 (delete);
        # 4 gets 2 (puts); 5 gets 2 (from 9); 100 gets 3.
        await phase(3 + 3 + 3 + 1 + 2 + 2 + 3)

        w.progress()
        await phase(1)
        w.cancel(7)
        await phase(1)
        w.cancel(12345)                                      # unknown: no answer
        w.create(b"big", range_end=b"bih", watch_id=20, prev_kv=True, fragment=True)
        w.create(b"big", range_end=b"bih", watch_id=21, prev_kv=True)
        await phase(2)
        for _ in range(2):
            await kv.Txn(rpc_pb2.TxnRequest(success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"big1", value=b"x" * BIG)),
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"big2", value=b"y" * BIG)),
            ]))
        # First txn: 1 response for each of 20, 21, 100. Second (> 2 MiB with prev_kvs): 2
        # fragments for 20, one whole response for 21 and for 100 (which has no prev_kv).
        await phase(3 + 4)
        w.progress()
        await phase(1)  # nothing else was pending: the next response is the progress answer
        return phases
    finally:
        w.close()
        await kv_channel.close()
        await watch_channel.close()


def test_watch_session_through_proxy_equals_etcd(procs, tmp_path):
    direct = start_etcd_cluster(procs, ClusterSpec.allocate(str(tmp_path / "direct"), 1))
    behind = start_etcd_cluster(procs, ClusterSpec.allocate(str(tmp_path / "behind"), 1))
    proxy = start_healthy_kvproxy(procs, behind)
    direct_addr = direct.endpoints
    expected = asyncio.run(session(direct_addr, direct_addr))
    got = asyncio.run(session(behind.endpoints, proxy.listen_addr))
    for i, (want, have) in enumerate(zip(expected, got)):
        assert have == want, f"phase {i}:\n etcd:  {want}\n proxy: {have}"
    assert len(got) == len(expected)
    # Sanity: the transcript really exercised what it claims.
    flat = [r for p in expected for r in p]
    assert any(r[4] == "mvcc: duplicate watch ID provided on the WatchStream" for r in flat)
    assert any(r[3] == 3 and r[2] for r in flat), "compacted cancel"
    assert any(r[5] for r in flat), "a fragment"
    assert any(r[0] == -1 and not r[1] for r in flat), "a progress response"
