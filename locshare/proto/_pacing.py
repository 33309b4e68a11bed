"""The flush window, widened when the server's core is busy (sans-io: no trio).

Each session sends the location updates it received within one *flush window* as one
frame.  Per recipient, a frame costs the same system call however many updates it
carries, so at a fixed CPU budget a wider window serves more participants: the
configured ``flush_interval_ms`` keeps latency low while the core has room, and under
load the window grows towards ``flush_interval_max_ms`` instead of letting every queue
in the process grow.

:class:`FlushPacer` is an integral controller on the process's CPU share (CPU seconds
over wall seconds, the one thread that runs trio): above ``target`` the window widens in
proportion to the excess, below it narrows again, always within ``[base_s, max_s]``.
It is fed once a second by the hub; under trio's ``autojump_clock`` no CPU time passes
per virtual second, so tests see the configured window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Seconds of window added per second of measurement, per unit of CPU share above target.
# Small enough to be stable: with a CPU share of c / window, one step changes the share's
# error by a factor of 1 - GAIN_S * c / window**2, which stays within (-1, 1) for the
# per-frame costs measured here (c under 0.15 CPU-seconds at a 100 ms window).
GAIN_S = 0.1


@dataclass
class FlushPacer:
    base_s: float
    max_s: float
    target: float = 0.75
    window_s: float = field(init=False)
    cpu_share: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.max_s:
            raise ValueError("need 0 < base_s <= max_s")
        if not 0 < self.target < 1:
            raise ValueError("target is a CPU share between 0 and 1")
        self.window_s = self.base_s

    @property
    def adaptive(self) -> bool:
        return self.max_s > self.base_s

    def observe(self, cpu_s: float, wall_s: float) -> float:
        """One measurement: ``cpu_s`` of CPU used over ``wall_s``; returns the new window."""
        if wall_s <= 0:
            return self.window_s
        self.cpu_share = max(0.0, cpu_s / wall_s)
        if self.adaptive:
            # A long stall (a suspended process) counts as at most five seconds.
            step = GAIN_S * (self.cpu_share - self.target) * min(wall_s, 5.0)
            self.window_s = min(self.max_s, max(self.base_s, self.window_s + step))
        return self.window_s


# Phases are spread over this many steps (a prime, so consecutive ids spread too).
PHASE_STEPS = 65521


def flush_phase(session_key: int) -> float:
    """A session's offset within the flush window, in [0, 1), from a stable key."""
    return (session_key % PHASE_STEPS) / PHASE_STEPS


def next_flush_at(now: float, window_s: float, phase: float) -> float:
    """The first point after ``now`` of the grid ``(k + phase) * window_s``.

    Why a grid instead of "flush one window after the first update": timers started by
    the same burst of work all fall due together one window later, and with hundreds
    of sessions those flushes then run as one long scheduler batch, during which the
    next updates pile up for all of them at once.  Measured at 10,000 participants,
    that self-reinforcing lockstep made the flush timers 40-60 ms late at the median
    and 100-210 ms at p95.  A grid with a per-session phase keeps the sessions' flushes
    evenly spread whatever the load does, and an update waits at most one window (half
    a window on average, where "first update opens the window" waits a full one).
    """
    cells = math.floor(now / window_s - phase) + 1
    return (cells + phase) * window_s
