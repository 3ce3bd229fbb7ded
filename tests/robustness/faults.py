"""Process faults on a running cluster (etcd 3.4.23 or ours), and recovery measurement.

A `Stack` knows how to (re)start one member with the same argv and data dir. `inject` kills the
targets (follower / leader / quorum / all) with a signal, holds the fault while traffic keeps
running, restarts them, and measures recovery: the time from the restart until some member reports
a leader and a write succeeds.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.launch import KVCLUSTER, KVPROXY, ClusterSpec, Member, ProcessGroup, ProxySpec, port_open, wait_until
from tests.support.etcd_ref import ETCD_BIN

from .member_faults import replace_member, wait_serving, write_until_compacted
from .relay import LinkFault

RECOVERY_LIMIT = 5.0
# Our processes are Python: with PYTHONDONTWRITEBYTECODE set (as in this sandbox) every restart
# compiles our modules again (~30% of a member's start CPU). A deployed member has its bytecode
# (pip compiles it), so members restarted under test may write theirs (into __pycache__ beside
# the sources, git-ignored; a PYTHONPYCACHEPREFIX would recompile the whole stdlib once instead).
PYTHON_BYTECODE_ENV = {"PYTHONDONTWRITEBYTECODE": ""}


@dataclass
class Stack:
    """A running cluster under test: `kind` is "etcd" (3.4.23) or "kv" (ours); with `proxy`, the
    clients go through that kvproxy (process name "kvproxy") instead of to the members."""

    procs: ProcessGroup
    spec: ClusterSpec
    kind: str
    proxy: ProxySpec | None = None
    network: object = None  # a netns.NetnsNetwork when members run in namespaces
    relay: object = None    # a relay.FaultRelay on the peer links (relayed.py)
    env: dict = field(default_factory=dict)  # extra environment of every member process
    member_env: dict = field(default_factory=dict)  # member name -> extra environment (failpoints)
    existing: set = field(default_factory=set)  # members (re)started with --initial-cluster-state existing

    def failpoint_switch(self, m: Member) -> str:
        """The file whose existence switches on m's failpoints (KVCLUSTER_FAILPOINTS_WHILE)."""
        return self.member_env[m.name]["KVCLUSTER_FAILPOINTS_WHILE"]

    def start_proxy(self) -> None:
        self.procs.start("kvproxy", [*KVPROXY, *self.proxy.argv()], env=PYTHON_BYTECODE_ENV)

    def pname(self, m: Member) -> str:
        return f"{'etcd' if self.kind == 'etcd' else 'kv'}-{m.name}"

    def start(self, m: Member) -> None:
        """Start (or restart: same argv, same data dir) one member, in its netns if it has one."""
        wrap = ["ip", "netns", "exec", m.netns] if getattr(m, "netns", "") else []
        argv = self.spec.argv(m)
        if m.name in self.existing:
            argv[argv.index("--initial-cluster-state") + 1] = "existing"
        env = {**self.env, **self.member_env.get(m.name, {})}
        if self.kind == "etcd":
            # --pre-vote as our members have it (etcd 3.5's default): without it a follower cut
            # off by a fault keeps raising its term and deposes the leader when it comes back,
            # an extra election that took etcd's recovery past RECOVERY_LIMIT (5.17 s, 10.3 s)
            self.procs.start(self.pname(m), [*wrap, ETCD_BIN, *argv, "--pre-vote"],
                             env={"ETCD_UNSUPPORTED_ARCH": "", **env})
        else:
            self.procs.start(self.pname(m), [*wrap, *KVCLUSTER, *argv], env={**PYTHON_BYTECODE_ENV, **env})

    def start_all(self, timeout: float = 60.0) -> "Stack":
        """Start every member, wait until each serves clients and a leader is elected."""
        for m in self.spec.members:
            self.start(m)
        for m in self.spec.members:
            wait_until(lambda m=m: self.serving(m), timeout,
                       f"{self.kind} {m.name} serving\n{self.procs.log_tail(self.pname(m))}")
        wait_until(lambda: self.leader() is not None, timeout, f"a leader in the {self.kind} cluster")
        return self

    def serving(self, m: Member) -> bool:
        host, port = m.endpoint.rsplit(":", 1)
        return port_open(int(port), host)

    @property
    def endpoints(self) -> list[str]:
        if self.proxy is not None:
            return [self.proxy.listen_addr]
        return [m.endpoint for m in self.spec.members]

    def status(self, m: Member, timeout: float = 0.5):
        with grpc.insecure_channel(m.endpoint) as ch:
            try:
                return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)
            except grpc.RpcError:
                return None

    def leader(self) -> Member | None:
        """The member that a live member names as leader (Maintenance.Status leader field)."""
        by_id = {}
        lead = 0
        for m in self.spec.members:
            st = self.status(m)
            if st is not None:
                by_id[st.header.member_id] = m
                lead = lead or st.leader
        return by_id.get(lead)

    def try_put(self, key: bytes, timeout: float = 0.5) -> int | None:
        """Put through the clients' endpoints (the proxy, if any); the revision, or None."""
        for ep in self.endpoints:
            with grpc.insecure_channel(ep) as ch:
                try:
                    resp = rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=b"probe"), timeout=timeout)
                    return resp.header.revision
                except grpc.RpcError:
                    continue
        return None


