"""The web client in a real browser against a real server: joining, the live map,
leaving, ending, resuming, watch-only, keyboard use, phone and desktop screens.

Positions come from Playwright's geolocation emulation; the camera is read from the
map element's data attributes (data-center-lat/-lng, data-zoom) and checked against
where the markers actually are on screen.
"""

from __future__ import annotations

import itertools
import math
import struct
import uuid
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.web.conftest import DESKTOP, LOCATION_TTL_S, PHONE, Tab, WebServer, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser]

OpenTab = Callable[..., Tab]

MUNICH = {"latitude": 48.1372, "longitude": 11.5755, "accuracy": 35}
NYMPHENBURG = {"latitude": 48.1583, "longitude": 11.5033, "accuracy": 120}
# A laptop placed by Wi-Fi: coarse enough for its accuracy circle to show on the map.
GARCHING = {"latitude": 48.2489, "longitude": 11.6532, "accuracy": 1500}

# Everything a test needs to know about the map, read in one synchronous evaluation so
# that the camera and the marker positions belong to the same frame.
MAP_STATE_JS = """() => {
  const map = document.getElementById("map");
  const box = map.getBoundingClientRect();
  const markers = [...map.querySelectorAll(".marker")].map((m) => {
    const pin = m.querySelector(".pin").getBoundingClientRect();
    return {
      id: m.dataset.userId, lat: Number(m.dataset.lat), lng: Number(m.dataset.lng),
      stale: m.classList.contains("stale"), label: m.querySelector(".marker-label").textContent,
      x: pin.left + pin.width / 2 - box.left, y: pin.top + pin.height / 2 - box.top,
      inside: pin.left >= box.left && pin.right <= box.right && pin.top >= box.top && pin.bottom <= box.bottom,
    };
  });
  return {
    lat: Number(map.dataset.centerLat), lng: Number(map.dataset.centerLng), zoom: Number(map.dataset.zoom),
    following: map.dataset.following === "true", width: box.width, height: box.height, markers,
  };
}"""


def map_state(page: Page) -> dict[str, Any]:
    return dict(page.evaluate(MAP_STATE_JS))


def wait_until(page: Page, js: str, arg: Any = None) -> None:
    page.wait_for_function(js, arg=arg, polling=100)


def wait_for_markers(page: Page, ids: list[str], *, all_inside: bool = True) -> None:
    """Until exactly these markers show (if asked: all in the visible map, none under a button)."""
    wait_until(
        page,
        """([ids, inside]) => {
          const ms = [...document.querySelectorAll("#map .marker")];
          const box = document.getElementById("map").getBoundingClientRect();
          const buttons = [...document.querySelectorAll("#map-controls button")].map((b) => b.getBoundingClientRect());
          const overlaps = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
          return ms.length === ids.length && ids.every((id) => ms.some((m) => m.dataset.userId === id))
            && (!inside || ms.every((m) => {
              const r = m.querySelector(".pin").getBoundingClientRect();
              return r.left >= box.left && r.right <= box.right && r.top >= box.top && r.bottom <= box.bottom
                && !buttons.some((b) => overlaps(r, b));
            }));
        }""",
        [ids, all_inside],
    )


def mercator(lat: float, lng: float) -> tuple[float, float]:
    s = math.sin(math.radians(lat))
    return (lng + 180) / 360, 0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)


def assert_markers_where_the_camera_puts_them(state: dict[str, Any]) -> None:
    cx, cy = mercator(state["lat"], state["lng"])
    world = 256 * 2 ** state["zoom"]
    for marker in state["markers"]:
        x, y = mercator(marker["lat"], marker["lng"])
        dx = x - cx - round(x - cx)
        assert marker["x"] == pytest.approx(state["width"] / 2 + dx * world, abs=2)
        assert marker["y"] == pytest.approx(state["height"] / 2 + (y - cy) * world, abs=2)


def join(
    page: Page,
    server: WebServer,
    session_id: str,
    name: str,
    *,
    share: bool = True,
    color: str | None = None,
) -> str:
    page.goto(f"{server.base}/join/{session_id}")
    page.fill("#display-name", name)
    if color is not None:
        page.fill("#color", color)
    page.click("#join")
    expect(page.locator("#app")).to_have_attribute("data-state", "live")
    page.click("#share-yes" if share else "#share-no")
    expect(page.locator("#app")).to_have_attribute("data-connection", "open")
    user_id = page.get_attribute("#app", "data-user-id")
    assert user_id
    return user_id


