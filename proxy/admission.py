"""Hot-key protection: optional token-bucket admission limits per client and per key.

Both limits are off by default (rate 0). When on:
- per client: every KV call of one client address (the peer's IP, so that opening more
  connections does not buy more) takes a token from that client's bucket;
- per key: every KV call naming a key (Range, Put, DeleteRange) takes a token from that key's
  bucket (the key as the client sent it, inside its namespace).
A bucket holds at most `burst` tokens (default: one second's worth) and refills at `rate` per
second. A call finding its bucket empty is refused with RESOURCE_EXHAUSTED and etcd's text for
it, "etcdserver: too many requests" (what clientv3 maps to rpctypes.ErrTooManyRequests); the
trailing metadata key `kvproxy-admission` says which limit refused it and why.

Memory is bounded: at most `max_tracked` buckets per kind are kept (least recently used dropped;
a dropped bucket comes back full, which only errs on the side of admitting).
"""

from __future__ import annotations

import time

import cachetools

TOO_MANY_REQUESTS = "etcdserver: too many requests"


class TokenBucket:
    """`rate` tokens per second, at most `burst` stored; `take()` is True when a token was there."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.tokens = self.burst if tokens > self.burst else tokens
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Refusal(Exception):
    """An admission limit refused a call; `limit` is "client" or "key", `reason` a sentence."""

    def __init__(self, limit: str, reason: str):
        super().__init__(reason)
        self.limit = limit
        self.reason = reason


class _BucketSet:
    def __init__(self, rate: float, burst: float | None, max_tracked: int):
        self.rate = rate
        self.burst = burst if burst else max(1.0, rate)
        self._buckets: cachetools.LRUCache = cachetools.LRUCache(maxsize=max_tracked)

    def take(self, name, now: float) -> bool:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)


class AdmissionControl:
    """Per-client and per-key token buckets. `enabled` is False when both rates are 0."""

    def __init__(self, per_client_rate: float = 0.0, per_key_rate: float = 0.0, *,
                 per_client_burst: float | None = None, per_key_burst: float | None = None,
                 max_tracked: int = 100_000, clock=time.monotonic):
        self._clients = _BucketSet(per_client_rate, per_client_burst, max_tracked) if per_client_rate > 0 else None
        self._keys = _BucketSet(per_key_rate, per_key_burst, max_tracked) if per_key_rate > 0 else None
        self.per_client = self._clients is not None
        self.per_key = self._keys is not None
        self.enabled = self.per_client or self.per_key
        self._clock = clock

    def admit_client(self, peer: str) -> None:
        """Raise Refusal when `peer` (grpc's context.peer(), e.g. 'ipv4:127.0.0.1:5555') is over its limit."""
        if self._clients is None:
            return
        client = client_address(peer)
        if not self._clients.take(client, self._clock()):
            raise Refusal("client", f"client {client} is over --max-requests-per-client-per-second="
                                    f"{self._clients.rate:g}")

    def admit_key(self, key: bytes) -> None:
        """Raise Refusal when `key` is over its limit."""
        if self._keys is None:
            return
        if not self._keys.take(key, self._clock()):
            raise Refusal("key", f"key {key[:64]!r} is over --max-requests-per-key-per-second="
                                 f"{self._keys.rate:g}")


def client_address(peer: str) -> str:
    """The client's address without its port: 'ipv4:127.0.0.1:5555' -> '127.0.0.1'."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        rest = rest.rsplit(":", 1)[0]
        return rest.strip("[]") or peer
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0] or peer
    return peer
