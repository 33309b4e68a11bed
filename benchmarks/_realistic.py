"""``python -m benchmarks run realistic``: a realistic workload, and what users feel.

The workload (requirements.md 8.4, "Realistic User Behavior"; every parameter is a
named constant below, documented in benchmarks/README.md):

* **Groups.** Participants are split into sessions whose sizes follow a discrete power
  law, ``P(size = k)`` proportional to ``k ** -GROUP_SIZE_EXPONENT`` for ``k`` from
  ``GROUP_SIZE_MIN`` to ``GROUP_SIZE_MAX`` (a session's capacity): at exponent 2, 41 %
  of the groups are pairs and the mean is 5.6, while a participant's own group has 14
  members on average (big groups hold many people).  Each group is somewhere around one
  of ``CITIES``; its members start within ``GROUP_SPREAD_M`` of its centre.
* **Movement.** Each person is a walker (``WALK_SPEED_KMH``), a driver
  (``DRIVE_SPEED_KMH``) or stationary, in ``SHARE_DRIVERS`` / ``SHARE_STATIONARY``;
  movers keep their own speed (nominal +-``SPEED_SPREAD``) in a straight line.  Every
  fix gets GPS noise (``GPS_NOISE_M`` per axis) and reports ``FIX_ACCURACY_M``, its
  speed (0 when still) and heading.
* **Meeting points.** ``SHARE_GROUPS_WITH_MEET`` of the groups of ``MEET_MIN_GROUP_SIZE``
  or more get a ``meet`` place (radius ``MEET_RADIUS_M``), added over the socket by
  their first member at set-up; ``SHARE_WALKERS_TO_MEET`` of their walkers walk to it and
  stop ``MEET_STOP_FROM_CENTRE_M`` from its centre (inside: the server sees them arrive
  and asks for ``at_place``), at a time within ``MEET_ARRIVAL_WINDOW`` of the run.
* **The map.** ``SHARE_HIDDEN`` of the people have the map hidden: their client sends
  ``visibility {"visible": false}`` right after connecting and keeps it (the adaptive
  leg's clients; the fixed leg's know no ``visibility``).
* **Joining and leaving.** ``SHARE_JOINING`` of the people join during the run (REST
  join, connect, then share; not a group's first member), at a time within
  ``JOIN_WINDOW``; ``SHARE_LEAVING`` leave for good (``leave``) within ``LEAVE_WINDOW``.

Two legs, one workload (same seed, same people), each against a fresh server:

* ``adaptive``: clients obey.  Sending starts at ``t0``, each client at its own phase
  within the interval it was last given; an ``update_interval`` moves its next fix to
  ``last fix + new interval`` (at once if that is past); ``locate_now`` is answered with
  one fresh fix (the next one follows an interval later), unless the last fix is younger
  than ``LOCATE_NOW_FRESH_S`` (it is the fresh one).  Before ``t0`` a client only
  records the interval (nothing is sent during set-up).
* ``fixed`` (``--compare-fixed``): the clients before issue 15: one fix every 2 s,
  ``update_interval`` and ``locate_now`` ignored (counted), and no ``visibility``
  (those clients had none: every map counts as on screen, so the server sends every
  position to everyone, as it did).  In the adaptive leg a hidden map is sent no
  positions, so its people are not counted as receivers in the delivery ratio.

What users feel, per leg:

* **Updates per participant-minute**: location updates the server accepted
  (``locshare_updates_received_total``), divided by the minutes participants were in
  the session during the active phase (each connection's overlap with it).
* **Age of a watched, moving person's position on a viewer's screen**: every
  ``AGE_SAMPLE_S``, each timing receiver with the map on screen takes, for every other
  member on its screen who is moving at that moment, the time since that member's
  position there was taken (its ``timestamp``, set by the sender just before sending;
  one machine, one clock).  *Moving* is the truth the load knows, not what the screen
  says: walkers and drivers, until a walker reaches its meeting point (so a walker who
  stopped there does not count, and one the server already slowed down while it still
  walked its last metres does).  The screen holds what the viewer received:
  ``session_state`` locations, then every ``locations`` entry; ``participant_left``
  removes a member.  Percentiles come from a histogram of ``AGE_BIN_MS`` bins (upper
  edges), so memory stays bounded at any size.
* Delivery, latency, server CPU: as every scenario (benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

# --- the workload's parameters ---------------------------------------------------------
GROUP_SIZE_EXPONENT: Final = 2.0  # P(size = k) ~ k ** -2
GROUP_SIZE_MIN: Final = 2  # a group is at least two people
GROUP_SIZE_MAX: Final = 50  # a session's capacity
WALK_SPEED_KMH: Final = 5.0
DRIVE_SPEED_KMH: Final = 30.0
SPEED_SPREAD: Final = 0.2  # each mover's own speed: nominal x U(0.8, 1.2)
# The product documents name three patterns and no shares: equal thirds.
SHARE_STATIONARY: Final = 1 / 3
SHARE_DRIVERS: Final = 1 / 3  # the rest walk
# Most of the time a phone is locked, in a pocket or showing another app (navigation
# in a car): two in three people have the map hidden, one in three on screen.
SHARE_HIDDEN: Final = 2 / 3
SHARE_JOINING: Final = 0.1
JOIN_WINDOW: Final = (0.05, 0.5)  # fractions of the active phase
SHARE_LEAVING: Final = 0.1
LEAVE_WINDOW: Final = (0.5, 0.95)
SHARE_GROUPS_WITH_MEET: Final = 0.25
MEET_MIN_GROUP_SIZE: Final = 3
SHARE_WALKERS_TO_MEET: Final = 0.5
MEET_ARRIVAL_WINDOW: Final = (0.2, 0.6)  # fractions of the active phase
MEET_RADIUS_M: Final = 50.0  # the server's default radius
# Inside the place by more than half a fix's accuracy plus the noise, so that the
# server's arrival rule (two fixes at least half their accuracy inside) holds.
MEET_STOP_FROM_CENTRE_M: Final = 40.0
MEET_OFFSET_MAX_M: Final = 300.0  # the place from the group's centre
GROUP_SPREAD_M: Final = 1_000.0  # members start this close to their group's centre
CITY_SPREAD_M: Final = 10_000.0  # group centres this close to their city's
GPS_NOISE_M: Final = 3.0  # standard deviation, per axis, of every fix
FIX_ACCURACY_M: Final = 8.0  # the accuracy every fix reports
SEED: Final = 15
CITIES: Final = (
    ("Paris", 48.8566, 2.3522),
    ("Berlin", 52.52, 13.405),
    ("Madrid", 40.4168, -3.7038),
    ("London", 51.5072, -0.1276),
    ("New York", 40.7128, -74.006),
    ("Sao Paulo", -23.5505, -46.6333),
    ("Lagos", 6.5244, 3.3792),
    ("Mumbai", 19.076, 72.8777),
    ("Tokyo", 35.6762, 139.6503),
    ("Sydney", -33.8688, 151.2093),
)

WALKER: Final = "walker"
DRIVER: Final = "driver"
STATIONARY: Final = "stationary"
KINDS: Final = (WALKER, DRIVER, STATIONARY)

# --- what is measured -------------------------------------------------------------------
AGE_SAMPLE_S: Final = 0.25  # each viewer looks at its screen this often
# Timing receivers (decode every frame, sample the ages): the scenario's share of the
# viewers (a quarter), at most this many; 250 viewers looking at about ten members
# four times a second give 10,000 samples a second, and each one wakes the load client
# for every frame it gets (the load must stay cheap: benchmarks/README.md, Validity).
TIMING_RECEIVERS_MAX: Final = 250
# locate_now is answered with a new fix unless the last one is younger than this.
LOCATE_NOW_FRESH_S: Final = 1.0
AGE_BIN_MS: Final = 10.0
AGE_MAX_MS: Final = 120_000.0  # older goes to the last bin
SETTLE_S: Final = (
    1.0  # joiners share from this long after connecting, leavers stop this long before
)
REASONS: Final = ("watched", "stationary", "at_place", "nobody_watching")

# --- the targets ----------------------------------------------------------------
UPDATES_REDUCTION_TARGET: Final = 0.5  # at least 50 % fewer updates than fixed 2 s
CPU_REDUCTION_TARGET: Final = 0.35  # server CPU at least 35 % lower
AGE_P95_TARGET_S: Final = 2.5
TARGET_PARTICIPANTS: Final = 10_000

EARTH_RADIUS_M: Final = 6_371_008.8


# --- the model ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Mover:
    """How one person moves: from (``lat``, ``lng``) at ``t0`` along ``heading_deg`` at
    ``speed_m_s``, until ``stop_after_s`` (a walker reaching its meeting point)."""

    kind: str
    lat: float
    lng: float
    heading_deg: float = 0.0
    speed_m_s: float = 0.0
    stop_after_s: float = math.inf
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class Member:
    mover: Mover
    join_at_s: float | None = None  # joins this long after t0 (None: there from the start)
    leave_at_s: float | None = None  # leaves for good this long after t0


@dataclass(frozen=True, slots=True)
class Group:
    members: tuple[Member, ...]
    meet: tuple[float, float] | None = None  # the centre of its meet place

    @property
    def initial(self) -> list[Member]:
        return [m for m in self.members if m.join_at_s is None]

    @property
    def joiners(self) -> list[Member]:
        return [m for m in self.members if m.join_at_s is not None]


@dataclass(frozen=True, slots=True)
class JoinSlot:
    """Someone who joins during the run: REST join, connect, share."""

    session: int
    session_id: str
    join_at_s: float
    mover: Mover
    decode: bool
    name: str


@dataclass(frozen=True)
class RealisticPlan:
    """One load worker's share of the workload (see :class:`benchmarks._load.WorkerPlan`)."""

    obey: bool  # follow update_interval, answer locate_now (False: the fixed leg)
    movers: dict[int, Mover]  # participant index -> its movement
    # Who moves, until when (seconds after t0), for the viewers: user id -> until, for
    # the participants there from the start; display name -> until, for the joiners
    # (their user ids come with participant_joined).  The stationary are in neither.
    moving_until: dict[str, float] = field(default_factory=dict)
    joiner_moving_until: dict[str, float] = field(default_factory=dict)
    leave_at_s: dict[int, float] = field(default_factory=dict)
    places: dict[int, tuple[float, float]] = field(default_factory=dict)  # index -> meet centre
    joins: list[JoinSlot] = field(default_factory=list)


