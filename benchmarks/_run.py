"""The controller: set a scenario up, drive the load workers, sample the server, and
turn it all into one result dict (the ``results.json`` of a run).

Timeline of a run (wall-clock times, one clock on one host):

1. Set-up: sessions are created and participants joined over REST (locshare), then
   the workers open every connection (``connect_ms``: TCP connect to ``session_state``
   received) and report ``ready``.  The server's RSS is read before and one second
   after: ``rss_kb_per_connection`` is the difference divided by the connections.
2. ``t0``: every worker starts sending; each participant at its own phase within the
   interval.  ``t_stop = t0 + duration``: sending stops.  ``t_end = t_stop + drain``:
   counting stops.  CPU figures are over ``[t0, t_end]``.
3. Graceful close: every connection says goodbye (close frame, DISCONNECT, QUIT) and
   waits for the server's answer (``close_ms``).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import trio

from . import _load
from ._scenarios import Scenario
from ._server import (
    cores_shared,
    load_cpus,
    pin_self_to_load_cpus,
    placement,
    server_cpus,
    server_settings,
)
from ._systems import System, redis_counters

CLIENT_CPU_LIMIT_PCT = 80.0
# Above this share of the server's core used by other processes, a run is marked noisy.
NOISY_OTHER_PCT = 5.0
SAMPLE_S = 1.0
READY_TIMEOUT_S = 600.0


@dataclass
class RunOptions:
    quick: bool = False
    target: str | None = None
    server_pid: int | None = None
    out: Path | None = None
    duration_s: float | None = None
    workers: int | None = None
    sessions: int | None = None
    per_session: int | None = None
    interval_s: float | None = None
    separate_db: bool = False
    progress: bool = True
    server_workers: int = 1  # locshare serve --workers N
    nodes: int | None = None  # separate locshare serve processes linked by one Redis
    # (None: the scenario's own, 2 for node-kill and partition, else 1)
    node_placement: str = "shared"  # with nodes: shared ports, sticky or split (_nodes.py)
    speed_repeats: int | None = None  # runs of the speed reference (0: not measured)
    participants: int | None = None  # realistic: participants (regrouped by its power law)
    compare_fixed: bool = False  # realistic: a second leg whose clients send every 2 s


def default_workers(connections: int) -> int:
    """One worker per load CPU; at least two once there are many connections (they
    then share a core on a 2-CPU machine, but each stays a small, lively loop)."""
    cpus = len(load_cpus())
    return max(cpus, 2 if connections >= 2000 else 1)


# --- set-up over REST ----------------------------------------------------------------
@dataclass
class SessionSetup:
    index: int
    session_id: str
    members: list[tuple[str, str]]  # (user_id, websocket url with token)


async def create_sessions(
    base_url: str,
    sessions: int,
    per_session: int,
    concurrency: int = 32,
    sizes: list[int] | None = None,
) -> list[SessionSetup]:
    """Create ``sessions`` sessions (capacity 50) and join ``per_session`` to each
    (``sizes``: instead, one session per entry with that many members)."""
    from urllib.parse import urlsplit

    from .rest import HttpConnection

    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sizes = [per_session] * sessions if sizes is None else sizes
    sessions = len(sizes)
    out: list[SessionSetup | None] = [None] * sessions
    jobs: list[tuple[int, int]] = []  # (session, member) after creation

    async def request(http: HttpConnection, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(5):
            status, answer = await http.request("POST", path, orjson.dumps(body))
            if status in (200, 201):
                result: dict[str, Any] = orjson.loads(answer)
                return result
            if status not in (429, 503) or attempt == 4:
                raise RuntimeError(f"POST {path}: HTTP {status} {answer[:200]!r}")
            await trio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def worker(queue: list[tuple[str, int, int]]) -> None:
        stream = await trio.open_tcp_stream(host, port)
        http = HttpConnection(stream)
        try:
            while queue:
                kind, s, _ = queue.pop()
                if kind == "create":
                    made = await request(
                        http, "/api/sessions", {"name": f"bench {s}", "max_participants": 50}
                    )
                    out[s] = SessionSetup(s, made["session_id"], [])
                else:
                    setup = out[s]
                    assert setup is not None
                    joined = await request(
                        http,
                        f"/api/sessions/{setup.session_id}/join",
                        {"display_name": f"rider {len(setup.members)}"},
                    )
                    url = f"{joined['websocket_url']}?token={joined['websocket_token']}"
                    setup.members.append((joined["user_id"], url))
        finally:
            await stream.aclose()

    creates = [("create", s, 0) for s in range(sessions)]
    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, sessions)):
            nursery.start_soon(worker, creates)
    joins = [
        ("join", s, m)
        for m in range(max(sizes, default=0))
        for s in range(sessions)
        if m < sizes[s]
    ]
    joins.reverse()  # pop() from the end: sessions fill round-robin
    del jobs
    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, len(joins))):
            nursery.start_soon(worker, joins)
    result = [s for s in out if s is not None]
    for setup in result:
        setup.members.sort()  # order-independent of the joining race
    return result


def plan_participants(
    setups: list[SessionSetup], decode_fraction: float
) -> list[_load.Participant]:
    step = max(1, round(1 / decode_fraction)) if decode_fraction > 0 else 0
    out: list[_load.Participant] = []
    for setup in setups:
        for j, (user_id, url) in enumerate(setup.members):
            decode = bool(step) and j % step == 0
            out.append(
                _load.Participant(
                    len(out), setup.index, user_id, url, decode=decode, session_id=setup.session_id
                )
            )
    return out


# --- sampling ----------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    server_cpu_s: float | None  # every server-side process (Redis included), cumulative
    server_rss: int | None  # summed over them
    db_cpu_s: float | None
    client_cpu_s: list[float]  # per worker, then the controller
    server_wait_s: float | None = None  # runnable but waiting for a CPU (run queue)
    core_busy_s: float | None = None  # the server CPUs' busy time, all processes
    roles: dict[str, tuple[float, int | None]] = field(default_factory=dict)  # cpu_s, rss
    shared: bool = False  # the server CPUs are the load's too (cores_shared())


def core_busy_s(cpus: list[int]) -> float | None:
    """Seconds these CPUs were busy since boot: everything but idle and iowait, steal
    included (a VM's neighbours take CPU too)."""
    if not cpus:
        return None
    try:
        per_cpu = psutil.cpu_times(percpu=True)
        times = [per_cpu[cpu] for cpu in cpus]
    except (IndexError, OSError):
        return None
    return sum(
        float(sum(t))
        - float(t.idle)
        - getattr(t, "iowait", 0.0)
        - getattr(t, "guest", 0.0)
        - getattr(t, "guest_nice", 0.0)
        for t in times
    )


def runqueue_wait_s(pid: int) -> float | None:
    """Seconds the main thread of ``pid`` (the event loop) spent runnable but not
    running (``/proc/<pid>/task/<pid>/schedstat``, second field, nanoseconds): CPU
    taken by other processes on its core, plus the wake-up latency of a process that
    sleeps between events (a few microseconds per wake-up)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _RoleClock:
    """CPU and run-queue wait of one role, kept across its process being replaced
    (a restarted server or worker) and after it is gone (a killed node)."""

    pid: int | None = None
    base_cpu: float = 0.0
    last_cpu: float = 0.0
    base_wait: float = 0.0
    last_wait: float = 0.0

    @property
    def cpu(self) -> float:
        return self.base_cpu + self.last_cpu

    @property
    def wait(self) -> float:
        return self.base_wait + self.last_wait


class Sampler:
    """CPU and RSS of every server-side process (by role: see
    :meth:`System.server_processes`), its embedded database, the workers and this
    controller."""

    def __init__(self, system: System, workers: list[int]) -> None:
        self.system = system
        self.workers = [psutil.Process(pid) for pid in workers]
        self.me = psutil.Process()
        self.roles: dict[str, _RoleClock] = {}
        self.db: list[psutil.Process] = []
        self.db_checked = 0.0
        self.lock = threading.Lock()

    def sample(self) -> Sample:
        with self.lock:
            return self._sample()

    def _sample(self) -> Sample:
        now = time.time()
        rss_now: dict[str, int] = {}
        for role, proc in self.system.server_processes().items():
            clock = self.roles.setdefault(role, _RoleClock())
            if proc.pid != clock.pid:
                clock.base_cpu += clock.last_cpu
                clock.base_wait += clock.last_wait
                clock.pid = proc.pid
                clock.last_cpu = clock.last_wait = 0.0
            try:
                times = proc.cpu_times()
                clock.last_cpu = times.user + times.system
                rss_now[role] = proc.memory_info().rss
            except psutil.Error:
                pass
            clock.last_wait = runqueue_wait_s(proc.pid) or clock.last_wait
        cpu = sum(c.cpu for c in self.roles.values()) if self.roles else None
        wait_s = sum(c.wait for c in self.roles.values()) if self.roles else None
        rss = sum(rss_now.values()) if rss_now else None
        roles = {role: (c.cpu, rss_now.get(role)) for role, c in self.roles.items()}
        if now - self.db_checked > 10 or not self.db:
            self.db = self.system.database_processes()
            self.db_checked = now
        db_cpu = None
        if self.db:
            db_cpu = 0.0
            for p in self.db:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    db_cpu += t.user + t.system
        clients = []
        for p in [*self.workers, self.me]:
            try:
                t = p.cpu_times()
                clients.append(t.user + t.system)
            except psutil.Error:
                clients.append(math.nan)
        return Sample(
            now,
            cpu,
            rss,
            db_cpu,
            clients,
            wait_s,
            core_busy_s(server_cpus()),
            roles,
            cores_shared(),
        )


def server_rss(system: System) -> int | None:
    """RSS of every server-side process, summed."""
    total = None
    for proc in system.server_processes().values():
        with contextlib.suppress(psutil.Error):
            total = (total or 0) + proc.memory_info().rss
    return total


# --- driving the workers ---------------------------------------------------------------
@dataclass
class Event:
    at_s: float  # after t0
    name: str
    action: Callable[[], None]
    background: bool = False


@dataclass
class RunData:
    """Everything measured, before summarizing."""

    scenario: Scenario
    system: System
    participants: list[_load.Participant]
    workers: int
    ready: list[dict[str, Any]] = field(default_factory=list)
    done: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    latency: list[np.ndarray[Any, np.dtype[np.float32]]] = field(default_factory=list)
    rss_before: int | None = None
    rss_idle: int | None = None
    t_setup: float = 0.0
    t_ready: float = 0.0
    t0: float = 0.0
    t_stop: float = 0.0
    t_end: float = 0.0
    at_t0: Sample | None = None
    at_end: Sample | None = None
    peak_rss: int = 0
    peak_rss_roles: dict[str, int] = field(default_factory=dict)
    events: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    server_metrics: dict[str, Any] = field(default_factory=dict)
    # realistic: position ages on the viewers' screens, binned (benchmarks._realistic)
    age_hist: np.ndarray[Any, np.dtype[np.int64]] | None = None
    redis_at_t0: dict[str, int] = field(default_factory=dict)  # cluster shapes' Redis
    redis_at_end: dict[str, int] = field(default_factory=dict)


class Progress:
    """One line rewritten in place on a TTY, a line every 10 s otherwise."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"[{self.label}] {text}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line[:200])
            sys.stderr.flush()
        elif time.monotonic() - self.last_line >= 10:
            self.last_line = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\x1b[2K")
        print(f"[{self.label}] {text}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def drive(
    sc: Scenario,
    system: System,
    participants: list[_load.Participant],
    *,
    workers: int,
    churn: list[_load.ChurnSlot] | None = None,
    events: list[Event] | None = None,
    on_sample: Callable[[float], None] | None = None,
    progress: Progress,
    buckets: bool = False,
    customize: Callable[[_load.WorkerPlan, int], _load.WorkerPlan] | None = None,
) -> RunData:
    """Run the load: ``customize(plan, workers)`` may amend each worker's plan."""
    pin_self_to_load_cpus()
    data = RunData(sc, system, participants, workers)
    data.t_setup = time.time()
    shards: list[list[_load.Participant]] = [[] for _ in range(workers)]
    for p in participants:
        shards[p.index % workers].append(p)
    churn_shards: list[list[_load.ChurnSlot]] = [[] for _ in range(workers)]
    for i, slot in enumerate(churn or []):
        churn_shards[i % workers].append(slot)
    rosters: dict[int, list[str]] = {}
    for p in participants:
        rosters.setdefault(p.session, []).append(p.user_id)
    # Distinct node addresses (partition): count deliveries per pair of nodes.
    by_node = len({p.node for p in participants}) > 1
    node_of = {p.user_id: p.node for p in participants} if by_node else {}
    per_worker_rate = (
        sc.participants / sc.connect_within_s / workers if sc.connect_within_s else None
    )
    plans = [
        _load.WorkerPlan(
            worker=i,
            protocol=system.protocol,
            participants=shards[i],
            rosters={
                s: rosters[s]
                for s in {p.session for p in shards[i]} | {c.session for c in churn_shards[i]}
            },
            interval_s=sc.interval_s,
            connect_rate_per_s=per_worker_rate,
            reconnect=sc.reconnect,
            churn=churn_shards[i],
            base_url=system.base_url,
            buckets=buckets,
            seed=1000 + i,
            node_of=_nodes_of_sessions(node_of, participants, {p.session for p in shards[i]}),
        )
        for i in range(workers)
    ]
    if customize is not None:
        plans = [customize(plan, workers) for plan in plans]
    data.rss_before = server_rss(system)

    ctx = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    procs = []
    for plan in plans:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_load.worker_main, args=(plan, child), daemon=True)
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    sampler = Sampler(system, [p.pid for p in procs if p.pid is not None])
    ticks: list[_load.Tick | None] = [None] * workers
    pending_latency: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    pending_age: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    state: dict[str, list[tuple[int, Any]]] = {"ready": [], "done": [], "closed": []}
    last_sample: Sample | None = None
    next_sample = time.time()
    pending_events = sorted(events or [], key=lambda e: e.at_s)
    threads: list[threading.Thread] = []

    def pump(until: Callable[[], bool], timeout: float, phase: str) -> None:
        nonlocal last_sample, next_sample
        deadline = time.time() + timeout
        while not until():
            now = time.time()
            if now > deadline:
                raise TimeoutError(f"{phase}: workers did not finish in {timeout:.0f} s")
            for i, proc in enumerate(procs):
                if proc.exitcode not in (None, 0):
                    raise RuntimeError(f"worker {i} died with exit code {proc.exitcode}")
            ready = wait(pipes, timeout=max(0.0, min(0.1, next_sample - now)))
            for i, pipe in enumerate(pipes):
                if pipe not in ready:
                    continue
                try:
                    name, payload = pipe.recv()
                except EOFError:
                    continue
                if name == "tick":
                    ticks[i] = payload
                    if payload.latency_ms:
                        pending_latency.append(np.frombuffer(payload.latency_ms, dtype=np.float32))
                    if payload.age_ms:
                        pending_age.append(np.frombuffer(payload.age_ms, dtype=np.float32))
                else:
                    state[name].append((i, payload))
            now = time.time()
            while pending_events and data.t0 and now >= data.t0 + pending_events[0].at_s:
                event = pending_events.pop(0)
                data.events[event.name] = time.time()
                progress.note(f"{event.name} at t={now - data.t0:.1f} s")
                if event.background:
                    thread = threading.Thread(
                        target=_guarded(event.action, data.errors), daemon=True
                    )
                    thread.start()
                    threads.append(thread)
                else:
                    event.action()
            if now >= next_sample:
                next_sample = now + SAMPLE_S
                sample = sampler.sample()
                record(sample, last_sample)
                last_sample = sample
                if on_sample is not None and data.t0:
                    on_sample(now - data.t0)

    def record(sample: Sample, previous: Sample | None) -> None:
        live = [t for t in ticks if t is not None]
        lat = np.concatenate(pending_latency) if pending_latency else np.empty(0, np.float32)
        pending_latency.clear()
        if lat.size:
            data.latency.append(lat)
        if sample.server_rss:
            data.peak_rss = max(data.peak_rss, sample.server_rss)
        for role, (_, rss) in sample.roles.items():
            if rss:
                data.peak_rss_roles[role] = max(data.peak_rss_roles.get(role, 0), rss)
        dt = sample.t - previous.t if previous else 0.0
        row: dict[str, Any] = {
            "t_abs": sample.t,
            "phase": phase_name(sample.t),
            "connected": sum(t.connected for t in live),
            "opened": sum(t.opened for t in live),
            "failed": sum(t.failed for t in live),
            "sent": sum(t.sent for t in live),
            "entries": sum(t.entries for t in live),
            "frames": sum(t.frames for t in live),
            "reconnects": sum(t.reconnects for t in live),
            "latency_n": int(lat.size),
            "p50_ms": _pct(lat, 50),
            "p95_ms": _pct(lat, 95),
            "p99_ms": _pct(lat, 99),
            "server_rss_mb": round(sample.server_rss / 2**20, 1) if sample.server_rss else None,
            "server_cpu_pct": None,
            "server_wait_pct": None,
            "other_cpu_pct": None,
            "db_cpu_pct": None,
            "client_cpu_pct": None,
        }
        if previous and dt > 0:
            if sample.server_cpu_s is not None and previous.server_cpu_s is not None:
                row["server_cpu_pct"] = round(
                    100 * (sample.server_cpu_s - previous.server_cpu_s) / dt, 1
                )
            if sample.server_wait_s is not None and previous.server_wait_s is not None:
                row["server_wait_pct"] = round(
                    100 * (sample.server_wait_s - previous.server_wait_s) / dt, 1
                )
            others = _others(previous, sample)
            if others is not None:
                row["other_cpu_pct"] = round(100 * others / dt, 1)
            if sample.db_cpu_s is not None and previous.db_cpu_s is not None:
                row["db_cpu_pct"] = round(
                    max(0.0, 100 * (sample.db_cpu_s - previous.db_cpu_s) / dt), 1
                )
            used = [a - b for a, b in zip(sample.client_cpu_s, previous.client_cpu_s, strict=True)]
            row["client_cpu_pct"] = round(100 * float(np.nansum(used)) / dt, 1)
            if len(sample.roles) > 1:
                row["roles_cpu_pct"] = {
                    role: round(100 * (cpu - previous.roles.get(role, (cpu, None))[0]) / dt, 1)
                    for role, (cpu, _) in sample.roles.items()
                }
        if pending_age:
            from ._realistic import bin_ages

            ages = np.concatenate(pending_age)
            pending_age.clear()
            data.age_hist = bin_ages(ages, data.age_hist)
            row["age_n"] = int(ages.size)
            row["age_p50_s"] = round(float(np.percentile(ages, 50)) / 1000, 3)
            row["age_p95_s"] = round(float(np.percentile(ages, 95)) / 1000, 3)
        data.timeline.append(row)
        show(row)

    def phase_name(t: float) -> str:
        if not data.t0 or t < data.t0:
            return "setup"
        if t < data.t_stop:
            return "active"
        if t < data.t_end:
            return "drain"
        return "close"

    def show(row: dict[str, Any]) -> None:
        if row["phase"] == "setup":
            head = f"connecting {row['opened']}/{len(participants)} (failed {row['failed']})"
        else:
            head = f"t={row['t_abs'] - data.t0:.0f}/{sc.duration_s:.0f}s conns {row['connected']}/{len(participants)}"
        p95 = f"{row['p95_ms']:.1f} ms" if row["p95_ms"] is not None else "-"
        progress.show(
            f"{head} | sent {row['sent']} | recv {row['entries']} | p95 {p95} | "
            f"server {row['server_cpu_pct'] if row['server_cpu_pct'] is not None else '-'}% "
            f"{row['server_rss_mb'] or '-'} MB | client {row['client_cpu_pct'] or '-'}%"
        )

    try:
        pump(lambda: len(state["ready"]) == workers, READY_TIMEOUT_S, "connecting")
        data.t_ready = time.time()
        data.ready = [p for _, p in sorted(state["ready"], key=lambda x: x[0])]
        # Idle RSS: one second after the last connection, before any update.
        settle_until = time.time() + 1.0
        pump(lambda: time.time() >= settle_until, 10, "settling")
        data.rss_idle = server_rss(system)
        data.t0 = time.time() + 0.5
        data.t_stop = data.t0 + sc.duration_s
        data.t_end = data.t_stop + sc.drain_s
        for pipe in pipes:
            pipe.send(("start", (data.t0, data.t_stop, data.t_end)))
        pump(lambda: time.time() >= data.t0, 5, "starting")
        data.at_t0 = sampler.sample()
        redis = system.redis_address()
        if redis is not None:
            data.redis_at_t0 = redis_counters(redis)
        pump(lambda: len(state["done"]) == workers, sc.duration_s + sc.drain_s + 120, "running")
        data.at_end = sampler.sample()
        if redis is not None:
            data.redis_at_end = redis_counters(redis)
        data.done = [p for _, p in sorted(state["done"], key=lambda x: x[0])]
        data.server_metrics = _scrape_metrics(system)
        for pipe in pipes:
            pipe.send(("close", None))
        pump(lambda: len(state["closed"]) == workers, 60, "closing")
        data.closed = [p for _, p in sorted(state["closed"], key=lambda x: x[0])]
        for thread in threads:
            thread.join(timeout=60)
    finally:
        progress.done()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        for pipe in pipes:
            pipe.close()
    return data


