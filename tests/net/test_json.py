"""The JSON loading helper: orjson, and the standard library only for numbers orjson
refuses for their range (valid JSON is never called invalid)."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from locshare.proto import _json


def test_orjson_still_refuses_out_of_range_numbers_this_way() -> None:
    """The fallback keys on orjson's message; a new orjson that changes it fails here."""
    with pytest.raises(orjson.JSONDecodeError) as info:
        orjson.loads(b"[1e400]")
    assert info.value.msg.startswith("number is infinity")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1e400", math.inf),
        (b"-1e400", -math.inf),
        (b"1" * 400, math.inf),
        (b"-" + b"1" * 5000, -math.inf),  # beyond Python's int-digits limit
        (b'{"a": 1e400, "b": 18446744073709551615, "c": -9223372036854775808}', None),
        ('{"a": 1e400, "s": "\\ud83d\\ude00 é"}', None),  # str input, an escaped pair
    ],
)
def test_out_of_range_numbers_are_parsed(raw: bytes | str, expected: float | None) -> None:
    value = _json.loads(raw)
    if expected is not None:
        assert value == expected
    elif "b" in value:
        assert value == {"a": math.inf, "b": 2**64 - 1, "c": -(2**63)}
        assert isinstance(value["b"], int)
    else:
        assert value == {"a": math.inf, "s": "\U0001f600 é"}


def test_integers_beyond_64_bits_are_floats_as_orjson_gives_them() -> None:
    numbers = b"18446744073709551616, -9223372036854775809, 12345678901234567890123"
    value = _json.loads(b"[1e400, " + numbers + b"]")
    assert value[1:] == orjson.loads(b"[" + numbers + b"]")
    assert all(isinstance(x, float) for x in value[1:])


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[NaN]", b"[1e400, NaN]", b'[1e400, "\\ud800"]', b"[1e400, 01]", b"\xff[1e400]"],
)
def test_invalid_json_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the helper's one documented error
        _json.loads(raw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_with_a_huge_number_added_the_rest_parses_as_orjson_parses_it(value: object) -> None:
    text = json.dumps(value)
    assert _json.loads(f"[{text}, 1e400]") == [orjson.loads(text), math.inf]
