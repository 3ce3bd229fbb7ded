"""CoherentRangeCache: serialized Range responses, kept coherent with the cluster by invalidation.

Vocabulary:
- cache key: what identifies "the same request" (the request's bytes + the caller's token; see
  proxy/kv_service.py). Opaque here.
- range: the client-space [key, range_end) the request reads (etcd's conventions: empty end = one
  key, b"\\0" end = every key >= key). A cached response depends only on the keys in its range, so a
  write to a key outside it never makes it stale, whatever the request's options (limit, sort,
  count_only, revision filters...).
- fill: one upstream read whose answer may become an entry.

Invariants (what makes it coherent):
1. An entry is only inserted while the cache is *coherent*: the keyspace watch (see
   proxy/cache/invalidator.py) is established and every write since its start revision has been,
   or will be, reported through `invalidate_*`. Losing the watch flushes everything and bumps the
   epoch; a fill that started in an older epoch is never inserted.
2. Race between a fill and a write: a fill starts at some revision R; a write at R' > R may be
   reported (by the watch or by a write through this proxy) before the fill answers with pre-R'
   data. Every invalidation marks the overlapping fills in flight with the write's revision
   (`dirty_rev`); a fill is inserted only if its answer's header revision is >= its dirty_rev, i.e.
   the answer already contains every write reported during the fill.
3. Revision floor: `floor` is the highest revision this cache knows to be committed (watch events,
   the watch's start, writes through the proxy, answers it served). A fill whose answer is older
   than the floor at the fill's start came from a member lagging behind what was already served;
   the caller must not serve it (kv_service re-reads linearizably). Together with (2) this gives:
   per range, a served revision never goes backwards, and a write acknowledged by this proxy is
   visible to its next serializable read (read-your-writes through the same proxy).
4. An invalidation also detaches the in-flight fills it touches from the singleflight (`detach`
   callback), so a read arriving after a write never joins a read that started before it.
5. Header revision of a hit (never backwards): `watch_rev` (W) is the revision up to which the
   keyspace watch has reported every write (`watch_progress`). An entry still cached is the
   current data for its range as of W, as long as W >= the revision it was read at. `floor` is
   >= every revision this cache served (and every entry's revision), so a hit is served only when
   W >= floor, with header revision W: never older than anything served before it. An entry is
   stored as its response *without* its header; the hit prepends the encoded header for W (encoded
   once per W, and memoized per entry), so a hit still parses and serializes nothing. When W <
   floor, `get` answers STALE (b"") and the caller waits for the watch or reads upstream.
6. Revision-pinned reads (revision > 0) are immutable history: they are not indexed for
   invalidation. They are dropped when a compaction through this proxy passes their revision
   (`evict_compacted`); see docs/proxy.md for compactions made directly on the cluster.

Bounded by entries and by bytes (LRU eviction, cachetools).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Callable, Hashable

import cachetools

from protos.etcdserverpb import rpc_pb2

ENTRY_OVERHEAD_BYTES = 160  # bookkeeping per entry (objects, index), counted against --cache-max-bytes
HEADER_ALLOWANCE_BYTES = 32  # the header a hit prepends (counted once per entry)
STALE = b""  # `get`: an entry exists, but the watch is behind what was served (see invariant 5)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_header_field(cluster_id: int, member_id: int, revision: int, raft_term: int) -> bytes:
    """Field 1 (header) of a RangeResponse, ready to prepend to a header-less serialized response."""
    h = rpc_pb2.ResponseHeader(cluster_id=cluster_id, member_id=member_id, revision=revision,
                               raft_term=raft_term).SerializeToString()
    return b"\x0a" + _varint(len(h)) + h


def in_range(k: bytes, start: bytes, end: bytes) -> bool:
    """Is key k in etcd's range [start, end)? (end b"" = only start; end b"\\0" = no upper bound)."""
    if not end:
        return k == start
    if end == b"\0":
        return k >= start
    return start <= k < end


