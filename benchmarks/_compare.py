"""``python -m benchmarks compare``: the same workload through locshare and the systems
a user could pick instead, with the same load client.

* ``ws``: benchmarks/reference/ws_broadcast.py, asyncio ``websockets`` room broadcast.
* ``mqtt``: Mosquitto, the broker behind OwnTracks; one topic per session, QoS 0.
* ``redis``: Redis pub/sub (the coordination layer of the documents' Rust route); one
  channel per session, RESP3 so one connection both subscribes and publishes.

Every system runs pinned to the server CPU on free local ports and is stopped
afterwards; one that is not installed is reported as skipped with the reason.  The
references forward each published message as-is to every subscriber of its room (the
publisher included, like locshare's echo); their payload is the entry locshare would
deliver, so sizes match.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import trio

from . import _load, _report, _run, _server, _speed
from ._commands import make_system
from ._scenarios import Scenario, compare_workload
from ._systems import REFERENCES, System, SystemUnavailable

LABELS = {
    "locshare": "locshare",
    "ws": "websockets broadcast",
    "mqtt": "Mosquitto MQTT",
    "redis": "Redis pub/sub",
}


def _reference_participants(sc: Scenario, system: System) -> list[_load.Participant]:
    step = max(1, round(1 / sc.decode_fraction))
    out: list[_load.Participant] = []
    for s in range(sc.sessions):
        for j in range(sc.per_session):
            out.append(
                _load.Participant(
                    len(out),
                    s,
                    str(uuid.uuid4()),
                    f"{system.host}:{system.port}",
                    decode=j % step == 0,
                )
            )
    return out


def run_one(key: str, sc: Scenario, opts: _run.RunOptions, out: Path) -> dict[str, Any]:
    progress = _run.Progress(f"compare {key}", opts.progress)
    try:
        system: System = make_system(opts) if key == "locshare" else REFERENCES[key]()
    except SystemUnavailable as exc:
        progress.note(f"skipped: {exc}")
        return {"system": LABELS[key], "key": key, "skipped": str(exc)}
    try:
        if key == "locshare":
            setups = trio.run(_run.create_sessions, system.base_url, sc.sessions, sc.per_session)
            participants = _run.plan_participants(setups, sc.decode_fraction)
        else:
            participants = _reference_participants(sc, system)
        workers = opts.workers or _run.default_workers(len(participants))
        data = _run.drive(sc, system, participants, workers=workers, progress=progress)
        result = _run.summarize(data)
    finally:
        system.stop()
    result["key"] = key
    _report.write_run(out / key, result)
    return result


def run_compare(opts: _run.RunOptions, keys: list[str]) -> Path:
    sc = compare_workload(quick=opts.quick, duration_s=opts.duration_s)
    out = opts.out or _report.default_out("compare")
    out.mkdir(parents=True, exist_ok=True)
    _speed.reference(opts.speed_repeats)  # before any server starts
    if opts.server_workers > 1:
        # locshare's workers cannot be held to one core: nobody is pinned, so that the
        # systems are compared in the same placement.
        _server.share_cores()
    results = [run_one(key.strip(), sc, opts, out) for key in keys if key.strip()]
    rows = [_row(r) for r in results]
    summary: dict[str, Any] = {
        "scenario": "compare",
        "title": sc.title,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {
            "sessions": sc.sessions,
            "per_session": sc.per_session,
            "interval_s": sc.interval_s,
            "duration_s": sc.duration_s,
        },
        "machine": _run.machine(),
        "placement": _server.placement(),
        "systems": rows,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot = _plot(out, rows)
    (out / "report.md").write_text(compare_markdown(summary, plot))
    print(compare_table(summary))
    return out


def _row(r: dict[str, Any]) -> dict[str, Any]:
    if r.get("skipped"):
        return {"system": r["system"], "key": r["key"], "skipped": r["skipped"]}
    opened = r["connections"]["opened"]
    return {
        "system": r["system"],
        "key": r["key"],
        "version": r["versions"]["system"],
        "connections": opened,
        "connect_p95_ms": r["connect_ms"]["p95"],
        "latency_ms": r["latency_ms"],
        "delivery_ratio": r["delivery_ratio"],
        "updates_sent": r["updates_sent"],
        "deliveries": r["messages_delivered"],
        "frames": r["frames_delivered"],
        "server_cpu_pct": r["server_cpu_pct"],
        "server_cpu_s": r["server_cpu_s"],
        "cpu_s_per_million_deliveries": r.get("server_cpu_s_per_million_deliveries"),
        "rss_kb_per_connection": r["rss_kb_per_connection"],
        "server_rss_mb_peak": r["server_rss_mb_peak"],
        "server_wait_pct": r.get("server_wait_pct"),
        "other_cpu_pct": r.get("other_cpu_pct"),
        "load_client_cpu_pct": r["load_client_cpu_pct"],
        "valid": r["valid"],
        "invalid_reason": r["invalid_reason"],
        "noisy": r.get("noisy", False),
    }


def compare_table(summary: dict[str, Any]) -> str:
    lines = [
        "| system | latency p50 / p95 / p99 (ms) | delivery | server CPU (one core) | CPU s per million deliveries "
        "| idle RSS per connection | frames per update delivered |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["systems"]:
        if r.get("skipped"):
            lines.append(f"| {r['system']} | skipped: {r['skipped']} | | | | | |")
            continue
        lat = r["latency_ms"]
        frames = f"{r['frames'] / r['deliveries']:.2f}" if r["deliveries"] else "-"
        flag = "" if r["valid"] else " (INVALID)"
        flag += " (noisy)" if r.get("noisy") else ""
        lines.append(
            f"| {r['system']}{flag} | {_report._f(lat['p50'])} / {_report._f(lat['p95'])} / {_report._f(lat['p99'])} | "
            f"{_report._ratio(r['delivery_ratio'])} | {_report._f(r['server_cpu_pct'])} % | "
            f"{_report._f(r['cpu_s_per_million_deliveries'], 1)} | {_report._f(r['rss_kb_per_connection'])} KB | {frames} |"
        )
    return "\n".join(lines) + "\n"


COMPARE_TEXT = """\
## How to read this

