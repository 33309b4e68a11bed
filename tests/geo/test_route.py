"""The route: GeoJSON and GPX parsing and refusals, the simplified copy, locating fixes
(against shapely's own line_locate_point / distance), and the convoy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from locshare.errors import InvalidRequest, PayloadTooLarge
from locshare.geo import (
    ROUTE_MAX_POINTS,
    ROUTE_SIMPLIFIED_MAX_POINTS,
    Convoy,
    GeoIndex,
    LocalFrame,
    Route,
    RouteIndex,
    parse_gpx,
    parse_route_geojson,
    unit_vectors,
)
from locshare.geo._route import GPX_MAX_BYTES, SEARCH_TOLERANCE_M, SPEED_BASELINE_S

from .test_places import offset

TTL = 30.0
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AWKWARD = [(0.0, 180.0), (0.0, -179.99), (82.0, 60.0), (89.9, 10.0), (-88.0, -150.0)]


# --- helpers ------------------------------------------------------------------------------
def road(points: int, step_m: float, rng: np.random.Generator, wiggle: float = 0.05) -> np.ndarray:
    """A winding road in metres (east, north), starting at the origin."""
    heading = np.cumsum(rng.normal(0, wiggle, points))
    steps = np.stack([np.sin(heading), np.cos(heading)], axis=1) * step_m
    return np.vstack([[0.0, 0.0], np.cumsum(steps[1:], axis=0)])


def lat_lng_of(metres: np.ndarray, lat0: float, lng0: float) -> tuple[np.ndarray, np.ndarray]:
    pts = [offset(lat0, lng0, e, n) for e, n in metres.tolist()]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def route_at(metres: np.ndarray, lat0: float = 0.0, lng0: float = 0.0) -> Route:
    lat, lng = lat_lng_of(metres, lat0, lng0)
    return Route.from_lat_lng(lat, lng)


def geojson(lat: np.ndarray, lng: np.ndarray) -> dict:
    return {"type": "LineString", "coordinates": np.stack([lng, lat], axis=1).tolist()}


def gpx(
    points: list[tuple[float, float]],
    *,
    tag: str = "trkpt",
    ns: str = "http://www.topografix.com/GPX/1/1",
) -> bytes:
    body = "".join(f'<{tag} lat="{lat}" lon="{lng}"><ele>1</ele></{tag}>' for lat, lng in points)
    wrap = (
        ("<trk><name>t</name><trkseg>", "</trkseg></trk>")
        if tag == "trkpt"
        else ("<rte>", "</rte>")
    )
    xmlns = f' xmlns="{ns}"' if ns else ""
    return f'<?xml version="1.0" encoding="UTF-8"?><gpx version="1.1"{xmlns}>{wrap[0]}{body}{wrap[1]}</gpx>'.encode()


class Convoyer:
    """One session with a route and riders; every call gives every rider a fix."""

    def __init__(self, route: Route, riders: int, *, off_route_m: float = 200.0) -> None:
        self.index = GeoIndex(ttl_s=TTL)
        self.block = self.index.allocate_block()
        self.slots = [self.index.allocate_slot(self.block) for _ in range(riders)]
        self.routes = RouteIndex(off_route_m=off_route_m)
        self.routes.set_route(self.block, route)
        self.now = 0.0

    def step(
        self,
        positions: list[tuple[float, float] | None],
        speeds: list[float | None] | None = None,
        dt: float = 1.0,
    ) -> list[Convoy]:
        self.now += dt
        for i, (slot, where) in enumerate(zip(self.slots, positions, strict=True)):
            if where is not None:
                speed = None if speeds is None else speeds[i]
                self.index.update(self.block, slot, *where, received_at=self.now, speed=speed)
        return self.routes.tick(self.index.arrays(), self.now)


# --- parsing ----------------------------------------------------------------------------
def test_geojson_linestring_and_feature() -> None:
    lat, lng = np.array([1.0, 1.001, 1.002]), np.array([2.0, 2.0, 2.001])
    route = parse_route_geojson(geojson(lat, lng))
    assert route.points == 3
    feature = {"type": "Feature", "properties": {}, "geometry": geojson(lat, lng)}
    assert parse_route_geojson(feature).points == 3
    np.testing.assert_allclose(route.length_m, 111.19 + 157.2, rtol=2e-3)
    assert route.to_geojson(simplified=False) == geojson(lat, lng)


def test_repeated_points_are_dropped() -> None:
    route = parse_route_geojson(
        {"type": "LineString", "coordinates": [[0, 0], [0, 0], [0, 1e-3], [0, 1e-3]]}
    )
    assert route.points == 2


BAD_ROUTES = [
    ([], "route", "GeoJSON object"),
    ({"type": "Polygon", "coordinates": []}, "route", "LineString"),
    ({"type": "Feature", "geometry": None}, "route.geometry", "GeoJSON object"),
    ({"type": "LineString", "coordinates": "0 0, 1 1"}, "route.coordinates", "list"),
    ({"type": "LineString", "coordinates": [[0, 0]]}, "route.coordinates", "at least 2"),
    ({"type": "LineString", "coordinates": [[0, 0], [0, 0]]}, "route.coordinates", "two distinct"),
    ({"type": "LineString", "coordinates": [[0, 0], [0, 95]]}, "route.coordinates", "latitude"),
    (
        {"type": "LineString", "coordinates": [[0, 0], [0, 10], [0, 40]]},
        "route.coordinates",
        "reaches",
    ),
    (
        {"type": "LineString", "coordinates": [[0, 0], [120, 0], [-120, 0], [0, 0.0001]]},
        "route.coordinates",
        "globe|reaches",
    ),
]


@pytest.mark.parametrize(("data", "field", "fragment"), BAD_ROUTES)
def test_bad_geojson_routes(data: object, field: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment) as info:
        parse_route_geojson(data)
    assert info.value.field == field


def test_route_point_limit() -> None:
    coords = [[0.0, i * 1e-5] for i in range(ROUTE_MAX_POINTS)]
    assert (
        parse_route_geojson({"type": "LineString", "coordinates": coords}).points
        == ROUTE_MAX_POINTS
    )
    coords.append([0.0, 1.0])
    with pytest.raises(InvalidRequest, match="20001 positions; at most 20000") as info:
        parse_route_geojson({"type": "LineString", "coordinates": coords})
    assert info.value.field == "route.coordinates"
    with pytest.raises(InvalidRequest, match="at most 20000 points"):
        Route.from_lat_lng(np.zeros(ROUTE_MAX_POINTS + 1), np.linspace(0, 1, ROUTE_MAX_POINTS + 1))


def test_gpx_tracks_routes_and_namespaces() -> None:
    points = [(45.0, 7.0), (45.001, 7.0), (45.002, 7.001)]
    for doc in (
        gpx(points),
        gpx(points, ns="http://www.topografix.com/GPX/1/0"),
        gpx(points, ns=""),
        gpx(points, tag="rtept"),
    ):
        route = parse_gpx(doc)
        np.testing.assert_allclose(route.lat, [p[0] for p in points])
        np.testing.assert_allclose(route.lng, [p[1] for p in points])
    # Every segment of every track, in document order; route points only without them.
    pt = '<trkpt lat="{}" lon="7.0"/>'.format
    doc = (
        "<gpx><rte><rtept lat='1' lon='1'/><rtept lat='2' lon='1'/></rte>"
        f"<trk><trkseg>{pt(45.0)}{pt(45.001)}</trkseg><trkseg>{pt(45.002)}</trkseg></trk>"
        f"<trk><trkseg>{pt(45.003)}</trkseg></trk></gpx>"
    )
    np.testing.assert_allclose(parse_gpx(doc.encode()).lat, [45.0, 45.001, 45.002, 45.003])


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<gpx><trk><name>&lol3;</name></trk></gpx>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE gpx [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<gpx><trk><name>&xxe;</name></trk></gpx>"""
DTD_ONLY = b'<?xml version="1.0"?><!DOCTYPE gpx SYSTEM "http://example.com/gpx.dtd"><gpx/>'


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (bytes(range(256)) * 4, "not a GPX document"),
        (b"", "not a GPX document"),
        (BILLION_LAUGHS, "DTD"),
        (EXTERNAL, "DTD"),
        (DTD_ONLY, "DTD"),
        (b"<kml><Placemark/></kml>", "no <gpx> root"),
        (b"<gpx>" + b"<a>" * 100 + b"</a>" * 100 + b"</gpx>", "nested deeper"),
        (b"<gpx><trk><trkseg><trkpt lon='1'/></trkseg></trk></gpx>", "numeric 'lat'"),
        (b"<gpx><trk><trkseg><trkpt lat='x' lon='1'/></trkseg></trk></gpx>", "numeric 'lat'"),
        (b"<gpx><trk><trkseg><trkpt lat='91' lon='1'/></trkseg></trk></gpx>", "outside the globe"),
        (b"<gpx><metadata/></gpx>", "no track or route points"),
        (b"<gpx><trk><trkseg><trkpt lat='1' lon='1'/></trkseg></trk></gpx>", "two distinct"),
        (b"<gpx><trk>", "not a GPX document"),
    ],
)
def test_bad_gpx_is_refused(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment) as info:
        parse_gpx(raw)
    assert info.value.field == "gpx"


