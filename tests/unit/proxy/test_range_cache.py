"""CoherentRangeCache: insertion rules, invalidation, bounds, the fill/write race."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protos.etcdserverpb import rpc_pb2
from proxy.cache.range_cache import STALE, CoherentRangeCache, in_range, ranges_overlap


def body(out):
    """The cached answer without the header field a hit prepends (None / STALE passed through)."""
    if not out:
        return out
    assert out[0] == 0x0A
    n, i, shift = 0, 1, 0
    while True:
        b = out[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if b < 0x80:
            break
    return out[i + n:]


def header_revision(out) -> int:
    header_field = out[:len(out) - len(body(out))]
    return rpc_pb2.RangeResponse.FromString(header_field).header.revision


def coherent_cache(**kw) -> tuple[CoherentRangeCache, list]:
    detached = []
    cache = CoherentRangeCache(detach=detached.append, **kw)
    cache.mark_coherent(10)
    return cache, detached


def fill_and_insert(cache, ck, key, end=b"", revision=10, pinned=0, data=b"resp"):
    fill = cache.begin_fill(ck, key, end, pinned)
    inserted = cache.insert(fill, data, revision)
    cache.end_fill(fill)
    return inserted


def test_nothing_is_inserted_before_the_watch_is_established():
    cache = CoherentRangeCache()
    assert not fill_and_insert(cache, b"k", b"a")
    assert cache.get(b"k") is None
    cache.mark_coherent(5)
    assert fill_and_insert(cache, b"k", b"a", revision=5)
    assert body(cache.get(b"k")) == b"resp"


def test_point_write_invalidates_only_ranges_containing_the_key():
    cache, _ = coherent_cache()
    fill_and_insert(cache, "a", b"a")
    fill_and_insert(cache, "b", b"b")
    fill_and_insert(cache, "a-c", b"a", b"c")
    fill_and_insert(cache, "from-b", b"b", b"\0")
    fill_and_insert(cache, "c-d", b"c", b"d")
    cache.invalidate_key(b"b", 11)
    assert [ck for ck in ("a", "b", "a-c", "from-b", "c-d") if cache.get(ck) is not None] == ["a", "c-d"]
    assert cache.floor == 11


def test_range_delete_invalidates_overlapping_entries():
    cache, _ = coherent_cache()
    for k in (b"a", b"b", b"c"):
        fill_and_insert(cache, k, k)
    fill_and_insert(cache, "bb-z", b"bb", b"z")
    cache.invalidate_range(b"b", b"c", 12)
    assert [ck for ck in (b"a", b"b", b"c", "bb-z") if cache.get(ck) is not None] == [b"a", b"c"]


def test_fill_overtaken_by_a_write_is_not_inserted_and_is_detached():
    # The race of invariant 2: the fill's answer predates a write reported during the fill.
    cache, detached = coherent_cache()
    fill = cache.begin_fill(b"ck", b"k", b"", 0)
    cache.invalidate_key(b"k", 11)
    assert detached == [b"ck"]
    assert not cache.insert(fill, b"old", 10)
    assert cache.get(b"ck") is None


def test_fill_answer_containing_the_write_is_inserted():
    cache, _ = coherent_cache()
    fill = cache.begin_fill(b"ck", b"k", b"", 0)
    cache.invalidate_key(b"k", 11)
    assert cache.insert(fill, b"new", 11)
    assert cache.get(b"ck") is STALE  # the watch has not reported 11 yet
    cache.watch_progress(11)
    assert body(cache.get(b"ck")) == b"new"


def test_answer_older_than_floor_at_start_is_refused():
    cache, _ = coherent_cache()
    cache.served(20)
    fill = cache.begin_fill(b"ck", b"k", b"", 0)
    assert fill.floor == 20
    assert not cache.insert(fill, b"lagging", 19)


def test_flush_drops_everything_and_fills_from_before_it():
    cache, detached = coherent_cache()
    fill_and_insert(cache, b"x", b"x")
    fill = cache.begin_fill(b"y", b"y", b"", 0)
    cache.flush()
    assert cache.get(b"x") is None and len(cache) == 0 and not cache.coherent
    assert detached == [b"y"]
    cache.mark_coherent(30)
    assert not cache.insert(fill, b"resp", 30)  # started in an older epoch


def test_pinned_entries_survive_writes_and_go_with_compaction():
    cache, _ = coherent_cache()
    fill_and_insert(cache, "k@5", b"k", pinned=5, revision=10)
    fill_and_insert(cache, "k@8", b"k", pinned=8, revision=10)
    cache.invalidate_key(b"k", 11)
    assert cache.get("k@5") is not None and cache.get("k@8") is not None
    cache.evict_compacted(6)
    assert cache.get("k@5") is None and cache.get("k@8") is not None


def test_bounded_by_entries_and_eviction_leaves_the_index():
    cache, _ = coherent_cache(max_entries=3)
    for i in range(5):
        fill_and_insert(cache, bytes([i]), bytes([i]))
    assert len(cache) == 3
    assert cache.get(b"\x00") is None and cache.get(b"\x04") is not None
    assert sorted(cache._point) == [b"\x02", b"\x03", b"\x04"]


def test_bounded_by_bytes():
    cache, _ = coherent_cache(max_bytes=2000)
    for i in range(20):
        fill_and_insert(cache, bytes([i]), bytes([i]), data=b"v" * 300)
    assert cache.size_bytes <= 2000
    assert 0 < len(cache) < 20
    assert cache.get(bytes([19])) is not None


def test_replacing_an_entry_keeps_the_index_exact():
    cache, _ = coherent_cache()
    fill_and_insert(cache, b"ck", b"k", data=b"one")
    fill_and_insert(cache, b"ck", b"k", data=b"two", revision=11)
    cache.watch_progress(11)
    assert body(cache.get(b"ck")) == b"two"
    cache.invalidate_key(b"k", 12)
    assert cache.get(b"ck") is None and not cache._point


keys = st.binary(min_size=0, max_size=3)


@given(k=keys, s=keys, e=st.one_of(st.just(b""), st.just(b"\0"), keys))
def test_in_range_matches_overlap_with_a_single_key(k, s, e):
    assert in_range(k, s, e) == ranges_overlap(k, b"", s, e)


def kvs_body(key: bytes, value: bytes, mod_revision: int) -> bytes:
    from protos.mvccpb import kv_pb2
    return rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=key, value=value, mod_revision=mod_revision)],
                                 count=1).SerializeToString()


def test_a_hit_after_a_newer_answer_never_goes_back_in_header_revision():
    # The bug: entry A filled at 10 kept header 10; a write to another key at 11 was processed, a
    # fresh answer at 11 was served; a hit on A (still valid) then answered revision 10.
    cache, _ = coherent_cache()
    cache.note_header(rpc_pb2.ResponseHeader(cluster_id=7, member_id=8, raft_term=3))
    assert fill_and_insert(cache, b"A", b"a", revision=10, data=kvs_body(b"a", b"va", 4))
    assert header_revision(cache.get(b"A")) == 10
    cache.invalidate_key(b"b", 11)           # watch event for another key ...
    cache.watch_progress(11)                 # ... applied: W = 11
    fill_and_insert(cache, b"B", b"b", revision=11, data=kvs_body(b"b", b"vb", 11))
    cache.served(11)                         # the fresh answer for b was served at 11
    hit = rpc_pb2.RangeResponse.FromString(cache.get(b"A"))
    assert hit.header.revision >= 11
    assert (hit.header.cluster_id, hit.header.member_id, hit.header.raft_term) == (7, 8, 3)
    assert [(kv.key, kv.value, kv.mod_revision) for kv in hit.kvs] == [(b"a", b"va", 4)]


def test_a_hit_is_stale_while_the_watch_is_behind_what_was_served():
    cache, _ = coherent_cache()
    fill_and_insert(cache, b"A", b"a", revision=10)
    cache.served(12)                         # a fresh answer at 12, before the watch reported 11-12
    assert cache.get(b"A") is STALE
    assert cache.get(b"missing") is None
    assert cache.get_as_of(b"A", 10) is not STALE  # a caller that arrived before 12 was served
    cache.watch_progress(12)
    assert header_revision(cache.get(b"A")) == 12


def test_the_hit_header_is_encoded_once_per_watch_revision():
    cache, _ = coherent_cache()
    fill_and_insert(cache, b"A", b"a", revision=10)
    first = cache.get(b"A")
    assert cache.get(b"A") is first          # no copy while W is unchanged
    cache.watch_progress(11)
    again = cache.get(b"A")
    assert again is not first and header_revision(again) == 11 and body(again) == b"resp"
    assert cache.get(b"A") is again


def test_pinned_hits_carry_the_current_watch_revision():
    cache, _ = coherent_cache()
    fill_and_insert(cache, "k@5", b"k", pinned=5, revision=10)
    cache.invalidate_key(b"k", 11)
    cache.watch_progress(13)
    assert header_revision(cache.get("k@5")) == 13


def test_a_flush_resets_the_watch_revision():
    cache, _ = coherent_cache()
    cache.watch_progress(20)
    cache.flush()
    assert cache.watch_rev == 0
    cache.watch_progress(25)                 # not coherent: ignored
    assert cache.watch_rev == 0
    cache.mark_coherent(18)                  # e.g. a lagging member: W 18 < floor 20
    fill_and_insert(cache, b"A", b"a", revision=20)
    assert cache.get(b"A") is STALE
