"""The OpenAPI patterns state exactly what the validators accept."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from locshare.errors import InvalidRequest
from locshare.net import _validation as v

interesting = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.sampled_from(
            " \t\n\x00\x1f\x7f\x85\x99\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000ab"
        ),
    ),
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
def test_display_name_pattern_matches_the_validator(value: str) -> None:
    pattern = re.compile(v.DISPLAY_NAME_PATTERN)
    # fullmatch: JSON Schema (ECMA-262) "$" never matches before a final "\n", Python's does.
    assert bool(pattern.fullmatch(value)) == accepted(
        lambda s: v.join_request({"display_name": s}), value
    )


@given(interesting)
@example("0\n")
def test_session_name_pattern_matches_the_validator(value: str) -> None:
    pattern = re.compile(v.SESSION_NAME_PATTERN)
    # fullmatch: JSON Schema (ECMA-262) "$" never matches before a final "\n", Python's does.
    assert bool(pattern.fullmatch(value)) == accepted(
        lambda s: v.create_session_request({"name": s}), value
    )


def test_integral_floats_are_integers() -> None:
    assert v.create_session_request({"max_participants": 10.0}).max_participants == 10
    for bad in (10.5, "10", True, float("inf")):
        assert not accepted(lambda x: v.create_session_request({"max_participants": x}), bad)  # type: ignore[arg-type]
