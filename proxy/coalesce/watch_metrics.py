"""Prometheus metrics of watch coalescing (default registry; summed across workers).

`etcd_grpc_proxy_watchers_coalescing_total` is a *gauge* in etcd's grpc-proxy (the `_total` suffix
notwithstanding), and so it is here: the number of client watchers currently sharing an upstream
watch with an earlier one, i.e. the sum over shared upstream watches of (subscribers - 1).
etcd increments it only for watchers that join a broadcast after its first response and
decrements it on removal when receivers remain, so its value can drift; ours is exact.

`etcd_grpc_proxy_events_coalescing_total` is a counter, as in etcd: for each upstream event
response broadcast to n client watchers, it grows by n - 1 (the upstream responses saved).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WATCHERS_COALESCING = Gauge(
    "etcd_grpc_proxy_watchers_coalescing_total",
    "Total number of current watchers coalescing",
    multiprocess_mode="livesum",
)
EVENTS_COALESCING = Counter(
    "etcd_grpc_proxy_events_coalescing",
    "Total number of events coalescing",
)
UPSTREAM_WATCHES = Gauge(
    "kvproxy_upstream_watches",
    "Watches this proxy holds open on the cluster (shared fan-out watches and temporary catch-up watches)",
    ["kind"],
    multiprocess_mode="livesum",
)
CLIENT_WATCHERS = Gauge(
    "kvproxy_client_watchers",
    "Client watchers currently served by this proxy",
    multiprocess_mode="livesum",
)
SLOW_WATCHERS_CANCELED = Counter(
    "kvproxy_watch_slow_canceled",
    "Client watchers canceled because their stream's send buffer was full",
)
UPSTREAM_WATCH_RESUMES = Counter(
    "kvproxy_upstream_watch_resumes",
    "Upstream watches re-created from their next revision after the upstream stream broke",
)
PROGRESS_ANSWERS = Counter(
    "kvproxy_watch_progress_responses",
    "Progress responses sent to clients in answer to WatchProgressRequest",
)
