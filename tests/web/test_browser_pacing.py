"""Issue 15 in the browser: the page says whether it is on screen (``visibility``), sends
its position at the interval the server asks for (``update_interval``), and answers
``locate_now`` with a fresh fix.

The other participant is a real WebSocket client in the test (``WsClient``). Headless
Chromium keeps every page "visible" (minimising the window, another tab in front and
CDP's ``Page.setWebLifecycleState`` all leave ``document.visibilityState`` alone: tried),
so a page is hidden by overriding ``document.visibilityState``/``document.hidden`` and
dispatching ``visibilitychange``: the page's own listener then runs as in a real browser.

What the page sends and receives is recorded on the page (an init script wraps
``WebSocket.prototype.send`` and listens to each socket's messages; another wraps the
Geolocation API to record the options it is asked with), with the page's own clock:
Playwright's sync API only delivers its events while the test calls into it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import PHONE, Tab, WebServer, server_env
from tests.web.test_browser import MUNICH, join, join_over_rest, wait_until
from tests.web.wsclient import WsClient

pytestmark = [pytest.mark.slow, pytest.mark.browser]

BASE_S = 2  # the protocol's default base interval (reason "watched")
UNWATCHED_S = 4  # short instead of 30 s, so that a test sees several sends at it
LOCATE_NOW_MIN_INTERVAL_S = 5  # the server sends locate_now at most this often per session
# Timers fire a little early or late (join.js allows 250 ms); a send is "at the interval"
# if it comes no sooner than this before it.
TIMER_SLACK_MS = 300

# Records every frame the page's sockets send and receive, and every Geolocation call.
INSTRUMENT_JS = """(() => {
  window.sent = [];
  window.received = [];
  window.sockets = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const socket = window.sockets.push(this) - 1;
      this.addEventListener("message", (e) => {
        window.received.push({ at: performance.now(), socket, frame: JSON.parse(e.data) });
      });
    }
    send(data) {
      window.sent.push({ at: performance.now(), socket: window.sockets.indexOf(this), frame: JSON.parse(data) });
      super.send(data);
    }
  };
  window.geoCalls = [];
  const geo = navigator.geolocation;
  for (const name of ["watchPosition", "getCurrentPosition"]) {
    const original = geo[name].bind(geo);
    geo[name] = (ok, fail, options) => {
      window.geoCalls.push({ name, at: performance.now(), options: { ...options } });
      return original(ok, fail, options);
    };
  }
})();"""

SET_HIDDEN_JS = """(hidden) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


@pytest.fixture(scope="module")
def paced_server(database_url: str) -> Iterator[WebServer]:
    server = WebServer(
        server_env(
            database_url,
            LOCSHARE_UPDATE_INTERVAL_S=str(BASE_S),
            LOCSHARE_UNWATCHED_INTERVAL_S=str(UNWATCHED_S),
            # A fake position never moves: without this, "stationary" after 60 s.
            LOCSHARE_STATIONARY_WINDOW_S="3600",
            LOCSHARE_LOCATION_TTL_S="30",
        )
    )
    server.start()
    yield server
    server.stop()


def set_hidden(page: Page, hidden: bool) -> None:
    page.evaluate(SET_HIDDEN_JS, hidden)


def sent(page: Page, type_: str) -> list[dict[str, Any]]:
    return [s for s in page.evaluate("window.sent") if s["frame"]["type"] == type_]


def received(page: Page, type_: str) -> list[dict[str, Any]]:
    return [r for r in page.evaluate("window.received") if r["frame"]["type"] == type_]


def instrumented_tab(open_tab: Any, **options: Any) -> Tab:
    tab: Tab = open_tab(PHONE, **options)
    tab.context.add_init_script(INSTRUMENT_JS)
    return tab


def test_hiding_the_page_slows_the_others_and_showing_it_asks_them_for_a_fix(
    paced_server: WebServer, open_tab: Any
) -> None:
    server = paced_server
    sid = server.create_session()["session_id"]
    bob = join_over_rest(server, sid, "Bob")
    with WsClient(server.port, bob["websocket_token"]) as raw:
        raw.wait_for("session_state")
        # Bob's own map is off, so only Ann's page looks at him (and nobody at first).
        raw.send("visibility", {"visible": False})
        raw.wait_for("update_interval", lambda d: d["reason"] == "nobody_watching")
        ann = instrumented_tab(open_tab)
        join(ann.page, server, sid, "Ann", share=False)
        raw.wait_for("update_interval", lambda d: d == {"seconds": BASE_S, "reason": "watched"})

        # Hidden: the page says so, and nobody looks at Bob any more.
        mark = raw.mark()
        set_hidden(ann.page, True)
        raw.wait_for(
            "update_interval",
            lambda d: d == {"seconds": UNWATCHED_S, "reason": "nobody_watching"},
            after=mark,
        )
        assert [s["frame"]["data"] for s in sent(ann.page, "visibility")][-1] == {"visible": False}

        # A reconnect while hidden: the new socket says "hidden" right after it opens,
        # before anything else but its screen size.
        ann.page.evaluate("window.sockets.at(-1).close(3000)")
        wait_until(
            ann.page,
            """() => window.sockets.length === 2
              && window.received.some((r) => r.socket === 1 && r.frame.type === "session_state")""",
        )
        first = [s["frame"] for s in ann.page.evaluate("window.sent") if s["socket"] == 1][:2]
        assert first == [
            {"type": "viewport_size", "data": first[0]["data"]},
            {"type": "visibility", "data": {"visible": False}},
        ]
        # Until it said so the new connection counted as a viewer; once it has, Bob is
        # (again) asked for the slow interval. Changes reach him within a second.
        time.sleep(1.0)
        assert raw.of_type("update_interval")[-1].data["reason"] == "nobody_watching"
        # Every connection so far may have started the 5 s during which the server sends
        # no locate_now (Bob's, Ann's, Ann's second): wait that out.
        time.sleep(LOCATE_NOW_MIN_INTERVAL_S + 0.5)
        # A hidden page is sent no positions...
        before = len(received(ann.page, "locations"))
        raw.send("location_update", {"lat": 47.5, "lng": 8.25})
        time.sleep(1.0)
        assert len(received(ann.page, "locations")) == before

        # Visible again: Bob gets locate_now and the base interval within a second.
        mark = raw.mark()
        shown_at = time.monotonic()
        set_hidden(ann.page, False)
        # ... and one catch-up with the present once it is visible again.
        wait_until(
            ann.page,
            """() => window.received.some((r) => r.frame.type === "locations"
              && r.frame.data.updates.some((u) => u.lat === 47.5))""",
        )
        locate = raw.wait_for("locate_now", after=mark)
        watched = raw.wait_for(
            "update_interval", lambda d: d == {"seconds": BASE_S, "reason": "watched"}, after=mark
        )
        assert locate.at - shown_at < 1.0
        assert watched.at - shown_at < 1.0
        assert [s["frame"]["data"] for s in sent(ann.page, "visibility")][-1] == {"visible": True}
    ann.assert_no_console_errors()