@dataclass
class FaultCase:
    """What to fault (follower / leader / quorum / all), how, and for how long.

    Exactly one kind: a signal `sig` (kill + restart, or SIGSTOP/SIGCONT); `blackhole` (netns link
    down); `link` ("blackhole" / "delay" / "drop" on the peer links through the stack's relay);
    `slow_fsync` (the victims' raftWalFsync failpoint switched on); `replace` (MemberRemove +
    MemberAdd of a fresh member). `catch_up` > 0 holds a kill until that many Raft entries
    committed (the cluster must run with a small --snapshot-count: the victim then needs a
    snapshot to catch up)."""

    target: str
    sig: int = 0
    hold: float = 1.0
    blackhole: bool = False  # instead of a signal: the member's network link down for `hold` s
    link: str = ""
    delay: float = 0.0
    jitter: float = 0.0
    slow_fsync: bool = False
    replace: bool = False
    catch_up: int = 0

    @property
    def name(self) -> str:
        if self.blackhole:
            return f"blackhole {self.target}"
        if self.link == "delay":
            return f"relay delay {self.delay * 1000:.0f}±{self.jitter * 1000:.0f}ms {self.target}"
        if self.link:
            return f"relay {self.link} {self.target}"
        if self.slow_fsync:
            return f"slow fsync {self.target}"
        if self.replace:
            return f"replace {self.target}"
        if self.catch_up:
            return f"{signal.Signals(self.sig).name} {self.target} until snapshot"
        return f"{signal.Signals(self.sig).name} {self.target}"

    @property
    def pause(self) -> bool:
        """SIGSTOP: freeze the process for `hold` s, then SIGCONT (no restart). A frozen leader
        is cut off as by a partition, and wakes up still believing it leads."""
        return self.sig == signal.SIGSTOP and not self.blackhole


FAULT_CASES = [
    FaultCase("follower", signal.SIGKILL), FaultCase("follower", signal.SIGTERM),
    FaultCase("leader", signal.SIGKILL), FaultCase("leader", signal.SIGTERM),
    FaultCase("quorum", signal.SIGKILL), FaultCase("all", signal.SIGKILL),
]
# Process pauses (SIGSTOP for 2.5 s > the election timeout, then SIGCONT).
PAUSE_CASES = [FaultCase("leader", signal.SIGSTOP, hold=2.5), FaultCase("follower", signal.SIGSTOP, hold=2.5)]
# Network blackhole of one member (netns; link down for 3 s > the election timeout, then up).
BLACKHOLE_CASES = [FaultCase("follower", 0, hold=3.0, blackhole=True),
                   FaultCase("leader", 0, hold=3.0, blackhole=True)]
# Peer-link faults through the relay (relayed.py), each held 3 s: one follower, the leader, a quorum.
LINK_CASES = [FaultCase(t, hold=3.0, link=k, delay=d, jitter=j)
              for k, d, j in (("blackhole", 0, 0), ("delay", 0.15, 0.1), ("drop", 0, 0))
              for t in ("follower", "leader", "quorum")]
# Kill a follower and keep it down while > 5000 (etcd's catch-up window) + --snapshot-count
# entries commit: the cluster runs with SNAPSHOT_COUNT, so the follower needs a snapshot.
SNAPSHOT_COUNT = 500
CATCH_UP_CASES = [FaultCase("follower", signal.SIGKILL, catch_up=5000 + 2 * SNAPSHOT_COUNT)]
# Our raftWalFsync failpoint (300 ms per fsync) on the leader, then on a follower, for 3 s.
SLOW_FSYNC_MS = 300
SLOW_FSYNC_CASES = [FaultCase("leader", hold=3.0, slow_fsync=True), FaultCase("follower", hold=3.0, slow_fsync=True)]
REPLACE_CASES = [FaultCase("follower", replace=True), FaultCase("leader", replace=True)]
# Only for a Stack with a proxy.
PROXY_CASES = [FaultCase("proxy", signal.SIGKILL), FaultCase("proxy", signal.SIGTERM),
               FaultCase("leader", signal.SIGKILL)]


@dataclass
class FaultResult:
    case: FaultCase
    victims: list[str] = field(default_factory=list)
    recovery: float | None = None   # seconds from restart to leader + successful write
    problems: list[str] = field(default_factory=list)