def _nodes_of_sessions(
    node_of: dict[str, int], participants: list[_load.Participant], sessions: set[int]
) -> dict[str, int]:
    return (
        {p.user_id: node_of[p.user_id] for p in participants if p.session in sessions}
        if node_of
        else {}
    )


def _guarded(action: Callable[[], None], errors: list[str]) -> Callable[[], None]:
    def run() -> None:
        try:
            action()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    return run


def _pct(values: np.ndarray[Any, Any], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


def _scrape_metrics(system: System) -> dict[str, Any]:
    """Server-side counters from locshare's /metrics (unlabelled series only): flat for
    one process, by role where each process has its own address (partition's nodes),
    nothing where processes share a port."""
    if system.protocol != "locshare":
        return {}
    urls = system.metrics_urls()
    if list(urls) == ["server"]:
        return scrape_metrics(urls["server"])
    return {role: scrape_metrics(url) for role, url in urls.items()}


def scrape_metrics(base_url: str) -> dict[str, float]:
    import urllib.request

    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


# --- summarizing --------------------------------------------------------------------
def summarize(data: RunData) -> dict[str, Any]:
    sc = data.scenario
    participants = data.participants
    connect_ms: list[float] = []
    steady_open: Counter[int] = Counter()  # receivers that can receive: those connected
    errors: Counter[str] = Counter()
    for ready in data.ready:
        connect_ms.extend(ready["connect_ms"])
        steady_open.update({int(k): v for k, v in ready["steady_open"].items()})
        errors.update(ready["errors"])
    opened = len(connect_ms)
    done = data.done
    churn_connects = 0
    if done:  # cumulative, churn connections included
        errors = Counter()
        for d in done:
            errors.update(d["connect_errors"])
            connect_ms.extend(d["churn_connect_ms"])
            churn_connects += len(d["churn_connect_ms"])
    failed = sum(r["failed"] for r in data.ready)  # participants that never connected
    sent_by_session: Counter[int] = Counter()
    for d in done:
        sent_by_session.update({int(k): v for k, v in d["sent_by_session"].items()})
    expected = sum(n * steady_open[s] for s, n in sent_by_session.items())
    received = sum(d["steady_entries"] for d in done)
    # An update its own sender never saw echoed was, when no socket dropped, merged
    # into the sender's next one while the server was behind (one entry per
    # participant per frame, by design): none of its session's receivers got it.
    unconfirmed: Counter[int] = Counter()
    for d in done:
        unconfirmed.update({int(k): v for k, v in d["unconfirmed_by_session"].items()})
    superseded = sum(n * steady_open[s] for s, n in unconfirmed.items())
    updates_sent = sum(sent_by_session.values())
    delivered = sum(d["entries_all"] for d in done)
    frames = sum(d["frames_all"] for d in done)
    window = (data.at_end.t - data.at_t0.t) if data.at_end and data.at_t0 else sc.duration_s

    latency = np.concatenate(data.latency) if data.latency else np.empty(0, np.float32)
    result: dict[str, Any] = {
        "scenario": sc.name,
        "title": sc.title,
        "system": data.system.name,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(data.t_setup)),
        "params": {
            "sessions": sc.sessions,
            "per_session": sc.per_session,
            "interval_s": sc.interval_s,
            "duration_s": sc.duration_s,
            "drain_s": sc.drain_s,
            "decode_fraction": sc.decode_fraction,
            "connect_within_s": sc.connect_within_s,
            "churn_per_session": sc.churn_per_session,
            "fault_at_s": sc.fault_at_s,
            "workers": data.workers,
            "protocol": data.system.protocol,
            "notes": sc.notes,
        },
        "connections": {
            "target": len(participants),
            "opened": opened,
            "failed": failed,
            "failed_attempts": sum(errors.values()),
            "churn_opened": churn_connects,
            "errors": dict(errors),
        },
        "connect_ms": _stats(np.array(connect_ms)),
        "latency_ms": {
            "p50": _pct(latency, 50),
            "p95": _pct(latency, 95),
            "p99": _pct(latency, 99),
            "max": round(float(latency.max()), 2) if latency.size else None,
            "samples": int(latency.size),
        },
        "delivery_ratio": round(received / expected, 6) if expected else None,
        "delivery": {
            "expected": expected,
            "received": received,
            "lost": expected - received,
            "unconfirmed_updates": sum(unconfirmed.values()),
            "missing_explained_by_coalescing_at_most": min(superseded, expected - received),
            "definition": (
                "entries received by steady receivers / sum over updates sent of the "
                "steady receivers connected in the update's session (sender's echo included)"
            ),
        },
        "updates_sent": updates_sent,
        "messages_delivered": delivered,
        "frames_delivered": frames,
        "duration_s": round(window, 2),
        "isolation": _isolation(data),
    }
    result.update(_cpu(data, window, delivered))
    result["rss_kb_per_connection"] = (
        round((data.rss_idle - data.rss_before) / 1024 / opened, 2)
        if data.rss_idle and data.rss_before and opened
        else None
    )
    close_ms = [x for c in data.closed for x in c["close_ms"]]
    result["close_ms"] = _stats(np.array(close_ms))
    result["close_failures"] = sum(c["failures"] for c in data.closed)
    result["server_metrics"] = data.server_metrics
    result["redis_bus"] = _redis_bus(data, window)
    result["errors"] = data.errors
    for row in data.timeline:  # seconds since t0; negative during set-up
        row["t"] = round(row.pop("t_abs") - data.t0, 3) if "t_abs" in row else row["t"]
    result["timeline"] = data.timeline
    result["latency_cdf"] = _cdf(latency)
    result["connect_cdf"] = _cdf(np.array(connect_ms, dtype=np.float32))
    result["versions"] = versions(data.system)
    result["machine"] = machine()
    result["server_shape"] = data.system.shape()
    result["server_settings"] = server_settings()
    result["placement"] = placement()
    _validate(result)
    return result


