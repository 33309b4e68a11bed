"""``python -m benchmarks cluster``: the same load against one process, then against N
workers (``locshare serve --workers N``), and with ``--sticky`` against N nodes with
sticky placement, in one invocation, so that the figures that matter are ratios taken
on one machine at one time.

The load is convoy-10k's (200 sessions x 50, an update every 2 s), 120 s active by
default; ``--quick``: 40 x 50 for 15 s.  Every leg runs in the same placement, shared:
nothing pinned, server side and load client on every core (N workers on a 2-core
machine cannot be held to one core, and a different placement for the reference leg
would be a second variable); ``--single-pinned`` runs the first leg pinned as ``run``
does, for comparison with the one-process figures of the README.

The legs:

* ``1 process``: one ``locshare serve``, no Redis;
* ``N workers``: ``locshare serve --workers N``; the kernel spreads the connections over
  the workers (SO_REUSEPORT), as a round-robin load balancer would, and each worker
  hands a WebSocket whose session another worker owns over to that worker
  (``worker-affinity session``, the default; ``locshare/net/_handoff.py``), so every
  session stays in one process;
* ``N workers (no affinity)`` (``--unaffine``): the same with ``worker-affinity none``:
  every session has members on every worker and each worker needs the other's
  positions, through Redis (the workers' leg before the hand-over);
* ``N nodes (sticky)`` (``--sticky``): N ``locshare serve`` processes on ports of their
  own, one Redis and one PostgreSQL started by the harness (``_nodes.py``), every
  participant of a session connected to the node a hash of the session id picks (as
  the nginx ``#sticky`` variant routes): no session spans two nodes;
* ``N nodes (split)`` (``--split``): the same N nodes, member ``j`` of every session on
  node ``j % N``: every session spans every node on purpose.  It differs from the
  sticky leg only in the placement, where the workers' leg also differs in how the
  processes reach Redis (a Unix socket) and in the supervisor: the control for what
  placement alone saves.

``--fixed-window``: every leg's servers keep their flush window at 100 ms.  By default
the pacer narrows it on a server below 50 % CPU and widens it above 75 %, so the leg
that happens to be less busy writes more, emptier frames (more CPU per delivery, less
latency): a difference of the pacer, not of the shape.

Per leg: latency, delivery, and CPU.  *Server-side CPU* is every locshare process
(for the workers: the supervisor and each worker; for nodes: each node) plus the
Redis; ``cpu_s_per_million_deliveries`` divides a process's CPU seconds over the
active phase by all location entries delivered, so the processes add up to the
total; ``cost_ratio`` is a leg's total over the single process's (the issue's budget
for the workers: at most 1.25).  What Redis relayed (messages published, bytes in and
out per second) is read from its own counters at the start and the end of the
measurement.  The embedded PostgreSQL (idle while updates flow) and the load client
are reported apart.  Each leg is written like a ``run`` (``<out>/single/``,
``<out>/workers-N/``, ``<out>/sticky-N/``, ``<out>/split-N/``); the summary is
``<out>/results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from locshare._config import Config

from . import _report, _run, _server, _speed
from ._commands import run_locshare
from ._scenarios import Scenario, cluster_workload
from ._systems import LocshareSystem, System

P95_TARGET_MS: Final = 300.0
COST_BUDGET: Final = 1.25
TARGET_PARTICIPANTS: Final = 10_000


def _workload(opts: _run.RunOptions) -> Scenario:
    sc = cluster_workload(quick=opts.quick, duration_s=opts.duration_s)
    changes: dict[str, Any] = {}
    if opts.sessions is not None:
        changes["sessions"] = opts.sessions
    if opts.per_session is not None:
        changes["per_session"] = opts.per_session
    if opts.interval_s is not None:
        changes["interval_s"] = opts.interval_s
    return dataclasses.replace(sc, **changes) if changes else sc


@dataclasses.dataclass(frozen=True)
class Leg:
    key: str  # the leg's directory and id in the summary
    label: str
    start: Callable[[], System]
    shared: bool = True  # shared placement (False: the server pinned, as ``run`` does)


def cluster_legs(
    workers: int,
    *,
    single_pinned: bool = False,
    sticky: bool = False,
    split: bool = False,
    unaffine: bool = False,
) -> list[Leg]:
    """The legs of one ``cluster`` run, in order (see the module docstring)."""
    from ._nodes import NodesSystem

    legs = [
        Leg("single", "1 process", lambda: LocshareSystem(workers=1), shared=not single_pinned),
        Leg(f"workers-{workers}", f"{workers} workers", lambda: LocshareSystem(workers=workers)),
    ]
    if unaffine:
        legs.append(
            Leg(
                f"workers-{workers}-unaffine",
                f"{workers} workers (no affinity)",
                lambda: LocshareSystem(
                    workers=workers, extra_env={"LOCSHARE_WORKER_AFFINITY": "none"}
                ),
            )
        )
    if sticky:
        legs.append(
            Leg(
                f"sticky-{workers}",
                f"{workers} nodes (sticky)",
                lambda: NodesSystem(workers, placement="sticky"),
            )
        )
    if split:
        legs.append(
            Leg(
                f"split-{workers}",
                f"{workers} nodes (split)",
                lambda: NodesSystem(workers, placement="split"),
            )
        )
    return legs


def run_cluster(
    opts: _run.RunOptions,
    *,
    single_pinned: bool = False,
    sticky: bool = False,
    split: bool = False,
    unaffine: bool = False,
    fixed_window: bool = False,
) -> tuple[Path, dict[str, Any]]:
    sc = _workload(opts)
    workers = max(2, opts.server_workers)
    out = opts.out or _report.default_out("cluster")
    out.mkdir(parents=True, exist_ok=True)
    _speed.reference(opts.speed_repeats)  # before any server starts
    _server.fix_flush_window(fixed_window)
    legs = []
    for leg in cluster_legs(
        workers, single_pinned=single_pinned, sticky=sticky, split=split, unaffine=unaffine
    ):
        _server.share_cores(leg.shared)
        progress = _run.Progress(f"cluster {leg.label}", opts.progress)
        progress.note(f"{sc.participants:,} participants against {leg.label}")
        system = leg.start()
        try:
            result = run_locshare(sc, system, opts, progress)
        finally:
            system.stop()
        result["leg"] = leg.label
        result["leg_key"] = leg.key
        _report.write_run(out / leg.key, result)
        legs.append(result)
    _server.share_cores(False)
    _server.fix_flush_window(False)
    summary = cluster_summary(sc, legs, quick=opts.quick)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(cluster_markdown(summary))
    print(cluster_table(summary))
    print(sticky_text(summary))
    return out, summary


def _leg_row(r: dict[str, Any], single_total: float | None) -> dict[str, Any]:
    roles = r.get("server_processes") or {}
    processes = {
        role: figures["cpu_s_per_million_deliveries"]
        for role, figures in sorted(roles.items())
        if role.startswith(("worker", "node"))
    }
    total = r.get("server_cpu_s_per_million_deliveries")
    shape = r.get("server_shape") or {}
    return {
        "leg": r["leg"],
        "key": r.get("leg_key"),
        "shape": shape.get("kind", "single"),
        "node_placement": shape.get("placement"),
        "placement": "shared" if r["placement"]["shared"] else "pinned",
        "connections": r["connections"]["opened"],
        "target": r["connections"]["target"],
        "latency_ms": r["latency_ms"],
        "delivery_ratio": r["delivery_ratio"],
        "delivery": r["delivery"],
        "deliveries": r["messages_delivered"],
        "server_cpu_pct": r["server_cpu_pct"],
        "cpu_s_per_million_deliveries": total,
        # Workers' or nodes' (the key keeps its old name: saved summaries read it).
        "cpu_s_per_million_by_worker": processes,
        "supervisor_cpu_s_per_million": (roles.get("supervisor") or {}).get(
            "cpu_s_per_million_deliveries"
        ),
        "redis_cpu_s_per_million": r.get("redis_cpu_s_per_million_deliveries"),
        "redis_cpu_pct": r.get("redis_cpu_pct"),
        "redis_bus": r.get("redis_bus"),
        "sessions_by_node": (r.get("node_placement") or {}).get("sessions_by_node"),
        "sessions_spanning_nodes": (r.get("node_placement") or {}).get("sessions_spanning_nodes"),
        "worker_cpu_pct": {
            role: figures["cpu_pct"] for role, figures in sorted(roles.items()) if role != "redis"
        }
        or {"server": r["server_cpu_pct"]},
        "cost_ratio": round(total / single_total, 3) if total and single_total else None,
        "db_cpu_s": r.get("db_cpu_s"),
        "load_client_cpu_core_pct": r.get("load_client_cpu_core_pct"),
        "load_client_cpu_pct_per_process": r.get("load_client_cpu_pct_per_process"),
        "server_rss_mb_peak": r.get("server_rss_mb_peak"),
        "other_cpu_pct": r.get("other_cpu_pct"),
        "noisy": r.get("noisy", False),
        "valid": r["valid"],
        "invalid_reason": r["invalid_reason"],
    }


def _workers_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' leg (the targets are its), else the last."""
    return next((r for r in rows if r.get("shape") == "workers"), rows[-1])


