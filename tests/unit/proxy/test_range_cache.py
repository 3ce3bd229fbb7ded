"""CoherentRangeCache: insertion rules, invalidation, bounds, the fill/write race."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.cache.range_cache import CoherentRangeCache, in_range, ranges_overlap


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
    assert cache.get(b"k") == b"resp"


def test_point_write_invalidates_only_ranges_containing_the_key():
    cache, _ = coherent_cache()
    fill_and_insert(cache, "a", b"a")
    fill_and_insert(cache, "b", b"b")
    fill_and_insert(cache, "a-c", b"a", b"c")
    fill_and_insert(cache, "from-b", b"b", b"\0")
    fill_and_insert(cache, "c-d", b"c", b"d")
    cache.invalidate_key(b"b", 11)
    assert [ck for ck in ("a", "b", "a-c", "from-b", "c-d") if cache.get(ck)] == ["a", "c-d"]
    assert cache.floor == 11


def test_range_delete_invalidates_overlapping_entries():
    cache, _ = coherent_cache()
    for k in (b"a", b"b", b"c"):
        fill_and_insert(cache, k, k)
    fill_and_insert(cache, "bb-z", b"bb", b"z")
    cache.invalidate_range(b"b", b"c", 12)
    assert [ck for ck in (b"a", b"b", b"c", "bb-z") if cache.get(ck)] == [b"a", b"c"]


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
    assert cache.get(b"ck") == b"new"


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
    assert cache.get("k@5") and cache.get("k@8")
    cache.evict_compacted(6)
    assert cache.get("k@5") is None and cache.get("k@8")


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
    assert cache.get(b"ck") == b"two"
    cache.invalidate_key(b"k", 12)
    assert cache.get(b"ck") is None and not cache._point


keys = st.binary(min_size=0, max_size=3)


@given(k=keys, s=keys, e=st.one_of(st.just(b""), st.just(b"\0"), keys))
def test_in_range_matches_overlap_with_a_single_key(k, s, e):
    assert in_range(k, s, e) == ranges_overlap(k, b"", s, e)
