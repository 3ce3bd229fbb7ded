"""etcdserverpb.Cluster: MemberList from the configured membership, with the names and client
URLs every member published through the log after its start (membership.py), as etcd's does.

Reconfiguration (MemberAdd/Remove/Update/Promote) belongs to the cluster issue; until then each
answers with the etcd error that fits a member that cannot change its membership:
- an ID that is not a member: "etcdserver: member not found" (NotFound), as etcd;
- MemberAdd, removing or updating this member: "etcdserver: re-configuration failed due to not
  enough started members" (FailedPrecondition) -- NOT what etcd does (it would reconfigure);
- promoting this (voting) member: "etcdserver: can only promote a learner member", as etcd.
"""

from __future__ import annotations

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from . import errors
from .membership import Membership
from .proposer import ResponseHeaders


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    """The Cluster service of one member."""

    def __init__(self, membership: Membership, headers: ResponseHeaders):
        self._membership = membership
        self._headers = headers

    def _members(self) -> list[rpc_pb2.Member]:
        return [rpc_pb2.Member(ID=m.id, name=m.name, peerURLs=m.peer_urls, clientURLs=m.client_urls)
                for m in self._membership.members]

    def _check_known(self, member_id: int) -> None:
        if all(m.id != member_id for m in self._membership.members):
            raise errors.MEMBER_NOT_FOUND

    async def MemberList(self, request, context):
        # etcd's MemberList header carries no revision
        resp = rpc_pb2.MemberListResponse(members=self._members())
        self._headers.fill(resp.header, revision=0)
        return resp

    async def MemberAdd(self, request, context):
        await errors.abort_with(context, errors.MEMBER_NOT_ENOUGH_STARTED)

    async def MemberRemove(self, request, context):
        await self._refuse(request.ID, errors.MEMBER_NOT_ENOUGH_STARTED, context)

    async def MemberUpdate(self, request, context):
        await self._refuse(request.ID, errors.MEMBER_NOT_ENOUGH_STARTED, context)

    async def MemberPromote(self, request, context):
        await self._refuse(request.ID, errors.MEMBER_NOT_LEARNER, context)

    async def _refuse(self, member_id: int, err: errors.EtcdError, context) -> None:
        try:
            self._check_known(member_id)
        except errors.EtcdError as exc:
            await errors.abort_with(context, exc)
        await errors.abort_with(context, err)