def _ratio_of(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def sticky_comparison(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the sticky leg saves against each round-robin-like leg (the workers', whose
    connections the kernel spreads, and the split nodes'): the ratio of the totals (CPU
    s per million deliveries; under 1: sticky costs less), of Redis's share and of the
    messages Redis relayed, and both legs' p95."""
    sticky = next((r for r in rows if r.get("node_placement") == "sticky"), None)
    if sticky is None:
        return None
    out: dict[str, Any] = {
        "leg": sticky["leg"],
        "sessions_by_node": sticky["sessions_by_node"],
        "sessions_spanning_nodes": sticky["sessions_spanning_nodes"],
        "against": {},
    }
    for other in rows:
        if other is sticky or other["shape"] == "single":
            continue
        ratio = _ratio_of(
            sticky["cpu_s_per_million_deliveries"], other["cpu_s_per_million_deliveries"]
        )
        publishes = [(r["redis_bus"] or {}).get("publishes_per_s") for r in (other, sticky)]
        out["against"][other["leg"]] = {
            "cost_ratio": ratio,
            "saved_pct": round(100 * (1 - ratio), 1) if ratio is not None else None,
            "redis_cpu_s_per_million": [
                other["redis_cpu_s_per_million"],
                sticky["redis_cpu_s_per_million"],
            ],
            "redis_publishes_per_s": publishes,
            "p95_ms": [other["latency_ms"]["p95"], sticky["latency_ms"]["p95"]],
        }
    return out


def cluster_summary(sc: Scenario, legs: list[dict[str, Any]], *, quick: bool) -> dict[str, Any]:
    single = legs[0].get("server_cpu_s_per_million_deliveries")
    rows = [_leg_row(r, single) for r in legs]
    cluster = _workers_row(rows)
    p95 = cluster["latency_ms"]["p95"]
    full_size = sc.participants >= TARGET_PARTICIPANTS and not quick
    targets = {
        "leg": cluster["leg"],
        "full_size": full_size,
        "p95_at_most_ms": P95_TARGET_MS,
        "p95_met": p95 is not None and p95 <= P95_TARGET_MS,
        "delivery_met": cluster["delivery_ratio"] == 1.0,
        "cost_budget": COST_BUDGET,
        "cost_ratio": cluster["cost_ratio"],
        "cost_met": cluster["cost_ratio"] is not None and cluster["cost_ratio"] <= COST_BUDGET,
    }
    return {
        "scenario": "cluster",
        "title": f"{sc.participants:,} participants: 1 process against "
        + and_list([r["leg"] for r in legs[1:]]),
        "started_at": legs[0]["started_at"],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {
            "sessions": sc.sessions,
            "per_session": sc.per_session,
            "interval_s": sc.interval_s,
            "duration_s": sc.duration_s,
            "quick": quick,
            "server_settings": legs[0].get("server_settings") or {},
            "flush_window": flush_window_label(legs[0].get("server_settings") or {}),
        },
        "machine": legs[0]["machine"],
        "versions": legs[0]["versions"],
        "legs": rows,
        "targets": targets,
        "sticky": sticky_comparison(rows),
    }


def flush_window_label(settings: dict[str, str]) -> str:
    """``adaptive`` (the default pacer) or ``fixed at 100 ms``."""
    defaults = Config()
    window = settings.get("LOCSHARE_FLUSH_INTERVAL_MS", str(defaults.flush_interval_ms))
    low = settings.get("LOCSHARE_FLUSH_INTERVAL_MIN_MS", str(defaults.flush_interval_min_ms))
    high = settings.get("LOCSHARE_FLUSH_INTERVAL_MAX_MS", str(defaults.flush_interval_max_ms))
    if int(low) >= int(window) and int(high) <= int(window):
        return f"fixed at {window} ms"
    return f"adaptive, {min(int(low), int(window))}-{max(int(high), int(window))} ms"


def and_list(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]])) if items else ""


