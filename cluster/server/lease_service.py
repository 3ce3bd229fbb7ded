"""etcdserverpb.Lease: Grant and Revoke go through the seam; KeepAlive and TimeToLive go to the
leader's lessor (`LeaseRouter`: local on the leader, forwarded by a follower), attached keys come
from the local store; Leases lists the local lessor's leases (every member has them all).

etcd 3.4.23 answers, checked: a keepalive of an unknown lease gets TTL 0; TimeToLive of an
unknown lease gets TTL -1 (no error); a requested TTL below the minimum is raised to it; ID 0
asks the member to pick an id.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from . import errors, validation
from .errors import EtcdError
from .lease_routing import LeaseRouter
from .lessor import Lessor
from .metrics import MemberMetrics
from .proposer import Proposer, ResponseHeaders
from .quota import BackendQuota


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    """The Lease service."""

    def __init__(self, store, lessor: Lessor, router: LeaseRouter, proposer: Proposer,
                 headers: ResponseHeaders, quota: BackendQuota, metrics: MemberMetrics, *,
                 readers: ThreadPoolExecutor):
        self._store = store
        self._lessor = lessor
        self._router = router
        self._proposer = proposer
        self._headers = headers
        self._quota = quota
        self._metrics = metrics
        self._readers = readers

    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, context):
        try:
            validation.check_lease_grant(request)
            if self._quota.check("lease_grant", request):
                await self._quota.refuse()
            if request.ID == 0:
                request = rpc_pb2.LeaseGrantRequest(TTL=request.TTL,
                                                    ID=self._proposer.next_id() & ((1 << 63) - 1))
            resp = await self._proposer.propose(lease_grant=request)
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp

    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, context):
        try:
            resp = await self._proposer.propose(lease_revoke=request)
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp

    async def LeaseKeepAlive(self, request_iterator, context):
        async for req in request_iterator:
            try:
                ttl = await self._router.renew(req.ID)
            except EtcdError as exc:  # as etcd: the error ends the stream
                await errors.abort_with(context, exc)
            if ttl:
                self._metrics.lease_renewed.inc()
            resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=ttl)
            self._headers.fill(resp.header)
            yield resp

    async def LeaseTimeToLive(self, request: rpc_pb2.LeaseTimeToLiveRequest, context):
        resp = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID)
        try:
            found = await self._router.time_to_live(request.ID)
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        if found is None:
            resp.TTL = -1
        else:
            resp.TTL, resp.grantedTTL = found
            if request.keys:
                keys = await asyncio.get_running_loop().run_in_executor(
                    self._readers, self._store.lease_keys, request.ID)
                resp.keys.extend(keys)
        self._headers.fill(resp.header)
        return resp

    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, context):
        resp = rpc_pb2.LeaseLeasesResponse(leases=[rpc_pb2.LeaseStatus(ID=i) for i in self._lessor.lease_ids()])
        self._headers.fill(resp.header)
        return resp
