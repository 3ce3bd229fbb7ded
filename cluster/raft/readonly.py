"""The leader's queue of ReadIndex requests awaiting quorum confirmation (safe mode).

A request records the commit index when it arrived. The leader then sends *one* heartbeat
round carrying the ctx of the newest queued request; when a quorum acks that ctx, the leader is
known to have been the leader at a moment after every request queued up to and including it
arrived, so all of them are released together, in arrival order.
"""
from __future__ import annotations

from collections import deque

from .types import Message


class ReadIndexStatus:
    """One queued request: the original message, its read index, and who acked its round."""

    __slots__ = ("request", "index", "acks")

    def __init__(self, request: Message, index: int) -> None:
        self.request = request
        self.index = index
        self.acks: set[int] = set()


class ReadOnlyQueue:
    """Pending ReadIndex requests keyed by ctx, in arrival order. ctx values must be unique."""

    __slots__ = ("_pending", "_order")

    def __init__(self) -> None:
        self._pending: dict[bytes, ReadIndexStatus] = {}
        self._order: deque[bytes] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def add_request(self, index: int, request: Message, ctx: bytes) -> bool:
        """Queue a request; returns False (ignored) if ``ctx`` is already queued."""
        if ctx in self._pending:
            return False
        self._pending[ctx] = ReadIndexStatus(request, index)
        self._order.append(ctx)
        return True

    def recv_ack(self, node_id: int, ctx: bytes) -> set[int] | None:
        """Record that ``node_id`` acked the heartbeat round for ``ctx``; the ack set, or None
        if ``ctx`` is not (any more) pending."""
        status = self._pending.get(ctx)
        if status is None:
            return None
        status.acks.add(node_id)
        return status.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release every request queued up to and including ``ctx``."""
        if ctx not in self._pending:
            return []
        released = []
        order, pending = self._order, self._pending
        while order:
            c = order.popleft()
            released.append(pending.pop(c))
            if c == ctx:
                break
        return released

    def last_pending_ctx(self) -> bytes | None:
        return self._order[-1] if self._order else None