def test_oversized_gpx_is_refused_before_parsing() -> None:
    raw = gpx([(0.0, 0.0), (0.0, 1e-3)]) + b" " * GPX_MAX_BYTES
    with pytest.raises(PayloadTooLarge, match="8 MiB") as info:
        parse_gpx(raw)
    assert info.value.http_status == 413 and info.value.field == "gpx"


def test_gpx_with_too_many_points_stops_there() -> None:
    points = [(0.0, i * 1e-5) for i in range(ROUTE_MAX_POINTS + 1)]
    with pytest.raises(InvalidRequest, match="at most 20000 points"):
        parse_gpx(gpx(points))
    assert parse_gpx(gpx(points[:-1])).points == ROUTE_MAX_POINTS


# --- the simplified copy ------------------------------------------------------------------
def test_simplified_copy_has_at_most_2000_original_points_within_its_tolerance() -> None:
    rng = np.random.default_rng(0)
    metres = road(ROUTE_MAX_POINTS, 15.0, rng, wiggle=0.1)
    lat, lng = lat_lng_of(metres, 63.0, 179.5)  # across the antimeridian, up north
    route = Route.from_lat_lng(lat, lng)
    assert 1000 < route.simplified_points <= ROUTE_SIMPLIFIED_MAX_POINTS
    assert route.simplify_tolerance_m > 1.0
    # Original coordinates, in order, ends kept.
    full = {(a, b): i for i, (a, b) in enumerate(zip(lat.tolist(), lng.tolist(), strict=True))}
    index = [
        full[(a, b)]
        for a, b in zip(route.simplified_lat.tolist(), route.simplified_lng.tolist(), strict=True)
    ]
    assert index == sorted(index) and index[0] == 0 and index[-1] == lat.size - 1
    # Every point of the route within the tolerance of the copy (in the route's frame).
    simple = shapely.linestrings(*route.frame.forward(route.simplified_lat, route.simplified_lng))
    points = shapely.points(*route.frame.forward(lat, lng))
    assert shapely.distance(simple, points).max() <= route.simplify_tolerance_m * 1.001
    assert route.to_geojson()["coordinates"][0] == [lng[0], lat[0]]


