"""Outputs of a run: ``results.json``, ``report.md`` and the PNG plots; and the README
results table regenerated from the latest saved result of each scenario."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"
# Order of the README table.
SCENARIO_ORDER = ("baseline", "storm", "flood", "multi", "fault", "convoy-10k", "lossy")


def default_out(name: str) -> Path:
    return RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_run(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plots = plot_run(out, result)
    (out / "report.md").write_text(run_markdown(result, plots))


# --- formatting helpers --------------------------------------------------------------
def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value}{suffix}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return "1.0" if value == 1 else f"{value:.4f}"


def run_markdown(r: dict[str, Any], plots: list[str]) -> str:
    p = r["params"]
    lat = r["latency_ms"]
    con = r["connections"]
    lines = [
        f"# {r['title']}",
        "",
        f"Scenario `{r['scenario']}` against {r['system']}, started {r['started_at']}.",
        f"Machine: {r['machine']['cpu_model']}, {r['machine']['cores']} cores "
        f"({r['load_cpus']} for the load), {r['machine']['memory_mb']:,} MB.",
        "",
        f"**Valid: {'yes' if r['valid'] else 'NO'}**"
        + (f" ({r['invalid_reason']})" if r["invalid_reason"] else ""),
        "",
        *([f"**Noisy:** {r['noise_note']}.", ""] if r.get("noisy") else []),
        "| | |",
        "| --- | --- |",
        f"| workload | {p['sessions']} sessions x {p['per_session']}, every {p['interval_s']:g} s, "
        f"{p['duration_s']:g} s active + {p['drain_s']:g} s drain |",
        f"| connections | {con['opened']:,} opened of {con['target']:,}, {con['failed']} failed"
        + (f" ({con['errors']})" if con["errors"] else "")
        + " |",
        f"| connect time | mean {_f(r['connect_ms']['mean'])} ms, p50 {_f(r['connect_ms']['p50'])}, "
        f"p95 {_f(r['connect_ms']['p95'])}, p99 {_f(r['connect_ms']['p99'])} ms |",
        f"| latency (sender stamp to receipt) | p50 {_f(lat['p50'])} ms, p95 {_f(lat['p95'])} ms, "
        f"p99 {_f(lat['p99'])} ms, max {_f(lat['max'])} ms ({lat['samples']:,} samples) |",
        f"| delivery ratio | {_ratio(r['delivery_ratio'])} ({r['delivery']['received']:,} of "
        f"{r['delivery']['expected']:,} expected; {r['delivery']['lost']:,} missing"
        + (
            f"; {r['delivery']['unconfirmed_updates']:,} updates never came back to their own sender: "
            f"superseded by a newer position while the server or that client lagged, which accounts for "
            f"at most {r['delivery'].get('missing_explained_by_coalescing_at_most', 0):,} missing"
            if r["delivery"].get("missing_explained_by_coalescing_at_most")
            else ""
        )
        + ") |",
        f"| updates sent | {r['updates_sent']:,} |",
        f"| deliveries | {r['messages_delivered']:,} location entries in {r['frames_delivered']:,} frames |",
        f"| server CPU | {_f(r['server_cpu_s'], 2)} s over {_f(r['duration_s'])} s = "
        f"{_f(r['server_cpu_pct'])} % of one core"
        + (
            f"; embedded PostgreSQL {_f(r['db_cpu_s'], 2)} s"
            if r.get("db_cpu_s") is not None
            else ""
        )
        + " |",
        f"| server RSS | peak {_f(r['server_rss_mb_peak'])} MB; idle {_f(r['rss_kb_per_connection'], 2)} KB per connection |",
        f"| load client CPU | {_f(r['load_client_cpu_pct'])} % of its {r['load_cpus']} core(s); "
        f"per process {r['load_client_cpu_pct_per_process']} % (last: controller) |",
        f"| graceful close | {_f(r['close_ms']['p50'])} ms p50, {_f(r['close_ms']['p99'])} ms p99, "
        f"{r['close_failures']} failures |",
        f"| isolation | {r['isolation']['checked_messages']:,} messages checked, "
        f"{r['isolation']['violations']} violations |",
    ]
    extra = r.get("fault") or r.get("lossy")
    if extra:
        lines.append("")
        lines.append("## " + ("Fault" if "fault" in r else "Lossy link"))
        lines.append("")
        for key, value in extra.items():
            if key in ("timeline",):
                continue
            lines.append(f"- {key}: {value}")
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({name})" for name in plots]
    lines += [
        "",
        "## How to read this",
        "",
        "Latency is the time from the sender's stamp (taken just before the update is",
        "written to its socket) to the receipt of the frame carrying it, both read from",
        "the same clock; locshare batches a session's updates for up to one flush interval",
        "(100 ms) by design, so about 50 ms of the median is that wait. The delivery ratio",
        "counts every location entry that steady receivers got against what they should",
        "have got: each update, once, at every participant of its session, the sender's",
        "own echo included. See benchmarks/README.md.",
        "",
    ]
    return "\n".join(lines)


# --- plots ---------------------------------------------------------------------------
def plot_run(out: Path, r: dict[str, Any]) -> list[str]:
    try:
        import matplotlib
    except ModuleNotFoundError:
        print("matplotlib is not installed: no plots for this run (pip install -e '.[bench]')")
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = [row for row in r["timeline"] if row["phase"] != "setup"] or r["timeline"]
    t = [row["t"] for row in timeline]
    names: list[str] = []

    fig, ax = plt.subplots(figsize=(9, 4))
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax.plot(
            t, [row[key] if row[key] is not None else float("nan") for row in timeline], label=label
        )
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{r['scenario']}: latency percentiles per second")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, out / "latency_over_time.png", names)

    fig, ax = plt.subplots(figsize=(9, 4))
    if r["latency_cdf"]:
        xs, ys = zip(*r["latency_cdf"], strict=True)
        ax.plot(xs, ys, label="update latency")
    if r["connect_cdf"]:
        xs, ys = zip(*r["connect_cdf"], strict=True)
        ax.plot(xs, ys, label="connect time", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("ms (log)")
    ax.set_ylabel("fraction")
    ax.set_title(f"{r['scenario']}: latency and connect-time CDF")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, out / "latency_cdf.png", names)

    all_rows = r["timeline"]
    t_all = [row["t"] for row in all_rows]
    fig, ax1 = plt.subplots(figsize=(9, 4))
    ax1.plot(
        t_all,
        [_nan(row["server_cpu_pct"]) for row in all_rows],
        label="server CPU %",
        color="tab:red",
    )
    ax1.plot(
        t_all,
        [_nan(row["client_cpu_pct"]) for row in all_rows],
        label="load client CPU %",
        color="tab:gray",
        alpha=0.6,
    )
    if any(row.get("other_cpu_pct") for row in all_rows):
        ax1.plot(
            t_all,
            [_nan(row.get("other_cpu_pct")) for row in all_rows],
            label="other processes on the server core %",
            color="tab:brown",
            alpha=0.6,
        )
    if any(row.get("server_wait_pct") for row in all_rows):
        ax1.plot(
            t_all,
            [_nan(row.get("server_wait_pct")) for row in all_rows],
            label="server waiting for CPU %",
            color="tab:purple",
            alpha=0.6,
        )
    if any(row.get("db_cpu_pct") for row in all_rows):
        ax1.plot(
            t_all,
            [_nan(row["db_cpu_pct"]) for row in all_rows],
            label="database CPU %",
            color="tab:orange",
            alpha=0.6,
        )
    ax1.set_ylabel("CPU % of one core")
    ax1.set_xlabel("seconds since start (negative: set-up)")
    ax2 = ax1.twinx()
    ax2.plot(
        t_all,
        [_nan(row["server_rss_mb"]) for row in all_rows],
        label="server RSS MB",
        color="tab:blue",
    )
    ax2.set_ylabel("RSS (MB)")
    ax2.set_ylim(bottom=0)
    lines = ax1.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize="small")
    ax1.set_title(f"{r['scenario']}: server CPU and RSS")
    ax1.grid(alpha=0.3)
    _save(fig, out / "server_resources.png", names)

    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t_all, [row["connected"] for row in all_rows], label="connected")
    ax.plot(t_all, [row["failed"] for row in all_rows], label="failed", color="tab:red")
    if any(row["reconnects"] for row in all_rows):
        ax.plot(
            t_all,
            [row["reconnects"] for row in all_rows],
            label="reconnects (cumulative)",
            color="tab:green",
        )
    ax.set_xlabel("seconds since start (negative: set-up)")
    ax.set_ylabel("connections")
    ax.set_title(f"{r['scenario']}: connections")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, out / "connections.png", names)

    delivery = (r.get("lossy") or r.get("fault") or {}).get("timeline")
    if delivery:
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.step([d[0] for d in delivery], [d[1] for d in delivery], where="post")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("send time, seconds since start")
        ax.set_ylabel("delivery ratio")
        ax.set_title(f"{r['scenario']}: delivery ratio of the updates sent each second")
        ax.grid(alpha=0.3)
        _save(fig, out / "delivery_over_time.png", names)
    return names


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _save(fig: Any, path: Path, names: list[str]) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    names.append(path.name)


# --- the README table ------------------------------------------------------------------
def latest_results(root: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """The newest ``results.json`` of each scenario under ``root``."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("*/results.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        name = result.get("scenario")
        if not isinstance(name, str):
            continue
        result["_path"] = str(path.parent)
        if name not in latest or result.get("started_at", "") >= latest[name].get("started_at", ""):
            latest[name] = result
    return latest


