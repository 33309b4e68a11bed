"""Loading JSON from clients: REST bodies and WebSocket messages (sans-io).

Rule: valid JSON is never called invalid.  orjson parses everything; the one valid
document it refuses is one with a number too large for a double (``1e400``, an integer
of 310 digits: "number is infinity when parsed as double").  Only then is the text
parsed again with the standard library, where such a number becomes ``inf`` or
``-inf`` (and an integer beyond 64 bits a float, as orjson gives it).  The validators
then refuse it as out of range for a known field and ignore it in an unknown one.

The fallback is as strict as orjson otherwise: the input must be UTF-8, ``NaN`` and
``Infinity`` literals are refused, and so are escaped lone surrogates (``"\\ud800"``,
which could not be stored or encoded again).  Integers are never converted with
``int()`` beyond 20 digits, so Python's limit on integer digits cannot be reached.

Cost: nothing on the normal path.  :func:`loads` is ``orjson.loads`` plus a ``try``;
the WebSocket parser calls ``orjson.loads`` itself and :func:`reparse` only when it
failed, so its hot path has no extra call.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

# orjson's message for a number beyond a double's range (tests/net/test_json.py pins it).
_OUT_OF_RANGE: Final = "number is infinity"
_INT64_MIN: Final = -(2**63)
_UINT64_END: Final = 2**64
_MAX_EXACT_INT_CHARS: Final = 20  # "-9223372036854775808", "18446744073709551615"


def loads(raw: bytes | str) -> Any:
    """Parse one JSON document; raise ``ValueError`` if it is not valid JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return reparse(raw, exc)


def reparse(raw: bytes | str, refusal: orjson.JSONDecodeError) -> Any:
    """Parse ``raw`` again after orjson refused it with ``refusal``.

    Raises ``refusal`` itself unless orjson refused a number for its range, and
    ``ValueError`` if the document is not valid JSON after all.
    """
    if not refusal.msg.startswith(_OUT_OF_RANGE):
        raise refusal
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        value = json.loads(text, parse_int=_integer, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    _refuse_lone_surrogates(value)
    return value


def _integer(text: str) -> int | float:
    # As orjson: exact within 64 bits, a float beyond (inf beyond a double's range).
    if len(text) <= _MAX_EXACT_INT_CHARS:
        value = int(text)
        if _INT64_MIN <= value < _UINT64_END:
            return value
    return float(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _refuse_lone_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