def _stats(values: np.ndarray[Any, Any]) -> dict[str, float | None]:
    if not values.size:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "mean": round(float(values.mean()), 2),
        "p50": _pct(values, 50),
        "p95": _pct(values, 95),
        "p99": _pct(values, 99),
        "max": round(float(values.max()), 2),
    }


def _cdf(values: np.ndarray[Any, Any], points: int = 200) -> list[tuple[float, float]]:
    if not values.size:
        return []
    qs = np.linspace(0, 100, points + 1)
    return [
        (round(float(v), 3), round(float(q) / 100, 4))
        for q, v in zip(qs, np.percentile(values, qs), strict=True)
    ]


def _cpu(data: RunData, window: float, delivered: int) -> dict[str, Any]:
    a, b = data.at_t0, data.at_end
    out: dict[str, Any] = {
        "server_cpu_s": None,
        "server_cpu_pct": None,
        "server_wait_pct": None,
        "other_cpu_pct": None,
        "db_cpu_s": None,
        "server_rss_mb_peak": round(data.peak_rss / 2**20, 1) if data.peak_rss else None,
        "load_client_cpu_pct": None,
        "load_client_cpu_pct_per_process": [],
        "load_cpus": len(load_cpus()),
    }
    if a is None or b is None or window <= 0:
        return out
    if a.server_cpu_s is not None and b.server_cpu_s is not None:
        cpu = b.server_cpu_s - a.server_cpu_s
        out["server_cpu_s"] = round(cpu, 2)
        out["server_cpu_pct"] = round(100 * cpu / window, 1)
        if delivered:
            out["server_cpu_s_per_million_deliveries"] = round(cpu / delivered * 1e6, 2)
    if a.db_cpu_s is not None and b.db_cpu_s is not None:
        out["db_cpu_s"] = round(max(0.0, b.db_cpu_s - a.db_cpu_s), 2)
    others = _others(a, b)
    if others is not None:
        # CPU used on the server's core by processes other than the server and its
        # database: other jobs on the machine (and kernel work such as loopback).
        out["other_cpu_pct"] = round(100 * others / window, 1)
    if a.server_wait_s is not None and b.server_wait_s is not None:
        # CPU the server wanted but did not get: other processes on its core.
        out["server_wait_pct"] = round(100 * (b.server_wait_s - a.server_wait_s) / window, 1)
    per = [100 * (y - x) / window for x, y in zip(a.client_cpu_s, b.client_cpu_s, strict=True)]
    out["load_client_cpu_pct_per_process"] = [round(p, 1) for p in per]
    # Total, normalized to the cores the load may use (100 % = all of them busy).
    out["load_client_cpu_pct"] = round(float(np.nansum(per)) / max(1, len(load_cpus())), 1)
    # The same in % of one core (summed over the load processes): comparable with
    # the server side's figures when the cores are shared.
    out["load_client_cpu_core_pct"] = round(float(np.nansum(per)), 1)
    if len(b.roles) > 1:
        out.update(_roles_cpu(data, a, b, window, delivered))
    return out