def person_row(page: Page, user_id: str) -> Any:
    return page.locator(f'#people-list li[data-user-id="{user_id}"]')


# --- the main scenario ------------------------------------------------------------------------
def test_two_people_share_follow_leave_and_the_session_ends(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    created = web_server.create_session(name="Sunday ride")
    sid = created["session_id"]
    ann = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
    bob = open_tab(DESKTOP, geolocation=NYMPHENBURG, permissions=["geolocation"])

    ann.page.goto(f"{web_server.base}/join/{sid}")
    expect(ann.page.locator("#session-name")).to_have_text("Sunday ride")
    expect(ann.page.locator("#open-app")).to_have_attribute("href", f"locshare://join/{sid}")
    ann.page.fill("#display-name", "Ann Lee")
    ann.page.fill("#color", "#4363d8")
    expect(ann.page.locator("#preview")).to_have_text("AL")
    ann.page.evaluate("document.activeElement.blur()")  # no focus ring in the screenshot
    screenshot(ann.page, "join-page-phone")
    sockets: list[str] = []
    ann.page.on("websocket", lambda ws: sockets.append(ws.url))
    ann_id = join(ann.page, web_server, sid, "Ann Lee", color="#4363d8")
    bob_id = join(bob.page, web_server, sid, "Bob", color="#f58231")
    assert ann_id != bob_id
    with web_server.http() as http:
        token = {"Authorization": f"Bearer {created['creator_token']}"}
        listed = http.get(f"/api/sessions/{sid}/participants", headers=token).json()
    colors = {p["display_name"]: p["avatar_color"] for p in listed["participants"]}
    assert colors == {"Ann Lee": "#4363D8", "Bob": "#F58231"}

    # The socket names its session for a load balancer (deploy's #sticky variant).
    assert sockets, "the page opened no WebSocket"
    assert all(parse_qs(urlsplit(url).query).get("session") == [sid] for url in sockets)

    # Each sees both, and the map (following the server's hints) fits both.
    for tab in (ann, bob):
        wait_for_markers(tab.page, [ann_id, bob_id])
        state = map_state(tab.page)
        assert state["following"]
        assert_markers_where_the_camera_puts_them(state)
    expect(person_row(ann.page, bob_id).locator(".status")).to_contain_text("sharing")

    # Bob moves: Ann sees his marker move, and the map refits around both.
    before = next(m for m in map_state(ann.page)["markers"] if m["id"] == bob_id)
    bob.context.set_geolocation(GARCHING)
    wait_until(
        ann.page,
        "([id, lat]) => document.querySelector(`#map .marker[data-user-id='${id}']`)?.dataset.lat == lat",
        [bob_id, GARCHING["latitude"]],
    )
    wait_for_markers(ann.page, [ann_id, bob_id])
    wait_for_markers(bob.page, [ann_id, bob_id])
    after = map_state(ann.page)
    moved = next(m for m in after["markers"] if m["id"] == bob_id)
    assert (moved["lat"], moved["lng"]) == (GARCHING["latitude"], GARCHING["longitude"])
    assert (moved["x"], moved["y"]) != pytest.approx((before["x"], before["y"]), abs=5)
    assert_markers_where_the_camera_puts_them(after)
    # Bob's coarse fix draws an accuracy circle of 2 x 1500 m around his marker.
    circle = ann.page.evaluate(
        """() => [...document.querySelectorAll("#map .accuracy")].filter((c) => !c.hidden)
                 .map((c) => c.getBoundingClientRect().width)"""
    )
    metres_per_px = (
        40075016.686 * math.cos(math.radians(GARCHING["latitude"])) / (256 * 2 ** after["zoom"])
    )
    assert circle == [pytest.approx(3000 / metres_per_px, rel=0.02)]
    screenshot(ann.page, "live-map-phone")
    screenshot(bob.page, "live-map-desktop")

    # Bob leaves: his marker and list entry disappear for Ann.
    bob.page.click("#leave")
    bob.page.click("#confirm-ok")
    expect(bob.page.locator("#app")).to_have_attribute("data-state", "left")
    expect(bob.page.locator("#state-title")).to_have_text("You left the session")
    wait_for_markers(ann.page, [ann_id])
    expect(person_row(ann.page, bob_id)).to_have_count(0)

    # The creator ends the session: Ann's page says so.
    web_server.end_session(created)
    expect(ann.page.locator("#app")).to_have_attribute("data-state", "ended")
    expect(ann.page.locator("#state-title")).to_have_text("This session has ended")
    expect(ann.page.locator("#state-text")).to_have_text("Its creator ended it.")
    assert not web_server.session(sid)["is_active"]
    ann.assert_no_console_errors()
    bob.assert_no_console_errors()


# --- error pages ----------------------------------------------------------------------------
def test_unknown_and_ended_sessions_get_clear_pages(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    tab = open_tab(DESKTOP)
    response = tab.page.goto(f"{web_server.base}/join/{uuid.uuid4()}")
    assert response is not None and response.status == 404
    expect(tab.page.locator("h1")).to_have_text("No such session")
    expect(tab.page.get_by_role("link", name="Start a new session")).to_be_visible()

    created = web_server.create_session(name="Over already")
    web_server.end_session(created)
    response = tab.page.goto(f"{web_server.base}/join/{created['session_id']}")
    assert response is not None and response.status == 410
    expect(tab.page.locator("h1")).to_have_text("This session has ended")
    expect(tab.page.locator(".lead")).to_contain_text("Over already")
    screenshot(tab.page, "ended-session-desktop")
    # The only console messages are Chrome's own notes on the 404 and 410 documents.
    assert all("status of 4" in error for error in tab.errors), tab.errors


# --- watch only -------------------------------------------------------------------------------
def test_refused_geolocation_watches_only_and_shows_as_not_sharing(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    sid = web_server.create_session()["session_id"]
    ann = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
    carl = open_tab(PHONE)  # no permission granted: headless Chromium refuses
    ann_id = join(ann.page, web_server, sid, "Ann")
    carl_id = join(carl.page, web_server, sid, "Carl")

    expect(carl.page.locator("#app")).to_have_attribute("data-sharing", "denied")
    expect(carl.page.locator("#share-text")).to_contain_text("Watching only")
    expect(carl.page.locator("#center-me")).to_be_disabled()
    wait_for_markers(carl.page, [ann_id])  # watching works
    expect(person_row(ann.page, carl_id).locator(".status")).to_have_text("not sharing")
    expect(person_row(carl.page, carl_id).locator(".status")).to_have_text("you are not sharing")
    wait_for_markers(ann.page, [ann_id])  # and Carl has no marker
    ann.assert_no_console_errors()
    carl.assert_no_console_errors()


def test_a_participant_who_stops_sending_is_greyed_with_last_seen(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    sid = web_server.create_session()["session_id"]
    ann = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
    bob = open_tab(PHONE, geolocation=NYMPHENBURG, permissions=["geolocation"])
    ann_id = join(ann.page, web_server, sid, "Ann")
    bob_id = join(bob.page, web_server, sid, "Bob")
    wait_for_markers(ann.page, [ann_id, bob_id])
    bob.context.close()  # gone without leaving: the location expires after the TTL
    marker = ann.page.locator(f'#map .marker[data-user-id="{bob_id}"]')
    expect(marker).to_have_class("marker stale", timeout=(LOCATION_TTL_S + 15) * 1000)
    expect(marker.locator(".marker-label")).to_contain_text("last seen")
    expect(person_row(ann.page, bob_id).locator(".status")).to_contain_text("last seen")
    # The hints now cover Ann only; "Show" brings Bob's last position into view.
    ann.page.click("#people summary")
    person_row(ann.page, bob_id).get_by_role("button", name="Show Bob on the map").click()
    expect(ann.page.locator("#map")).to_have_attribute("data-following", "false")
    wait_until(
        ann.page,
        """(id) => {
          const pin = document.querySelector(`#map .marker[data-user-id='${id}'] .pin`).getBoundingClientRect();
          const box = document.getElementById("map").getBoundingClientRect();
          return pin.left >= box.left && pin.right <= box.right && pin.top >= box.top && pin.bottom <= box.bottom;
        }""",
        bob_id,
    )
    screenshot(ann.page, "stale-participant-phone")
    ann.assert_no_console_errors()


# --- resuming -------------------------------------------------------------------------------
def test_reload_resumes_the_same_participant(web_server: WebServer, open_tab: OpenTab) -> None:
    sid = web_server.create_session()["session_id"]
    ann = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
    ann_id = join(ann.page, web_server, sid, "Ann")
    wait_for_markers(ann.page, [ann_id])
    assert web_server.session(sid)["participant_count"] == 1

    ann.page.reload()
    expect(ann.page.locator("#app")).to_have_attribute("data-state", "live")
    expect(ann.page.locator("#app")).to_have_attribute("data-connection", "open")
    assert ann.page.get_attribute("#app", "data-user-id") == ann_id
    # Sharing resumes without asking again, and nobody joined twice.
    expect(ann.page.locator("#app")).to_have_attribute("data-sharing", "on")
    wait_for_markers(ann.page, [ann_id])
    expect(ann.page.locator("#people-list li")).to_have_count(1)
    assert web_server.session(sid)["participant_count"] == 1
    ann.assert_no_console_errors()


def test_a_duplicated_tab_takes_over_and_the_first_can_take_it_back(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    sid = web_server.create_session()["session_id"]
    first = open_tab(DESKTOP, geolocation=MUNICH, permissions=["geolocation"])
    ann_id = join(first.page, web_server, sid, "Ann")
    # Chrome's "Duplicate tab" copies sessionStorage: the copy is the same participant.
    stored = first.page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    second = first.context.new_page()
    second.goto(f"{web_server.base}/")
    second.evaluate(
        "(entries) => JSON.parse(entries).forEach(([k, v]) => sessionStorage.setItem(k, v))", stored
    )
    second.goto(f"{web_server.base}/join/{sid}")
    expect(second.locator("#app")).to_have_attribute("data-connection", "open")
    assert second.get_attribute("#app", "data-user-id") == ann_id

    expect(first.page.locator("#app")).to_have_attribute("data-state", "replaced")
    expect(first.page.locator("#state-title")).to_have_text("Open in another tab")
    first.page.click("#state-action")  # "Use it here"
    expect(first.page.locator("#app")).to_have_attribute("data-state", "live")
    expect(first.page.locator("#app")).to_have_attribute("data-connection", "open")
    expect(second.locator("#app")).to_have_attribute("data-state", "replaced")
    assert web_server.session(sid)["participant_count"] == 1
    first.assert_no_console_errors()


def test_reconnects_by_itself_after_the_server_restarts(
    make_server: Callable[..., WebServer], open_tab: OpenTab
) -> None:
    server = make_server()
    sid = server.create_session()["session_id"]
    ann = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
    ann_id = join(ann.page, server, sid, "Ann")
    wait_for_markers(ann.page, [ann_id])

    server.restart()  # sockets get 1001; the page backs off and comes back
    expect(ann.page.locator("#app")).to_have_attribute("data-connection", "open", timeout=40_000)
    assert ann.page.get_attribute("#app", "data-state") == "live"
    assert ann.page.get_attribute("#app", "data-user-id") == ann_id
    wait_for_markers(ann.page, [ann_id])  # the latest position was sent again
    assert server.session(sid)["participant_count"] == 1
    # While the server was down, Chrome logged the refused connections; nothing else.
    unexpected = [
        e for e in ann.errors if "ERR_CONNECTION_REFUSED" not in e and "WebSocket" not in e
    ]
    assert unexpected == []


# --- the landing page -----------------------------------------------------------------------
def test_landing_page_creates_a_session_the_creator_joins_and_ends(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    tab = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
    page = tab.page
    page.goto(f"{web_server.base}/")
    page.fill("#session-name", "Festival <crew>")
    page.select_option("#duration", "2")
    page.click("#create")
    expect(page.locator("#created-name")).to_have_text("Festival <crew>")
    link = page.input_value("#join-link")
    sid = link.rsplit("/", 1)[1]
    assert link == f"{web_server.base.replace('127.0.0.1', 'localhost')}/join/{sid}"
    details = web_server.session(sid)
    assert details["name"] == "Festival <crew>"
    screenshot(page, "landing-created-phone")

    page.click("#join-created")
    expect(page.locator("#creator-note")).to_be_visible()
    me = join(page, web_server, sid, "Organiser")
    wait_for_markers(page, [me])
    page.click("#end-session")
    page.click("#confirm-ok")
    expect(page.locator("#app")).to_have_attribute("data-state", "ended")
    assert web_server.session(sid)["ended_reason"] == "ended"
    tab.assert_no_console_errors()


# --- keyboard -------------------------------------------------------------------------------
def tab_until(page: Page, element_id: str, *, limit: int = 30) -> list[str]:
    """Presses Tab until the element has focus; returns the ids passed on the way."""
    seen: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement?.id || document.activeElement?.tagName")
        seen.append(focused)
        if focused == element_id:
            return seen
    raise AssertionError(f"Tab never reached #{element_id}; got {seen}")


def test_keyboard_joins_pans_zooms_and_follows_again(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    sid = web_server.create_session()["session_id"]
    bob = open_tab(PHONE, geolocation=NYMPHENBURG, permissions=["geolocation"])
    bob_id = join(bob.page, web_server, sid, "Bob")
    kay = open_tab(DESKTOP, geolocation=MUNICH, permissions=["geolocation"])
    page = kay.page
    page.goto(f"{web_server.base}/join/{sid}")

    tab_until(page, "display-name")
    page.keyboard.type("Kay")
    assert "color" in tab_until(page, "join")
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_have_attribute("data-state", "live")
    tab_until(page, "share-yes")
    page.keyboard.press("Enter")
    kay_id = page.get_attribute("#app", "data-user-id")
    assert kay_id
    wait_for_markers(page, [kay_id, bob_id])
    # Round the whole page: the map and its controls, then the panel.
    seen = tab_until(page, "map", limit=40) + tab_until(page, "leave")
    assert {"map", "zoom-in", "zoom-out", "fit-all", "center-me"} <= set(seen)

    # Arrow keys pan, + and - zoom, and either stops following the hints.
    page.focus("#map")
    start = map_state(page)
    page.keyboard.press("ArrowRight")
    panned = map_state(page)
    assert not panned["following"]
    assert panned["lng"] > start["lng"]
    assert panned["zoom"] == start["zoom"]
    page.keyboard.press("+")
    assert map_state(page)["zoom"] == pytest.approx(start["zoom"] + 1)
    page.keyboard.press("-")
    held = map_state(page)
    assert held["zoom"] == pytest.approx(start["zoom"])

    # Not following: Bob moves, his marker does, the camera does not.
    bob.context.set_geolocation(GARCHING)
    wait_until(
        page,
        "([id, lat]) => document.querySelector(`#map .marker[data-user-id='${id}']`)?.dataset.lat == lat",
        [bob_id, GARCHING["latitude"]],
    )
    still = map_state(page)
    assert (still["lat"], still["lng"], still["zoom"]) == (held["lat"], held["lng"], held["zoom"])

    page.focus("#fit-all")
    page.keyboard.press("Enter")
    expect(page.locator("#map")).to_have_attribute("data-following", "true")
    wait_for_markers(page, [kay_id, bob_id])
    kay.assert_no_console_errors()
    bob.assert_no_console_errors()


# --- screens --------------------------------------------------------------------------------
@pytest.mark.parametrize("device", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_page_fits_phone_and_desktop_screens(
    web_server: WebServer, open_tab: OpenTab, device: dict[str, Any]
) -> None:
    name = "phone" if device is PHONE else "desktop"
    sid = web_server.create_session(name="A rather long session name for a small screen")[
        "session_id"
    ]
    tab = open_tab(device, geolocation=MUNICH, permissions=["geolocation"])
    page = tab.page
    width, height = device["viewport"]["width"], device["viewport"]["height"]
    page.goto(f"{web_server.base}/join/{sid}")
    expect(page.locator("#join")).to_be_in_viewport()
    page.fill("#display-name", "Dana")
    page.click("#join")
    expect(page.locator("#share-ask")).to_be_visible()
    expect(page.locator("#share-yes")).to_be_in_viewport()
    screenshot(page, f"share-prompt-{name}")
    page.click("#share-yes")
    me = page.get_attribute("#app", "data-user-id")
    assert me
    wait_for_markers(page, [me])
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
    for control in ("#zoom-in", "#zoom-out", "#fit-all", "#center-me", "#leave", "#conn"):
        box = page.locator(control).bounding_box()
        assert box is not None, control
        assert box["x"] >= 0 and box["y"] >= 0, control
        assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, control
    state = map_state(page)
    if device is PHONE:
        assert state["width"] == width and state["height"] >= 0.5 * height
    else:
        assert state["width"] >= 0.6 * width and state["height"] == height
    screenshot(page, f"live-map-alone-{name}")
    tab.assert_no_console_errors()


# --- name labels ----------------------------------------------------------------------------
# Names as long as people type them (the limit is 100 characters): every label is at its
# 180 px maximum, far wider than the 48 px the hints leave at the map's sides.
LONG_NAMES = [
    "Maximiliane Alexandra Freifrau von Hohenzollern-Sigmaringen",
    "Bartholomew Fitzgerald-Montgomery, riding the red tandem at the front",
    "Konstantinos Papadopoulos-Georgiou from the support van at the very back of the convoy, channel 7",
    "Anne-Sophie Leclerc-Vandenberghe (pillion)",
    "Zoë Ravensworth-Castellanos de la Fuente y Martínez, sweep rider",
]
# Two groups around Munich as (lat, lng) corners: one much wider than any screen is tall,
# one much taller than wide, so the hint's fit puts pins at the left and right, then at
# the top and bottom of the padded screen.
Box = tuple[tuple[float, float], tuple[float, float]]  # (south, west), (north, east)
WIDE_BOX: Box = ((48.08, 11.30), (48.20, 11.85))
TALL_BOX: Box = ((47.95, 11.50), (48.30, 11.65))
HINT_PADDING_PX = 48  # join.js sends this padding in viewport_size
FIT_SLACK_PX = 8  # the server rounds the zoom down to 0.01 steps

# Per marker: its pin and label boxes relative to the map, and whether each is inside it
# and clear of the control bar's buttons.
LABELS_JS = """() => {
  const map = document.getElementById("map").getBoundingClientRect();
  const buttons = [...document.querySelectorAll("#map-controls button")].map((b) => b.getBoundingClientRect());
  const within = (r) => r.left >= map.left && r.right <= map.right && r.top >= map.top && r.bottom <= map.bottom;
  const overlaps = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const rel = (r) => ({ left: r.left - map.left, right: r.right - map.left, top: r.top - map.top, bottom: r.bottom - map.top });
  return [...document.querySelectorAll("#map .marker")].map((m) => {
    const pin = m.querySelector(".pin").getBoundingClientRect();
    const label = m.querySelector(".marker-label");
    const box = label.getBoundingClientRect();
    return {
      id: m.dataset.userId, text: label.textContent, above: label.classList.contains("above"),
      pin: rel(pin), label: rel(box), x: pin.left + pin.width / 2 - map.left, y: pin.top + pin.height / 2 - map.top,
      pinInside: within(pin), labelInside: within(box),
      pinOverControl: buttons.some((b) => overlaps(pin, b)), labelOverControl: buttons.some((b) => overlaps(box, b)),
    };
  });
}"""


def labels(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate(LABELS_JS))


def join_over_rest(server: WebServer, session_id: str, name: str) -> dict[str, Any]:
    with server.http() as http:
        response = http.post(f"/api/sessions/{session_id}/join", json={"display_name": name})
    assert response.status_code == 201, response.text
    return dict(response.json())


# Real WebSocket clients on the page's origin (its CSP allows only that), one per
# participant, each sending its position now and then every interval like a phone;
# window.positions[token] can be changed between sends.
SHARE_FROM_PAGE_JS = """([people, intervalMs]) => new Promise((resolve, reject) => {
  window.positions = Object.fromEntries(people.map((p) => [p.token, p.at]));
  let open = 0;
  for (const p of people) {
    const ws = new WebSocket(`ws://${location.host}/ws?token=${encodeURIComponent(p.token)}`);
    const send = () => ws.readyState === WebSocket.OPEN
      && ws.send(JSON.stringify({ type: "location_update", data: window.positions[p.token] }));
    ws.onopen = () => {
      send();
      setInterval(send, intervalMs);
      if (++open === people.length) resolve();
    };
    ws.onclose = (event) => reject(new Error(`socket closed with ${event.code}`));
  }
})"""


def corners(box: Box) -> list[dict[str, float]]:
    (south, west), (north, east) = box
    return [
        {"lat": lat, "lng": lng, "accuracy": 10}
        for lat, lng in ((north, west), (north, east), (south, west), (south, east))
    ]


def bottom_middle(box: Box) -> dict[str, float]:
    (south, west), (_north, east) = box
    return {"latitude": south, "longitude": (west + east) / 2, "accuracy": 10}


def wait_for_fit(page: Page, ids: list[str], axis: str) -> list[dict[str, Any]]:
    """Until all markers show, fitted (along `axis`, the box's long side, the outermost pins
    sit at the padded edges), every pin and label inside the map and none under a button."""
    wait_for_markers(page, ids)
    try:
        wait_until(
            page,
            f"""([ids, axis, pad, slack]) => {{
          const ms = ({LABELS_JS})();
          const map = document.getElementById("map").getBoundingClientRect();
          const at = ms.map((m) => m[axis]);
          const edgesFitted = axis === "x"
            ? Math.min(...at) <= pad + slack && Math.max(...at) >= map.width - pad - slack
            : Math.min(...at) <= pad + slack;
          return ms.length === ids.length && edgesFitted
            && ms.every((m) => m.pinInside && m.labelInside && !m.pinOverControl && !m.labelOverControl);
        }}""",
            [ids, axis, HINT_PADDING_PX, FIT_SLACK_PX],
        )
    except PlaywrightTimeoutError:
        pytest.fail(f"never fitted with every label inside the map: {labels(page)}")
    return labels(page)


@pytest.mark.parametrize("device", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_long_name_labels_stay_inside_the_map(
    web_server: WebServer, open_tab: OpenTab, device: dict[str, Any]
) -> None:
    name = "phone" if device is PHONE else "desktop"
    sid = web_server.create_session(name="Long names")["session_id"]
    # Reduced motion: the camera jumps to each hint, so a fitted frame is the final one.
    viewer = open_tab(
        device,
        geolocation=bottom_middle(WIDE_BOX),
        permissions=["geolocation"],
        reduced_motion="reduce",
    )
    others = [join_over_rest(web_server, sid, n) for n in LONG_NAMES[1:]]
    sender = open_tab(DESKTOP)
    sender.page.goto(f"{web_server.base}/")
    sender.page.evaluate(
        SHARE_FROM_PAGE_JS,
        [
            [
                {"token": o["websocket_token"], "at": at}
                for o, at in zip(others, corners(WIDE_BOX), strict=True)
            ],
            1000,
        ],
    )
    me = join(viewer.page, web_server, sid, LONG_NAMES[0])
    ids = [me, *(o["user_id"] for o in others)]

    # The wide group: pins at the left and right padded edges, where a label centred on
    # its pin would stick out by half its width minus 48 px.
    wide = wait_for_fit(viewer.page, ids, "x")
    assert min(m["label"]["right"] - m["label"]["left"] for m in wide) >= 150  # long labels
    map_width = map_state(viewer.page)["width"]
    leftmost = min(wide, key=lambda m: m["x"])
    rightmost = max(wide, key=lambda m: m["x"])
    assert leftmost["label"]["left"] >= 0 and leftmost["label"]["left"] > leftmost["x"] - 90
    assert rightmost["label"]["right"] <= map_width
    assert rightmost["label"]["right"] < rightmost["x"] + 90
    for m in (leftmost, rightmost):  # shifted, still under its own pin
        assert m["label"]["left"] < m["x"] < m["label"]["right"]
    screenshot(viewer.page, f"long-names-wide-{name}")

    # The tall group: pins at the top and bottom; the labels below the lowest pins stay
    # above the control bar.
    sender.page.evaluate(
        "(ps) => Object.keys(window.positions).forEach((t, i) => { window.positions[t] = ps[i]; })",
        corners(TALL_BOX),
    )
    viewer.context.set_geolocation(bottom_middle(TALL_BOX))
    wait_for_fit(viewer.page, ids, "y")
    screenshot(viewer.page, f"long-names-tall-{name}")

    # Panned by hand, pins pass the edges: a label stays inside the map as long as its
    # pin does (flipping above the pin near the bottom), and goes out of view with it.
    viewer.page.focus("#map")
    flipped = False
    for key in ["ArrowUp"] * 5 + ["ArrowRight"] * 6 + ["ArrowLeft"] * 10:
        viewer.page.keyboard.press(key)
        for m in labels(viewer.page):
            if m["pinInside"]:
                assert m["labelInside"], (key, m)
                flipped |= m["above"]
            assert m["label"]["left"] < m["x"] < m["label"]["right"], (key, m)
    assert flipped  # some label met the control bar and went above its pin
    viewer.assert_no_console_errors()
    sender.assert_no_console_errors()


# --- open in app ----------------------------------------------------------------------------
# An iPad's Safari asks for desktop pages by default and calls itself a Mac; only its touch
# screen tells it apart from one.
IPAD_AS_MAC = {
    "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "viewport": {"width": 820, "height": 1180},
    "has_touch": True,
}
MAC = {"user_agent": IPAD_AS_MAC["user_agent"], "viewport": {"width": 1440, "height": 900}}
# A Windows laptop with a touch screen: touch, but no app.
TOUCH_LAPTOP = {
    "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "viewport": {"width": 1366, "height": 768},
    "has_touch": True,
}


@pytest.mark.parametrize(
    ("device_name", "offered"),
    [
        ("desktop", False),
        ("mac", False),
        ("touch laptop", False),
        ("Pixel 7", True),
        ("Galaxy Tab S4", True),
        ("iPhone 13", True),
        ("iPad Pro 11", True),
        ("iPad as mac", True),
    ],
)
def test_open_in_app_is_offered_only_where_the_app_can_exist(
    web_server: WebServer,
    open_tab: OpenTab,
    devices: dict[str, dict[str, Any]],
    device_name: str,
    offered: bool,
) -> None:
    own = {"desktop": DESKTOP, "mac": MAC, "touch laptop": TOUCH_LAPTOP, "iPad as mac": IPAD_AS_MAC}
    tab = open_tab(own.get(device_name) or devices[device_name])
    if device_name == "iPad as mac":
        # Chromium's touch emulation reports one touch point; an iPad reports five.
        cdp = tab.context.new_cdp_session(tab.page)
        cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    sid = web_server.create_session()["session_id"]
    tab.page.goto(f"{web_server.base}/join/{sid}")
    tab.page.fill("#display-name", "Ann Lee")
    expect(tab.page.locator("#preview")).to_have_text("AL")  # join.js has set the form up
    link = tab.page.locator("#open-app")
    expect(link).to_have_attribute("href", f"locshare://join/{sid}")
    if offered:
        expect(link).to_be_visible()
    else:
        expect(tab.page.locator("#app-link")).to_be_hidden()
    tab.assert_no_console_errors()


# --- tiles ----------------------------------------------------------------------------------
def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain one-colour PNG, written by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_tiles_show_and_failed_tiles_leave_the_markers_visible(
    make_server: Callable[..., WebServer], open_tab: OpenTab
) -> None:
    server = make_server(
        LOCSHARE_TILE_URL="http://tiles.test/{z}/{x}/{y}.png",
        LOCSHARE_TILE_ATTRIBUTION="© Test tiles",
    )
    sid = server.create_session()["session_id"]
    tab = open_tab(PHONE, geolocation=MUNICH, permissions=["geolocation"])
    tile = png(256, 256, (220, 232, 220))

    def serve_tile(route: Route) -> None:
        x = int(route.request.url.rsplit("/", 2)[1])
        if x % 2:
            route.abort()  # half of the tiles fail
        else:
            route.fulfill(status=200, content_type="image/png", body=tile)

    tab.context.route("http://tiles.test/**", serve_tile)
    response = tab.page.goto(f"{server.base}/join/{sid}")
    assert response is not None
    assert "img-src 'self' http://tiles.test;" in response.headers["content-security-policy"]
    me = join(tab.page, server, sid, "Eve")
    wait_for_markers(tab.page, [me])
    expect(tab.page.locator("#map img.tile.loaded").first).to_be_attached()
    expect(tab.page.locator("#map img.tile.failed").first).to_be_attached()
    expect(tab.page.locator(".map-attribution")).to_have_text("© Test tiles")
    # Tiles are drawn at the scale of the fractional zoom, with no gap between neighbours.
    # Tiles of an earlier zoom level stay, scaled, until the new level is in, and a viewport
    # hint may change the zoom at any moment: read the zoom and the tiles in one go, once
    # every tile on the map is of the current level and has loaded or failed.
    state = tab.page.wait_for_function(
        """() => {
          const zoom = Number(document.getElementById("map").dataset.zoom);
          const z = String(Math.min(19, Math.round(zoom)));
          const tiles = [...document.querySelectorAll("#map img.tile")];
          const settled = tiles.length > 0 && tiles.every((e) => e.dataset.z === z
            && (e.classList.contains("loaded") || e.classList.contains("failed")));
          if (!settled) return null;
          const boxes = tiles.filter((e) => !e.classList.contains("failed"))
            .map((e) => e.getBoundingClientRect().toJSON());
          return { zoom, boxes };
        }""",
        polling=100,
    ).json_value()
    zoom = state["zoom"]
    size = 256 * 2 ** (zoom - round(zoom))
    boxes = state["boxes"]
    assert boxes
    for box in boxes:
        assert box["width"] == pytest.approx(size, abs=1)
        assert box["height"] == pytest.approx(size, abs=1)
    # Every other column failed: the loaded ones sit whole tile widths apart.
    lefts = sorted({round(b["x"]) for b in boxes})
    for a, b in itertools.pairwise(lefts):
        assert abs((b - a) - round((b - a) / size) * size) <= 1
    unexpected = [e for e in tab.errors if "ERR_FAILED" not in e]
    assert unexpected == []
