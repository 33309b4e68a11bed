"""XSS through names, in a real Chromium (issue 12: held).

Session names and display names are the only text one user shows another.  They reach
the pages through Jinja2's autoescaping (server-rendered: title, heading, link-preview
tags, the 410 page) and ``textContent`` (the live map's labels, the people list, the
landing page's confirmation); the Content-Security-Policy would block inline script
anyway.  So the test asks more than "no script ran": the text shows literally, no
element was created from it, and the console stayed clean (a blocked inline script
would log a CSP violation there, so escaping is checked on its own, not behind the CSP).

Set-up as in ``tests/web/conftest.py``: the system's ``/usr/bin/chromium`` driven by
Playwright (never ``playwright install``), a ``locshare serve`` subprocess.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.web import conftest as web_fixtures
from tests.web.conftest import DESKTOP, PHONE, Tab, WebServer

# The browser fixtures of tests/web (module-scoped: Playwright's asyncio loop must be
# gone before the trio tests of other modules run).
playwright = web_fixtures.playwright
browser = web_fixtures.browser
web_server = web_fixtures.web_server
open_tab = web_fixtures.open_tab

pytestmark = [pytest.mark.slow, pytest.mark.browser]

OpenTab = Callable[..., Tab]

# Each payload would set window.__pwned or open a dialog if it ever ran.
PAYLOADS = [
    '<img src=x onerror="window.__pwned=1;alert(1)">',
    "</script><script>window.__pwned=2;alert(2)</script>",
    '"><svg onload="window.__pwned=3;alert(3)">',
    '\'"><iframe srcdoc="<script>parent.__pwned=4</script>">',
    "javascript:window.__pwned=5//{{7*7}}${7*7}",
    "<style>*{display:none}</style><b onmouseover=alert(6)>x</b>",
]
MUNICH = {"latitude": 48.1372, "longitude": 11.5755, "accuracy": 30}


def watch(tab: Tab) -> list[str]:
    """Every dialog the page opens (dismissed at once)."""
    dialogs: list[str] = []

    def on_dialog(dialog: object) -> None:
        dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()  # type: ignore[attr-defined]

    tab.page.on("dialog", on_dialog)
    return dialogs


def assert_nothing_ran(tab: Tab, dialogs: list[str], *, status: int | None = None) -> None:
    """``status``: the page's own HTTP status, which Chromium logs as an error."""
    page = tab.page
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == []
    # Nothing built from a payload: these elements exist nowhere on locshare's pages.
    injected = page.evaluate(
        """() => document.querySelectorAll(
             'img[src="x"], svg[onload], iframe, b[onmouseover], body style').length"""
    )
    assert injected == 0
    expected = f"the server responded with a status of {status} ()"
    assert [error for error in tab.errors if not error.endswith(expected)] == []


def assert_text_only(page: Page, selector: str, text: str) -> None:
    element = page.locator(selector)
    expect(element).to_have_text(text)
    assert element.evaluate("e => e.children.length") == 0


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_session_name_shows_literally_on_its_pages(
    web_server: WebServer, open_tab: OpenTab, payload: str
) -> None:
    """The join page (heading, title), then the 410 page once it ended."""
    created = web_server.create_session(name=payload)
    tab = open_tab(PHONE)
    dialogs = watch(tab)
    tab.page.goto(f"{web_server.base}/join/{created['session_id']}")
    assert_text_only(tab.page, "#session-name", payload)
    assert payload in tab.page.title()
    assert_nothing_ran(tab, dialogs)
    web_server.end_session(created)
    tab.page.reload()
    expect(tab.page.locator("h1")).to_have_text("This session has ended")
    expect(tab.page.locator("main")).to_contain_text(payload)
    assert_nothing_ran(tab, dialogs, status=410)


def test_names_show_literally_on_the_live_map_and_in_the_people_list(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    """Each payload is a participant's display name; they all share a location, and an
    honest participant's map labels and people list show every name as text."""
    created = web_server.create_session(name="Sunday ride")
    url = f"{web_server.base}/join/{created['session_id']}"
    ann = open_tab(DESKTOP, geolocation=MUNICH, permissions=["geolocation"])
    ann_dialogs = watch(ann)
    ids: dict[str, str] = {}
    attackers: list[tuple[Tab, list[str]]] = []
    for number, payload in enumerate(PAYLOADS):
        where = {**MUNICH, "latitude": MUNICH["latitude"] + 0.01 * (number + 1)}
        tab = open_tab(PHONE, geolocation=where, permissions=["geolocation"])
        attackers.append((tab, watch(tab)))
        ids[payload] = join(tab.page, url, payload)
    join(ann.page, url, "Ann")
    for payload, user_id in ids.items():
        marker = ann.page.locator(f'#map .marker[data-user-id="{user_id}"]')
        expect(marker).to_have_count(1)
        label = marker.locator(".marker-label")
        expect(label).to_contain_text(payload)
        assert label.evaluate("e => e.children.length") == 0
        assert marker.get_attribute("aria-label", timeout=5000).startswith(payload)  # type: ignore[union-attr]
        assert_text_only(ann.page, f'#people-list li[data-user-id="{user_id}"] .name', payload)
    assert_nothing_ran(ann, ann_dialogs)
    for tab, dialogs in attackers:  # their own pages render the others' names too
        expect(tab.page.locator("#people-list li")).to_have_count(len(PAYLOADS) + 1)
        assert_nothing_ran(tab, dialogs)


def test_the_landing_page_shows_a_created_name_literally(
    web_server: WebServer, open_tab: OpenTab
) -> None:
    tab = open_tab(DESKTOP)
    dialogs = watch(tab)
    tab.page.goto(web_server.base)
    for payload in PAYLOADS[:3]:
        tab.page.goto(web_server.base)
        tab.page.fill("#session-name", payload)
        tab.page.click("#create")
        assert_text_only(tab.page, "#created-name", payload)
        assert_nothing_ran(tab, dialogs)


def join(page: Page, url: str, name: str) -> str:
    page.goto(url)
    page.fill("#display-name", name)
    page.click("#join")
    expect(page.locator("#app")).to_have_attribute("data-state", "live")
    page.click("#share-yes")
    expect(page.locator("#app")).to_have_attribute("data-connection", "open")
    user_id = page.get_attribute("#app", "data-user-id")
    assert user_id
    return user_id
