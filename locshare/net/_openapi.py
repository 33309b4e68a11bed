"""The OpenAPI 3.1 document served at ``/openapi.json``.

Bounds come from ``_validation`` so the document states exactly what is enforced;
``tests/net/test_openapi.py`` checks that every route of the app is documented and
vice versa, and schemathesis checks every response against it.
"""

from __future__ import annotations

from typing import Any

from ..geo import MAX_PLACES_PER_SESSION, PLACE_KINDS, ROUTE_MAX_POINTS, ROUTE_SIMPLIFIED_MAX_POINTS
from ..geo._places import (
    PLACE_RADIUS_DEFAULT_M,
    PLACE_RADIUS_MAX_M,
    PLACE_RADIUS_MIN_M,
    POLYGON_MAX_VERTICES,
)
from ..proto import _validation as v
from ..proto._places import (
    OFF_ROUTE_MAX_M,
    OFF_ROUTE_MIN_M,
    PLACE_NAME_MAX_CHARS,
    ROUTE_MAX_BODY_BYTES,
)

JSON = "application/json"
UUID = {"type": "string", "format": "uuid"}
TIMESTAMP = {"type": "string", "format": "date-time"}

ERROR_CODES = [
    "malformed_json",
    "invalid_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "session_full",
    "too_many_places",
    "session_ended",
    "payload_too_large",
    "unsupported_media_type",
    "rate_limited",
    "internal",
    "unavailable",
]

