"""GeoJSON positions, checked (sans-io): the shared part of parsing places and routes.

Rules (RFC 7946):
    * A position is ``[lng, lat]`` or ``[lng, lat, altitude]``; the altitude is
      ignored.  Numbers are JSON numbers (a boolean is not a number), finite, with
      ``-180 <= lng <= 180`` and ``-90 <= lat <= 90``.
    * Errors are :class:`~locshare.errors.InvalidRequest` naming the offending field,
      with the index of the position when there is one, so a client can point at it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidRequest

FloatArray = npt.NDArray[np.float64]


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(value: object, field: str) -> float:
    if not is_number(value):
        raise InvalidRequest(f"'{field}' must be a number", field=field)
    result = float(value)  # type: ignore[arg-type]
    if not math.isfinite(result):
        raise InvalidRequest(f"'{field}' must be a finite number", field=field)
    return result


def _bad_position(field: str, index: int | None, why: str) -> InvalidRequest:
    where = field if index is None else f"{field}[{index}]"
    return InvalidRequest(f"'{where}' {why}", field=field)


def _position(value: object, field: str, index: int | None) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or not 2 <= len(value) <= 3:
        raise _bad_position(field, index, "must be a position [longitude, latitude]")
    lng, lat = value[0], value[1]
    if not (is_number(lng) and is_number(lat)):
        raise _bad_position(field, index, "must hold two numbers [longitude, latitude]")
    lng_f, lat_f = float(lng), float(lat)
    if not -180.0 <= lng_f <= 180.0:  # NaN fails both comparisons
        raise _bad_position(field, index, "has a longitude outside -180..180")
    if not -90.0 <= lat_f <= 90.0:
        raise _bad_position(field, index, "has a latitude outside -90..90")
    return lng_f, lat_f


def position(value: object, field: str) -> tuple[float, float]:
    """One position as ``(lng, lat)``."""
    return _position(value, field, None)


def positions(value: object, field: str, *, min_count: int, max_count: int) -> FloatArray:
    """A list of positions as an ``(n, 2)`` array of ``lng, lat``.

    The count is checked before any position is read, so an oversized list costs
    nothing but its length.
    """
    if not isinstance(value, list | tuple):
        raise InvalidRequest(f"'{field}' must be a list of positions", field=field)
    if len(value) > max_count:
        raise InvalidRequest(
            f"'{field}' has {len(value)} positions; at most {max_count} are allowed",
            field=field,
        )
    if len(value) < min_count:
        raise InvalidRequest(f"'{field}' needs at least {min_count} positions", field=field)
    out = np.empty((len(value), 2))
    for i, item in enumerate(value):
        out[i] = _position(item, field, i)
    return out


def geometry_object(data: object, field: str) -> dict[str, Any]:
    """A GeoJSON object: a JSON object with a string ``type``."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"'{field}' must be a GeoJSON object", field=field)
    if not isinstance(data.get("type"), str):
        raise InvalidRequest(f"'{field}' must have a GeoJSON 'type'", field=field)
    return data
