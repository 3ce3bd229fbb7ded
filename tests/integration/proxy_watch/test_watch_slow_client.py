"""A client that never reads is canceled with a reason; a normal watcher of the same key, sharing
the same upstream watch, keeps receiving every event promptly."""

from __future__ import annotations

import asyncio
import time

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from .harness import WatchClient, in_process_proxy

EVENTS = 400
VALUE = b"z" * 16 * 1024


def test_slow_watcher_is_canceled_and_never_stalls_others(etcd1):
    async def run():
        async with in_process_proxy(etcd1.endpoints, send_queue_limit=32) as addr:
            slow_ch = grpc.aio.insecure_channel(addr)
            fast_ch = grpc.aio.insecure_channel(addr)
            kv_ch = grpc.aio.insecure_channel(etcd1.endpoints)
            canceled_before = _slow_canceled()
            slow = WatchClient(slow_ch)
            fast = WatchClient(fast_ch)
            try:
                slow.create(b"hot")
                await slow.created()   # then never read again until the end
                fast.create(b"hot")
                await fast.created()
                kv = rpc_pb2_grpc.KVStub(kv_ch)
                lags = []
                for i in range(EVENTS):
                    put = await kv.Put(rpc_pb2.PutRequest(key=b"hot", value=VALUE + b"%d" % i))
                    t0 = time.monotonic()
                    [event] = await fast.events(1, timeout=5)
                    lags.append(time.monotonic() - t0)
                    assert event.kv.mod_revision == put.header.revision
                assert _slow_canceled() == canceled_before + 1
                # The slow client, reading at last, finds its queued events, then the cancel.
                got = 0
                while True:
                    resp = await slow.read(10)
                    if resp.canceled:
                        break
                    got += len(resp.events)
                assert 0 < got < EVENTS
                return lags, resp
            finally:
                slow.close()
                fast.close()
                for ch in (slow_ch, fast_ch, kv_ch):
                    await ch.close()

    lags, cancel = asyncio.run(run())
    assert cancel.watch_id == 0 and cancel.canceled
    assert "too slow" in cancel.cancel_reason
    lags.sort()
    assert lags[int(len(lags) * 0.99)] < 0.5, f"p99 delivery lag of the normal watcher: {lags[-5:]}"


def _slow_canceled() -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("kvproxy_watch_slow_canceled_total") or 0.0