def _roles_cpu(
    data: RunData, a: Sample, b: Sample, window: float, delivered: int
) -> dict[str, Any]:
    """Per server-side process (cluster shapes): CPU, its share of the deliveries' cost
    (``cpu_s_per_million_deliveries``: its CPU divided by *all* deliveries, so the
    roles add up to the total), peak RSS; Redis's own figures; locshare alone."""
    roles: dict[str, Any] = {}
    for role, (cpu_end, _) in b.roles.items():
        cpu = cpu_end - a.roles.get(role, (0.0, None))[0]
        peak = data.peak_rss_roles.get(role)
        roles[role] = {
            "cpu_s": round(cpu, 2),
            "cpu_pct": round(100 * cpu / window, 1),
            "cpu_s_per_million_deliveries": round(cpu / delivered * 1e6, 2) if delivered else None,
            "rss_mb_peak": round(peak / 2**20, 1) if peak else None,
        }
    out: dict[str, Any] = {"server_processes": roles}
    redis = roles.get("redis")
    if redis is not None:
        out["redis_cpu_s"] = redis["cpu_s"]
        out["redis_cpu_pct"] = redis["cpu_pct"]
        out["redis_cpu_s_per_million_deliveries"] = redis["cpu_s_per_million_deliveries"]
    locshare = sum(r["cpu_s"] for role, r in roles.items() if role != "redis")
    out["locshare_cpu_s"] = round(locshare, 2)
    out["locshare_cpu_pct"] = round(100 * locshare / window, 1)
    return out


