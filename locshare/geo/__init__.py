"""Sans-io geospatial core: the live location index, viewport fitting, places and the
convoy's route.

Nothing in this package imports trio, quart, hypercorn or asyncpg, or reads a clock.
"""

from __future__ import annotations

from ._index import FIELDS, GeoIndex, Hint, IndexArrays, IndexStatistics, Location, TickResult
from ._places import (
    MAX_PLACES_PER_SESSION,
    PLACE_KINDS,
    Place,
    PlaceEvents,
    PlaceIndex,
    PlaceStatistics,
    parse_place,
)
from ._projection import EARTH_RADIUS_M, LocalFrame, haversine_m, unit_vectors
from ._route import (
    OFF_ROUTE_DEFAULT_M,
    ROUTE_MAX_POINTS,
    ROUTE_SIMPLIFIED_MAX_POINTS,
    Convoy,
    Route,
    RouteIndex,
    RouteStatistics,
    parse_gpx,
    parse_route_geojson,
)
from ._viewport import BBox, Fit, bboxes, box_pixel_size, fit, lng_span

__all__ = [
    "EARTH_RADIUS_M",
    "FIELDS",
    "MAX_PLACES_PER_SESSION",
    "OFF_ROUTE_DEFAULT_M",
    "PLACE_KINDS",
    "ROUTE_MAX_POINTS",
    "ROUTE_SIMPLIFIED_MAX_POINTS",
    "BBox",
    "Convoy",
    "Fit",
    "GeoIndex",
    "Hint",
    "IndexArrays",
    "IndexStatistics",
    "LocalFrame",
    "Location",
    "Place",
    "PlaceEvents",
    "PlaceIndex",
    "PlaceStatistics",
    "Route",
    "RouteIndex",
    "RouteStatistics",
    "TickResult",
    "bboxes",
    "box_pixel_size",
    "fit",
    "haversine_m",
    "lng_span",
    "parse_gpx",
    "parse_place",
    "parse_route_geojson",
    "unit_vectors",
]
