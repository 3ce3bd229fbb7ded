"""etcd3 0.12.0 over TLS with a client certificate: put, get, prefix range, watch, lease.

Runs inside the etcd3 venv (never imported by the test suite).
Usage: etcd3_tls.py HOST:PORT CA_CERT CLIENT_CERT CLIENT_KEY PREFIX
Prints one JSON object of observed outcomes; the test compares ours with etcd 3.4.23's.
"""

import json
import sys

import etcd3


def main() -> None:
    endpoint, ca, cert, key, prefix = sys.argv[1:6]
    host, port = endpoint.rsplit(":", 1)
    client = etcd3.client(host, int(port), ca_cert=ca, cert_cert=cert, cert_key=key, timeout=30)
    client.put(prefix + "a", "1")
    client.put(prefix + "b", "2")
    value, meta = client.get(prefix + "a")
    events, cancel = client.watch(prefix + "w")
    client.put(prefix + "w", "x")
    event = next(events)
    cancel()
    lease = client.lease(30)
    client.put(prefix + "leased", "v", lease=lease)
    out = {
        "get": [value.decode(), meta.version],
        "prefix": [[m.key.decode(), v.decode()] for v, m in client.get_prefix(prefix, sort_order="ascend")],
        "watch": [type(event).__name__, event.key.decode(), event.value.decode()],
        "lease_ttl": lease.granted_ttl,
    }
    client.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