def _redis_bus(data: RunData, window: float) -> dict[str, float] | None:
    """What Redis relayed over the measurement (cluster shapes), per second: messages
    published (the nodes' bus ticks and heartbeats), bytes in and out (out: every
    message once per subscribed node), commands."""
    a, b = data.redis_at_t0, data.redis_at_end
    if not a or not b or window <= 0:
        return None
    return {
        f"{name}_per_s": round((b[name] - a[name]) / window, 1)
        for name in sorted(a.keys() & b.keys())
    }


def _others(a: Sample, b: Sample) -> float | None:
    """CPU used on the server's CPUs by other processes: with shared placement the
    load client is on them too, so it is not counted as noise."""
    if None in (a.core_busy_s, b.core_busy_s, a.server_cpu_s, b.server_cpu_s):
        return None
    used = (b.server_cpu_s or 0.0) - (a.server_cpu_s or 0.0)
    if a.db_cpu_s is not None and b.db_cpu_s is not None:
        used += max(0.0, b.db_cpu_s - a.db_cpu_s)
    if b.shared:
        used += float(
            np.nansum([y - x for x, y in zip(a.client_cpu_s, b.client_cpu_s, strict=True)])
        )
    return max(0.0, (b.core_busy_s or 0.0) - (a.core_busy_s or 0.0) - used)


