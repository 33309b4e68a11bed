"""How busy the cores this process may run on are (for the flush pacer).

The pacer (``proto/_pacing.py``) narrows the flush window only while the CPU it would
spend is free on the machine, not just unused by this process: several workers, the
embedded database and a load balancer may share the same cores.  This reads the
kernel's per-CPU counters (``psutil.cpu_times(percpu=True)``) for the CPUs in the
process's affinity mask and returns their busy share since the previous reading.
"""

from __future__ import annotations

from typing import Any

import psutil

# Counted as not busy: idle time, and time waiting for I/O with nothing to run.
_IDLE_FIELDS = ("idle", "iowait")
# Already counted in ``user``/``nice`` on Linux (psutil documents it).
_NESTED_FIELDS = ("guest", "guest_nice")


def _affinity() -> list[int] | None:
    try:
        return list(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error, OSError):  # macOS has no affinity mask
        return None


def _split(times: Any) -> tuple[float, float]:
    """(busy, total) seconds of one CPU's counters."""
    fields = times._asdict()
    total = sum(v for k, v in fields.items() if k not in _NESTED_FIELDS)
    idle = sum(fields.get(k, 0.0) for k in _IDLE_FIELDS)
    return total - idle, total


class CoresBusy:
    """``sample()``: the busy share (0-1) of this process's CPUs since the last call, or
    ``None`` when too little time passed to tell (under a mock clock, say) or the
    counters cannot be read."""

    MIN_TOTAL_S = 0.05  # CPU-seconds across the cores; less is noise

    def __init__(self) -> None:
        self._cpus = _affinity()
        self._last = self._read()

    def _read(self) -> tuple[float, float] | None:
        try:
            per_cpu = psutil.cpu_times(percpu=True)
        except (psutil.Error, OSError):
            return None
        chosen = [per_cpu[i] for i in self._cpus if i < len(per_cpu)] if self._cpus else per_cpu
        busy = total = 0.0
        for times in chosen:
            b, t = _split(times)
            busy += b
            total += t
        return busy, total

    def sample(self) -> float | None:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None:
            return None
        busy, total = now[0] - last[0], now[1] - last[1]
        if total < self.MIN_TOTAL_S:
            return None
        return min(1.0, max(0.0, busy / total))
