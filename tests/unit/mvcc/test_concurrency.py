"""Readers on other threads see whole batches only, while the writer keeps committing."""

from __future__ import annotations

import threading

from protos.etcdserverpb import rpc_pb2 as pb
from tests.unit.mvcc.ops import rng


def test_readers_see_consistent_committed_batches(store):
    batches, per_batch = 60, 5
    failures: list = []
    done = threading.Event()
    start = threading.Barrier(4)

    def read():
        start.wait()
        seen = 0
        while not done.is_set() or seen < 1:
            resp = store.range(rng(b"k", b"l", count_only=True))
            # every put adds one key, so a consistent view has count == revision - 1, and whole
            # batches only: a multiple of per_batch
            if resp.count != resp.header.revision - 1 or resp.count % per_batch:
                failures.append((resp.count, resp.header.revision))
                return
            seen += 1

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        start.wait()
        n = 0
        for i in range(batches):
            with store.begin() as b:
                for _ in range(per_batch):
                    b.put(pb.PutRequest(key=b"k%06d" % n, value=b"v"))
                    n += 1
                b.commit(i + 1)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert failures == []
    assert store.range(rng(b"k", b"l", count_only=True)).count == batches * per_batch
