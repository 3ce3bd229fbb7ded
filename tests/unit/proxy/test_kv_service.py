"""KVProxy's routing with a scripted upstream: what goes upstream, what is shared, what is cached."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2
from proxy.kv_service import KVProxy
from proxy.metrics import ProxyMetrics
from proxy.namespace import Namespace


class ScriptedRange:
    """The raw upstream Range: each call waits until the test answers it with (value, revision)."""

    def __init__(self):
        self.calls: list[tuple[bytes, asyncio.Future]] = []

    async def __call__(self, raw: bytes, **_kw) -> bytes:
        fut = asyncio.get_running_loop().create_future()
        self.calls.append((raw, fut))
        value, revision = await fut
        req = rpc_pb2.RangeRequest.FromString(raw)
        return rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=revision),
                                     kvs=[kv_pb2.KeyValue(key=req.key, value=value, mod_revision=revision)],
                                     count=1).SerializeToString()

    async def wait_calls(self, n: int, timeout: float = 2.0):
        async def until_n():
            while len(self.calls) < n:
                await asyncio.sleep(0)

        await asyncio.wait_for(until_n(), timeout)


class FakeUpstream:
    def __init__(self, raw_range):
        raw = raw_range

        class Channel:
            @staticmethod
            def unary_unary(*_a, **_k):
                return raw

        self.channel = Channel()


class Context:
    def invocation_metadata(self):
        return ()


def make_proxy() -> tuple[KVProxy, ScriptedRange]:
    upstream = ScriptedRange()
    kv = KVProxy(FakeUpstream(upstream), Namespace(b""), ProxyMetrics(CollectorRegistry()),
                 linearizable_read_interval=0)
    kv.cache.mark_coherent(1)
    return kv, upstream


def value_of(resp: bytes) -> bytes:
    return rpc_pb2.RangeResponse.FromString(resp).kvs[0].value


def test_linearizable_read_never_gets_the_answer_of_a_call_issued_before_it_arrived():
    async def main():
        kv, up = make_proxy()
        raw = rpc_pb2.RangeRequest(key=b"k").SerializeToString()
        first = asyncio.create_task(kv.range(raw, Context()))
        await up.wait_calls(1)
        late = [asyncio.create_task(kv.range(raw, Context())) for _ in range(5)]
        await asyncio.sleep(0)
        up.calls[0][1].set_result((b"old", 5))
        assert value_of(await first) == b"old"
        await up.wait_calls(2)                       # the late readers' own call
        up.calls[1][1].set_result((b"new", 6))
        assert [value_of(await t) for t in late] == [b"new"] * 5
        assert len(up.calls) == 2

    asyncio.run(main())


def test_serializable_misses_share_one_fill_then_hit():
    async def main():
        kv, up = make_proxy()
        raw = rpc_pb2.RangeRequest(key=b"k", serializable=True).SerializeToString()
        readers = [asyncio.create_task(kv.range(raw, Context())) for _ in range(10)]
        await up.wait_calls(1)
        await asyncio.sleep(0)
        up.calls[0][1].set_result((b"v", 5))
        assert [value_of(await t) for t in readers] == [b"v"] * 10
        kv.cache.watch_progress(5)                   # the keyspace watch reached 5
        assert value_of(await kv.range(raw, Context())) == b"v"
        assert len(up.calls) == 1 and kv.singleflight.joined == 9 and kv._metrics.cache_hits == 1

    asyncio.run(main())


def test_a_write_during_a_fill_keeps_its_stale_answer_out_and_later_reads_off_it():
    async def main():
        kv, up = make_proxy()
        raw = rpc_pb2.RangeRequest(key=b"k", serializable=True).SerializeToString()
        early = asyncio.create_task(kv.range(raw, Context()))
        await up.wait_calls(1)
        kv.cache.invalidate_key(b"k", 6)             # a write at 6 is reported during the fill
        after_write = asyncio.create_task(kv.range(raw, Context()))
        await up.wait_calls(2)                       # did not join the pre-write fill
        up.calls[0][1].set_result((b"old", 5))
        assert value_of(await early) == b"old"       # served (it began before the write) ...
        assert kv.cache.get(raw) is None             # ... but never cached
        up.calls[1][1].set_result((b"new", 6))
        assert value_of(await after_write) == b"new"
        kv.cache.watch_progress(6)
        assert value_of(await kv.range(raw, Context())) == b"new"  # cached now

    asyncio.run(main())


def test_an_answer_older_than_what_was_served_is_re_read_linearizably():
    async def main():
        kv, up = make_proxy()
        kv.cache.served(10)                          # e.g. before a failover to a lagging member
        raw = rpc_pb2.RangeRequest(key=b"k", serializable=True).SerializeToString()
        reader = asyncio.create_task(kv.range(raw, Context()))
        await up.wait_calls(1)
        up.calls[0][1].set_result((b"lagging", 8))
        await up.wait_calls(2)
        assert not rpc_pb2.RangeRequest.FromString(up.calls[1][0]).serializable
        up.calls[1][1].set_result((b"fresh", 11))
        assert value_of(await reader) == b"fresh"

    asyncio.run(main())


def header_rev(resp: bytes) -> int:
    return rpc_pb2.RangeResponse.FromString(resp).header.revision


def test_a_hit_after_a_newer_fresh_answer_never_goes_back_in_header_revision():
    # The robustness finding (610 then 609 on one connection): entry A filled at 10; the watch
    # reports a write to b at 11; a fresh read of b is served at 11; then a hit on A (still
    # valid: a unchanged) must not answer 10.
    async def main():
        kv, up = make_proxy()
        kv.cache.watch_progress(10)
        ra = rpc_pb2.RangeRequest(key=b"a", serializable=True).SerializeToString()
        rb = rpc_pb2.RangeRequest(key=b"b", serializable=True).SerializeToString()
        t = asyncio.create_task(kv.range(ra, Context()))
        await up.wait_calls(1)
        up.calls[0][1].set_result((b"va", 10))
        assert header_rev(await t) == 10
        kv.cache.invalidate_key(b"b", 11)            # the keyspace watch: a write to b at 11
        kv.cache.watch_progress(11)
        t = asyncio.create_task(kv.range(rb, Context()))
        await up.wait_calls(2)
        up.calls[1][1].set_result((b"vb", 11))
        assert header_rev(await t) == 11
        hit = await kv.range(ra, Context())
        assert value_of(hit) == b"va" and header_rev(hit) >= 11
        assert len(up.calls) == 2                    # ... and it was a hit

    asyncio.run(main())


def test_a_hit_waits_for_the_watch_to_reach_what_was_served():
    async def main():
        kv, up = make_proxy()
        kv.cache.watch_progress(10)
        ra = rpc_pb2.RangeRequest(key=b"a", serializable=True).SerializeToString()
        rb = rpc_pb2.RangeRequest(key=b"b", serializable=True).SerializeToString()
        t = asyncio.create_task(kv.range(ra, Context()))
        await up.wait_calls(1)
        up.calls[0][1].set_result((b"va", 10))
        await t
        t = asyncio.create_task(kv.range(rb, Context()))
        await up.wait_calls(2)
        up.calls[1][1].set_result((b"vb", 12))      # fresh answer ahead of the watch (W = 10)
        assert header_rev(await t) == 12
        hit = asyncio.create_task(kv.range(ra, Context()))
        await asyncio.sleep(0.01)
        assert not hit.done()                        # waiting for the watch, not answering 10
        kv.cache.watch_progress(12)
        assert header_rev(await hit) == 12 and len(up.calls) == 2

    asyncio.run(main())


def test_a_hit_reads_upstream_when_the_watch_does_not_catch_up():
    async def main():
        kv, up = make_proxy()
        kv.cache.watch_progress(10)
        ra = rpc_pb2.RangeRequest(key=b"a", serializable=True).SerializeToString()
        t = asyncio.create_task(kv.range(ra, Context()))
        await up.wait_calls(1)
        up.calls[0][1].set_result((b"va", 10))
        await t
        kv.cache.served(12)                          # e.g. a write outside the watched namespace
        t = asyncio.create_task(kv.range(ra, Context()))
        await up.wait_calls(2, timeout=1.0)          # after WATCH_WAIT_S
        up.calls[1][1].set_result((b"va", 12))
        assert header_rev(await t) == 12

    asyncio.run(main())


def test_a_joiner_never_gets_a_shared_answer_older_than_what_was_served_before_it_arrived():
    async def main():
        kv, up = make_proxy()
        kv.cache.watch_progress(10)
        ra = rpc_pb2.RangeRequest(key=b"a", serializable=True).SerializeToString()
        rb = rpc_pb2.RangeRequest(key=b"b", serializable=True).SerializeToString()
        early = asyncio.create_task(kv.range(ra, Context()))
        await up.wait_calls(1)                       # fill of a, begun at floor 10
        other = asyncio.create_task(kv.range(rb, Context()))
        await up.wait_calls(2)
        up.calls[1][1].set_result((b"vb", 12))
        assert header_rev(await other) == 12        # served 12 ...
        joiner = asyncio.create_task(kv.range(ra, Context()))  # ... then this one arrives, joins
        await asyncio.sleep(0)
        up.calls[0][1].set_result((b"va", 11))
        assert header_rev(await early) == 11         # fine for the caller that arrived before 12
        await up.wait_calls(3)
        assert not rpc_pb2.RangeRequest.FromString(up.calls[2][0]).serializable
        up.calls[2][1].set_result((b"va", 12))
        assert header_rev(await joiner) == 12

    asyncio.run(main())