def test_a_short_route_is_sent_whole() -> None:
    rng = np.random.default_rng(0)
    route = route_at(road(500, 50.0, rng, wiggle=0.2))
    assert route.simplify_tolerance_m == 1.0
    assert route.simplified_points <= route.points


# --- locating -----------------------------------------------------------------------------
@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from([(0.0, 0.0), *AWKWARD]))
def test_locate_agrees_with_shapely_line_locate_point(
    seed: int, centre: tuple[float, float]
) -> None:
    """A road that never comes back near itself: along and off match shapely's
    line_locate_point and distance on the whole line, to the search line's tolerance
    for fixes on the road (GPS noise), more loosely along for fixes far off it (the foot
    of the perpendicular follows the simplified line's direction)."""
    rng = np.random.default_rng(seed)
    metres = road(800, 25.0, rng, wiggle=0.03)
    route = route_at(metres, *centre)
    line = shapely.linestrings(*route.frame.forward(route.lat, route.lng))
    scale = route.length_m / line.length  # great-circle against frame length
    for noise_m, along_atol, along_per_off in [(8.0, 3.0, 0.0), (60.0, 3.0, 0.3)]:
        picks = metres[rng.integers(0, len(metres), 60)] + rng.normal(0, noise_m, (60, 2))
        plat, plng = lat_lng_of(picks, *centre)
        along, off = route.locate(plat, plng)
        points = shapely.points(*route.frame.forward(plat, plng))
        true_off = shapely.distance(line, points)
        np.testing.assert_allclose(off, true_off, atol=SEARCH_TOLERANCE_M + 0.01)
        error = np.abs(along - shapely.line_locate_point(line, points) * scale)
        assert (error <= along_atol + along_per_off * true_off).all()


