"""The member: etcd v3 gRPC services over one propose -> apply seam.

Reading order:
- seam.py            the ReplicatedLog contract (propose / read barrier / apply callback)
- local_log.py       the single-member ReplicatedLog (log_segments.py: its files)
- proposer.py        how a service writes: InternalRequest -> propose -> await the applied outcome
- applier.py         ApplyLoop: committed entries -> one store WriteBatch -> proposers, watchers
- kv_service.py, watch_service.py (+ watch_hub.py), lease_service.py (+ lessor.py,
  lease_routing.py: keepalives and TTL queries go to the leader's lessor),
  maintenance_service.py, cluster_service.py: the gRPC services
- validation.py, errors.py: etcd's request checks and its exact error statuses
- quota.py, alarms.py, compactor.py, metrics.py: the rest of etcd's behaviour
- membership.py, cluster_service.py, learner_gate.py: members, their changes through Raft, and
  what a learner may serve
- grpc_glue.py       service registration (etcd's answer to unparseable requests)
- member.py          builds and runs all of it; cluster/cli.py parses etcd's flags

Threads: everything runs on one asyncio loop except `wal` (log writes + fsync), `apply` (the
store's only writer), `read` and `watch-catchup` (store reads too big for the loop).
"""
