"""Sans-io geospatial core: the live location index and viewport fitting.

Nothing in this package imports trio, quart, hypercorn or asyncpg, or reads a clock.
"""

from __future__ import annotations

from ._index import FIELDS, GeoIndex, Hint, IndexStatistics, Location, TickResult
from ._viewport import BBox, Fit, bboxes, box_pixel_size, fit, fit_zooms, lng_span

__all__ = [
    "FIELDS",
    "BBox",
    "Fit",
    "GeoIndex",
    "Hint",
    "IndexStatistics",
    "Location",
    "TickResult",
    "bboxes",
    "box_pixel_size",
    "fit",
    "fit_zooms",
    "lng_span",
]
