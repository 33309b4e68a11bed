"""The update-interval policy and the stillness detector (sans-io, issue 15)."""

from __future__ import annotations

import math
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from locshare.proto._rates import (
    AT_PLACE,
    NOBODY_WATCHING,
    STATIONARY,
    WATCHED,
    RatePolicy,
    Stillness,
    choose_interval,
    distance_m,
)

POLICY = RatePolicy(
    base_s=2.0,
    stationary_s=10.0,
    at_place_s=15.0,
    unwatched_s=30.0,
    stationary_distance_m=25.0,
    stationary_window_s=60.0,
    ttl_s=30.0,
)
M_PER_DEG = 111_195.0  # along a meridian


@given(st.booleans(), st.booleans(), st.booleans())
def test_the_first_matching_rule_wins(watched: bool, at_place: bool, stationary: bool) -> None:
    seconds, reason = choose_interval(
        POLICY, watched=watched, at_place=at_place, stationary=stationary
    )
    if not watched:
        assert (seconds, reason) == (30.0, NOBODY_WATCHING)
    elif at_place:
        assert (seconds, reason) == (15.0, AT_PLACE)
    elif stationary:
        assert (seconds, reason) == (10.0, STATIONARY)
    else:
        assert (seconds, reason) == (2.0, WATCHED)


def test_distance_across_the_antimeridian_and_near_a_pole() -> None:
    assert math.isclose(distance_m(0.0, 179.9999, 0.0, -179.9999), 22.24, rel_tol=0.01)
    assert distance_m(89.9999, 0.0, 89.9999, 180.0) < 25.0


# Of the distance, in each axis: any two fixes lie within 0.35 * 2 * sqrt(2) = 0.99 of
# the distance of each other (hypothesis found that 0.4, two fixes 28 m apart at the
# corners of the square, is rightly movement: the period counts from its first fix).
jitter = st.floats(-0.35, 0.35)


@given(st.lists(st.tuples(jitter, jitter), min_size=31, max_size=60))
def test_jitter_within_half_the_distance_is_stationary_after_the_window(
    offsets: list[tuple[float, float]],
) -> None:
    """Fixes every 2 s scattered within 25 m of each other: stationary once 60 s have
    passed, and never "moved" after the first fix."""
    still = Stillness()
    lat0, lng0 = 48.0, 11.0
    scale = 25.0 / M_PER_DEG
    for i, (dy, dx) in enumerate(offsets):
        moved = still.observe(
            lat0 + dy * scale, lng0 + dx * scale / math.cos(0.84), i * 2.0, POLICY
        )
        assert moved == (i == 0)
    now = (len(offsets) - 1) * 2.0
    assert still.stationary(now, POLICY) == (now >= 60.0)


@given(st.floats(1.2, 20.0), st.integers(2, 30))
def test_walking_away_is_never_stationary(speed_m_s: float, every_s: int) -> None:
    """A walker (1.2 m/s and up) sending every 2-30 s never counts as stationary for
    long: every still period ends within 25 m (plus one interval) of walking."""
    still = Stillness()
    t = 0.0
    for _ in range(100):
        still.observe(48.0 + speed_m_s * t / M_PER_DEG, 11.0, t, POLICY)
        assert not still.stationary(t, POLICY)
        t += every_s


@given(st.lists(st.tuples(st.floats(0.1, 20.0), jitter), min_size=1, max_size=80))
def test_no_anchor_outlives_the_location_ttl(steps: list[tuple[float, float]]) -> None:
    """Privacy: the anchor is a copy of a position; it must be gone once it is as old as
    the TTL, whatever the timing of the fixes (the actor calls expire at
    ``expires_at``)."""
    still = Stillness()
    t = 0.0
    for gap, dy in steps:
        t_next = t + gap
        expires = still.expires_at(POLICY)
        if expires <= t_next:
            still.expire(expires, POLICY)
            assert still.anchor_at is None and still.still_since is None
        still.observe(48.0 + dy * 25.0 / M_PER_DEG, 11.0, t_next, POLICY)
        assert still.anchor_at is not None and t_next - still.anchor_at < POLICY.ttl_s
        t = t_next


def test_jitter_within_a_poor_fixs_accuracy_is_not_movement() -> None:
    still = Stillness()
    step = 40.0 / M_PER_DEG  # 40 m apart, accuracy 50 m
    for i in range(40):
        moved = still.observe(48.0 + (step if i % 2 else 0.0), 11.0, i * 2.0, POLICY, 50.0)
        assert moved == (i == 0)
    assert still.stationary(78.0, POLICY)
    # ... but not beyond four times the distance, whatever the accuracy claims.
    assert still.observe(48.0 + 150.0 / M_PER_DEG, 11.0, 80.0, POLICY, 1000.0)


def test_the_policy_imports_without_trio() -> None:
    code = "import sys\nsys.modules['trio'] = None\nimport locshare.proto._rates\n"
    subprocess.run([sys.executable, "-c", code], check=True)
