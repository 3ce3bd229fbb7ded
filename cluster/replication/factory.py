"""`build_replicated_log`: the member's ReplicatedLog, built from its etcd flags.

Called once by `Member.start()` where it used to build a `LocalLog`. Every member, a single
one included, runs Raft: a one-member cluster is Raft with one voter (it elects itself).

Identity and checks, as etcd does them:
- member ids and the cluster id come from `cluster.server.membership` (sha1 of the sorted peer
  URLs + token; sha1 of the sorted member ids);
- this member's --name must appear in --initial-cluster, with exactly its
  --initial-advertise-peer-urls;
- with --initial-cluster-state existing the same holds; the member's identity then comes from
  the running cluster (cluster/server/member.py);
- --election-timeout must be at least 5 x --heartbeat-interval (etcd's rule); one tick is one
  heartbeat interval, the election timeout is election-timeout / heartbeat-interval ticks;
- the WAL remembers the member and cluster ids it was created for (raft_wal.MemberWAL): a data
  dir from another cluster is refused.
Violations raise `BootstrapError` with a message naming the flag to fix.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry

from cluster.raft.wal import DEFAULT_SEGMENT_SIZE
from cluster.server.membership import Membership, parse_initial_cluster

from .driver import CATCH_UP_ENTRIES, RaftDriver
from .errors import BootstrapError
from .metrics import ReplicationMetrics
from .raft_wal import MemberWAL
from .transport import PeerTransport

log = logging.getLogger(__name__)


def check_flags(cfg) -> None:
    """Refuse flag combinations etcd refuses (see the module docstring)."""
    if cfg.heartbeat_interval_ms <= 0 or 5 * cfg.heartbeat_interval_ms > cfg.election_timeout_ms:
        raise BootstrapError(
            f"--election-timeout[{cfg.election_timeout_ms}ms] should be at least as 5 times as "
            f"--heartbeat-interval[{cfg.heartbeat_interval_ms}ms]")
    if getattr(cfg, "snapshot_count", 1) <= 0:
        raise BootstrapError(f"--snapshot-count must be positive, got {cfg.snapshot_count}")
    if getattr(cfg, "snapshot_catchup_entries", 1) <= 0:
        raise BootstrapError("--experimental-snapshot-catchup-entries must be positive, got "
                             f"{cfg.snapshot_catchup_entries}")
    configured = parse_initial_cluster(cfg.initial_cluster)
    if cfg.name not in configured:
        raise BootstrapError(
            f"couldn't find local name {cfg.name!r} in the initial cluster configuration "
            f"(--initial-cluster={cfg.initial_cluster})")
    if sorted(configured[cfg.name]) != sorted(cfg.initial_advertise_peer_urls):
        raise BootstrapError(
            f"--initial-cluster has {cfg.name}={','.join(configured[cfg.name])} but "
            f"--initial-advertise-peer-urls is {','.join(cfg.initial_advertise_peer_urls)}: "
            "they must match")


def build_replicated_log(cfg, membership: Membership, member_dir: str, registry: CollectorRegistry,
                         *, observe_fsync=None, on_fatal=None, image=None, bootstrap=True,
                         on_removed=None) -> RaftDriver:
    """A `RaftDriver` for this member: WAL under `member_dir`/wal (or --wal-dir), snapshot files under
    `member_dir`/snap, peers from `membership`, metrics in `registry`; `image`: the store as
    snapshots see it (seam.StoreImage). `bootstrap`: an empty log starts with `membership`'s
    voters (a new cluster), else empty (joining a running one). `on_removed()`: a peer refused
    this member as removed from the cluster. Raises `BootstrapError` for bad flags.

    Entries kept behind a compaction: `--experimental-snapshot-catchup-entries` (etcd 3.5's
    flag, default 5000). Test knob (environment; etcd has no flag for it):
    `KVCLUSTER_WAL_SEGMENT_BYTES` (WAL segment size, default 64 MiB)."""
    try:
        check_flags(cfg)
    except BootstrapError as exc:
        log.critical("refusing to start", extra={"fields": {"error": str(exc)}})
        raise
    local = membership.local
    metrics = ReplicationMetrics(registry)
    transport = PeerTransport(
        local.id, membership.cluster_id, {m.id: m.peer_urls[0] for m in membership.members},
        cfg.listen_peer_urls, metrics=metrics, tls=getattr(cfg, "peer_tls", None),
        removed=membership.removed, on_removed=on_removed)
    driver = RaftDriver(
        local.id, [m.id for m in membership.voters()] if bootstrap else [],
        MemberWAL(getattr(cfg, "wal_dir", "") or os.path.join(member_dir, "wal"), local.id,
                  membership.cluster_id, snap_dir=os.path.join(member_dir, "snap"),
                  segment_size=_segment_size(), max_snapshots=getattr(cfg, "max_snapshots", 5),
                  max_wals=getattr(cfg, "max_wals", 5), count_written=metrics.wal_write_bytes.inc),
        transport,
        tick_interval=cfg.heartbeat_interval_ms / 1000,
        election_ticks=cfg.election_timeout_ms // cfg.heartbeat_interval_ms,
        request_timeout=cfg.request_timeout,
        observe_fsync=observe_fsync, on_fatal=on_fatal,
        on_leader_change=lambda _lead: metrics.leader_changes.inc(),
        count_read_round=metrics.read_indexes.inc, count_reads=metrics.count_reads,
        image=image, snapshot_count=cfg.snapshot_count,
        catch_up_entries=getattr(cfg, "snapshot_catchup_entries", CATCH_UP_ENTRIES),
        pre_vote=getattr(cfg, "pre_vote", True),
        initial_election_tick_advance=getattr(cfg, "initial_election_tick_advance", True),
        count_slow_read=metrics.slow_read_indexes.inc, count_failed_read=metrics.read_indexes_failed.inc,
        count_late_heartbeat=metrics.heartbeat_send_failures.inc)
    metrics.snapshot_apply_in_progress(lambda: driver.installing_snapshot)
    return driver


def _segment_size() -> int:
    raw = os.environ.get("KVCLUSTER_WAL_SEGMENT_BYTES")
    return int(raw) if raw else DEFAULT_SEGMENT_SIZE
