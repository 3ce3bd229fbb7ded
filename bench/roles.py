"""Which client endpoint of a cluster is its leader, for suites that load one role only.

A write sent to a follower is forwarded to the leader and answered after the follower applies it,
so a one-client latency depends on which member the client happens to use; a suite that names
its role compares etcd's leader with ours (or a follower with a follower) in every run.
"""

from __future__ import annotations

import time

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

ROLES = ("leader", "follower")


def member_status(endpoint: str) -> tuple[int, int] | None:
    """(this member's ID, the leader it knows; 0: none) from Maintenance.Status on a plaintext
    endpoint, or None when it does not answer."""
    with grpc.insecure_channel(endpoint) as channel:
        try:
            st = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=2)
        except grpc.RpcError:
            return None
    return st.header.member_id, st.leader


def endpoints_with_role(endpoints: list[str], role: str, timeout: float = 15.0) -> list[str]:
    """Those of `endpoints` whose member has `role` ("leader" or "follower"), once every endpoint
    answers Status and all agree on one leader. Raises TimeoutError if that does not happen
    within `timeout` seconds (an election that does not end, a member down)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    deadline = time.monotonic() + timeout
    while True:
        statuses = [member_status(e) for e in endpoints]
        leaders = {s[1] for s in statuses if s is not None}
        if None not in statuses and len(leaders) == 1 and 0 not in leaders:
            (leader,) = leaders
            return [e for e, (member, _) in zip(endpoints, statuses) if (member == leader) == (role == "leader")]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no agreed leader among {', '.join(endpoints)} within {timeout:g} s: {statuses}")
        time.sleep(0.2)