def ranges_overlap(s1: bytes, e1: bytes, s2: bytes, e2: bytes) -> bool:
    """Do two etcd ranges share a key?"""
    hi1 = s1 + b"\0" if not e1 else (None if e1 == b"\0" else e1)
    hi2 = s2 + b"\0" if not e2 else (None if e2 == b"\0" else e2)
    return (hi2 is None or s1 < hi2) and (hi1 is None or s2 < hi1)


class CacheEntry:
    """One cached answer: the serialized RangeResponse and the range it depends on.

    `out` is `hdr` (an encoded header field) + the response serialized without its header;
    `hdr` is replaced by the cache's current header when they differ (invariant 5)."""

    __slots__ = ("out", "hdr", "key", "range_end", "revision", "pinned", "size")

    def __init__(self, out: bytes, hdr: bytes, key: bytes, range_end: bytes, revision: int, pinned: int,
                 size: int):
        self.out = out
        self.hdr = hdr
        self.key = key
        self.range_end = range_end
        self.revision = revision  # header revision of the upstream answer (the data is as of it)
        self.pinned = pinned      # the request's revision when > 0 (immutable history), else 0
        self.size = size


class Fill:
    """An upstream read in flight whose answer may be inserted (see invariants 1-3)."""

    __slots__ = ("cache_key", "key", "range_end", "pinned", "epoch", "floor", "dirty_rev")

    def __init__(self, cache_key: Hashable, key: bytes, range_end: bytes, pinned: int, epoch: int, floor: int):
        self.cache_key = cache_key
        self.key = key
        self.range_end = range_end
        self.pinned = pinned
        self.epoch = epoch
        self.floor = floor        # the cache's floor when the fill started
        self.dirty_rev = 0        # highest write revision reported in this range during the fill


class _EvictingLRU(cachetools.LRUCache):
    """An LRU bounded by bytes that tells its owner what it evicts (to keep the index exact)."""

    def __init__(self, maxsize: int, on_evict: Callable[[Hashable, CacheEntry], None]):
        super().__init__(maxsize=maxsize, getsizeof=lambda e: e.size)
        self._on_evict = on_evict

    def popitem(self):
        key, entry = super().popitem()
        self._on_evict(key, entry)
        return key, entry


