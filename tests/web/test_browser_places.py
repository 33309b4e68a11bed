"""Issue 14 in the browser: places, arrivals, the route and the convoy, statuses, and
what the page shows when the server refuses something.

The other participants are real WebSocket clients in the test (``WsClient``) or other
pages; the page's drawing is checked against where its camera (the map element's
data attributes) puts each point.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import DESKTOP, PHONE, Tab, WebServer, screenshot
from tests.web.test_browser import (
    GARCHING,
    MUNICH,
    NYMPHENBURG,
    join,
    join_over_rest,
    map_state,
    mercator,
    person_row,
    wait_for_markers,
    wait_until,
)
from tests.web.test_browser_pacing import INSTRUMENT_JS
from tests.web.wsclient import WsClient

pytestmark = [pytest.mark.slow, pytest.mark.browser]

OpenTab = Callable[..., Tab]
EARTH_CIRCUMFERENCE_M = 40075016.686
MAX_PLACES = 20


# --- the camera, in Python (map.js's formulas) ---------------------------------------------
def point_at(state: dict[str, Any], x: float, y: float) -> tuple[float, float]:
    """(lat, lng) under map pixel (x, y)."""
    cx, cy = mercator(state["lat"], state["lng"])
    world = 256 * 2 ** state["zoom"]
    wx = cx + (x - state["width"] / 2) / world
    wy = cy + (y - state["height"] / 2) / world
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * wy))))
    return lat, (wx % 1) * 360 - 180


def screen_of(state: dict[str, Any], lat: float, lng: float) -> tuple[float, float]:
    """Map pixel of (lat, lng), on the copy of the world nearest the centre."""
    cx, cy = mercator(state["lat"], state["lng"])
    x, y = mercator(lat, lng)
    world = 256 * 2 ** state["zoom"]
    dx = x - cx - round(x - cx)
    return state["width"] / 2 + dx * world, state["height"] / 2 + (y - cy) * world


def metres_per_px(state: dict[str, Any], lat: float) -> float:
    return EARTH_CIRCUMFERENCE_M * math.cos(math.radians(lat)) / (256 * 2 ** state["zoom"])


def svg_points(page: Page, selector: str) -> list[tuple[float, float]]:
    """A polyline's points."""
    raw = page.get_attribute(selector, "points") or ""
    return [(float(x), float(y)) for x, y in (p.split(",") for p in raw.split())]


def svg_rings(page: Page, selector: str) -> list[list[tuple[float, float]]]:
    """A path's rings ("Mx,yLx,y...Z", one per ring)."""
    raw = page.get_attribute(selector, "d") or ""
    return [
        [(float(x), float(y)) for x, y in (p.split(",") for p in ring.split("L"))]
        for ring in re.findall(r"M([^Z]*)Z", raw)
    ]


# --- the page's words, in Python (common.js) -------------------------------------------------
def js_round(value: float) -> int:
    return math.floor(value + 0.5)


def format_distance(metres: float) -> str:
    if metres < 1000:
        return f"{js_round(metres)} m"
    km = metres / 1000
    return f"{km:.1f} km" if km < 10 else f"{js_round(km)} km"


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{js_round(seconds)} s"
    minutes = math.floor(seconds / 60)
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


# --- set-up ------------------------------------------------------------------------------------
def creator_join(
    page: Page, server: WebServer, created: dict[str, Any], name: str, **options: Any
) -> str:
    """Joins from a tab that holds the creator token (as the landing page leaves it)."""
    page.goto(f"{server.base}/")
    page.evaluate(
        "([key, token]) => sessionStorage.setItem(key, JSON.stringify(token))",
        [f"locshare.creator.{created['session_id']}", created["creator_token"]],
    )
    return join(page, server, created["session_id"], name, **options)


def wait_for_single_fit(page: Page) -> None:
    """Until the camera shows the one sharer as the server's hint says (zoom 17).

    Until the first hint the camera is the initial world view, where the marker is
    already inside the map: a camera read then would be stale a moment later."""
    wait_until(page, "() => Number(document.getElementById('map').dataset.zoom) === 17")


