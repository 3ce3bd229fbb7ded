"""Value types of the Raft core: entries, messages, hard/soft state, snapshots, conf changes.

All types are ``__slots__`` dataclasses. Contract: once an object has been handed to the core
(proposed, stepped) or returned by it (in a ``Ready``), nobody mutates it. The core shares
``Entry`` objects between its log, outgoing messages and the ``Ready``; the in-process test
network shares ``Message`` objects between receivers. Numbers for the enums are those of etcd's
``raftpb`` so traces read the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

# Node id 0 means "nobody": no leader known, no vote cast.
NONE = 0


class MessageType(IntEnum):
    """Kinds of Raft messages. *Local* ones never cross the network (term 0)."""

    MsgHup = 0  # local: start an election (pre-vote first when enabled)
    MsgBeat = 1  # local: leader should broadcast heartbeats
    MsgProp = 2  # proposal; local, or forwarded by a follower to the leader (term 0)
    MsgApp = 3  # leader -> follower: entries after (index, log_term), plus commit
    MsgAppResp = 4  # follower -> leader: ack of persisted log up to index, or reject+hint
    MsgVote = 5
    MsgVoteResp = 6
    MsgSnap = 7  # leader -> follower: install this snapshot
    MsgHeartbeat = 8  # leader -> follower: commit (capped at match) and read-index ctx
    MsgHeartbeatResp = 9
    MsgUnreachable = 10  # local: the transport could not reach a peer
    MsgSnapStatus = 11  # local: the transport finished (or failed) sending a snapshot
    MsgCheckQuorum = 12  # local: leader checks it heard from a quorum this election timeout
    MsgTransferLeader = 13  # `frm` is the *transferee*, not the sender (as in etcd)
    MsgTimeoutNow = 14  # leader -> transferee: campaign now, ignoring leases
    MsgReadIndex = 15  # read request; local, or forwarded to the leader (term 0)
    MsgReadIndexResp = 16  # leader -> follower: read index for ctx (entries[0].data)
    MsgPreVote = 17
    MsgPreVoteResp = 18


class EntryType(IntEnum):
    """A log entry carries either application data or an encoded ``ConfChange``."""

    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(IntEnum):
    """Single membership changes (etcd 3.4 style; no joint consensus).

    ADD_NODE on an existing learner promotes it. ADD_LEARNER_NODE on a voter is ignored (no
    demotion). UPDATE_NODE changes nothing in Raft; it exists for the application (peer URLs).
    """

    ADD_NODE = 0
    REMOVE_NODE = 1
    UPDATE_NODE = 2
    ADD_LEARNER_NODE = 3


class Role(IntEnum):
    """The role of a node in its current term."""

    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(slots=True)
class Entry:
    """One log entry. ``term`` and ``index`` are assigned by the leader when it appends."""

    term: int = 0
    index: int = 0
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(slots=True)
class HardState:
    """State that must be durable before any message acknowledging it leaves the node."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


@dataclass(slots=True)
class ConfState:
    """The membership configuration: voters and learners (disjoint sets of node ids)."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(slots=True)
class SnapshotMetadata:
    """Where a snapshot sits in the log and the configuration in force at that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True)
class Snapshot:
    """An application state machine image (opaque ``data``) as of ``metadata.index``."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


@dataclass(slots=True)
class ConfChange:
    """A membership change; proposed with ``propose_conf_change``, applied when committed."""

    type: ConfChangeType = ConfChangeType.ADD_NODE
    node_id: int = NONE
    context: bytes = b""


@dataclass(slots=True)
class Message:
    """A Raft message. Field meaning depends on ``type`` (see ``MessageType``).

    ``frm`` is the sender (``from`` is a Python keyword). ``reject_hint`` and ``log_term`` on a
    rejected MsgAppResp carry the follower's conflict hint. ``context`` carries the read-index
    ctx on heartbeats and the campaign kind on votes.
    """

    type: MessageType = MessageType.MsgHup
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(slots=True)
class SoftState:
    """Volatile state worth reporting to the application; never persisted."""

    lead: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(slots=True)
class ReadState:
    """A confirmed read: serve the read for ``ctx`` once the state machine applied ``index``."""

    index: int
    ctx: bytes


# Context of MsgVote sent because of a leader transfer: voters grant it even inside their
# leader lease (CheckQuorum), because the current leader asked for it.
CAMPAIGN_TRANSFER = b"CampaignTransfer"
