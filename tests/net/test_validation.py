"""The OpenAPI patterns state exactly what the validators accept; the name rules, the
media type rule and the number rule of REST bodies."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from locshare.errors import InvalidRequest, MalformedJson, UnsupportedMediaType
from locshare.proto import _validation as v

# Whitespace, controls, bidirectional formatting characters, format characters (Cf),
# blank look-alikes, combining marks (Mn, Mc, Me), emoji pieces, astral characters.
SPECIAL = (
    " \t\n\x00\x1f\x7f\x85\x99\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000ab"
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u2062"
    "\u3164\u115f\u1160\uffa0\u2800"
    "\u0301\u034f\u0903\u20e3\u20dd\ufe0f"
    "\U000e0001\U000e0067\U000e007f\U000e0100\U0001d173\U0001f600\U0001f3f4\U00010000"
)
# Compiled once here: building the patterns scans every code point (a fraction of a second).
DISPLAY_NAME = re.compile(v.display_name_pattern())
SESSION_NAME = re.compile(v.session_name_pattern())
interesting = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(SPECIAL)),
    max_size=110,
)


def accepted(check, value: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        check(value)
    except InvalidRequest:
        return False
    return True


@given(interesting)
@example("0\n")  # a final newline: refused by both
@example("\u202egpj.exe")
@example(" \u200b\u3164 ")
@example("\u0301x")
@example("x\u0301")
@example("\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f")
@example(" " + "x" * 100 + " ")
@example("x" * 100 + "\u200b")
def test_display_name_pattern_matches_the_validator(value: str) -> None:
    pattern = DISPLAY_NAME
    # fullmatch: JSON Schema (ECMA-262) "$" never matches before a final "\n", Python's does.
    assert bool(pattern.fullmatch(value)) == accepted(
        lambda s: v.join_request({"display_name": s}), value
    )


@given(interesting)
@example("0\n")
@example("  ")
@example("\u2800")
@example("\u2066x\u2069")
def test_session_name_pattern_matches_the_validator(value: str) -> None:
    pattern = SESSION_NAME
    # fullmatch: JSON Schema (ECMA-262) "$" never matches before a final "\n", Python's does.
    assert bool(pattern.fullmatch(value)) == accepted(
        lambda s: v.create_session_request({"name": s}), value
    )


def test_integral_floats_are_integers() -> None:
    assert v.create_session_request({"max_participants": 10.0}).max_participants == 10
    for bad in (10.5, "10", True, float("inf")):
        assert not accepted(lambda x: v.create_session_request({"max_participants": x}), bad)  # type: ignore[arg-type]


def test_patterns_are_ecma_262_friendly() -> None:
    """No Python-only syntax: BMP characters as \\uXXXX, astral ones as themselves."""
    for pattern in (v.display_name_pattern(), v.session_name_pattern()):
        assert "\\U" not in pattern and "\\N" not in pattern and "(?P" not in pattern
        assert pattern.isprintable() or all(
            ord(ch) > 0xFFFF for ch in pattern if not ch.isprintable()
        )


def reason(check, value: object) -> InvalidRequest:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as info:
        check(value)
    return info.value


@pytest.mark.parametrize(
    "name",
    [
        "\u202egpj.exe",  # RIGHT-TO-LEFT OVERRIDE: reads "exe.jpg"
        "Ann\u202d",
        "\u2066Ann\u2069",
        "A\u200en",
        "A\u200fn",
        "A\u061cn",
        "\u202a\u202b\u202cx",
    ],
)
def test_bidi_controls_are_refused(name: str) -> None:
    for check, field in (
        (lambda s: v.join_request({"display_name": s}), "display_name"),
        (lambda s: v.create_session_request({"name": s}), "name"),
    ):
        error = reason(check, name)
        assert error.field == field
        assert "bidirectional" in error.message and field in error.message


@pytest.mark.parametrize(
    "name",
    [
        "\u200b",
        "\u200b\u200c\u200d",
        "\u2060\ufeff",
        "\u3164",
        "\u115f\u1160",
        "\uffa0",
        "\u2800\u2800",
        "\u0301\u0302",  # combining marks with no base
        "\u20e3",
        " \u00ad ",
        "\U000e0001\U000e0067",
        "\u200bAnn",  # a look-alike of "Ann" behind a leading invisible character
        "\u0301Ann",
    ],
)
def test_names_without_a_visible_first_character_are_refused(name: str) -> None:
    error = reason(lambda s: v.join_request({"display_name": s}), name)
    assert error.field == "display_name" and "visible" in error.message
    error = reason(lambda s: v.create_session_request({"name": s}), name)
    assert error.field == "name" and "visible" in error.message


@pytest.mark.parametrize(
    "name",
    [
        "Ann",
        "Zoë",
        "Zoe\u0301",  # decomposed: the mark has its base
        "\u2764\ufe0f",  # VS16 after the heart
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a ZWJ family
        "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # a tag flag
        "1\ufe0f\u20e3",  # keycap
        "\u0645\u0631\u064a\u0645",  # Arabic, right to left without any control
        "\u0928\u092e\u0938\u094d\u0924\u0947",  # Devanagari with marks
        "\u06a9\u200c\u0647",  # Persian with a ZWNJ
        "\ue000",  # private use: drawn by some font
    ],
)
def test_real_names_stay_accepted(name: str) -> None:
    assert v.join_request({"display_name": f" {name} "}).display_name == name
    assert v.create_session_request({"name": name}).name == name


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "  application/json  ",
        "application/merge-patch+json",
        "application/vnd.api+json; ext=x",
    ],
)
def test_json_media_types(content_type: str) -> None:
    assert v.is_json_media_type(content_type)
    assert v.parse_json_body(b'{"a": 1}', content_type, optional=False) == {"a": 1}


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "application/jsonp",
        "application/+json",
        "application/json-seq",
        "json",
        "application/xml",
    ],
)
def test_other_media_types_are_415(content_type: str | None) -> None:
    assert not v.is_json_media_type(content_type)
    with pytest.raises(UnsupportedMediaType) as info:
        v.parse_json_body(b'{"display_name": "Ann"}', content_type, optional=True)
    assert (info.value.http_status, info.value.code) == (415, "unsupported_media_type")
    # No body: nothing to declare.
    assert v.parse_json_body(b"", content_type, optional=True) == {}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"max_participants": 1e400}', "max_participants"),
        (b'{"max_participants": -1e400}', "max_participants"),
        (b'{"expires_in_minutes": ' + b"9" * 400 + b"}", "expires_in_minutes"),
        (b'{"expires_in_minutes": ' + b"9" * 5000 + b"}", "expires_in_minutes"),  # > int digits
        (b'{"max_participants": 1' + b"0" * 30 + b"}", "max_participants"),
        (b'{"name": 1e400}', "name"),
    ],
)
def test_out_of_range_numbers_are_422_naming_the_field(raw: bytes, field: str) -> None:
    body = v.parse_json_body(raw, "application/json", optional=True)
    error = reason(v.create_session_request, body)
    assert error.field == field
    if field != "name":
        assert "between" in error.message


def test_out_of_range_numbers_in_unknown_fields_are_ignored() -> None:
    raw = b'{"display_name": "Ann", "extra": 1e400, "more": [-' + b"7" * 5000 + b"]}"
    body = v.parse_json_body(raw, "application/json", optional=False)
    assert v.join_request(body).display_name == "Ann"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1e400, "b": NaN}',
        b'{"a": 1e400, "b": Infinity}',
        b'{"a": 1e400, "b": "\\ud800"}',  # an escaped lone surrogate
        b'{"a": 1e400, "b": 01}',
        b'{"a": 1e400,}',
        b'{"a": 1e400, "b": "\xff"}',
        b"[1e400, " + b"[" * 5000 + b"]" * 5000 + b"]",
    ],
)
def test_the_fallback_is_as_strict_as_orjson(raw: bytes) -> None:
    with pytest.raises(MalformedJson):
        v.parse_json_body(raw, "application/json", optional=True)