def ann_fitted_at_munich(
    server: WebServer,
    open_tab: OpenTab,
    session_id: str,
    device: dict[str, Any],
    init_script: str | None = None,
) -> tuple[Tab, str]:
    """Ann's tab, sharing from Munich, joined and settled on the server's first fit.

    Reduced motion: the camera jumps to a hint, so a settled camera stays put."""
    ann = open_tab(device, geolocation=MUNICH, permissions=["geolocation"], reduced_motion="reduce")
    if init_script is not None:
        ann.context.add_init_script(init_script)
    ann_id = join(ann.page, server, session_id, "Ann")
    wait_for_markers(ann.page, [ann_id])
    wait_for_single_fit(ann.page)
    return ann, ann_id


def place_row(page: Page, place_id: str) -> Any:
    return page.locator(f'#places-list li[data-place-id="{place_id}"]')


def open_section(page: Page, section: str) -> None:
    if not page.locator(f"#{section}").evaluate("(d) => d.open"):
        page.click(f"#{section} summary")


def add_place_at_my_position(page: Page, name: str, kind: str = "meet") -> None:
    open_section(page, "places")
    page.click("#place-here")
    page.fill("#place-name", name)
    page.select_option("#place-kind", kind)
    page.click("#place-ok")


def where(position: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"lat": position["latitude"], "lng": position["longitude"], "accuracy": 5, **extra}


