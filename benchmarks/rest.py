"""REST throughput and latency: session creation and joins.

    python -m benchmarks.rest [--target URL] [--sessions 200] [--concurrency 32] [--rate N]
                              [--workers N | --compare-workers N] [--quick]

Without ``--target`` a server is started (embedded database, pinned to one CPU) and
stopped afterwards; ``--workers N`` starts ``locshare serve --workers N`` instead (nothing
pinned), ``--compare-workers N`` one process and then N workers in the same run (both
unpinned), and reports the ratio of their requests per second.  The results are saved
like the other benchmarks' (``benchmarks/results/rest-<time>/results.json``).  Two phases: create ``--sessions`` sessions, then fill each with
``--per-session`` joins.  Closed loop by default (``--concurrency`` requests in flight:
the maximum throughput); with ``--rate`` an open loop at that many requests per second
(latency at a given load).  The client is a minimal HTTP/1.1 keep-alive client on trio
sockets, a few tens of microseconds per request, so the server is what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import psutil
import trio

from . import _report, _speed
from ._run import core_busy_s
from ._server import cores_shared, pin_self_to_load_cpus, placement, server_cpus, share_cores
from ._systems import LocshareSystem


class HttpConnection:
    """Just enough HTTP/1.1 for JSON request/response with Content-Length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        await self.stream.send_all(head + body)
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        header, _, rest = self.buffer.partition(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += await self._receive()
        self.buffer = rest[length:]
        return status, rest[:length]

    async def _fill(self) -> None:
        self.buffer += await self._receive()

    async def _receive(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        return bytes(data)


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def record(self, status: int, expected: int, ms: float) -> None:
        if status == expected:
            self.latencies_ms.append(ms)
        else:
            self.errors[status] = self.errors.get(status, 0) + 1

    def row(self) -> dict[str, float | str | int]:
        import numpy as np

        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([float("nan")])
        seconds = self.ended - self.started
        return {
            "phase": self.name,
            "requests": len(self.latencies_ms),
            "errors": sum(self.errors.values()),
            "req_per_s": round(len(self.latencies_ms) / seconds, 1) if seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(lat.max()), 2),
        }


async def run_phase(
    phase: Phase,
    host: str,
    port: int,
    jobs: list[tuple[str, str, bytes, int]],
    concurrency: int,
    rate: float | None,
) -> list[bytes]:
    results: list[bytes] = [b""] * len(jobs)
    next_job = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal next_job
        connection = HttpConnection(await trio.open_tcp_stream(host, port))
        try:
            while next_job < len(jobs):
                index = next_job
                next_job += 1
                if rate:
                    # Open loop: request i is due at start + i / rate, whether or not
                    # earlier ones have answered; latency counts from the due time.
                    due = start + index / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await trio.sleep(delay)
                    t0 = due
                else:
                    t0 = time.perf_counter()
                method, path, body, expected = jobs[index]
                status, payload = await connection.request(method, path, body)
                phase.record(status, expected, (time.perf_counter() - t0) * 1000)
                results[index] = payload
        finally:
            await connection.stream.aclose()

    phase.started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    phase.ended = time.perf_counter()
    return results


async def benchmark(
    base: str,
    sessions: int,
    per_session: int,
    concurrency: int,
    rate: float | None,
    snapshot: Callable[[], dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Create ``sessions``, then join ``per_session`` to each; one row per phase and
    one for both (``create + join``: all requests over both phases' time).  With
    ``snapshot`` (CPU counters, read between phases), each row gets the CPU seconds
    each counter advanced during it."""
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    marks = [snapshot() if snapshot else {}]
    create = Phase("create session")
    bodies = [orjson.dumps({"name": f"bench {i}", "max_participants": 50}) for i in range(sessions)]
    created = await run_phase(
        create, host, port, [("POST", "/api/sessions", b, 201) for b in bodies], concurrency, rate
    )
    marks.append(snapshot() if snapshot else {})
    ids = [orjson.loads(c)["session_id"] for c in created if c.startswith(b'{"session_id')]
    jobs = [
        ("POST", f"/api/sessions/{sid}/join", orjson.dumps({"display_name": f"rider {n}"}), 201)
        for n in range(per_session)
        for sid in ids
    ]
    join = Phase("join")
    await run_phase(join, host, port, jobs, concurrency, rate)
    marks.append(snapshot() if snapshot else {})
    both = Phase(
        "create + join",
        create.latencies_ms + join.latencies_ms,
        {
            k: create.errors.get(k, 0) + join.errors.get(k, 0)
            for k in {*create.errors, *join.errors}
        },
        0.0,
        (create.ended - create.started) + (join.ended - join.started),
    )
    rows: list[dict[str, Any]] = [create.row(), join.row(), both.row()]
    spans = [(marks[0], marks[1]), (marks[1], marks[2]), (marks[0], marks[2])]
    for row, (a, b) in zip(rows, spans, strict=True):
        for name in b:
            row[name] = round(max(0.0, b[name] - a[name]), 2)
        if "server_cpu_s" in row and row["requests"]:
            row["server_cpu_ms_per_request"] = round(
                1000 * float(row["server_cpu_s"]) / int(row["requests"]), 3
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r.get(h, ""))) for r in rows)) for h in headers]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(
            " | ".join(str(row.get(h, "")).ljust(w) for h, w in zip(headers, widths, strict=True))
        )


# The product documents' figure for the Rust route: requests per second at p95 < 50 ms
# (session creation and joins; the machine it was measured on is not stated).
RUST_REQ_PER_S: Final = 2000.0
RUST_P95_MS: Final = 50.0
SCALING_TARGET: Final = 1.7  # create + join through 2 workers, over one process
QUICK_SESSIONS: Final = 40
QUICK_PER_SESSION: Final = 25


def _cpu_counters(system: LocshareSystem) -> Callable[[], dict[str, float]]:
    """Cumulative CPU seconds: every server-side process (workers and Redis included),
    the database, this load client."""
    seen: dict[int, float] = {}  # pid -> last CPU: a process that went keeps its share

    def read() -> dict[str, float]:
        for proc in system.server_processes().values():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                seen[proc.pid] = t.user + t.system
        db = 0.0
        for proc in system.database_processes():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                db += t.user + t.system
        me = resource.getrusage(resource.RUSAGE_SELF)
        server, client = sum(seen.values()), me.ru_utime + me.ru_stime
        # Busy time of the server's CPUs not explained by the server, its database or
        # (when they share the cores) this client: other work on the machine.
        busy = core_busy_s(server_cpus()) or 0.0
        other = busy - server - db - (client if cores_shared() else 0.0)
        return {
            "server_cpu_s": server,
            "db_cpu_s": db,
            "client_cpu_s": client,
            "other_cpu_s": other,
        }

    return read


def run_leg(
    args: argparse.Namespace, workers: int, sessions: int, per_session: int
) -> dict[str, Any]:
    """One server shape: start it (unless ``--target``), run both phases, stop it."""
    if args.target:
        base = args.target.rstrip("/")
        rows = trio.run(benchmark, base, sessions, per_session, args.concurrency, args.rate)
        return {"workers": None, "target": base, "rows": rows}
    system = LocshareSystem(separate_db=args.separate_db, workers=workers)
    try:
        rows = trio.run(
            benchmark,
            system.base_url,
            sessions,
            per_session,
            args.concurrency,
            args.rate,
            _cpu_counters(system),
        )
        shape = system.shape()
    finally:
        system.stop()
    return {"workers": workers, "shape": shape, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--target", help="base URL of a running server (default: start one)")
    parser.add_argument("--sessions", type=int, default=None, help="default 200 (--quick: 40)")
    parser.add_argument("--per-session", type=int, default=None, help="default 50 (--quick: 25)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=None, help="open-loop requests per second")
    parser.add_argument(
        "--separate-db",
        action="store_true",
        help="PostgreSQL on the load CPUs, not sharing the server's core",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="locshare serve --workers N (shared cores)"
    )
    parser.add_argument(
        "--compare-workers",
        type=int,
        metavar="N",
        help="one process, then N workers, in this run (shared cores for both); the ratio",
    )
    parser.add_argument("--quick", action="store_true", help="40 sessions x 25 joins")
    parser.add_argument(
        "--out", type=Path, help="output directory (default benchmarks/results/rest-<time>)"
    )
    parser.add_argument(
        "--speed-repeats", type=int, help="runs of the speed reference (default 3; 0: none)"
    )
    args = parser.parse_args(argv)
    sessions = args.sessions or (QUICK_SESSIONS if args.quick else 200)
    per_session = args.per_session or (QUICK_PER_SESSION if args.quick else 50)
    if args.target and (args.compare_workers or args.workers > 1):
        parser.error("--workers/--compare-workers start their own servers: drop --target")
    _speed.reference(args.speed_repeats)  # before any server starts
    shapes = [1, args.compare_workers] if args.compare_workers else [args.workers]
    if max(shapes) > 1:
        share_cores()  # N workers cannot be held to one core: nothing is pinned
    pin_self_to_load_cpus()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    legs = []
    for workers in shapes:
        leg = run_leg(args, workers, sessions, per_session)
        legs.append(leg)
        print(f"\nREST benchmark, {_leg_label(leg)} ({_mode(args)})")
        print_table(leg["rows"])
    summary = rest_summary(legs, args, sessions, per_session, started)
    out = args.out or _report.default_out("rest")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(rest_markdown(summary))
    print()
    print(rest_table(summary))
    print(rest_note(summary))
    print(f"results: {out}")
    return 0


def _mode(args: argparse.Namespace) -> str:
    mode = (
        f"open loop at {args.rate:g}/s"
        if args.rate
        else f"closed loop, {args.concurrency} in flight"
    )
    if cores_shared():
        return mode + ", nothing pinned: server, PostgreSQL and client share every core"
    return mode + (
        ", PostgreSQL on the load CPUs"
        if args.separate_db
        else ", embedded PostgreSQL on the server's core"
    )


def _leg_label(leg: dict[str, Any]) -> str:
    if leg.get("target"):
        return f"against {leg['target']}"
    return "1 process" if leg["workers"] == 1 else f"{leg['workers']} workers"


def rest_summary(
    legs: list[dict[str, Any]],
    args: argparse.Namespace,
    sessions: int,
    per_session: int,
    started: str,
) -> dict[str, Any]:
    rows = []
    for leg in legs:
        both = leg["rows"][-1]
        rows.append({"leg": _leg_label(leg), **leg, "create_join": both})
    ratio = None
    if len(rows) == 2:
        a, b = rows[0]["create_join"]["req_per_s"], rows[1]["create_join"]["req_per_s"]
        ratio = round(b / a, 2) if a else None
    from ._run import machine

    return {
        "scenario": "rest",
        "title": "REST: session creation and joins",
        "started_at": started,
        "params": {
            "sessions": sessions,
            "per_session": per_session,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "mode": _mode(args),
            "quick": args.quick,
        },
        "placement": placement(),
        "machine": machine(),
        "legs": rows,
        "scaling_ratio": ratio,
        "scaling_target": SCALING_TARGET if ratio is not None else None,
        "rust_reference": {"req_per_s": RUST_REQ_PER_S, "p95_ms": RUST_P95_MS},
    }


def rest_table(summary: dict[str, Any]) -> str:
    lines = [
        "| server | create: req/s, p95 (ms) | join: req/s, p95 (ms) | create + join: req/s "
        "| create + join p50 / p95 / p99 (ms) | errors | server CPU ms per request | "
        "PostgreSQL CPU s | load client CPU s | other processes' CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    f = _report._f
    for leg in summary["legs"]:
        create, join, both = leg["rows"]
        lines.append(
            f"| {leg['leg']} | {f(create['req_per_s'])}, {f(create['p95_ms'])} | "
            f"{f(join['req_per_s'])}, {f(join['p95_ms'])} | {f(both['req_per_s'])} | "
            f"{f(both['p50_ms'])} / {f(both['p95_ms'])} / {f(both['p99_ms'])} | {both['errors']} | "
            f"{f(both.get('server_cpu_ms_per_request'), 2)} | {f(both.get('db_cpu_s'))} | "
            f"{f(both.get('client_cpu_s'))} | {f(both.get('other_cpu_s'))} |"
        )
    return "\n".join(lines) + "\n"


def rest_note(summary: dict[str, Any]) -> str:
    legs = summary["legs"]
    best = max(legs, key=lambda leg: leg["create_join"]["req_per_s"])
    both = best["create_join"]
    rust = summary["rust_reference"]
    text = ""
    ratio = summary.get("scaling_ratio")
    if ratio is not None:
        verdict = "met" if ratio >= summary["scaling_target"] else "not met"
        text += (
            f"{legs[1]['leg']} over {legs[0]['leg']}: {ratio:.2f}x the create + join requests/s "
            f"(target {summary['scaling_target']:g}x or more: {verdict}"
            + (", `--quick`: indicative" if summary["params"].get("quick") else "")
            + "). "
        )
    text += (
        f"Against the Rust figure of the product documents ({rust['req_per_s']:,.0f} requests/s "
        f"at p95 under {rust['p95_ms']:g} ms, machine not stated): {best['leg']} served "
        f"{both['req_per_s']:,.0f} requests/s at p95 {both['p95_ms']:,.1f} ms "
        f"({summary['params']['mode']}), {both['req_per_s'] / rust['req_per_s']:.0%} of it, on "
        f"{summary['machine']['cores']} cores with {_speed.label(summary['machine'])} (the issue's "
        "reference machine: 2.5-3.0 s)."
    )
    return text


def rest_markdown(summary: dict[str, Any]) -> str:
    p = summary["params"]
    return (
        f"# {summary['title']}\n\nStarted {summary['started_at']}; {p['sessions']} sessions, then "
        f"{p['per_session']} joins each; {p['mode']}.\n\n{rest_table(summary)}\n{rest_note(summary)}\n"
    )


def rest_summary_line(r: dict[str, Any]) -> str:
    parts = [
        f"{leg['leg']}: {leg['create_join']['req_per_s']} req/s, p95 {leg['create_join']['p95_ms']} ms"
        for leg in r["legs"]
    ]
    if r.get("scaling_ratio") is not None:
        parts.append(f"ratio {r['scaling_ratio']}")
    return "; ".join(parts) + f"; {_speed.label(r['machine'])}"


if __name__ == "__main__":
    raise SystemExit(main())
