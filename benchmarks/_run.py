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
from ._server import load_cpus, pin_self_to_load_cpus, server_cpu
from ._systems import System

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
    base_url: str, sessions: int, per_session: int, concurrency: int = 32
) -> list[SessionSetup]:
    """Create ``sessions`` sessions (capacity 50) and join ``per_session`` to each."""
    from urllib.parse import urlsplit

    from .rest import HttpConnection

    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
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
    joins = [("join", s, m) for m in range(per_session) for s in range(sessions)]
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
            out.append(_load.Participant(len(out), setup.index, user_id, url, decode=decode))
    return out


# --- sampling ----------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    server_cpu_s: float | None
    server_rss: int | None
    db_cpu_s: float | None
    client_cpu_s: list[float]  # per worker, then the controller
    server_wait_s: float | None = None  # runnable but waiting for a CPU (run queue)
    core_busy_s: float | None = None  # the server core's busy time, all processes


def core_busy_s(cpu: int | None) -> float | None:
    """Seconds one CPU was busy since boot: everything but idle and iowait, steal
    included (a VM's neighbours take CPU too)."""
    if cpu is None:
        return None
    try:
        t = psutil.cpu_times(percpu=True)[cpu]
    except (IndexError, OSError):
        return None
    return (
        float(sum(t))
        - t.idle
        - getattr(t, "iowait", 0.0)
        - getattr(t, "guest", 0.0)
        - getattr(t, "guest_nice", 0.0)
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


class Sampler:
    """CPU and RSS of the server (surviving a restart: CPU of the old process is kept),
    its embedded database, the workers and this controller."""

    def __init__(self, system: System, workers: list[int]) -> None:
        self.system = system
        self.workers = [psutil.Process(pid) for pid in workers]
        self.me = psutil.Process()
        self.pid: int | None = None
        self.base_cpu = 0.0
        self.last_cpu = 0.0
        self.base_wait = 0.0
        self.last_wait = 0.0
        self.db: list[psutil.Process] = []
        self.db_checked = 0.0
        self.lock = threading.Lock()

    def sample(self) -> Sample:
        with self.lock:
            return self._sample()

    def _sample(self) -> Sample:
        now = time.time()
        cpu: float | None = None
        rss: int | None = None
        wait_s: float | None = None
        proc = self.system.server_process()
        if proc is not None:
            if proc.pid != self.pid:
                if self.pid is not None:
                    self.base_cpu += self.last_cpu
                    self.base_wait += self.last_wait
                self.pid = proc.pid
                self.last_cpu = 0.0
                self.last_wait = 0.0
            try:
                times = proc.cpu_times()
                self.last_cpu = times.user + times.system
                rss = proc.memory_info().rss
            except psutil.Error:
                pass
            self.last_wait = runqueue_wait_s(proc.pid) or self.last_wait
            cpu = self.base_cpu + self.last_cpu
            wait_s = self.base_wait + self.last_wait
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
        return Sample(now, cpu, rss, db_cpu, clients, wait_s, core_busy_s(server_cpu()))


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
    events: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    server_metrics: dict[str, float] = field(default_factory=dict)


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
) -> RunData:
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
        )
        for i in range(workers)
    ]
    first = system.server_process()
    with contextlib.suppress(psutil.Error):
        data.rss_before = first.memory_info().rss if first else None

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
        idle = system.server_process()
        with contextlib.suppress(psutil.Error):
            data.rss_idle = idle.memory_info().rss if idle else None
        data.t0 = time.time() + 0.5
        data.t_stop = data.t0 + sc.duration_s
        data.t_end = data.t_stop + sc.drain_s
        for pipe in pipes:
            pipe.send(("start", (data.t0, data.t_stop, data.t_end)))
        pump(lambda: time.time() >= data.t0, 5, "starting")
        data.at_t0 = sampler.sample()
        pump(lambda: len(state["done"]) == workers, sc.duration_s + sc.drain_s + 120, "running")
        data.at_end = sampler.sample()
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


def _guarded(action: Callable[[], None], errors: list[str]) -> Callable[[], None]:
    def run() -> None:
        try:
            action()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    return run


def _pct(values: np.ndarray[Any, Any], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


def _scrape_metrics(system: System) -> dict[str, float]:
    """Server-side counters from locshare's /metrics (unlabelled series only)."""
    if system.protocol != "locshare" or not system.base_url:
        return {}
    import urllib.request

    try:
        with urllib.request.urlopen(system.base_url + "/metrics", timeout=5) as response:
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
    result["errors"] = data.errors
    for row in data.timeline:  # seconds since t0; negative during set-up
        row["t"] = round(row.pop("t_abs") - data.t0, 3) if "t_abs" in row else row["t"]
    result["timeline"] = data.timeline
    result["latency_cdf"] = _cdf(latency)
    result["connect_cdf"] = _cdf(np.array(connect_ms, dtype=np.float32))
    result["versions"] = versions(data.system)
    result["machine"] = machine()
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
    return out


def _others(a: Sample, b: Sample) -> float | None:
    if None in (a.core_busy_s, b.core_busy_s, a.server_cpu_s, b.server_cpu_s):
        return None
    used = (b.server_cpu_s or 0.0) - (a.server_cpu_s or 0.0)
    if a.db_cpu_s is not None and b.db_cpu_s is not None:
        used += max(0.0, b.db_cpu_s - a.db_cpu_s)
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
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "load_cpus": load_cpus(),
        "memory_mb": round(psutil.virtual_memory().total / 2**20),
    }