def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    return _report._f(value, digits, suffix)


def cluster_table(summary: dict[str, Any]) -> str:
    lines = [
        "| server | latency p50 / p95 / p99 (ms) | delivery | CPU s per million deliveries: "
        "total (processes + Redis) | per worker or node | Redis | ratio to 1 process | server CPU "
        "(% of one core) | Redis CPU | Redis: messages published / s | load client CPU "
        "(% of one core) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["legs"]:
        lat = r["latency_ms"]
        flags = "" if r["valid"] else " (INVALID)"
        flags += " (noisy)" if r.get("noisy") else ""
        per_worker = " / ".join(_f(v, 2) for v in r["cpu_s_per_million_by_worker"].values())
        publishes = (r.get("redis_bus") or {}).get("publishes_per_s")
        lines.append(
            f"| {r['leg']}{' (pinned)' if r['placement'] == 'pinned' else ''}{flags} | {_f(lat['p50'])} / {_f(lat['p95'])} / {_f(lat['p99'])} | "
            f"{_report._ratio(r['delivery_ratio'])} | {_f(r['cpu_s_per_million_deliveries'], 2)} | "
            f"{per_worker or '-'} | {_f(r['redis_cpu_s_per_million'], 2)} | "
            f"{_f(r['cost_ratio'], 2) if r['cost_ratio'] != 1 else '1.0'} | "
            f"{_f(r['server_cpu_pct'])} % | "
            f"{_f(r['redis_cpu_pct'], suffix=' %')} | {_f(publishes, 0)} | "
            f"{_f(r['load_client_cpu_core_pct'])} % |"
        )
    return "\n".join(lines) + "\n"


def targets_text(summary: dict[str, Any]) -> str:
    t = summary["targets"]
    cluster = _workers_row(summary["legs"])
    p95 = cluster["latency_ms"]["p95"]

    def verdict(met: bool) -> str:
        return ("met" if met else "not met") + ("" if t["full_size"] else " (not full size)")

    return (
        f"Against the targets ({cluster['leg']}): p95 {_f(p95)} ms, at most "
        f"{t['p95_at_most_ms']:g} ms: {verdict(t['p95_met'])}; delivery "
        f"{_report._ratio(cluster['delivery_ratio'])}, 1.0 wanted: {verdict(t['delivery_met'])}; "
        f"cost {_f(t['cost_ratio'], 2)} x one process's CPU per million deliveries, at most "
        f"{t['cost_budget']:g}: {verdict(t['cost_met'])}."
    )


def sticky_text(summary: dict[str, Any]) -> str:
    """What the sticky leg saves, one sentence per leg it is compared with; empty
    without a sticky leg."""
    sticky = summary.get("sticky")
    if not sticky:
        return ""
    split = " / ".join(str(n) for n in (sticky["sessions_by_node"] or {}).values())
    spanning = sticky["sessions_spanning_nodes"] or 0
    parts = [
        f"{sticky['leg']}: sessions per node {split or '-'}, "
        + (f"{spanning} spanning nodes." if spanning else "none spanning two nodes.")
    ]
    for other, c in sticky["against"].items():
        saved = c["saved_pct"]
        publishes = c["redis_publishes_per_s"]
        parts.append(
            f"Against {other}: {_f(c['cost_ratio'], 2)} x its CPU per million deliveries ("
            + (
                f"{_f(abs(saved))} % {'less' if saved >= 0 else 'more'}"
                if saved is not None
                else "-"
            )
            + f"), Redis {_f(c['redis_cpu_s_per_million'][1], 2)} against "
            f"{_f(c['redis_cpu_s_per_million'][0], 2)} CPU s per million, "
            f"{_f(publishes[1], 0)} against {_f(publishes[0], 0)} messages published a second, "
            f"p95 {_f(c['p95_ms'][1])} against {_f(c['p95_ms'][0])} ms."
        )
    return " ".join(parts)


def cluster_markdown(summary: dict[str, Any]) -> str:
    p = summary["params"]
    m = summary["machine"]
    legs = summary["legs"]
    lines = [
        f"# Cluster: {summary['title']}",
        "",
        f"Started {summary['started_at']} on {m['cpu_model']}, {m['cores']} cores, "
        f"{_speed.label(m)}; {p['sessions']} x {p['per_session']}, every {p['interval_s']:g} s, "
        f"{p['duration_s']:g} s active per leg"
        + (" (`--quick`: indicative only)" if p.get("quick") else "")
        + f"; flush window {p.get('flush_window', 'adaptive')}.",
        "",
        cluster_table(summary),
        targets_text(summary),
        "",
    ]
    if summary.get("sticky"):
        lines += [sticky_text(summary), ""]
    lines += [
        "## Per process",
        "",
        "| leg | process | CPU (% of one core) |",
        "| --- | --- | --- |",
    ]
    for r in legs:
        for role, pct in r["worker_cpu_pct"].items():
            lines.append(f"| {r['leg']} | {role} | {_f(pct)} % |")
        if r["redis_cpu_pct"] is not None:
            lines.append(f"| {r['leg']} | redis | {_f(r['redis_cpu_pct'])} % |")
    lines += [
        "",
        "## How to read this",
        "",
        "Every leg gets the same load from the same client"
        + (
            " in the same placement"
            if len({r["placement"] for r in legs}) == 1
            else f" ({legs[0]['placement']} for the first leg, shared for the others)"
        )
        + ": *shared* means nothing is pinned and the load client runs on the same cores, so"
        " its CPU is shown in the last column. The workers' connections are spread by the"
        " kernel (SO_REUSEPORT), as a round-robin load balancer would: every session has"
        " members on every worker, and each worker needs the other's positions. *sticky*: separate nodes"
        " on ports of their own, every member of a session on the node a hash of its id"
        " picks, so no session spans two nodes; *split*: the same nodes, member j of every"
        " session on node j mod N. *CPU s per million deliveries* is a process's CPU"
        " over the active phase divided by every location entry delivered, so the per-worker"
        " (or per-node) and Redis columns add up (with the supervisor's, near zero) to the"
        " total; the ratio is the total over the single process's. *Messages published*:"
        " Redis's own count of PUBLISH over the active phase (each node sends one message"
        " per channel bucket with traffic every 50 ms bus tick, whatever the number of"
        " updates, plus a heartbeat a second). The embedded PostgreSQL is idle while"
        " updates flow and is not counted. Delivery: see benchmarks/README.md.",
        "",
    ]
    for r in legs:
        lines.append(f"- {r['leg']}: details in [{r['key']}/report.md]({r['key']}/report.md)")
    return "\n".join(lines) + "\n"


def cluster_summary_line(r: dict[str, Any]) -> str:
    parts = []
    for leg in r["legs"]:
        lat = leg["latency_ms"]
        parts.append(
            f"{leg['leg']}: p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms, delivery "
            f"{leg['delivery_ratio']}, {leg['cpu_s_per_million_deliveries']} CPU s per million"
            + (f" (x{leg['cost_ratio']})" if leg["cost_ratio"] not in (None, 1.0) else "")
            + ("" if leg["valid"] else " INVALID")
        )
    return "; ".join(parts) + f"; {_speed.label(r['machine'])}"
