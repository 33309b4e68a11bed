"""Bounding boxes (vectorized over many sessions) and Web Mercator viewport fitting.

Rule 1 (antimeridian): a session's longitude extent is the *shortest* arc that holds
every fresh point, i.e. the complement of the largest gap between neighbouring
longitudes on the circle.  When that arc crosses 180 degrees, ``west > east``.
On a tie the arc that does not cross the antimeridian wins.

Rule 2 (fit): for a viewport of ``width x height`` pixels with ``padding`` on every
side, the hinted zoom is the largest zoom (in steps of 1/100, 256-pixel tiles) at which
the box's Web Mercator extent fits in ``(width - 2 padding) x (height - 2 padding)``,
capped at ``max_zoom`` and never below 0.  A single point (zero extent) gets the cap.
Latitudes are clamped to the Mercator limit (+-85.0511 degrees) for fitting.

Boxes are numpy; a fit is one box per screen size, in scalar arithmetic.  No clock, no
I/O, no trio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

TILE_PX = 256.0
MERCATOR_MAX_LAT = 85.05112877980659
ZOOM_STEP = 0.01


@dataclass(frozen=True, slots=True)
class BBox:
    west: float
    south: float
    east: float
    north: float

    @property
    def lng_span(self) -> float:
        return lng_span(self.west, self.east)

    @property
    def lat_span(self) -> float:
        return self.north - self.south

    def contains(self, lat: float, lng: float) -> bool:
        if not self.south <= lat <= self.north:
            return False
        return float((lng - self.west) % 360.0) <= self.lng_span + 1e-9

    def to_json(self) -> dict[str, float]:
        return {"west": self.west, "south": self.south, "east": self.east, "north": self.north}


@dataclass(frozen=True, slots=True)
class Fit:
    center_lat: float
    center_lng: float
    zoom: float


def lng_span(west: float, east: float) -> float:
    """Width in degrees of the arc from ``west`` eastwards to ``east`` (0..360)."""
    return float((east - west) % 360.0) if east != west else 0.0


def bboxes(
    lat: FloatArray, lng: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, npt.NDArray[np.intp]]:
    """Per-row bounding boxes of the non-NaN points of ``(rows, slots)`` arrays.

    Returns ``west, south, east, north`` (NaN for rows without points) and the count of
    points per row.  ``lat`` and ``lng`` must be NaN in the same places.
    """
    rows, slots = lng.shape
    valid = ~np.isnan(lng)
    count = valid.sum(axis=1)
    west = np.full(rows, np.nan)
    east = np.full(rows, np.nan)
    south = np.full(rows, np.nan)
    north = np.full(rows, np.nan)
    has = count > 0
    if not has.any():
        return west, south, east, north, count
    idx = np.flatnonzero(has)
    lat_h = lat[idx]
    south[idx] = np.nanmin(lat_h, axis=1)
    north[idx] = np.nanmax(lat_h, axis=1)
    lng_h = lng[idx]
    lo = np.nanmin(lng_h, axis=1)
    hi = np.nanmax(lng_h, axis=1)
    # Points within 180 degrees of each other: the gap around the back of the globe
    # (360 - span >= 180) is the largest, so the box is simply [min, max].  Only wider
    # rows need the sort (rare: a group spread over half the planet).
    simple = hi - lo <= 180.0
    west[idx[simple]] = lo[simple]
    east[idx[simple]] = hi[simple]
    if simple.all():
        return west, south, east, north, count
    idx = idx[~simple]

    ordered = np.sort(lng[idx], axis=1)  # NaNs sort to the end of each row
    n = count[idx]
    r = np.arange(idx.size)
    first = ordered[:, 0]
    last = ordered[r, n - 1]
    # Gap after each sorted point to the next one (interior gaps only).
    if slots > 1:
        interior = np.diff(ordered, axis=1)  # NaN beyond each row's last point
        interior = np.where(np.isnan(interior), -1.0, interior)
        best = np.argmax(interior, axis=1)
        best_gap = interior[r, best]
    else:
        best = np.zeros(idx.size, dtype=np.intp)
        best_gap = np.full(idx.size, -1.0)
    wrap_gap = first + 360.0 - last
    crosses = best_gap > wrap_gap  # strictly: ties keep the non-crossing box
    west[idx] = np.where(crosses, ordered[r, np.minimum(best + 1, slots - 1)], first)
    east[idx] = np.where(crosses, ordered[r, best], last)
    return west, south, east, north, count


def _mercator_y(lat: float) -> float:
    """Normalized Web Mercator y in [0, 1] (0 at the north limit)."""
    rad = math.radians(min(max(lat, -MERCATOR_MAX_LAT), MERCATOR_MAX_LAT))
    return (1.0 - math.log(math.tan(math.pi / 4.0 + rad / 2.0)) / math.pi) / 2.0


def fit(box: BBox, width: float, height: float, padding: float, max_zoom: float) -> Fit:
    """Rule 2 for one box, in scalar arithmetic: a hint is one box per screen size, and
    the earlier numpy version's cost per call on one-element arrays (95.6 us against
    4.3 us) was 9 % of the server's CPU in the realistic benchmark."""
    lng_extent = (box.east - box.west) % 360.0
    span_x = lng_extent / 360.0
    y_north = _mercator_y(box.north)
    y_south = _mercator_y(box.south)
    span_y = y_south - y_north
    avail_w = max(width - 2.0 * padding, 1.0)
    avail_h = max(height - 2.0 * padding, 1.0)
    # A span too small to divide by fits at any zoom (then capped at max_zoom).
    zx = math.log2(avail_w / (TILE_PX * span_x)) if span_x > 0 else math.inf
    zy = math.log2(avail_h / (TILE_PX * span_y)) if span_y > 0 else math.inf
    zoom = min(zx, zy, max_zoom)
    zoom = math.floor(zoom / ZOOM_STEP + 1e-9) * ZOOM_STEP
    zoom = min(max(round(zoom * 100.0) / 100.0, 0.0), max_zoom)  # as np.round(zoom, 2)
    center_lng = (box.west + lng_extent / 2.0 + 180.0) % 360.0 - 180.0
    n = math.pi * (1.0 - (y_north + y_south))
    return Fit(math.degrees(math.atan(math.sinh(n))), center_lng, zoom)


def box_pixel_size(box: BBox, zoom: float) -> tuple[float, float]:
    """Width and height in pixels of ``box`` at ``zoom`` (for tests and clients)."""
    scale = TILE_PX * math.pow(2.0, zoom)
    width = box.lng_span / 360.0 * scale
    height = (_mercator_y(box.south) - _mercator_y(box.north)) * scale
    return width, height
