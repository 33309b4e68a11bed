"""How often each participant is asked for a position (sans-io: ``now`` is an argument).

Every phone used to send its position every 2 s whether anyone looked or not.  The
server now asks each participant for an interval that follows demand
(``update_interval {seconds, reason}``), by this policy, first match wins:

1. ``nobody_watching``: no *other* participant has the map on screen -> 30 s;
2. ``at_place``: the participant is at a meeting point (a ``meet`` place) -> 15 s;
3. ``stationary``: the participant moved less than ``stationary_distance_m`` (25 m)
   over the last ``stationary_window_s`` (60 s) -> 10 s;
4. ``watched``: otherwise -> the base interval (2 s).

Rule (privacy): "moved less than 25 m over the last 60 s" must not keep a position for
60 s when positions are forgotten after 30 s.  :class:`Stillness` therefore keeps an
*anchor*, a copy of an earlier fix of the same participant that is never older than the
location TTL, and the *drift*: how far (east and north, in metres) the anchor lies from
where the still period began.  A fix whose displacement since the start (drift plus
fix minus anchor) exceeds the distance starts a new period (the fix becomes the anchor,
the drift zero).  Otherwise the period goes on, and once the anchor is half a TTL old the
fix takes its place (the drift grows by the step).  An anchor that reaches the TTL
without such a fix is dropped (:meth:`Stillness.expire`), and so is the period.  So no
copy of a position outlives the TTL, and what is kept longer, the drift, is a
displacement of at most the distance: it cannot place anyone farther than 25 m from
where they are now.  A slow walker is caught as surely as with a 60 s window of fixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

WATCHED: Final = "watched"
STATIONARY: Final = "stationary"
AT_PLACE: Final = "at_place"
NOBODY_WATCHING: Final = "nobody_watching"
REASONS: Final = (WATCHED, STATIONARY, AT_PLACE, NOBODY_WATCHING)

EARTH_RADIUS_M: Final = 6_371_008.8
# An anchor hands over to a fix within the distance once it is this share of the TTL old.
HANDOVER_FRACTION: Final = 0.5
# A fix's accuracy widens the distance up to this many times (a poor fix jitters).
ACCURACY_ALLOWANCE: Final = 4.0


@dataclass(frozen=True, slots=True)
class RatePolicy:
    base_s: float
    stationary_s: float
    at_place_s: float
    unwatched_s: float
    stationary_distance_m: float
    stationary_window_s: float
    ttl_s: float


def choose_interval(
    policy: RatePolicy, *, watched: bool, at_place: bool, stationary: bool
) -> tuple[float, str]:
    """The interval to ask for and its reason (the module's rules, in order)."""
    if not watched:
        return policy.unwatched_s, NOBODY_WATCHING
    if at_place:
        return policy.at_place_s, AT_PLACE
    if stationary:
        return policy.stationary_s, STATIONARY
    return policy.base_s, WATCHED


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance (haversine); antimeridian and poles included."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def offset_m(lat1: float, lng1: float, lat2: float, lng2: float) -> tuple[float, float]:
    """East and north metres from point 1 to point 2 (local, for short distances;
    longitudes wrap across the antimeridian)."""
    dlng = (lng2 - lng1 + 180.0) % 360.0 - 180.0
    mid = math.radians((lat1 + lat2) / 2)
    return (
        EARTH_RADIUS_M * math.radians(dlng) * math.cos(mid),
        EARTH_RADIUS_M * math.radians(lat2 - lat1),
    )


@dataclass(slots=True)
class Stillness:
    """One participant's still period (see the module's privacy rule)."""

    anchor_lat: float = math.nan
    anchor_lng: float = math.nan
    anchor_at: float | None = None  # when the anchor's fix was received
    still_since: float | None = None
    drift_east_m: float = 0.0  # where the anchor lies from the period's start
    drift_north_m: float = 0.0

    def observe(
        self,
        lat: float,
        lng: float,
        at: float,
        policy: RatePolicy,
        accuracy: float | None = None,
    ) -> bool:
        """A new fix received at ``at``; ``True`` if it moved (a new still period).

        A displacement within the fix's ``accuracy`` (up to four times the distance)
        is not movement: a phone on a table whose balanced-power fixes jitter by 40 m
        stays stationary."""
        self.expire(at, policy)
        if self.anchor_at is not None:
            east, north = offset_m(self.anchor_lat, self.anchor_lng, lat, lng)
            east += self.drift_east_m
            north += self.drift_north_m
            limit = policy.stationary_distance_m
            if accuracy is not None:
                limit = max(limit, min(accuracy, ACCURACY_ALLOWANCE * limit))
            if math.hypot(east, north) <= limit:
                if at - self.anchor_at >= HANDOVER_FRACTION * policy.ttl_s:
                    self.anchor_lat, self.anchor_lng, self.anchor_at = lat, lng, at
                    self.drift_east_m, self.drift_north_m = east, north
                return False
        self.anchor_lat, self.anchor_lng, self.anchor_at = lat, lng, at
        self.drift_east_m = self.drift_north_m = 0.0
        self.still_since = at
        return True

    def expire(self, now: float, policy: RatePolicy) -> bool:
        """Drop an anchor that reached the TTL (and the still period); ``True`` if dropped."""
        if now >= self.expires_at(policy):  # the same sum as expires_at: no rounding gap
            self.forget()
            return True
        return False

    def forget(self) -> None:
        self.anchor_lat = self.anchor_lng = math.nan
        self.anchor_at = None
        self.still_since = None
        self.drift_east_m = self.drift_north_m = 0.0

    def expires_at(self, policy: RatePolicy) -> float:
        return math.inf if self.anchor_at is None else self.anchor_at + policy.ttl_s

    def stationary(self, now: float, policy: RatePolicy) -> bool:
        return self.still_since is not None and now - self.still_since >= policy.stationary_window_s
