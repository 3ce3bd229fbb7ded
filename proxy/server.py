"""ProxyServer: one proxy process (or worker) serving the etcd v3 API in front of the cluster.

What runs in it:
- the gRPC server (grpc.aio) with KV (proxy/kv_service.py), Watch and Lease (proxy/watch_service.py,
  proxy/lease_service.py, written separately and registered here), and Cluster/Maintenance/Auth
  (proxy/passthrough.py), every handler wrapped by monitoring/'s grpc_server_* metrics;
- the keyspace watch keeping the read cache coherent (proxy/cache/invalidator.py);
- optionally the metrics endpoint (/metrics, /health, /proxy/health) on --metrics-addr. Under
  `--workers N` the supervisor serves it instead (proxy/workers.py), and each worker only counts.

Health: /health is "the cluster answers": a serializable Range of one key through the upstream
channel within 1 s (PermissionDenied counts as an answer, as for etcd's proxy). /proxy/health is
"this proxy answers": the same Range sent to the proxy's own gRPC port (when it serves plaintext;
with client TLS it is answered like /health).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from prometheus_client.registry import REGISTRY, CollectorRegistry

from cluster import etcd_flags
from cluster.grpc_wrapping import WrappingServer
from cluster.tls import TLSInfo
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from . import passthrough
from .admission import AdmissionControl
from .cache.invalidator import KeyspaceWatchInvalidator
from .kv_service import SERVICE as KV_SERVICE
from .kv_service import KVProxy
from .metrics import ProxyMetrics
from .namespace import Namespace
from .upstream import DEFAULT_MAX_RECV_BYTES, DEFAULT_MAX_SEND_BYTES, Upstream, channel_credentials

log = logging.getLogger("kvproxy")

HEALTH_TIMEOUT_S = 1.0
_HEALTH_PROBE = rpc_pb2.RangeRequest(key=b"health", serializable=True, limit=1)


@dataclass
class ProxyConfig:
    """Everything `kvproxy start` is told (see proxy/cli.py for the flags)."""

    endpoints: list[str]
    listen_addr: str = "127.0.0.1:23790"
    metrics_addr: list[str] = field(default_factory=list)
    namespace: str = ""
    cert: str = ""        # upstream TLS
    key: str = ""
    cacert: str = ""
    cert_file: str = ""   # client TLS
    key_file: str = ""
    trusted_ca_file: str = ""
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    max_recv_bytes: int = DEFAULT_MAX_RECV_BYTES
    workers: int = 1
    cache_max_entries: int = 100_000
    cache_max_bytes: int = 256 * 1024 * 1024
    max_requests_per_client_per_second: float = 0.0
    max_requests_per_key_per_second: float = 0.0
    linearizable_read_interval_ms: float = 25.0  # pacing of one hot key's linearizable reads
    cache_user: str = ""  # USER:PASSWORD for the cache's keyspace watch when auth is on upstream
    max_concurrent_streams: int = 2 ** 32 - 1  # per client connection (etcd's flag)
    grpc_keepalive_min_time: float = 5.0  # seconds; clients pinging more often are cut off
    grpc_keepalive_interval: float = 7200.0  # seconds between pings to idle clients; 0: none
    grpc_keepalive_timeout: float = 20.0  # seconds to wait for a ping's answer; 0: forever

    @property
    def upstream_tls(self) -> bool:
        return bool(self.cert or self.key or self.cacert)

    @property
    def client_tls(self) -> bool:
        return bool(self.cert_file and self.key_file)

    @property
    def client_tls_info(self) -> TLSInfo | None:
        """TLS towards clients (gRPC port and https:// metrics URLs), as etcd grpc-proxy: a
        --trusted-ca-file makes clients present a certificate it signed."""
        return TLSInfo(self.cert_file, self.key_file, self.trusted_ca_file) if self.client_tls else None


def listen_hostport(addr: str) -> str:
    """'127.0.0.1:23790' or 'http://127.0.0.1:23790' -> '127.0.0.1:23790'."""
    return addr.split("://", 1)[1].rstrip("/") if "://" in addr else addr


class ProxyServer:
    """One serving proxy process. `await start()`, then `await wait()` or `await stop()`.

    `reuse_port`: bind with SO_REUSEPORT (workers sharing one port). `serve_metrics`: serve
    config.metrics_addr from this process (False in workers: the supervisor serves it).
    """

    def __init__(self, config: ProxyConfig, *, registry: CollectorRegistry | None = None,
                 reuse_port: bool = False, serve_metrics: bool = True):
        self.config = config
        self.registry = REGISTRY if registry is None else registry
        self._reuse_port = reuse_port
        self._serve_metrics = serve_metrics
        self.port = 0
        self.upstream: Upstream | None = None
        self.kv: KVProxy | None = None
        self._server: grpc.aio.Server | None = None
        self._invalidator: KeyspaceWatchInvalidator | None = None
        self._extra_services: list = []   # watch / lease services: objects with async close()
        self._http = None
        self._self_channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        cfg = self.config
        tls = channel_credentials(cfg.cert, cfg.key, cfg.cacert) if cfg.upstream_tls else None
        self.upstream = Upstream(cfg.endpoints, tls=tls, max_send_bytes=cfg.max_send_bytes,
                                 max_recv_bytes=cfg.max_recv_bytes)
        namespace = Namespace(cfg.namespace.encode())
        metrics = ProxyMetrics(self.registry)
        metrics.watch_upstream(self.upstream.connected)
        admission = AdmissionControl(cfg.max_requests_per_client_per_second, cfg.max_requests_per_key_per_second)
        self.kv = KVProxy(self.upstream, namespace, metrics, admission,
                          cache_max_entries=cfg.cache_max_entries, cache_max_bytes=cfg.cache_max_bytes,
                          linearizable_read_interval=cfg.linearizable_read_interval_ms / 1000)

        from monitoring.grpc_metrics import GrpcServerMetrics

        grpc_metrics = GrpcServerMetrics(self.registry)
        grpc_metrics.initialize(rpc_pb2.DESCRIPTOR.services_by_name.values())
        options = [
            ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ("grpc.max_receive_message_length", cfg.max_recv_bytes),
            ("grpc.max_send_message_length", -1),
            *etcd_flags.client_connection_options(cfg.max_concurrent_streams, cfg.grpc_keepalive_min_time,
                                                  cfg.grpc_keepalive_interval, cfg.grpc_keepalive_timeout),
            # grpc core cancels calls beyond 1,000 not yet picked up by the application; a proxy
            # in front of thousands of clients must accept them (etcd has no such limit).
            ("grpc.server.max_pending_requests", 100_000),
            ("grpc.server.max_pending_requests_hard_limit", 100_000),
        ]
        self._server = server = grpc.aio.server(options=options)
        registering = WrappingServer(server, [grpc_metrics.wrap])  # every method counted
        kv_handlers = self.kv.method_handlers()
        registering.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(KV_SERVICE, kv_handlers),))
        registering.add_registered_method_handlers(KV_SERVICE, kv_handlers)
        passthrough.add_to_server(registering, self.upstream)
        self._add_watch_and_lease(registering, namespace)

        if self._serve_metrics and cfg.metrics_addr:
            from monitoring.http import MetricsHTTPServer

            self._http = MetricsHTTPServer(self.registry, health=self.health,
                                           routes={"/proxy/health": self.proxy_health_route})
            await self._http.start(cfg.metrics_addr, tls=cfg.client_tls_info)  # before the gRPC port opens
        addr = listen_hostport(cfg.listen_addr)
        if cfg.client_tls:
            self.port = server.add_secure_port(addr, cfg.client_tls_info.server_credentials())
        else:
            self.port = server.add_insecure_port(addr)
        if not self.port:
            raise OSError(f"cannot listen on {addr}")

        credentials = tuple(cfg.cache_user.split(":", 1)) if cfg.cache_user else None
        self._invalidator = KeyspaceWatchInvalidator(self.upstream, namespace, self.kv.cache, credentials)
        self._invalidator.start()
        await server.start()
        log.info("serving on %s (upstream %s)", addr, self.upstream.target)

    def _add_watch_and_lease(self, server: WrappingServer, namespace: Namespace) -> None:
        # Written by another engineer; imported here so this module works before they exist.
        for module_name in ("watch_service", "lease_service"):
            try:
                module = __import__(f"proxy.{module_name}", fromlist=["add_to_server"])
            except ImportError as e:
                log.warning("%s not available (%s): its methods answer UNIMPLEMENTED", module_name, e)
                continue
            self._extra_services.append(module.add_to_server(server, self.upstream, namespace))

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def stop(self, grace: float = 1.0) -> None:
        if self._http is not None:
            await self._http.stop()
        if self._server is not None:
            await self._server.stop(grace)
        for service in self._extra_services:
            await service.close()
        if self._invalidator is not None:
            await self._invalidator.close()
        if self._self_channel is not None:
            await self._self_channel.close()
        if self.upstream is not None:
            await self.upstream.close()

    # --- health -------------------------------------------------------------------------------

    async def health(self) -> tuple[bool, str]:
        """Is the cluster answering through the upstream channel?"""
        return await probe_kv(self.upstream.kv)

    async def proxy_health(self) -> tuple[bool, str]:
        """Is this proxy answering on its own gRPC port?"""
        if self.config.client_tls:
            return await self.health()
        if self._self_channel is None:
            self._self_channel = grpc.aio.insecure_channel(self_probe_target(self.config.listen_addr))
        return await probe_kv(rpc_pb2_grpc.KVStub(self._self_channel))

    async def proxy_health_route(self) -> tuple[int, str, bytes]:
        return health_route_answer("/proxy/health", *await self.proxy_health())


def self_probe_target(listen_addr: str) -> str:
    """Where the proxy reaches its own gRPC port (a wildcard listen address means loopback)."""
    host, _, port = listen_hostport(listen_addr).rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def health_route_answer(path: str, ok: bool, reason: str) -> tuple[int, str, bytes]:
    """etcd's health body: 200 {"health":"true"} or 503 {"health":"false"}, the reason logged."""
    if ok:
        return 200, "text/plain; charset=utf-8", b'{"health":"true"}'
    log.warning("%s error: %s", path, reason)
    return 503, "text/plain; charset=utf-8", b'{"health":"false"}\n'


async def probe_kv(kv: rpc_pb2_grpc.KVStub) -> tuple[bool, str]:
    try:
        await kv.Range(_HEALTH_PROBE, timeout=HEALTH_TIMEOUT_S)
        return True, ""
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.PERMISSION_DENIED:
            return True, ""
        return False, f"{e.code().name}: {e.details()}"