# --- places -------------------------------------------------------------------------------------
def test_places_from_right_click_and_my_position_reach_everyone_with_arrivals(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    sid = web_server.create_session(name="Places")["session_id"]
    bob = join_over_rest(web_server, sid, "Bob")
    with WsClient(web_server.port, bob["websocket_token"]) as raw:
        raw.wait_for("session_state")
        ann, ann_id = ann_fitted_at_munich(web_server, open_tab, sid, DESKTOP)
        page = ann.page

        # Right-click a point of the map: the form adds a place there.
        box = page.locator("#map").bounding_box()
        assert box is not None
        x, y = box["width"] / 2 - 160, box["height"] / 2 - 90
        lat, lng = point_at(map_state(page), x, y)
        page.mouse.click(box["x"] + x, box["y"] + y, button="right")
        expect(page.locator("#place-dialog")).to_be_visible()
        page.fill("#place-name", "Lunch")
        page.select_option("#place-kind", "food")
        page.fill("#place-radius", "120")
        page.keyboard.press("Enter")  # Enter in a field adds the place
        expect(page.locator("#place-dialog")).to_be_hidden()
        lunch = raw.wait_for("place_added", lambda d: d["name"] == "Lunch").data
        assert (lunch["kind"], lunch["radius_m"], lunch["author"]) == ("food", 120, ann_id)
        assert lunch["geometry"]["type"] == "Point"
        assert lunch["geometry"]["coordinates"] == pytest.approx([lng, lat], abs=1e-5)

        # Drawn: a circle of its radius where the camera puts it, its icon and name.
        lunch_id = lunch["place_id"]
        circle = page.locator(f'#map circle[data-shape-id="{lunch_id}"]')
        expect(circle).to_have_class(re.compile(r"\bplace kind-food\b"))
        marker = page.locator(f'#map .place-marker[data-place-id="{lunch_id}"]')
        expect(marker).to_have_class(re.compile(r"\bkind-food\b"))
        expect(marker.locator(".place-name")).to_have_text("Lunch")
        expect(marker.locator(".place-icon svg path")).to_have_count(1)
        state = map_state(page)
        at = screen_of(state, *lunch["geometry"]["coordinates"][::-1])
        drawn = [float(circle.get_attribute(a) or "nan") for a in ("cx", "cy", "r")]
        assert drawn[:2] == pytest.approx(at, abs=2)
        assert drawn[2] == pytest.approx(120 / metres_per_px(state, lat), rel=0.02)
        # Listed, removable by its author.
        open_section(page, "places")
        expect(place_row(page, lunch_id).locator(".status")).to_have_text(
            "Food · 120 m · added by you"
        )
        expect(place_row(page, lunch_id).get_by_role("button", name="Remove Lunch")).to_be_visible()

        # "Add a place at my position": at the shared position.
        expect(page.locator("#place-here")).to_have_text("Add a place at my position")
        add_place_at_my_position(page, "Start")
        start = raw.wait_for("place_added", lambda d: d["name"] == "Start").data
        assert start["geometry"]["coordinates"] == pytest.approx(
            [MUNICH["longitude"], MUNICH["latitude"]], abs=1e-9
        )
        assert (start["kind"], start["radius_m"]) == ("meet", 50)

        # Bob's polygon with a hole: drawn vertex by vertex (the hole left out), listed as
        # an area, not Ann's to remove.
        ring = [[11.574, 48.1390], [11.578, 48.1390], [11.578, 48.1380], [11.574, 48.1380]]
        hole = [[11.575, 48.1387], [11.575, 48.1383], [11.577, 48.1383], [11.577, 48.1387]]
        raw.send(
            "place_add",
            {
                "name": "Market",
                "kind": "poi",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[*ring, ring[0]], [*hole, hole[0]]],
                },
            },
        )
        market_id = raw.wait_for("place_added", lambda d: d["name"] == "Market").data["place_id"]
        polygon = f'#map path[data-shape-id="{market_id}"]'
        expect(page.locator(polygon)).to_have_class(re.compile(r"\bkind-poi\b"))
        expect(place_row(page, market_id).locator(".status")).to_have_text(
            "Point of interest · area · added by Bob"
        )
        expect(place_row(page, market_id).locator(".remove")).to_be_hidden()
        state = map_state(page)
        drawn = svg_rings(page, polygon)
        assert len(drawn) == 2
        for vertices, coordinates in zip(drawn, (ring, hole), strict=True):
            expected = [screen_of(state, lat_, lng_) for lng_, lat_ in coordinates]
            assert len(vertices) == len(expected)
            for got, want in zip(vertices, expected, strict=True):
                assert got == pytest.approx(want, abs=2)
        # The hole is not part of the place: the path is filled even-odd.
        assert page.locator(polygon).evaluate("(p) => getComputedStyle(p).fillRule") == "evenodd"

        # Bob arrives at Lunch: "Bob is here" on the map and in the list; he leaves again.
        centre = {
            "latitude": lunch["geometry"]["coordinates"][1],
            "longitude": lunch["geometry"]["coordinates"][0],
        }
        raw.keep_sending(where(centre), every_s=0.5)
        raw.wait_for("arrived", lambda d: d == {"user_id": bob["user_id"], "place_id": lunch_id})
        expect(marker.locator(".place-badge")).to_have_text("Bob is here")
        expect(place_row(page, lunch_id).locator(".place-badge")).to_have_text("Bob is here")
        expect(circle).to_have_class(re.compile(r"\boccupied\b"))
        screenshot(page, "places-desktop")
        # A reload shows it too (session_state.arrivals).
        page.reload()
        expect(page.locator("#app")).to_have_attribute("data-connection", "open")
        expect(marker.locator(".place-badge")).to_have_text("Bob is here")
        raw.position = where(GARCHING)
        raw.wait_for("departed", lambda d: d["place_id"] == lunch_id)
        expect(marker.locator(".place-badge")).to_be_hidden()

        # Ann removes Lunch: gone for Bob and from her map and list.
        open_section(page, "places")
        place_row(page, lunch_id).get_by_role("button", name="Remove Lunch").click()
        page.click("#confirm-ok")
        raw.wait_for("place_removed", lambda d: d["place_id"] == lunch_id)
        expect(circle).to_have_count(0)
        expect(marker).to_have_count(0)
        expect(place_row(page, lunch_id)).to_have_count(0)
        expect(page.locator("#places-count")).to_have_text("2")
    ann.assert_no_console_errors()