def test_a_fix_far_from_the_route_is_found() -> None:
    route = route_at(np.array([[0.0, 0.0], [0.0, 1000.0], [0.0, 2000.0]]), 10.0, 10.0)
    along, off = route.locate(*offset(10.0, 10.0, 50_000.0, 1000.0))
    np.testing.assert_allclose(off, 50_000.0, rtol=1e-3)
    np.testing.assert_allclose(along, 1000.0, atol=1.0)
    along, off = route.locate(-10.0, -170.0)  # the other side of the planet
    assert off > 15_000_000


def out_and_back(gap_m: float = 8.0, length_m: float = 3000.0) -> np.ndarray:
    """East along north = 0, a U-turn, and back west along north = gap: the two passes
    are closer than the ambiguity (25 m) all the way."""
    east = np.arange(0.0, length_m + 1, 50.0)
    out = np.stack([east, np.zeros_like(east)], axis=1)
    back = np.stack([east[::-1], np.full_like(east, gap_m)], axis=1)
    return np.vstack([out, back])


def test_out_and_back_keeps_each_rider_on_its_pass() -> None:
    route = route_at(out_and_back(), 47.0, 8.0)
    np.testing.assert_allclose(route.length_m, 6008.0, rtol=1e-4)
    convoy = Convoyer(route, riders=1)
    outward = [(x, 1.0) for x in np.arange(100.0, 3000.0, 40.0)]
    turn = [(3000.0, 4.0)]
    back = [(x, 7.0) for x in np.arange(2960.0, 100.0, -40.0)]
    alongs = []
    for e, n in outward + turn + back:
        (result,) = convoy.step([offset(47.0, 8.0, e, n)])
        alongs.append(result.along_m[0])
    # Continuity keeps the rider on its pass; after the turn, its motion (west) picks
    # the way back although both passes are within 8 m.
    assert (np.diff(alongs) > 0).all()
    np.testing.assert_allclose(alongs[-1], route.length_m - 120.0, atol=SEARCH_TOLERANCE_M + 1)
    # Without history the earliest pass wins, even nearer the later one (1 m against 7 m).
    (first,), _ = route.locate(*offset(47.0, 8.0, 1500.0, 7.0))
    np.testing.assert_allclose(first, 1500.0, atol=3.0)


# --- the convoy ---------------------------------------------------------------------------
@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.floats(0.02, 0.98), min_size=1, max_size=50, unique=True),
    st.sampled_from([(0.0, 0.0), *AWKWARD]),
)
def test_convoy_order_follows_distance_along_the_route(
    seed: int, fractions: list[float], centre: tuple[float, float]
) -> None:
    rng = np.random.default_rng(seed)
    metres = road(600, 30.0, rng, wiggle=0.03)
    route = route_at(metres, *centre)
    cum = np.r_[0.0, np.cumsum(np.hypot(*np.diff(metres, axis=0).T))]
    truth = np.array(fractions) * cum[-1]
    x = np.interp(truth, cum, metres[:, 0]) + rng.normal(0, 3.0, truth.size)
    y = np.interp(truth, cum, metres[:, 1]) + rng.normal(0, 3.0, truth.size)
    convoy = Convoyer(route, riders=truth.size)
    (result,) = convoy.step([offset(*centre, a, b) for a, b in zip(x, y, strict=True)])
    along = np.array(result.along_m)
    assert list(result.order) == sorted(result.order, key=lambda s: -along[result.order.index(s)])
    assert (np.diff(along) <= 0).all()
    assert len(result.gaps_m) == truth.size - 1
    np.testing.assert_allclose(result.gaps_m, -np.diff(along))
    # Against the truth: the order of riders more than 15 m apart is the true order.
    slot_of = {slot: i for i, slot in enumerate(convoy.slots)}
    true_along = truth[[slot_of[s] for s in result.order]]
    for i in range(truth.size - 1):
        if true_along[i] - true_along[i + 1] > 15.0 or true_along[i + 1] - true_along[i] > 15.0:
            assert true_along[i] > true_along[i + 1]
    assert result.gaps_s == (None,) * (truth.size - 1)  # no speed known yet