All four get the same workload from the same load client: {sessions} sessions x
{per_session} participants, one update every {interval:g} s each, a ~170-byte JSON
location; every update must reach every participant of its session, the sender
included. "Deliveries" are location entries received; "CPU s per million deliveries" is
the server's CPU time divided by them (for locshare the embedded PostgreSQL is not
included: it is idle during the active phase).

**locshare does more per message.** The references forward bytes: they never look
inside a message. locshare authenticates every socket with a signed token checked
against the database, parses and validates every update (ranges, types, timestamps,
rate limit), writes it into the session's numpy geo index, re-encodes it with the
server's fields, recomputes the group's bounding box once a second for the viewport
hints it sends (another frame type, fitted to each client's screen), tracks presence
and staleness, and keeps a bounded outbox per client so one slow phone cannot hold a
session back. That is the cost shown in its CPU column; the references would need
all of it written on top (in the client or another service) to offer the same
product.

**Batching.** locshare collects a session's updates for one flush window and sends
them as one `locations` frame: a receiver waits on average half a window and at most a
whole one, by design, which is most of its median latency. The window follows the load
(docs/design.md, "Fan-out"): it starts at 100 ms, narrows towards 15 ms while the
server's cores have room and widens towards 250 ms when they are busy. The references
deliver each message as soon as it arrives, so their latency is the transport's alone.
In exchange, locshare writes fewer, larger frames: the last column is frames per update
delivered (1.0 for the references; about 1 / (updates per session per window) for
locshare), and CPU per delivery falls as groups get busier or the window wider.
"""


def compare_markdown(summary: dict[str, Any], plot: str | None) -> str:
    p = summary["params"]
    m = summary["machine"]
    lines = [
        f"# Compare: {summary['title']}",
        "",
        f"Started {summary['started_at']} on {m['cpu_model']}, {m['cores']} cores, {_speed.label(m)}; "
        + (
            "nothing pinned (locshare ran with --workers): servers and load share every core"
            if summary.get("placement", {}).get("shared")
            else "every server pinned to one core, the load on the rest"
        )
        + f"; {p['duration_s']:g} s active.",
        "",
        compare_table(summary),
        COMPARE_TEXT.format(
            sessions=p["sessions"], per_session=p["per_session"], interval=p["interval_s"]
        ),
    ]
    for r in summary["systems"]:
        if not r.get("skipped"):
            lines.append(
                f"- {r['system']}: {r['version']}; details in [{r['key']}/report.md]({r['key']}/report.md)"
            )
    if plot:
        lines += ["", f"![{plot}]({plot})", ""]
    return "\n".join(lines) + "\n"


def _plot(out: Path, rows: list[dict[str, Any]]) -> str | None:
    rows = [r for r in rows if not r.get("skipped")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["system"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    for i, (key, label) in enumerate((("p50", "p50"), ("p95", "p95"), ("p99", "p99"))):
        ax.bar(x + (i - 1) * 0.27, [r["latency_ms"][key] or 0 for r in rows], 0.27, label=label)
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency")
    ax.legend()
    axes[1].bar(x, [r["cpu_s_per_million_deliveries"] or 0 for r in rows], color="tab:red")
    axes[1].set_title("server CPU s per million deliveries")
    axes[2].bar(x, [r["rss_kb_per_connection"] or 0 for r in rows], color="tab:blue")
    axes[2].set_title("idle RSS per connection (KB)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=110)
    plt.close(fig)
    return "compare.png"