def size_weights(
    exponent: float = GROUP_SIZE_EXPONENT, lo: int = GROUP_SIZE_MIN, hi: int = GROUP_SIZE_MAX
) -> list[float]:
    """``P(size = k)`` for ``k`` in ``lo..hi``: ``k ** -exponent``, normalized."""
    raw = [k**-exponent for k in range(lo, hi + 1)]
    total = sum(raw)
    return [x / total for x in raw]


def group_sizes(
    total: int,
    rng: random.Random,
    exponent: float = GROUP_SIZE_EXPONENT,
    lo: int = GROUP_SIZE_MIN,
    hi: int = GROUP_SIZE_MAX,
) -> list[int]:
    """Group sizes drawn from the power law until they hold ``total`` people.

    The last draw is cut to what is left; a rest smaller than ``lo`` joins the latest
    group with room for it (so every size stays within ``lo..hi`` and the sizes add up
    to ``total``; only a ``total`` below ``lo`` gives one smaller group)."""
    if total <= 0:
        return []
    if total < lo:
        return [total]
    sizes_range = list(range(lo, hi + 1))
    weights = size_weights(exponent, lo, hi)
    sizes: list[int] = []
    left = total
    while left > 0:
        size = min(rng.choices(sizes_range, weights)[0], left)
        if size < lo:
            for i in range(len(sizes) - 1, -1, -1):
                if sizes[i] + size <= hi:
                    sizes[i] += size
                    break
            else:
                sizes.append(size)  # no room anywhere: only with hi < 2 * lo
        else:
            sizes.append(size)
        left -= size
    return sizes


