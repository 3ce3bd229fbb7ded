"""The etcd 3.4 errors that replication adds to the server's catalogue (cluster/server/errors.py).

Same gRPC codes and texts as etcd's rpctypes (ErrGRPCNoLeader, ErrGRPCLeaderChanged).
"""

from __future__ import annotations

import grpc

from cluster.server.errors import EtcdError

NO_LEADER = EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
LEADER_CHANGED = EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed")


class BootstrapError(Exception):
    """The member's flags or data dir cannot form or join the configured cluster; the message
    says what to fix. The member refuses to start."""
