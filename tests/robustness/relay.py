"""A fault-injecting TCP relay on the peer links of a cluster (used where netem is unavailable).

Layout: member X listens for peers on its real peer port but advertises `X.relay_port`
(--initial-advertise-peer-urls and --initial-cluster name the relay ports), so every peer
connection that ends at X passes through X's listener in this relay, which forwards it to X's
real port. Each accepted connection is attributed to the member that dialed it (`origin_of(port)`:
the member process that owns the dialing socket, found through /proc). A connection between origin
O and destination D is *faulted* while a fault is set whose victims include O or D; both of its
directions are then subject to the fault. A connection that cannot be attributed (its dialing
socket already gone from /proc when looked up; seen rarely, at start) has origin None and is
faulted by its destination only. Since etcd sends X's messages to Y over a stream Y
dialed to X, and we send them over a stream X dialed to Y, faulting every connection that touches
X (not only X's listener) is what cuts X's links in both directions, for both implementations.

Fault kinds (`LinkFault`), applied per chunk read from a socket (what one recv returned):
- **blackhole**: chunks are held, not delivered, and not read further (the sender's kernel
  buffers and flow control fill up); connections, including new ones, stay open. When the fault
  is cleared the held bytes flow again. This is what TCP does across a short network partition
  (retransmission delivers what was sent once the path is back), without the kernel's timers.
- **delay**: each chunk is delivered `delay ± jitter` s (uniform) after it was read; order is kept
  (a chunk never overtakes the one before it).
- **drop**: TCP cannot lose bytes without corrupting the stream, and chunks are not message
  boundaries, so packet loss is modelled as connection loss: a new faulted connection is reset at
  once with probability `rate`, and every `reset_interval` s each established faulted connection is
  reset with probability `rate` (an RST to both ends: SO_LINGER 0). The endpoints see failed
  dials and broken streams and must reconnect; a fraction of the traffic gets through.

Threading: the relay runs its own asyncio loop on one daemon thread. `set_fault`/`clear` may be
called from any thread and take effect for the next chunk. `close()` stops listeners and closes
every relayed connection. The RNG is seeded, so the drop decisions are reproducible given the same
connection order.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable

CHUNK = 64 * 1024
QUEUE_CHUNKS = 64  # per direction: bounds what the relay holds for a blackholed or delayed link


@dataclass(frozen=True)
class LinkFault:
    """One network fault on the links touching `victims` (member names)."""

    kind: str                     # "blackhole" | "delay" | "drop"
    victims: frozenset[str]
    delay: float = 0.0            # delay: base seconds
    jitter: float = 0.0           # delay: ± uniform seconds
    rate: float = 0.5             # drop: probability of resetting a connection
    reset_interval: float = 0.3   # drop: how often established connections are considered

    def touches(self, origin: str | None, dest: str) -> bool:
        # An unattributed connection (origin None) ending at a victim is faulted too.
        return dest in self.victims or (origin is not None and origin in self.victims)


class _Link:
    """One relayed connection: two pumps (origin→dest, dest→origin) and the sockets to reset."""

    def __init__(self, origin: str | None, dest: str, writers: list[asyncio.StreamWriter]):
        self.origin, self.dest, self.writers = origin, dest, writers
        self.tasks: list[asyncio.Task] = []

    def reset(self) -> None:
        for w in self.writers:
            sock = w.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            w.transport.abort()
        for t in self.tasks:
            t.cancel()


class FaultRelay:
    """Relays `routes` ({member name: (relay port, real peer port)}) on 127.0.0.1 with faults."""

    def __init__(self, routes: dict[str, tuple[int, int]], origin_of: Callable[[int], str | None],
                 host: str = "127.0.0.1", seed: int = 0):
        self._routes, self._origin_of, self._host = routes, origin_of, host
        self._rng = random.Random(seed)
        self._fault: LinkFault | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task] = set()  # one per accepted connection
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-relay", daemon=True)
        self._servers: list[asyncio.base_events.Server] = []
        self._released: asyncio.Event | None = None
        self._dropper: asyncio.Task | None = None
        self.connections = 0   # accepted so far
        self.resets = 0        # connections reset by a drop fault

    # -- control (any thread) --------------------------------------------------------------

    def start(self) -> "FaultRelay":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def set_fault(self, fault: LinkFault | None) -> None:
        asyncio.run_coroutine_threadsafe(self._set_fault(fault), self._loop).result(10)

    def links(self) -> list[tuple[str | None, str]]:
        """(origin, destination) of every relayed connection now open (origin None: unattributed)."""
        return [(link.origin, link.dest) for link in list(self._links)]

    def clear(self) -> None:
        self.set_fault(None)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # -- loop side -------------------------------------------------------------------------

    async def _start(self) -> None:
        self._released = asyncio.Event()
        self._released.set()
        for name, (relay_port, real_port) in self._routes.items():
            srv = await asyncio.start_server(
                lambda r, w, name=name, real=real_port: self._accept(name, real, r, w),
                self._host, relay_port, reuse_address=True)
            self._servers.append(srv)

    async def _set_fault(self, fault: LinkFault | None) -> None:
        self._fault = fault
        if self._dropper is not None:
            self._dropper.cancel()
            self._dropper = None
        if fault is not None and fault.kind == "blackhole":
            self._released.clear()
        else:
            self._released.set()
        if fault is not None and fault.kind == "drop":
            self._dropper = asyncio.create_task(self._drop_loop(fault))

    async def _close(self) -> None:
        if self._dropper is not None:
            self._dropper.cancel()
        self._released.set()
        for srv in self._servers:
            srv.close()
        for link in list(self._links):
            link.reset()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for srv in self._servers:
            await srv.wait_closed()

    def _faulted(self, link: _Link) -> LinkFault | None:
        f = self._fault
        return f if f is not None and f.touches(link.origin, link.dest) else None

    async def _drop_loop(self, fault: LinkFault) -> None:
        while True:
            await asyncio.sleep(fault.reset_interval)
            for link in list(self._links):
                if self._faulted(link) and self._rng.random() < fault.rate:
                    self.resets += 1
                    link.reset()

    async def _accept(self, dest: str, real_port: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        self._handlers.add(me)
        try:
            await self._relay(dest, real_port, reader, writer)
        finally:
            self._handlers.discard(me)

    async def _relay(self, dest: str, real_port: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        peer_port = writer.get_extra_info("peername")[1]
        origin = await asyncio.get_running_loop().run_in_executor(None, self._origin_of, peer_port)
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, real_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(origin, dest, [writer, up_writer])
        f = self._faulted(link)
        if f is not None and f.kind == "drop" and self._rng.random() < f.rate:
            self.resets += 1
            link.reset()
            return
        self._links.add(link)
        link.tasks = [asyncio.create_task(self._pump(link, reader, up_writer)),
                      asyncio.create_task(self._pump(link, up_reader, writer))]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            for w in link.writers:
                w.close()

    async def _pump(self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy src → dst chunk by chunk through a bounded queue, applying the current fault."""
        queue: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
        deliver = asyncio.create_task(self._deliver(link, queue, dst))
        last_due = 0.0
        try:
            while True:
                data = await src.read(CHUNK)
                now = time.monotonic()
                due = now
                f = self._faulted(link)
                if f is not None and f.kind == "delay":
                    due = now + max(0.0, f.delay + self._rng.uniform(-f.jitter, f.jitter))
                last_due = max(last_due, due)   # order kept
                await queue.put((last_due, data))
                if not data:
                    break
            await deliver
        finally:
            deliver.cancel()
            # One direction ended: end the other one too (a half-open relay helps no one).
            link.reset()

    async def _deliver(self, link: _Link, queue: asyncio.Queue, dst: asyncio.StreamWriter) -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            while (f := self._faulted(link)) is not None and f.kind == "blackhole":
                await self._released.wait()
            if not data:
                return
            dst.write(data)
            await dst.drain()


def _inode_of_dialer(port: int) -> str | None:
    """The socket inode of the local TCP socket bound to 127.0.0.1:`port` (the dialing end)."""
    v4 = f"0100007F:{port:04X}"
    wanted = (v4, f"0000000000000000FFFF0000{v4}")
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1] in wanted:
                        return parts[9]
        except OSError:
            continue
    return None


def pid_owning_dialer(port: int, pids: list[int]) -> int | None:
    """Which of `pids` (or their threads: one fd table per process) owns the socket that dialed
    from local port `port`; None when none does (or the connection is already gone)."""
    inode = _inode_of_dialer(port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None
