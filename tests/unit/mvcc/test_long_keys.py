"""Keys longer than LMDB's 511-byte key limit: stored, ordered and ranged like any other key."""

from __future__ import annotations

import random

from cluster.mvcc import MVCCStore
from cluster.mvcc.encoding import SHORT_KEY_MAX
from tests.unit.mvcc.ops import Writer, kvs, rng

P = b"p" * 300  # a shared prefix longer than SHORT_KEY_MAX: all these keys land in one block


def make_keys() -> list[bytes]:
    r = random.Random(7)
    keys = {
        P[:SHORT_KEY_MAX],  # exactly at the short/long boundary
        P[:SHORT_KEY_MAX - 1] + b"\x00",
        P[:SHORT_KEY_MAX] + b"\x00",
        P + b"a" * 1748,  # 2 KiB
        P + b"b" * (100 * 1024),  # 100 KiB
        P + b"\x00" * 2000,
        P,
        b"q" * 2048,
        b"o" * 2048,
        b"p",
        b"pq",
        b"\x00" * 600,
    }
    for _ in range(40):
        tail = bytes(r.choice(b"\x00\x01ab\xff") for _ in range(r.randrange(0, 40)))
        keys.add(P[: r.choice([150, 200, 250, 300])] + tail)
    return sorted(keys)


def check_ranges(store, keys, values):
    r = random.Random(11)
    probes = keys + [P[:SHORT_KEY_MAX], P + b"a", P + b"\x00", b"", b"\x00", b"p" * 250 + b"q"]
    for _ in range(60):
        start, end = sorted(r.sample(probes, 2))
        if not start:
            continue
        got = store.range(rng(start, end))
        expected = [k for k in keys if start <= k < end]
        assert [kv.key for kv in got.kvs] == expected
        assert [kv.value for kv in got.kvs] == [values[k] for k in expected]
    assert [kv.key for kv in store.range(rng(b"\x00", b"\x00")).kvs] == keys
    for k in keys:
        assert [kv.key for kv in store.range(rng(k)).kvs] == [k]
        assert [kv.key for kv in store.range(rng(k, b"\x00")).kvs] == [x for x in keys if x >= k]


def test_long_keys_in_ranges_deletes_history_and_reopen(tmp_path):
    path = str(tmp_path / "db")
    s = MVCCStore(path, map_size=256 << 20)
    w = Writer(s)
    keys = make_keys()
    values = {}
    for i, k in enumerate(reversed(keys)):
        values[k] = b"v%d" % i
        w.put(k, values[k])
    check_ranges(s, keys, values)
    rev = s.current_revision

    doomed = [k for k in keys if k.startswith(P) and len(k) > SHORT_KEY_MAX][::2]
    for k in doomed:
        assert w.delete(k).deleted == 1
    alive = [k for k in keys if k not in doomed]
    check_ranges(s, alive, values)
    past = s.range(rng(b"\x00", b"\x00", revision=rev))
    assert [kv.key for kv in past.kvs] == keys

    w.compact(s.current_revision)
    s.close()
    s = MVCCStore(path, map_size=256 << 20)
    try:
        check_ranges(s, alive, values)
        huge = P + b"b" * (100 * 1024)
        assert kvs(s.range(rng(huge))) == ([] if huge in doomed else [(huge, values[huge])])
    finally:
        s.close()
