"""``python -m benchmarks``: the locshare benchmark suite (see benchmarks/README.md).

python -m benchmarks run SCENARIO [--quick] [--target URL] [--out DIR] [--duration S]
python -m benchmarks compare [--quick] [--duration S]
python -m benchmarks report [--markdown | --update-readme README.md]
python -m benchmarks k6 [--quick]
python -m benchmarks wire      (cost of the load client's frame parsing)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._scenarios import FULL


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small and short: under a minute")
    parser.add_argument("--duration", type=float, help="active seconds (caps the full durations)")
    parser.add_argument(
        "--out", type=Path, help="output directory (default benchmarks/results/<name>-<time>)"
    )
    parser.add_argument("--workers", type=int, help="load processes (default: one per load CPU)")
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
    run.add_argument("--separate-db", action="store_true", help="PostgreSQL on the load CPUs")

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

        opts = RunOptions(
            quick=args.quick,
            target=args.target,
            server_pid=args.server_pid,
            out=args.out,
            duration_s=args.duration,
            workers=args.workers,
            sessions=args.sessions,
            per_session=args.per_session,
            interval_s=args.interval,
            separate_db=args.separate_db,
            progress=not args.no_progress,
        )
        out, result = run_scenario(args.scenario, opts)
        print(summary_line(result))
        print(f"results: {out}")
        return 0 if result.get("valid") or result.get("skipped") else 1
    if args.command == "compare":
        from ._compare import run_compare
        from ._run import RunOptions

        opts = RunOptions(
            quick=args.quick,
            out=args.out,
            duration_s=args.duration,
            workers=args.workers,
            progress=not args.no_progress,
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
            quick=args.quick, out=args.out, duration_s=args.duration, progress=not args.no_progress
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
    return (
        f"{r['scenario']}: {con['opened']}/{con['target']} connected, "
        f"p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms, delivery {r['delivery_ratio']}, "
        f"server CPU {r['server_cpu_pct']} %, RSS peak {r['server_rss_mb_peak']} MB "
        f"({r['rss_kb_per_connection']} KB/conn idle), client CPU {r['load_client_cpu_pct']} %, "
        f"valid={r['valid']}" + (f" ({r['invalid_reason']})" if r.get("invalid_reason") else "")
    )


if __name__ == "__main__":
    sys.exit(main())
