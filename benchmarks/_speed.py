"""The machine's speed reference: one fixed pure-Python loop, timed in every run.

Machines here differ by up to 3x in Python speed, so every ``results.json`` records
how long this loop took on the machine that produced it, timed in the same run
(``machine.speed_reference_s``), and the tables show it next to the figures:

    s = 0
    for i in range(10_000_000):
        s += i * i

It runs at module level (global variables), as ``python -c`` runs it: the form the
issue's reference figure (2.5-3.0 s on 2026-12-01) was taken with; inside a function
the same loop takes about a third of that (local variables).

Policy: the best (shortest) wall-clock time of ``repeats`` runs, because other work
on the machine only ever adds to it; the CPU time of each run is kept too, and a best
run whose wall time exceeds its CPU time by more than ``CONTENDED_RATIO`` is flagged
``contended`` (the core was shared while it ran).  It is measured once per command,
before any server starts, and the value is reused by every result of that command.
"""

from __future__ import annotations

import time
from typing import Any, Final

LOOP_N: Final = 10_000_000
REPEATS: Final = 3
CONTENDED_RATIO: Final = 1.10
SOURCE: Final = "s = 0\nfor i in range({n}):\n    s += i * i\n"
DESCRIPTION: Final = "s += i * i for i in range(10_000_000), module level, best of 3 (wall)"

_measured: dict[str, Any] | None = None


def measure(n: int = LOOP_N, repeats: int = REPEATS) -> dict[str, Any]:
    """Time the loop ``repeats`` times; the best wall-clock run is the reference."""
    code = compile(SOURCE.format(n=n), "<speed reference>", "exec")
    runs = []
    for _ in range(max(1, repeats)):
        cpu, wall = time.process_time(), time.perf_counter()
        exec(code, {})  # a fresh globals dict: the loop's names are module globals
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    best_wall, best_cpu = min(runs)
    return {
        "speed_reference_s": round(best_wall, 3),
        "speed_reference_cpu_s": round(best_cpu, 3),
        "speed_reference_runs_s": [round(w, 3) for w, _ in runs],
        "speed_reference_contended": best_wall > CONTENDED_RATIO * best_cpu,
        "speed_reference_loop": DESCRIPTION
        if (n, repeats) == (LOOP_N, REPEATS)
        else f"s += i * i for i in range({n:_}), module level, best of {repeats} (wall)",
    }


def reference(repeats: int | None = None) -> dict[str, Any]:
    """This command's reference: measured on the first call (``repeats`` runs; 0 skips
    it, for tests), the same value afterwards."""
    global _measured
    if _measured is None:
        if repeats == 0:
            _measured = {"speed_reference_s": None, "speed_reference_loop": "not measured"}
        else:
            _measured = measure(repeats=repeats or REPEATS)
    return dict(_measured)


def label(machine: dict[str, Any]) -> str:
    """``speed reference 2.61 s`` for tables; when flagged ``contended``, the CPU time
    of that run too (less disturbed by the other work, though not immune to it)."""
    value = machine.get("speed_reference_s")
    if value is None:
        return "speed reference not measured"
    if machine.get("speed_reference_contended"):
        cpu = machine.get("speed_reference_cpu_s")
        return f"speed reference {value:.2f} s (contended; CPU {cpu:.2f} s)"
    return f"speed reference {value:.2f} s"
