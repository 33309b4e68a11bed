"""The flush window against load: what the pacer chooses, and the latency it gives.

    python -m benchmarks.pacer_curve [--sizes 500 2000 5000 10000] [--duration 40]
                                     [--out DIR]

For each size: sessions of 50 participants, every participant sending every 2 s and
watching (convoy-10k's load, scaled), against a fresh server pinned to one core as
``run`` does.  Once a second during the active phase the harness reads the server's
``locshare_flush_window_seconds``; reported per size: the window's median and range
over the active phase, latency p50/p95/p99, delivery, the server's CPU, with the
machine's speed reference.  The pacer (``locshare/proto/_pacing.py``) narrows the
window towards ``flush_interval_min_ms`` while the core has room and widens it towards
``flush_interval_max_ms`` as it fills (docs/design.md, "Flush pacing").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from . import _run, _scenarios, _speed
from ._commands import run_locshare_with
from ._report import default_out
from ._run import scrape_metrics
from ._systems import LocshareSystem

PER_SESSION = 50
INTERVAL_S = 2.0


def measure(size: int, duration_s: float, progress: _run.Progress) -> dict[str, Any]:
    base = _scenarios.scenario("convoy-10k")
    sc = dataclasses.replace(
        base.with_duration(duration_s),
        name=f"pacer-{size}",
        sessions=max(1, size // PER_SESSION),
        per_session=PER_SESSION,
        interval_s=INTERVAL_S,
    )
    system = LocshareSystem()
    windows: list[float] = []
    last = [-1.0]

    def on_sample(t: float) -> None:
        if 0.0 <= t < sc.duration_s and t - last[0] >= 1.0:
            last[0] = t
            value = scrape_metrics(system.base_url).get("locshare_flush_window_seconds")
            if value is not None:
                windows.append(value * 1000)

    try:
        _data, result = run_locshare_with(
            sc, system, _run.RunOptions(), progress, on_sample=on_sample
        )
    finally:
        system.stop()
    latency = result.get("latency_ms", {})
    return {
        "participants": sc.sessions * sc.per_session,
        "window_ms_median": round(statistics.median(windows), 1) if windows else None,
        "window_ms_min": round(min(windows), 1) if windows else None,
        "window_ms_max": round(max(windows), 1) if windows else None,
        "window_samples": len(windows),
        "latency_ms": {k: latency.get(k) for k in ("p50", "p95", "p99")},
        "delivery_ratio": result.get("delivery_ratio"),
        "server_cpu_pct": result.get("server_cpu_pct"),
        "noisy": result.get("noisy"),
    }


def table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        f"Flush window against load ({_speed.label(machine)}; sessions of {PER_SESSION},"
        f" every {INTERVAL_S:g} s, server on one core):",
        "",
        "| participants | window median (min-max), ms | latency p50 / p95 / p99, ms | delivery | server CPU |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['participants']:,}{' (noisy)' if r['noisy'] else ''} |"
            f" {r['window_ms_median']} ({r['window_ms_min']}-{r['window_ms_max']}) |"
            f" {lat['p50']} / {lat['p95']} / {lat['p99']} | {r['delivery_ratio']} |"
            f" {r['server_cpu_pct']} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pacer_curve")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 5000, 10000])
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    machine = _speed.reference()
    out = args.out or default_out("pacer-curve")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        progress = _run.Progress(f"pacer {size}", False)
        rows.append(measure(size, args.duration, progress))
        print(json.dumps(rows[-1]), flush=True)
        time.sleep(2)
    text = table(rows, machine)
    (out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    (out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
