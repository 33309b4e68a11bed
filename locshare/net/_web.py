"""The browser client: the landing page (``GET /``), the join page with the live map
(``GET /join/<session_id>``) and their static assets (``GET /assets/<path>``).

Pages are rendered here, on the server, so that link-preview crawlers (which run no
JavaScript) see the session's name and status in ``og:``/``twitter:`` meta tags; the
JavaScript in ``locshare/web/static`` then does everything live over REST and ``/ws``.

Rules:
    * Every value that a user typed (session and display names) reaches HTML only
      through Jinja2's autoescaping; the page's JavaScript only uses ``textContent``.
    * Every page carries a strict Content-Security-Policy: scripts and styles from
      this origin only, images from this origin and the tile host, connections to this
      origin and WebSockets.  No inline script or style exists to be allowed.
    * Status codes are honest, and every one of them is a readable page: unknown
      session (or an id that is not a UUID) 404, ended session 410, database down 503.
    * Assets are read into memory when the routes are registered (a few dozen KiB) and
      served from that table: a path that is not a key is 404, so no request can reach
      outside ``locshare/web/static`` (no traversal, by construction).  URLs carrying
      ``?v=<content hash>`` (what the templates emit) are cached for a year as
      immutable; any other URL revalidates with its ETag.

Quart already owns ``/static/<path:filename>`` (its default static folder, which
locshare does not have), hence ``/assets/``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final
from urllib.parse import urlsplit

import jinja2
import orjson
from quart import Response, request
from quart_trio import QuartTrio

from .._clock import parse_rfc3339
from ..errors import NotFound, StorageUnavailable
from ..runtime._service import Service

ASSET_PREFIX: Final = "/assets/"
APP_SCHEME: Final = "locshare"
IMMUTABLE_MAX_AGE_S: Final = 365 * 86400
RETRY_AFTER_S: Final = 5

# Explicit types: the platform's mimetypes table differs between systems (Windows
# registries have served .js as text/plain), and a module script with the wrong type
# does not run.
CONTENT_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain; charset=utf-8",
}

ENDED_TEXT: Final = {
    "ended": "Its creator ended it.",
    "expired": "It reached the end of its time.",
    "inactive": "It ended after a long time without activity.",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str  # also the ?v= version in asset URLs


def load_assets(directory: Traversable, prefix: str = "") -> dict[str, Asset]:
    """Every file under ``directory`` with a known type, keyed by its relative path."""
    assets: dict[str, Asset] = {}
    for entry in directory.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            assets.update(load_assets(entry, name + "/"))
            continue
        suffix = "." + entry.name.rpartition(".")[2]
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        assets[name] = Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])
    return assets


def tile_source(tile_url: str) -> str | None:
    """The CSP source expression for the tile host, or None if 'self' covers it.

    A ``{s}`` subdomain placeholder becomes a ``*.`` wildcard; any other placeholder in
    the host leaves only the scheme, which is looser but still images-only.
    """
    if not tile_url:
        return None
    parts = urlsplit(tile_url)
    if not parts.scheme or not parts.netloc:
        return None  # relative: served by this origin
    host = parts.netloc.rpartition("@")[2]
    if host.startswith("{s}."):
        host = "*." + host[4:]
    if "{" in host or "}" in host or any(c.isspace() or c in ";,'" for c in host):
        return f"{parts.scheme}:"
    return f"{parts.scheme}://{host}"


def content_security_policy(tile_url: str) -> str:
    images = " ".join(filter(None, ["'self'", tile_source(tile_url)]))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "connect-src 'self' ws: wss:",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def time_left_text(seconds: float) -> str:
    """'5 h 12 min', '12 min', 'less than a minute' (the JS keeps it current)."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "less than a minute"
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


def forget_text(seconds: float) -> str:
    """How long a position lives, for the privacy note: '30 seconds', '2 minutes'."""
    if seconds < 120:
        return f"{seconds:g} second{'' if seconds == 1 else 's'}"
    return f"{seconds / 60:.3g} minutes"


def register_web_routes(
    app: QuartTrio, service: Service, *, tile_url: str, tile_attribution: str
) -> None:
    web = resources.files("locshare").joinpath("web")
    assets = load_assets(web.joinpath("static"))
    templates = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: web.joinpath("templates", name).read_text(encoding="utf-8")
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def asset_url(name: str) -> str:
        return f"{ASSET_PREFIX}{name}?v={assets[name].etag}"

    templates.globals["asset"] = asset_url
    # The privacy promise on the pages states the server's actual setting.
    templates.globals["forget_after"] = forget_text(service.hub.settings.location_ttl_s)
    csp = content_security_policy(tile_url)
    page_headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        # Join links are capabilities: never send the path to the tile server.
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Permissions-Policy": "geolocation=(self), camera=(), microphone=()",
        "Cache-Control": "no-store",
    }

    def page(template: str, status: int = 200, **context: Any) -> Response:
        body = templates.get_template(template).render(**context)
        response = Response(body, status=status, content_type="text/html; charset=utf-8")
        response.headers.update(page_headers)
        return response

    def message_page(status: int, title: str, text: str, **extra: Any) -> Response:
        return page("message.html", status, title=title, text=text, **extra)

    @app.get("/")
    async def landing_page() -> Response:
        return page("landing.html", base_url=service.urls.base)

    @app.get("/join/<session_id>")
    async def join_page(session_id: str) -> Response:
        try:
            session = await service.get_session(uuid.UUID(session_id))
        except (ValueError, NotFound):
            return message_page(
                404,
                "No such session",
                "This link does not lead to a session. It may be mistyped, or the session "
                "ended more than a day ago and was deleted.",
            )
        except StorageUnavailable:
            response = message_page(
                503,
                "Temporarily unavailable",
                "The server cannot reach its database right now. Try again in a moment.",
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        if not session["is_active"]:
            reason = ENDED_TEXT.get(session["ended_reason"] or "", "")
            return message_page(
                410,
                "This session has ended",
                f"“{session['name']}” is over. {reason}".strip(),
                session_name=session["name"],
            )
        seconds_left = parse_rfc3339(session["expires_at"]) - service.clock.now()
        return page(
            "join.html",
            session=session,
            time_left=time_left_text(seconds_left),
            join_link=f"{service.urls.base}/join/{session['id']}",
            app_link=f"{APP_SCHEME}://join/{session['id']}",
            full=session["participant_count"] >= session["max_participants"],
            tile_url=tile_url,
            tile_attribution=tile_attribution,
        )

    @app.get(f"{ASSET_PREFIX}<path:name>")
    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            return Response(
                orjson.dumps({"error": {"code": "not_found", "message": "no such asset"}}),
                status=404,
                content_type="application/json",
            )
        etag = f'"{found.etag}"'
        if request.args.get("v") == found.etag:
            cache = f"public, max-age={IMMUTABLE_MAX_AGE_S}, immutable"
        else:
            cache = "public, no-cache"
        headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
        if etag in request.headers.get("If-None-Match", ""):
            return Response(b"", status=304, headers=headers)
        return Response(found.body, content_type=found.content_type, headers=headers)
