"""aetcd 1.0.0 against one endpoint: put, get, range, txn, watch, leases and status.

Runs inside the aetcd venv (never imported by the test suite). Usage: aetcd_smoke.py HOST:PORT PREFIX
Prints one JSON object of observed outcomes; the test compares it with what etcd 3.4.23 gives.
"""

import asyncio
import json
import sys

import aetcd

WATCH_TIMEOUT = 10.0


async def watch_events(client: aetcd.Client, prefix: bytes) -> list:
    """Start a prefix watch, then write; return the events seen (the watch is created first)."""
    watch = await client.watch_prefix(prefix, prev_kv=True)
    await client.put(prefix + b"1", b"one")
    await client.put(prefix + b"1", b"uno")
    await client.delete(prefix + b"1")
    events = []

    async def collect():
        async for event in watch:
            prev = event.prev_kv.value.decode() if event.prev_kv else None
            events.append([event.kind, event.kv.key.decode(), event.kv.value.decode(), prev])
            if len(events) == 3:
                return

    await asyncio.wait_for(collect(), WATCH_TIMEOUT)
    await watch.cancel()
    return events


async def lease_lifecycle(client: aetcd.Client, prefix: bytes) -> dict:
    lease = await client.lease(30)
    await client.put(prefix + b"leased", b"v", lease=lease)
    info = await client.get_lease_info(lease.id, keys=True)
    refreshed = await lease.refresh()
    attached = await client.get(prefix + b"leased")
    await lease.revoke()
    gone = await client.get(prefix + b"leased")
    after = await client.get_lease_info(lease.id)
    return {
        "granted_ttl": lease.ttl,
        "info_granted_ttl": info.grantedTTL,
        "remaining_ok": 0 < info.TTL <= 30,
        "keys": sorted(k.decode() for k in info.keys),
        "refreshed_ttl": refreshed.TTL,
        "key_lease_matches": attached.lease == lease.id,
        "gone_after_revoke": gone is None,
        "ttl_after_revoke": after.TTL,
    }


async def cluster_status(client: aetcd.Client) -> dict:
    """Maintenance.Status, whose leader aetcd looks up in Cluster.MemberList."""
    status = await client.status()
    return {
        "leader_name": status.leader.name if status.leader else None,
        "members": sorted([m.name async for m in client.members()]),
        "raft_index_positive": status.raft_index > 0,
    }


async def main(endpoint: str, prefix: str) -> dict:
    host, port = endpoint.rsplit(":", 1)
    p = prefix.encode()
    async with aetcd.Client(host, int(port), timeout=10) as client:
        put = await client.put(p + b"a", b"1", prev_kv=True)
        await client.put(p + b"b", b"2")
        await client.put(p + b"c", b"3")
        await client.put(p + b"a", b"4")
        put_again = await client.put(p + b"a", b"5", prev_kv=True)
        got = await client.get(p + b"a")
        missing = await client.get(p + b"missing")
        ranged = await client.get_prefix(p)
        tx = client.transactions
        ok, _ = await client.transaction(
            compare=[tx.value(p + b"a") == b"5", tx.version(p + b"a") == 3],
            success=[tx.put(p + b"txn", b"yes")],
            failure=[tx.put(p + b"txn", b"no")],
        )
        failed, responses = await client.transaction(
            compare=[tx.mod(p + b"b") > 1000],
            success=[tx.delete(p + b"b")],
            failure=[tx.get(p + b"txn")],
        )
        deleted = await client.delete(p + b"c")
        return {
            "put_prev_key": put.prev_kv.key.decode() if put.prev_kv else "",
            "put_again_prev": put_again.prev_kv.value.decode(),
            "get": [got.value.decode(), got.version, got.create_revision < got.mod_revision],
            "get_missing": missing is None,
            "range": [[kv.key.decode(), kv.value.decode()] for kv in ranged],
            "txn_succeeded": ok,
            "txn_failed_branch": [failed, [v.decode() for v, _ in responses[0]]],
            "txn_result": (await client.get(p + b"txn")).value.decode(),
            "deleted": deleted.deleted,
            "watch": await watch_events(client, p + b"w/"),
            "lease": await lease_lifecycle(client, p),
            "status": await cluster_status(client),
        }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2])), sort_keys=True))
