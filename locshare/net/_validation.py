"""REST request bodies: parsing and validation (sans-io).

The bounds here are the single source for both the handlers and the OpenAPI document
(``_openapi.py`` imports them), so the published schema cannot drift from what is
enforced.

Rules:
    * A body that is not UTF-8 JSON is ``400 malformed_json``; JSON that is not an
      object, or a field of the wrong type or out of range, is ``422 invalid_request``
      naming the field.  Unknown fields are ignored.
    * Text fields are trimmed; they may not contain control characters (Unicode
      category Cc, or the line/paragraph separators U+2028/U+2029).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ..errors import InvalidRequest, MalformedJson

SESSION_NAME_MAX_CHARS: Final = 100
DISPLAY_NAME_MAX_CHARS: Final = 100
EXPIRES_IN_MINUTES_MIN: Final = 60
EXPIRES_IN_MINUTES_MAX: Final = 1440
EXPIRES_IN_MINUTES_DEFAULT: Final = 360
MAX_PARTICIPANTS_MIN: Final = 2
MAX_PARTICIPANTS_MAX: Final = 50
MAX_PARTICIPANTS_DEFAULT: Final = 50
COLOR_PATTERN: Final = "^#[0-9A-Fa-f]{6}$"

# JSON Schema patterns stating exactly what _text accepts: no control characters, and
# 1..100 characters once surrounding whitespace is trimmed (whitespace that is not a
# control character: Python's str.strip() removes these).
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"
_SPACE = " \\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000"


def _trimmed_text_pattern(max_chars: int, *, allow_blank: bool) -> str:
    space = f"[{_SPACE}]"
    visible = f"[^{_CONTROL}{_SPACE}]"
    any_char = f"[^{_CONTROL}]"
    core = f"{space}*{visible}(?:{any_char}{{0,{max_chars - 2}}}{visible})?{space}*"
    return f"^(?:{core}|{space}*)$" if allow_blank else f"^{core}$"


SESSION_NAME_PATTERN: Final = _trimmed_text_pattern(100, allow_blank=True)
DISPLAY_NAME_PATTERN: Final = _trimmed_text_pattern(100, allow_blank=False)
_COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")  # used with fullmatch: "$" would allow "\n"

# Distinct, readable on a map, good contrast with white initials.
PALETTE: Final = (
    "#E6194B",
    "#3CB44B",
    "#4363D8",
    "#F58231",
    "#911EB4",
    "#42D4F4",
    "#F032E6",
    "#469990",
    "#9A6324",
    "#800000",
    "#808000",
    "#000075",
    "#E67E22",
    "#2E86C1",
)


@dataclass(frozen=True, slots=True)
class CreateSessionRequest:
    name: str | None
    expires_in_minutes: int
    max_participants: int


@dataclass(frozen=True, slots=True)
class JoinRequest:
    display_name: str
    avatar_color: str | None


def parse_json_object(raw: bytes, *, optional: bool) -> dict[str, Any]:
    """Decode a request body; an empty body is ``{}`` when ``optional``."""
    if not raw.strip():
        if optional:
            return {}
        raise InvalidRequest("a JSON object body is required")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedJson("the body is not valid UTF-8 JSON") from None
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object")
    return value


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in text)


def _text(body: dict[str, Any], field: str, max_chars: int, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise InvalidRequest(f"'{field}' is required", field=field)
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{field}' must be a string", field=field)
    if _has_control(value):
        raise InvalidRequest(f"'{field}' must not contain control characters", field=field)
    value = value.strip()
    if not value:
        if required:
            raise InvalidRequest(f"'{field}' must not be empty", field=field)
        return None
    if len(value) > max_chars:
        raise InvalidRequest(f"'{field}' must be at most {max_chars} characters", field=field)
    return value


def _integer(body: dict[str, Any], field: str, lo: int, hi: int, default: int) -> int:
    value = body.get(field)
    if value is None:
        return default
    # JSON has one number type: 10.0 is the integer 10 (as JSON Schema says), 10.5 is not.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{field}' must be an integer", field=field)
    if not lo <= value <= hi:
        raise InvalidRequest(f"'{field}' must be between {lo} and {hi}", field=field)
    return value


def create_session_request(body: dict[str, Any]) -> CreateSessionRequest:
    return CreateSessionRequest(
        name=_text(body, "name", SESSION_NAME_MAX_CHARS, required=False),
        expires_in_minutes=_integer(
            body,
            "expires_in_minutes",
            EXPIRES_IN_MINUTES_MIN,
            EXPIRES_IN_MINUTES_MAX,
            EXPIRES_IN_MINUTES_DEFAULT,
        ),
        max_participants=_integer(
            body,
            "max_participants",
            MAX_PARTICIPANTS_MIN,
            MAX_PARTICIPANTS_MAX,
            MAX_PARTICIPANTS_DEFAULT,
        ),
    )


def join_request(body: dict[str, Any]) -> JoinRequest:
    display_name = _text(body, "display_name", DISPLAY_NAME_MAX_CHARS, required=True)
    assert display_name is not None
    color = body.get("avatar_color")
    if color is not None:
        if not isinstance(color, str) or not _COLOR_RE.fullmatch(color):
            raise InvalidRequest("'avatar_color' must look like #RRGGBB", field="avatar_color")
        color = color.upper()
    return JoinRequest(display_name=display_name, avatar_color=color)


def default_color(seed: bytes) -> str:
    return PALETTE[seed[0] % len(PALETTE)]
