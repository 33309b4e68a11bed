"""The quart-trio application: REST routes, health, OpenAPI, and the error mapping.

Rule: every response body is JSON; every error is ``{"error": {"code", "message"}}``
with exactly one status per error class (see :mod:`locshare.errors`).  An unexpected
exception is logged with the request id and answered ``500 internal`` without detail.

Headers on every response of the app (``_finish``): ``X-Request-ID``;
``X-Content-Type-Options: nosniff`` (no browser may guess a type other than the
declared one, e.g. run a JSON error that echoes input as HTML); ``Retry-After`` on
every 429 and 503 (the limiter's own wait for a rate limit, otherwise the error's
fixed value).  JSON endpoints refuse a body that is not declared JSON with 415
(``_validation.parse_json_body``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from quart import Response, g, request
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest
from werkzeug.exceptions import HTTPException

from .._logging import request_id_var
from .._version import __version__
from ..errors import (
    DEFAULT_RETRY_AFTER_S,
    ApiError,
    StorageError,
    StorageUnavailable,
    Unavailable,
)
from ..proto import _validation
from ..proto._places import body_limit
from ..runtime._service import Service, parse_session_id
from ._openapi import openapi_document
from ._web import register_web_routes

log = logging.getLogger("locshare.http")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HTTP_CODES = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    retry_after_s: int | None = None,
) -> Response:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return json_response({"error": error}, status, headers)


def _request_class(max_body_bytes: int) -> type[TrioRequest]:
    """Quart fixes a request's body limit when it creates the request, from the app's
    ``MAX_CONTENT_LENGTH``: this class gives each request its route's limit instead (a
    route upload 8 MiB, a place 64 KiB, everything else ``max_body_bytes``: the same
    rule as the front door's, ``_places.body_limit``)."""

    class LimitedRequest(TrioRequest):
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            kwargs["max_content_length"] = body_limit(method, path, max_body_bytes)
            super().__init__(method, scheme, path, *args, **kwargs)

    return LimitedRequest


