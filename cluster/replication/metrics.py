"""Replication metrics under etcd's names, beside the member's own (cluster/server/metrics.py).

The member already exports has_leader / is_leader / proposals_* / wal_fsync from the seam's
figures; this module adds what only replication knows. Hot paths call plain `inc()`.
`etcd_server_read_indexes_total` (rounds) and `etcd_server_linearizable_reads_total` (reads) are
ours (etcd 3.4 has neither); their ratio is the ReadIndex batching factor.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

# etcd's layout for etcd_network_peer_round_trip_time_seconds: 0.1 ms doubling, 16 buckets
_RTT_BUCKETS = tuple(0.0001 * 2 ** i for i in range(16))


class ReplicationMetrics:
    """Leader changes, ReadIndex rounds and reads, peer traffic, failures and round trips."""

    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.leader_changes = Counter(
            "etcd_server_leader_changes_seen", "The number of leader changes seen.", registry=r)
        self.read_indexes = Counter(
            "etcd_server_read_indexes", "The number of ReadIndex rounds (each confirms a batch "
            "of linearizable reads).", registry=r)
        self.linearizable_reads = Counter(
            "etcd_server_linearizable_reads", "The number of linearizable reads served through "
            "ReadIndex rounds.", registry=r)
        self.peer_sent_bytes = Counter(
            "etcd_network_peer_sent_bytes", "The total number of bytes sent to peers.", ["To"],
            registry=r)
        self.peer_received_bytes = Counter(
            "etcd_network_peer_received_bytes", "The total number of bytes received from peers.",
            ["From"], registry=r)
        self._received_inc: dict[int, Callable[[float], None]] = {}
        self.peer_sent_failures = Counter(
            "etcd_network_peer_sent_failures", "The total number of send failures from peers.",
            ["To"], registry=r)
        self.peer_received_failures = Counter(
            "etcd_network_peer_received_failures", "The total number of receive failures from peers.",
            ["From"], registry=r)
        self.peer_round_trip = Histogram(
            "etcd_network_peer_round_trip_time_seconds", "Round-Trip-Time histogram between "
            "peers (heartbeat to heartbeat response).", ["To"], buckets=_RTT_BUCKETS, registry=r)

        self.snapshot_send_success = Counter(
            "etcd_network_snapshot_send_success", "Total number of successful snapshot sends",
            ["To"], registry=r)
        self.snapshot_send_failures = Counter(
            "etcd_network_snapshot_send_failures", "Total number of snapshot send failures",
            ["To"], registry=r)
        self.snapshot_receive_success = Counter(
            "etcd_network_snapshot_receive_success", "Total number of successful snapshot receives",
            ["From"], registry=r)
        self.snapshot_receive_failures = Counter(
            "etcd_network_snapshot_receive_failures", "Total number of snapshot receive failures",
            ["From"], registry=r)

        self.slow_read_indexes = Counter(
            "etcd_server_slow_read_indexes", "The total number of pending read indexes not in sync with "
            "leader's or timed out read index requests.", registry=r)
        self.read_indexes_failed = Counter(
            "etcd_server_read_indexes_failed", "The total number of failed read indexes seen.", registry=r)
        self.heartbeat_send_failures = Counter(
            "etcd_server_heartbeat_send_failures", "The total number of leader heartbeat send failures "
            "(likely overloaded from slow disk).", registry=r)
        # etcd: a gauge named *_total (monitoring/http.py exposes such gauges untyped); inc() from
        # the WAL thread (thread-safe)
        self.wal_write_bytes = Gauge(
            "etcd_disk_wal_write_bytes_total", "Total number of bytes written in WAL.", registry=r)
        self._registry = r

    def snapshot_apply_in_progress(self, fn: Callable[[], bool]) -> None:
        """etcd_server_snapshot_apply_in_progress_total: 1 while `fn()` (a leader's store image
        being installed)."""
        Gauge("etcd_server_snapshot_apply_in_progress_total",
              "1 if the server is applying the incoming snapshot. 0 if none.",
              registry=self._registry).set_function(lambda: 1 if fn() else 0)

    def count_snapshot(self, peer_id: int, *, sent: bool, ok: bool) -> None:
        if sent:
            (self.snapshot_send_success if ok else self.snapshot_send_failures).labels(f"{peer_id:x}").inc()
        else:
            (self.snapshot_receive_success if ok else self.snapshot_receive_failures).labels(f"{peer_id:x}").inc()

    def count_reads(self, n: int) -> None:
        self.linearizable_reads.inc(n)

    def sent_counter(self, peer_id: int) -> Callable[[int], None]:
        """The `inc` of the sent-bytes child for `peer_id` (resolved once per stream)."""
        return self.peer_sent_bytes.labels(f"{peer_id:x}").inc

    def sent_failure_counter(self, peer_id: int) -> Callable[[int], None]:
        """The `inc` of the send-failures child for `peer_id`: messages that never reached the
        peer (dropped from a full queue or a broken stream), as etcd counts them."""
        return self.peer_sent_failures.labels(f"{peer_id:x}").inc

    def count_received_failure(self, peer_id: int) -> None:
        """An inbound peer stream or snapshot was refused (another cluster or member, an
        undecodable message)."""
        self.peer_received_failures.labels(f"{peer_id:x}").inc()

    def observe_round_trip(self, peer_id: int, seconds: float) -> None:
        self.peer_round_trip.labels(f"{peer_id:x}").observe(seconds)

    def count_received(self, peer_id: int, nbytes: int) -> None:
        """Called for every inbound batch: each peer's child is looked up once."""
        inc = self._received_inc.get(peer_id)
        if inc is None:
            inc = self._received_inc[peer_id] = self.peer_received_bytes.labels(f"{peer_id:x}").inc
        inc(nbytes)


class ActivePeersCollector:
    """etcd_network_active_peers{Local, Remote}: 1 for each peer whose connection is up
    (`PeerTransport.connected`), 0 for the other members. Collected at scrape time, on the loop
    (the metrics endpoint runs there)."""

    def __init__(self, local_id: int, transport):
        self._local = f"{local_id:x}"
        self._transport = transport

    def collect(self):
        family = GaugeMetricFamily("etcd_network_active_peers", "The current number of active peer connections.",
                                   labels=["Local", "Remote"])
        for peer_id in self._transport.peer_ids():
            family.add_metric([self._local, f"{peer_id:x}"], 1 if self._transport.connected(peer_id) else 0)
        yield family
