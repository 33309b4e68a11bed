"""The alarm clock that wakes session actors at their deadlines (runtime/_alarms.py)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from locshare.runtime._alarms import REBUILD_SLACK, AlarmClock


class Target:
    def __init__(self) -> None:
        self.alarm_at = math.inf
        self.rang: list[float] = []

    def ring(self) -> None:
        try:
            self.rang.append(trio.current_time())
        except RuntimeError:  # rung outside trio (the synchronous tests)
            self.rang.append(math.nan)


async def test_an_alarm_rings_at_its_time_and_at_most_the_granularity_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = AlarmClock(granularity_s=0.002)
    early, late = Target(), Target()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        await trio.sleep(1.0)  # the clock is asleep with nothing to do
        start = trio.current_time()
        clock.set(late, start + 5.0)
        clock.set(early, start + 0.5)
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert len(early.rang) == 1 and len(late.rang) == 1
    assert start + 0.5 <= early.rang[0] <= start + 0.5 + 0.002
    assert start + 5.0 <= late.rang[0] <= start + 5.0 + 0.002
    assert len(clock) == 0  # rung alarms are no longer set


async def test_a_moved_alarm_rings_once_at_its_new_time_and_a_cancelled_one_never(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = AlarmClock()
    moved, cancelled = Target(), Target()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        start = trio.current_time()
        clock.set(moved, start + 1.0)
        clock.set(moved, start + 3.0)
        clock.set(cancelled, start + 2.0)
        clock.cancel(cancelled)
        await trio.sleep(5.0)
        nursery.cancel_scope.cancel()
    assert moved.rang == [pytest.approx(start + 3.0, abs=0.002)]
    assert cancelled.rang == []


async def test_alarms_that_fall_due_close_together_ring_in_one_wakeup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = AlarmClock(granularity_s=0.002)
    targets = [Target() for _ in range(100)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        await trio.sleep(0.1)
        before = clock.wakeups
        start = trio.current_time()
        for i, target in enumerate(targets):
            clock.set(target, start + 1.0 + i * 0.00001)  # all within 1 ms
        await trio.sleep(2.0)
        nursery.cancel_scope.cancel()
    assert all(len(t.rang) == 1 for t in targets)
    # One wake-up for the first set (the clock looks again), at most two for the ringing.
    assert clock.wakeups - before <= 3


def test_the_heap_stays_bounded_when_alarms_move_again_and_again() -> None:
    clock = AlarmClock()
    targets = [Target() for _ in range(10)]
    for step in range(20_000):
        clock.set(targets[step % 10], 1000.0 + step)  # every set leaves a stale entry
    assert len(clock._heap) <= 2 * len(clock) + REBUILD_SLACK + 1
    clock.ring_due(1000.0 + 20_000)
    assert all(len(t.rang) == 1 for t in targets)  # each rings for its last time only
    assert len(clock) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.floats(0.0, 100.0) | st.just(math.inf)),
        max_size=60,
    ),
    st.floats(0.0, 120.0),
)
def test_ringing_matches_the_last_time_each_alarm_was_set(
    sets: list[tuple[int, float]], now: float
) -> None:
    clock = AlarmClock()
    targets = [Target() for _ in range(8)]
    last: dict[int, float] = {}
    for which, at in sets:
        clock.set(targets[which], at)
        last[which] = at
    clock.ring_due(now)
    for which, target in enumerate(targets):
        due = which in last and last[which] <= now
        assert len(target.rang) == (1 if due else 0)
        assert target.alarm_at == (math.inf if due or which not in last else last[which])