_STATUS_TEXT = {
    400: "Malformed JSON body",
    401: "Missing, invalid or revoked token",
    403: "Token of another session, or wrong role",
    404: "No such session or participant",
    405: "Method not allowed",
    409: "Session full, or the session has its 20 places already",
    410: "Session ended or expired",
    413: "Body over the size limit",
    415: "The body is not JSON (send Content-Type: application/json)",
    422: "Invalid request (the field is named)",
    429: "Rate limited",
    500: "Internal error",
    503: "Database unavailable",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


_COMMON = (413, 429, 500, 503)

RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds after which a retry may succeed",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _session_id_param() -> dict[str, Any]:
    return {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document(version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "enum": ERROR_CODES},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                }
            },
        },
        "CreateSession": {
            "type": ["object", "null"],
            "properties": {
                "name": {
                    "type": ["string", "null"],
                    "pattern": v.session_name_pattern(),
                    "description": f"At most {v.SESSION_NAME_MAX_CHARS} characters after trimming; no control"
                    " or bidirectional formatting characters; starts with a visible character"
                    " (not a format character, combining mark or blank look-alike)."
                    " Empty or absent: a readable name is generated.",
                },
                "expires_in_minutes": {
                    "type": ["integer", "null"],
                    "minimum": v.EXPIRES_IN_MINUTES_MIN,
                    "maximum": v.EXPIRES_IN_MINUTES_MAX,
                    "default": v.EXPIRES_IN_MINUTES_DEFAULT,
                },
                "max_participants": {
                    "type": ["integer", "null"],
                    "minimum": v.MAX_PARTICIPANTS_MIN,
                    "maximum": v.MAX_PARTICIPANTS,
                    "default": v.MAX_PARTICIPANTS_DEFAULT,
                },
            },
        },
        "SessionCreated": {
            "type": "object",
            "required": [
                "session_id",
                "name",
                "join_link",
                "expires_at",
                "max_participants",
                "creator_token",
            ],
            "properties": {
                "session_id": UUID,
                "name": {"type": "string"},
                "join_link": {"type": "string", "format": "uri"},
                "expires_at": TIMESTAMP,
                "max_participants": {"type": "integer"},
                "creator_token": {"type": "string"},
            },
        },
        "Session": {
            "type": "object",
            "required": [
                "id",
                "name",
                "created_at",
                "expires_at",
                "participant_count",
                "max_participants",
                "is_active",
                "ended_reason",
            ],
            "properties": {
                "id": UUID,
                "name": {"type": "string"},
                "created_at": TIMESTAMP,
                "expires_at": TIMESTAMP,
                "participant_count": {"type": "integer", "minimum": 0},
                "max_participants": {"type": "integer"},
                "is_active": {"type": "boolean"},
                "ended_reason": {"enum": [None, "ended", "expired", "inactive"]},
            },
        },
        "Join": {
            "type": "object",
            "required": ["display_name"],
            "properties": {
                "display_name": {
                    "type": "string",
                    "pattern": v.display_name_pattern(),
                    "description": f"1 to {v.DISPLAY_NAME_MAX_CHARS} characters after trimming; no control"
                    " or bidirectional formatting characters; starts with a visible character"
                    " (not a format character, combining mark or blank look-alike).",
                },
                "avatar_color": {"type": ["string", "null"], "pattern": v.COLOR_PATTERN},
            },
        },
        "Joined": {
            "type": "object",
            "required": [
                "user_id",
                "session_id",
                "display_name",
                "avatar_color",
                "websocket_token",
                "websocket_url",
                "expires_at",
            ],
            "properties": {
                "user_id": UUID,
                "session_id": UUID,
                "display_name": {"type": "string"},
                "avatar_color": {"type": "string", "pattern": v.COLOR_PATTERN},
                "websocket_token": {"type": "string"},
                "websocket_url": {"type": "string"},
                "expires_at": TIMESTAMP,
            },
        },
        "Participant": {
            "type": "object",
            "required": [
                "user_id",
                "display_name",
                "avatar_color",
                "joined_at",
                "last_seen",
                "is_active",
            ],
            "properties": {
                "user_id": UUID,
                "display_name": {"type": "string"},
                "avatar_color": {"type": "string"},
                "joined_at": TIMESTAMP,
                "last_seen": TIMESTAMP,
                "is_active": {"type": "boolean"},
            },
        },
        "Participants": {
            "type": "object",
            "required": ["participants"],
            "properties": {"participants": {"type": "array", "items": _ref("Participant")}},
        },
        "Health": {
            "type": "object",
            "required": [
                "status",
                "version",
                "uptime_s",
                "database",
                "active_sessions",
                "connections",
                "bus",
            ],
            "properties": {
                "status": {"enum": ["ok", "degraded"]},
                "version": {"type": "string"},
                "uptime_s": {"type": "number"},
                "database": {"enum": ["ok", "unavailable"]},
                "embedded_database": {
                    "enum": ["running", "restarting", "lost"],
                    "description": "Only with the embedded PostgreSQL: its supervisor's state.",
                },
                "active_sessions": {"type": "integer"},
                "connections": {"type": "integer"},
                "worker": {
                    "type": "object",
                    "description": "Only with --workers: this worker's place (index/count),"
                    " whether it passes WebSockets to the worker that owns their session,"
                    " and how many it passed, took over, could not pass, or refused.",
                    "required": ["slot", "affinity", "handoffs"],
                    "properties": {
                        "slot": {"type": "string"},
                        "affinity": {"enum": ["session", "none"]},
                        "handoffs": {
                            "type": "object",
                            "required": ["sent", "received", "failed", "refused"],
                            "properties": {
                                name: {"type": "integer"}
                                for name in ("sent", "received", "failed", "refused")
                            },
                        },
                    },
                },
                "bus": {
                    "type": "object",
                    "required": ["kind", "state", "persistence", "node_id", "other_nodes"],
                    "properties": {
                        "kind": {"enum": ["local", "redis"]},
                        "state": {"enum": ["local", "connecting", "up", "down"]},
                        "persistence": {"type": "string"},
                        "node_id": {"type": "string"},
                        "other_nodes": {"type": "integer"},
                    },
                },
            },
        },
        "NewPlace": {
            "type": "object",
            "required": ["name", "kind"],
            "description": "A circle (`lat`, `lng`, `radius_m`) or a polygon (`geometry`:"
            " a GeoJSON Polygon, or a Point with `radius_m`). At most"
            f" {MAX_PLACES_PER_SESSION} places per session.",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": PLACE_NAME_MAX_CHARS},
                "kind": {"enum": list(PLACE_KINDS)},
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lng": {"type": "number", "minimum": -180, "maximum": 180},
                "radius_m": {
                    "type": ["number", "null"],
                    "minimum": PLACE_RADIUS_MIN_M,
                    "maximum": PLACE_RADIUS_MAX_M,
                    "default": PLACE_RADIUS_DEFAULT_M,
                },
                "geometry": {
                    "type": "object",
                    "description": "GeoJSON Polygon (one exterior ring and optional holes,"
                    f" at most {POLYGON_MAX_VERTICES} vertices, valid: not self-intersecting)"
                    " or Point",
                    "required": ["type", "coordinates"],
                    "properties": {
                        "type": {"enum": ["Polygon", "Point"]},
                        "coordinates": {"type": "array"},
                    },
                },
            },
        },
        "Place": {
            "type": "object",
            "required": [
                "place_id",
                "name",
                "kind",
                "author",
                "geometry",
                "radius_m",
                "created_at",
            ],
            "properties": {
                "place_id": UUID,
                "name": {"type": "string"},
                "kind": {"enum": list(PLACE_KINDS)},
                "author": {
                    "oneOf": [UUID, {"type": "null"}],
                    "description": "Who added it; null: the creator (creator token)",
                },
                "geometry": {"type": "object"},
                "radius_m": {"type": ["number", "null"]},
                "created_at": TIMESTAMP,
            },
        },
        "Places": {
            "type": "object",
            "required": ["places"],
            "properties": {"places": {"type": "array", "items": _ref("Place")}},
        },
        "RouteLine": {
            "type": "object",
            "description": "GeoJSON LineString (or a Feature holding one),"
            f" 2 to {ROUTE_MAX_POINTS} positions [lng, lat]",
            "required": ["type"],
            "properties": {"type": {"enum": ["LineString", "Feature"]}},
        },
        "RouteSet": {
            "type": "object",
            "required": [
                "points",
                "simplified_points",
                "tolerance_m",
                "length_m",
                "off_route_m",
            ],
            "properties": {
                "points": {"type": "integer"},
                "simplified_points": {
                    "type": "integer",
                    "maximum": ROUTE_SIMPLIFIED_MAX_POINTS,
                    "description": "Points in the copy clients receive (route_set)",
                },
                "tolerance_m": {"type": "number"},
                "length_m": {"type": "number"},
                "off_route_m": {"type": "number"},
            },
        },
        "OffRoute": {
            "type": "object",
            "required": ["off_route_m"],
            "properties": {
                "off_route_m": {
                    "type": "number",
                    "minimum": OFF_ROUTE_MIN_M,
                    "maximum": OFF_ROUTE_MAX_M,
                }
            },
        },
        "Status": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "bus": {"type": "string"}},
        },
    }
    responses = {f"E{status}": _json(_ref("Error"), text) for status, text in _STATUS_TEXT.items()}
    for status in (429, 503):
        responses[f"E{status}"]["headers"] = RETRY_AFTER
    sid = _session_id_param()
    paths: dict[str, Any] = {
        "/api/sessions": {
            "post": {
                "operationId": "createSession",
                "summary": "Create a session",
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": _ref("CreateSession")}},
                },
                "responses": {
                    "201": {
                        **_json(_ref("SessionCreated"), "Created"),
                        "links": {
                            op: {
                                "operationId": op,
                                "parameters": {"session_id": "$response.body#/session_id"},
                            }
                            for op in ("getSession", "joinSession", "listParticipants")
                        },
                    },
                    **_errors(400, 415, 422, *_COMMON),
                },
            }
        },
        "/api/sessions/{session_id}": {
            "get": {
                "operationId": "getSession",
                "summary": "Session details (also for ended sessions)",
                "parameters": [sid],
                "responses": {
                    "200": _json(_ref("Session"), "The session"),
                    **_errors(404, 500, 503),
                },
            },
            "delete": {
                "operationId": "endSession",
                "summary": "End the session (creator token)",
                "parameters": [sid],
                "security": BEARER,
                "responses": {
                    "204": {"description": "Ended"},
                    **_errors(401, 403, 404, 410, 500, 503),
                },
            },
        },
        "/api/sessions/{session_id}/join": {
            "post": {
                "operationId": "joinSession",
                "summary": "Join a session",
                "parameters": [sid],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Join")}}},
                "responses": {
                    "201": {
                        **_json(_ref("Joined"), "Joined"),
                        "links": {
                            "removeParticipant": {
                                "operationId": "removeParticipant",
                                "parameters": {
                                    "session_id": "$response.body#/session_id",
                                    "user_id": "$response.body#/user_id",
                                },
                            }
                        },
                    },
                    **_errors(400, 404, 409, 410, 415, 422, *_COMMON),
                },
            }
        },
        "/api/sessions/{session_id}/participants": {
            "get": {
                "operationId": "listParticipants",
                "summary": "Participants (token of this session)",
                "parameters": [sid],
                "security": BEARER,
                "responses": {
                    "200": _json(_ref("Participants"), "Participants, active first"),
                    **_errors(401, 403, 404, 410, 500, 503),
                },
            }
        },
        "/api/sessions/{session_id}/participants/{user_id}": {
            "delete": {
                "operationId": "removeParticipant",
                "summary": "Leave (own token) or remove (creator token)",
                "parameters": [
                    sid,
                    {
                        "name": "user_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "security": BEARER,
                "responses": {
                    "204": {"description": "Left"},
                    **_errors(401, 403, 404, 410, 500, 503),
                },
            }
        },
        "/api/sessions/{session_id}/places": {
            "post": {
                "operationId": "addPlace",
                "summary": "Add a place: a meeting point, point of interest, hazard..."
                " (participant or creator token)",
                "parameters": [sid],
                "security": BEARER,
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("NewPlace")}}},
                "responses": {
                    "201": _json(_ref("Place"), "Added; everyone gets place_added"),
                    **_errors(400, 401, 403, 404, 409, 410, 415, 422, *_COMMON),
                },
            },
            "get": {
                "operationId": "listPlaces",
                "summary": "The session's places (token of this session)",
                "parameters": [sid],
                "security": BEARER,
                "responses": {
                    "200": _json(_ref("Places"), "The places, oldest first"),
                    **_errors(401, 403, 404, 410, 500, 503),
                },
            },
        },
        "/api/sessions/{session_id}/places/{place_id}": {
            "delete": {
                "operationId": "removePlace",
                "summary": "Remove a place (its author's token or the creator token)",
                "parameters": [
                    sid,
                    {
                        "name": "place_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "security": BEARER,
                "responses": {
                    "204": {"description": "Removed; everyone gets place_removed"},
                    **_errors(401, 403, 404, 410, 429, 500, 503),
                },
            }
        },
        "/api/sessions/{session_id}/route": {
            "put": {
                "operationId": "setRoute",
                "summary": "Set the convoy's route (creator token): GeoJSON or GPX,"
                f" up to {ROUTE_MAX_POINTS} points and {ROUTE_MAX_BODY_BYTES // 2**20} MiB",
                "parameters": [
                    sid,
                    {
                        "name": "off_route_m",
                        "in": "query",
                        "required": False,
                        "description": "Beyond this distance from the route a rider is off"
                        " route (default 200)",
                        "schema": {
                            "type": "number",
                            "minimum": OFF_ROUTE_MIN_M,
                            "maximum": OFF_ROUTE_MAX_M,
                        },
                    },
                ],
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": _ref("RouteLine")},
                        "application/geo+json": {"schema": _ref("RouteLine")},
                        "application/gpx+xml": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json(_ref("RouteSet"), "Set; everyone gets route_set"),
                    **_errors(400, 401, 403, 404, 410, 415, 422, *_COMMON),
                },
            },
            "patch": {
                "operationId": "updateRoute",
                "summary": "Change the off-route threshold (creator token)",
                "parameters": [sid],
                "security": BEARER,
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("OffRoute")}}},
                "responses": {
                    "200": _json(_ref("OffRoute"), "Changed; everyone gets route_set"),
                    **_errors(400, 401, 403, 404, 410, 415, 422, *_COMMON),
                },
            },
            "delete": {
                "operationId": "clearRoute",
                "summary": "Remove the route (creator token)",
                "parameters": [sid],
                "security": BEARER,
                "responses": {
                    "204": {"description": "Removed; everyone gets route_cleared"},
                    **_errors(401, 403, 404, 410, 429, 500, 503),
                },
            },
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Version, uptime, live sessions",
                "responses": {"200": _json(_ref("Health"), "Health"), **_errors(500)},
            }
        },
        "/health/detailed": {
            "get": {
                "operationId": "healthDetailed",
                "summary": "The same as /health: database, session bus, live sessions",
                "responses": {"200": _json(_ref("Health"), "Health"), **_errors(500)},
            }
        },
        "/health/live": {
            "get": {
                "operationId": "live",
                "summary": "Liveness",
                "responses": {"200": _json(_ref("Status"), "Alive"), **_errors(500)},
            }
        },
        "/health/ready": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: 200 when the database answers (the session bus state is reported, not required)",
                "responses": {"200": _json(_ref("Status"), "Ready"), **_errors(500, 503)},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (counts and durations; no locations); off with LOCSHARE_METRICS=false",
                "responses": {"200": _text("text/plain", "Prometheus text format"), **_errors(500)},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors(500)},
            }
        },
        "/": {
            "get": {
                "operationId": "landingPage",
                "summary": "Web page: start a session",
                "responses": {"200": _text("text/html", "The page"), **_errors(500)},
            }
        },
        "/join/{session_id}": {
            "get": {
                "operationId": "joinPage",
                "summary": "Web page: join a session and watch the live map",
                "parameters": [sid],
                "responses": {
                    "200": _text("text/html", "The join page"),
                    "404": _text("text/html", "No such session (a page)"),
                    "410": _text("text/html", "The session has ended (a page)"),
                    "503": {
                        **_text("text/html", "Database unavailable (a page)"),
                        "headers": RETRY_AFTER,
                    },
                    **_errors(500),
                },
            }
        },
        "/assets/{name}": {
            "get": {
                "operationId": "asset",
                "summary": "Static files of the web page (cached; ETag)",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "v", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "The file", "content": {"*/*": {}}},
                    "304": {"description": "Not modified"},
                    **_errors(404, 500),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "locshare",
            "version": version,
            "description": "Real-time group location sharing. The WebSocket protocol is described in docs/protocol.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