def displace(lat: float, lng: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The point ``distance_m`` from (``lat``, ``lng``) towards ``bearing_deg`` (local
    flat approximation: good to centimetres over a few kilometres)."""
    bearing = math.radians(bearing_deg)
    north = distance_m * math.cos(bearing)
    east = distance_m * math.sin(bearing)
    return (
        lat + math.degrees(north / EARTH_RADIUS_M),
        lng + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(lat)))),
    )


def position(m: Mover, t_s: float) -> tuple[float, float, float]:
    """``(lat, lng, speed_m_s)`` of ``m`` at ``t_s`` seconds after ``t0`` (noise-free)."""
    moving_s = min(max(t_s, 0.0), m.stop_after_s)
    lat, lng = displace(m.lat, m.lng, m.heading_deg, m.speed_m_s * moving_s)
    return lat, lng, (m.speed_m_s if t_s < m.stop_after_s else 0.0)


def _in_disc(rng: random.Random, lat: float, lng: float, radius_m: float) -> tuple[float, float]:
    return displace(lat, lng, rng.uniform(0, 360), radius_m * math.sqrt(rng.random()))


def _speed(rng: random.Random, kmh: float) -> float:
    return kmh / 3.6 * rng.uniform(1 - SPEED_SPREAD, 1 + SPEED_SPREAD)


def make_mover(
    rng: random.Random,
    centre: tuple[float, float],
    meet: tuple[float, float] | None,
    duration_s: float,
) -> Mover:
    """One person: kind, start, speed, heading, hidden map (the module's shares)."""
    u = rng.random()
    kind = (
        STATIONARY
        if u < SHARE_STATIONARY
        else DRIVER
        if u < SHARE_STATIONARY + SHARE_DRIVERS
        else WALKER
    )
    hidden = rng.random() < SHARE_HIDDEN
    if kind == STATIONARY:
        lat, lng = _in_disc(rng, *centre, GROUP_SPREAD_M)
        return Mover(kind, lat, lng, hidden=hidden)
    speed = _speed(rng, DRIVE_SPEED_KMH if kind == DRIVER else WALK_SPEED_KMH)
    if kind == WALKER and meet is not None and rng.random() < SHARE_WALKERS_TO_MEET:
        arrive_after = rng.uniform(*MEET_ARRIVAL_WINDOW) * duration_s
        bearing = rng.uniform(0, 360)  # from the place to the start
        lat, lng = displace(*meet, bearing, MEET_STOP_FROM_CENTRE_M + speed * arrive_after)
        return Mover(kind, lat, lng, (bearing + 180) % 360, speed, arrive_after, hidden)
    lat, lng = _in_disc(rng, *centre, GROUP_SPREAD_M)
    return Mover(kind, lat, lng, rng.uniform(0, 360), speed, hidden=hidden)


def build_groups(participants: int, duration_s: float, seed: int = SEED) -> list[Group]:
    """The whole workload, drawn from ``seed``: the same people in every leg."""
    rng = random.Random(seed)
    groups = []
    for g, size in enumerate(group_sizes(participants, rng)):
        _, city_lat, city_lng = CITIES[g % len(CITIES)]
        centre = _in_disc(rng, city_lat, city_lng, CITY_SPREAD_M)
        meet = None
        if size >= MEET_MIN_GROUP_SIZE and rng.random() < SHARE_GROUPS_WITH_MEET:
            meet = _in_disc(rng, *centre, MEET_OFFSET_MAX_M)
        members = []
        for j in range(size):
            mover = make_mover(rng, centre, meet, duration_s)
            u = rng.random()
            join_at = leave_at = None
            if u < SHARE_JOINING:
                if j > 0:  # the first member is there from the start (it adds the place)
                    join_at = rng.uniform(*JOIN_WINDOW) * duration_s
            elif u < SHARE_JOINING + SHARE_LEAVING:
                leave_at = rng.uniform(*LEAVE_WINDOW) * duration_s
            members.append(Member(mover, join_at, leave_at))
        groups.append(Group(tuple(members), meet))
    return groups


def workload_params() -> dict[str, Any]:
    """The parameters, for results.json and the reports."""
    return {
        "group_size": {
            "law": "P(k) ~ k^-exponent",
            "exponent": GROUP_SIZE_EXPONENT,
            "min": GROUP_SIZE_MIN,
            "max": GROUP_SIZE_MAX,
        },
        "walk_speed_kmh": WALK_SPEED_KMH,
        "drive_speed_kmh": DRIVE_SPEED_KMH,
        "speed_spread": SPEED_SPREAD,
        "share_stationary": round(SHARE_STATIONARY, 4),
        "share_drivers": round(SHARE_DRIVERS, 4),
        "share_walkers": round(1 - SHARE_STATIONARY - SHARE_DRIVERS, 4),
        "share_hidden": round(SHARE_HIDDEN, 4),
        "share_joining": SHARE_JOINING,
        "join_window": JOIN_WINDOW,
        "share_leaving": SHARE_LEAVING,
        "leave_window": LEAVE_WINDOW,
        "share_groups_with_meet": SHARE_GROUPS_WITH_MEET,
        "meet_min_group_size": MEET_MIN_GROUP_SIZE,
        "share_walkers_to_meet": SHARE_WALKERS_TO_MEET,
        "meet_arrival_window": MEET_ARRIVAL_WINDOW,
        "meet_radius_m": MEET_RADIUS_M,
        "gps_noise_m": GPS_NOISE_M,
        "fix_accuracy_m": FIX_ACCURACY_M,
        "seed": SEED,
        "age_sample_s": AGE_SAMPLE_S,
    }


# --- what users feel: pure computations -------------------------------------------------
def age_samples_ms(
    latest: Mapping[str, float],
    now: float,
    own: str,
    moving_until: Mapping[str, float],
    t_s: float,
) -> list[float]:
    """One viewer's look at its screen at ``now`` (``t_s`` after t0): for every other
    member on it (``latest``: user id -> fix time of the position shown) who moves at
    ``t_s`` (``moving_until``: user id -> until when), the position's age in ms."""
    return [
        (now - taken) * 1000.0
        for user_id, taken in latest.items()
        if t_s < moving_until.get(user_id, -math.inf) and user_id != own
    ]


def bin_ages(
    ages_ms: npt.NDArray[np.float32] | Iterable[float],
    hist: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """Add ages (ms) to a histogram of ``AGE_BIN_MS`` bins; ages beyond ``AGE_MAX_MS``
    go to the last bin, negative ones (a clock step) to the first."""
    bins = int(AGE_MAX_MS / AGE_BIN_MS) + 1
    out = np.zeros(bins, np.int64) if hist is None else hist
    values = np.asarray(ages_ms, dtype=np.float64)
    if values.size:
        index = np.clip((values // AGE_BIN_MS).astype(np.int64), 0, bins - 1)
        out += np.bincount(index, minlength=bins)
    return out


def hist_percentile(hist: npt.NDArray[np.int64] | None, q: float) -> float | None:
    """The ``q``-th percentile (0-100) of a :func:`bin_ages` histogram, in seconds: the
    upper edge of the bin holding it (never below the true value)."""
    if hist is None:
        return None
    total = int(hist.sum())
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    index = int(np.searchsorted(np.cumsum(hist), rank))
    return round((index + 1) * AGE_BIN_MS / 1000, 3)


def overlap_s(start: float, end: float, lo: float, hi: float) -> float:
    """How long ``[start, end]`` overlaps ``[lo, hi]``."""
    return max(0.0, min(end, hi) - max(start, lo))


def per_participant_minute(count: float | None, participant_s: float) -> float | None:
    return (
        round(count / (participant_s / 60), 2) if count is not None and participant_s > 0 else None
    )


def reduction(value: float | None, reference: float | None) -> float | None:
    """``1 - value / reference``: 0.6 means 60 % fewer."""
    if value is None or not reference:
        return None
    return round(1 - value / reference, 3)


# --- running -------------------------------------------------------------------------------
LEGS: Final = {
    "adaptive": "adaptive (clients follow update_interval)",
    "fixed": "fixed 2 s (clients before issue 15)",
}


def run_realistic(sc: Any, opts: Any) -> tuple[Path, dict[str, Any]]:
    """Run the adaptive leg, and with ``opts.compare_fixed`` the fixed one after it,
    each against a fresh server; write each leg like a ``run`` (``<out>/adaptive/``,
    ``<out>/fixed/``) and the summary (``<out>/results.json``, ``report.md``)."""
    from . import _report, _run
    from ._commands import make_system

    out = opts.out or _report.default_out(sc.name)
    out.mkdir(parents=True, exist_ok=True)
    legs = []
    for key in ("adaptive", "fixed") if opts.compare_fixed else ("adaptive",):
        progress = _run.Progress(f"realistic {key}", opts.progress)
        system = make_system(opts)
        try:
            result = run_leg(sc, system, opts, progress, obey=key == "adaptive")
        finally:
            system.stop()
        result["leg"] = LEGS[key]
        result["leg_key"] = key
        _report.write_run(out / key, result)
        legs.append(result)
    summary = realistic_summary(sc, legs, quick=opts.quick)
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "report.md").write_text(realistic_markdown(summary))
    print(realistic_table(summary) + "\n" + targets_text(summary))
    return out, summary


def run_leg(sc: Any, system: Any, opts: Any, progress: Any, *, obey: bool) -> dict[str, Any]:
    import trio

    from . import _load, _run

    groups = build_groups(sc.participants, sc.duration_s)
    initial = [len(g.initial) for g in groups]
    sc = dataclasses.replace(
        sc, sessions=len(groups), per_session=max((len(g.members) for g in groups), default=0)
    )
    progress.note(
        f"creating {len(groups):,} groups and {sum(initial):,} participants over REST "
        f"({sc.participants - sum(initial):,} more join during the run)"
    )
    setups = trio.run(functools.partial(_run.create_sessions, system.base_url, 0, 0, sizes=initial))
    visible = sum(not m.mover.hidden for g in groups for m in g.members)
    step = 0
    if sc.decode_fraction > 0:
        step = max(round(1 / sc.decode_fraction), math.ceil(visible / TIMING_RECEIVERS_MAX))
    viewers = 0

    def timing(mover: Mover) -> bool:
        nonlocal viewers
        if mover.hidden or not step:
            return False
        viewers += 1
        return (viewers - 1) % step == 0

    participants: list[_load.Participant] = []
    movers: dict[int, Mover] = {}
    moving_until: dict[str, float] = {}
    joiner_moving_until: dict[str, float] = {}
    leaves: dict[int, float] = {}
    places: dict[int, tuple[float, float]] = {}
    joins: list[JoinSlot] = []
    for setup, group in zip(setups, groups, strict=True):
        for j, ((user_id, url), member) in enumerate(
            zip(setup.members, group.initial, strict=True)
        ):
            index = len(participants)
            participants.append(
                _load.Participant(
                    index,
                    setup.index,
                    user_id,
                    url,
                    decode=timing(member.mover),
                    # A hidden map is sent no positions (docs/protocol.md, visibility):
                    # in the adaptive leg it is no receiver the ratio can count on.
                    steady=member.leave_at_s is None and not (obey and member.mover.hidden),
                )
            )
            movers[index] = member.mover
            if member.mover.speed_m_s > 0:
                moving_until[user_id] = member.mover.stop_after_s
            if member.leave_at_s is not None:
                leaves[index] = member.leave_at_s
            if j == 0 and group.meet is not None:
                places[index] = group.meet
        for member in group.joiners:
            assert member.join_at_s is not None
            name = f"{member.mover.kind} {setup.index}.{len(joins)}"  # unique in the run
            joins.append(
                JoinSlot(
                    setup.index,
                    setup.session_id,
                    member.join_at_s,
                    member.mover,
                    timing(member.mover),
                    name,
                )
            )
            if member.mover.speed_m_s > 0:
                joiner_moving_until[name] = member.mover.stop_after_s
    rosters_all: dict[int, list[str]] = {}
    for p in participants:
        rosters_all.setdefault(p.session, []).append(p.user_id)

    def customize(plan: _load.WorkerPlan, workers: int) -> _load.WorkerPlan:
        mine = {p.index for p in plan.participants}
        slots = [slot for i, slot in enumerate(joins) if i % workers == plan.worker]
        rosters = dict(plan.rosters)
        for slot in slots:
            rosters.setdefault(slot.session, list(rosters_all.get(slot.session, [])))
        return dataclasses.replace(
            plan,
            rosters=rosters,
            settle_s=SETTLE_S,
            realistic=RealisticPlan(
                obey=obey,
                movers={i: movers[i] for i in mine},
                leave_at_s={i: t for i, t in leaves.items() if i in mine},
                places={i: c for i, c in places.items() if i in mine},
                joins=slots,
                moving_until=moving_until,
                joiner_moving_until=joiner_moving_until,
            ),
        )

    workers = opts.workers or _run.default_workers(len(participants) + len(joins))
    data = _run.drive(
        sc, system, participants, workers=workers, progress=progress, customize=customize
    )
    result = _run.summarize(data)
    result["params"]["workload"] = workload_params()
    result["params"]["obey"] = obey
    result["realistic"] = leg_figures(data, result, groups, obey=obey)
    return result


def leg_figures(
    data: Any, result: dict[str, Any], groups: list[Group], *, obey: bool
) -> dict[str, Any]:
    """What users feel in one leg, from the workers' counters and the age histogram."""
    worker = [d.get("realistic") or {} for d in data.done]
    participant_s = sum(w.get("participant_s", 0.0) for w in worker)
    reason_s: Counter[str] = Counter()
    sent_by_reason: Counter[str] = Counter()
    intervals: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for w in worker:
        reason_s.update(w.get("reason_s", {}))
        sent_by_reason.update(w.get("sent_by_reason", {}))
        intervals.update(w.get("intervals", {}))
        totals.update({k: v for k, v in w.items() if isinstance(v, int)})
    metrics = result.get("server_metrics") or {}
    received = metrics.get("locshare_updates_received_total")
    counted_by = "server (locshare_updates_received_total)"
    if received is None:  # an external target without /metrics
        received, counted_by = result["updates_sent"], "load client (updates sent)"
    reason_total = sum(reason_s.values())
    kinds = Counter(m.mover.kind for g in groups for m in g.members)
    hist = data.age_hist
    return {
        "obey": obey,
        "groups": len(groups),
        "participants": sum(len(g.members) for g in groups),
        "people": dict(kinds),
        "hidden": sum(m.mover.hidden for g in groups for m in g.members),
        "meet_places": sum(g.meet is not None for g in groups),
        "walkers_to_meet": sum(m.mover.stop_after_s < math.inf for g in groups for m in g.members),
        "joined": totals["joins"],
        "join_failures": totals["join_failures"],
        "left": totals["leaves"],
        "places_added": totals["places_added"],
        "participant_minutes": round(participant_s / 60, 1),
        "updates_received": int(received),
        "updates_counted_by": counted_by,
        "updates_per_participant_minute": per_participant_minute(received, participant_s),
        "sent_per_participant_minute": per_participant_minute(
            result["updates_sent"], participant_s
        ),
        "position_age_s": {
            "p50": hist_percentile(hist, 50),
            "p95": hist_percentile(hist, 95),
            "p99": hist_percentile(hist, 99),
            "samples": int(hist.sum()) if hist is not None else 0,
            "viewers": totals["viewers"],
            "definition": (
                f"every {AGE_SAMPLE_S:g} s, per timing receiver with the map on screen and per "
                "other member on its screen who is moving then (a walker or driver, until a "
                "walker reaches its meeting point): now minus the timestamp of the position "
                f"shown; percentiles are bin upper edges ({AGE_BIN_MS:g} ms bins)"
            ),
        },
        "interval_share": {
            reason: round(reason_s[reason] / reason_total, 3) if reason_total else None
            for reason in REASONS
        },
        # Fixes sent while at each reason, per participant-minute at it: what the clients
        # did with what they were asked (the fixed clients: 30 whatever the reason).
        "sent_per_participant_minute_by_reason": {
            reason: per_participant_minute(sent_by_reason[reason], reason_s[reason])
            for reason in REASONS
        },
        "update_interval_received": {reason: intervals[reason] for reason in REASONS},
        "locate_now_received": totals["locate_now"],
        "locate_now_answered": totals["locate_now_answered"],
        "locate_now_already_fresh": totals["locate_now_fresh"],
    }


# --- the summary and its tables -------------------------------------------------------------
def _leg_row(r: dict[str, Any]) -> dict[str, Any]:
    f = r["realistic"]
    return {
        "leg": r["leg"],
        "key": r["leg_key"],
        "obey": f["obey"],
        "participants": f["participants"],
        "groups": f["groups"],
        "joined": f["joined"],
        "left": f["left"],
        "updates_per_participant_minute": f["updates_per_participant_minute"],
        "updates_received": f["updates_received"],
        "participant_minutes": f["participant_minutes"],
        "position_age_s": f["position_age_s"],
        "interval_share": f["interval_share"],
        "latency_ms": r["latency_ms"],
        "delivery_ratio": r["delivery_ratio"],
        "delivery": r["delivery"],
        "messages_delivered": r["messages_delivered"],
        "server_cpu_s": r["server_cpu_s"],
        "server_cpu_pct": r["server_cpu_pct"],
        "server_cpu_s_per_million_deliveries": r.get("server_cpu_s_per_million_deliveries"),
        "server_rss_mb_peak": r.get("server_rss_mb_peak"),
        "load_client_cpu_core_pct": r.get("load_client_cpu_core_pct"),
        "other_cpu_pct": r.get("other_cpu_pct"),
        "noisy": r.get("noisy", False),
        "valid": r["valid"],
        "invalid_reason": r["invalid_reason"],
    }


def realistic_summary(sc: Any, legs: list[dict[str, Any]], *, quick: bool) -> dict[str, Any]:
    rows = [_leg_row(r) for r in legs]
    adaptive = rows[0]
    fixed = rows[1] if len(rows) > 1 else None
    age_p95 = adaptive["position_age_s"]["p95"]
    updates = reduction(
        adaptive["updates_per_participant_minute"],
        fixed["updates_per_participant_minute"] if fixed else None,
    )
    cpu = reduction(adaptive["server_cpu_pct"], fixed["server_cpu_pct"] if fixed else None)
    targets = {
        "full_size": sc.participants >= TARGET_PARTICIPANTS and not quick,
        "updates_reduction": updates,
        "updates_reduction_target": UPDATES_REDUCTION_TARGET,
        "updates_met": None if updates is None else updates >= UPDATES_REDUCTION_TARGET,
        "cpu_reduction": cpu,
        "cpu_reduction_target": CPU_REDUCTION_TARGET,
        "cpu_met": None if cpu is None else cpu >= CPU_REDUCTION_TARGET,
        "age_p95_s": age_p95,
        "age_p95_target_s": AGE_P95_TARGET_S,
        "age_met": None if age_p95 is None else age_p95 <= AGE_P95_TARGET_S,
    }
    return {
        "scenario": "realistic",
        "title": sc.title,
        "started_at": legs[0]["started_at"],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {
            "participants": sc.participants,
            "interval_s": sc.interval_s,
            "duration_s": sc.duration_s,
            "quick": quick,
            "workload": workload_params(),
        },
        "machine": legs[0]["machine"],
        "versions": legs[0]["versions"],
        "legs": rows,
        "targets": targets,
        "valid": all(r["valid"] for r in rows),
    }


def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    from ._report import _f as f

    return f(value, digits, suffix)


def realistic_table(summary: dict[str, Any]) -> str:
    from ._report import _ratio

    lines = [
        "| clients | participants (groups; joined / left) | updates per participant-minute "
        "| position age p50 / p95 (s) | latency p50 / p95 (ms) | delivery | server CPU "
        "(% of one core; CPU s) | load client CPU (% of one core) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["legs"]:
        age, lat = r["position_age_s"], r["latency_ms"]
        flags = "" if r["valid"] else " (INVALID)"
        flags += " (noisy)" if r.get("noisy") else ""
        lines.append(
            f"| {r['leg']}{flags} | {r['participants']:,} ({r['groups']:,}; "
            f"+{r['joined']:,} / -{r['left']:,}) | {_f(r['updates_per_participant_minute'])} | "
            f"{_f(age['p50'], 2)} / {_f(age['p95'], 2)} | {_f(lat['p50'])} / {_f(lat['p95'])} | "
            f"{_ratio(r['delivery_ratio'])} | {_f(r['server_cpu_pct'])} %; "
            f"{_f(r['server_cpu_s'], 2)} s | {_f(r['load_client_cpu_core_pct'])} % |"
        )
    return "\n".join(lines) + "\n"


def targets_text(summary: dict[str, Any]) -> str:
    t = summary["targets"]

    def verdict(met: bool | None) -> str:
        if met is None:
            return "not measured (run with --compare-fixed)"
        return ("met" if met else "not met") + ("" if t["full_size"] else " (not full size)")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    return (
        f"Against the targets: updates {pct(t['updates_reduction'])} fewer than the fixed "
        f"2 s clients, at least {t['updates_reduction_target']:.0%} wanted: "
        f"{verdict(t['updates_met'])}; server CPU {pct(t['cpu_reduction'])} lower, at least "
        f"{t['cpu_reduction_target']:.0%} wanted: {verdict(t['cpu_met'])}; p95 age of a "
        f"watched, moving person's position {_f(t['age_p95_s'], 2)} s, at most "
        f"{t['age_p95_target_s']:g} s: "
        + ("not measured (no samples)" if t["age_met"] is None else verdict(t["age_met"]))
        + "."
    )


def shares_text(row: dict[str, Any]) -> str:
    share = row["interval_share"]
    return ", ".join(
        f"{reason} {value:.0%}" for reason, value in share.items() if value is not None
    )


def realistic_markdown(summary: dict[str, Any]) -> str:
    from . import _speed

    p = summary["params"]
    m = summary["machine"]
    w = p["workload"]
    legs = summary["legs"]
    lines = [
        f"# {summary['title']}",
        "",
        f"Started {summary['started_at']} on {m['cpu_model']}, {m['cores']} cores, "
        f"{_speed.label(m)}; {p['participants']:,} participants, {p['duration_s']:g} s "
        "active per leg"
        + (" (`--quick`: indicative only; too short for `stationary`)" if p.get("quick") else "")
        + ".",
        "",
        realistic_table(summary),
        targets_text(summary),
        "",
        "Share of participant-time at each interval the server asked for: "
        + "; ".join(f"{r['key']}: {shares_text(r)}" for r in legs)
        + " (the fixed clients were asked too, and ignored it).",
        "",
        "## The workload",
        "",
        f"Group sizes P(k) ~ k^-{w['group_size']['exponent']:g}, k = "
        f"{w['group_size']['min']}..{w['group_size']['max']}; walkers "
        f"{w['share_walkers']:.0%} at {w['walk_speed_kmh']:g} km/h, drivers "
        f"{w['share_drivers']:.0%} at {w['drive_speed_kmh']:g} km/h (each +-"
        f"{w['speed_spread']:.0%}), stationary {w['share_stationary']:.0%}; map hidden "
        f"{w['share_hidden']:.0%}; {w['share_joining']:.0%} join and {w['share_leaving']:.0%} "
        f"leave during the run; {w['share_groups_with_meet']:.0%} of the groups of "
        f"{w['meet_min_group_size']} or more have a meet place, which "
        f"{w['share_walkers_to_meet']:.0%} of their walkers reach. See benchmarks/README.md.",
        "",
        "## How to read this",
        "",
        "Both legs are the same people (same seed) against a fresh server each. *Updates "
        "per participant-minute*: location updates the server accepted, over the minutes "
        "participants were in a session during the active phase. *Position age*: sampled "
        f"every {w['age_sample_s']:g} s by the timing receivers with the map on screen, for "
        "every other member whose latest fix was moving: how old the position on that "
        "screen is (from the fix's timestamp). Delivery and latency: see "
        "benchmarks/README.md.",
        "",
    ]
    for r in legs:
        lines.append(f"- {r['leg']}: details in [{r['key']}/report.md]({r['key']}/report.md)")
    return "\n".join(lines) + "\n"


def realistic_readme(summary: dict[str, Any]) -> str:
    """The README's paragraph and table (``report --update-readme``)."""
    from . import _speed

    p = summary["params"]
    legs = summary["legs"]
    return (
        f"The realistic workload, {p['participants']:,} participants in power-law groups "
        f"({p['duration_s']:g} s active{', `--quick`' if p.get('quick') else ''}; "
        f"`python -m benchmarks run realistic"
        + (" --compare-fixed" if len(legs) > 1 else "")
        + f"`, {summary['started_at'][:10]}, {_speed.label(summary['machine'])}; "
        "server pinned to one core; parameters in benchmarks/README.md):\n\n"
        + realistic_table(summary)
        + "\n"
        + targets_text(summary)
        + " Interval asked for, share of participant-time: "
        + "; ".join(f"{r['key']}: {shares_text(r)}" for r in legs)
        + ".\n"
    )


def leg_markdown(r: dict[str, Any]) -> list[str]:
    """The "what users feel" section of a leg's report.md."""
    f = r["realistic"]
    age = f["position_age_s"]
    return [
        "",
        "## What users feel",
        "",
        "| | |",
        "| --- | --- |",
        "| clients | "
        + (
            "follow update_interval and answer locate_now"
            if f["obey"]
            else "send every 2 s, ignore update_interval and locate_now"
        )
        + " |",
        f"| people | {f['participants']:,} in {f['groups']:,} groups: {f['people']}; map hidden "
        f"{f['hidden']:,}; +{f['joined']:,} joined ({f['join_failures']} failed), "
        f"-{f['left']:,} left; {f['meet_places']} meet places ({f['places_added']} added), "
        f"{f['walkers_to_meet']} walkers bound for them |",
        f"| updates per participant-minute | {_f(f['updates_per_participant_minute'])} "
        f"({f['updates_received']:,} counted by the {f['updates_counted_by']} over "
        f"{_f(f['participant_minutes'])} participant-minutes; sent: "
        f"{_f(f['sent_per_participant_minute'])}) |",
        f"| position age of watched, moving people | p50 {_f(age['p50'], 2)} s, p95 "
        f"{_f(age['p95'], 2)} s, p99 {_f(age['p99'], 2)} s ({age['samples']:,} samples, "
        f"{age['viewers']:,} viewers) |",
        f"| interval asked for (share of participant-time) | {shares_text(f)} |",
        "| fixes sent per participant-minute at each reason | "
        + ", ".join(
            f"{reason} {_f(value)}"
            for reason, value in f["sent_per_participant_minute_by_reason"].items()
        )
        + " |",
        f"| update_interval / locate_now received | {f['update_interval_received']}; "
        f"locate_now {f['locate_now_received']:,}: answered {f['locate_now_answered']:,}, "
        f"last fix already fresh {f.get('locate_now_already_fresh', 0):,} |",
    ]


def summary_line(r: dict[str, Any]) -> str:
    from . import _speed

    parts = []
    for leg in r["legs"]:
        age = leg["position_age_s"]
        parts.append(
            f"{leg['key']}: {leg['updates_per_participant_minute']} updates per "
            f"participant-minute, position age p50/p95 {age['p50']}/{age['p95']} s, "
            f"delivery {leg['delivery_ratio']}, server CPU {leg['server_cpu_pct']} %"
            + ("" if leg["valid"] else " INVALID")
        )
    t = r["targets"]
    if t["updates_reduction"] is not None:
        parts.append(
            f"updates {t['updates_reduction']:.0%} fewer, server CPU {t['cpu_reduction']:.0%} lower"
        )
    return "; ".join(parts) + f"; {_speed.label(r['machine'])}"
