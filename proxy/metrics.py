"""The proxy's own Prometheus metrics (the grpc_server_* set comes from monitoring.grpc_metrics).

Exported series:
    etcd_grpc_proxy_cache_hits_total         counter  serializable Ranges answered from the cache
    etcd_grpc_proxy_cache_misses_total       counter  serializable Ranges not in the cache
    etcd_grpc_proxy_cache_keys_total         gauge    entries in the cache (etcd's name and type)
    kvproxy_cache_bytes                      gauge    bytes accounted to the cache
    kvproxy_cache_flushes_total              counter  whole-cache flushes (keyspace watch lost)
    kvproxy_cache_coherent                   gauge    1 while the keyspace watch is established
    kvproxy_upstream_connected               gauge    1 while the upstream channel is connected to a
                                                      member (READY); summed over workers
    kvproxy_upstream_requests_total{method}  counter  KV calls this proxy made upstream
    kvproxy_coalesced_reads_total{kind}      counter  reads answered by another read's upstream call
                                                      (kind="singleflight" | "linearizable")
    kvproxy_admission_rejected_total{limit}  counter  calls refused by hot-key protection
                                                      (limit="client" | "key")

Cost: the hot path increments plain integer attributes; the families are built at scrape time by
`collect()` (same approach as monitoring.grpc_metrics). Everything runs on the event loop thread.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, CollectorRegistry


class ProxyMetrics:
    """Counters of one proxy process, exported as a prometheus_client collector."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.cache_hits = 0
        self.cache_misses = 0
        self.upstream_requests: Counter[str] = Counter()
        self.coalesced: Counter[str] = Counter()  # kind -> count
        self.admission_rejected: Counter[str] = Counter()  # limit -> count
        self._cache_stats: Callable[[], tuple[int, int, int, bool]] = lambda: (0, 0, 0, False)
        self._coalesced_sources: dict[str, Callable[[], int]] = {}
        self._upstream_connected: Callable[[], bool] = lambda: False
        (REGISTRY if registry is None else registry).register(self)

    def watch_cache(self, stats: Callable[[], tuple[int, int, int, bool]]) -> None:
        """`stats()` -> (entries, bytes, flushes, coherent), read at scrape time."""
        self._cache_stats = stats

    def watch_upstream(self, connected: Callable[[], bool]) -> None:
        """`connected()` -> whether the upstream channel is connected, read at scrape time."""
        self._upstream_connected = connected

    def watch_coalesced(self, kind: str, count: Callable[[], int]) -> None:
        """Read a coalescer's own counter at scrape time for kvproxy_coalesced_reads_total{kind}."""
        self._coalesced_sources[kind] = count

    def describe(self):
        return list(self._families())

    def collect(self):
        return list(self._families())

    def _families(self):
        entries, size, flushes, coherent = self._cache_stats()
        yield CounterMetricFamily("etcd_grpc_proxy_cache_hits_total",
                                  "Total number of cache hits", value=self.cache_hits)
        yield CounterMetricFamily("etcd_grpc_proxy_cache_misses_total",
                                  "Total number of cache misses", value=self.cache_misses)
        yield GaugeMetricFamily("etcd_grpc_proxy_cache_keys_total",
                                "Total number of keys/ranges cached", value=entries)
        yield GaugeMetricFamily("kvproxy_cache_bytes", "Bytes accounted to the range cache", value=size)
        yield CounterMetricFamily("kvproxy_cache_flushes_total",
                                  "Whole-cache flushes (the keyspace watch was lost)", value=flushes)
        yield GaugeMetricFamily("kvproxy_cache_coherent",
                                "1 while the keyspace watch keeps the cache coherent", value=int(coherent))
        yield GaugeMetricFamily("kvproxy_upstream_connected",
                                "1 while the upstream channel is connected to a cluster member",
                                value=int(self._upstream_connected()))
        up = CounterMetricFamily("kvproxy_upstream_requests_total",
                                 "KV requests this proxy sent upstream", labels=("method",))
        for method, n in sorted(self.upstream_requests.items()):
            up.add_metric([method], n)
        yield up
        co = CounterMetricFamily("kvproxy_coalesced_reads_total",
                                 "Reads answered by an upstream call another read caused", labels=("kind",))
        kinds = dict(self.coalesced)
        for kind, source in self._coalesced_sources.items():
            kinds[kind] = kinds.get(kind, 0) + source()
        for kind in ("singleflight", "linearizable"):
            kinds.setdefault(kind, 0)
        for kind, n in sorted(kinds.items()):
            co.add_metric([kind], n)
        yield co
        rej = CounterMetricFamily("kvproxy_admission_rejected_total",
                                  "Calls refused by hot-key protection", labels=("limit",))
        for limit in ("client", "key"):
            rej.add_metric([limit], self.admission_rejected.get(limit, 0))
        yield rej
