from protos.etcdserverpb import rpc_pb2 as _rpc_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerHeader(_message.Message):
    __slots__ = ("cluster_id", "to")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    to: int
    def __init__(self, cluster_id: _Optional[int] = ..., to: _Optional[int] = ..., **kwargs) -> None: ...

class RaftBatch(_message.Message):
    __slots__ = ("header", "messages")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    messages: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., messages: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("header", "message", "data", "last")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    message: bytes
    data: bytes
    last: bool
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., message: _Optional[bytes] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class PeerAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaseForward(_message.Message):
    __slots__ = ("header", "lease_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    lease_id: int
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., lease_id: _Optional[int] = ...) -> None: ...

class LeaseForwardResult(_message.Message):
    __slots__ = ("found", "ttl", "granted_ttl")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TTL_FIELD_NUMBER: _ClassVar[int]
    found: bool
    ttl: int
    granted_ttl: int
    def __init__(self, found: _Optional[bool] = ..., ttl: _Optional[int] = ..., granted_ttl: _Optional[int] = ...) -> None: ...

class MemberCall(_message.Message):
    __slots__ = ("header", "method", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    method: str
    request: bytes
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., method: _Optional[str] = ..., request: _Optional[bytes] = ...) -> None: ...

class MemberCallResult(_message.Message):
    __slots__ = ("response", "applied_index")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    response: bytes
    applied_index: int
    def __init__(self, response: _Optional[bytes] = ..., applied_index: _Optional[int] = ...) -> None: ...

class ClusterMembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterMembersResponse(_message.Message):
    __slots__ = ("cluster_id", "members", "removed")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    members: _containers.RepeatedCompositeFieldContainer[_rpc_pb2.Member]
    removed: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cluster_id: _Optional[int] = ..., members: _Optional[_Iterable[_Union[_rpc_pb2.Member, _Mapping]]] = ..., removed: _Optional[_Iterable[int]] = ...) -> None: ...