# Until the page has sent `count` location updates after `since` (its clock, ms).
SENT_SINCE_JS = """([since, count]) =>
  window.sent.filter((s) => s.frame.type === "location_update" && s.at > since).length >= count"""


def sends_after(page: Page, since_ms: float) -> list[dict[str, Any]]:
    return [s for s in sent(page, "location_update") if s["at"] > since_ms]


def gaps(sends: list[dict[str, Any]]) -> list[float]:
    return [b["at"] - a["at"] for a, b in itertools.pairwise(sends)]


def test_the_page_sends_at_the_interval_it_is_asked_for_and_answers_locate_now(
    paced_server: WebServer, open_tab: Any
) -> None:
    server = paced_server
    sid = server.create_session()["session_id"]
    bob = join_over_rest(server, sid, "Bob")
    with WsClient(server.port, bob["websocket_token"]) as raw:  # Bob looks at the map
        raw.wait_for("session_state")
        ann = instrumented_tab(open_tab, geolocation=MUNICH, permissions=["geolocation"])
        join(ann.page, server, sid, "Ann")
        app = ann.page.locator("#app")

        # Watched: every 2 s, from a high-accuracy watch.
        expect(app).to_have_attribute("data-pace", "watched")
        expect(app).to_have_attribute("data-interval", str(BASE_S))
        since = received(ann.page, "update_interval")[-1]["at"]
        wait_until(ann.page, SENT_SINCE_JS, [since, 3])
        assert min(gaps(sends_after(ann.page, since))) >= BASE_S * 1000 - TIMER_SLACK_MS
        watch = [c for c in ann.page.evaluate("window.geoCalls") if c["name"] == "watchPosition"]
        assert watch[-1]["options"]["enableHighAccuracy"] is True
        expect(ann.page.locator("#share-text")).to_have_text(
            f"Sharing your location every {BASE_S} s"
        )

        # Nobody looks at Ann's position: every 4 s, and the watch drops high accuracy.
        raw.send("visibility", {"visible": False})
        expect(app).to_have_attribute("data-pace", "nobody_watching")
        expect(app).to_have_attribute("data-interval", str(UNWATCHED_S))
        expect(ann.page.locator("#share-text")).to_have_text(
            f"Sharing every {UNWATCHED_S} s: nobody is looking"
        )
        since = received(ann.page, "update_interval")[-1]["at"]
        wait_until(ann.page, SENT_SINCE_JS, [since, 3])
        slow = sends_after(ann.page, since)
        assert min(gaps(slow)) >= UNWATCHED_S * 1000 - TIMER_SLACK_MS
        watch = [c for c in ann.page.evaluate("window.geoCalls") if c["name"] == "watchPosition"]
        assert watch[-1]["options"]["enableHighAccuracy"] is False
        assert watch[-1]["at"] > since

        # Bob looks again: Ann's page gets locate_now and sends a fresh fix at once
        # (sooner than the 4 s interval), then the 2 s interval again.
        raw.send("visibility", {"visible": True})
        wait_until(ann.page, "() => window.received.some((r) => r.frame.type === 'locate_now')")
        asked = received(ann.page, "locate_now")[0]["at"]
        wait_until(ann.page, SENT_SINCE_JS, [asked, 1])
        fresh = [
            c for c in ann.page.evaluate("window.geoCalls") if c["name"] == "getCurrentPosition"
        ]
        assert len(fresh) == 1 and fresh[0]["at"] >= asked
        assert fresh[0]["options"]["maximumAge"] == 0
        assert fresh[0]["options"]["enableHighAccuracy"] is True
        before = [s for s in sent(ann.page, "location_update") if s["at"] <= asked]
        answer = sends_after(ann.page, asked)[0]
        assert answer["at"] - before[-1]["at"] < UNWATCHED_S * 1000 - TIMER_SLACK_MS
        # (Chromium's emulated position keeps the timestamp of when it was set, so the
        # fix's freshness shows only in the options it was asked with, checked above.)
        expect(app).to_have_attribute("data-pace", "watched")
    ann.assert_no_console_errors()
