"""The proxy's connection to the cluster: one grpc.aio channel over all endpoints, with failover.

Contract:
- One `Upstream` per proxy process. Every service (KV, Watch, Lease, Cluster, Maintenance, Auth)
  calls through the stubs it exposes; they share one channel, hence few TCP connections upstream.
- The channel's target lists every endpoint (`ipv4:a:p,b:q`), with the `pick_first` policy: all RPCs
  go to one member; when its connection breaks, the channel reconnects to the next reachable address
  and new RPCs go there. RPCs in flight on the broken connection fail with UNAVAILABLE (their
  callers pass that through, as etcd's grpc-proxy does); idempotent reads listed in
  `_RETRYABLE_METHODS` are retried by grpc's own retry policy, so reads fail over transparently.
- Writes are never retried by the channel: a Put whose reply was lost may have been applied.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from urllib.parse import urlsplit

import grpc

from protos.etcdserverpb import rpc_pb2_grpc

# etcd grpc-proxy's defaults: `--max-send-bytes` 1.5 MiB, `--max-recv-bytes` math.MaxInt32.
DEFAULT_MAX_SEND_BYTES = 1536 * 1024
DEFAULT_MAX_RECV_BYTES = 2**31 - 1

# Metadata keys a client sends that the cluster must see on the proxied call:
# 'token' (etcd's auth token), 'authorization' (the same token in newer clients) and 'hasleader'
# (clientv3's WithRequireLeader). Everything else (user-agent, grpc-*) belongs to the hop.
FORWARDED_METADATA_KEYS = frozenset({"token", "authorization", "hasleader"})

# Read-only unary methods that are safe to retry on UNAVAILABLE (the member was unreachable).
_RETRYABLE_METHODS = (
    ("etcdserverpb.KV", "Range"),
    ("etcdserverpb.Cluster", "MemberList"),
    ("etcdserverpb.Maintenance", "Status"),
    ("etcdserverpb.Maintenance", "Hash"),
    ("etcdserverpb.Maintenance", "HashKV"),
    ("etcdserverpb.Lease", "LeaseTimeToLive"),
    ("etcdserverpb.Lease", "LeaseLeases"),
)

_SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"pick_first": {}}],
    "methodConfig": [{
        "name": [{"service": s, "method": m} for s, m in _RETRYABLE_METHODS],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
})


def parse_endpoints(endpoints: list[str]) -> tuple[list[tuple[str, int]], bool]:
    """Split etcd-style endpoints ('host:port', 'http://host:port', 'https://host:port').

    Returns ([(host, port)], any_https). Hostnames are kept; `channel_target` resolves them.
    """
    out: list[tuple[str, int]] = []
    secure = False
    for ep in endpoints:
        ep = ep.strip()
        if not ep:
            continue
        if "://" not in ep:
            ep = "http://" + ep
        parts = urlsplit(ep)
        if parts.scheme in ("https", "unixs"):
            secure = True
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"endpoint {ep!r} needs host:port")
        out.append((parts.hostname, parts.port))
    if not out:
        raise ValueError("no endpoints given")
    return out, secure


def channel_target(addresses: list[tuple[str, int]]) -> str:
    """A grpc target naming every address, so that pick_first can fail over between them.

    grpc's ipv4:/ipv6: schemes take literal addresses only, so hostnames are resolved here, once,
    at startup (a proxy in front of a cluster with moving addresses is restarted, as etcd's is).
    """
    v4: list[str] = []
    v6: list[str] = []
    for host, port in addresses:
        for ip in _literal_ips(host, port):
            if ip.version == 4:
                v4.append(f"{ip}:{port}")
            else:
                v6.append(f"[{ip}]:{port}")
    if v4:
        return "ipv4:" + ",".join(dict.fromkeys(v4))
    return "ipv6:" + ",".join(dict.fromkeys(v6))


def _literal_ips(host: str, port: int) -> list:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [ipaddress.ip_address(info[4][0]) for info in infos]


def channel_credentials(cert: str | None, key: str | None, cacert: str | None) -> grpc.ChannelCredentials:
    """Upstream TLS from etcd's --cert/--key/--cacert files (any may be None)."""

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(cacert), private_key=read(key),
                                        certificate_chain=read(cert))


class Upstream:
    """grpc.aio channel(s) to the cluster's endpoints, with failover between them.

    `tls` is a grpc.ChannelCredentials (see `channel_credentials`), or None for plaintext; an
    `https://` endpoint without `tls` uses the system's root certificates.
    """

    def __init__(self, endpoints: list[str], *, tls: grpc.ChannelCredentials | None = None,
                 max_send_bytes: int = DEFAULT_MAX_SEND_BYTES,
                 max_recv_bytes: int = DEFAULT_MAX_RECV_BYTES):
        addresses, secure = parse_endpoints(endpoints)
        self.endpoints = [f"{h}:{p}" for h, p in addresses]
        self.target = channel_target(addresses)
        options = [
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.max_send_message_length", max_send_bytes),
            ("grpc.max_receive_message_length", max_recv_bytes),
            # Reconnect fast after a member dies: failover latency is bounded by these.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # Detect a silently dead member on long-lived streams (watches).
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        if tls is None and secure:
            tls = grpc.ssl_channel_credentials()
        if tls is not None:
            self.channel = grpc.aio.secure_channel(self.target, tls, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(self.target, options=options)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.auth = rpc_pb2_grpc.AuthStub(self.channel)

    def connected(self) -> bool:
        """Whether the channel is connected to a member now (state READY). Asking wakes an idle
        channel, so a channel idle for lack of calls is connected again by the next question."""
        return self.channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY

    async def close(self) -> None:
        await self.channel.close()


def forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The client's metadata to forward upstream (at least 'token'; etcd clients also send 'hasleader')."""
    md = context.invocation_metadata()
    if not md:
        return ()
    return tuple((k, v) for k, v in md if k in FORWARDED_METADATA_KEYS)

