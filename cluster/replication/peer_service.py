"""`RaftPeerService`: the receiving side of the peer transport, served on --listen-peer-urls.

Each inbound `RaftPeer.Stream` call is one peer's long-lived stream. Every batch is checked
against this member's identity (cluster id, member id) before its messages are decoded and
stepped into the driver, in order, on the event loop. A batch from another cluster, or meant for
another member (a stale address), ends the stream with FAILED_PRECONDITION and a message saying
so; the sender logs it and retries with backoff, as etcd's rafthttp does.

`Snapshot` receives a leader's MsgSnap: the first chunk carries the message (Raft metadata), the
following chunks the leader's store image, written to `<path>.part`, fsynced and renamed to the
driver's `received_image_path`; only then is the MsgSnap stepped (`receive_snapshot`) and the
call acknowledged. A stream that ends early or breaks leaves nothing behind.

It also answers the lease calls followers forward to the leader (`LeaseRenew`,
`LeaseTimeToLive`) through a `LeasePrimary`; a member that is not the leader refuses them with
FAILED_PRECONDITION "not leader" (the caller asks the next leader it sees).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable, Protocol
from urllib.parse import urlsplit

import grpc

from cluster.fsutil import fsync_dir
from cluster.raft import CodecError, Message, MessageType
from cluster.raft.codec import decode_message
from cluster.server.errors import EtcdError
from cluster.tls import TLSInfo, is_tls_url
from protos.kvpb import peer_pb2, peer_pb2_grpc

from .errors import BootstrapError

log = logging.getLogger(__name__)


def peer_target(url: str) -> str:
    """`http(s)://host:port` -> gRPC target `host:port` (IPv6 hosts bracketed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "") or not parts.hostname or parts.port is None:
        raise ValueError(f"unsupported peer URL {url!r} (only http://host:port or https://host:port)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


NOT_LEADER = "not leader"
# etcd's rafthttp errMemberRemoved: what a removed member is told, and stops with
REMOVED_MEMBER = "the member has been permanently removed from the cluster"

LeaseAnswer = tuple[int, int] | None
"""(ttl, granted ttl) of a lease, or None when the lease does not exist."""


class LeasePrimary(Protocol):
    """The leader's lessor as peers reach it. Each method raises `LookupError` when this member
    is not the leader (its lessor keeps no deadlines then)."""

    def renew_as_leader(self, lease_id: int) -> LeaseAnswer:
        """Keepalive: restart the lease's TTL; (granted ttl, granted ttl) or None."""

    def time_to_live_as_leader(self, lease_id: int) -> LeaseAnswer:
        """(remaining seconds, granted ttl) or None."""


class ClusterHandler(Protocol):
    """The member's Cluster service as peers reach it."""

    async def forwarded(self, method: str, request: bytes) -> tuple[bytes, int]:
        """A Member* call a follower forwarded: the serialized response and the applied index
        that includes the change; raises `EtcdError`."""

    def cluster_members(self) -> peer_pb2.ClusterMembersResponse:
        """The current membership (for a member joining the cluster)."""


class SnapshotReceiver(Protocol):
    """The driver's side of snapshot installation."""

    def received_image_path(self, index: int, term: int) -> str:
        """Where a complete, fsynced store image must be before `receive_snapshot`."""

    def receive_snapshot(self, m: Message) -> None:
        """Step the MsgSnap whose image is in place."""


class RaftPeerService(peer_pb2_grpc.RaftPeerServicer):
    """Steps the Raft messages peers stream to this member."""

    def __init__(self, cluster_id: int, member_id: int, step: Callable[[Message], None], *,
                 count_received: Callable[[int, int], None] | None = None,
                 count_received_failure: Callable[[int], None] | None = None,
                 snapshots: SnapshotReceiver | None = None,
                 count_snapshot: Callable[..., None] | None = None,
                 is_removed: Callable[[int], bool] = lambda _id: False):
        """`step(message)`: the driver's input (event loop, never blocks).
        `count_received(from_id, nbytes)`: a metric hook; `count_received_failure(from_id)`:
        another, called for every stream refused."""
        self._cluster_id = cluster_id
        self._member_id = member_id
        self._step = step
        self._count_received = count_received
        self._count_received_failure = count_received_failure
        self._snapshots = snapshots
        self._count_snapshot = count_snapshot
        self._is_removed = is_removed
        self.lease_primary: LeasePrimary | None = None
        self.cluster_handler: ClusterHandler | None = None

    async def Stream(self, request_iterator, context: grpc.aio.ServicerContext):
        async for batch in request_iterator:
            header = batch.header
            sender = getattr(header, "from")
            if header.cluster_id != self._cluster_id:
                await self._refuse(context, sender, "cluster ID mismatch: local cluster ID "
                                   f"{self._cluster_id:x}, peer's {header.cluster_id:x}")
            if header.to != self._member_id:
                await self._refuse(context, sender, f"this is member {self._member_id:x}, "
                                   f"not {header.to:x}")
            if self._is_removed(sender):
                await self._refuse(context, sender, REMOVED_MEMBER)
            size = 0
            for raw in batch.messages:
                size += len(raw)
                try:
                    m = decode_message(raw)
                except CodecError as exc:
                    await self._refuse(context, sender, f"undecodable raft message: {exc}")
                if m.type == MessageType.MsgSnap:
                    continue  # only the Snapshot call brings one, with its store image
                self._step(m)
            if self._count_received is not None:
                self._count_received(sender, size)
        return peer_pb2.PeerAck()

    async def Snapshot(self, request_iterator, context: grpc.aio.ServicerContext):
        sender, m, part, f = 0, None, None, None
        done = False
        try:
            async for chunk in request_iterator:
                if m is None:
                    header = chunk.header
                    sender = getattr(header, "from")
                    if header.cluster_id != self._cluster_id or header.to != self._member_id:
                        await self._refuse(context, sender, "snapshot for cluster "
                                           f"{header.cluster_id:x} member {header.to:x}: this is "
                                           f"cluster {self._cluster_id:x} member {self._member_id:x}")
                    if self._snapshots is None:
                        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                            "this member cannot install snapshots")
                    try:
                        m = decode_message(chunk.message)
                    except CodecError as exc:
                        await self._refuse(context, sender, f"undecodable snapshot message: {exc}")
                    if m.type != MessageType.MsgSnap or m.snapshot is None:
                        await self._refuse(context, sender, "the first snapshot chunk is not a MsgSnap")
                    md = m.snapshot.metadata
                    path = self._snapshots.received_image_path(md.index, md.term)
                    part = path + ".part"
                    f = await asyncio.to_thread(open, part, "wb")  # closed below
                if chunk.data:
                    f.write(chunk.data)
                if chunk.last:
                    f.flush()
                    await asyncio.to_thread(os.fsync, f.fileno())
                    f.close()
                    os.replace(part, path)
                    await asyncio.to_thread(fsync_dir, os.path.dirname(path))
                    done = True
                    break
            if not done:
                raise ConnectionError("the snapshot stream ended before its last chunk")
            log.info("received snapshot", extra={"fields": {
                "from": f"{sender:x}", "index": m.snapshot.metadata.index,
                "bytes": os.path.getsize(path)}})
            self._snapshots.receive_snapshot(m)
        except BaseException as exc:
            if f is not None and not f.closed:
                f.close()
            if part is not None and not done and os.path.exists(part):
                os.unlink(part)
            if self._count_snapshot is not None and m is not None:
                self._count_snapshot(sender, sent=False, ok=False)
            if not isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)):
                log.warning("snapshot receive failed", extra={"fields": {
                    "from": f"{sender:x}", "error": repr(exc)}})
            raise
        if self._count_snapshot is not None:
            self._count_snapshot(sender, sent=False, ok=True)
        return peer_pb2.PeerAck()

    async def LeaseRenew(self, request: peer_pb2.LeaseForward, context: grpc.aio.ServicerContext):
        return await self._lease_call(request, context, "renew_as_leader")

    async def LeaseTimeToLive(self, request: peer_pb2.LeaseForward, context: grpc.aio.ServicerContext):
        return await self._lease_call(request, context, "time_to_live_as_leader")

    async def _lease_call(self, request: peer_pb2.LeaseForward, context, method: str):
        header = request.header
        if header.cluster_id != self._cluster_id or header.to != self._member_id:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"lease call for cluster {header.cluster_id:x} member {header.to:x}: "
                                f"this is cluster {self._cluster_id:x} member {self._member_id:x}")
        if self.lease_primary is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NOT_LEADER)
        try:
            answer = getattr(self.lease_primary, method)(request.lease_id)
        except LookupError:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NOT_LEADER)
        if answer is None:
            return peer_pb2.LeaseForwardResult(found=False)
        return peer_pb2.LeaseForwardResult(found=True, ttl=answer[0], granted_ttl=answer[1])

    async def Member(self, request: peer_pb2.MemberCall, context: grpc.aio.ServicerContext):
        header = request.header
        if header.cluster_id != self._cluster_id or header.to != self._member_id:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"member call for cluster {header.cluster_id:x} member {header.to:x}: "
                                f"this is cluster {self._cluster_id:x} member {self._member_id:x}")
        if self.cluster_handler is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: not capable")
        try:
            response, applied_index = await self.cluster_handler.forwarded(request.method, request.request)
        except EtcdError as exc:
            await context.abort(exc.code, exc.message)
        return peer_pb2.MemberCallResult(response=response, applied_index=applied_index)

    async def ClusterMembers(self, request, context: grpc.aio.ServicerContext):
        if self.cluster_handler is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: not capable")
        return self.cluster_handler.cluster_members()

    async def _refuse(self, context: grpc.aio.ServicerContext, sender: int, reason: str) -> None:
        log.warning("refused peer stream", extra={"fields": {"from": f"{sender:x}", "reason": reason}})
        if self._count_received_failure is not None:
            self._count_received_failure(sender)
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, reason)


async def start_peer_server(listen_urls: list[str], service: RaftPeerService,
                            max_message_bytes: int, tls: TLSInfo | None = None) -> grpc.aio.Server:
    """A gRPC server for `service` on every URL of --listen-peer-urls, started; https:// URLs
    are served with `tls` (the --peer-* files; --peer-client-cert-auth makes peers present a
    certificate signed by --peer-trusted-ca-file)."""
    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_ping_strikes", 0),
    ])
    peer_pb2_grpc.add_RaftPeerServicer_to_server(service, server)
    for url in listen_urls:
        target = peer_target(url)
        try:
            if is_tls_url(url):
                if tls is None or not tls.cert_file or not tls.key_file:
                    raise BootstrapError(f"cannot listen on TLS for {target}: KeyFile and CertFile are not presented")
                bound = server.add_secure_port(target, tls.server_credentials())
            else:
                bound = server.add_insecure_port(target)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise BootstrapError(f"cannot listen on peer URL {url}: {target} is in use or invalid")
    await server.start()
    return server