def test_convoy_is_the_same_across_the_antimeridian_and_near_the_poles() -> None:
    rng = np.random.default_rng(0)
    metres = road(400, 40.0, rng, wiggle=0.05)
    picks = metres[rng.integers(10, 390, 20)] + rng.normal(0, 20.0, (20, 2))
    picks[3] += [400.0, 0.0]  # one rider well off the route
    results = []
    for centre in [(0.0, 0.0), *AWKWARD]:
        route = route_at(metres, *centre)
        convoy = Convoyer(route, riders=len(picks))
        (result,) = convoy.step([offset(*centre, e, n) for e, n in picks.tolist()])
        results.append(result)
    base = results[0]
    for other in results[1:]:
        assert other.order == base.order
        np.testing.assert_allclose(other.along_m, base.along_m, atol=0.05)
        np.testing.assert_allclose(other.gaps_m, base.gaps_m, atol=0.05)
        assert [s for s, _ in other.off_route] == [s for s, _ in base.off_route] == [3]
        np.testing.assert_allclose(
            [m for _, m in other.off_route], [m for _, m in base.off_route], atol=0.05
        )


def test_gaps_in_seconds_use_the_reported_speed_else_the_estimate() -> None:
    route = route_at(np.array([[0.0, 0.0], [0.0, 10_000.0]]))
    convoy = Convoyer(route, riders=3)
    at = lambda m: offset(0.0, 0.0, 0.0, m)  # noqa: E731
    lead, mid, tail = 3000.0, 2500.0, 1000.0
    for step in range(int(SPEED_BASELINE_S) + 1):
        t = float(step)
        result = convoy.step(
            [at(lead + 20 * t), at(mid + 10 * t), at(tail)], speeds=[None, 25.0, None]
        )
        if step < SPEED_BASELINE_S:
            # The middle rider reported 25 m/s; the tail has no speed yet.
            assert result[0].gaps_s[0] == pytest.approx(result[0].gaps_m[0] / 25.0)
            assert result[0].gaps_s[1] is None
    (final,) = result
    assert final.order == tuple(convoy.slots)
    # After the baseline: the tail stood still (0 m/s): still None.
    assert final.gaps_s[1] is None
    # The middle rider stops reporting a speed: its estimate (10 m/s) takes over.
    (again,) = convoy.step([at(lead + 120), at(mid + 60), at(tail)], speeds=[None, None, None])
    np.testing.assert_allclose(again.gaps_s[0], again.gaps_m[0] / 10.0, rtol=1e-3)


def test_state_follows_retention_and_route_changes() -> None:
    route = route_at(np.array([[0.0, 0.0], [0.0, 5000.0]]))
    convoy = Convoyer(route, riders=2)
    (first,) = convoy.step([offset(0, 0, 0, 100.0), offset(0, 0, 0, 200.0)])
    assert first.order == (convoy.slots[1], convoy.slots[0])
    # Nothing new: no convoy reported.
    assert convoy.routes.tick(convoy.index.arrays(), convoy.now + 0.5) == []
    # Rider 0 keeps sending, rider 1 goes quiet and expires.
    for _ in range(int(TTL) + 1):
        (result,) = convoy.step([offset(0, 0, 0, 150.0), None])
    convoy.index.tick(convoy.now)
    assert result.order == (convoy.slots[0],)
    # A new route: state starts afresh and the next tick reports the convoy.
    convoy.routes.set_route(convoy.block, route_at(np.array([[0.0, 0.0], [0.0, 900.0]])))
    (fresh,) = convoy.routes.tick(convoy.index.arrays(), convoy.now)
    assert fresh.order == (convoy.slots[0],) and fresh.along_m == pytest.approx((150.0,), abs=0.5)
    assert convoy.routes.convoy(convoy.block) == fresh
    assert convoy.routes.clear_route(convoy.block) is not None
    assert convoy.routes.route(convoy.block) is None
    assert convoy.routes.tick(convoy.index.arrays(), convoy.now + 1) == []
    assert convoy.routes.statistics().sessions == 0


