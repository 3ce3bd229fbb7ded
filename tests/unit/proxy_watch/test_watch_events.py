"""EventBatch: per-view encoding, filters, prev_kv stripping, fragments, watch_id concatenation."""

from __future__ import annotations

from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2
from proxy.coalesce.watch_events import EventBatch, WatchView, watch_id_field

HEADER = rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=7, raft_term=3)


def put(key: bytes, rev: int, value: bytes = b"v", prev: bytes | None = None) -> kv_pb2.Event:
    e = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=key, value=value, mod_revision=rev))
    if prev is not None:
        e.prev_kv.CopyFrom(kv_pb2.KeyValue(key=key, value=prev, mod_revision=rev - 1))
    return e


def delete(key: bytes, rev: int) -> kv_pb2.Event:
    e = kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=key, mod_revision=rev))
    e.prev_kv.CopyFrom(kv_pb2.KeyValue(key=key, value=b"old", mod_revision=rev - 1))
    return e


def parse(bodies: list[bytes], watch_id: int) -> list[rpc_pb2.WatchResponse]:
    return [rpc_pb2.WatchResponse.FromString(b + watch_id_field(watch_id)) for b in bodies]


def test_prev_kv_is_kept_only_for_watchers_that_asked():
    batch = EventBatch(HEADER, [put(b"a", 7, prev=b"p")])
    [with_prev] = parse(batch.bodies(WatchView(prev_kv=True)), 5)
    [without] = parse(batch.bodies(WatchView()), 6)
    assert with_prev.watch_id == 5 and with_prev.events[0].prev_kv.value == b"p"
    assert without.watch_id == 6 and not without.events[0].HasField("prev_kv")
    assert without.header == HEADER
    assert batch.events[0].HasField("prev_kv"), "the shared events are not modified"


def test_filters_and_all_filtered_sends_nothing():
    batch = EventBatch(HEADER, [put(b"a", 7), delete(b"b", 7)])
    [noput] = parse(batch.bodies(WatchView(no_put=True)), 1)
    assert [e.type for e in noput.events] == [kv_pb2.Event.DELETE]
    [nodel] = parse(batch.bodies(WatchView(no_delete=True)), 1)
    assert [e.type for e in nodel.events] == [kv_pb2.Event.PUT]
    assert EventBatch(HEADER, [put(b"a", 7)]).bodies(WatchView(no_put=True)) == []


def test_views_are_cached_but_partial_views_are_not():
    batch = EventBatch(HEADER, [put(b"a", 5), put(b"a", 6), put(b"a", 7)])
    assert batch.bodies(WatchView()) is batch.bodies(WatchView())
    [partial] = parse(batch.bodies(WatchView(), min_revision=6), 0)
    assert [e.kv.mod_revision for e in partial.events] == [6, 7]
    [whole] = parse(batch.bodies(WatchView()), 0)
    assert len(whole.events) == 3


def test_watch_id_zero_and_negative_concatenate():
    batch = EventBatch(HEADER, [put(b"a", 7)])
    assert parse(batch.bodies(WatchView()), 0)[0].watch_id == 0
    assert parse(batch.bodies(WatchView()), -1)[0].watch_id == -1


def test_fragments_split_like_etcd():
    events = [put(b"k%d" % i, 7, value=b"x" * 1000) for i in range(10)]
    batch = EventBatch(HEADER, events)
    limit = 3500
    frags = parse(batch.bodies(WatchView(fragment=True), fragment_bytes=limit), 9)
    assert len(frags) > 1
    assert [f.fragment for f in frags] == [True] * (len(frags) - 1) + [False]
    assert [e for f in frags for e in f.events] == events
    for f in frags:
        assert f.ByteSize() < limit or len(f.events) == 1
        assert f.watch_id == 9 and f.header == HEADER
    # Not asked for, or small enough: one whole response.
    assert len(batch.bodies(WatchView(), fragment_bytes=limit)) == 1
    assert len(batch.bodies(WatchView(fragment=True), fragment_bytes=10**6)) == 1


def test_a_single_huge_event_is_never_split():
    batch = EventBatch(HEADER, [put(b"k", 7, value=b"x" * 5000)])
    [only] = parse(batch.bodies(WatchView(fragment=True), fragment_bytes=100), 1)
    assert not only.fragment and len(only.events) == 1
