"""A session actor's inbox: how everyone else asks the actor to change something.

Policy (never blocks a sender, never grows without bound):
    1. Positions (:class:`~._events.Located`) coalesce per participant: the latest
       wins.  They wait for the actor's next flush (the end of the flush window they
       arrived in), so a location update costs its reader a dict assignment, not a task
       switch; only the first one of a window wakes the actor, to set its flush timer.
    2. Every other event queues in arrival order and wakes the actor at once.
    3. At most ``max_events`` of those wait; :meth:`Inbox.post` refuses more (returns
       ``False``) and the sender answers "busy" instead of growing a queue.  What an
       inbox holds is therefore bounded by ``max_events`` plus one position per member.

Nothing here reads a clock; the actor decides when a flush is due, and the hub's
alarm clock (:mod:`._alarms`) rings the inbox when the actor's next deadline comes.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass

import trio

from ._events import Located


@dataclass(frozen=True, slots=True)
class InboxStatistics:
    queued: int
    located: int
    refused: int
    peak: int


class Inbox:
    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._events: deque[object] = deque()
        self._located: dict[uuid.UUID, Located] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self.alarm_at = math.inf  # the actor's next deadline on the hub's alarm clock
        self._refused = 0
        self._peak = 0
        self.closed = False

    def post(self, event: object) -> bool:
        """Queue an event and wake the actor; ``False`` if the inbox is full or closed."""
        if self.closed or len(self._events) >= self.max_events:
            self._refused += 1
            return False
        self._events.append(event)
        if len(self._events) > self._peak:
            self._peak = len(self._events)
        self._lot.unpark_all()
        return True

    def locate(self, event: Located) -> None:
        """A position: replaces the participant's pending one (Rule 1)."""
        if self.closed:
            return
        first = not self._located
        self._located[event.user_id] = event
        if first:
            self._lot.unpark_all()

    @property
    def has_located(self) -> bool:
        return bool(self._located)

    def take_events(self) -> list[object]:
        events = list(self._events)
        self._events.clear()
        return events

    def take_located(self) -> list[Located]:
        located = list(self._located.values())
        self._located.clear()
        return located

    def drop_located(self, user_id: uuid.UUID) -> None:
        self._located.pop(user_id, None)

    async def wait(self) -> None:
        """Until something is posted (returns at once if events are queued)."""
        if self._events:
            await trio.lowlevel.checkpoint()
            return
        await self._lot.park()

    def ring(self) -> None:
        """The actor's alarm (a deadline) is due: wake it."""
        self._lot.unpark_all()

    def close(self) -> list[object]:
        """No more events; the ones still queued are returned (to answer their senders)."""
        self.closed = True
        self._located.clear()
        return self.take_events()

    def statistics(self) -> InboxStatistics:
        return InboxStatistics(len(self._events), len(self._located), self._refused, self._peak)
