"""REST request bodies: parsing and validation (sans-io).

The bounds here are the single source for both the handlers and the OpenAPI document
(``_openapi.py`` imports them), so the published schema cannot drift from what is
enforced.

Rules:
    * A request body must be declared JSON: ``Content-Type: application/json`` or
      ``application/<anything>+json``, any parameters, any case; anything else (or no
      Content-Type) is ``415 unsupported_media_type``.  This refuses the "simple"
      cross-site requests a browser sends without asking (``text/plain``, forms).  A
      request without a body needs no Content-Type.
    * A body that is not UTF-8 JSON is ``400 malformed_json``; JSON that is not an
      object, or a field of the wrong type or out of range, is ``422 invalid_request``
      naming the field.  Unknown fields are ignored.  Valid JSON is never called
      malformed, even with a number beyond a double's range (``_json``).
    * Names (``display_name``, session ``name``) are trimmed of surrounding whitespace
      (``str.strip()``).  They may not contain control characters (category Cc, the
      separators U+2028/U+2029) nor bidirectional formatting characters
      (:data:`BIDI_CONTROLS`: they reorder what follows, so that "\\u202egpj.exe" reads
      "exe.jpg").
    * A name must *start with a visible character* once trimmed.  Invisible are
      format characters (category Cf: zero-width space, joiners, word joiner, BOM,
      soft hyphen, tags, ...), combining marks (Mn, Mc, Me: at the start they have no
      base to sit on) and :data:`BLANK_LOOKALIKES`, letters and symbols that draw
      nothing (the Hangul fillers, the blank braille pattern).  Whitespace is already
      trimmed.  So a name made only of invisible characters is refused, and so is a
      look-alike of another name behind a leading invisible character ("\\u200bAnn").
      After the first character they are allowed: emoji sequences need joiners,
      variation selectors and tags, and many scripts need marks and joiners.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InvalidRequest, MalformedJson, UnsupportedMediaType
from . import _json

SESSION_NAME_MAX_CHARS: Final = 100
DISPLAY_NAME_MAX_CHARS: Final = 100
EXPIRES_IN_MINUTES_MIN: Final = 60
EXPIRES_IN_MINUTES_MAX: Final = 1440
EXPIRES_IN_MINUTES_DEFAULT: Final = 360
MAX_PARTICIPANTS_MIN: Final = 2
# The one cap on a session's size: REST validation, the OpenAPI document and the geo
# index's block size (one slot per participant) all use it.
MAX_PARTICIPANTS: Final = 50
MAX_PARTICIPANTS_DEFAULT: Final = MAX_PARTICIPANTS
COLOR_PATTERN: Final = "^#[0-9A-Fa-f]{6}$"
_COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")  # used with fullmatch: "$" would allow "\n"

# Bidirectional formatting characters: embeddings and overrides (U+202A-U+202E),
# isolates (U+2066-U+2069), and the marks LRM, RLM and ALM.
BIDI_CONTROLS: Final = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)
INVISIBLE_CATEGORIES: Final = frozenset({"Cf", "Mn", "Mc", "Me"})
# Letters (Lo) and a symbol (So) that draw nothing: HANGUL CHOSEONG FILLER, HANGUL
# JUNGSEONG FILLER, HANGUL FILLER, HALFWIDTH HANGUL FILLER, BRAILLE PATTERN BLANK.
BLANK_LOOKALIKES: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800")

# JSON Schema patterns stating exactly what _text accepts (checked by hypothesis in
# tests/net/test_validation.py).  Whitespace: what str.strip() removes and is not a
# control character.
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
_SPACE = " \\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000"


def _class_body(code_points: list[int]) -> str:
    """Sorted code points as the inside of a regex class, in ranges.

    BMP characters are written ``\\uXXXX``; the others as themselves, since ECMA-262
    has no ``\\U`` escape (a validator using the ``u`` flag, like Python's ``re``,
    takes an astral character as one character).
    """
    ranges: list[list[int]] = []
    for code in code_points:
        if ranges and code <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], code)
        else:
            ranges.append([code, code])

    def one(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    return "".join(one(a) if a == b else f"{one(a)}-{one(b)}" for a, b in ranges)


@functools.cache
def _invisible_class_body() -> str:
    """Every invisible character (module docstring) as a class body.

    A scan of every code point: about 0.2 s, once per process, when the OpenAPI
    document is first built.  The validators need no scan (:func:`_is_visible`).
    """
    codes = [
        code
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in INVISIBLE_CATEGORIES
    ]
    return _class_body(sorted({*codes, *map(ord, BLANK_LOOKALIKES)}))


def _trimmed_text_pattern(max_chars: int, *, allow_blank: bool) -> str:
    space = f"[{_SPACE}]"
    visible = f"[^{_CONTROL}{_SPACE}{_invisible_class_body()}]"
    edge = f"[^{_CONTROL}{_SPACE}]"
    any_char = f"[^{_CONTROL}]"
    core = f"{space}*{visible}(?:{any_char}{{0,{max_chars - 2}}}{edge})?{space}*"
    return f"^(?:{core}|{space}*)$" if allow_blank else f"^{core}$"


@functools.cache
def session_name_pattern() -> str:
    """The JSON Schema pattern of a session ``name`` (blank: a name is generated)."""
    return _trimmed_text_pattern(SESSION_NAME_MAX_CHARS, allow_blank=True)


@functools.cache
def display_name_pattern() -> str:
    """The JSON Schema pattern of a ``display_name``."""
    return _trimmed_text_pattern(DISPLAY_NAME_MAX_CHARS, allow_blank=False)


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


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<x>+json``, any parameters, any case."""
    if content_type is None:
        return False
    essence = content_type.partition(";")[0].strip().lower()
    kind, slash, subtype = essence.partition("/")
    return (
        kind == "application"
        and bool(slash)
        and (subtype == "json" or (subtype.endswith("+json") and len(subtype) > len("+json")))
    )