class CoherentRangeCache:
    """Serialized serializable-Range responses, invalidated by every write in the cluster.

    `detach(cache_key)` is called when an in-flight fill for `cache_key` is invalidated (the kv
    service forgets it in its singleflight). All methods are synchronous and O(1) on the hit path.
    """

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 256 * 1024 * 1024,
                 detach: Callable[[Hashable], None] | None = None):
        self.max_entries = max(1, max_entries)
        self.max_bytes = max(1, max_bytes)
        self._lru = _EvictingLRU(self.max_bytes, self._unindex)
        self._point: dict[bytes, set] = {}     # key -> cache keys of single-key, unpinned entries
        self._ranges: dict[Hashable, CacheEntry] = {}  # cache key -> unpinned multi-key entry
        self._pinned: dict[Hashable, CacheEntry] = {}  # cache key -> revision-pinned entry
        self._fills: set[Fill] = set()
        self._detach = detach or (lambda _k: None)
        self.coherent = False
        self.epoch = 0
        self.floor = 0
        self.flushes = 0
        self.watch_rev = 0                   # W of invariant 5
        self._ids = (0, 0, 0)                # cluster_id, member_id, raft_term of the latest header seen
        self._hdr = encode_header_field(0, 0, 0, 0)
        self._waiters: list = []             # heap of (revision, seq, future): wait_watch
        self._seq = itertools.count()

    # --- hot path ---------------------------------------------------------------------------

    def get(self, cache_key: Hashable) -> bytes | None:
        """The cached serialized response for `cache_key` with header revision W, None on a miss,
        STALE (b"") if cached but W < floor (serving it could go backwards)."""
        try:
            e = self._lru[cache_key]
        except KeyError:
            return None
        if self.watch_rev < self.floor:
            return STALE
        h = self._hdr
        if e.hdr is not h:
            e.out = h + e.out[len(e.hdr):]
            e.hdr = h
        return e.out

    def get_as_of(self, cache_key: Hashable, at_least: int) -> bytes | None:
        """Like `get`, for a caller that only needs a header revision >= `at_least` (the floor
        when it arrived) and the entry's own revision."""
        try:
            e = self._lru[cache_key]
        except KeyError:
            return None
        if self.watch_rev < at_least or self.watch_rev < e.revision:
            return STALE
        h = self._hdr
        if e.hdr is not h:
            e.out = h + e.out[len(e.hdr):]
            e.hdr = h
        return e.out

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def size_bytes(self) -> int:
        return self._lru.currsize

    # --- fills ------------------------------------------------------------------------------

    def begin_fill(self, cache_key: Hashable, key: bytes, range_end: bytes, pinned: int) -> Fill:
        fill = Fill(cache_key, key, range_end, pinned, self.epoch, self.floor)
        self._fills.add(fill)
        return fill

    def end_fill(self, fill: Fill) -> None:
        self._fills.discard(fill)

    def served(self, revision: int) -> None:
        """An answer with this header revision was served: it is now part of the floor."""
        if revision > self.floor:
            self.floor = revision

    def insert(self, fill: Fill, body: bytes, revision: int) -> bool:
        """Insert a fill's answer (`body`: the RangeResponse serialized without its header, read at
        header `revision`) if invariants 1-3 allow it. Returns whether it was inserted."""
        if not self.coherent or fill.epoch != self.epoch:
            return False
        if revision < fill.dirty_rev or revision < fill.floor:
            return False
        if revision > self.floor:
            self.floor = revision  # invariant 5: floor >= every entry's revision
        size = len(body) + HEADER_ALLOWANCE_BYTES + ENTRY_OVERHEAD_BYTES + _key_size(fill.cache_key)
        if size > self.max_bytes:
            return False
        ck = fill.cache_key
        old = self._lru.pop(ck, None)  # replaced below; pop does not go through popitem
        if old is not None:
            self._unindex(ck, old)
        while len(self._lru) >= self.max_entries:
            self._lru.popitem()
        h = self._hdr
        entry = CacheEntry(h + body, h, fill.key, fill.range_end, revision, fill.pinned, size)
        self._lru[ck] = entry  # may evict (popitem -> _unindex) to fit max_bytes
        if entry.pinned:
            self._pinned[ck] = entry
        elif entry.range_end:
            self._ranges[ck] = entry
        else:
            self._point.setdefault(entry.key, set()).add(ck)
        return True

    # --- invalidation -----------------------------------------------------------------------

    def invalidate_key(self, key: bytes, revision: int) -> None:
        """A write at `revision` changed `key` (watch event, or a write through this proxy)."""
        if revision > self.floor:
            self.floor = revision
        cks = self._point.pop(key, None)
        if cks:
            for ck in cks:
                self._lru.pop(ck, None)
        if self._ranges:
            stale = [ck for ck, e in self._ranges.items() if in_range(key, e.key, e.range_end)]
            for ck in stale:
                del self._ranges[ck]
                self._lru.pop(ck, None)
        for fill in self._fills:
            if not fill.pinned and in_range(key, fill.key, fill.range_end):
                self._mark_dirty(fill, revision)

    def invalidate_range(self, start: bytes, end: bytes, revision: int) -> None:
        """A write at `revision` may have changed any key in [start, end) (a range delete)."""
        if not end:
            self.invalidate_key(start, revision)
            return
        if revision > self.floor:
            self.floor = revision
        for key in [k for k in self._point if in_range(k, start, end)]:
            for ck in self._point.pop(key):
                self._lru.pop(ck, None)
        stale = [ck for ck, e in self._ranges.items() if ranges_overlap(start, end, e.key, e.range_end)]
        for ck in stale:
            del self._ranges[ck]
            self._lru.pop(ck, None)
        for fill in self._fills:
            if not fill.pinned and ranges_overlap(start, end, fill.key, fill.range_end):
                self._mark_dirty(fill, revision)

    def evict_compacted(self, compact_revision: int) -> None:
        """Drop revision-pinned entries older than a compaction (they would now be an error)."""
        for ck in [ck for ck, e in self._pinned.items() if e.pinned < compact_revision]:
            del self._pinned[ck]
            self._lru.pop(ck, None)
        for fill in self._fills:
            if fill.pinned and fill.pinned < compact_revision:
                fill.epoch = -1  # never inserted
                self._detach(fill.cache_key)

    # --- watch progress (invariant 5) --------------------------------------------------------

    def note_header(self, header) -> None:
        """Take cluster_id / member_id / raft_term for the headers of hits from an upstream header."""
        ids = (header.cluster_id, header.member_id, header.raft_term)
        if ids != self._ids and (ids[0] or ids[1]):
            self._ids = ids
            self._hdr = encode_header_field(ids[0], ids[1], self.watch_rev, ids[2])

    def watch_progress(self, revision: int) -> None:
        """The keyspace watch has reported (and this cache applied) every write up to `revision`."""
        if revision <= self.watch_rev or not self.coherent:
            return
        self.watch_rev = revision
        ids = self._ids
        self._hdr = encode_header_field(ids[0], ids[1], revision, ids[2])
        waiters = self._waiters
        while waiters and waiters[0][0] <= revision:
            fut = heapq.heappop(waiters)[2]
            if not fut.done():
                fut.set_result(True)

    async def wait_watch(self, revision: int, timeout: float) -> bool:
        """Wait (at most `timeout` s) until W >= `revision`; whether it got there."""
        if self.watch_rev >= revision:
            return True
        if not self.coherent:
            return False
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._seq), fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        return self.watch_rev >= revision

    def _wake_all(self) -> None:
        for _r, _s, fut in self._waiters:
            if not fut.done():
                fut.set_result(False)
        self._waiters = []

    # --- coherence lifecycle ----------------------------------------------------------------

    def flush(self) -> None:
        """Forget everything and stop inserting until `mark_coherent` (the watch was lost)."""
        self.coherent = False
        self.epoch += 1
        self.flushes += 1
        self._clear()
        self.watch_rev = 0
        self._wake_all()
        for fill in self._fills:
            self._detach(fill.cache_key)

    def mark_coherent(self, watch_start_revision: int) -> None:
        """The keyspace watch is established and reports every write after this revision."""
        self.served(watch_start_revision)
        self.epoch += 1
        self.coherent = True
        self.watch_rev = 0
        self.watch_progress(watch_start_revision)

    # --- internals --------------------------------------------------------------------------

    def _mark_dirty(self, fill: Fill, revision: int) -> None:
        if revision > fill.dirty_rev:
            fill.dirty_rev = revision
        self._detach(fill.cache_key)

    def _clear(self) -> None:
        self._lru = _EvictingLRU(self.max_bytes, self._unindex)
        self._point.clear()
        self._ranges.clear()
        self._pinned.clear()

    def _unindex(self, ck: Hashable, entry: CacheEntry) -> None:
        """Remove an entry leaving the LRU from the invalidation index."""
        if entry.pinned:
            self._pinned.pop(ck, None)
        elif entry.range_end:
            self._ranges.pop(ck, None)
        else:
            cks = self._point.get(entry.key)
            if cks is not None:
                cks.discard(ck)
                if not cks:
                    del self._point[entry.key]


def _key_size(cache_key: Hashable) -> int:
    if isinstance(cache_key, bytes):
        return len(cache_key)
    return sum(len(p) for p in cache_key)
