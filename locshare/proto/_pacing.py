"""The flush window, following the load in both directions (sans-io: no trio).

Each session sends the location updates it received within one *flush window* as one
frame.  Per recipient, a frame costs the same system call however many updates it
carries, so at a fixed CPU budget a wider window serves more participants, and a
narrower one delivers sooner.  So the window follows the load: it starts at
``flush_interval_ms``, narrows towards ``flush_interval_min_ms`` (a few milliseconds)
while the core has room, so that latency tracks what the network allows, and widens
towards ``flush_interval_max_ms`` as the core fills, so that batching takes over instead
of every queue in the process growing.

:class:`FlushPacer` is an integral controller on the process's CPU share (CPU seconds
over wall seconds, the one thread that runs trio) with a dead band: above ``target``
the window widens in proportion to the excess, below ``narrow_below`` it narrows in
proportion to the room, in between it holds, unless it is wider than ``base_s``: then
it comes back towards ``base_s`` by the room under ``target`` (measured: a window
widened by the connection burst of 2,000 participants otherwise stayed at 138 ms at
58 % CPU, where the configured 100 ms would do); always within ``[min_s, max_s]``.  The dead
band keeps a lightly loaded server from spending its idle core on ever smaller frames
until it is busy (narrowing costs CPU: more, emptier frames).  It is fed once a second
by the hub; under trio's ``autojump_clock`` no CPU time passes per virtual second.

Idle means idle on the cores the process may run on, not only in the process: each
measurement may carry ``cores_busy``, the busy share of those cores over the same
interval (every process on them counted: other workers, the database, a load balancer).
Narrowing needs them under ``target`` too, and a window narrower than ``base_s`` widens
back towards it by their excess over ``target``: the CPU that narrowing spends must be
free on the machine.  Contention alone never widens past ``base_s``: batching beyond the
configured window is for this process's own load.  Why: with ``--workers 2`` on two
cores (``benchmarks cluster``, 2026-12-01) each worker ran at 68-72 % of a core, in the
dead band by its own share, while the cores were 95 % busy (the other worker, the load
client).  A window narrowed while the machine was idle (before the load arrived, say)
would stay narrow there, spending CPU the other processes need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# The window is scaled by exp(GAIN * error) per second of measurement, where ``error`` is
# the CPU share outside the dead band: multiplicative, so one gain serves a 5 ms window as
# well as a 250 ms one.  Stable: with a share of a + b / window (a per-update part and a
# per-frame part b / window, which is at most 1), one step changes the error by a factor
# of 1 - GAIN * b / window, within (-1, 1) whenever GAIN < 2.  An additive step (the
# first version, 0.1 s per unit) was unstable at windows of a few milliseconds.
GAIN = 1.0
# Narrowing happens below ``narrow_below`` (0.5), where b / window < 0.5: a gain under 4
# is stable there, and 2 converges without overshoot (factor 1 - 2 b / window in (0, 1)).
# Measured: with GAIN 1, `compare` (1,000 participants) took about 30 s to narrow from
# 100 ms to 13 ms, and its p95 over 60 s was mostly that convergence.
NARROW_GAIN = 2.0


@dataclass
class FlushPacer:
    """``base_s``: the starting window; ``min_s`` (default ``base_s``: no narrowing) and
    ``max_s`` bound it."""

    base_s: float
    max_s: float
    min_s: float | None = None
    target: float = 0.75
    narrow_below: float = 0.5
    window_s: float = field(init=False)
    cpu_share: float = field(init=False, default=0.0)
    cores_busy: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.min_s is None:
            self.min_s = self.base_s
        if not 0 < self.min_s <= self.base_s <= self.max_s:
            raise ValueError("need 0 < min_s <= base_s <= max_s")
        if not 0 < self.narrow_below <= self.target < 1:
            raise ValueError("need 0 < narrow_below <= target < 1 (CPU shares)")
        self.window_s = self.base_s

    @property
    def adaptive(self) -> bool:
        assert self.min_s is not None
        return self.max_s > self.min_s

    def observe(self, cpu_s: float, wall_s: float, cores_busy: float | None = None) -> float:
        """One measurement: ``cpu_s`` of CPU used over ``wall_s`` (and, if known, the busy
        share of the cores this process may run on); returns the new window."""
        if wall_s <= 0:
            return self.window_s
        self.cpu_share = share = max(0.0, cpu_s / wall_s)
        self.cores_busy = cores_busy
        if self.adaptive:
            assert self.min_s is not None
            # A long stall (a suspended process) counts as at most five seconds.
            floor = self.min_s
            ceiling = self.max_s
            gain = GAIN
            contended = cores_busy is not None and cores_busy > self.target
            if share > self.target:
                error = share - self.target
            elif contended and self.window_s < self.base_s:
                # Narrowed while the machine had room; now others need the CPU back.
                assert cores_busy is not None
                error = cores_busy - self.target
                ceiling = self.base_s
            elif share < self.narrow_below and not contended:
                error = share - self.narrow_below
                gain = NARROW_GAIN
            elif self.window_s > self.base_s:
                # Wider than configured while the core is under its target: the width
                # was for a load that has passed (a burst of connections, say).  Back
                # towards the configured window, by the room under the target, and no
                # further: below it is the narrowing's job, which costs CPU.
                error = share - self.target
                floor = self.base_s
            else:
                error = 0.0
            factor = math.exp(gain * error * min(wall_s, 5.0))
            self.window_s = min(ceiling, max(floor, self.window_s * factor))
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
