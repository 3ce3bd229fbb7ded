"""The member's Prometheus metrics, under etcd's names where the meaning matches.

Hot paths touch only plain counters (`inc()`) and histograms (`observe()`); everything that is
a level (sizes, counts of watchers, indices) is a callback gauge evaluated at scrape time.
etcd exports several totals as gauges (proposals_committed/applied, has_leader, ...); we keep
its types so dashboards and alerts written for etcd work unchanged.
"""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from protos.kvpb import internal_pb2

# etcd's bucket layouts (exponential from 1 ms, and 0.5 ms for the WAL / backend)
_WAL_FSYNC_BUCKETS = tuple(0.001 * 2 ** i for i in range(14))
_BACKEND_COMMIT_BUCKETS = tuple(0.001 * 2 ** i for i in range(14))
_DEFRAG_BUCKETS = tuple(0.1 * 2 ** i for i in range(13))       # 0.1 s .. 409.6 s
_SNAPSHOT_BUCKETS = tuple(0.01 * 2 ** i for i in range(17))    # 0.01 s .. 655.36 s
_HASH_BUCKETS = tuple(0.01 * 2 ** i for i in range(15))        # 0.01 s .. 163.84 s


class MemberMetrics:
    """All metric families of one member, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry):
        r = self._registry = registry
        self.range_total = Counter("etcd_mvcc_range", "Total number of ranges seen by this member.", registry=r)
        self.put_total = Counter("etcd_mvcc_put", "Total number of puts seen by this member.", registry=r)
        self.delete_total = Counter("etcd_mvcc_delete", "Total number of deletes seen by this member.", registry=r)
        self.txn_total = Counter("etcd_mvcc_txn", "Total number of txns seen by this member.", registry=r)
        self.wal_fsync = Histogram("etcd_disk_wal_fsync_duration_seconds",
                                   "The latency distributions of fsync called by WAL.",
                                   buckets=_WAL_FSYNC_BUCKETS, registry=r)
        self.backend_commit = Histogram("etcd_disk_backend_commit_duration_seconds",
                                        "The latency distributions of commit called by backend.",
                                        buckets=_BACKEND_COMMIT_BUCKETS, registry=r)
        self.lease_granted = Counter("etcd_debugging_lease_granted", "The total number of granted leases.", registry=r)
        self.lease_revoked = Counter("etcd_debugging_lease_revoked", "The total number of revoked leases.", registry=r)
        self.lease_renewed = Counter("etcd_debugging_lease_renewed",
                                     "The number of renewed leases seen by the leader.", registry=r)
        self.lease_expired = Counter("etcd_debugging_server_lease_expired",
                                     "The total number of expired leases.", registry=r)
        self.defrag_duration = Histogram("etcd_disk_backend_defrag_duration_seconds",
                                         "The latency distribution of backend defragmentation.",
                                         buckets=_DEFRAG_BUCKETS, registry=r)
        self.defrag_inflight = Gauge("etcd_disk_defrag_inflight",
                                     "Whether or not defrag is active on the member. 1 means active, 0 means not.",
                                     registry=r)
        self.snapshot_duration = Histogram("etcd_disk_backend_snapshot_duration_seconds",
                                           "The latency distribution of backend snapshots.",
                                           buckets=_SNAPSHOT_BUCKETS, registry=r)
        self.hash_duration = Histogram("etcd_mvcc_hash_duration_seconds",
                                       "The latency distribution of storage hash operation.",
                                       buckets=_HASH_BUCKETS, registry=r)
        self.hash_rev_duration = Histogram("etcd_mvcc_hash_rev_duration_seconds",
                                           "The latency distribution of storage hash by revision operation.",
                                           buckets=_HASH_BUCKETS, registry=r)
        # etcd: a counter without _total (monitoring/http.py ETCD_COUNTERS_WITHOUT_TOTAL)
        self.learner_promotes = Counter("etcd_server_learner_promote_successes",
                                        "The total number of successful learner promotions while this member is leader.",
                                        registry=r)
        for name, counter in (("put", self.put_total), ("delete", self.delete_total),
                              ("range", self.range_total), ("txn", self.txn_total)):
            # etcd 3.4 still exports its older names beside etcd_mvcc_*: the same counts
            self.counter(f"etcd_debugging_mvcc_{name}_total", f"Total number of {name}s seen by this member.",
                         functools.partial(_counter_value, counter))
        self.slow_applies = Counter("etcd_server_slow_apply",
                                    "The total number of slow apply requests (likely overloaded from slow disk).",
                                    registry=r)

    def info(self, name: str, doc: str, label: str, value: str) -> None:
        """etcd's info gauge: 1 for the series whose `label` is `value` (a version, an ID)."""
        Gauge(name, doc, [label], registry=self._registry).labels(value).set(1)

    def gauge(self, name: str, doc: str, fn) -> None:
        """A gauge whose value is `fn()` at scrape time."""
        Gauge(name, doc, registry=self._registry).set_function(fn)

    def counter(self, name: str, doc: str, fn) -> None:
        """A counter whose value is `fn()` at scrape time; `fn` must never decrease."""
        self._registry.register(_CallbackCounter(name, doc, fn))

    def count_applied(self, req: internal_pb2.InternalRequest) -> None:
        """Apply thread: count a successfully applied request (Counter.inc is thread-safe)."""
        kind = req.WhichOneof("request")
        if kind == "put":
            self.put_total.inc()
        elif kind == "delete_range":
            self.delete_total.inc()
        elif kind == "txn":
            self.txn_total.inc()
        elif kind == "lease_grant":
            self.lease_granted.inc()
        elif kind == "lease_revoke":
            self.lease_revoked.inc()


def _counter_value(counter: Counter) -> float:
    """The current value of an unlabelled Counter (its `_total` sample)."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return sample.value
    return 0.0


class _CallbackCounter:
    """A prometheus_client collector exposing one counter read from a callback at scrape time."""

    def __init__(self, name: str, doc: str, fn):
        self._name, self._doc, self._fn = name, doc, fn

    def collect(self):
        yield CounterMetricFamily(self._name, self._doc, value=self._fn())
