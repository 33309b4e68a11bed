"""``python -m benchmarks run SCENARIO``: set up the system, drive the load, add the
scenario-specific figures (fault recovery, lossy timeline), write the outputs."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import trio

from . import _load, _report, _run, _server, _speed
from ._scenarios import Scenario, scenario
from ._systems import LocshareSystem, System


def resolve(name: str, opts: _run.RunOptions) -> Scenario:
    sc = scenario(name, quick=opts.quick, duration_s=opts.duration_s)
    changes: dict[str, Any] = {}
    if opts.sessions is not None:
        changes["sessions"] = opts.sessions
    if opts.per_session is not None:
        changes["per_session"] = opts.per_session
    if opts.interval_s is not None:
        changes["interval_s"] = opts.interval_s
    if opts.participants is not None:
        if sc.participants_total is None:
            raise SystemExit("--participants is for realistic; use --sessions and --per-session")
        changes["participants_total"] = opts.participants
    if opts.compare_fixed and sc.participants_total is None:
        raise SystemExit("--compare-fixed is for realistic")
    if changes:
        sc = dataclasses.replace(sc, **changes)
        if sc.churn_per_session >= sc.per_session:
            sc = dataclasses.replace(sc, churn_per_session=max(0, sc.per_session - 2))
    return sc


def make_system(opts: _run.RunOptions, nodes: int = 1) -> System:
    """The server side of a run: one process (pinned), ``--workers N`` or ``--nodes N``
    (both in shared placement: ``_server.share_cores``)."""
    if nodes > 1 or opts.server_workers > 1:
        if opts.target:
            raise SystemExit("--workers/--nodes start their own servers: drop --target")
        _server.share_cores()
        if nodes > 1:
            from ._nodes import NodesSystem, Placement

            return NodesSystem(nodes, placement=cast(Placement, opts.node_placement))
        return LocshareSystem(separate_db=opts.separate_db, workers=opts.server_workers)
    return LocshareSystem(opts.target, opts.server_pid, opts.separate_db)


def run_scenario(name: str, opts: _run.RunOptions) -> tuple[Path, dict[str, Any]]:
    sc = resolve(name, opts)
    if opts.nodes is not None:
        if opts.nodes < 1:
            raise SystemExit("--nodes must be 1 or more")
        sc = dataclasses.replace(sc, nodes=opts.nodes)
    if opts.node_placement != "shared":
        if sc.nodes < 2:
            raise SystemExit(f"--{opts.node_placement} places participants on nodes: add --nodes N")
        if sc.kill_node_at_s is not None or sc.partition_at_s is not None:
            raise SystemExit(
                f"{sc.name} places its participants itself: drop --{opts.node_placement}"
            )
    out = opts.out or _report.default_out(sc.name)
    progress = _run.Progress(sc.name, opts.progress)
    _speed.reference(opts.speed_repeats)  # before any server starts
    if sc.participants_total is not None:
        from ._realistic import run_realistic

        if sc.nodes > 1 or opts.target:
            raise SystemExit("realistic starts one server per leg: drop --nodes/--target")
        return run_realistic(sc, opts)
    if sc.partition_at_s is not None:
        from ._partition import run_partition

        result = run_partition(sc, opts, progress)
    elif sc.lossy:
        from . import _netem

        if opts.server_workers > 1 or sc.nodes > 1:
            raise SystemExit("lossy runs one server process: drop --workers/--nodes")
        result = _netem.run_lossy(sc, opts, progress)
    else:
        if (sc.fault_at_s is not None) and opts.target:
            raise SystemExit("fault needs a server it can kill: run it without --target")
        if sc.fault_at_s is not None and (opts.server_workers > 1 or sc.nodes > 1):
            raise SystemExit("fault kills the one server process; for a cluster run node-kill")
        if sc.kill_node_at_s is not None and sc.nodes < 2:
            raise SystemExit("node-kill needs two nodes or more (--nodes)")
        system = make_system(opts, sc.nodes)
        try:
            result = run_locshare(sc, system, opts, progress)
        finally:
            system.stop()
    _report.write_run(out, result)
    return out, result


def run_locshare(
    sc: Scenario, system: System, opts: _run.RunOptions, progress: _run.Progress
) -> dict[str, Any]:
    events = []
    if sc.fault_at_s is not None:
        assert isinstance(system, LocshareSystem)
        events = [
            _run.Event(sc.fault_at_s, "kill", system.kill),
            _run.Event(sc.fault_at_s, "restart", system.restart, background=True),
        ]
    killed = None
    if sc.kill_node_at_s is not None:
        from ._nodes import NodesSystem

        assert isinstance(system, NodesSystem)
        killed = system.count - 1
        events = [_run.Event(sc.kill_node_at_s, "kill", lambda: system.kill_node(killed))]
    data, result = run_locshare_with(
        sc, system, opts, progress, events=events, buckets=bool(events)
    )
    if events:
        figures = fault_figures(data, result)
        if killed is not None:
            figures = {"killed_node": f"node {killed}", **figures}
            del figures["server_ready_at_s"]  # not restarted: its clients moved
        result["node_kill" if killed is not None else "fault"] = figures
        # The headline ratio excludes the fault window; the overall one is kept.
        result["delivery_ratio_overall"] = result["delivery_ratio"]
        result["delivery_ratio"] = figures["delivery_ratio_outside_fault"]
        result["recovery_s"] = figures["recovery_s"]
    return result


def run_locshare_with(
    sc: Scenario,
    system: System,
    opts: _run.RunOptions,
    progress: _run.Progress,
    *,
    on_sample: Callable[[float], None] | None = None,
    buckets: bool = False,
    events: list[_run.Event] | None = None,
) -> tuple[_run.RunData, dict[str, Any]]:
    steady = sc.per_session - sc.churn_per_session
    progress.note(
        f"creating {sc.sessions} sessions and {sc.sessions * steady:,} participants over REST"
    )
    setups = trio.run(_run.create_sessions, system.base_url, sc.sessions, steady)
    participants = system.assign(_run.plan_participants(setups, sc.decode_fraction))
    churn = system.place_churn(
        [
            _load.ChurnSlot(s.index, s.session_id)
            for s in setups
            for _ in range(sc.churn_per_session)
        ]
    )
    workers = opts.workers or _run.default_workers(len(participants))
    data = _run.drive(
        sc,
        system,
        participants,
        workers=workers,
        churn=churn,
        events=events or [],
        on_sample=on_sample,
        progress=progress,
        buckets=buckets,
    )
    result = _run.summarize(data)
    from ._nodes import NodesSystem, placement_figures

    if isinstance(system, NodesSystem) and not system.shared_ports:
        result["node_placement"] = placement_figures(participants, system.count)
    return data, result


def bucket_timeline(
    data: _run.RunData,
) -> tuple[Counter[tuple[int, int]], Counter[tuple[int, int]]]:
    sent: Counter[tuple[int, int]] = Counter()
    received: Counter[tuple[int, int]] = Counter()
    for d in data.done:
        sent.update({tuple(k): v for k, v in d["sent_buckets"]})
        received.update({tuple(k): v for k, v in d["recv_buckets"]})
    return sent, received


def steady_per_session(data: _run.RunData) -> Counter[int]:
    out: Counter[int] = Counter()
    for ready in data.ready:
        out.update({int(k): v for k, v in ready["steady_open"].items()})
    return out


def delivery_by_second(data: _run.RunData) -> list[tuple[float, float]]:
    """Delivery ratio of the updates sent in each second (timing receivers bucket
    every entry by its send second)."""
    sent, received = bucket_timeline(data)
    steady = steady_per_session(data)
    expected_by_second: Counter[int] = Counter()
    received_by_second: Counter[int] = Counter()
    for (session, second), n in sent.items():
        expected_by_second[second] += n * steady[session]
    for (_, second), n in received.items():
        received_by_second[second] += n
    return [
        (round(second - data.t0, 1), round(received_by_second[second] / expected, 4))
        for second, expected in sorted(expected_by_second.items())
        if expected
    ]


def fault_figures(data: _run.RunData, result: dict[str, Any]) -> dict[str, Any]:
    """Recovery time and the updates lost around the fault.

    ``recovery_s``: from the SIGKILL until every participant has reconnected *and*
    received a ``locations`` frame again.  The fault window runs from one second before
    the kill to one second after the recovery; updates sent in it are "around the
    fault".  Outside it, every update should reach everyone.
    """
    kill = data.events.get("kill")
    assert kill is not None
    backs = []
    not_back = 0
    for d in data.done:
        for _, down_at, _reconnected, back_at in d["outages"]:
            if down_at < kill - 1:
                continue
            if back_at is None:
                not_back += 1
            else:
                backs.append(back_at)
    recovered = max(backs) if backs and not not_back else None
    window_end = (recovered if recovered is not None else data.t_stop) + 1
    sent, received = bucket_timeline(data)
    steady = steady_per_session(data)
    inside = {"expected": 0, "received": 0}
    outside = {"expected": 0, "received": 0}
    for (session, second), n in sent.items():
        side = inside if kill - 1 <= second + 1 and second <= window_end else outside
        side["expected"] += n * steady[session]
    for (_, second), n in received.items():
        side = inside if kill - 1 <= second + 1 and second <= window_end else outside
        side["received"] += n
    outages = sum(1 for d in data.done for o in d["outages"] if o[1] >= kill - 1)
    return {
        "killed_at_s": round(kill - data.t0, 2),
        "server_ready_at_s": round(data.system.restarted_at - data.t0, 2)  # type: ignore[attr-defined]
        if getattr(data.system, "restarted_at", None)
        else None,
        "recovery_s": round(recovered - kill, 2) if recovered is not None else None,
        "connections_dropped": outages,
        "not_back_at_end": not_back,
        "fault_window_s": [round(kill - 1 - data.t0, 1), round(window_end - data.t0, 1)],
        "updates_lost_around_fault": inside["expected"] - inside["received"],
        "expected_around_fault": inside["expected"],
        "delivery_ratio_outside_fault": round(outside["received"] / outside["expected"], 6)
        if outside["expected"]
        else None,
        "unconfirmed_updates": result["delivery"]["unconfirmed_updates"],
        "timeline": delivery_by_second(data),
    }
