"""`Member`: builds and runs one kvcluster member.

Start order (`start()`): open the store (worker thread) -> the membership (`_resolve_membership`:
the store's record; else --initial-cluster for a new cluster, or the running cluster's for
--initial-cluster-state existing) -> recover leases and alarms -> start the
log (the ReplicatedLog), which replays entries past store.applied_index through the apply loop
-> start the lessor, watch hub and compactor, and publish this member's name and client URLs
through the log (a background task, retried until applied) -> wait until the log is ready (a
leader, and what was committed applied) -> serve gRPC on the client URLs -> serve /metrics and
/health on the metrics URLs. `stop()` undoes it in reverse. Everything runs on one asyncio loop; blocking work
goes to dedicated threads: `wal` (log writes + fsync), `apply` (the store's only writer),
`watch-catchup` and `read` (store reads too big for the loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, ProcessCollector

from cluster import etcd_flags
from cluster.fsutil import fsync_dir
from cluster.grpc_wrapping import WrappingServer
from cluster.mvcc.store import MVCCStore
from cluster.raft.wal import WAL
from cluster.replication.factory import build_replicated_log
from cluster.replication.metrics import ActivePeersCollector
from cluster.replication.transport import fetch_cluster_members
from cluster.tls import TLSInfo, is_tls_url
from monitoring.grpc_metrics import GrpcServerMetrics
from monitoring.http import MetricsHTTPServer
from protos.etcdserverpb import rpc_pb2
from protos.healthpb import health_pb2
from protos.kvpb import internal_pb2

from .alarms import AlarmSet
from .applier import ApplyLoop
from .auth.gate import AuthGate
from .auth.service import AuthService
from .auth.store import AuthStore
from .auth.tokens import build_token_provider
from .cluster_service import ClusterService
from .compactor import AutoCompactor, parse_retention
from .errors import EtcdError
from .grpc_glue import add_servicer
from .health_service import HealthService
from .kv_service import KVService
from .leader_gate import RequireLeaderGate
from .learner_gate import LearnerGate
from .lease_routing import LeaseRouter
from .lease_service import LeaseService
from .lessor import Lessor, min_lease_ttl
from .local_log import LocalLog
from .maintenance_service import MaintenanceService
from .membership import STORE_META_KEY, Membership, parse_initial_cluster
from .metrics import MemberMetrics
from .proposer import Proposer, ResponseHeaders
from .quota import BackendQuota, quota_bytes_from_flag
from .request_wait import RequestIdGenerator, RequestWait
from .store_image import MemberStoreImage
from .watch_hub import WatchHub
from .watch_service import WatchService

log = logging.getLogger(__name__)

# Status.version: the etcd release whose API and behaviour the member implements. Clients gate on
# it: Go clientv3 with RejectOldCluster (Calico's datastore client sets it, for one) refuses a
# cluster whose members report below 3.2 ("etcdclient: old cluster version").
SERVER_VERSION = "3.4.0"
CLUSTER_VERSION = "3.4"  # etcd_cluster_version: MAJOR.MINOR, as etcd's
KEY_COUNT_INTERVAL = 5.0  # seconds between refreshes of etcd_debugging_mvcc_keys_total
GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd: grpc MaxRecvMsgSize = max-request-bytes + this
SERVICE_NAMES = [s.full_name for s in rpc_pb2.DESCRIPTOR.services_by_name.values()]


@dataclass
class MemberConfig:
    """The member's configuration: etcd's flags, parsed (cluster/cli.py builds it)."""

    name: str = "default"
    data_dir: str = "default.etcd"
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    advertise_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    listen_metrics_urls: list[str] = field(default_factory=list)
    listen_peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])
    initial_advertise_peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    max_request_bytes: int = 1572864
    quota_backend_bytes: int = 0
    max_txn_ops: int = 128
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 100000
    snapshot_catchup_entries: int = 5000  # etcd 3.5's --experimental-snapshot-catchup-entries
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    watch_progress_notify_interval: float = 600.0
    request_timeout: float = 7.0  # etcd: 5 s + 2 x election timeout
    local_log: bool = False  # True: LocalLog instead of Raft (one member only)
    client_tls: TLSInfo = field(default_factory=TLSInfo)  # https:// client and metrics URLs
    peer_tls: TLSInfo = field(default_factory=TLSInfo)  # https:// peer URLs, served and dialed
    auth_token: str = "simple"  # --auth-token: "simple" or "jwt,pub-key=...,priv-key=...,..."
    auth_token_ttl: float = 300.0  # --auth-token-ttl (simple tokens), seconds
    wal_dir: str = ""  # --wal-dir; "": <data-dir>/member/wal
    max_snapshots: int = 5  # snapshot files kept (0: all)
    max_wals: int = 5  # WAL segments kept, of those a snapshot covers (0: all)
    strict_reconfig_check: bool = True  # refuse membership changes that would cost the quorum
    pre_vote: bool = True  # etcd 3.4's default is false, 3.5's true
    initial_election_tick_advance: bool = True
    grpc_keepalive_min_time: float = 5.0  # seconds; client pings more often are refused
    grpc_keepalive_interval: float = 7200.0  # seconds between pings to idle clients; 0: none
    grpc_keepalive_timeout: float = 20.0  # seconds to wait for a ping's answer; 0: forever
    max_concurrent_streams: int = 2 ** 32 - 1  # per client connection
    warning_apply_duration: float = 0.1  # an apply taking longer is logged and counted


def host_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "") or not parts.hostname or parts.port is None:
        raise ValueError(f"unsupported URL {url!r} (only http://host:port or https://host:port)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


class Member:
    """One running member: store, log, apply loop, services, gRPC and metrics servers."""

    def __init__(self, cfg: MemberConfig):
        self.cfg = cfg
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.metrics = MemberMetrics(self.registry)
        self.membership: Membership | None = None
        self.member_id = 0
        self._removed = False  # removed from the cluster: stopping
        self._peer_updates: set[asyncio.Task] = set()
        self._member_dir = os.path.join(cfg.data_dir, "member")
        self._wal_dir = cfg.wal_dir or os.path.join(self._member_dir, "wal")  # --wal-dir
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="read")
        self._stopped = asyncio.Event()
        self.store = None
        self._key_count = 0
        self._no_space_proposal: asyncio.Task | None = None  # at most one in flight
        self.grpc_server: grpc.aio.Server | None = None
        self.http: MetricsHTTPServer | None = None

    async def start(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        os.makedirs(self._member_dir, exist_ok=True)
        self.store = store = await loop.run_in_executor(
            self._readers, MVCCStore, os.path.join(self._member_dir, "store"))
        self.auth = AuthStore(build_token_provider(cfg.auth_token, cfg.auth_token_ttl))
        self.auth.load(await loop.run_in_executor(self._readers, store.auth_records))
        self.membership, bootstrap, dirty = await self._resolve_membership()
        self.member_id = self.membership.local_id
        # Only a member that joined (or restarts as a learner) can be a learner: etcd 3.4 never
        # demotes, so the others serve without the learner gate's per-call cost.
        self._may_be_learner = not bootstrap or self.membership.local.is_learner
        self.log = self._build_log(bootstrap)
        self.headers = ResponseHeaders(self.membership.cluster_id, self.member_id, self.log, store)
        self.wait = RequestWait()
        self.alarms = await loop.run_in_executor(self._readers, AlarmSet, store)
        self.lessor = Lessor(min_lease_ttl(cfg.election_timeout_ms, cfg.heartbeat_interval_ms),
                             self._revoke_expired_lease,
                             is_leader=lambda: self.log.leader_id == self.member_id)
        self.lessor.recover(await loop.run_in_executor(self._readers, store.leases))
        peers = getattr(self.log, "peers", None)  # None: the single-member LocalLog
        self.lease_router = LeaseRouter(self.lessor, self.log, self.member_id, peers=peers,
                                        timeout=cfg.request_timeout)
        if peers is not None:
            peers.serve_leases(self.lease_router)
        self.hub = WatchHub(store, self.headers.make, progress_interval=cfg.watch_progress_notify_interval)
        self.apply_loop = ApplyLoop(store, self.lessor, self.alarms, self.wait, self.hub.notify,
                                    membership=self.membership,
                                    on_member_change=self._membership_changed,
                                    observe_commit=self.metrics.backend_commit.observe,
                                    count_ops=self.metrics.count_applied, auth=self.auth,
                                    quota_bytes=quota_bytes_from_flag(cfg.quota_backend_bytes),
                                    on_no_space=self._raise_no_space,
                                    warning_apply_duration=cfg.warning_apply_duration,
                                    count_slow_apply=self.metrics.slow_applies.inc)
        self.proposer = Proposer(self.log, self.wait, RequestIdGenerator(self.member_id),
                                 max_request_bytes=cfg.max_request_bytes, timeout=cfg.request_timeout)
        self.quota = BackendQuota(store, self.alarms, quota_bytes_from_flag(cfg.quota_backend_bytes),
                                  self.member_id, self._propose_alarm)
        self.cluster_service = ClusterService(self.membership, self.headers, self.log, self.proposer,
                                              request_timeout=cfg.request_timeout,
                                              strict_reconfig_check=cfg.strict_reconfig_check,
                                              count_promote=self.metrics.learner_promotes.inc)
        if peers is not None:
            peers.serve_cluster(self.cluster_service)
        self.apply_loop.membership_dirty = dirty  # not in the store yet: written with the next batch
        if self.membership.is_removed(self.member_id):
            self._removed_from_cluster()
        await self.log.start(self.apply_loop.apply, store.applied_index)
        self.apply_loop.resume_compaction()
        self.lessor.start()
        self.hub.start()
        self.compactor = AutoCompactor(
            cfg.auto_compaction_mode, parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention),
            lambda: store.current_revision, lambda req: self.proposer.propose(compaction=req))
        self.compactor.start()
        self._background = [asyncio.create_task(self.proposer.run_timeouts(), name="proposal-timeouts"),
                            asyncio.create_task(self._count_keys(), name="key-count")]
        self._register_gauges()
        await self._publish()
        await self._start_grpc()
        self.http = MetricsHTTPServer(self.registry, health=self.health)
        if cfg.listen_metrics_urls:
            await self.http.start(cfg.listen_metrics_urls,
                                  tls=cfg.client_tls if not cfg.client_tls.empty() else None)
        log.info("member serving", extra={"fields": {
            "name": cfg.name, "member_id": f"{self.member_id:x}",
            "cluster_id": f"{self.membership.cluster_id:x}", "client_urls": cfg.listen_client_urls,
            "metrics_urls": cfg.listen_metrics_urls, "revision": store.current_revision,
            "applied_index": self.log.applied_index}})

    async def _start_grpc(self) -> None:
        cfg = self.cfg

        grpc_metrics = GrpcServerMetrics(self.registry)
        grpc_metrics.initialize(rpc_pb2.DESCRIPTOR.services_by_name[n.split(".")[-1]] for n in SERVICE_NAMES)
        auth = AuthGate(self.auth, client_cert_auth=cfg.client_tls.client_cert_auth)
        wraps = [grpc_metrics.wrap, auth.wrap]
        if self._may_be_learner:
            wraps.append(LearnerGate(lambda: self.membership.local.is_learner).wrap)
        leader_gate = RequireLeaderGate(lambda: self.log.leader_id != 0, cfg.election_timeout_ms / 1000)
        wraps.append(leader_gate.wrap)
        self._background.append(asyncio.create_task(leader_gate.run(), name="require-leader-monitor"))
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", cfg.max_request_bytes + GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", 2 ** 31 - 1),
            # grpc core cancels calls beyond 1,000 not yet picked up by the application; etcd
            # has no such limit, and thousands of clients may connect at once.
            ("grpc.server.max_pending_requests", 100_000),
            ("grpc.server.max_pending_requests_hard_limit", 100_000),
            # --grpc-keepalive-*: ping idle clients (default every 2 h), wait for the answer
            # (20 s), refuse clients pinging more often than every 5 s; --max-concurrent-streams
            *etcd_flags.client_connection_options(cfg.max_concurrent_streams, cfg.grpc_keepalive_min_time,
                                                  cfg.grpc_keepalive_interval, cfg.grpc_keepalive_timeout),
        ])
        services = {
            "KV": KVService(self.store, self.log, self.proposer, self.headers, self.quota, self.apply_loop,
                            self.metrics, max_txn_ops=cfg.max_txn_ops, readers=self._readers),
            "Watch": WatchService(self.hub, self.headers, max_request_bytes=cfg.max_request_bytes),
            "Lease": LeaseService(self.store, self.lessor, self.lease_router, self.proposer, self.headers,
                                  self.quota, self.metrics, readers=self._readers),
            "Maintenance": MaintenanceService(
                self.store, self.log, self.apply_loop, self.alarms, self.proposer, self.headers,
                version=SERVER_VERSION, snapshot_dir=os.path.join(self._member_dir, "snap"),
                readers=self._readers, metrics=self.metrics, request_timeout=cfg.request_timeout),
            "Cluster": self.cluster_service,
            "Auth": AuthService(self.auth, self.log, self.proposer, self.headers),
        }
        registering = WrappingServer(server, wraps)
        for name, servicer in services.items():
            add_servicer(registering, rpc_pb2.DESCRIPTOR.services_by_name[name], servicer, rpc_pb2)
        health = health_pb2.DESCRIPTOR.services_by_name["Health"]
        add_servicer(registering, health, HealthService(), health_pb2)
        reflection.enable_server_reflection([*SERVICE_NAMES, health.full_name, reflection.SERVICE_NAME], server)
        for url in cfg.listen_client_urls:
            if is_tls_url(url):
                server.add_secure_port(host_port(url), cfg.client_tls.server_credentials())
            else:
                server.add_insecure_port(host_port(url))
        await server.start()
        self.grpc_server = server

    def _register_gauges(self) -> None:
        m, store, hub = self.metrics, self.store, self.hub
        m.gauge("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", store.db_size)
        m.gauge("etcd_debugging_mvcc_db_total_size_in_bytes",  # etcd 3.4 keeps its older name too
                "Total size of the underlying database physically allocated in bytes.", store.db_size)
        m.gauge("etcd_debugging_auth_revision", "The current revision of auth store.", lambda: self.auth.state.revision)
        m.gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", store.db_size_in_use)
        m.gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.", lambda: self._key_count)
        m.gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.", lambda: hub.watcher_count)
        m.gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", lambda: hub.stream_count)
        m.gauge("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.", lambda: hub.slow_watcher_count)
        m.gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", lambda: 1 if self.log.leader_id else 0)
        m.gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", lambda: 1 if self.log.leader_id == self.member_id else 0)
        m.gauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.", lambda: self.log.committed_index)
        m.gauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.", lambda: self.log.applied_index)
        m.gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.", lambda: len(self.wait))
        m.counter("etcd_server_proposals_failed_total", "The total number of failed proposals seen.", lambda: self.proposer.failed_total)
        m.gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.", lambda: self.quota.quota_bytes)
        m.info("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.",
               "server_version", SERVER_VERSION)
        m.info("etcd_cluster_version", "Which version is running. 1 for 'cluster_version' label with current cluster version",
               "cluster_version", CLUSTER_VERSION)
        m.info("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
               "server_id", f"{self.member_id:x}")
        m.gauge("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.",
                lambda: 1 if self.membership.local.is_learner else 0)
        m.gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.", lambda: store.current_revision)
        m.gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
                lambda: store.compact_revision or -1)  # etcd: -1 until the first compaction
        m.gauge("os_fd_used", "The number of used file descriptors.", lambda: len(os.listdir("/proc/self/fd")))
        m.gauge("os_fd_limit", "The file descriptor limit.", lambda: resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        peers = getattr(self.log, "peers", None)  # None: the single-member LocalLog
        if peers is not None:
            self.registry.register(ActivePeersCollector(self.member_id, peers))

    async def _count_keys(self) -> None:
        """Refresh the key count for etcd_debugging_mvcc_keys_total: a full count is a scan of
        the key index, so it runs on a reader thread every few seconds, never at scrape time."""
        loop = asyncio.get_running_loop()
        count_all = rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True)
        while True:
            resp = await loop.run_in_executor(self._readers, self.store.range, count_all)
            self._key_count = resp.count
            await asyncio.sleep(KEY_COUNT_INTERVAL)

    async def _publish(self) -> None:
        """Publish this member's name and client URLs through the log, once per start (etcd's
        publish), retrying until it is applied; every member's MemberList then reports them.

        Clients are served only after this returns, as etcd serves after its publish: the entry
        being applied here means the log has a leader and this member has applied everything
        committed before it, so no client sees "no leader" or an index that moves by itself."""
        local = self.membership.local
        attrs = internal_pb2.MemberAttributes(member_id=local.id, name=self.cfg.name,
                                              client_urls=self.cfg.advertise_client_urls)
        while not self._stopped.is_set():
            try:
                await self.proposer.propose(member_attributes=attrs)
            except EtcdError as exc:
                log.info("publish of member attributes failed; retrying", extra={"fields": {
                    "error": exc.message}})
                await asyncio.sleep(0.05)
                continue
            log.info("published local member to cluster through raft", extra={"fields": {
                "name": self.cfg.name, "member_id": f"{local.id:x}",
                "client_urls": list(self.cfg.advertise_client_urls)}})
            return

    # -- callbacks ------------------------------------------------------------------------------

    def _revoke_expired_lease(self, lease_id: int) -> None:
        """Lessor: an expired lease becomes a LeaseRevoke proposal (fire and forget)."""
        asyncio.create_task(self._revoke_expired(lease_id))

    async def _revoke_expired(self, lease_id: int) -> None:
        """Revoke an expired lease; counted in etcd_debugging_server_lease_expired_total once
        revoked, as etcd counts it (a retry after a failed attempt is not counted twice)."""
        if await self._propose_quietly(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id)):
            self.metrics.lease_expired.inc()

    def _raise_no_space(self) -> asyncio.Task | None:
        """ApplyLoop: a write took this member's store to the quota, or its map filled up; raise
        NOSPACE for this member through the log (unless a NOSPACE alarm is active), as etcd."""
        if self.alarms.no_space:
            return None
        if self._no_space_proposal is None:
            self._no_space_proposal = asyncio.create_task(self._propose_no_space())
        return self._no_space_proposal

    async def _propose_no_space(self) -> None:
        try:
            await self._propose_alarm(rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self.member_id, alarm=rpc_pb2.NOSPACE))
        finally:
            self._no_space_proposal = None

    async def _propose_alarm(self, req: rpc_pb2.AlarmRequest) -> None:
        await self._propose_quietly(alarm=req)

    async def _propose_quietly(self, **request) -> bool:
        """Propose and wait for the outcome; a failure is logged, not raised. True if applied."""
        try:
            await self.proposer.propose(**request)
        except EtcdError as exc:
            log.info("background proposal failed", extra={"fields": {
                "request": next(iter(request)), "error": exc.message}})
            return False
        return True

    async def _resolve_membership(self) -> tuple[Membership, bool, bool]:
        """(membership, bootstrap, dirty): the store's record if it has one and a WAL (a
        restart: flags are ignored, as etcd ignores them once it has a WAL); else a new cluster's founding
        membership from --initial-cluster (bootstrap: the log starts with its voters), or, with
        --initial-cluster-state existing, the running cluster's, asked from the other members of
        --initial-cluster (etcd's GetClusterFromRemotePeers), this member found by its peer
        URLs. `dirty`: not yet in the store. This member's own ID comes from `member/identity`
        once it exists (`_keep_identity`)."""
        loop = asyncio.get_running_loop()
        resolved = await self._resolve_membership_record()
        membership = resolved[0]
        local_id = await loop.run_in_executor(self._readers, self._keep_identity, membership.local_id)
        membership.local_id = local_id
        cfg = self.cfg
        if cfg.initial_cluster_state == "new" and not resolved[2]:
            flags = Membership.from_flags(cfg.name, cfg.initial_cluster, cfg.initial_advertise_peer_urls,
                                          cfg.advertise_client_urls, cfg.initial_cluster_token)
            if (flags.local_id, flags.cluster_id) != (local_id, membership.cluster_id):
                raise ValueError(
                    f"data dir {cfg.data_dir} belongs to member {local_id:x} of cluster "
                    f"{membership.cluster_id:x}, but --name/--initial-cluster/--initial-cluster-token "
                    f"describe member {flags.local_id:x} of cluster {flags.cluster_id:x}: it is another "
                    "cluster's data dir; use a fresh --data-dir (a member that joined with "
                    "--initial-cluster-state existing restarts with it too)")
        return resolved

    def _keep_identity(self, local_id: int) -> int:
        """This member's ID, kept in `member/identity` from its first start (a store image
        installed from the leader carries the leader's view of who is local, so the ID must
        live outside the store); written (fsynced) when missing."""
        path = os.path.join(self._member_dir, "identity")
        try:
            with open(path) as f:
                return int(f.read().strip(), 16)
        except FileNotFoundError:
            pass
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{local_id:x}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self._member_dir)
        return local_id

    async def _resolve_membership_record(self) -> tuple[Membership, bool, bool]:
        cfg = self.cfg
        raw = await asyncio.get_running_loop().run_in_executor(
            self._readers, self.store.server_meta, STORE_META_KEY)
        if raw is not None and WAL.exists(self._wal_dir):
            return Membership.decode(raw), True, False
        # (a record without a WAL: a store restored from a snapshot, which starts a new cluster
        # from the flags, as etcd's snapshot restore rewrites the membership)
        if cfg.initial_cluster_state != "existing" or cfg.local_log:
            return Membership.from_flags(cfg.name, cfg.initial_cluster, cfg.initial_advertise_peer_urls,
                                         cfg.advertise_client_urls, cfg.initial_cluster_token), True, True
        others = [u for n, urls in parse_initial_cluster(cfg.initial_cluster).items() if n != cfg.name
                  for u in urls]
        try:
            remote = await fetch_cluster_members(others, cfg.peer_tls)
        except ConnectionError as exc:
            raise ValueError(f"cannot fetch cluster info from peer urls: {exc}") from None
        try:
            joined = Membership.joined(remote.cluster_id, list(remote.members), list(remote.removed),
                                       cfg.name, cfg.initial_cluster, cfg.initial_advertise_peer_urls)
        except ValueError as exc:
            raise ValueError(f"error validating peerURLs {cfg.initial_cluster}: {exc}") from None
        if joined.is_removed(joined.local_id):
            raise ValueError("the member has been permanently removed from the cluster")
        log.info("joining a running cluster", extra={"fields": {
            "member_id": f"{joined.local_id:x}", "cluster_id": f"{joined.cluster_id:x}",
            "members": len(joined.members)}})
        return joined, False, True

    def _membership_changed(self, changes: list) -> None:
        """Applied membership changes (event loop): follow them in the transport; stop if this
        member was removed."""
        if any(c.kind == internal_pb2.MemberChange.REMOVE and c.member_id == self.member_id
               for c in changes):
            self._removed_from_cluster()
        self.sync_peers()

    def sync_peers(self) -> None:
        """Open/close peer streams to match the membership (after a change or a store image)."""
        peers = getattr(self.log, "peers", None)
        if peers is None:
            return
        urls = {m.id: m.peer_urls[0] for m in self.membership.members}
        task = asyncio.create_task(peers.set_peers(urls, set(self.membership.removed)))
        self._peer_updates.add(task)
        task.add_done_callback(self._peer_updates.discard)

    async def reload_membership(self) -> None:
        """The store was replaced by a leader's image: take the membership it carries."""
        raw = await asyncio.get_running_loop().run_in_executor(
            self._readers, self.store.server_meta, STORE_META_KEY)
        if raw is None:
            return
        self.membership.reload(Membership.decode(raw))
        if self.membership.is_removed(self.member_id):
            self._removed_from_cluster()
        self.sync_peers()

    def _removed_from_cluster(self) -> None:
        """This member was removed: stop after a second (etcd's stopWithDelay, so the removal's
        commit reaches the others), exiting 0 as etcd does."""
        if self._removed:
            return
        self._removed = True
        log.warning("the member has been permanently removed from the cluster", extra={"fields": {
            "member_id": f"{self.member_id:x}"}})
        asyncio.get_running_loop().call_later(1.0, self._stopped.set)

    def _build_log(self, bootstrap: bool = True):
        """The ReplicatedLog: Raft (cluster/replication), or with --experimental-local-log the
        single-member LocalLog (no Raft; its own directory, so the two never share files)."""
        if not self.cfg.local_log:
            return build_replicated_log(self.cfg, self.membership, self._member_dir, self.registry,
                                        observe_fsync=self.metrics.wal_fsync.observe, on_fatal=self._fatal,
                                        image=MemberStoreImage(self, os.path.join(self._member_dir, "snap")),
                                        bootstrap=bootstrap, on_removed=self._removed_from_cluster)
        if len(self.membership.members) != 1:
            raise ValueError("--experimental-local-log runs a single member: --initial-cluster lists "
                             f"{len(self.membership.members)}")
        return LocalLog(self.cfg.wal_dir or os.path.join(self._member_dir, "local-log"), self.member_id,
                        observe_fsync=self.metrics.wal_fsync.observe, on_fatal=self._fatal,
                        make_applied_durable=self.store.sync)

    def _fatal(self, exc: BaseException) -> None:
        log.critical("member stopping after fatal error", extra={"fields": {"error": repr(exc)}})
        self._stopped.set()

    async def health(self) -> tuple[bool, str]:
        """/health: a leader, no alarm, and the read barrier passes within a second."""
        if self.alarms.active:
            return False, "alarms: " + ", ".join(rpc_pb2.AlarmType.Name(a) for _, a in self.alarms.active)
        if not self.log.leader_id:
            return False, "no leader"
        try:
            await asyncio.wait_for(self.log.read_barrier(), 1.0)
        except (asyncio.TimeoutError, EtcdError) as exc:
            return False, f"read barrier: {exc!r}"
        return True, ""

    # -- lifecycle ------------------------------------------------------------------------------

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=0.5)
        await self.compactor.stop()
        for task in self._background:
            task.cancel()
        await self.hub.stop()
        await self.lessor.stop()
        await self.log.stop()
        await self.apply_loop.close()
        self.wait.fail_all(EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped"))
        self.store.close()
        self._readers.shutdown(wait=False)
        log.info("member stopped", extra={"fields": {"name": self.cfg.name}})