def parse_json_body(raw: bytes, content_type: str | None, *, optional: bool) -> dict[str, Any]:
    """A request body as a JSON object: the media type first, then the JSON."""
    if raw and not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            "the request body must be JSON, sent with Content-Type: application/json"
        )
    return parse_json_object(raw, optional=optional)


def parse_json_object(raw: bytes, *, optional: bool) -> dict[str, Any]:
    """Decode a request body; an empty body is ``{}`` when ``optional``."""
    if not raw.strip():
        if optional:
            return {}
        raise InvalidRequest("a JSON object body is required")
    try:
        value = _json.loads(raw)
    except ValueError:
        raise MalformedJson("the body is not valid UTF-8 JSON") from None
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object")
    return value


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in text)


def _is_visible(ch: str) -> bool:
    return unicodedata.category(ch) not in INVISIBLE_CATEGORIES and ch not in BLANK_LOOKALIKES


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
    if not BIDI_CONTROLS.isdisjoint(value):
        raise InvalidRequest(
            f"'{field}' must not contain bidirectional formatting characters"
            " (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C)",
            field=field,
        )
    value = value.strip()
    if not value:
        if required:
            raise InvalidRequest(f"'{field}' must not be empty", field=field)
        return None
    if len(value) > max_chars:
        raise InvalidRequest(f"'{field}' must be at most {max_chars} characters", field=field)
    if not _is_visible(value[0]):
        raise InvalidRequest(
            f"'{field}' must start with a visible character (invisible characters, blank"
            " look-alikes and combining marks do not count)",
            field=field,
        )
    return value


def _integer(body: dict[str, Any], field: str, lo: int, hi: int, default: int) -> int:
    value = body.get(field)
    if value is None:
        return default
    # JSON has one number type: 10.0 is the integer 10 (as JSON Schema says), 10.5 is
    # not; 1e30 is an integer too, and so is 1e400 (inf once parsed: see _json).
    if isinstance(value, float) and (value.is_integer() or math.isinf(value)):
        if not lo <= value <= hi:
            raise InvalidRequest(f"'{field}' must be between {lo} and {hi}", field=field)
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
            MAX_PARTICIPANTS,
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
