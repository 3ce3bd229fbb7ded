"""Test-side view of a running kvcluster: per-member stubs, leader lookup, a failover writer.

Everything here is a plain gRPC client of the members' client URLs, as an operator's tools are.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.launch import ClusterSpec, Member
from tests.support.kvstack import KVCLUSTER, start_kv_cluster
from cluster.launch import ProcessGroup, port_open, wait_until


class MemberClient:
    """KV and Maintenance stubs on one member's client URL."""

    def __init__(self, member: Member):
        self.member = member
        self.channel = grpc.insecure_channel(f"127.0.0.1:{member.client_port}")
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)

    def status(self, timeout: float = 1.0) -> rpc_pb2.StatusResponse | None:
        """Status, or None while the member is down or not answering."""
        try:
            return self.maintenance.Status(rpc_pb2.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None

    def close(self) -> None:
        self.channel.close()


class ClusterView:
    """Clients for every member of `spec`, plus restart and leader lookups."""

    def __init__(self, procs: ProcessGroup, spec: ClusterSpec):
        self.procs = procs
        self.spec = spec
        self.clients = {m.name: MemberClient(m) for m in spec.members}

    def close(self) -> None:
        for c in self.clients.values():
            c.close()

    def leader(self, among: list[str] | None = None) -> str | None:
        """The name of the member that `among` (default: all) agree is the leader, if any."""
        ids = {}
        leaders = set()
        for name in among or list(self.clients):
            st = self.clients[name].status()
            if st is None or st.leader == 0:
                return None
            ids[st.header.member_id] = name
            leaders.add(st.leader)
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def wait_leader(self, among: list[str] | None = None, timeout: float = 15.0) -> str:
        found: list[str] = []
        wait_until(lambda: bool(found.append(self.leader(among)) or found[-1]), timeout,
                   f"one leader agreed by {among or 'all members'}")
        return found[-1]

    def kill(self, name: str) -> None:
        self.procs.kill(f"kv-{name}")

    def restart(self, name: str, timeout: float = 30.0) -> None:
        m = next(m for m in self.spec.members if m.name == name)
        self.procs.start(f"kv-{name}", [*KVCLUSTER, *self.spec.argv(m)])
        wait_until(lambda: port_open(m.client_port), timeout,
                   f"kvcluster {name} restarted\n{self.procs.log_tail('kv-' + name)}")

    def wait_converged(self, timeout: float = 30.0) -> int:
        """Wait until every member applied the same index; returns the common revision."""
        def converged() -> bool:
            sts = [c.status() for c in self.clients.values()]
            if any(s is None for s in sts):
                return False
            return len({(s.raftAppliedIndex, s.header.revision) for s in sts}) == 1
        wait_until(converged, timeout, "members applied the same index")
        return next(iter(self.clients.values())).status().header.revision


class FailoverWriter(threading.Thread):
    """Puts unique keys `prefix/<writer>/<n>` in a loop; on any error retries the same key on
    the next member. `acked` holds every key whose Put returned OK.

    After each acknowledged Put it reads the key back, linearizably, through *another* member:
    a read that succeeds without the key is a linearizability violation (`stale_reads`)."""

    def __init__(self, spec: ClusterSpec, writer: int, prefix: bytes = b"load"):
        super().__init__(daemon=True, name=f"writer-{writer}")
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{m.client_port}") for m in spec.members]
        self.stubs = [rpc_pb2_grpc.KVStub(ch) for ch in self.channels]
        self.writer = writer
        self.prefix = prefix
        self.acked: list[bytes] = []
        self.ack_times: list[float] = []
        self.errors = 0
        self.stale_reads: list[tuple[bytes, str]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        n = 0
        endpoint = self.writer % len(self.stubs)
        while not self.stop_flag.is_set():
            key = b"%s/%d/%06d" % (self.prefix, self.writer, n)
            try:
                self.stubs[endpoint].Put(rpc_pb2.PutRequest(key=key, value=b"v" * 64), timeout=2.0)
            except grpc.RpcError:
                self.errors += 1
                endpoint = (endpoint + 1) % len(self.stubs)
                time.sleep(0.02)
                continue
            self.acked.append(key)
            self.ack_times.append(time.monotonic())
            n += 1
            self._read_back(key, (endpoint + 1) % len(self.stubs))

    def _read_back(self, key: bytes, endpoint: int) -> None:
        try:
            resp = self.stubs[endpoint].Range(rpc_pb2.RangeRequest(key=key), timeout=2.0)
        except grpc.RpcError:
            return  # that member is down or has no leader: nothing to check
        if not resp.kvs:
            self.stale_reads.append((key, f"endpoint {endpoint}"))

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(10)
        for ch in self.channels:
            ch.close()


def running_view(procs, tmp_path, *flags: str) -> Iterator[ClusterView]:
    """A 3-member kvcluster started with info logs and `flags`, as a ClusterView that is closed
    when the fixture using it ends (the processes belong to `procs`)."""
    spec = ClusterSpec.allocate(str(tmp_path), 3, extra_flags=["--log-level", "info", *flags])
    view = ClusterView(procs, start_kv_cluster(procs, spec))
    try:
        yield view
    finally:
        view.close()
