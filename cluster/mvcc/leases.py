"""Lease records and lease -> key attachments, as the store keeps them."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.mvcc.encoding import LEASE_ID


@dataclass(frozen=True)
class LeaseRecord:
    """A granted lease as the store keeps it: id, granted TTL (seconds), and the remaining TTL of
    its last checkpoint (0 = never checkpointed)."""

    id: int
    ttl: int
    remaining_ttl: int


def attached_keys(env, txn, lease_id: int) -> list[bytes]:
    """The keys attached to the lease, sorted (env: a StoreEnv; txn: any LMDB transaction)."""
    prefix = LEASE_ID.pack(lease_id)
    keys = []
    with txn.cursor(db=env.lease_keys) as cur:
        if cur.set_range(prefix):
            for k, v in cur.iternext():
                if not k.startswith(prefix):
                    break
                keys.append(v)
    keys.sort()
    return keys
