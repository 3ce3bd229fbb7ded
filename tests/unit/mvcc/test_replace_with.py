"""`MVCCStore.replace_with`: a live store takes over another store's image (a leader's snapshot)."""

from __future__ import annotations

import os

from cluster.mvcc.store import MVCCStore
from protos.etcdserverpb import rpc_pb2


def put(store: MVCCStore, index: int, key: bytes, value: bytes) -> None:
    batch = store.begin()
    batch.put(rpc_pb2.PutRequest(key=key, value=value))
    batch.commit(index)


def keys(store: MVCCStore) -> dict[bytes, bytes]:
    resp = store.range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
    return {kv.key: kv.value for kv in resp.kvs}


def test_a_store_takes_over_an_image_and_survives_reopening(tmp_path):
    leader = MVCCStore(str(tmp_path / "leader"))
    for i in range(1, 31):
        put(leader, i, b"k%02d" % i, b"leader")
    follower = MVCCStore(str(tmp_path / "follower"))
    put(follower, 1, b"stale", b"follower")

    image = tmp_path / "image.db"
    with open(image, "wb") as f:
        leader.snapshot(f)
        f.flush()
        os.fsync(f.fileno())
    follower.replace_with(str(image))

    assert not image.exists()
    assert (follower.applied_index, follower.current_revision) == (30, leader.current_revision)
    assert keys(follower) == keys(leader)
    assert follower.hash_kv(0)[0] == leader.hash_kv(0)[0]
    put(follower, 31, b"after", b"x")  # the writer goes on from the image's state
    follower.close()
    reopened = MVCCStore(str(tmp_path / "follower"))
    assert reopened.applied_index == 31 and keys(reopened)[b"after"] == b"x"
    assert b"stale" not in keys(reopened)
    reopened.close()
    leader.close()
