"""The web routes without a browser: status codes, escaping, headers, static assets."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from locshare.net._web import content_security_policy, forget_text, tile_source, time_left_text
from tests.conftest import Running

ASSETS = {
    "app.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "connection.js": "text/javascript; charset=utf-8",
    "join.js": "text/javascript; charset=utf-8",
    "landing.js": "text/javascript; charset=utf-8",
    "map.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


def assert_page(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self' ws: wss:",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    return response.text


def meta(html: str, key: str) -> str:
    found = re.search(rf'<meta (?:property|name)="{re.escape(key)}" content="([^"]*)">', html)
    assert found, key
    return found.group(1)


async def test_landing_page(server: Running) -> None:
    with trio.fail_after(10):
        html = assert_page(await server.http.get("/"), 200)
    assert "Start a session" in html
    assert "a position is forgotten 30 seconds after it arrives" in html
    assert '<select id="duration"' in html and html.count("<option") == 24
    # The configured tile host (OpenStreetMap by default) is the only other image source.
    csp = (await server.http.get("/")).headers["content-security-policy"]
    assert "img-src 'self' https://tile.openstreetmap.org;" in csp


async def test_join_page_shows_the_session_and_link_preview_tags(server: Running) -> None:
    created = await server.create_session(name="Alps ride", expires_in_minutes=120)
    sid = created["session_id"]
    await server.join(sid, "Ann")
    with trio.fail_after(10):
        html = assert_page(await server.http.get(f"/join/{sid}"), 200)
    assert '<h1 id="session-name">Alps ride</h1>' in html
    assert re.search(r">1 h 59 min</time> left", html) or ">2 h</time> left" in html
    assert "1 of 50 joined" in html
    assert f'href="locshare://join/{sid}"' in html
    assert meta(html, "og:title") == "Alps ride · locshare"
    assert meta(html, "og:url") == f"{server.base}/join/{sid}"
    assert "1 of 50 joined" in meta(html, "og:description")
    assert meta(html, "twitter:card") == "summary"
    assert meta(html, "twitter:title") == "Alps ride · locshare"
    assert f'data-session-id="{sid}"' in html
    # Crawlers may ask with HEAD.
    head = await server.http.head(f"/join/{sid}")
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize(
    "name",
    [
        "<script>alert(1)</script>",
        '" onmouseover="alert(1)',
        "</title><img src=x onerror=alert(1)>",
    ],
)
async def test_session_names_are_escaped(server: Running, name: str) -> None:
    created = await server.create_session(name=name)
    html = assert_page(await server.http.get(f"/join/{created['session_id']}"), 200)
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert 'onmouseover="alert' not in html
    escaped = (
        name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
    )
    assert f'<h1 id="session-name">{escaped}</h1>' in html
    assert meta(html, "og:title") == f"{escaped} · locshare"
    assert f"<title>{escaped} · locshare</title>" in html


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid", "%3Cscript%3E"])
async def test_unknown_session_is_a_404_page(server: Running, session_id: str) -> None:
    html = assert_page(await server.http.get(f"/join/{session_id}"), 404)
    assert "<h1>No such session</h1>" in html
    assert "<script>" not in html
    assert "Traceback" not in html


async def test_ended_session_is_a_410_page(server: Running) -> None:
    created = await server.create_session(name="Done <now>")
    sid = created["session_id"]
    response = await server.http.delete(
        f"/api/sessions/{sid}", headers={"Authorization": f"Bearer {created['creator_token']}"}
    )
    assert response.status_code == 204
    html = assert_page(await server.http.get(f"/join/{sid}"), 410)
    assert "<h1>This session has ended</h1>" in html
    assert "Done &lt;now&gt;" in html and "Its creator ended it." in html
    assert "join-form" not in html


async def test_full_session_page_disables_join(server: Running) -> None:
    sid = (await server.create_session(max_participants=2))["session_id"]
    await server.join(sid, "Ann")
    await server.join(sid, "Bob")
    html = assert_page(await server.http.get(f"/join/{sid}"), 200)
    assert "This session is full." in html
    assert '<button class="primary" type="submit" id="join" disabled>' in html


async def test_assets_have_their_types_and_cache_headers(server: Running) -> None:
    html = (await server.http.get("/")).text
    for name, content_type in ASSETS.items():
        plain = await server.http.get(f"/assets/{name}")
        assert plain.status_code == 200, name
        assert plain.headers["content-type"] == content_type
        assert plain.headers["x-content-type-options"] == "nosniff"
        assert plain.headers["cache-control"] == "public, no-cache"
        etag = plain.headers["etag"]
        version = etag.strip('"')
        versioned = await server.http.get(f"/assets/{name}?v={version}")
        assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert versioned.content == plain.content
        again = await server.http.get(f"/assets/{name}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
    # Pages link the versioned URLs.
    assert re.search(r'href="/assets/app\.css\?v=[0-9a-f]{16}"', html)
    assert re.search(r'src="/assets/landing\.js\?v=[0-9a-f]{16}"', html)


@pytest.mark.parametrize(
    "path",
    [
        "/assets/nothing.js",
        "/assets/",
        "/assets/%2e%2e/_web.py",
        "/assets/..%2f..%2fpyproject.toml",
        "/assets/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/assets/..%5c..%5cpyproject.toml",
        "/assets/%2fetc%2fpasswd",
        "/assets//etc/passwd",
        "/assets/../templates/join.html",
        "/assets/%2e%2e/templates/join.html",
    ],
)
async def test_unknown_assets_and_traversal_are_404(server: Running, path: str) -> None:
    # Sent byte for byte: httpx would otherwise resolve the dot segments itself.
    request = server.http.build_request("GET", server.base)
    request.url = request.url.copy_with(raw_path=path.encode())
    response = await server.http.send(request, follow_redirects=True)
    # Werkzeug merges "//" with a redirect that stays under /assets/; it ends in a 404.
    assert all(
        urlsplit(r.headers["location"]).path.startswith("/assets/") for r in response.history
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"
    assert b"[project]" not in response.content and b"root:" not in response.content


# --- sans-io helpers ----------------------------------------------------------------------------
def test_tile_sources_for_the_csp() -> None:
    assert tile_source("") is None
    assert tile_source("/tiles/{z}/{x}/{y}.png") is None
    assert tile_source("https://tile.openstreetmap.org/{z}/{x}/{y}.png") == (
        "https://tile.openstreetmap.org"
    )
    assert tile_source("https://{s}.tile.example.com:8443/{z}/{x}/{y}.png") == (
        "https://*.tile.example.com:8443"
    )
    assert tile_source("https://tiles-{s}.example.com/{z}/{x}/{y}.png") == "https:"
    assert tile_source("https://a.example;script-src *;/{z}/{x}/{y}") == "https:"
    assert "img-src 'self';" in content_security_policy("")


def test_forget_text() -> None:
    assert forget_text(30) == "30 seconds"
    assert forget_text(1) == "1 second"
    assert forget_text(2.5) == "2.5 seconds"
    assert forget_text(300) == "5 minutes"


def test_time_left_text() -> None:
    assert time_left_text(-5) == "less than a minute"
    assert time_left_text(59) == "less than a minute"
    assert time_left_text(60) == "1 min"
    assert time_left_text(3600) == "1 h"
    assert time_left_text(3600 + 12 * 60 + 30) == "1 h 12 min"
