"""The flush pacer (sans-io): the flush window from the server's CPU share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locshare._pacing import GAIN_S, FlushPacer


def test_below_target_the_window_stays_at_the_configured_interval() -> None:
    pacer = FlushPacer(0.1, 0.25)
    for _ in range(100):
        assert pacer.observe(cpu_s=0.5, wall_s=1.0) == 0.1
    assert pacer.cpu_share == 0.5


def test_a_busy_core_widens_the_window_up_to_the_maximum_then_it_narrows_again() -> None:
    pacer = FlushPacer(0.1, 0.25)
    widths = [pacer.observe(cpu_s=0.95, wall_s=1.0) for _ in range(20)]
    assert widths[0] == pytest.approx(0.1 + GAIN_S * 0.2)  # in proportion to the excess
    assert widths == sorted(widths) and widths[-1] == 0.25
    narrowing = [pacer.observe(cpu_s=0.3, wall_s=1.0) for _ in range(10)]
    assert narrowing == sorted(narrowing, reverse=True) and narrowing[-1] == 0.1


def test_the_window_settles_where_the_load_meets_the_target() -> None:
    """A load whose CPU share falls as the window widens: the controller finds the width
    at which the share is the target, without oscillating past the bounds."""
    pacer = FlushPacer(0.1, 0.5)

    def share(window_s: float) -> float:  # per-frame cost: share ~ 1 / window
        return min(1.0, 0.09 / window_s)

    for _ in range(200):
        pacer.observe(cpu_s=share(pacer.window_s), wall_s=1.0)
    assert pacer.window_s == pytest.approx(0.12, abs=0.005)
    assert share(pacer.window_s) == pytest.approx(0.75, abs=0.03)


def test_equal_bounds_fix_the_window() -> None:
    pacer = FlushPacer(0.1, 0.1)
    assert not pacer.adaptive
    assert pacer.observe(cpu_s=1.0, wall_s=1.0) == 0.1
    assert pacer.cpu_share == 1.0  # still measured


def test_no_elapsed_time_changes_nothing() -> None:
    pacer = FlushPacer(0.1, 0.25)
    assert pacer.observe(cpu_s=5.0, wall_s=0.0) == 0.1


@pytest.mark.parametrize(
    ("base", "maximum", "target"),
    [(0.0, 0.1, 0.75), (0.2, 0.1, 0.75), (0.1, 0.2, 0.0), (0.1, 0.2, 1.0)],
)
def test_invalid_bounds_are_refused(base: float, maximum: float, target: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is ours
        FlushPacer(base, maximum, target=target)


@given(
    st.floats(0.001, 1.0),
    st.floats(0.0, 4.0),
    st.lists(st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 10.0)), max_size=50),
)
def test_the_window_never_leaves_its_bounds(
    base: float, extra: float, samples: list[tuple[float, float]]
) -> None:
    pacer = FlushPacer(base, base + extra)
    for cpu_s, wall_s in samples:
        window = pacer.observe(cpu_s, wall_s)
        assert base <= window <= base + extra