def _isolation(data: RunData) -> dict[str, Any]:
    """Every user id a receiver saw must belong to its own session.  Ids unknown to the
    worker (joined mid-run by another worker's churn) are checked against all rosters."""
    owner: dict[str, int] = {p.user_id: p.session for p in data.participants}
    for d in data.done:
        for s, ids in d["churn_ids"].items():
            for uid in ids:
                owner[uid] = int(s)
    violations = []
    for d in data.done:
        for s, ids in d["foreign"].items():
            for uid in ids:
                if owner.get(uid) != int(s):
                    violations.append(
                        {
                            "receiver_session": int(s),
                            "user_id": uid,
                            "owner_session": owner.get(uid),
                        }
                    )
    return {
        "checked_messages": sum(d["iso_checked"] for d in data.done),
        "violations": len(violations),
        "examples": violations[:5],
        "churn_connections": sum(d["churn_connections"] for d in data.done),
    }


def _validate(result: dict[str, Any]) -> None:
    reasons = []
    per = result.get("load_client_cpu_pct_per_process") or []
    if any(p > CLIENT_CPU_LIMIT_PCT for p in per if p == p):
        reasons.append(
            f"a load process used more than {CLIENT_CPU_LIMIT_PCT:.0f} % of a core ({max(per):.0f} %)"
        )
    total = result.get("load_client_cpu_pct")
    if total is not None and total > CLIENT_CPU_LIMIT_PCT:
        reasons.append(f"the load used {total:.0f} % of its {result['load_cpus']} core(s)")
    if result["errors"]:
        reasons.append("errors during the run: " + "; ".join(result["errors"]))
    result["valid"] = not reasons
    result["invalid_reason"] = "; ".join(reasons) or None
    others = result.get("other_cpu_pct")
    result["noisy"] = bool(others is not None and others > NOISY_OTHER_PCT)
    if result["noisy"]:
        result["noise_note"] = (
            f"other processes used {others:.0f} % of the server's core during the run "
            f"(the server waited {result.get('server_wait_pct')} % of the time for it): "
            "the figures understate what the server can do"
        )


def versions(system: System) -> dict[str, str]:
    import platform

    import trio as trio_module

    out = {
        "python": platform.python_version(),
        "trio": trio_module.__version__,
        "numpy": np.__version__,
        "os": platform.platform(),
        "system": f"{system.name} {system.version}".strip(),
    }
    with contextlib.suppress(ImportError):
        from locshare._version import __version__

        out["locshare"] = __version__
    out["locshare_source"] = locshare_source()
    out["cpu_model"] = machine()["cpu_model"]
    out["cores"] = str(os.cpu_count())
    return out


def locshare_source() -> str:
    """Which code the server ran: a checkout given by LOCSHARE_BENCH_SOURCE, or this
    repository's commit (``+dirty`` when locshare/ has uncommitted changes)."""
    import subprocess

    from ._server import SOURCE_ENV

    source = os.environ.get(SOURCE_ENV)
    if source:
        return f"{SOURCE_ENV}={source}"
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "locshare"], cwd=repo, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from . import _speed

    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "load_cpus": load_cpus(),
        "memory_mb": round(psutil.virtual_memory().total / 2**20),
        **_speed.reference(),
    }
