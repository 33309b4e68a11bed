"""The scenarios: sizes and timings, full (requirements.md section 8.2) and ``--quick``.

A scenario is data; :mod:`benchmarks._run` executes it.  Durations are the *active*
phase (updates being sent); set-up (joins, connecting) and the drain come on top.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    sessions: int
    per_session: int
    interval_s: float
    duration_s: float
    # Timing receivers (decode + latency) per session, as a fraction; the rest count.
    decode_fraction: float = 0.1
    connect_within_s: float | None = None  # storm: spread the opening over this time
    churn_per_session: int = 0  # multi: slots per session taken by short-lived participants
    fault_at_s: float | None = None  # fault: SIGKILL + restart this long after the start
    reconnect: bool = False
    lossy: bool = False
    drain_s: float = 2.0
    notes: str = ""
    nodes: int = 1  # separate server nodes linked by Redis (node-kill, partition)
    kill_node_at_s: float | None = None  # node-kill: SIGKILL the last node (not restarted)
    partition_at_s: float | None = None  # partition: cut the last node's Redis link
    partition_s: float = 10.0  # ... for this long
    # realistic: this many participants, in groups of power-law sizes (sessions and
    # per_session then describe the groups drawn: their count and the largest).
    participants_total: int | None = None

    @property
    def participants(self) -> int:
        if self.participants_total is not None:
            return self.participants_total
        return self.sessions * self.per_session

    def with_duration(self, duration_s: float) -> Scenario:
        def third(at: float | None) -> float | None:
            return None if at is None else min(at, duration_s / 3)

        return dataclasses.replace(
            self,
            duration_s=duration_s,
            fault_at_s=third(self.fault_at_s),
            kill_node_at_s=third(self.kill_node_at_s),
            partition_at_s=third(self.partition_at_s),
        )


FULL: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "baseline",
            "Baseline: 50 participants in one session, every 2 s",
            sessions=1,
            per_session=50,
            interval_s=2.0,
            duration_s=600,
            decode_fraction=1.0,
        ),
        Scenario(
            "storm",
            "Connection storm: 1,000 connections opened within 60 s, then a graceful disconnect",
            sessions=20,
            per_session=50,
            interval_s=10.0,
            duration_s=300,
            connect_within_s=60,
            notes="minimal activity: one update per participant every 10 s",
        ),
        Scenario(
            "flood",
            "Message flooding: 100 participants (2 x 50), every 500 ms",
            sessions=2,
            per_session=50,
            interval_s=0.5,
            duration_s=900,
            decode_fraction=1.0,
        ),
        Scenario(
            "multi",
            "Multi-session: 20 sessions x 50 with join/leave churn, isolation checked",
            sessions=20,
            per_session=50,
            interval_s=2.0,
            duration_s=1200,
            churn_per_session=5,
        ),
        Scenario(
            "fault",
            "Fault tolerance: 500 participants, server SIGKILLed and restarted mid-run",
            sessions=10,
            per_session=50,
            interval_s=2.0,
            duration_s=1800,
            decode_fraction=1.0,
            fault_at_s=900,
            reconnect=True,
            drain_s=5.0,
        ),
        Scenario(
            "convoy-10k",
            "Convoy 10k: 200 sessions x 50 participants, every 2 s",
            sessions=200,
            per_session=50,
            interval_s=2.0,
            duration_s=600,
            decode_fraction=0.04,
        ),
        Scenario(
            "lossy",
            "Lossy network: 20 % packet loss, +200 ms, loss bursts; 2 sessions x 10",
            sessions=2,
            per_session=10,
            interval_s=2.0,
            duration_s=600,
            decode_fraction=1.0,
            reconnect=True,
            lossy=True,
            drain_s=15.0,
        ),
        Scenario(
            "node-kill",
            "Node kill: 500 participants over 2 nodes linked by Redis, one node SIGKILLed mid-run",
            sessions=10,
            per_session=50,
            interval_s=2.0,
            duration_s=300,
            decode_fraction=1.0,
            reconnect=True,
            drain_s=5.0,
            nodes=2,
            kill_node_at_s=100,
            notes="the killed node is not restarted: its clients reconnect to the survivor",
        ),
        Scenario(
            "partition",
            "Partition: 500 participants over 2 nodes, one node's link to Redis cut for 10 s",
            sessions=10,
            per_session=50,
            interval_s=2.0,
            duration_s=300,
            decode_fraction=1.0,
            reconnect=True,
            drain_s=5.0,
            nodes=2,
            partition_at_s=100,
            partition_s=10.0,
            notes="node 1 in a network namespace; its Redis traffic through a relay that is cut",
        ),
        Scenario(
            "realistic",
            "Realistic: walkers, drivers and stationary people in power-law groups, joining "
            "and leaving, a share with the map hidden",
            sessions=0,  # drawn: see benchmarks/_realistic.py
            per_session=50,
            interval_s=2.0,  # the base interval, and the fixed leg's
            duration_s=600,
            # A quarter of the participants with the map on screen (at most
            # _realistic.TIMING_RECEIVERS_MAX) are timing receivers: they decode every
            # frame and sample the positions' ages.
            decode_fraction=0.25,
            participants_total=10_000,
            notes="parameters in benchmarks/_realistic.py and benchmarks/README.md",
        ),
    )
}

QUICK_DURATION_S: dict[str, float] = {
    "baseline": 20,
    "storm": 15,
    "flood": 20,
    "multi": 25,
    "fault": 30,
    "convoy-10k": 12,
    "lossy": 28,
    "node-kill": 30,
    "partition": 35,
    "realistic": 35,
}
# --quick keeps every scenario under a minute; convoy-10k then runs 4,000 participants
# (its set-up alone, 10,000 joins and connections, takes about a minute on one core).
QUICK_SESSIONS: dict[str, int] = {"convoy-10k": 80}
# realistic --quick: 1,000 participants (35 s: too short for the 60 s `stationary`
# window, so that reason never comes up in a quick run).
QUICK_PARTICIPANTS: dict[str, int] = {"realistic": 1_000}
QUICK_CONNECT_WITHIN_S = 10.0
QUICK_FAULT_AT_S = 8.0
QUICK_DRAIN_S: dict[str, float] = {"lossy": 8.0}


def scenario(name: str, *, quick: bool = False, duration_s: float | None = None) -> Scenario:
    base = FULL[name]
    if quick:
        base = dataclasses.replace(
            base,
            duration_s=QUICK_DURATION_S[name],
            connect_within_s=QUICK_CONNECT_WITHIN_S if base.connect_within_s else None,
            fault_at_s=QUICK_FAULT_AT_S if base.fault_at_s is not None else None,
            kill_node_at_s=QUICK_FAULT_AT_S if base.kill_node_at_s is not None else None,
            partition_at_s=QUICK_FAULT_AT_S if base.partition_at_s is not None else None,
            sessions=QUICK_SESSIONS.get(name, base.sessions),
            drain_s=QUICK_DRAIN_S.get(name, base.drain_s),
            participants_total=QUICK_PARTICIPANTS.get(name, base.participants_total),
        )
    if duration_s is not None:
        base = base.with_duration(duration_s)
    return base


def compare_workload(*, quick: bool, duration_s: float | None = None) -> Scenario:
    """The workload every system gets in ``compare``: the 1,000-participant target."""
    s = Scenario(
        "compare",
        "20 sessions x 50 participants, every 2 s, through each system",
        sessions=20,
        per_session=50,
        interval_s=2.0,
        duration_s=20 if quick else 120,
    )
    return s.with_duration(duration_s) if duration_s is not None else s


# ``python -m benchmarks cluster``: convoy-10k's load against one process, then against
# N workers, in one invocation.  120 s active by default (the reference run of
# one process was 120 s); ``--quick``: 2,000 participants for 15 s.
CLUSTER_DURATION_S = 120.0
QUICK_CLUSTER_SESSIONS = 40
QUICK_CLUSTER_DURATION_S = 15.0


def cluster_workload(*, quick: bool, duration_s: float | None = None) -> Scenario:
    """convoy-10k (200 x 50, every 2 s), for 120 s; ``--quick``: 40 x 50 for 15 s."""
    base = dataclasses.replace(
        FULL["convoy-10k"],
        duration_s=QUICK_CLUSTER_DURATION_S if quick else CLUSTER_DURATION_S,
        sessions=QUICK_CLUSTER_SESSIONS if quick else FULL["convoy-10k"].sessions,
    )
    return base.with_duration(duration_s) if duration_s is not None else base
