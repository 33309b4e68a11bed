"""Bounding boxes (antimeridian-aware) and Web Mercator fitting: examples and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from locshare.geo import BBox, bboxes, box_pixel_size, fit, lng_span
from locshare.geo._viewport import MERCATOR_MAX_LAT

lats = st.floats(-90, 90, allow_nan=False)
lngs = st.floats(-180, 180, allow_nan=False)
points = st.lists(st.tuples(lats, lngs), min_size=1, max_size=50)


def box_of(pts: list[tuple[float, float]]) -> BBox:
    lat = np.array([[p[0] for p in pts]])
    lng = np.array([[p[1] for p in pts]])
    w, s, e, n, count = bboxes(lat, lng)
    assert count[0] == len(pts)
    return BBox(float(w[0]), float(s[0]), float(e[0]), float(n[0]))


def shapely_box(box: BBox) -> shapely.Geometry:
    """Independent oracle: the box as (one or two) shapely polygons in lng/lat."""
    if box.west <= box.east:
        return shapely.box(box.west, box.south, box.east, box.north)
    return shapely.union(
        shapely.box(box.west, box.south, 180, box.north),
        shapely.box(-180, box.south, box.east, box.north),
    )


def minimal_span(pts: list[tuple[float, float]]) -> float:
    """Brute force: the smallest arc holding every longitude starts at one of them."""
    longitudes = [p[1] for p in pts]
    return min(max((x - w) % 360 for x in longitudes) for w in longitudes)


# --- bounding boxes -----------------------------------------------------------------
def test_simple_box() -> None:
    box = box_of([(52.5, 13.4), (48.1, 11.6), (50.1, 8.7)])
    np.testing.assert_allclose([box.west, box.south, box.east, box.north], [8.7, 48.1, 13.4, 52.5])


def test_box_crossing_the_antimeridian() -> None:
    box = box_of([(-17.7, 178.4), (-13.8, -171.8), (-21.1, -175.2)])  # Fiji, Samoa, Tonga
    assert box.west > box.east
    np.testing.assert_allclose([box.west, box.east], [178.4, -171.8])
    assert box.lng_span == pytest.approx(9.8)


def test_tie_prefers_the_box_that_does_not_cross() -> None:
    box = box_of([(0, -90), (0, 90)])  # two equal gaps of 180 degrees
    assert (box.west, box.east) == (-90, 90)


def test_single_point_and_empty_rows() -> None:
    lat = np.array([[10.0, np.nan], [np.nan, np.nan]])
    lng = np.array([[20.0, np.nan], [np.nan, np.nan]])
    w, s, e, n, count = bboxes(lat, lng)
    np.testing.assert_allclose([w[0], s[0], e[0], n[0]], [20, 10, 20, 10])
    assert count.tolist() == [1, 0]
    assert np.isnan([w[1], s[1], e[1], n[1]]).all()


def test_vectorized_rows_are_independent() -> None:
    rng = np.random.default_rng(0)
    lat = rng.uniform(-60, 60, (100, 50))
    lng = rng.uniform(-180, 180, (100, 50))
    lat[::3, 25:] = np.nan
    lng[::3, 25:] = np.nan
    w, s, e, n, _ = bboxes(lat, lng)
    for row in range(0, 100, 7):
        valid = ~np.isnan(lng[row])
        one = box_of(list(zip(lat[row][valid].tolist(), lng[row][valid].tolist(), strict=True)))
        np.testing.assert_allclose(
            [w[row], s[row], e[row], n[row]], [one.west, one.south, one.east, one.north]
        )


@given(points)
def test_every_point_lies_inside_the_box(pts: list[tuple[float, float]]) -> None:
    box = box_of(pts)
    region = shapely_box(box)
    for lat, lng in pts:
        assert box.contains(lat, lng)
        # Shapely's covers() includes the boundary; -180 and 180 are one meridian.
        assert region.covers(shapely.Point(lng, lat)) or (
            region.covers(shapely.Point(-lng, lat)) and abs(lng) == 180
        )


@given(points)
def test_the_box_takes_the_smallest_longitude_span(pts: list[tuple[float, float]]) -> None:
    box = box_of(pts)
    assert box.lng_span == pytest.approx(minimal_span(pts), abs=1e-9)


# --- fitting ------------------------------------------------------------------------
def test_single_participant_gets_the_cap_zoom_on_their_position() -> None:
    result = fit(BBox(13.4, 52.5, 13.4, 52.5), 390, 844, 48, 17)
    assert result.zoom == 17
    np.testing.assert_allclose([result.center_lat, result.center_lng], [52.5, 13.4])


def test_known_fit() -> None:
    # 0.1 x 0.1 degrees around Berlin on a phone: a city-district zoom.
    box = BBox(13.35, 52.45, 13.45, 52.55)
    result = fit(box, 390, 844, 48, 17)
    width, height = box_pixel_size(box, result.zoom)
    assert width <= 390 - 96 and height <= 844 - 96
    bigger_w, bigger_h = box_pixel_size(box, result.zoom + 0.01)
    assert bigger_w > 390 - 96 or bigger_h > 844 - 96
    assert 11 < result.zoom < 12.5


def test_center_of_an_antimeridian_box() -> None:
    result = fit(BBox(170.0, -10.0, -170.0, 10.0), 800, 600, 20, 17)
    assert abs(result.center_lng) == pytest.approx(180.0)
    assert result.center_lat == pytest.approx(0.0, abs=1e-9)


def test_pole_near_boxes_are_clamped_to_the_mercator_limit() -> None:
    result = fit(BBox(-10.0, 80.0, 10.0, 89.99), 390, 844, 48, 17)
    assert math.isfinite(result.zoom) and 0 <= result.zoom <= 17
    assert result.center_lat <= MERCATOR_MAX_LAT
    clamped = BBox(-10.0, 80.0, 10.0, MERCATOR_MAX_LAT)
    width, height = box_pixel_size(clamped, result.zoom)
    assert width <= 390 - 96 + 1e-6 and height <= 844 - 96 + 1e-6


def test_whole_world_on_a_small_screen_is_zoom_zero() -> None:
    result = fit(BBox(-180.0, -85.0, 179.999, 85.0), 100, 100, 10, 17)
    assert result.zoom == 0.0


sizes = st.tuples(st.integers(64, 4000), st.integers(64, 4000)).flatmap(
    lambda wh: st.tuples(st.just(wh[0]), st.just(wh[1]), st.integers(0, (min(wh) - 1) // 2))
)


@settings(max_examples=300)
@given(points, sizes)
@example([(0.0, 0.0), (0.0, 2.225073858507e-313)], (64, 64, 0))  # subnormal span (found)
def test_the_hinted_zoom_really_fits(
    pts: list[tuple[float, float]], size: tuple[int, int, int]
) -> None:
    width, height, padding = size
    box = box_of(pts)
    clamped = BBox(
        box.west, max(box.south, -MERCATOR_MAX_LAT), box.east, min(box.north, MERCATOR_MAX_LAT)
    )
    result = fit(box, width, height, padding, 17)
    assert 0 <= result.zoom <= 17
    box_w, box_h = box_pixel_size(clamped, result.zoom)
    if result.zoom > 0:  # at zoom 0 a box may simply be larger than the screen
        assert box_w <= width - 2 * padding + 1e-6
        assert box_h <= height - 2 * padding + 1e-6
    if result.zoom < 17:  # largest: one more step would not fit
        more_w, more_h = box_pixel_size(clamped, result.zoom + 0.011)
        assume(result.zoom > 0 or more_w > 0)
        assert more_w > width - 2 * padding or more_h > height - 2 * padding or result.zoom == 0


def test_lng_span() -> None:
    assert lng_span(170, -170) == pytest.approx(20)
    assert lng_span(-10, 10) == pytest.approx(20)
    assert lng_span(5, 5) == 0
