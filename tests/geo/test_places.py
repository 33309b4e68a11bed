"""Places: parsing and refusals, the arrival rule, hysteresis, retention, projection.

Positions are built with an independent spherical "destination point" formula
(:func:`offset`), so the projection under test is not its own oracle; the state
machine is checked against a plain-Python oracle fed by the exact
``Place.signed_distance_m``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from locshare.errors import InvalidRequest
from locshare.geo import GeoIndex, Place, PlaceEvents, PlaceIndex, parse_place
from locshare.geo._places import (
    ACCURACY_DEPTH_FRACTION,
    ASSUMED_ACCURACY_M,
    FIXES_TO_CHANGE,
    MAX_PLACES_PER_SESSION,
    POLYGON_MAX_VERTICES,
)
from locshare.geo._projection import EARTH_RADIUS_M

TTL = 30.0
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- helpers ------------------------------------------------------------------------------
def offset(lat0: float, lng0: float, east_m: float, north_m: float) -> tuple[float, float]:
    """The point ``hypot(east, north)`` metres from ``(lat0, lng0)`` at bearing
    ``atan2(east, north)``, on the sphere (the textbook destination-point formula)."""
    delta = math.hypot(east_m, north_m) / EARTH_RADIUS_M
    theta = math.atan2(east_m, north_m)
    phi1, lam1 = math.radians(lat0), math.radians(lng0)
    sin_phi2 = math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    lam2 = lam1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * sin_phi2,
    )
    lng = (math.degrees(lam2) + 180.0) % 360.0 - 180.0
    return math.degrees(phi2), lng


def circle_data(lat: float, lng: float, radius: float | None = 50.0, **extra: object) -> dict:
    data: dict[str, object] = {
        "name": "Camp",
        "kind": "meet",
        "geometry": {"type": "Point", "coordinates": [lng, lat]},
    }
    if radius is not None:
        data["radius_m"] = radius
    data.update(extra)
    return data


def polygon_data(lat0: float, lng0: float, ring_m: list[tuple[float, float]]) -> dict:
    ring = [list(offset(lat0, lng0, e, n))[::-1] for e, n in ring_m]
    ring.append(ring[0])
    return {
        "name": "Lot",
        "kind": "parking",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def star(radii: list[float]) -> list[tuple[float, float]]:
    """A star-shaped (so simple) ring in metres around the origin."""
    n = len(radii)
    return [
        (r * math.sin(2 * math.pi * i / n), r * math.cos(2 * math.pi * i / n))
        for i, r in enumerate(radii)
    ]


class Rig:
    """One session (block) with places and participants, one fix per call."""

    def __init__(self, places: list[Place], slots: int = 1) -> None:
        self.index = GeoIndex(ttl_s=TTL)
        self.block = self.index.allocate_block()
        self.slots = [self.index.allocate_slot(self.block) for _ in range(slots)]
        self.places = PlaceIndex()
        self.ids = [self.places.add_place(self.block, p) for p in places]
        self.now = 0.0

    def fix(
        self, lat: float, lng: float, accuracy: float | None = 5.0, slot: int = 0
    ) -> PlaceEvents:
        self.now += 1.0
        self.index.update(
            self.block, self.slots[slot], lat, lng, received_at=self.now, accuracy=accuracy
        )
        return self.places.tick(self.index.arrays(), self.now)

    def tick(self, dt: float = 1.0) -> PlaceEvents:
        self.now += dt
        self.index.tick(self.now)
        return self.places.tick(self.index.arrays(), self.now)


def counts(events: list[PlaceEvents]) -> tuple[int, int]:
    return (
        sum(len(e.arrivals) for e in events),
        sum(len(e.departures) for e in events),
    )


# --- parsing ----------------------------------------------------------------------------
def test_parse_circle_defaults_and_round_trip() -> None:
    place = parse_place(circle_data(52.5, 13.4, radius=None, name="  Camp  "))
    assert place.name == "Camp" and place.kind == "meet"
    assert place.radius_m == 50.0 and not place.is_polygon
    assert place.to_json() == circle_data(52.5, 13.4, radius=50.0)
    assert place.margin_m == pytest.approx(10.0)
    assert place.depth_m == place.reach_m == 50.0


def test_parse_polygon_across_the_antimeridian() -> None:
    ring = [[179.999, -0.001], [-179.999, -0.001], [-179.999, 0.001], [179.999, 0.001]]
    data = {
        "name": "Dateline lot",
        "kind": "parking",
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    }
    place = parse_place(data)
    assert place.to_json() == data
    # 0.002 deg x 0.002 deg at the equator: 222 m square, centred on the antimeridian.
    side = 0.002 * math.pi / 180 * EARTH_RADIUS_M
    np.testing.assert_allclose(place.depth_m, side / 2, rtol=1e-3)
    np.testing.assert_allclose(place.margin_m, 0.2 * side / math.sqrt(math.pi), rtol=1e-3)
    inside = place.signed_distance_m([0.0, 0.0005, 0.0], [180.0, -179.9995, 179.99])
    np.testing.assert_allclose(inside[:2], [side / 2, side / 2 - 55.6], atol=0.5)
    assert inside[2] < -1000


BAD_PLACES = [
    ([], None, "JSON object"),
    ({**circle_data(0, 0), "name": 5}, "name", "string"),
    ({**circle_data(0, 0), "name": "   "}, "name", "empty"),
    ({**circle_data(0, 0), "name": "x" * 61}, "name", "60"),
    ({**circle_data(0, 0), "name": "a\x00b"}, "name", "control"),
    ({**circle_data(0, 0), "kind": "party"}, "kind", "meet"),
    ({**circle_data(0, 0), "kind": None}, "kind", "meet"),
    ({**circle_data(0, 0), "geometry": "POINT(0 0)"}, "geometry", "GeoJSON"),
    ({**circle_data(0, 0), "geometry": {"coordinates": [0, 0]}}, "geometry", "type"),
    ({**circle_data(0, 0), "geometry": {"type": "LineString"}}, "geometry", "Point or Polygon"),
    ({**circle_data(0, 0), "geometry": {"type": "Point", "coordinates": [0]}}, None, "position"),
    (
        {**circle_data(0, 0), "geometry": {"type": "Point", "coordinates": ["0", "0"]}},
        "geometry.coordinates",
        "numbers",
    ),
    (
        {**circle_data(0, 0), "geometry": {"type": "Point", "coordinates": [True, 0]}},
        "geometry.coordinates",
        "numbers",
    ),
    (
        {**circle_data(0, 0), "geometry": {"type": "Point", "coordinates": [0, 91]}},
        "geometry.coordinates",
        "latitude",
    ),
    (
        {**circle_data(0, 0), "geometry": {"type": "Point", "coordinates": [180.5, 0]}},
        "geometry.coordinates",
        "longitude",
    ),
    (
        {**circle_data(0, 0), "geometry": {"type": "Point", "coordinates": [math.nan, 0]}},
        "geometry.coordinates",
        "longitude",
    ),
    (circle_data(0, 0, radius=9.99), "radius_m", "between 10 and 2000"),
    (circle_data(0, 0, radius=2000.01), "radius_m", "between 10 and 2000"),
    (circle_data(0, 0, radius="50"), "radius_m", "number"),
    (circle_data(0, 0, radius=True), "radius_m", "number"),
    ({**polygon_data(0, 0, star([50.0] * 4)), "radius_m": 50}, "radius_m", "only to a Point"),
    (
        {"name": "x", "kind": "poi", "geometry": {"type": "Polygon", "coordinates": []}},
        "geometry.coordinates",
        "rings",
    ),
    (
        {
            "name": "x",
            "kind": "poi",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 1e-3], [0, 0]]]},
        },
        "geometry.coordinates",
        "at least 4",
    ),
    (
        {
            "name": "x",
            "kind": "poi",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [0, 1e-3], [1e-3, 1e-3], [1e-3, 0]]],
            },
        },
        "geometry.coordinates",
        "closed",
    ),
]


@pytest.mark.parametrize(("data", "field", "fragment"), BAD_PLACES)
def test_bad_places_are_refused_with_field_and_reason(
    data: object, field: str | None, fragment: str
) -> None:
    with pytest.raises(InvalidRequest, match=fragment) as info:
        parse_place(data)
    if field is not None:
        assert info.value.field == field
    assert info.value.code == "invalid_request" and info.value.http_status == 422


def test_self_intersecting_polygon_gives_is_valid_reason_in_degrees() -> None:
    # A bow tie: its edges cross at its middle, (0.0005, 0.0005).
    bow = [[0.0, 0.0], [1e-3, 1e-3], [1e-3, 0.0], [0.0, 1e-3], [0.0, 0.0]]
    data = {"name": "Bow", "kind": "hazard", "geometry": {"type": "Polygon", "coordinates": [bow]}}
    with pytest.raises(
        InvalidRequest, match=r"Self-intersection at \[0\.000500, 0\.000500\]"
    ) as info:
        parse_place(data)
    assert info.value.field == "geometry"


def test_a_hole_outside_its_shell_is_invalid() -> None:
    shell = [[0.0, 0.0], [1e-3, 0.0], [1e-3, 1e-3], [0.0, 1e-3], [0.0, 0.0]]
    hole = [[2e-3, 2e-3], [3e-3, 2e-3], [3e-3, 3e-3], [2e-3, 2e-3]]
    data = {
        "name": "x",
        "kind": "poi",
        "geometry": {"type": "Polygon", "coordinates": [shell, hole]},
    }
    with pytest.raises(InvalidRequest, match="Hole lies outside shell"):
        parse_place(data)


def test_vertex_limit_is_500() -> None:
    ok = polygon_data(10.0, 20.0, star([300.0] * POLYGON_MAX_VERTICES))
    assert len(parse_place(ok).rings[0]) == POLYGON_MAX_VERTICES + 1  # type: ignore[index]
    too_many = polygon_data(10.0, 20.0, star([300.0] * (POLYGON_MAX_VERTICES + 1)))
    with pytest.raises(InvalidRequest, match="501 vertices") as info:
        parse_place(too_many)
    assert info.value.field == "geometry.coordinates"


def test_a_polygon_reaching_too_far_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"reaches .* km") as info:
        parse_place(polygon_data(0.0, 0.0, star([60_000.0] * 6)))
    assert info.value.field == "geometry"


# --- the rule ---------------------------------------------------------------------------
def test_arrival_needs_two_consecutive_inside_fixes() -> None:
    place = parse_place(circle_data(48.0, 11.0, radius=100.0))
    rig = Rig([place])
    inside = offset(48.0, 11.0, 10.0, 0.0)
    outside_band = offset(48.0, 11.0, 110.0, 0.0)  # beyond the edge, within the margin
    assert not rig.fix(*inside)
    assert not rig.fix(*outside_band)  # resets the count
    assert not rig.fix(*inside)
    events = rig.fix(*inside)
    assert events.arrivals.tolist() == [[rig.block, rig.slots[0], rig.ids[0]]]
    assert rig.places.present(rig.block).tolist() == [[rig.slots[0], rig.ids[0]]]


def test_departure_needs_two_fixes_beyond_the_margin() -> None:
    place = parse_place(circle_data(48.0, 11.0, radius=100.0))
    rig = Rig([place])
    inside = offset(48.0, 11.0, 0.0, 20.0)
    for _ in range(FIXES_TO_CHANGE):
        rig.fix(*inside)
    assert rig.places.statistics().present == 1
    # 119 m: outside the circle, inside the 20 % margin (120 m): never a departure.
    assert not any(rig.fix(*offset(48.0, 11.0, 0.0, 119.0)) for _ in range(5))
    far = offset(48.0, 11.0, 0.0, 130.0)  # beyond margin + half the 5 m accuracy
    assert not rig.fix(*far)
    assert not rig.fix(*inside)  # resets
    assert not rig.fix(*far)
    events = rig.fix(*far)
    assert events.departures.tolist() == [[rig.block, rig.slots[0], rig.ids[0]]]
    assert rig.places.statistics().present == 0


def test_accuracy_must_fit_mostly_inside_capped_at_the_place_depth() -> None:
    place = parse_place(circle_data(0.0, 0.0, radius=100.0))
    rig = Rig([place])
    at_80 = offset(0.0, 0.0, 80.0, 0.0)  # 20 m inside
    # Accuracy 50 m: needs 25 m inside; 20 m is not enough.
    assert counts([rig.fix(*at_80, accuracy=50.0) for _ in range(4)]) == (0, 0)
    # Accuracy 30 m: needs 15 m.
    assert counts([rig.fix(*at_80, accuracy=30.0) for _ in range(2)]) == (1, 0)
    # A terrible fix (1 km) counts when in the inner half of the place (cap: 50 m).
    rig2 = Rig([place])
    assert counts([rig2.fix(*offset(0.0, 0.0, 55.0, 0.0), accuracy=1000.0) for _ in range(3)]) == (
        0,
        0,
    )
    assert counts([rig2.fix(*offset(0.0, 0.0, 45.0, 0.0), accuracy=1000.0) for _ in range(2)]) == (
        1,
        0,
    )
    # No accuracy: assumed ASSUMED_ACCURACY_M.
    rig3 = Rig([place])
    need = ACCURACY_DEPTH_FRACTION * ASSUMED_ACCURACY_M
    edge = offset(0.0, 0.0, 100.0 - need + 0.5, 0.0)
    assert counts([rig3.fix(*edge, accuracy=None) for _ in range(3)]) == (0, 0)


def test_a_thin_polygon_is_reachable() -> None:
    """200 m x 10 m: its depth is 5 m, so a 15 m fix must land in its middle 5 m."""
    strip = [(-100.0, -5.0), (100.0, -5.0), (100.0, 5.0), (-100.0, 5.0)]
    place = parse_place(polygon_data(45.0, 7.0, strip))
    np.testing.assert_allclose(place.depth_m, 5.0, rtol=1e-2)
    rig = Rig([place])
    assert counts([rig.fix(*offset(45.0, 7.0, 30.0, 3.5), accuracy=15.0) for _ in range(3)]) == (
        0,
        0,
    )
    assert counts([rig.fix(*offset(45.0, 7.0, 30.0, 1.0), accuracy=15.0) for _ in range(2)]) == (
        1,
        0,
    )


def test_only_new_fixes_count() -> None:
    place = parse_place(circle_data(0.0, 0.0))
    rig = Rig([place])
    assert not rig.fix(0.0, 0.0)
    # The same fix, seen by ten more ticks, is still one fix.
    assert not any(rig.tick(0.1) for _ in range(10))
    assert rig.fix(0.0, 0.0).arrivals.size == 3


def test_an_expired_location_ends_the_presence_and_forgets_the_state() -> None:
    place = parse_place(circle_data(0.0, 0.0))
    rig = Rig([place], slots=2)
    for _ in range(2):
        rig.fix(0.0, 0.0, slot=0)
    rig.fix(0.0, 0.0, slot=1)  # one inside fix: a streak of one
    events = rig.tick(TTL + 1.0)
    assert events.expired.tolist() == [[rig.block, rig.slots[0], rig.ids[0]]]
    assert events.departures.size == 0 and events.arrivals.size == 0
    assert rig.places.statistics().present == 0
    assert not rig.tick(1.0)
    # Slot 1's earlier inside fix was forgotten: one new fix does not make two.
    assert not rig.fix(0.0, 0.0, slot=1)
    assert rig.fix(0.0, 0.0, slot=1).arrivals.size == 3


def test_places_per_session_indices_and_clearing() -> None:
    index = PlaceIndex(initial_rows=1)
    place = parse_place(circle_data(0.0, 0.0))
    assert [index.add_place(7, place) for _ in range(MAX_PLACES_PER_SESSION)] == list(range(20))
    with pytest.raises(InvalidRequest, match="at most 20 places") as info:
        index.add_place(7, place)
    assert info.value.field == "places"
    assert index.remove_place(7, 3) is place
    with pytest.raises(KeyError):
        index.remove_place(7, 3)
    assert index.add_place(7, place) == 3  # reused
    assert index.add_place(8, place) == 0  # another block grows the rows
    assert index.statistics().sessions == 2 and index.statistics().places == 21
    index.clear_block(7)
    assert index.places(7) == {} and index.statistics().places == 1
    for i in range(1):
        index.remove_place(8, i)
    assert index.statistics().sessions == 0
    index.clear_block(99)  # no-op


def test_clear_slot_forgets_silently() -> None:
    place = parse_place(circle_data(0.0, 0.0))
    rig = Rig([place])
    rig.fix(0.0, 0.0)
    rig.fix(0.0, 0.0)
    # The participant leaves: the runtime frees the slot in both indexes.
    rig.index.free_slot(rig.block, rig.slots[0])
    rig.places.clear_slot(rig.block, rig.slots[0])
    assert rig.places.statistics().present == 0
    assert not rig.tick()
    assert rig.index.allocate_slot(rig.block) == rig.slots[0]  # a newcomer, reusing it
    assert not rig.fix(0.0, 0.0)
    assert rig.fix(0.0, 0.0).arrivals.size == 3


# --- properties -------------------------------------------------------------------------
centres = st.tuples(st.floats(-89.9, 89.9), st.floats(-180.0, 180.0))
accuracies = st.floats(1.0, 60.0)


@st.composite
def places_in_metres(draw: st.DrawFn) -> tuple[str, float | list[tuple[float, float]]]:
    """A circle's radius, or a star polygon's ring, in metres."""
    if draw(st.booleans()):
        return "circle", draw(st.floats(10.0, 2000.0))
    size = draw(st.floats(20.0, 1500.0))
    radii = draw(st.lists(st.floats(0.4, 1.0), min_size=3, max_size=40))
    return "polygon", star([size * r for r in radii])


def build(shape: tuple[str, float | list[tuple[float, float]]], lat: float, lng: float) -> Place:
    kind, value = shape
    if kind == "circle":
        assert isinstance(value, float)
        return parse_place(circle_data(lat, lng, radius=value))
    assert isinstance(value, list)
    return parse_place(polygon_data(lat, lng, value))


@SETTINGS
@given(
    places_in_metres(),
    centres,
    st.lists(st.tuples(st.floats(0, 2 * math.pi), accuracies), min_size=2, max_size=12),
    st.data(),
)
def test_well_inside_arrives_after_two_fixes_and_never_departs(
    shape: tuple[str, float | list[tuple[float, float]]],
    centre: tuple[float, float],
    jitter: list[tuple[float, float]],
    data: st.DataObject,
) -> None:
    place = build(shape, *centre)
    # Points within a fifth of the depth around the deepest point: always deep enough.
    lat0, lng0 = place_deepest_point(place)
    rig = Rig([place])
    events = []
    for angle, accuracy in jitter:
        r = place.depth_m * 0.2 * data.draw(st.floats(0.0, 1.0))
        events.append(
            rig.fix(*offset(lat0, lng0, r * math.sin(angle), r * math.cos(angle)), accuracy)
        )
    assert [len(e.arrivals) for e in events[:2]] == [0, 1]
    assert counts(events) == (1, 0)


def place_deepest_point(place: Place) -> tuple[float, float]:
    if place.shape is None:
        return place.lat, place.lng
    import shapely

    inscribed = shapely.maximum_inscribed_circle(place.shape, place.depth_m * 1e-3)
    x, y = shapely.get_coordinates(inscribed)[0]
    lat, lng = place.frame.inverse(x, y)
    return float(lat), float(lng)


@SETTINGS
@given(
    st.floats(10.0, 2000.0),
    centres,
    st.lists(
        st.tuples(st.floats(0, 2 * math.pi), st.floats(0.8, 1.19), accuracies),
        min_size=1,
        max_size=40,
    ),
)
def test_circling_at_the_edge_within_the_margin_never_flaps(
    radius: float, centre: tuple[float, float], walk: list[tuple[float, float, float]]
) -> None:
    place = parse_place(circle_data(*centre, radius=radius))
    rig = Rig([place])
    events = [
        rig.fix(*offset(*centre, radius * f * math.sin(a), radius * f * math.cos(a)), acc)
        for a, f, acc in walk
    ]
    arrivals, departures = counts(events)
    assert arrivals <= 1 and departures == 0


@SETTINGS
@given(
    st.lists(st.floats(0.5, 1.0), min_size=3, max_size=30),
    centres,
    st.lists(
        st.tuples(st.floats(-0.3, 0.3), st.integers(0, 10_000), accuracies), min_size=1, max_size=40
    ),
)
def test_a_polygon_edge_walk_within_the_margin_never_flaps(
    radii: list[float], centre: tuple[float, float], walk: list[tuple[float, int, float]]
) -> None:
    """Fixes near a polygon's boundary, never beyond its margin."""
    place = parse_place(polygon_data(*centre, star([300.0 * r for r in radii])))
    ring = place.rings[0]  # type: ignore[index]
    rig = Rig([place])
    events = []
    for shift, which, accuracy in walk:
        i = which % (len(ring) - 1)
        lng_v, lat_v = ring[i]
        # Along the ray from the centre through a vertex: +-30 % of the way, capped
        # so the fix stays within the margin.
        lat_f = lat_v + shift * (lat_v - place.lat)
        lng_f = lng_v + shift * (((lng_v - place.lng + 180) % 360) - 180)
        distance = float(place.signed_distance_m(lat_f, lng_f))
        assume(distance > -place.margin_m)
        events.append(rig.fix(lat_f, lng_f, accuracy))
    arrivals, departures = counts(events)
    assert arrivals <= 1 and departures == 0


