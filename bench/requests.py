"""The etcd v3 requests each suite sends: keys, values and serialized messages.

Keys are ASCII decimal numbers left-padded with zeros to `key_size` bytes (so prefix ranges and
logs stay readable); key i of a key space of size K is `key_for(i)`. The gRPC method paths are
the HTTP/2 paths h2load posts to.
"""

from __future__ import annotations

from dataclasses import dataclass

from protos.etcdserverpb import rpc_pb2

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"
TXN = "/etcdserverpb.KV/Txn"


@dataclass(frozen=True)
class KeySpec:
    """Which keys a load touches: `key_space` distinct keys of `key_size` bytes, in order if `seq`."""

    key_size: int = 8
    key_space: int = 1
    seq: bool = False

    def key_for(self, i: int) -> bytes:
        digits = str(i % self.key_space)
        if len(digits) > self.key_size:
            raise ValueError(f"key-size {self.key_size} is too small for key-space {self.key_space}")
        return digits.rjust(self.key_size, "0").encode()


def value_of(size: int) -> bytes:
    return b"v" * size


def put_request(key: bytes, value: bytes) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value)


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's rule)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # all 0xff: every key from `prefix` on


def range_request(key: bytes, serializable: bool, prefix: bool = False, limit: int = 0) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(key=key, range_end=prefix_end(key) if prefix else b"",
                                serializable=serializable, limit=limit)


def txn_put_request(keys: list[bytes], value: bytes) -> rpc_pb2.TxnRequest:
    """A transaction with no compare whose success branch puts every key in `keys`."""
    return rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=put_request(k, value)) for k in keys])
