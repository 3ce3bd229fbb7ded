"""Range options that etcdctl 3.4 cannot send, sent as raw KV.Range calls.

etcdctl 3.4 has no --count-only nor --min/max-mod/create-revision flags, so this script sends those
RangeRequests itself, with the etcd v3 stubs that aetcd bundles (generated from etcd's own protos,
independently of ours). Runs inside the aetcd venv. Usage: range_probe.py HOST:PORT PREFIX

It writes a small history under PREFIX, then prints one JSON line per request. Keys are printed
without PREFIX and revisions relative to its first write, so that the output does not depend on
the prefix nor on what the member held before.
"""

import json
import sys

import grpc
from aetcd.rpc import rpc_pb2 as rpc
from aetcd.rpc import rpc_pb2_grpc as rpc_grpc

RangeRequest = rpc.RangeRequest


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def requests(p: bytes, base: int) -> list[tuple[str, RangeRequest]]:
    everything = dict(key=p, range_end=prefix_end(p))
    return [
        ("count_only", RangeRequest(**everything, count_only=True)),
        ("count_only_limit", RangeRequest(**everything, count_only=True, limit=1)),
        ("keys_only", RangeRequest(**everything, keys_only=True)),
        ("limit_more", RangeRequest(**everything, limit=2)),
        ("min_mod", RangeRequest(**everything, min_mod_revision=base + 3)),
        ("max_mod", RangeRequest(**everything, max_mod_revision=base + 2)),
        ("min_create", RangeRequest(**everything, min_create_revision=base + 2)),
        ("max_create", RangeRequest(**everything, max_create_revision=base + 1)),
        ("min_mod_max_create_sorted", RangeRequest(
            **everything, min_mod_revision=base + 1, max_create_revision=base + 4,
            sort_order=RangeRequest.DESCEND, sort_target=RangeRequest.MOD)),
        ("min_mod_with_limit", RangeRequest(**everything, min_mod_revision=base + 3, limit=1)),
        ("past_count_only", RangeRequest(**everything, revision=base + 2, count_only=True)),
        ("past_min_create", RangeRequest(**everything, revision=base + 3, min_create_revision=base + 1)),
        ("sort_value_keys_only", RangeRequest(
            **everything, keys_only=True, sort_order=RangeRequest.DESCEND, sort_target=RangeRequest.VALUE)),
        ("serializable_count", RangeRequest(**everything, serializable=True, count_only=True)),
        ("range_end_below_key", RangeRequest(key=p + b"c", range_end=p + b"a")),
        ("empty_key", RangeRequest(key=b"")),
        ("future_revision", RangeRequest(**everything, revision=base + 1000)),
    ]


def outcome(kv_stub, request: RangeRequest, p: bytes, base: int) -> dict:
    try:
        r = kv_stub.Range(request, timeout=10)
    except grpc.RpcError as e:
        return {"error": [e.code().name, e.details()]}
    return {
        "revision": r.header.revision - base,
        "count": r.count,
        "more": r.more,
        "kvs": [[kv.key[len(p):].decode(), kv.create_revision - base, kv.mod_revision - base, kv.version,
                 kv.value.decode()] for kv in r.kvs],
    }


def main(endpoint: str, prefix: str) -> None:
    p = prefix.encode()
    with grpc.insecure_channel(endpoint) as channel:
        kv = rpc_grpc.KVStub(channel)
        base = kv.Put(rpc.PutRequest(key=p + b"a", value=b"1"), timeout=10).header.revision
        for key, value in [(b"b", b"2"), (b"c", b"3"), (b"a", b"4"), (b"d", b"0")]:
            kv.Put(rpc.PutRequest(key=p + key, value=value), timeout=10)
        kv.DeleteRange(rpc.DeleteRangeRequest(key=p + b"b"), timeout=10)
        for name, request in requests(p, base):
            print(json.dumps({name: outcome(kv, request, p, base)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
