"""`PeerTransport`: Raft messages between members over gRPC; one `PeerStream` per peer.

Outbound (this module): each peer has a bounded queue and one task that keeps a long-lived
`RaftPeer.Stream` call open and writes everything queued since its last write as one
`RaftBatch`. Per-peer isolation: `send()` only appends to queues, so a slow or dead peer fills
its own queue and never delays the others. When a queue is full the message is dropped and the
core is told the peer is unreachable (the leader then probes it instead of pipelining). When a
stream breaks, what was queued is dropped (Raft resends what matters), the peer is reported
unreachable, and the task reconnects with exponential backoff.

Snapshots: a MsgSnap never goes on the stream. The transport copies the store (the driver's
`image.write_image`) into a temporary file and streams it over one `RaftPeer.Snapshot` call in
`SNAPSHOT_CHUNK_BYTES` chunks (first chunk: the MsgSnap itself; then the image; the last chunk
marked), at most one per peer at a time, then reports the outcome to the core
(`report_snapshot`). The peer acknowledges after it has the image durably and stepped the MsgSnap.

Inbound: `RaftPeerService` (peer_service.py) on --listen-peer-urls steps received messages.

TLS: a peer whose URL is https:// is dialed over TLS with the --peer-* files (`peer_channel`):
its certificate must chain to --peer-trusted-ca-file and name the URL's host, and ours is
presented as the client certificate. https:// listen URLs are served with the same files.

Membership at runtime: `set_peers` opens, redirects and closes peers' streams as membership
changes are applied, and makes the peer service refuse removed members (`REMOVED_MEMBER`). A stream refused with that reason means this member
was removed: `on_removed` is called (the member stops, as etcd's does). `active_since(id)` is
when this member started hearing from a peer without a gap (etcd's transport ActiveSince; the
strict reconfiguration checks use it); None when not heard from within `INACTIVE_AFTER`.

Threading: everything runs on the member's event loop. `send()` never blocks and never raises.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import deque
from typing import Callable

import grpc

from cluster.raft import Message, MessageType
from cluster.raft.codec import encode_message
from cluster.server.errors import EtcdError
from cluster.tls import TLSInfo, is_tls_url
from protos.kvpb import peer_pb2, peer_pb2_grpc

from .peer_service import (
    NOT_LEADER,
    REMOVED_MEMBER,
    LeaseAnswer,
    LeasePrimary,
    RaftPeerService,
    peer_target,
    start_peer_server,
)

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 4096  # per peer; etcd's rafthttp stream buffer is 4096 messages too
MAX_BATCH_BYTES = 4 << 20  # a bigger single message still goes, alone
MAX_MESSAGE_BYTES = 256 << 20  # gRPC limit on peer frames (a MsgApp is capped at 1 MiB by Raft)
SNAPSHOT_CHUNK_BYTES = 1 << 20
BACKOFF_INITIAL = 0.05
BACKOFF_MAX = 1.0
INACTIVE_AFTER = 2.0  # seconds without a message from a peer before it counts as inactive

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # gRPC's own reconnect backoff starts at 1 s and grows to 2 min: far too slow for a peer
    # that restarts within an election timeout.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Detect a peer host that vanished without closing TCP (another machine, cable pulled).
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def peer_channel(url: str, tls: TLSInfo | None) -> grpc.aio.Channel:
    """A channel to the peer at `url`: TLS with `tls` when the URL is https://."""
    target = peer_target(url)
    if is_tls_url(url):
        creds = (tls or TLSInfo()).channel_credentials()
        return grpc.aio.secure_channel(target, creds, options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


class PeerStream:
    """The outbound stream to one peer: a bounded queue drained by one writer task."""

    def __init__(self, header: peer_pb2.PeerHeader, url: str, *, tls: TLSInfo | None = None,
                 report_unreachable: Callable[[int], None],
                 send_snapshot: Callable[[Message], None] | None = None,
                 count_sent: Callable[[int], None] | None = None,
                 on_removed: Callable[[], None] | None = None,
                 count_failures: Callable[[int], None] | None = None,
                 max_queued: int = MAX_QUEUED_MESSAGES):
        self.peer_id = header.to
        self.url = url
        self._tls = tls
        self._header = header
        self._report_unreachable = report_unreachable
        self._send_snapshot = send_snapshot
        self._count_sent = count_sent
        self._on_removed = on_removed
        self._count_failures = count_failures
        self._max_queued = max_queued
        self._queue: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._dropped = 0
        self._heartbeat_sent_at: float | None = None  # oldest unanswered heartbeat (RTT)
        self._delivered = False  # a batch went out on the current call
        self.connected = False  # a batch went out and the call has not broken since
        self._channel: grpc.aio.Channel | None = None  # while the writer task runs
        self._last_warning = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"peer-stream-{self.peer_id:x}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
            self._channel = None  # closed with the task

    def channel_ready(self) -> bool:
        """Whether the connection to the peer is up (its gRPC channel READY), traffic or not: a
        follower sends another follower nothing, yet stays connected to it."""
        channel = self._channel
        return channel is not None and channel.get_state() == grpc.ChannelConnectivity.READY

    def heartbeat_answered(self) -> float | None:
        """A heartbeat response came back: seconds since the oldest unanswered heartbeat was
        written (the peer round trip, its Raft processing included), or None."""
        sent, self._heartbeat_sent_at = self._heartbeat_sent_at, None
        return None if sent is None else time.monotonic() - sent

    def enqueue(self, m: Message) -> None:
        """Queue `m` for the peer; drop it (and report the peer unreachable) when full."""
        if len(self._queue) >= self._max_queued:
            self._drop(1, "queue full")
            return
        self._queue.append(m)
        self._ready.set()

    # -- writer task --------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_INITIAL
        async with peer_channel(self.url, self._tls) as channel:
            self._channel = channel
            stub = peer_pb2_grpc.RaftPeerStub(channel)
            while True:
                call = stub.Stream()
                self._delivered = False
                try:
                    await self._stream_until_broken(call)
                except asyncio.CancelledError:
                    call.cancel()
                    raise
                except Exception as exc:
                    self.connected = False
                    reason = await self._failure_reason(call, exc)
                    call.cancel()
                    if reason.endswith(REMOVED_MEMBER) and self._on_removed is not None:
                        self._on_removed()
                    self._warn("peer stream broken", reason=reason, queued=len(self._queue))
                    self._drop(len(self._queue), reason)
                    self._queue.clear()
                    self._heartbeat_sent_at = None
                if self._delivered:  # the stream worked for a while: retry promptly
                    backoff = BACKOFF_INITIAL
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _stream_until_broken(self, call) -> None:
        """Write batches on `call` until it breaks. Always raises: a write error, or the call's
        end (the peer refused the stream or went away), noticed even while idle."""
        pump = asyncio.create_task(self._pump(call))
        ended = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({pump, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, ended):
                task.cancel()
        if pump in done:
            pump.result()
        ended.result()
        raise ConnectionError("the peer ended the stream")

    async def _pump(self, call) -> None:
        """Write everything queued, batch by batch, as it arrives; raises when a write fails."""
        header = self._header
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch = peer_pb2.RaftBatch(header=header)
                size = 0
                queue = self._queue
                while queue and (size < MAX_BATCH_BYTES or not batch.messages):
                    m = queue.popleft()
                    if m.type == MessageType.MsgSnap:
                        if self._send_snapshot is not None:
                            self._send_snapshot(m)  # its own call (PeerTransport)
                        else:
                            self._drop(1, "snapshot sending not supported")
                        continue
                    if m.type == MessageType.MsgHeartbeat and self._heartbeat_sent_at is None:
                        self._heartbeat_sent_at = time.monotonic()
                    raw = encode_message(m)
                    size += len(raw)
                    batch.messages.append(raw)
                if not batch.messages:
                    continue
                try:
                    await call.write(batch)
                except BaseException:
                    if self._count_failures is not None:  # the batch is lost with the stream
                        self._count_failures(len(batch.messages))
                    raise
                self._delivered = self.connected = True
                if self._count_sent is not None:
                    self._count_sent(size)

    @staticmethod
    async def _failure_reason(call, exc: Exception) -> str:
        if isinstance(exc, grpc.aio.AioRpcError):
            return f"{exc.code().name}: {exc.details()}"
        try:
            code = await asyncio.wait_for(call.code(), 0.5)
            return f"{code.name}: {await call.details()}"
        except Exception:
            return repr(exc)

    def _drop(self, count: int, reason: str) -> None:
        self._report_unreachable(self.peer_id)
        if count:
            if self._count_failures is not None:
                self._count_failures(count)
            self._dropped += count
            self._warn("dropped raft messages to peer", reason=reason, dropped=count,
                       dropped_total=self._dropped)

    def _warn(self, msg: str, **fields) -> None:
        """Log at most one line per peer per 5 s: a dead peer must not flood the log."""
        now = time.monotonic()
        if now - self._last_warning >= 5.0:
            self._last_warning = now
            log.warning(msg, extra={"fields": {"peer": f"{self.peer_id:x}", "url": self.url, **fields}})


class PeerTransport:
    """All peer traffic of one member: the peer server and one `PeerStream` per other member."""

    def __init__(self, member_id: int, cluster_id: int, peer_urls: dict[int, str],
                 listen_urls: list[str], *, metrics=None, tls: TLSInfo | None = None, removed=(),
                 on_removed: Callable[[], None] | None = None):
        """`peer_urls`: member id -> the peer URL to dial (this member's own id is skipped).
        `metrics`: a `PeerMetrics` (metrics.py) or None. `tls`: the --peer-* TLS files, for
        https:// URLs (served and dialed). `removed`: IDs of removed members.
        `on_removed()`: a peer refused this member as removed."""
        self.member_id = member_id
        self.cluster_id = cluster_id
        self._peer_urls = {i: u for i, u in peer_urls.items() if i != member_id}
        self._listen_urls = listen_urls
        self._tls = tls
        self._metrics = metrics
        self._streams: dict[int, PeerStream] = {}
        self._step: Callable[[Message], None] | None = None
        self._server: grpc.aio.Server | None = None
        self._service: RaftPeerService | None = None
        self._lease_primary: LeasePrimary | None = None
        self._call_channels: dict[int, grpc.aio.Channel] = {}  # unary peer calls (leases)
        self._snapshot_sends: dict[int, asyncio.Task] = {}  # peer id -> its snapshot transfer
        self._driver = None
        self._removed = set(removed)
        self._on_removed = on_removed
        self._heard: dict[int, tuple[float, float]] = {}  # peer -> (active since, last heard)
        self._reconfiguring = asyncio.Lock()
        self.cluster_handler = None  # peer_service.ClusterHandler, set by the member

    async def start(self, driver) -> None:
        """Serve --listen-peer-urls (messages go to `driver.step`) and open the peer streams."""
        m = self._metrics
        self._step = driver.step
        self._driver = driver
        can_install = getattr(driver, "image", None) is not None
        service = RaftPeerService(self.cluster_id, self.member_id, self._receive,
                                  count_received=m.count_received if m else None,
                                  count_received_failure=m.count_received_failure if m else None,
                                  snapshots=driver if can_install else None,
                                  count_snapshot=m.count_snapshot if m else None,
                                  is_removed=self._removed.__contains__)
        service.lease_primary = self._lease_primary
        service.cluster_handler = self.cluster_handler
        self._service = service
        self._server = await start_peer_server(self._listen_urls, service, MAX_MESSAGE_BYTES, self._tls)
        for peer_id in list(self._peer_urls):
            self._open_stream(peer_id)

    def _open_stream(self, peer_id: int) -> None:
        m, driver = self._metrics, self._driver
        header = peer_pb2.PeerHeader(cluster_id=self.cluster_id, to=peer_id)
        setattr(header, "from", self.member_id)
        stream = PeerStream(header, self._peer_urls[peer_id], tls=self._tls, report_unreachable=driver.report_unreachable,
                            send_snapshot=self._start_snapshot_send if getattr(driver, "image", None) is not None else None,
                            count_sent=m.sent_counter(peer_id) if m else None,
                            on_removed=self._on_removed,
                            count_failures=m.sent_failure_counter(peer_id) if m else None)
        stream.start()
        self._streams[peer_id] = stream

    # -- membership at runtime -------------------------------------------------------------------

    async def set_peers(self, peer_urls: dict[int, str], removed) -> None:
        """Make the open streams match the membership: `peer_urls` (member id -> URL to dial;
        this member skipped) and the `removed` member IDs, whose messages are refused from now
        on. Streams of new members open, of gone members close, of moved members reconnect."""
        async with self._reconfiguring:
            self._removed.update(removed)
            wanted = {i: u for i, u in peer_urls.items() if i != self.member_id}
            for peer_id in [p for p in self._peer_urls if self._peer_urls[p] != wanted.get(p)]:
                await self._close_peer(peer_id)
            for peer_id, url in wanted.items():
                if peer_id not in self._peer_urls:
                    self._peer_urls[peer_id] = url
                    if self._driver is not None:
                        self._open_stream(peer_id)

    async def _close_peer(self, peer_id: int) -> None:
        self._peer_urls.pop(peer_id, None)
        self._heard.pop(peer_id, None)
        stream = self._streams.pop(peer_id, None)
        if stream is not None:
            await stream.stop()
        channel = self._call_channels.pop(peer_id, None)
        if channel is not None:
            await channel.close()

    def peer_ids(self) -> list[int]:
        """The other members this member talks to (its current membership)."""
        return list(self._peer_urls)

    def connected(self, peer_id: int) -> bool:
        """Whether this member's connection to `peer_id` is up (etcd's active peer)."""
        stream = self._streams.get(peer_id)
        return stream is not None and stream.channel_ready()

    def active_since(self, peer_id: int) -> float | None:
        """`time.monotonic()` since which messages from `peer_id` arrived without a gap longer
        than `INACTIVE_AFTER`; None when it has not been heard from for that long."""
        heard = self._heard.get(peer_id)
        stream = self._streams.get(peer_id)
        if heard is None or time.monotonic() - heard[1] > INACTIVE_AFTER or stream is None \
                or not stream.connected:
            return None
        return heard[0]

    def _receive(self, m: Message) -> None:
        """Inbound message: note the peer active, time heartbeat round trips, step it."""
        now = time.monotonic()
        heard = self._heard.get(m.frm)
        since = now if heard is None or now - heard[1] > INACTIVE_AFTER else heard[0]
        self._heard[m.frm] = (since, now)
        if m.type == MessageType.MsgHeartbeatResp and self._metrics is not None:
            stream = self._streams.get(m.frm)
            rtt = stream.heartbeat_answered() if stream is not None else None
            if rtt is not None:
                self._metrics.observe_round_trip(m.frm, rtt)
        self._step(m)

    def send(self, messages: list[Message]) -> None:
        streams = self._streams
        for m in messages:
            stream = streams.get(m.to)
            if stream is not None:
                stream.enqueue(m)

    # -- snapshots -----------------------------------------------------------------------------

    def _start_snapshot_send(self, m: Message) -> None:
        task = self._snapshot_sends.get(m.to)
        if task is not None and not task.done():
            return  # one transfer per peer; the core waits for its report
        self._snapshot_sends[m.to] = asyncio.create_task(
            self._send_snapshot(m), name=f"snapshot-send-{m.to:x}")

    async def _send_snapshot(self, m: Message) -> None:
        """Stream the store image with MsgSnap `m` to its peer; report the outcome to the core."""
        peer, image = m.to, self._driver.image
        md = m.snapshot.metadata
        t0 = time.monotonic()
        ok, size = False, 0
        try:
            with tempfile.TemporaryFile(dir=image.scratch_dir) as f:
                size = await asyncio.to_thread(image.write_image, f)
                f.seek(0)
                header = peer_pb2.PeerHeader(cluster_id=self.cluster_id, to=peer)
                setattr(header, "from", self.member_id)

                async def chunks():
                    yield peer_pb2.SnapshotChunk(header=header, message=encode_message(m))
                    while True:
                        data = await asyncio.to_thread(f.read, SNAPSHOT_CHUNK_BYTES)
                        last = len(data) < SNAPSHOT_CHUNK_BYTES
                        yield peer_pb2.SnapshotChunk(data=data, last=last)
                        if last:
                            return

                log.info("sending snapshot", extra={"fields": {
                    "to": f"{peer:x}", "index": md.index, "term": md.term, "bytes": size}})
                stub = peer_pb2_grpc.RaftPeerStub(self._channel(peer))
                await stub.Snapshot(chunks())
            ok = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("snapshot send failed", extra={"fields": {
                "to": f"{peer:x}", "index": md.index, "error": repr(exc)}})
        finally:
            if self._metrics is not None:
                self._metrics.count_snapshot(peer, sent=True, ok=ok)
            self._driver.report_snapshot(peer, not ok)
        if ok:
            log.info("sent snapshot", extra={"fields": {
                "to": f"{peer:x}", "index": md.index, "bytes": size,
                "seconds": round(time.monotonic() - t0, 3)}})

    def _channel(self, peer_id: int) -> grpc.aio.Channel:
        channel = self._call_channels.get(peer_id)
        if channel is None:
            channel = peer_channel(self._peer_urls[peer_id], self._tls)
            self._call_channels[peer_id] = channel
        return channel

    # -- lease calls (a follower's keepalives and TTL queries, forwarded to the leader) -----------

    def serve_leases(self, primary: LeasePrimary) -> None:
        """Answer peers' forwarded lease calls with `primary` (this member's lessor)."""
        self._lease_primary = primary
        if self._service is not None:
            self._service.lease_primary = primary

    async def forward_lease(self, leader_id: int, lease_id: int, *, renew: bool,
                            timeout: float) -> LeaseAnswer:
        """Ask member `leader_id` to renew (`renew`) or report the TTL of `lease_id`.
        Raises `LookupError` when that member is not (or no longer) the leader, and
        `ConnectionError` when it cannot be reached in `timeout` seconds."""
        url = self._peer_urls.get(leader_id)
        if url is None:
            raise LookupError(f"member {leader_id:x} is not a peer")
        stub = peer_pb2_grpc.RaftPeerStub(self._channel(leader_id))
        header = peer_pb2.PeerHeader(cluster_id=self.cluster_id, to=leader_id)
        setattr(header, "from", self.member_id)
        call = stub.LeaseRenew if renew else stub.LeaseTimeToLive
        try:
            res = await call(peer_pb2.LeaseForward(header=header, lease_id=lease_id), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and exc.details() == NOT_LEADER:
                raise LookupError(NOT_LEADER) from None
            raise ConnectionError(f"lease call to {url}: {exc.code().name} {exc.details()}") from None
        return (res.ttl, res.granted_ttl) if res.found else None

    # -- Cluster service calls ---------------------------------------------------------------------

    def serve_cluster(self, handler) -> None:
        """Answer peers' Member* calls and membership queries with `handler`
        (peer_service.ClusterHandler: the member's Cluster service)."""
        self.cluster_handler = handler
        if self._service is not None:
            self._service.cluster_handler = handler

    async def forward_member_call(self, leader_id: int, method: str, request: bytes,
                                  timeout: float) -> tuple[bytes, int]:
        """Have the leader run a Member* call (peer_service.ClusterHandler.forwarded): its
        serialized response and applied index; its etcd error comes back as `EtcdError`. Raises
        `ConnectionError` when it cannot be reached."""
        if leader_id not in self._peer_urls:
            raise ConnectionError(f"member {leader_id:x} is not a peer")
        header = peer_pb2.PeerHeader(cluster_id=self.cluster_id, to=leader_id)
        setattr(header, "from", self.member_id)
        # A channel of its own: when the change removes the leader, this member may apply the
        # removal (and close its channels to the leader) before the leader's answer arrives.
        try:
            async with peer_channel(self._peer_urls[leader_id], self._tls) as channel:
                res = await peer_pb2_grpc.RaftPeerStub(channel).Member(
                    peer_pb2.MemberCall(header=header, method=method, request=request), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED,) or not exc.details().startswith("etcdserver:"):
                raise ConnectionError(f"member call to {leader_id:x}: {exc.code().name} {exc.details()}") from None
            raise EtcdError(exc.code(), exc.details()) from None
        return res.response, res.applied_index

    async def stop(self) -> None:
        for task in self._snapshot_sends.values():
            task.cancel()
        for task in self._snapshot_sends.values():
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._snapshot_sends = {}
        for channel in self._call_channels.values():
            await channel.close()
        self._call_channels = {}
        for stream in self._streams.values():
            await stream.stop()
        self._streams = {}
        if self._server is not None:
            await self._server.stop(grace=0.2)
            self._server = None


async def fetch_cluster_members(peer_urls: list[str], tls: TLSInfo | None = None,
                                timeout: float = 5.0) -> peer_pb2.ClusterMembersResponse:
    """The current membership, from the first of `peer_urls` that answers (a member joining a
    running cluster; etcd's GetClusterFromRemotePeers), dialed with the --peer-* `tls` files for
    https:// URLs. Raises ConnectionError when none does."""
    errors = []
    for url in peer_urls:
        async with peer_channel(url, tls) as channel:
            try:
                return await peer_pb2_grpc.RaftPeerStub(channel).ClusterMembers(
                    peer_pb2.ClusterMembersRequest(), timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{url}: {exc.code().name} {exc.details()}")
    raise ConnectionError("could not retrieve cluster information from the given URLs: "
                          + "; ".join(errors))
