"""The WebSocket message protocol, sans-io: parsing, validation and encoding.

docs/protocol.md is the contract; the names below (``CLIENT_MESSAGES``,
``SERVER_MESSAGES``) are what the documentation and the mobile app's models are checked
against by the test suite.

Rules:
    1. Every frame is a JSON text ``{"type": str, "data": object}``.  A binary frame,
       invalid JSON, or a non-object is ``malformed_message``; an unknown ``type`` is
       ``unknown_type``; a bad ``location_update`` is ``invalid_location`` (also for a
       number beyond a double's range, which is valid JSON: ``_json``).  None of
       these close the connection.
    2. A message larger than ``max_message_bytes`` closes the connection with 1009;
       the transports enforce it while the message is still arriving.
    3. Unknown fields inside ``data`` are ignored (forward compatibility).
    4. Server frames are encoded once (:class:`OutFrame`); the same bytes go to every
       recipient.  The WebSocket framing of those bytes is computed lazily, once.

Nothing here imports trio or reads a clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

import orjson
from wsproto.frame_protocol import FrameProtocol

from .._clock import parse_rfc3339
from ..errors import (
    InvalidLocation,
    InvalidPlace,
    InvalidRequest,
    InvalidStatus,
    MalformedMessage,
    UnknownType,
)
from ..geo import Place
from . import _json
from ._places import place_request, status_request

# --- the contract -------------------------------------------------------------------
CLIENT_MESSAGES: Final[dict[str, tuple[str, ...]]] = {
    "location_update": ("lat", "lng", "accuracy", "heading", "speed", "timestamp"),
    "viewport_size": ("width", "height", "padding", "include_places"),
    "ping": ("id",),
    "leave": (),
    "visibility": ("visible",),
    "place_add": ("name", "kind", "lat", "lng", "radius_m", "geometry"),
    "place_remove": ("place_id",),
    "set_status": ("status", "text"),
}

SERVER_MESSAGES: Final[dict[str, tuple[str, ...]]] = {
    "session_state": (
        "session",
        "you",
        "participants",
        "viewport",
        "limits",
        "places",
        "arrivals",
        "route",
        "convoy",
    ),
    "participant_joined": ("user_id", "display_name", "avatar_color", "joined_at", "online"),
    "participant_left": ("user_id", "reason"),
    "presence": ("user_id", "online"),
    "locations": ("updates",),
    "participant_stale": ("user_id", "last_seen"),
    "viewport": ("bbox", "center", "zoom", "participants"),
    "pong": ("server_time", "id"),
    "session_ended": ("reason",),
    "error": ("code", "message"),
    "update_interval": ("seconds", "reason"),
    "locate_now": (),
    "place_added": ("place_id", "name", "kind", "author", "geometry", "radius_m", "created_at"),
    "place_removed": ("place_id",),
    "arrived": ("user_id", "place_id"),
    "departed": ("user_id", "place_id", "reason"),
    "route_set": ("geometry", "points", "tolerance_m", "length_m", "off_route_m"),
    "route_cleared": (),
    "convoy": ("order", "gaps_m", "gaps_s", "off_route"),
    "status": ("user_id", "status", "text", "at"),
}

LOCATION_ENTRY_FIELDS: Final = (
    "user_id",
    "lat",
    "lng",
    "accuracy",
    "heading",
    "speed",
    "timestamp",
)

ERROR_CODES: Final = (
    "malformed_message",
    "unknown_type",
    "invalid_location",
    "rate_limited",
    "internal_error",
    "invalid_place",
    "invalid_status",
    "forbidden",
    "unavailable",
)

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_POLICY: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN: Final = 1013
CLOSE_SESSION_ENDED: Final = 4000
CLOSE_REPLACED: Final = 4001
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_LEFT: Final = 4403
CLOSE_SLOW: Final = 4408

# Viewport defaults and bounds (pixels).
DEFAULT_VIEWPORT: Final = (390, 844, 48)
MIN_VIEWPORT_PX: Final = 64
MAX_VIEWPORT_PX: Final = 16384
MAX_PADDING_PX: Final = 2048

# Location bounds beyond the obvious ones.
MAX_ACCURACY_M: Final = 1.0e7
MAX_SPEED_M_S: Final = 1.0e4


# --- client messages ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LocationUpdate:
    lat: float
    lng: float
    accuracy: float | None = None
    heading: float | None = None
    speed: float | None = None
    timestamp: float | None = None  # client's epoch seconds


@dataclass(frozen=True, slots=True)
class ViewportSize:
    width: int
    height: int
    padding: int
    include_places: bool = False


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | int | None = None  # echoed in the pong, so a client can match them


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class Visibility:
    visible: bool


@dataclass(frozen=True, slots=True)
class PlaceAdd:
    place: Place


@dataclass(frozen=True, slots=True)
class PlaceRemove:
    place_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class SetStatus:
    status: str | None
    text: str | None


ClientMessage = (
    LocationUpdate | ViewportSize | Ping | Leave | Visibility | PlaceAdd | PlaceRemove | SetStatus
)


def _number(
    data: dict[str, Any], name: str, lo: float, hi: float, *, required: bool, error: type[Exception]
) -> float | None:
    value = data.get(name)
    if value is None:
        if required:
            raise error(f"'{name}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"'{name}' must be a number")
    number = float(value)
    # Also refuses inf, -inf (a number beyond a double's range: see _json) and NaN.
    if not lo <= number <= hi:
        raise error(f"'{name}' must be between {lo:g} and {hi:g}")
    return number


def parse_client_message(raw: str | bytes, *, is_text: bool = True) -> ClientMessage:
    """Parse and validate one complete client message (Rules 1 and 3)."""
    if not is_text:
        raise MalformedMessage("binary frames are not supported; send JSON text")
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            envelope = _json.reparse(raw, exc)  # valid JSON that orjson refuses: rare
        except ValueError:
            raise MalformedMessage("message is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise MalformedMessage("message must be a JSON object with 'type' and 'data'")
    kind = envelope.get("type")
    if not isinstance(kind, str):
        raise MalformedMessage("'type' must be a string")
    data = envelope.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MalformedMessage("'data' must be a JSON object")
    if kind == "location_update":
        return _parse_location(data)
    if kind == "viewport_size":
        return _parse_viewport(data)
    if kind == "ping":
        return _parse_ping(data)
    if kind == "leave":
        return Leave()
    if kind == "visibility":
        visible = data.get("visible")
        if not isinstance(visible, bool):
            raise MalformedMessage("'visible' must be true or false")
        return Visibility(visible)
    if kind == "place_add":
        try:
            return PlaceAdd(place_request(data))
        except InvalidRequest as exc:
            raise InvalidPlace(exc.message) from None
    if kind == "place_remove":
        try:
            return PlaceRemove(uuid.UUID(str(data.get("place_id"))))
        except ValueError:
            raise InvalidPlace("'place_id' must be the id of a place") from None
    if kind == "set_status":
        try:
            return SetStatus(*status_request(data))
        except InvalidRequest as exc:
            raise InvalidStatus(exc.message) from None
    raise UnknownType(f"unknown message type {kind[:64]!r}")


def _parse_location(data: dict[str, Any]) -> LocationUpdate:
    lat = _number(data, "lat", -90.0, 90.0, required=True, error=InvalidLocation)
    lng = _number(data, "lng", -180.0, 180.0, required=True, error=InvalidLocation)
    accuracy = _number(data, "accuracy", 0.0, MAX_ACCURACY_M, required=False, error=InvalidLocation)
    heading = _number(data, "heading", 0.0, 360.0, required=False, error=InvalidLocation)
    speed = _number(data, "speed", 0.0, MAX_SPEED_M_S, required=False, error=InvalidLocation)
    stamp = data.get("timestamp")
    timestamp: float | None = None
    if stamp is not None:
        try:
            timestamp = parse_rfc3339(stamp)
        except (ValueError, TypeError, OverflowError):
            raise InvalidLocation(
                "'timestamp' must be an RFC 3339 date-time with a timezone"
            ) from None
    assert lat is not None
    assert lng is not None
    return LocationUpdate(lat, lng, accuracy, heading, speed, timestamp)


MAX_PING_ID_CHARS: Final = 64


def _parse_ping(data: dict[str, Any]) -> Ping:
    ping_id = data.get("id")
    if ping_id is None:
        return Ping()
    if isinstance(ping_id, str) and len(ping_id) <= MAX_PING_ID_CHARS:
        return Ping(ping_id)
    if isinstance(ping_id, int) and not isinstance(ping_id, bool) and abs(ping_id) <= 2**53:
        return Ping(ping_id)
    raise MalformedMessage(
        f"'id' must be a string of at most {MAX_PING_ID_CHARS} characters or an integer"
    )


def _parse_viewport(data: dict[str, Any]) -> ViewportSize:
    width = _number(
        data, "width", MIN_VIEWPORT_PX, MAX_VIEWPORT_PX, required=True, error=MalformedMessage
    )
    height = _number(
        data, "height", MIN_VIEWPORT_PX, MAX_VIEWPORT_PX, required=True, error=MalformedMessage
    )
    padding = _number(data, "padding", 0, MAX_PADDING_PX, required=False, error=MalformedMessage)
    assert width is not None
    assert height is not None
    pad = DEFAULT_VIEWPORT[2] if padding is None else padding
    if 2 * pad >= min(width, height):
        raise MalformedMessage("'padding' must leave room: 2 * padding < min(width, height)")
    include_places = data.get("include_places")
    if include_places is not None and not isinstance(include_places, bool):
        raise MalformedMessage("'include_places' must be true or false")
    return ViewportSize(int(width), int(height), int(pad), bool(include_places))


# --- server messages ----------------------------------------------------------------
_ENCODER = FrameProtocol(client=False, extensions=[])


class OutFrame:
    """One encoded server message, shared by every recipient (Rule 4)."""

    __slots__ = ("_text", "_wire", "created_at", "kind", "payload")

    def __init__(self, kind: str, payload: bytes) -> None:
        self.kind = kind
        self.payload = payload
        self.created_at = 0.0  # monotonic; set by the runtime for latency metrics
        self._wire: bytes | None = None
        self._text: str | None = None

    @property
    def wire(self) -> bytes:
        """The complete WebSocket text frame (server frames are unmasked: shareable)."""
        if self._wire is None:
            # wsproto picks the opcode from the type: str gives a TEXT frame.  The str is
            # not kept: the fast path needs only these bytes.
            self._wire = bytes(_ENCODER.send_data(self.payload.decode(), fin=True))
        return self._wire

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.payload.decode()
        return self._text

    def __repr__(self) -> str:  # never show the payload: it may hold locations
        return f"OutFrame({self.kind}, {len(self.payload)} bytes)"


def encode(kind: str, data: dict[str, Any]) -> OutFrame:
    return OutFrame(kind, orjson.dumps({"type": kind, "data": data}))


def error_frame(code: str, message: str) -> OutFrame:
    return encode("error", {"code": code, "message": message})


def close_frame_bytes(code: int, reason: str = "") -> bytes:
    """A complete WebSocket close frame (for transports that write raw frames)."""
    return bytes(_ENCODER.close(code, reason[:120]))
