"""One timer task for every session actor's deadlines.

Why: an actor waited for "an event, or my next deadline" with ``trio.move_on_at``
around its inbox wait.  That enters and leaves a cancel scope at every wake, and a
deadline that falls due wakes the actor by *cancelling* it: trio recalculates the
scope's cancel status, aborts the wait and raises ``Cancelled`` through the actor's
frames.  Measured with py-spy in ``realistic`` (10,000 people, about 1,650 actors each
flushing every window): the actor loop's ``move_on_at`` line and trio's deadline
expiry held about 14 % of the server's samples.

Rule: an actor *sets* its next wake-up on this clock and waits on its inbox alone.
The clock is one task that sleeps until the earliest alarm and then rings every alarm
that is due: a ring is an unpark of the actor's inbox (no exception, no cancel scope).
Alarms fall due at most ``granularity_s`` late: after a ring the clock sleeps at least
that long, so actors whose deadlines are a few hundred microseconds apart (the flush
grid spreads them, see :func:`~locshare.proto._pacing.next_flush_at`) wake in one batch and
the clock's own wake-ups stay bounded (at most ``1 / granularity_s`` per second).

Bounded: an alarm that moves leaves its old heap entry behind (skipped when it comes
up); when stale entries outnumber the live alarms the heap is rebuilt, so it never
holds more than twice the alarms set plus ``REBUILD_SLACK`` entries.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio

# Entries the heap may hold beyond twice the alarms set before it is rebuilt.
REBUILD_SLACK = 1024
# How late an alarm may ring (batches the clock's wake-ups).
DEFAULT_GRANULARITY_S = 0.002


class Alarmed(Protocol):
    """Something an alarm wakes (an actor's inbox).  ``alarm_at`` belongs to the clock."""

    alarm_at: float

    def ring(self) -> None: ...


class AlarmClock:
    def __init__(self, granularity_s: float = DEFAULT_GRANULARITY_S) -> None:
        self.granularity_s = granularity_s
        self._heap: list[tuple[float, int, Alarmed]] = []
        self._set: set[Alarmed] = set()
        self._seq = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()
        self._sleeping_until = math.inf
        self._floor = -math.inf  # the clock sleeps at least until then
        self.wakeups = 0  # the clock task's (tests count them)

    def set(self, target: Alarmed, at: float) -> None:
        """Ring ``target`` at ``at`` (trio time; ``math.inf``: never), replacing its
        previous alarm."""
        if at == target.alarm_at:
            return
        target.alarm_at = at
        if at == math.inf:
            self._set.discard(target)
            return
        self._set.add(target)
        heapq.heappush(self._heap, (at, next(self._seq), target))
        if len(self._heap) > 2 * len(self._set) + REBUILD_SLACK:
            self._heap = [(t.alarm_at, next(self._seq), t) for t in self._set]
            heapq.heapify(self._heap)
        if max(at, self._floor) < self._sleeping_until:
            self._lot.unpark_all()  # the clock sleeps too long: it looks again

    def cancel(self, target: Alarmed) -> None:
        self.set(target, math.inf)

    def __len__(self) -> int:
        return len(self._set)

    def ring_due(self, now: float) -> None:
        """Ring every alarm due at ``now`` (what the clock task does when it wakes)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, target = heapq.heappop(heap)
            if target.alarm_at != at:
                continue  # moved or cancelled since
            target.alarm_at = math.inf
            self._set.discard(target)
            target.ring()

    async def run(self) -> None:
        """The clock task (one per process; the hub starts it)."""
        while True:
            now = trio.current_time()
            self.ring_due(now)
            self._floor = now + self.granularity_s
            head = self._heap[0][0] if self._heap else math.inf
            self._sleeping_until = max(head, self._floor)
            with trio.move_on_at(self._sleeping_until):
                await self._lot.park()
            self._sleeping_until = -math.inf  # awake: a new alarm needs no unpark
            self.wakeups += 1
