"""Configuration of one Raft node."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .storage import Storage
from .types import NONE

if TYPE_CHECKING:  # the core never touches the global RNG; it is handed an instance
    import random


@dataclass(slots=True)
class Config:
    """Parameters of a Raft node. Times are in ticks (the driver decides what a tick is).

    ``rng`` is the only source of randomness (election timeouts); pass a seeded
    ``random.Random`` for reproducible runs. ``applied`` is the index the application's state
    machine has already applied (on restart: usually the snapshot index); committed entries
    after it are delivered again through ``Ready.committed_entries``.
    """

    id: int
    storage: Storage
    rng: random.Random
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    # Largest MsgApp payload (bytes); one oversized entry is still sent alone.
    max_size_per_msg: int = 1 << 20
    # Largest batch of committed entries handed out per Ready (None: unbounded).
    max_committed_size_per_ready: int | None = 16 << 20
    # Flow control per replicating follower: MsgApps in flight, and their bytes (0: no limit).
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0
    check_quorum: bool = True
    pre_vote: bool = True
    disable_proposal_forwarding: bool = False

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("node id must not be 0")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be > 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be > 0")
        if self.max_inflight_bytes < 0:
            raise ValueError("max_inflight_bytes must be >= 0")
