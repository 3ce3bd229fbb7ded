"""Faults that change what a member holds: catch-up by snapshot, and member replacement.

- `write_until_compacted(stack, live, entries)`: while a member is down, drive more than `entries`
  Raft entries through the cluster (pipelined Puts outside the round's key prefix), so that with a
  small --snapshot-count the leader compacts its log past the dead member's last index and must
  send it a snapshot when it comes back (etcd's catch-up window is 5000 entries, ours too).
- `replace_member(stack, victim, history)`: MemberRemove the victim (through the public Cluster
  API on a live member), stop its process, MemberAdd a fresh member (new name, fresh data dir,
  same ports) and start it with --initial-cluster-state existing.

Both are blocking and run on the round's fault thread (faults.inject) while traffic continues.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import replace as dc_replace

import grpc

from cluster.launch import Member, wait_until
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

BULK_PREFIX = b"/robustness/bulk/"
IN_FLIGHT = 64


def raft_index(stack, members: list[Member]) -> int:
    """The highest raft index the given members report (0 when none answers)."""
    best = 0
    for m in members:
        st = stack.status(m)
        if st is not None:
            best = max(best, st.raftIndex)
    return best


def write_until_compacted(stack, live: list[Member], entries: int, timeout: float = 180.0) -> int:
    """Pipelined Puts (IN_FLIGHT at a time) to the live leader until its raft index advanced by
    `entries`; returns how many Puts were acknowledged."""
    start = raft_index(stack, live)
    target = start + entries
    deadline = time.monotonic() + timeout
    acked = n = 0
    while time.monotonic() < deadline:
        lead = stack.leader()
        ep = (lead if lead in live else live[0]).endpoint
        with grpc.insecure_channel(ep) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            pending = []
            for _ in range(2000):
                pending.append(kv.Put.future(rpc_pb2.PutRequest(key=BULK_PREFIX + str(n % 100).encode(),
                                                                value=b"x" * 64), timeout=5))
                n += 1
                if len(pending) >= IN_FLIGHT:
                    acked += _settle(pending.pop(0))
            for f in pending:
                acked += _settle(f)
        if raft_index(stack, live) >= target:
            return acked
    raise TimeoutError(f"raft index did not pass {target} (from {start}) within {timeout}s")


def _settle(fut) -> int:
    try:
        fut.result()
        return 1
    except grpc.RpcError:
        return 0


def _cluster_call(stack, live: list[Member], fn):
    for m in live:
        with grpc.insecure_channel(m.endpoint) as ch:
            try:
                return fn(rpc_pb2_grpc.ClusterStub(ch))
            except grpc.RpcError as e:
                last = e
    raise last


def _reconfigure(stack, live: list[Member], fn, patience: float = 30.0):
    """A Cluster call, retried while etcd's strict reconfig check refuses it ("etcdserver:
    unhealthy cluster": every voting member must have been connected for 5 s), as an operator
    would retry."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return _cluster_call(stack, live, fn)
        except grpc.RpcError as e:
            if "unhealthy cluster" not in (e.details() or "") or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def replace_member(stack, victim: Member, history) -> Member:
    """Remove `victim`, add and start a fresh member in its place; returns the new member."""
    live = [m for m in stack.spec.members if m is not victim]
    st = stack.status(victim, timeout=2.0)
    assert st is not None, f"{victim.name} does not answer Status before its removal"
    victim_id = st.header.member_id
    _reconfigure(stack, live, lambda c: c.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=victim_id), timeout=10))
    history.note(f"removed {victim.name} ({victim_id:x})")
    # etcd stops a removed member by itself; ours may not yet: stop it either way.
    proc = stack.procs.procs.get(stack.pname(victim))
    if proc is not None:
        try:
            proc.wait(timeout=3)
        except Exception:
            pass
    stack.procs.kill(stack.pname(victim), signal.SIGTERM, wait=15.0)
    generation = victim.name.count("r") + 1
    fresh = dc_replace(victim, name=f"{victim.name.split('r')[0]}r{generation}",
                       data_dir=f"{victim.data_dir.rsplit('.data', 1)[0]}r{generation}.data")
    if os.path.exists(fresh.data_dir):
        shutil.rmtree(fresh.data_dir)
    peer_url = getattr(fresh, "relay_url", fresh.peer_url)
    _reconfigure(stack, live, lambda c: c.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[peer_url]), timeout=10))
    history.note(f"added {fresh.name} at {peer_url}")
    stack.spec.members[stack.spec.members.index(victim)] = fresh
    if victim.name in stack.member_env:  # the slot's failpoints (and their switch file) carry over
        stack.member_env[fresh.name] = stack.member_env[victim.name]
    stack.existing.add(fresh.name)
    stack.start(fresh)
    return fresh


def wait_serving(stack, m: Member, timeout: float = 60.0) -> None:
    wait_until(lambda: stack.serving(m), timeout, f"{m.name} serving\n{stack.procs.log_tail(stack.pname(m))}")