def readme_table(results: dict[str, dict[str, Any]]) -> str:
    """The results table for the top-level README (markdown)."""
    rows = []
    machines = set()
    dates = []
    for name in SCENARIO_ORDER:
        r = results.get(name)
        if r is None:
            continue
        dates.append(r["started_at"][:10])
        m = r["machine"]
        machines.add(f"{m['cpu_model']}, {m['cores']} cores, {m['memory_mb']:,} MB")
        p = r["params"]
        lat = r["latency_ms"]
        workload = f"{p['sessions'] * p['per_session']:,} ({p['sessions']} x {p['per_session']}), every {p['interval_s']:g} s"
        if r.get("skipped"):
            rows.append(f"| {name} | {workload} | skipped: {r['skipped']} | | | | | | | |")
            continue
        extra = []
        delivery = r["delivery"]
        if name == "storm":
            extra.append(
                f"graceful close p50 {_f(r['close_ms']['p50'])} ms, {r['close_failures']} failed"
            )
        if r.get("fault", {}).get("recovery_s") is not None:
            f = r["fault"]
            extra.append(
                f"killed at {f['killed_at_s']:g} s, ready again {f['server_ready_at_s'] - f['killed_at_s']:.1f} s "
                f"later, everyone receiving again after {f['recovery_s']:.1f} s; "
                f"{f['updates_lost_around_fault']:,} deliveries missed around the fault, "
                f"{f['unconfirmed_updates']} updates unconfirmed; delivery column: outside the fault window"
            )
        if r.get("isolation", {}).get("violations"):
            extra.append(f"{r['isolation']['violations']} isolation violations")
        elif r["isolation"]["churn_connections"]:
            extra.append(
                f"+{r['connections'].get('churn_opened', 0):,} churn connections; "
                f"{r['isolation']['checked_messages']:,} messages checked, no isolation violation"
            )
        explained = delivery.get("missing_explained_by_coalescing_at_most") or 0
        if delivery["lost"] and explained and not r.get("fault"):
            share = (
                "all"
                if explained == delivery["lost"]
                else f"up to {explained:,} of {delivery['lost']:,}"
            )
            extra.append(
                f"missing deliveries: {share} are updates merged into their sender's next one "
                "while the server or a client lagged (latest position wins, by design)"
            )
        if (r.get("server_cpu_pct") or 0) >= 95:
            extra.append("server saturated")
        if r.get("noisy"):
            extra.append(
                f"noisy: other processes used {r['other_cpu_pct']:.0f} % of the server's core"
            )
        if r.get("lossy"):
            resumed = [b["delivery_resumed_after_s"] for b in r["lossy"]["bursts"]]
            extra.append(
                f"{r['lossy']['loss_each_way']:.0%} loss and +{r['lossy']['delay_ms_each_way']:g} ms each way "
                f"({r['lossy']['link']}); delivery resumed {resumed} s after the total-loss bursts; RSS slope "
                f"{r['lossy']['rss_slope_mb_per_min']} MB/min"
            )
        if not r["valid"]:
            extra.append("INVALID: " + (r["invalid_reason"] or ""))
        rows.append(
            f"| {name} | {workload} | {p['duration_s']:g} s | "
            f"{r['connections']['opened']:,}/{r['connections']['target']:,} | "
            f"{_f(r['connect_ms']['p95'])} | {_f(lat['p50'])} / {_f(lat['p95'])} / {_f(lat['p99'])} | "
            f"{_ratio(r['delivery_ratio'])} | {_f(r['server_cpu_pct'])} % | "
            f"{_f(r['server_rss_mb_peak'])} MB, {_f(r['rss_kb_per_connection'])} KB/conn | "
            f"{'; '.join(extra)} |"
        )
    if not rows:
        return "No saved results: run `python -m benchmarks run SCENARIO` first.\n"
    head = [
        f"Measured {min(dates) if min(dates) == max(dates) else min(dates) + ' to ' + max(dates)} on "
        f"{'; '.join(sorted(machines))}: server pinned to one core (embedded PostgreSQL on the same "
        "core), load client on the other. *active*: seconds of updates (the `--quick` sizes unless "
        "stated otherwise in benchmarks/README.md). Regenerate with `python -m benchmarks report --markdown`.",
        "",
        "| scenario | participants | active | connected | connect p95 (ms) | latency p50 / p95 / p99 (ms) "
        "| delivery | server CPU (one core) | server RSS | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    text = "\n".join(head + rows) + "\n"
    compare = results.get("compare")
    if compare is not None:
        from ._compare import compare_table

        p = compare["params"]
        text += (
            f"\nThe same workload ({p['sessions']} x {p['per_session']}, every {p['interval_s']:g} s, "
            f"{p['duration_s']:g} s) through the systems a user could pick instead "
            f"(`python -m benchmarks compare`, {compare['started_at'][:10]}):\n\n"
            + compare_table(compare)
        )
    k6 = results.get("k6")
    if k6 is not None:
        from ._k6 import k6_table

        text += (
            f"\n`baseline` through k6 and through this suite (`python -m benchmarks k6`, {k6['started_at'][:10]}):\n\n"
            + k6_table(k6)
        )
    return text