def test_many_sessions_in_one_tick_match_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    index = GeoIndex(ttl_s=TTL)
    together = RouteIndex(initial_rows=2)
    alone: dict[int, RouteIndex] = {}
    setups = []
    for _ in range(25):
        centre = (float(rng.uniform(-85, 85)), float(rng.uniform(-180, 180)))
        metres = road(300, 40.0, rng)
        route = route_at(metres, *centre)
        block = index.allocate_block()
        together.set_route(block, route)
        alone[block] = RouteIndex()
        alone[block].set_route(block, route)
        slots = [index.allocate_slot(block) for _ in range(int(rng.integers(1, 10)))]
        setups.append((block, slots, metres, centre))
    for step in range(6):
        now = float(step + 1)
        for block, slots, metres, centre in setups:
            for slot in slots:
                if rng.random() < 0.7:
                    e, n = metres[rng.integers(0, len(metres))] + rng.normal(0, 30.0, 2)
                    index.update(block, slot, *offset(*centre, e, n), received_at=now)
        arrays = index.arrays()
        joint = {c.block: c for c in together.tick(arrays, now)}
        single = {}
        for single_index in alone.values():
            single.update({c.block: c for c in single_index.tick(arrays, now)})
        assert joint.keys() == single.keys()
        for block, result in joint.items():
            assert result.order == single[block].order
            np.testing.assert_allclose(result.along_m, single[block].along_m)


def test_off_route_threshold_is_a_parameter() -> None:
    route = route_at(np.array([[0.0, 0.0], [0.0, 5000.0]]))
    convoy = Convoyer(route, riders=2, off_route_m=50.0)
    (result,) = convoy.step([offset(0, 0, 60.0, 100.0), offset(0, 0, 40.0, 200.0)])
    assert [s for s, _ in result.off_route] == [convoy.slots[0]]
    np.testing.assert_allclose(result.off_route[0][1], 60.0, atol=0.1)
    assert result.to_json()["off_route"] == [[convoy.slots[0], result.off_route[0][1]]]


def test_each_session_has_its_own_off_route_threshold() -> None:
    """The creator's ``off_route_m`` is per session: two blocks in one tick, one
    threshold each (the index's default for a block that sets none)."""
    route = route_at(np.array([[0.0, 0.0], [0.0, 5000.0]]))
    index = GeoIndex(ttl_s=TTL)
    routes = RouteIndex(off_route_m=200.0)
    blocks = [index.allocate_block() for _ in range(3)]
    for block, threshold in zip(blocks, (50.0, 500.0, None), strict=True):
        routes.set_route(block, route, off_route_m=threshold)
        slot = index.allocate_slot(block)
        index.update(block, slot, *offset(0, 0, 300.0, 100.0), received_at=1.0)
    off = {c.block: [round(m) for _s, m in c.off_route] for c in routes.tick(index.arrays(), 1.0)}
    assert off == {blocks[0]: [300], blocks[1]: [], blocks[2]: [300]}
    # Setting the route again with another threshold replaces it.
    routes.set_route(blocks[1], route, off_route_m=100.0)
    index.update(blocks[1], 0, *offset(0, 0, 300.0, 120.0), received_at=2.0)
    (convoy,) = routes.tick(index.arrays(), 2.0)
    assert [round(m) for _s, m in convoy.off_route] == [300]


def test_frames_agree_with_the_destination_formula() -> None:
    """The projection against the independent formula: distances and bearings from
    the centre are exact."""
    rng = np.random.default_rng(0)
    for lat0, lng0 in [(0.0, 0.0), *AWKWARD]:
        frame = LocalFrame.at(unit_vectors(lat0, lng0))
        metres = rng.uniform(-50_000, 50_000, (50, 2))
        lat, lng = lat_lng_of(metres, lat0, lng0)
        x, y = frame.forward(lat, lng)
        np.testing.assert_allclose(np.stack([x, y], axis=1), metres, atol=1e-4)
        back_lat, back_lng = frame.inverse(x, y)
        np.testing.assert_allclose(back_lat, lat, atol=1e-9)
        np.testing.assert_allclose((back_lng - lng + 180) % 360 - 180, 0.0, atol=1e-7)
        assert math.isfinite(frame.lat_lng[0])
