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
    * :meth:`~SessionBus.host` is awaited when a node starts hosting a session; it
      returns the other nodes that host it (whose state the new actor asks for before
      admitting its first socket); :meth:`~SessionBus.unhost` when it stops.
    * :meth:`~SessionBus.statistics` reports the bus's state and counters.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._events import SessionEvent
from ._stats import Histogram

Deliver = Callable[[object], object]


@dataclass(frozen=True, slots=True)
class BusStatistics:
    kind: str  # "local" or "redis"
    state: str  # "local", "connecting", "up", "down"
    persistence: str  # "n/a", "off", "allowed", "unknown"
    nodes: int  # other live nodes seen
    messages_out: int = 0
    messages_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    events_dropped: int = 0
    reconnects: int = 0
    errors: int = 0
    publish_seconds: Histogram | None = None  # per bus tick: one pipeline of messages


class SessionBus(Protocol):
    node_id: str
    distributed: bool

    def publish(self, session_id: uuid.UUID, event: SessionEvent) -> None: ...

    def subscribe(self, session_id: uuid.UUID, deliver: Deliver) -> Callable[[], None]: ...

    async def host(self, session_id: uuid.UUID) -> frozenset[str]: ...

    def unhost(self, session_id: uuid.UUID) -> None: ...

    def statistics(self) -> BusStatistics: ...


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

    async def host(self, session_id: uuid.UUID) -> frozenset[str]:
        return frozenset()

    def unhost(self, session_id: uuid.UUID) -> None:
        pass

    def statistics(self) -> BusStatistics:
        return BusStatistics(kind="local", state="local", persistence="n/a", nodes=0)
