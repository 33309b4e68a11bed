"""``python -m benchmarks``: the locshare benchmark suite (see benchmarks/README.md).

python -m benchmarks run SCENARIO [--quick] [--target URL] [--out DIR] [--duration S]
                                  [--workers N | --nodes N [--sticky | --split]]
python -m benchmarks run realistic [--quick] [--participants N] [--compare-fixed]
python -m benchmarks cluster [--quick] [--duration S] [--workers N] [--sticky] [--split]
                             [--unaffine]
                             [--fixed-window]
python -m benchmarks compare [--quick] [--duration S] [--workers N]
python -m benchmarks report [--markdown | --update-readme README.md]
python -m benchmarks k6 [--quick] [--workers N]
python -m benchmarks wire      (cost of the load client's frame parsing)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._scenarios import FULL


def _common(parser: argparse.ArgumentParser, *, server_workers: bool = True) -> None:
    parser.add_argument("--quick", action="store_true", help="small and short: under a minute")
    parser.add_argument("--duration", type=float, help="active seconds (caps the full durations)")
    parser.add_argument(
        "--out", type=Path, help="output directory (default benchmarks/results/<name>-<time>)"
    )
    if server_workers:
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="locshare serve --workers N (a supervisor, N workers, a private Redis; "
            "nothing pinned: server and load share every core)",
        )
    parser.add_argument(
        "--load-workers", type=int, help="load processes (default: one per load CPU)"
    )
    parser.add_argument(
        "--speed-repeats",
        type=int,
        help="runs of the speed reference loop (default 3, best kept; 0: not measured)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress line")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one scenario")
    run.add_argument("scenario", choices=sorted(FULL))
    _common(run)
    run.add_argument("--target", help="base URL of a running locshare (default: start one)")
    run.add_argument(
        "--server-pid", type=int, help="with --target: sample this process's CPU and RSS"
    )
    run.add_argument("--sessions", type=int, help="override the number of sessions")
    run.add_argument("--per-session", type=int, help="override participants per session")
    run.add_argument("--interval", type=float, help="override seconds between updates")
    run.add_argument(
        "--participants",
        type=int,
        help="realistic: override the participants (grouped by its power law)",
    )
    run.add_argument(
        "--compare-fixed",
        action="store_true",
        help="realistic: then the same workload with clients that ignore update_interval "
        "and send every 2 s (the clients before issue 15), against a fresh server; "
        "both legs and the ratios in one report",
    )
    run.add_argument("--separate-db", action="store_true", help="PostgreSQL on the load CPUs")
    run.add_argument(
        "--nodes",
        type=int,
        help="N separate locshare serve processes on the same ports (SO_REUSEPORT), one "
        "Redis and one PostgreSQL started here (node-kill, partition: 2)",
    )
    placement = run.add_mutually_exclusive_group()
    placement.add_argument(
        "--sticky",
        dest="node_placement",
        action="store_const",
        const="sticky",
        default="shared",
        help="with --nodes: each node on ports of its own, every participant of a session "
        "on the node a hash of the session id picks (no session spans two nodes)",
    )
    placement.add_argument(
        "--split",
        dest="node_placement",
        action="store_const",
        const="split",
        help="with --nodes: each node on ports of its own, member j of every session on "
        "node j mod N (every session spans every node)",
    )

    cluster = sub.add_parser(
        "cluster",
        help="the same convoy-10k load against 1 process, then against N workers, one table",
    )
    _common(cluster, server_workers=False)
    cluster.add_argument(
        "--workers", type=int, default=2, help="workers of the second leg (default 2)"
    )
    cluster.add_argument("--sessions", type=int, help="override the number of sessions")
    cluster.add_argument("--per-session", type=int, help="override participants per session")
    cluster.add_argument("--interval", type=float, help="override seconds between updates")
    cluster.add_argument(
        "--single-pinned",
        action="store_true",
        help="pin the 1-process leg as `run` does (server on the first CPU, load on the "
        "other) instead of sharing the cores like the workers' leg",
    )
    cluster.add_argument(
        "--sticky",
        action="store_true",
        help="a third leg: as many separate nodes as workers, on ports of their own, every "
        "participant of a session on one node (a hash of the session id), one Redis",
    )
    cluster.add_argument(
        "--fixed-window",
        action="store_true",
        help="every server's flush window fixed at flush_interval_ms (100 ms) instead of "
        "following the load: the legs' CPU per delivery then compare at the same batching",
    )
    cluster.add_argument(
        "--unaffine",
        action="store_true",
        help="one more leg: the workers without session affinity (worker-affinity none:"
        " every session split over the workers, as before the hand-over)",
    )
    cluster.add_argument(
        "--split",
        action="store_true",
        help="one more leg: the same nodes, member j of every session on node j mod N "
        "(the control for --sticky: only the placement differs)",
    )

    compare = sub.add_parser("compare", help="locshare against reference systems, same workload")
    _common(compare)
    compare.add_argument(
        "--systems",
        default="locshare,ws,mqtt,redis",
        help="comma-separated subset of locshare,ws,mqtt,redis",
    )

    report = sub.add_parser("report", help="the README results table from the latest saved results")
    report.add_argument("--markdown", action="store_true", help="markdown (for the README)")
    report.add_argument(
        "--update-readme",
        metavar="PATH",
        help="write the markdown tables between the benchmark markers of PATH (README.md)",
    )
    report.add_argument(
        "--results", type=Path, help="results directory (default benchmarks/results)"
    )

    k6 = sub.add_parser("k6", help="the baseline scenario through k6 (benchmarks/k6/baseline.js)")
    _common(k6)

    sub.add_parser("wire", help="cost per frame of the hand-rolled parser versus wsproto")

    args = parser.parse_args(argv)
    if args.command == "run":
        from ._commands import run_scenario
        from ._run import RunOptions

        if args.workers > 1 and (args.nodes or 1) > 1:
            parser.error("--workers and --nodes are two different shapes: pick one")
        if args.node_placement != "shared" and (args.nodes or 1) < 2:
            parser.error(f"--{args.node_placement} places participants on nodes: add --nodes N")
        opts = RunOptions(
            quick=args.quick,
            target=args.target,
            server_pid=args.server_pid,
            out=args.out,
            duration_s=args.duration,
            workers=args.load_workers,
            sessions=args.sessions,
            per_session=args.per_session,
            interval_s=args.interval,
            separate_db=args.separate_db,
            progress=not args.no_progress,
            server_workers=args.workers,
            nodes=args.nodes,
            node_placement=args.node_placement,
            speed_repeats=args.speed_repeats,
            participants=args.participants,
            compare_fixed=args.compare_fixed,
        )
        out, result = run_scenario(args.scenario, opts)
        print(summary_line(result))
        print(f"results: {out}")
        return 0 if result.get("valid") or result.get("skipped") else 1
    if args.command == "cluster":
        from ._cluster import run_cluster
        from ._run import RunOptions

        opts = RunOptions(
            quick=args.quick,
            out=args.out,
            duration_s=args.duration,
            workers=args.load_workers,
            sessions=args.sessions,
            per_session=args.per_session,
            interval_s=args.interval,
            progress=not args.no_progress,
            server_workers=args.workers,
            speed_repeats=args.speed_repeats,
        )
        out, summary = run_cluster(
            opts,
            single_pinned=args.single_pinned,
            sticky=args.sticky,
            split=args.split,
            unaffine=args.unaffine,
            fixed_window=args.fixed_window,
        )
        print(summary_line(summary))
        print(f"results: {out}")
        return 0 if all(leg.get("valid") for leg in summary["legs"]) else 1
    if args.command == "compare":
        from ._compare import run_compare
        from ._run import RunOptions

        opts = RunOptions(
            quick=args.quick,
            out=args.out,
            duration_s=args.duration,
            workers=args.load_workers,
            progress=not args.no_progress,
            server_workers=args.workers,
            speed_repeats=args.speed_repeats,
        )
        out = run_compare(opts, args.systems.split(","))
        print(f"results: {out}")
        return 0
    if args.command == "report":
        from . import _report

        results = _report.latest_results(args.results or _report.RESULTS_DIR)
        if args.update_readme:
            from locshare._cli import replace_marked

            table = _report.readme_table(results)
            if not replace_marked(
                args.update_readme, _report.README_START, _report.README_END, table
            ):
                print(f"{args.update_readme} has no benchmark markers", file=sys.stderr)
                return 2
            return 0
        if args.markdown:
            print(_report.readme_table(results), end="")
        else:
            for name, r in results.items():
                print(f"{name:12} {r['_path']}\n    {summary_line(r)}")
        return 0
    if args.command == "k6":
        from ._k6 import run_k6
        from ._run import RunOptions

        opts = RunOptions(
            quick=args.quick,
            out=args.out,
            duration_s=args.duration,
            workers=args.load_workers,
            progress=not args.no_progress,
            server_workers=args.workers,
            speed_repeats=args.speed_repeats,
        )
        out = run_k6(opts)
        print(f"results: {out}")
        return 0
    if args.command == "wire":
        from ._wire_bench import main as wire_main

        print(json.dumps(wire_main(), indent=2))
        return 0
    return 2


def summary_line(r: dict[str, object]) -> str:
    if r.get("skipped"):
        return f"{r['scenario']}: skipped ({r['skipped']})"
    if r.get("scenario") == "cluster":
        from ._cluster import cluster_summary_line

        return cluster_summary_line(r)
    if r.get("scenario") == "realistic":
        from ._realistic import summary_line as realistic_summary_line

        return realistic_summary_line(r)
    if r.get("scenario") == "rest":
        from .rest import rest_summary_line

        return rest_summary_line(r)
    if "latency_ms" not in r:  # compare and k6: one summary per system
        systems = r.get("systems")
        parts = (
            [(part.get("system"), part) for part in systems]
            if isinstance(systems, list)
            else [(r[k].get("tool"), r[k]) for k in ("k6", "ours") if isinstance(r.get(k), dict)]
        )
        return "; ".join(
            f"{name}: p95 {part['latency_ms']['p95']} ms, delivery {part['delivery_ratio']}"
            for name, part in parts
            if isinstance(part, dict) and isinstance(part.get("latency_ms"), dict)
        )
    lat = r["latency_ms"]
    con = r["connections"]
    assert isinstance(lat, dict) and isinstance(con, dict)
    from ._report import _short_shape
    from ._speed import label

    shape = _short_shape(r)
    line = (
        f"{r['scenario']}: {con['opened']}/{con['target']} connected, "
        f"p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms, delivery {r['delivery_ratio']}, "
        f"server CPU {r['server_cpu_pct']} %{f' ({shape})' if shape else ''}, "
        f"RSS peak {r['server_rss_mb_peak']} MB "
        f"({r['rss_kb_per_connection']} KB/conn idle), client CPU {r['load_client_cpu_pct']} %, "
        f"valid={r['valid']}" + (f" ({r['invalid_reason']})" if r.get("invalid_reason") else "")
    )
    kill = r.get("node_kill")
    if isinstance(kill, dict):
        line += (
            f"; {kill['killed_node']} killed: everyone receiving again after "
            f"{kill['recovery_s']} s, {kill['updates_lost_around_fault']} deliveries missed"
        )
    cut = r.get("partition")
    if isinstance(cut, dict):
        line += (
            f"; Redis link cut: same-node delivery {cut['same_node_delivery_during_cut']}, "
            f"cross-node {cut['cross_node_delivery_during_cut']}, normal again "
            f"{cut['recovered_after_heal_s']} s after the heal"
        )
    machine = r.get("machine")
    return line + (f"; {label(machine)}" if isinstance(machine, dict) else "")


if __name__ == "__main__":
    sys.exit(main())