def create_app(
    service: Service,
    *,
    max_body_bytes: int,
    tile_url: str = "",
    tile_attribution: str = "",
    render_metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> QuartTrio:
    app = QuartTrio("locshare")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.request_class = _request_class(max_body_bytes)
    app.config["JSON_SORT_KEYS"] = False
    openapi_body = orjson.dumps(openapi_document(__version__))

    async def body_json(*, optional: bool) -> dict[str, Any]:
        raw = await request.get_data()  # read (and cached) by _start already
        assert isinstance(raw, bytes)
        return _validation.parse_json_body(
            raw, request.headers.get("Content-Type"), optional=optional
        )

    # --- request bookkeeping -----------------------------------------------------------
    @app.before_request
    async def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        rid = (
            incoming
            if 0 < len(incoming) <= 64 and incoming.isascii() and incoming.isprintable()
            else secrets.token_hex(8)
        )
        request_id_var.set(rid)
        g.started = time.perf_counter()
        if request.content_length or "transfer-encoding" in request.headers:
            # Read every body before answering, even when the answer (404, 401...) does
            # not need it: if a keep-alive connection's body is still arriving when the
            # response is complete, quart-trio leaves the connection hanging and the
            # client's next request times out (found by schemathesis).  Bounded by
            # the request's limit (413) and hypercorn's read timeout.
            await request.get_data()

    @app.after_request
    async def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = request_id_var.get()
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-store")
        retry_after_s = DEFAULT_RETRY_AFTER_S.get(response.status_code)
        if retry_after_s is not None and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = str(retry_after_s)
        if request.path.startswith("/api/"):
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = (
                "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            )
        started = g.get("started")
        if started is not None and service.observe_request is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            service.observe_request(
                request.method, rule, response.status_code, time.perf_counter() - started
            )
        return response

    # --- errors --------------------------------------------------------------------------
    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        service.hub.stats.count_error(exc.code)
        return error_response(exc.http_status, exc.code, exc.message, exc.field, exc.retry_after_s)

    @app.errorhandler(StorageUnavailable)
    async def _unavailable(exc: StorageUnavailable) -> Response:
        service.hub.stats.count_error("unavailable")
        log.warning("database unavailable: %s", exc)
        return error_response(
            503,
            "unavailable",
            "the database is unavailable; retry shortly",
            retry_after_s=Unavailable.retry_after_s,
        )

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal")
        service.hub.stats.count_error(code)
        response = error_response(status, code, exc.description or exc.name)
        if status == 405:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        if status == 413:
            # The rest of the body is not read (net/_front.py, Rule 6): the connection
            # ends after this answer, and the client must not send its next request on it.
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def _internal(exc: Exception) -> Response:
        service.hub.stats.count_error("internal")
        if isinstance(exc, StorageError):
            log.error("storage error: %s", exc)
        else:
            log.exception("unhandled error")
        return error_response(500, "internal", "internal error")

    # --- sessions ------------------------------------------------------------------------
    @app.post("/api/sessions")
    async def create_session() -> Response:
        body = await body_json(optional=True)
        created = await service.create_session(
            _validation.create_session_request(body), request.remote_addr or "unknown"
        )
        return json_response(created, 201, {"Location": f"/api/sessions/{created['session_id']}"})

    @app.get("/api/sessions/<session_id>")
    async def get_session(session_id: str) -> Response:
        return json_response(await service.get_session(parse_session_id(session_id)))

    @app.delete("/api/sessions/<session_id>")
    async def end_session(session_id: str) -> Response:
        await service.end_session(
            parse_session_id(session_id), request.headers.get("Authorization")
        )
        return Response(b"", status=204)

    @app.post("/api/sessions/<session_id>/join")
    async def join(session_id: str) -> Response:
        sid = parse_session_id(session_id)
        body = await body_json(optional=False)
        joined = await service.join(sid, _validation.join_request(body))
        return json_response(joined, 201)

    @app.get("/api/sessions/<session_id>/participants")
    async def participants(session_id: str) -> Response:
        sid = parse_session_id(session_id)
        return json_response(await service.participants(sid, request.headers.get("Authorization")))

    @app.delete("/api/sessions/<session_id>/participants/<user_id>")
    async def remove_participant(session_id: str, user_id: str) -> Response:
        sid = parse_session_id(session_id)
        await service.remove_participant(sid, user_id, request.headers.get("Authorization"))
        return Response(b"", status=204)

    # --- places and the route (issue 14) ------------------------------------------------
    @app.post("/api/sessions/<session_id>/places")
    async def add_place(session_id: str) -> Response:
        sid = parse_session_id(session_id)
        body = await body_json(optional=False)
        place = await service.add_place(sid, request.headers.get("Authorization"), body)
        return json_response(
            place, 201, {"Location": f"/api/sessions/{sid}/places/{place['place_id']}"}
        )

    @app.get("/api/sessions/<session_id>/places")
    async def list_places(session_id: str) -> Response:
        sid = parse_session_id(session_id)
        return json_response(await service.list_places(sid, request.headers.get("Authorization")))

    @app.delete("/api/sessions/<session_id>/places/<place_id>")
    async def remove_place(session_id: str, place_id: str) -> Response:
        sid = parse_session_id(session_id)
        await service.remove_place(sid, place_id, request.headers.get("Authorization"))
        return Response(b"", status=204)

    @app.put("/api/sessions/<session_id>/route")
    async def set_route(session_id: str) -> Response:
        sid = parse_session_id(session_id)
        raw = await request.get_data()
        assert isinstance(raw, bytes)
        summary = await service.set_route(
            sid,
            request.headers.get("Authorization"),
            raw,
            request.headers.get("Content-Type"),
            request.args.get("off_route_m"),
        )
        return json_response(summary)

    @app.patch("/api/sessions/<session_id>/route")
    async def update_route(session_id: str) -> Response:
        sid = parse_session_id(session_id)
        raw = await request.get_data()
        assert isinstance(raw, bytes)
        changed = await service.update_route(
            sid, request.headers.get("Authorization"), raw, request.headers.get("Content-Type")
        )
        return json_response(changed)

    @app.delete("/api/sessions/<session_id>/route")
    async def clear_route(session_id: str) -> Response:
        sid = parse_session_id(session_id)
        await service.clear_route(sid, request.headers.get("Authorization"))
        return Response(b"", status=204)

    # --- health and documents -----------------------------------------------------------
    @app.get("/health/live")
    async def live() -> Response:
        return json_response({"status": "ok"})

    @app.get("/health/ready")
    async def ready() -> Response:
        # The database decides readiness.  A cluster node whose Redis is away stays
        # ready: it serves its own sockets (docs/design.md, "Cluster mode").
        await service.ready()
        return json_response({"status": "ready", "bus": service.bus_state()})

    @app.get("/health")
    @app.get("/health/detailed")
    async def health() -> Response:
        return json_response(await service.health())

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return Response(openapi_body, content_type="application/json")

    if render_metrics is not None:

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(await render_metrics(), content_type=METRICS_CONTENT_TYPE)

    register_web_routes(app, service, tile_url=tile_url, tile_attribution=tile_attribution)
    return app
