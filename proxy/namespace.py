"""`--namespace`: a key prefix the proxy adds to every request and strips from every reply.

Semantics follow etcd's clientv3/namespace (which etcd's grpc-proxy uses):
- a key k becomes prefix+k;
- a range end of b"\\0" ("every key >= key") becomes the end of the prefix's range, so a from-key
  read never leaves the namespace;
- any other non-empty range end e becomes prefix+e; an empty range end (single key) stays empty;
- keys in replies (kvs, prev_kvs, watch events) lose the prefix.
An empty prefix is the identity, and `Namespace.active` is False so callers can skip all of it.
"""

from __future__ import annotations


def prefix_range_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (etcd's GetPrefixRangeEnd).

    For an empty prefix or an all-0xff prefix there is none, and etcd uses b"\\0" ("to the end").
    """
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


class Namespace:
    """Maps client keys into `prefix` and back. Empty prefix = identity."""

    def __init__(self, prefix: bytes):
        self.prefix = bytes(prefix)
        self.active = bool(self.prefix)
        self._end = prefix_range_end(self.prefix)
        self._plen = len(self.prefix)

    def key(self, k: bytes) -> bytes:
        return self.prefix + k if self.active else k

    def range_end(self, end: bytes) -> bytes:
        if not self.active or not end:
            return end
        if end == b"\0":
            return self._end
        return self.prefix + end

    def strip(self, k: bytes) -> bytes:
        if self.active and k.startswith(self.prefix):
            return k[self._plen:]
        return k

    def strip_kv(self, kv) -> None:
        """Remove the prefix from a mvccpb.KeyValue's key, in place."""
        if self.active:
            kv.key = self.strip(kv.key)

    # --- whole messages, in place ---------------------------------------------------------

    def map_range_request(self, req) -> None:
        req.key = self.key(req.key)
        req.range_end = self.range_end(req.range_end)

    def map_put_request(self, req) -> None:
        req.key = self.key(req.key)

    def map_delete_request(self, req) -> None:
        req.key = self.key(req.key)
        req.range_end = self.range_end(req.range_end)

    def map_txn_request(self, req) -> None:
        for cmp in req.compare:
            cmp.key = self.key(cmp.key)
            cmp.range_end = self.range_end(cmp.range_end)
        for op in (*req.success, *req.failure):
            self._map_op(op)

    def _map_op(self, op) -> None:
        which = op.WhichOneof("request")
        if which == "request_range":
            self.map_range_request(op.request_range)
        elif which == "request_put":
            self.map_put_request(op.request_put)
        elif which == "request_delete_range":
            self.map_delete_request(op.request_delete_range)
        elif which == "request_txn":
            self.map_txn_request(op.request_txn)

    def strip_range_response(self, resp) -> None:
        for kv in resp.kvs:
            self.strip_kv(kv)

    def strip_put_response(self, resp) -> None:
        if resp.HasField("prev_kv"):
            self.strip_kv(resp.prev_kv)

    def strip_delete_response(self, resp) -> None:
        for kv in resp.prev_kvs:
            self.strip_kv(kv)

    def strip_txn_response(self, resp) -> None:
        for r in resp.responses:
            which = r.WhichOneof("response")
            if which == "response_range":
                self.strip_range_response(r.response_range)
            elif which == "response_put":
                self.strip_put_response(r.response_put)
            elif which == "response_delete_range":
                self.strip_delete_response(r.response_delete_range)
            elif which == "response_txn":
                self.strip_txn_response(r.response_txn)
