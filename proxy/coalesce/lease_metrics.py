"""Prometheus metrics of lease keepalive coalescing (default registry; summed across workers).

The ratio kvproxy_lease_keepalives_upstream_total / kvproxy_lease_keepalives_client_total shows
how many client keepalives were merged.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CLIENT_KEEPALIVES = Counter(
    "kvproxy_lease_keepalives_client",
    "LeaseKeepAlive requests received from clients",
)
UPSTREAM_KEEPALIVES = Counter(
    "kvproxy_lease_keepalives_upstream",
    "LeaseKeepAlive requests sent to the cluster (one per coalesced group of client keepalives)",
)
UPSTREAM_KEEPALIVE_STREAMS = Gauge(
    "kvproxy_upstream_keepalive_streams",
    "LeaseKeepAlive streams this proxy holds open on the cluster (one per identity in use)",
    multiprocess_mode="livesum",
)