def oracle(place: Place, fixes: list[tuple[float, float, float]]) -> list[str]:
    """Rules 1-2 in plain Python from the exact signed distance."""
    present, streak, out = False, 0, []
    for lat, lng, accuracy in fixes:
        s = float(place.signed_distance_m(lat, lng))
        need = ACCURACY_DEPTH_FRACTION * min(accuracy, place.depth_m)
        qualifies = s <= -(place.margin_m + need) if present else s >= need
        streak = streak + 1 if qualifies else 0
        if streak >= FIXES_TO_CHANGE:
            out.append("departure" if present else "arrival")
            present, streak = not present, 0
        else:
            out.append("")
    return out


@SETTINGS
@given(
    st.lists(st.tuples(places_in_metres(), centres), min_size=1, max_size=4),
    st.lists(
        st.lists(
            st.tuples(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0), accuracies),
            min_size=1,
            max_size=10,
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_the_vectorized_tick_agrees_with_a_plain_oracle(
    sessions: list[tuple[tuple[str, float | list[tuple[float, float]]], tuple[float, float]]],
    walks: list[list[tuple[float, float, float]]],
) -> None:
    """Several sessions, each one place and a few riders walking around it (offsets in
    units of the place's reach), all in one tick per step."""
    index = GeoIndex(ttl_s=TTL)
    places = PlaceIndex(initial_rows=1)
    riders = []
    for shape, centre in sessions:
        place = build(shape, *centre)
        block = index.allocate_block()
        places.add_place(block, place)
        for walk in walks:
            fixes = [
                (*offset(place.lat, place.lng, e * place.reach_m, n * place.reach_m), acc)
                for e, n, acc in walk
            ]
            riders.append((block, index.allocate_slot(block), place, fixes))
    expected = {(b, s): oracle(p, f) for b, s, p, f in riders}
    got: dict[tuple[int, int], list[str]] = {(b, s): [] for b, s, _, _ in riders}
    steps = max(len(f) for _, _, _, f in riders)
    for step in range(steps):
        now = float(step + 1)
        moved = set()
        for block, slot, _, fixes in riders:
            if step < len(fixes):
                lat, lng, acc = fixes[step]
                index.update(block, slot, lat, lng, received_at=now, accuracy=acc)
                moved.add((block, slot))
        events = places.tick(index.arrays(), now)
        arrived = {(b, s) for b, s, _ in events.arrivals.tolist()}
        departed = {(b, s) for b, s, _ in events.departures.tolist()}
        for key in moved:
            got[key].append("arrival" if key in arrived else "departure" if key in departed else "")
    assert got == expected


@SETTINGS
@given(
    places_in_metres(),
    st.lists(
        st.tuples(st.floats(-1.5, 1.5), st.floats(-1.5, 1.5), accuracies), min_size=2, max_size=10
    ),
    st.sampled_from([(0.0, 180.0), (0.0, -179.9999), (81.0, 45.0), (89.99, -120.0), (-89.5, 0.0)]),
)
def test_same_answers_across_the_antimeridian_and_near_the_poles(
    shape: tuple[str, float | list[tuple[float, float]]],
    walk: list[tuple[float, float, float]],
    elsewhere: tuple[float, float],
) -> None:
    """The same place and fixes (in metres from the centre) at the equator and at an
    awkward spot: the same signed distances (to a centimetre) and the same events."""
    answers = []
    for centre in [(0.0, 0.0), elsewhere]:
        place = build(shape, *centre)
        fixes = [
            (*offset(*centre, e * place.reach_m, n * place.reach_m), acc) for e, n, acc in walk
        ]
        lat = np.array([f[0] for f in fixes])
        lng = np.array([f[1] for f in fixes])
        distances = place.signed_distance_m(lat, lng)
        rig = Rig([place])
        events = [rig.fix(la, ln, acc) for la, ln, acc in fixes]
        answers.append((distances, [(len(e.arrivals), len(e.departures)) for e in events], place))
    (d0, e0, p0), (d1, e1, p1) = answers
    np.testing.assert_allclose(d1, d0, atol=0.01)
    np.testing.assert_allclose([p1.margin_m, p1.reach_m], [p0.margin_m, p0.reach_m], rtol=1e-6)
    # The inscribed circle is found to a thousandth of the equivalent radius.
    np.testing.assert_allclose(p1.depth_m, p0.depth_m, rtol=2e-3)
    # Events may differ only where a fix sits within a centimetre of a threshold.
    needs = [ACCURACY_DEPTH_FRACTION * min(acc, p0.depth_m) for _, _, acc in walk]
    margin = min(
        min(abs(d - n), abs(d + p0.margin_m + n)) for d, n in zip(d0.tolist(), needs, strict=True)
    )
    assume(margin > 0.02)
    assert e1 == e0