def long_press(tab: Tab, x: float, y: float) -> None:
    """A finger held still on the page (CDP touch events: Playwright has no long press)."""
    cdp = tab.context.new_cdp_session(tab.page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    tab.page.wait_for_timeout(900)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def test_touch_and_hold_then_taps_draw_an_area_and_a_crossed_one_is_refused(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    sid = web_server.create_session(name="Areas")["session_id"]
    bob = join_over_rest(web_server, sid, "Bob")
    with WsClient(web_server.port, bob["websocket_token"]) as raw:
        raw.wait_for("session_state")
        ann, _ = ann_fitted_at_munich(web_server, open_tab, sid, PHONE, INSTRUMENT_JS)
        page = ann.page
        box = page.locator("#map").bounding_box()
        assert box is not None
        state = map_state(page)

        def draw(name: str, corners: list[tuple[float, float]]) -> None:
            long_press(ann, box["x"] + corners[0][0], box["y"] + corners[0][1])
            expect(page.locator("#place-dialog")).to_be_visible()
            page.fill("#place-name", name)
            page.select_option("#place-kind", "hazard")
            page.click("#place-area")
            expect(page.locator("#draw-bar")).to_be_visible()
            for x, y in corners[1:]:
                page.touchscreen.tap(box["x"] + x, box["y"] + y)
            expect(page.locator("#draw-text")).to_have_text(
                f"Tap the corners of “{name}”: {len(corners)} so far."
            )
            expect(page.locator('#map path[data-shape-id="draft"]')).to_have_count(1)
            screenshot(page, "draw-area-phone")
            page.click("#draw-done")
            expect(page.locator("#draw-bar")).to_be_hidden()

        # A bow tie (its edges cross): the server's reason shows, nothing else changes.
        w, h = box["width"], box["height"]
        bow_tie = [
            (w / 2 - 60, h / 2 - 120),
            (w / 2 + 60, h / 2 - 20),
            (w / 2 + 60, h / 2 - 120),
            (w / 2 - 60, h / 2 - 20),
        ]
        draw("Crossed", bow_tie)
        sent = [
            s["frame"]["data"]
            for s in page.evaluate("window.sent")
            if s["frame"]["type"] == "place_add"
        ]
        raw.send("place_add", sent[-1])  # the same polygon from Bob: the same refusal
        reason = raw.wait_for("error", lambda d: d["code"] == "invalid_place").data["message"]
        expect(page.locator("#toast")).to_have_text(f"Place refused: {reason}")
        expect(page.locator("#places-count")).to_have_text("0")
        screenshot(page, "place-refused-phone")

        # A proper quadrilateral: sent as a closed ring where the fingers went, drawn for all.
        square = [
            (w / 2 - 60, h / 2 - 120),
            (w / 2 + 60, h / 2 - 120),
            (w / 2 + 60, h / 2 - 20),
            (w / 2 - 60, h / 2 - 20),
        ]
        draw("Roadworks", square)
        added = raw.wait_for("place_added", lambda d: d["name"] == "Roadworks").data
        assert (added["kind"], added["geometry"]["type"], added["radius_m"]) == (
            "hazard",
            "Polygon",
            None,
        )
        coordinates = added["geometry"]["coordinates"][0]
        assert coordinates[0] == coordinates[-1]
        for (lng, lat), (x, y) in zip(coordinates, square, strict=False):
            assert (lat, lng) == pytest.approx(point_at(state, x, y), abs=1e-5)
        area = page.locator(f'#map path[data-shape-id="{added["place_id"]}"]')
        expect(area).to_have_class(re.compile(r"\bkind-hazard\b"))
        expect(page.locator("#places-count")).to_have_text("1")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
        screenshot(page, "area-place-phone")
    ann.assert_no_console_errors()


def test_a_21st_place_shows_the_servers_message_and_the_creator_removes_any_place(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    created = web_server.create_session(name="Full of places")
    sid = created["session_id"]
    bob = join_over_rest(web_server, sid, "Bob")
    with web_server.http() as http:
        for i in range(MAX_PLACES):
            response = http.post(
                f"/api/sessions/{sid}/places",
                headers={"Authorization": f"Bearer {created['creator_token']}"},
                json={
                    "name": f"Spot {i}",
                    "kind": "poi",
                    "lat": 48.13 + i / 1000,
                    "lng": 11.57,
                    "radius_m": 30,
                },
            )
            assert response.status_code == 201, response.text
    with WsClient(web_server.port, bob["websocket_token"]) as raw:
        raw.wait_for("session_state")
        raw.send("place_add", {"name": "One more", "kind": "poi", "lat": 48.1, "lng": 11.5})
        reason = raw.wait_for("error", lambda d: d["code"] == "invalid_place").data["message"]

        org = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
        page = org.page
        creator_join(page, web_server, created, "Organiser")
        expect(page.locator("#places-count")).to_have_text(str(MAX_PLACES))
        add_place_at_my_position(page, "The 21st")
        expect(page.locator("#toast")).to_have_text(f"Place refused: {reason}")
        expect(page.locator("#places-count")).to_have_text(str(MAX_PLACES))
        expect(page.locator("#app")).to_have_attribute("data-connection", "open")

        # The creator's tab removes a place it did not add (REST, with its token).
        first = page.locator("#places-list li").first
        place_id = first.get_attribute("data-place-id")
        first.locator(".remove").click()
        page.click("#confirm-ok")
        raw.wait_for("place_removed", lambda d: d["place_id"] == place_id)
        expect(page.locator("#places-count")).to_have_text(str(MAX_PLACES - 1))
    org.assert_no_console_errors()


# --- the route and the convoy ----------------------------------------------------------------
# A ride due north from the south of Munich: 11 points, 0.01 degrees (1.1 km) apart.
NORTH = [(48.10 + i / 100, 11.55) for i in range(11)]
GPX = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<gpx version="1.1" creator="locshare tests" xmlns="http://www.topografix.com/GPX/1/1">'
    "<trk><name>North</name><trkseg>"
    + "".join(
        f'<trkpt lat="{lat:.2f}" lon="{lng:.2f}"><ele>520</ele></trkpt>' for lat, lng in NORTH
    )
    + "</trkseg></trk></gpx>"
).encode()
# Across the antimeridian (Fiji): west to east, 179.98 E to 179.98 W.
CROSSING = {
    "type": "Feature",
    "properties": {"name": "Taveuni crossing"},
    "geometry": {
        "type": "LineString",
        "coordinates": [
            [179.98, -16.80],
            [179.99, -16.805],
            [-179.995, -16.81],
            [-179.98, -16.815],
        ],
    },
}
OFF_ROUTE_M = 300


def upload_route(
    page: Page, name: str, mime: str, body: bytes, off_route_m: int | None = None
) -> None:
    open_section(page, "route")
    page.set_input_files("#route-file", files=[{"name": name, "mimeType": mime, "buffer": body}])
    page.fill("#off-route-m", "" if off_route_m is None else str(off_route_m))
    page.click("#route-upload")


def test_the_creator_sets_a_route_and_everyone_sees_it_and_the_convoy(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    created = web_server.create_session(name="Convoy")
    sid = created["session_id"]
    riders = {name: join_over_rest(web_server, sid, name) for name in ("Bob", "Dan")}
    sockets = [WsClient(web_server.port, r["websocket_token"]) for r in riders.values()]
    bob, dan = sockets
    try:
        # Reduced motion: "Show the route" jumps, so the camera read next is the final one.
        org = open_tab(DESKTOP, reduced_motion="reduce")
        creator_join(org.page, web_server, created, "Organiser", share=False)
        # Carl rides too, on a phone page: he sees the route and the convoy, not the form.
        carl_tab = open_tab(
            PHONE,
            geolocation={"latitude": 48.15, "longitude": 11.55, "accuracy": 10},
            permissions=["geolocation"],
            reduced_motion="reduce",
        )
        carl = join(carl_tab.page, web_server, sid, "Carl")
        expect(carl_tab.page.locator("#route")).to_be_hidden()  # no route yet, not the creator
        expect(org.page.locator("#route-form")).to_be_hidden()  # closed section
        open_section(org.page, "route")
        expect(org.page.locator("#route-form")).to_be_visible()
        expect(org.page.locator("#route-clear")).to_be_hidden()

        # The creator uploads a GPX file with a threshold: everyone gets the route.
        upload_route(org.page, "north.gpx", "application/gpx+xml", GPX, OFF_ROUTE_M)
        route = bob.wait_for("route_set").data
        assert (route["points"], route["off_route_m"]) == (len(NORTH), OFF_ROUTE_M)
        line = route["geometry"]["coordinates"]
        for tab in (org, carl_tab):
            expect(tab.page.locator("#route")).to_be_visible()
            expect(tab.page.locator("#route-info")).to_have_text(format_distance(route["length_m"]))
            polyline = '#map polyline[data-shape-id="route"]'
            expect(tab.page.locator(polyline)).to_have_count(1)
            open_section(tab.page, "route")
            tab.page.click("#route-show")
            expect(tab.page.locator("#map")).to_have_attribute("data-following", "false")
            state = map_state(tab.page)
            drawn = svg_points(tab.page, polyline)
            assert len(drawn) == len(line)
            for got, (lng, lat) in zip(drawn, line, strict=True):
                assert got == pytest.approx(screen_of(state, lat, lng), abs=2)
                assert 0 <= got[0] <= state["width"] and 0 <= got[1] <= state["height"]
        expect(carl_tab.page.locator("#route-form")).to_be_hidden()

        # Riders along it: Bob ahead, Carl behind, Dan 700 m east of it (off route).
        bob.keep_sending({"lat": 48.18, "lng": 11.55, "accuracy": 5, "speed": 6})
        dan.keep_sending({"lat": 48.12, "lng": 11.5595, "accuracy": 5, "speed": 6})
        convoy = bob.wait_for(
            "convoy",
            lambda d: (
                d["order"][:2] == [riders["Bob"]["user_id"], carl] and len(d["off_route"]) == 1
            ),
        ).data
        off = convoy["off_route"][0]
        assert off["user_id"] == riders["Dan"]["user_id"] and off["distance_m"] > OFF_ROUTE_M
        names = {riders["Bob"]["user_id"]: "Bob", carl: "Carl", riders["Dan"]["user_id"]: "Dan"}
        order = convoy["order"] + [
            o["user_id"] for o in convoy["off_route"] if o["user_id"] not in convoy["order"]
        ]
        for tab, me in ((org, None), (carl_tab, carl)):
            rows = tab.page.locator("#convoy-list li")
            expect(rows).to_have_count(len(order))
            for i, user_id in enumerate(order):
                row = rows.nth(i)
                expect(row).to_have_attribute("data-user-id", user_id)
                expect(row.locator(".name")).to_have_text(
                    names[user_id] + (" (you)" if user_id == me else "")
                )
            expect(rows.nth(0).locator(".gap")).to_have_text("leader")
            gap = format_distance(convoy["gaps_m"][0])
            seconds = convoy["gaps_s"][0]
            tail = " (tail)" if len(convoy["order"]) == 2 else ""
            expect(rows.nth(1).locator(".gap")).to_have_text(
                f"{gap} behind Bob"
                + ("" if seconds is None else f" · {format_seconds(seconds)}")
                + tail
            )
            dan_row = tab.page.locator(
                f'#convoy-list li[data-user-id="{riders["Dan"]["user_id"]}"]'
            )
            expect(dan_row.locator(".off-route")).to_have_text(
                f"off route · {format_distance(off['distance_m'])}"
            )
        screenshot(carl_tab.page, "convoy-phone")

        # Cleared: gone everywhere.
        org.page.click("#route-clear")
        org.page.click("#confirm-ok")
        bob.wait_for("route_cleared")
        for tab in (org, carl_tab):
            expect(tab.page.locator('#map polyline[data-shape-id="route"]')).to_have_count(0)
            expect(tab.page.locator("#convoy-list li")).to_have_count(0)
        expect(carl_tab.page.locator("#route")).to_be_hidden()

        # A GeoJSON route across the antimeridian: drawn in one piece (no jump of a world).
        upload_route(
            org.page, "crossing.geojson", "application/geo+json", json.dumps(CROSSING).encode()
        )
        crossing = bob.wait_for("route_set", after=0, match=lambda d: d["points"] == 4).data
        assert crossing["off_route_m"] == 200
        org.page.click("#route-show")
        state = map_state(org.page)
        drawn = svg_points(org.page, '#map polyline[data-shape-id="route"]')
        assert len(drawn) == len(crossing["geometry"]["coordinates"])
        xs = [x for x, _ in drawn]
        assert xs == sorted(xs)  # west to east, in one piece
        assert all(0 <= x <= state["width"] for x in xs)
        screenshot(org.page, "route-antimeridian-desktop")
    finally:
        for s in sockets:
            s.close()
    org.assert_no_console_errors()
    carl_tab.assert_no_console_errors()


def test_a_bad_route_file_shows_the_servers_message(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    created = web_server.create_session()
    org = open_tab(DESKTOP)
    creator_join(org.page, web_server, created, "Organiser", share=False)
    with web_server.http() as http:
        expected = http.put(
            f"/api/sessions/{created['session_id']}/route",
            headers={
                "Authorization": f"Bearer {created['creator_token']}",
                "Content-Type": "application/gpx+xml",
            },
            content=b"<gpx><trk><trkseg><trkpt lat='1' lon='2'/></trkseg></trk></gpx>",
        )
    assert expected.status_code == 422
    upload_route(
        org.page,
        "short.gpx",
        "application/gpx+xml",
        b"<gpx><trk><trkseg><trkpt lat='1' lon='2'/></trkseg></trk></gpx>",
    )
    expect(org.page.locator("#route-error")).to_have_text(expected.json()["error"]["message"])
    expect(org.page.locator('#map polyline[data-shape-id="route"]')).to_have_count(0)
    # The only console message is Chrome's own note on the 422.
    assert all("status of 422" in error for error in org.errors), org.errors


# --- statuses ------------------------------------------------------------------------------------
def test_statuses_show_next_to_names_and_need_help_gets_a_banner_that_shows_the_person(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    sid = web_server.create_session(name="Statuses")["session_id"]
    bob = join_over_rest(web_server, sid, "Bob")
    with WsClient(web_server.port, bob["websocket_token"]) as raw:
        raw.wait_for("session_state")
        ann = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
        carl = open_tab(DESKTOP, geolocation=NYMPHENBURG, permissions=["geolocation"])
        ann_id = join(ann.page, web_server, sid, "Ann")
        carl_id = join(carl.page, web_server, sid, "Carl")
        wait_for_markers(ann.page, [ann_id, carl_id])

        # Ann is on her way: Bob gets it, Carl sees it next to her name.
        ann.page.click("#status-box summary")
        ann.page.check('#status-form input[value="on_my_way"]')
        note = "<b>10 min</b>"  # shown as typed, never as markup
        ann.page.fill("#status-note", note)
        ann.page.click("#status-set")
        frame = raw.wait_for("status", lambda d: d["user_id"] == ann_id).data
        assert (frame["status"], frame["text"]) == ("on_my_way", note)
        expect(ann.page.locator("#my-status")).to_have_text(f"On my way · {note}")
        expect(person_row(carl.page, ann_id).locator(".chip")).to_have_text(f"On my way · {note}")
        expect(
            carl.page.locator(f'#map .marker[data-user-id="{ann_id}"] .marker-label')
        ).to_have_text(f"Ann · On my way · {note}")
        assert carl.page.locator("#app b").count() == 0

        # Carl needs help: a banner on Ann's page with his last position.
        carl.page.click("#status-box summary")
        carl.page.check('#status-form input[value="need_help"]')
        carl.page.fill("#status-note", "Flat tyre")
        carl.page.keyboard.press("Enter")
        raw.wait_for("status", lambda d: d["user_id"] == carl_id and d["status"] == "need_help")
        banner = ann.page.locator(f'#alerts .alert[data-user-id="{carl_id}"]')
        expect(banner.locator(".alert-title")).to_have_text("Carl needs help")
        expect(banner.locator(".alert-note")).to_have_text("“Flat tyre”")
        expect(banner.locator(".alert-where")).to_contain_text(
            f"Last position {NYMPHENBURG['latitude']:.5f}, {NYMPHENBURG['longitude']:.5f}"
        )
        expect(carl.page.locator("#alerts .alert")).to_have_count(0)  # not for oneself
        expect(carl.page.locator("#status-box")).to_have_class(re.compile(r"\bneed-help\b"))

        # Bob (no position) too: "Position unknown", nothing to show.
        raw.send("set_status", {"status": "need_help", "text": None})
        bob_banner = ann.page.locator(f'#alerts .alert[data-user-id="{bob["user_id"]}"]')
        expect(bob_banner.locator(".alert-where")).to_have_text("Position unknown")
        expect(bob_banner.get_by_role("button")).to_be_disabled()
        assert (
            ann.page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
        )
        screenshot(ann.page, "need-help-phone")

        # "Show on map" centres Ann's map on Carl, zoomed in.
        ann.page.focus("#map")
        for _ in range(4):
            ann.page.keyboard.press("ArrowLeft")
        banner.get_by_role("button", name="Show on map: Carl").click()
        expect(ann.page.locator("#map")).to_have_attribute("data-following", "false")
        wait_until(
            ann.page,
            """(id) => {
              const map = document.getElementById("map").getBoundingClientRect();
              const pin = document.querySelector(`#map .marker[data-user-id='${id}'] .pin`).getBoundingClientRect();
              return Math.abs(pin.left + pin.width / 2 - (map.left + map.width / 2)) < 2
                && pin.top >= map.top && pin.bottom <= map.bottom;
            }""",
            carl_id,
        )
        assert map_state(ann.page)["zoom"] >= 15
        screenshot(ann.page, "need-help-shown-phone")

        # Cleared: the banner goes.
        carl.page.click("#status-box summary")
        carl.page.click("#status-clear")
        expect(banner).to_have_count(0)
        expect(person_row(ann.page, carl_id).locator(".chip")).to_be_hidden()
    ann.assert_no_console_errors()
    carl.assert_no_console_errors()


def test_the_fitted_map_shows_a_meeting_point_far_from_everyone(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    """The page asks for hints that include places (``include_places``): a meeting point
    13 km from the only sharer moves the camera out until both are on screen."""
    sid = web_server.create_session(name="Far")["session_id"]
    bob = join_over_rest(web_server, sid, "Bob")
    with WsClient(web_server.port, bob["websocket_token"]) as raw:
        raw.wait_for("session_state")
        ann, _ = ann_fitted_at_munich(web_server, open_tab, sid, DESKTOP)
        page = ann.page
        far = (GARCHING["latitude"], GARCHING["longitude"])
        assert not inside(map_state(page), *far)  # at zoom 17 around Ann: far off screen

        raw.send(
            "place_add",
            {
                "name": "Campus",
                "kind": "meet",
                "geometry": {"type": "Point", "coordinates": [far[1], far[0]]},
            },
        )
        raw.wait_for("place_added", lambda d: d["name"] == "Campus")
        wait_until(page, "() => Number(document.getElementById('map').dataset.zoom) < 17")
        state = map_state(page)
        assert inside(state, *far)
        assert inside(state, MUNICH["latitude"], MUNICH["longitude"])


def inside(state: dict[str, Any], lat: float, lng: float) -> bool:
    x, y = screen_of(state, lat, lng)
    return 0 <= x <= state["width"] and 0 <= y <= state["height"]
