"""python-etcd3 0.12.0 against one endpoint: put, get, range, txn, watch, leases and status.

Runs inside the etcd3 venv (never imported by the test suite). Usage: etcd3_smoke.py HOST:PORT PREFIX
Prints one JSON object of observed outcomes; the test compares it with what etcd 3.4.23 gives.
"""

import json
import sys
import threading

import etcd3

WATCH_TIMEOUT = 10.0


def watch_events(client, prefix: str) -> list:
    """Start a prefix watch (registered when watch_prefix returns), write, collect 3 events."""
    events_iterator, cancel = client.watch_prefix(prefix, prev_kv=True)
    timer = threading.Timer(WATCH_TIMEOUT, cancel)  # ends the iteration if events never come
    timer.start()
    client.put(prefix + "1", "one")
    client.put(prefix + "1", "uno")
    client.delete(prefix + "1")
    events = []
    for event in events_iterator:
        prev = event.prev_value.decode() if event.prev_value is not None else None
        events.append([type(event).__name__, event.key.decode(), event.value.decode(), prev])
        if len(events) == 3:
            break
    timer.cancel()
    cancel()
    return events


def lease_lifecycle(client, prefix: str) -> dict:
    lease = client.lease(30)
    client.put(prefix + "leased", "v", lease=lease)
    info = client.get_lease_info(lease.id)
    refreshed = lease.refresh()
    _, meta = client.get(prefix + "leased")
    lease.revoke()
    gone, _ = client.get(prefix + "leased")
    return {
        "granted_ttl": lease.ttl,
        "info_granted_ttl": info.grantedTTL,
        "remaining_ok": 0 < info.TTL <= 30,
        "keys": sorted(k.decode() for k in info.keys),
        "refreshed_ttl": refreshed[0].TTL,
        "key_lease_matches": meta.lease_id == lease.id,
        "gone_after_revoke": gone is None,
        "ttl_after_revoke": lease.remaining_ttl,
    }


def cluster_status(client) -> dict:
    """Maintenance.Status, whose leader etcd3 looks up in Cluster.MemberList."""
    status = client.status()
    return {
        "leader_name": status.leader.name if status.leader else None,
        "members": sorted(m.name for m in client.members),
        "raft_index_positive": status.raft_index > 0,
    }


def main(endpoint: str, prefix: str) -> dict:
    host, port = endpoint.rsplit(":", 1)
    client = etcd3.client(host, int(port), timeout=10)
    try:
        client.put(prefix + "a", "1")
        client.put(prefix + "b", "2")
        client.put(prefix + "c", "3")
        client.put(prefix + "a", "4")
        put_again = client.put(prefix + "a", "5", prev_kv=True)
        value, meta = client.get(prefix + "a")
        missing, _ = client.get(prefix + "missing")
        ranged = [[m.key.decode(), v.decode()] for v, m in client.get_prefix(prefix)]
        tx = client.transactions
        ok, _ = client.transaction(
            compare=[tx.value(prefix + "a") == "5", tx.version(prefix + "a") == 3],
            success=[tx.put(prefix + "txn", "yes")],
            failure=[tx.put(prefix + "txn", "no")],
        )
        failed, responses = client.transaction(
            compare=[tx.mod(prefix + "b") > 1000],
            success=[tx.delete(prefix + "b")],
            failure=[tx.get(prefix + "txn")],
        )
        deleted = client.delete(prefix + "c")
        return {
            "put_again_prev": put_again.prev_kv.value.decode(),
            "get": [value.decode(), meta.version, meta.create_revision < meta.mod_revision],
            "get_missing": missing is None,
            "range": ranged,
            "txn_succeeded": ok,
            "txn_failed_branch": [failed, [v.decode() for v, _ in responses[0]]],
            "txn_result": client.get(prefix + "txn")[0].decode(),
            "deleted": deleted,
            "watch": watch_events(client, prefix + "w/"),
            "lease": lease_lifecycle(client, prefix),
            "status": cluster_status(client),
        }
    finally:
        client.close()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2]), sort_keys=True))
