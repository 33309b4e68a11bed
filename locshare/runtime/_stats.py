"""Runtime counters, kept as plain integers on the hot path.

The Prometheus endpoint reads these at scrape time (a custom collector), so a
delivery costs an integer add, not a metrics-library call.  Nothing here ever holds
a location, a name or a token: only counts and durations.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

# Seconds; chosen around the flush interval (100 ms) and the latency targets (150/300 ms).
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Histogram:
    """Fixed-bucket histogram (cumulative counts are computed when read)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


@dataclass
class HubStats:
    updates_received: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    deliveries: int = 0
    flushes: int = 0
    evictions: int = 0
    hints_sent: int = 0
    rate_limited: int = 0
    slow_disconnects: int = 0
    session_crashes: int = 0
    connection_errors: int = 0
    message_errors: int = 0
    flood_disconnects: int = 0
    connections_opened: int = 0
    embedded_db_restarts: int = 0
    handoffs_sent: int = 0
    handoffs_received: int = 0
    handoffs_failed: int = 0
    handoffs_refused: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    flush_seconds: Histogram = field(default_factory=Histogram)
    fanout_seconds: Histogram = field(default_factory=Histogram)

    def count_db_restart(self) -> None:
        self.embedded_db_restarts += 1

    def count_error(self, code: str) -> None:
        self.errors[code] += 1

    def observe_flush(self, seconds: float) -> None:
        self.flush_seconds.observe(seconds)
