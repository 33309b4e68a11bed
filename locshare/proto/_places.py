"""Requests about places, the route and statuses (issue 14), sans-io.

One parser per request, used by REST and the WebSocket alike; the geometry rules are the
geo core's (:func:`locshare.geo.parse_place`, :func:`locshare.geo.parse_route_geojson`,
:func:`locshare.geo.parse_gpx`), the text rules REST's (trimmed; no control, bidi or
leading invisible characters).  Errors are :class:`~locshare.errors.InvalidRequest`
naming the field (REST: 422; the WebSocket edge turns them into ``invalid_place`` /
``invalid_status``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

from ..errors import InvalidRequest, MalformedJson, UnsupportedMediaType
from ..geo import Place, Route, parse_gpx, parse_place, parse_route_geojson
from . import _json
from ._validation import _text, parse_json_body

PLACE_NAME_MAX_CHARS: Final = 60
STATUS_TEXT_MAX_CHARS: Final = 80
STATUSES: Final = ("on_my_way", "arrived", "break", "need_help")
OFF_ROUTE_MIN_M: Final = 10.0
OFF_ROUTE_MAX_M: Final = 10_000.0
# A GPX of 20,000 track points is about 2 MB; the geo core refuses more than 8 MiB.
ROUTE_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
# A 500-vertex polygon with full-precision coordinates is about 20 KB of JSON.
PLACE_MAX_BODY_BYTES: Final = 64 * 1024
ROUTE_CONTENT_TYPES: Final = ("application/json", "application/geo+json", "application/gpx+xml")
_ROUTE_PATH = re.compile(r"/api/sessions/[^/]+/route/?")
_PLACES_PATH = re.compile(r"/api/sessions/[^/]+/places/?")


def body_limit(method: str, path: str, default: int) -> int:
    """The largest request body for ``method`` on ``path``: a route upload and a place
    may be larger than ``default`` (``max_body_bytes``), which holds every other body."""
    method = method.upper()
    if method == "PUT" and _ROUTE_PATH.fullmatch(path):
        return max(default, ROUTE_MAX_BODY_BYTES)
    if method == "POST" and _PLACES_PATH.fullmatch(path):
        return max(default, PLACE_MAX_BODY_BYTES)
    return default


def place_request(data: object) -> Place:
    """A place to add: ``{name, kind, lat, lng, radius_m}`` (a circle) or
    ``{name, kind, geometry}`` (a GeoJSON Polygon, or a Point with ``radius_m``)."""
    if not isinstance(data, dict):
        raise InvalidRequest("a place must be a JSON object")
    name = _text(data, "name", PLACE_NAME_MAX_CHARS, required=True)
    spec: dict[str, Any] = {**data, "name": name}
    if "geometry" not in data or data.get("geometry") is None:
        if data.get("lat") is None or data.get("lng") is None:
            raise InvalidRequest(
                "a place needs 'lat' and 'lng' (a circle) or 'geometry' (a polygon)",
                field="geometry",
            )
        spec["geometry"] = {
            "type": "Point",
            "coordinates": [_coordinate(data, "lng", 180.0), _coordinate(data, "lat", 90.0)],
        }
    return parse_place(spec)


def _coordinate(data: dict[str, Any], field: str, bound: float) -> float:
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{field}' must be a number", field=field)
    number = float(value)
    if not (math.isfinite(number) and -bound <= number <= bound):
        raise InvalidRequest(f"'{field}' must be between {-bound:g} and {bound:g}", field=field)
    return number


def status_request(data: object) -> tuple[str | None, str | None]:
    """``(status, text)``: status one of :data:`STATUSES` or None (cleared); the note
    1 to 80 characters or None.  Clearing the status clears the note."""
    if not isinstance(data, dict):
        raise InvalidRequest("a status must be a JSON object")
    status = data.get("status")
    if status is not None and (not isinstance(status, str) or status not in STATUSES):
        raise InvalidRequest(
            f"'status' must be one of {', '.join(STATUSES)}, or null", field="status"
        )
    text = _text(data, "text", STATUS_TEXT_MAX_CHARS, required=False)
    return status, (text if status is not None else None)


def route_upload(raw: bytes, content_type: str | None) -> tuple[Callable[[Any], Route], Any]:
    """What a route upload asks for: ``(parser, input)``, the parser to run (off the
    event loop: a 20,000-point route takes tens of milliseconds) on the input.

    GeoJSON (``application/json`` or ``application/geo+json``): a LineString, or a
    Feature holding one, decoded here (400 if not JSON).  GPX
    (``application/gpx+xml``): the bytes, parsed by the hardened parser.  Anything else
    is 415."""
    essence = (content_type or "").partition(";")[0].strip().lower()
    if essence not in ROUTE_CONTENT_TYPES:
        raise UnsupportedMediaType(
            "a route is GeoJSON (Content-Type: application/json or application/geo+json)"
            " or GPX (Content-Type: application/gpx+xml)"
        )
    if not raw.strip():
        raise InvalidRequest("a route is required in the body", field="route")
    if essence == "application/gpx+xml":
        return parse_gpx, raw
    try:
        data = _json.loads(raw)
    except ValueError:
        raise MalformedJson("the body is not valid UTF-8 JSON") from None
    return parse_route_geojson, data


def off_route_body(raw: bytes, content_type: str | None) -> float:
    """``PATCH .../route``: ``{"off_route_m": metres}``."""
    data = parse_json_body(raw, content_type, optional=False)
    value = data.get("off_route_m")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest("'off_route_m' must be a number", field="off_route_m")
    return _off_route(float(value))


def off_route_request(value: str | None, default: float) -> float:
    """The ``off_route_m`` query parameter of a route upload."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest("'off_route_m' must be a number", field="off_route_m") from None
    return _off_route(number)


def _off_route(number: float) -> float:
    if not (math.isfinite(number) and OFF_ROUTE_MIN_M <= number <= OFF_ROUTE_MAX_M):
        raise InvalidRequest(
            f"'off_route_m' must be between {OFF_ROUTE_MIN_M:g} and {OFF_ROUTE_MAX_M:g}",
            field="off_route_m",
        )
    return number
