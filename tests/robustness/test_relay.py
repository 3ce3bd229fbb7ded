"""The fault relay on its own (no cluster): pass-through, attribution of a connection to the
dialing process, blackhole holding bytes until healed, delay with order kept, drop as resets."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time

import pytest

from cluster.launch import free_port
from tests.robustness.relay import FaultRelay, LinkFault, pid_owning_dialer


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionError:
            pass


@pytest.fixture
def relay():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    me = os.getpid()
    r = FaultRelay({"dst": (port, server.server_address[1])},
                   lambda p: "me" if pid_owning_dialer(p, [me]) == me else None, seed=1).start()
    r.port = port
    try:
        yield r
    finally:
        r.close()
        server.shutdown()


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _connect(relay) -> socket.socket:
    return socket.create_connection(("127.0.0.1", relay.port), timeout=10)


def test_pass_through(relay):
    with _connect(relay) as s:
        s.sendall(b"hello")
        assert _recv_exactly(s, 5) == b"hello"


def test_blackhole_of_the_dialing_member_holds_bytes_until_healed(relay):
    with _connect(relay) as s:
        s.sendall(b"a")
        assert _recv_exactly(s, 1) == b"a"
        # Victim "me" is the origin (attributed through /proc), not the destination.
        relay.set_fault(LinkFault("blackhole", frozenset({"me"})))
        s.sendall(b"held")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(10)
        relay.clear()
        s.settimeout(10)
        assert _recv_exactly(s, 4) == b"held"


def test_a_fault_on_other_members_leaves_the_link_alone(relay):
    relay.set_fault(LinkFault("blackhole", frozenset({"someone-else"})))
    with _connect(relay) as s:
        s.sendall(b"free")
        assert _recv_exactly(s, 4) == b"free"


def test_delay_with_jitter_keeps_order(relay):
    relay.set_fault(LinkFault("delay", frozenset({"dst"}), delay=0.1, jitter=0.05))
    with _connect(relay) as s:
        payload = b"".join(b"%04d" % i for i in range(300))
        for i in range(0, len(payload), 4):
            s.sendall(payload[i:i + 4])
        assert _recv_exactly(s, len(payload)) == payload  # every chunk jittered, none reordered
        t0 = time.monotonic()
        s.sendall(b"x")
        assert _recv_exactly(s, 1) == b"x"
        assert time.monotonic() - t0 >= 2 * 0.05  # each direction waits at least delay - jitter


def test_drop_resets_connections(relay):
    relay.set_fault(LinkFault("drop", frozenset({"dst"}), rate=1.0, reset_interval=0.1))
    with _connect(relay) as s:   # a new connection is reset at once
        s.settimeout(10)
        try:
            s.sendall(b"x")
            assert s.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
    relay.clear()
    with _connect(relay) as s:   # an established one is reset within reset_interval
        s.sendall(b"ok")
        assert _recv_exactly(s, 2) == b"ok"
        relay.set_fault(LinkFault("drop", frozenset({"dst"}), rate=1.0, reset_interval=0.1))
        s.settimeout(10)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
    assert relay.resets >= 2
