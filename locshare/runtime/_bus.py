"""The session bus seam: how a session's events reach every node that hosts it.

A node hosts a session while one of its members has a socket there; its actor then
subscribes to the session's events.  REST handlers, the sweeper and actors publish.
In-process (the default) the bus is :class:`LocalBus`; with ``LOCSHARE_REDIS_URL`` it
is the Redis bus, which carries the same events between processes and machines.

Contract (:class:`SessionBus`):
    * :meth:`~SessionBus.publish` never blocks and never fails for lack of room: a bus
      that must send over a network queues (bounded, coalescing) and sends from a task
      of its own.  Events reach the subscribers of *every* node, this one included, in
      the order each publisher published them.
    * :meth:`~SessionBus.subscribe` registers a delivery callback for a session on this
      node and returns the function that unregisters it.  The callback is synchronous
      and must not block (an actor's :meth:`Inbox.post`).
    * ``node_id`` names this process; events that say where they come from
      (``origin``) carry it, so a node can skip what it published itself.
    * ``distributed`` is ``False`` when no other node can exist: an actor then skips
      building what only other nodes would read (its positions per flush).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Protocol

from ._events import SessionEvent

Deliver = Callable[[SessionEvent], object]


class SessionBus(Protocol):
    node_id: str
    distributed: bool

    def publish(self, session_id: uuid.UUID, event: SessionEvent) -> None: ...

    def subscribe(self, session_id: uuid.UUID, deliver: Deliver) -> Callable[[], None]: ...


class LocalBus:
    """One process: publishing is calling the session's local subscriber, if any."""

    distributed = False

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id or "n-" + secrets.token_hex(4)
        self._subscribers: dict[uuid.UUID, Deliver] = {}

    def publish(self, session_id: uuid.UUID, event: SessionEvent) -> None:
        deliver = self._subscribers.get(session_id)
        if deliver is not None:
            deliver(event)

    def subscribe(self, session_id: uuid.UUID, deliver: Deliver) -> Callable[[], None]:
        self._subscribers[session_id] = deliver

        def unsubscribe() -> None:
            if self._subscribers.get(session_id) is deliver:
                del self._subscribers[session_id]

        return unsubscribe