def pick_victims(stack: Stack, target: str) -> list[Member]:
    members = list(stack.spec.members)
    wait_until(lambda: stack.leader() is not None, 15, "a leader before the fault")
    lead = stack.leader()
    followers = [m for m in members if m is not lead]
    if target == "follower":
        return followers[:1]
    if target == "leader":
        return [lead]
    if target == "quorum":
        return [lead] + followers[: len(members) // 2]
    return members


def inject(stack: Stack, case: FaultCase, hold_event, history) -> FaultResult:
    """Kill, hold (`hold_event.wait(case.hold)`: traffic keeps running), restart, measure recovery."""
    res = FaultResult(case)
    if case.target == "proxy":
        return _inject_proxy(stack, case, hold_event, history, res)
    victims = pick_victims(stack, case.target)
    res.victims = [m.name for m in victims]
    history.note(f"fault {case.name}: {res.victims}")
    if case.pause:
        return _inject_pause(stack, case, hold_event, history, res, victims)
    if case.blackhole:
        for m in victims:
            stack.network.set_link(m, False)
        try:
            hold_event.wait(case.hold)
        finally:
            for m in victims:
                stack.network.set_link(m, True)
        history.note(f"link up {res.victims}")
        _recover(stack, res, time.monotonic())
        return res
    if case.link:
        names = frozenset(str(m.relay_port) for m in victims)  # relayed.link_name
        stack.relay.set_fault(LinkFault(case.link, names, delay=case.delay, jitter=case.jitter))
        try:
            hold_event.wait(case.hold)
        finally:
            stack.relay.clear()
        history.note(f"links healed {res.victims}")
        _recover(stack, res, time.monotonic())
        return res
    if case.slow_fsync:
        switches = [stack.failpoint_switch(m) for m in victims]
        for path in switches:
            open(path, "w").close()
        try:
            hold_event.wait(case.hold)
        finally:
            for path in switches:
                os.unlink(path)
        history.note(f"fsync fast again {res.victims}")
        _recover(stack, res, time.monotonic())
        return res
    if case.replace:
        fresh = replace_member(stack, victims[0], history)
        res.victims.append(fresh.name)
        t0 = time.monotonic()
        _recover(stack, res, t0)
        try:
            wait_serving(stack, fresh)
        except TimeoutError as e:
            res.problems.append(str(e))
        return res
    for m in victims:
        stack.procs.kill(stack.pname(m), case.sig, wait=15.0)
    hold_event.wait(case.hold)
    if case.catch_up:
        live = [m for m in stack.spec.members if m not in victims]
        acked = write_until_compacted(stack, live, case.catch_up)
        history.note(f"{acked} bulk writes while {res.victims} down")
    t0 = time.monotonic()
    history.note(f"restart {res.victims}")
    for m in victims:
        stack.start(m)

    def recovered():
        return stack.leader() is not None and stack.try_put(b"/robustness/probe") is not None

    try:
        wait_until(recovered, 30.0, "leader and a successful write after restart", interval=0.05)
        res.recovery = time.monotonic() - t0
        if res.recovery > RECOVERY_LIMIT:
            res.problems.append(f"recovery took {res.recovery:.2f}s > {RECOVERY_LIMIT}s")
    except TimeoutError as e:
        res.problems.append(str(e))
    for m in victims:
        try:
            wait_until(lambda m=m: stack.serving(m), 30.0, f"{m.name} serving again")
        except TimeoutError as e:
            res.problems.append(str(e))
    history.note(f"recovered in {res.recovery}")
    return res


def _recover(stack: Stack, res: FaultResult, t0: float) -> None:
    def recovered():
        return stack.leader() is not None and stack.try_put(b"/robustness/probe") is not None
    try:
        wait_until(recovered, 30.0, "leader and a successful write after the fault", interval=0.05)
        res.recovery = time.monotonic() - t0
        if res.recovery > RECOVERY_LIMIT:
            res.problems.append(f"recovery took {res.recovery:.2f}s > {RECOVERY_LIMIT}s")
    except TimeoutError as e:
        res.problems.append(str(e))


def _inject_pause(stack: Stack, case: FaultCase, hold_event, history, res: FaultResult, victims) -> FaultResult:
    import os
    pids = [stack.procs.procs[stack.pname(m)].pid for m in victims]
    for pid in pids:
        os.killpg(pid, signal.SIGSTOP)
    try:
        hold_event.wait(case.hold)
    finally:
        for pid in pids:
            os.killpg(pid, signal.SIGCONT)
    history.note(f"SIGCONT {res.victims}")
    _recover(stack, res, time.monotonic())
    return res


def _inject_proxy(stack: Stack, case: FaultCase, hold_event, history, res: FaultResult) -> FaultResult:
    res.victims = ["kvproxy"]
    history.note(f"fault {case.name}")
    stack.procs.kill("kvproxy", case.sig, wait=15.0)
    hold_event.wait(case.hold)
    t0 = time.monotonic()
    stack.start_proxy()
    try:
        wait_until(lambda: stack.try_put(b"/robustness/probe") is not None, 30.0,
                   "a successful write through the restarted proxy")
        res.recovery = time.monotonic() - t0
        if res.recovery > RECOVERY_LIMIT:
            res.problems.append(f"recovery took {res.recovery:.2f}s > {RECOVERY_LIMIT}s")
    except TimeoutError as e:
        res.problems.append(str(e))
    return res
