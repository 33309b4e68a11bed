"""The ``partition`` scenario: one node's link to Redis cut for 10 s, what clients saw.

Two nodes (``_nodes.NodesSystem``): node 0 here on 127.0.0.1, node 1 in a network
namespace (``_netem.partition_link``).  Clients reach node 1 over a veth pair that is
never cut; node 1 reaches Redis over a second, userspace link (a TUN relay) that the run
cuts at ``partition_at_s`` for ``partition_s`` (every packet dropped, both ways, as a
real partition: no reset, TCP retransmits, connects time out) and then heals.  Member
``j`` of every session is on node ``j % 2``, so every session spans the cut.

Every participant is a timing receiver and counts location entries by the second
their update was sent *and* by (sender's node, receiver's node): updates between
clients of one node (*same-node*) should keep flowing through the cut; those between
the nodes (*cross-node*) cannot (positions are ephemeral: the bus drops them while
Redis is away, and the resynchronisation after the reconnect brings the current
state instead).  Figures: see :func:`partition_figures`.  If namespaces cannot be
built here, the scenario is reported as skipped with the reason.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Final

from . import _netem, _run, _server
from ._nodes import NodeSpec, NodesSystem
from ._scenarios import Scenario

LATE_S: Final = 5.0
DELIVERED_OK: Final = 0.99  # a send second with this share delivered counts as normal
RECOVERY_STREAK_S: Final = 3  # ... and this many such seconds in a row mean recovered


def run_partition(sc: Scenario, opts: _run.RunOptions, progress: _run.Progress) -> dict[str, Any]:
    from ._commands import run_locshare_with

    if opts.target:
        return _netem.skipped(sc, "partition starts its own nodes; --target is not supported")
    if opts.server_workers > 1 or sc.nodes != 2:
        raise SystemExit("partition runs exactly two nodes of one process each")
    reason = _netem.partition_unavailable_reason()
    if reason:
        progress.note(f"skipped: {reason}")
        return _netem.skipped(sc, reason)
    assert sc.partition_at_s is not None
    _server.share_cores()
    with _netem.partition_link() as link:
        progress.note(
            f"node 1 in namespace {link.netns} ({link.node_ip}); its Redis link "
            f"({link.bus.kind}) is cut at t={sc.partition_at_s:g} s for {sc.partition_s:g} s"
        )
        specs = [
            NodeSpec(),
            NodeSpec(host=link.node_ip, netns=link.netns, redis_host=link.redis_ip),
        ]
        system = NodesSystem(specs=specs)
        try:
            events = [
                _run.Event(sc.partition_at_s, "cut", lambda: link.bus.set(1.0, 0.0)),
                _run.Event(
                    sc.partition_at_s + sc.partition_s, "heal", lambda: link.bus.set(0.0, 0.0)
                ),
            ]
            data, result = run_locshare_with(
                sc, system, opts, progress, events=events, buckets=True
            )
        finally:
            system.stop()
        stats = link.bus.statistics()
    figures = partition_figures(data, result)
    figures["bus_link"] = {"kind": link.bus.kind, **stats}
    result["partition"] = figures
    # The headline ratio excludes the partition window; the overall one is kept.
    result["delivery_ratio_overall"] = result["delivery_ratio"]
    result["delivery_ratio"] = figures["delivery_ratio_outside_window"]
    return result


def partition_figures(data: _run.RunData, result: dict[str, Any]) -> dict[str, Any]:
    """What clients saw around the cut.

    * ``same_node_delivery_during_cut`` / ``cross_node_delivery_during_cut``: delivery
      ratio of the updates sent in the whole seconds between cut and heal, between
      clients of one node and between the nodes (``..._by_direction``: each way).
    * ``cross_node_gap_s``: from the first send second (from one second before the
      cut) whose cross-node delivery fell below ``DELIVERED_OK``, to ``recovered_at_s``:
      the first send second after the heal that starts ``RECOVERY_STREAK_S`` normal
      seconds in a row; ``recovered_after_heal_s`` is that minus the heal.
    * ``missed_in_window``: deliveries expected for updates sent in the window (one
      second before the gap to one second after the recovery) that did not happen;
      ``delivery_ratio_outside_window``: every pair of nodes, outside it.
    * ``presence``: ``presence`` notices timing receivers got during the run, by the
      receiver's node (offline: a participant of the other node shown gone).
    * ``bus``: each node's bus counters at the end (reconnects, dropped events).
    * ``late_entries``: entries that arrived more than ``LATE_S`` after they were sent
      (positions a node had queued or written to its dead Redis connection, delivered
      once the link came back: stale, their timestamps say so), and the latest.
    """
    t0 = data.t0
    cut, heal = data.events["cut"], data.events["heal"]
    steady: Counter[tuple[int, int]] = Counter()
    for ready in data.ready:
        for (session, node), n in ready["steady_open_nodes"]:
            steady[(session, node)] += n
    nodes = sorted({node for _, node in steady})
    sent: Counter[tuple[int, int, int]] = Counter()
    received: Counter[tuple[int, int, int, int]] = Counter()
    presence: Counter[tuple[int, int, bool]] = Counter()
    for d in data.done:
        sent.update({tuple(k): v for k, v in d["sent_links"]})
        received.update({tuple(k): v for k, v in d["recv_links"]})
        presence.update({tuple(k): v for k, v in d["presence"]})
    expected: dict[str, Counter[int]] = {"same": Counter(), "cross": Counter()}
    got: dict[str, Counter[int]] = {"same": Counter(), "cross": Counter()}
    for (session, second, node), n in sent.items():
        for other in nodes:
            expected["same" if other == node else "cross"][second] += n * steady[(session, other)]
    for (_, second, sender, receiver), n in received.items():
        got["same" if sender == receiver else "cross"][second] += n
    # Each direction across the cut apart (one node may get through, the other not).
    for a in nodes:
        for b in nodes:
            if a != b:
                expected[f"{a}->{b}"] = Counter()
                got[f"{a}->{b}"] = Counter()
    for (session, second, node), n in sent.items():
        for other in nodes:
            if other != node:
                expected[f"{node}->{other}"][second] += n * steady[(session, other)]
    for (_, second, sender, receiver), n in received.items():
        if sender != receiver and f"{sender}->{receiver}" in got:
            got[f"{sender}->{receiver}"][second] += n
    seconds = sorted(set(expected["same"]) | set(expected["cross"]))

    def ratio(kind: str, secs: list[int]) -> float | None:
        e = sum(expected[kind][s] for s in secs)
        return round(sum(got[kind][s] for s in secs) / e, 4) if e else None

    def normal(second: int) -> bool:
        r = ratio("cross", [second])
        return r is None or r >= DELIVERED_OK

    during = [s for s in seconds if s >= cut and s + 1 <= heal]
    gap_start = next((s for s in seconds if s >= math.floor(cut) - 1 and not normal(s)), None)
    recovered = None
    after = [s for s in seconds if s >= math.floor(heal)]
    for i, s in enumerate(after):
        if all(normal(x) for x in after[i : i + RECOVERY_STREAK_S]):
            recovered = s
            break
    window_start = (gap_start if gap_start is not None else math.floor(cut)) - 1
    window_end = (recovered if recovered is not None else data.t_stop) + 1
    inside = [s for s in seconds if window_start <= s <= window_end]
    outside = [s for s in seconds if s not in set(inside)]
    both = ("same", "cross")
    expected_inside = sum(expected[k][s] for k in both for s in inside)
    got_inside = sum(got[k][s] for k in both for s in inside)
    expected_outside = sum(expected[k][s] for k in both for s in outside)
    got_outside = sum(got[k][s] for k in both for s in outside)
    by_node: dict[str, dict[str, Any]] = {}
    for (second, node, online), n in sorted(presence.items()):
        entry = by_node.setdefault(
            f"node {node}", {"offline": 0, "online": 0, "first_offline_s": None}
        )
        entry["online" if online else "offline"] += n
        if not online and entry["first_offline_s"] is None:
            entry["first_offline_s"] = round(second - t0, 1)
    bus = {
        role: {k: v for k, v in metrics.items() if k.startswith("locshare_bus_")}
        for role, metrics in (data.server_metrics or {}).items()
        if isinstance(metrics, dict)
    }
    return {
        "cut_at_s": round(cut - t0, 2),
        "healed_at_s": round(heal - t0, 2),
        "nodes": {
            f"node {node}": sum(n for (_, m), n in steady.items() if m == node) for node in nodes
        },
        "same_node_delivery_during_cut": ratio("same", during),
        "cross_node_delivery_during_cut": ratio("cross", during),
        "cross_node_delivery_during_cut_by_direction": {
            f"node {k.replace('->', ' -> node ')}": ratio(k, during) for k in expected if "->" in k
        },
        "cross_node_gap_s": [
            round(gap_start - t0, 1) if gap_start is not None else None,
            round(recovered - t0, 1) if recovered is not None else None,
        ],
        "cross_node_gap_length_s": (recovered - gap_start)
        if gap_start is not None and recovered is not None
        else None,
        "recovered_at_s": round(recovered - t0, 1) if recovered is not None else None,
        "recovered_after_heal_s": round(recovered - heal, 1) if recovered is not None else None,
        "window_s": [round(window_start - t0, 1), round(window_end - t0, 1)],
        "missed_in_window": expected_inside - got_inside,
        "expected_in_window": expected_inside,
        "delivery_ratio_outside_window": round(got_outside / expected_outside, 6)
        if expected_outside
        else None,
        "late_entries": _late_entries(data),
        "client_reconnects": result["timeline"][-1]["reconnects"] if result.get("timeline") else 0,
        "presence": by_node,
        "bus": bus,
        "timeline": [(round(s - t0, 1), ratio("same", [s]), ratio("cross", [s])) for s in seconds],
    }


def _late_entries(data: _run.RunData) -> dict[str, Any]:
    import numpy as np

    latency = np.concatenate(data.latency) if data.latency else np.empty(0, np.float32)
    late = latency[latency > LATE_S * 1000]
    return {
        "later_than_s": LATE_S,
        "count": int(late.size),
        "share": round(float(late.size) / latency.size, 5) if latency.size else None,
        "max_s": round(float(latency.max()) / 1000, 2) if latency.size else None,
    }
