"""How busy this process's cores are (the flush pacer's second reading), from the
kernel's real counters."""

from __future__ import annotations

import os
import time

import pytest

from locshare.runtime._cores import CoresBusy


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_too_little_time_tells_nothing() -> None:
    cores = CoresBusy()
    assert cores.sample() is None  # no CPU time has passed on the counters


def test_this_process_spinning_shows_as_busy_cores() -> None:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = CoresBusy()
    _spin(0.5)
    busy = cores.sample()
    assert busy is not None
    # At least this thread's share of the cores it may run on (minus tick rounding).
    assert busy >= 0.8 / len(cpus or [0]) - 0.1
    assert busy <= 1.0


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks here")
def test_only_the_cpus_of_the_affinity_mask_count() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    before = set(allowed)
    try:
        os.sched_setaffinity(0, {allowed[0]})
        cores = CoresBusy()
        assert cores._cpus == [allowed[0]]
        _spin(0.5)
        busy = cores.sample()
        assert busy is not None and busy >= 0.7  # one core, and this thread spun on it
    finally:
        os.sched_setaffinity(0, before)
