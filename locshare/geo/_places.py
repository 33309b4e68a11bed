"""Places (meeting points, hazards, ...) and who is at them: parsing and the arrival rule.

A *place* is a circle (a GeoJSON Point with ``radius_m``) or a GeoJSON Polygon, with a
name and a kind.  :func:`parse_place` checks one (it raises
:class:`~locshare.errors.InvalidRequest` naming the field); :class:`PlaceIndex`
holds up to :data:`MAX_PLACES_PER_SESSION` of them per session block and decides,
once per geo tick and vectorized over every session, who arrives and who departs.

Geometry: each place is drawn in its own local azimuthal equidistant frame
(``_projection``), in metres, so places across the antimeridian or near a pole
behave like the same place at the equator.  A polygon is checked there with
``shapely.is_valid``; the reason of a refusal is ``shapely.is_valid_reason`` with
its coordinates given back as longitude and latitude.

Every place has three lengths, in metres:
    * ``depth_m``: how far inside a point can be: a circle's radius, a polygon's
      largest inscribed circle (so a long thin parking strip is not harder to reach
      than its width allows);
    * ``margin_m``: the hysteresis band outside it: 20 % of the radius, or of a
      polygon's equivalent radius ``sqrt(area / pi)``;
    * ``reach_m``: the farthest any of its points is from its frame's centre (a
      circle's radius), used to skip far pairs without geometry.

Rule 1 (qualifying fixes).  A fix at signed distance ``s`` from the place's boundary
(positive inside, metres) with accuracy ``a`` (its ``accuracy``, or
:data:`ASSUMED_ACCURACY_M` when the client sent none) and ``need = 0.5 * min(a,
depth_m)``:
    * counts as *inside* when ``s >= need``: the fix is at least half its accuracy
      radius inside.  Accuracy is a 68 % radius; with a straight edge at half that
      radius, 80 % of the accuracy disc's area lies inside the place: the disc "fits
      mostly inside".  The cap at ``depth_m`` keeps small places reachable with a poor
      fix (a 10 m circle indoors): such a fix must then land in the inner half of
      the place instead.
    * counts as *outside* when ``s <= -(margin_m + need)``: outside the place grown
      by the margin, by the same half accuracy radius.
Rule 2 (transitions).  A participant *arrives* after :data:`FIXES_TO_CHANGE` (2)
consecutive inside fixes and *departs* after 2 consecutive outside fixes; any other
fix resets the count.  So a rider circling anywhere between the inner band and
the margin never flaps, and one wild fix changes nothing.  Events alternate per
(participant, place): arrival, departure, arrival, ...
Rule 3 (which fixes count).  A fix counts once: the tick remembers each slot's last
``received_at`` and only a different, fresh one is a new fix.  Fixes are the ones the
tick sees (the latest per slot at tick time); the tick runs at most once a second.
Rule 4 (retention).  When a slot's location is no longer fresh (expired or evicted),
its state for every place is wiped, and a presence it had is reported in
``PlaceEvents.expired``: nothing derived from a location outlives it.  A removed
place, a freed slot or block forgets its state silently (the runtime knows).

Evaluation, once per tick for every block with places: the dot products of every
fix's unit vector with every place centre (one batched matmul) drop the pairs that are
far from the place and carry no state.  For the rest, a circle's signed distance is
``radius - great-circle distance`` (numpy, from the same dot products: millimetres;
a decision within a centimetre of its threshold is recomputed exactly).  A polygon
pair is decided in numpy when the fix is beyond ``reach + margin + need`` of the
centre (outside, far enough) or inside the largest inscribed circle (inside, with a
known least depth); the rest go to shapely in the place's frame (prepared
``contains_xy`` and ``dwithin``).  Circles in numpy were measured about 50 times faster
than the same circles as 64-gons through shapely (``benchmarks/geo_places.py``).

Sans-io: ``now`` is an argument; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import shapely

from ..errors import InvalidRequest
from ._geojson import geometry_object, number, position
from ._geojson import positions as parse_positions
from ._index import IndexArrays
from ._projection import EARTH_RADIUS_M, LocalFrame, great_circle_m, project, unit_vectors

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

PLACE_KINDS: Final = ("meet", "poi", "hazard", "parking", "fuel", "food")
MAX_PLACES_PER_SESSION: Final = 20
PLACE_NAME_MAX_CHARS: Final = 60
PLACE_RADIUS_MIN_M: Final = 10.0
PLACE_RADIUS_MAX_M: Final = 2_000.0
PLACE_RADIUS_DEFAULT_M: Final = 50.0
POLYGON_MAX_VERTICES: Final = 500  # distinct vertices over all rings (closing ones not counted)
# The farthest a polygon's vertex may be from its centre: a place, not a region.  It
# also bounds the projection's distortion (1e-5 at 50 km).
POLYGON_MAX_REACH_M: Final = 50_000.0
FIXES_TO_CHANGE: Final = 2  # consecutive qualifying fixes to arrive or depart
ACCURACY_DEPTH_FRACTION: Final = 0.5  # Rule 1's "half the accuracy radius"
HYSTERESIS_FRACTION: Final = 0.2  # the margin: 20 % of the (equivalent) radius
ASSUMED_ACCURACY_M: Final = 20.0  # a fix without accuracy: a typical phone outdoors
_NEAR_SLACK_M: Final = 1.0  # the dot-product prefilter's allowance for rounding

_NO_EVENTS: Final = np.zeros((0, 3), dtype=np.intp)
_REACH, _DEPTH, _MARGIN = range(3)
_PARAMS: Final = 3
_REFINE_M: Final = 0.01  # decisions this close to a threshold get the exact distance
_REASON_AT = re.compile(r"^(?P<what>.*)\[(?P<x>\S+) (?P<y>\S+)\]$")


@dataclass(frozen=True, slots=True, eq=False)
class Place:
    """A checked place (see the module docstring for the lengths).

    ``lat, lng``: a circle's centre; a polygon's frame centre (the normalized mean of
    its exterior vertices, not necessarily inside it).  ``rings``: a polygon's rings
    as ``(n, 2)`` arrays of ``lng, lat``, closed, exterior first; ``None`` for a circle.
    """

    name: str
    kind: str
    lat: float
    lng: float
    radius_m: float | None
    rings: tuple[FloatArray, ...] | None
    reach_m: float
    depth_m: float
    margin_m: float
    frame: LocalFrame = field(repr=False)
    shape: Any = field(repr=False)  # shapely Polygon in frame metres (prepared), or None
    boundary: Any = field(repr=False)  # its boundary (prepared), or None
    # A polygon's largest inscribed circle's centre, in frame metres (a circle: 0, 0).
    inner_xy: tuple[float, float] = field(repr=False)

    @property
    def is_polygon(self) -> bool:
        return self.rings is not None

    @classmethod
    def circle(cls, name: str, kind: str, lat: float, lng: float, radius_m: float) -> Place:
        frame = LocalFrame.at(unit_vectors(lat, lng))
        margin = HYSTERESIS_FRACTION * radius_m
        return cls(
            name,
            kind,
            lat,
            lng,
            radius_m,
            None,
            radius_m,
            radius_m,
            margin,
            frame,
            None,
            None,
            (0.0, 0.0),
        )

    @classmethod
    def polygon(cls, name: str, kind: str, rings: list[FloatArray]) -> Place:
        """A polygon from closed rings of ``lng, lat`` (exterior first).

        Raises :class:`InvalidRequest` (field ``geometry``) when it is not valid in
        its local frame or reaches farther than :data:`POLYGON_MAX_REACH_M`.
        """
        exterior = rings[0][:-1]
        frame = LocalFrame.around(exterior[:, 1], exterior[:, 0])
        projected = [np.stack(frame.forward(r[:, 1], r[:, 0]), axis=1) for r in rings]
        reach = max(float(np.hypot(p[:, 0], p[:, 1]).max()) for p in projected)
        if reach > POLYGON_MAX_REACH_M:
            raise InvalidRequest(
                f"'geometry' reaches {reach / 1000:.1f} km from its centre; a place may reach"
                f" at most {POLYGON_MAX_REACH_M / 1000:.0f} km",
                field="geometry",
            )
        shape = shapely.Polygon(projected[0], projected[1:])
        if not shapely.is_valid(shape):
            reason = _reason_in_degrees(str(shapely.is_valid_reason(shape)), frame)
            raise InvalidRequest(f"'geometry' is not a valid polygon: {reason}", field="geometry")
        area = float(shape.area)
        if not area > 0.0:
            raise InvalidRequest(
                "'geometry' is not a valid polygon: it has no area", field="geometry"
            )
        equivalent_radius = math.sqrt(area / math.pi)
        inscribed = shapely.maximum_inscribed_circle(shape, equivalent_radius * 1e-4)
        depth = float(shapely.length(inscribed))
        inner_x, inner_y = shapely.get_coordinates(inscribed)[0].tolist()
        boundary = shapely.boundary(shape)
        shapely.prepare(shape)
        shapely.prepare(boundary)
        lat, lng = frame.lat_lng
        frozen = []
        for ring in rings:
            copy = np.array(ring, dtype=np.float64)
            copy.flags.writeable = False
            frozen.append(copy)
        return cls(
            name,
            kind,
            lat,
            lng,
            None,
            tuple(frozen),
            reach,
            depth,
            HYSTERESIS_FRACTION * equivalent_radius,
            frame,
            shape,
            boundary,
            (inner_x, inner_y),
        )

    def to_json(self) -> dict[str, Any]:
        """The place as the client sends it: ``name``, ``kind``, ``geometry`` (GeoJSON)
        and, for a circle, ``radius_m``."""
        if self.rings is None:
            return {
                "name": self.name,
                "kind": self.kind,
                "geometry": {"type": "Point", "coordinates": [self.lng, self.lat]},
                "radius_m": self.radius_m,
            }
        return {
            "name": self.name,
            "kind": self.kind,
            "geometry": {"type": "Polygon", "coordinates": [r.tolist() for r in self.rings]},
        }

    def signed_distance_m(self, lat: npt.ArrayLike, lng: npt.ArrayLike) -> FloatArray:
        """Distance in metres from each point to the place's boundary: positive
        inside, negative outside.  Exact (no prefilter); for tests and one-off reads."""
        units = unit_vectors(lat, lng)
        if self.shape is None:
            assert self.radius_m is not None
            return np.asarray(self.radius_m - great_circle_m(units, self.frame.centre))
        x, y = self.frame.forward_units(units)
        points = shapely.points(x, y)
        inside = shapely.contains_xy(self.shape, x, y)
        to_boundary = shapely.distance(self.boundary, points)
        return np.asarray(np.where(inside, to_boundary, -to_boundary), dtype=np.float64)


def _reason_in_degrees(reason: str, frame: LocalFrame) -> str:
    """``is_valid_reason`` names a point in frame metres: give it as ``[lng, lat]``."""
    match = _REASON_AT.match(reason)
    if match is None:
        return reason
    try:
        x, y = float(match["x"]), float(match["y"])
    except ValueError:
        return reason
    lat, lng = frame.inverse(x, y)
    return f"{match['what']} at [{float(lng):.6f}, {float(lat):.6f}]"


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("'name' must be a string", field="name")
    if any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in value):
        raise InvalidRequest("'name' must not contain control characters", field="name")
    value = value.strip()
    if not value:
        raise InvalidRequest("'name' must not be empty", field="name")
    if len(value) > PLACE_NAME_MAX_CHARS:
        raise InvalidRequest(
            f"'name' must be at most {PLACE_NAME_MAX_CHARS} characters", field="name"
        )
    return value


def _rings(value: object) -> list[FloatArray]:
    field_name = "geometry.coordinates"
    if not isinstance(value, list | tuple) or not value:
        raise InvalidRequest(f"'{field_name}' must be a list of rings", field=field_name)
    if not all(isinstance(ring, list | tuple) for ring in value):
        raise InvalidRequest(f"'{field_name}' must be a list of rings", field=field_name)
    # Count before reading a single position: the limit costs nothing to enforce.
    vertices = sum(max(len(ring) - 1, 0) for ring in value)
    if vertices > POLYGON_MAX_VERTICES:
        raise InvalidRequest(
            f"'{field_name}' has {vertices} vertices; a polygon may have at most"
            f" {POLYGON_MAX_VERTICES}",
            field=field_name,
        )
    rings = []
    for ring in value:
        points = parse_positions(ring, field_name, min_count=4, max_count=POLYGON_MAX_VERTICES + 1)
        if not np.array_equal(points[0], points[-1]):
            raise InvalidRequest(
                f"'{field_name}': a ring must be closed (its last position equal to its first)",
                field=field_name,
            )
        rings.append(points)
    return rings


def parse_place(data: object) -> Place:
    """Check a place as a client sends it (REST body or WebSocket message data)::

        {"name": "Camp", "kind": "meet",
         "geometry": {"type": "Point", "coordinates": [lng, lat]}, "radius_m": 50}
        {"name": "Lot B", "kind": "parking",
         "geometry": {"type": "Polygon", "coordinates": [[[lng, lat], ...]]}}

    ``name``: 1 to 60 characters once trimmed, no control characters.  ``kind``: one
    of :data:`PLACE_KINDS`.  A Point takes ``radius_m`` (10 to 2,000, default 50); a
    Polygon takes none, at most 500 vertices, and must be valid
    (``shapely.is_valid`` in its local frame).  Unknown fields are ignored.

    Raises :class:`~locshare.errors.InvalidRequest` whose ``field`` names the
    offending field and whose message is the reason.  Pure and cheap (a 500-vertex
    polygon: about 2 ms), so both edges may call it inline.
    """
    if not isinstance(data, dict):
        raise InvalidRequest("a place must be a JSON object")
    name = _name(data.get("name"))
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in PLACE_KINDS:
        raise InvalidRequest(f"'kind' must be one of {', '.join(PLACE_KINDS)}", field="kind")
    geometry = geometry_object(data.get("geometry"), "geometry")
    radius = data.get("radius_m")
    if geometry["type"] == "Point":
        lng, lat = position(geometry.get("coordinates"), "geometry.coordinates")
        radius_m = PLACE_RADIUS_DEFAULT_M if radius is None else number(radius, "radius_m")
        if not PLACE_RADIUS_MIN_M <= radius_m <= PLACE_RADIUS_MAX_M:
            raise InvalidRequest(
                f"'radius_m' must be between {PLACE_RADIUS_MIN_M:.0f} and"
                f" {PLACE_RADIUS_MAX_M:.0f} metres",
                field="radius_m",
            )
        return Place.circle(name, kind, lat, lng, radius_m)
    if geometry["type"] == "Polygon":
        if radius is not None:
            raise InvalidRequest("'radius_m' applies only to a Point", field="radius_m")
        return Place.polygon(name, kind, _rings(geometry.get("coordinates")))
    raise InvalidRequest("'geometry' must be a GeoJSON Point or Polygon", field="geometry")


@dataclass(frozen=True, slots=True)
class PlaceEvents:
    """What one tick found, as ``(n, 3)`` integer arrays of ``block, slot, place``.

    ``expired``: presences that ended because the location expired (Rule 4); the
    runtime may show them as departures.
    """

    arrivals: IntArray
    departures: IntArray
    expired: IntArray

    def __bool__(self) -> bool:
        return bool(self.arrivals.size or self.departures.size or self.expired.size)


_EMPTY_EVENTS: Final = PlaceEvents(_NO_EVENTS, _NO_EVENTS, _NO_EVENTS)


@dataclass(frozen=True, slots=True)
class PlaceStatistics:
    sessions: int  # blocks with at least one place
    places: int
    present: int  # (participant, place) pairs currently arrived


def _events(rows_blocks: IntArray, slots: IntArray, places: IntArray) -> IntArray:
    if rows_blocks.size == 0:
        return _NO_EVENTS
    return np.stack([rows_blocks, slots, places], axis=1).astype(np.intp)


class PlaceIndex:
    """The places of every session and who is at them (module docstring: Rules 1-4).

    Storage: a *row* per block that has places (a free list; capacity doubles), so
    memory follows the sessions with places, not the index's capacity.  Per row:
    the places' parameters, ``(rows, places)``; and the state, ``present`` (bool) and
    ``streak`` (int8) per ``(row, slot, place)``, and the last fix seen per
    ``(row, slot)``.  Place ``i`` of a block keeps its index while it exists; freed
    indices are reused.

    Not thread-safe; owned by the geo tick's task like the :class:`GeoIndex`.
    """

    def __init__(self, *, block_size: int = 50, initial_rows: int = 16) -> None:
        if block_size < 1 or initial_rows < 1:
            raise ValueError("block_size and initial_rows must be positive")
        self.block_size = block_size
        self._row_of: dict[int, int] = {}
        self._free_rows: list[int] = []
        self._capacity = 0
        p = MAX_PLACES_PER_SESSION
        self._block = np.zeros(0, dtype=np.intp)
        self._active = np.zeros((0, p), dtype=bool)
        self._centre = np.zeros((0, 3, p))  # (row, xyz, place): one matmul per tick
        self._east = np.zeros((0, 3, p))  # the places' frames, like _centre
        self._north = np.zeros((0, 3, p))
        self._cos_near = np.zeros((0, p))
        # Per place: reach, depth, margin (metres); one gather.
        self._params = np.zeros((0, p, _PARAMS))
        self._is_polygon = np.zeros((0, p), dtype=bool)
        self._inner = np.zeros((0, p, 2))  # inscribed circle's centre, frame metres
        self._places = np.empty((0, p), dtype=object)
        self._shapes = np.empty((0, p), dtype=object)  # prepared, frame metres; None: circle
        self._boundaries = np.empty((0, p), dtype=object)
        self._present = np.zeros((0, block_size, p), dtype=bool)
        self._streak = np.zeros((0, block_size, p), dtype=np.int8)
        self._seen = np.zeros((0, block_size))
        self._grow(initial_rows)

    # --- rows ---------------------------------------------------------------------------
    def _grow(self, rows: int) -> None:
        old = self._capacity
        extra = rows - old
        p, s = MAX_PLACES_PER_SESSION, self.block_size

        def more(array: npt.NDArray[Any], fill: object) -> npt.NDArray[Any]:
            pad = np.full((extra, *array.shape[1:]), fill, dtype=array.dtype)
            return np.concatenate([array, pad])

        self._block = more(self._block, -1)
        self._active = more(self._active, False)
        self._centre = more(self._centre, 0.0)
        self._east = more(self._east, 0.0)
        self._north = more(self._north, 0.0)
        self._cos_near = more(self._cos_near, 2.0)  # a dot product never reaches 2
        self._params = more(self._params, 0.0)
        self._is_polygon = more(self._is_polygon, False)
        self._inner = more(self._inner, 0.0)
        self._places = more(self._places, None)
        self._shapes = more(self._shapes, None)
        self._boundaries = more(self._boundaries, None)
        self._present = more(self._present, False)
        self._streak = more(self._streak, 0)
        self._seen = more(self._seen, np.nan)
        assert self._present.shape[1:] == (s, p)
        self._free_rows.extend(range(rows - 1, old - 1, -1))
        self._capacity = rows

    def _reset_row(self, row: int) -> None:
        self._block[row] = -1
        self._active[row] = False
        self._params[row] = 0.0
        self._is_polygon[row] = False
        self._cos_near[row] = 2.0
        self._places[row] = None
        self._shapes[row] = None
        self._boundaries[row] = None
        self._present[row] = False
        self._streak[row] = 0
        self._seen[row] = np.nan

    # --- places -------------------------------------------------------------------------
    def add_place(self, block: int, place: Place) -> int:
        """Add a checked place to a block; returns its index (0 to 19).

        Raises :class:`InvalidRequest` (field ``places``) when the block already has
        :data:`MAX_PLACES_PER_SESSION`.  Participants already inside arrive after two
        new fixes, like anyone else.
        """
        row = self._row_of.get(block)
        if row is None:
            if not self._free_rows:
                self._grow(self._capacity * 2)
            row = self._free_rows.pop()
            self._row_of[block] = row
            self._block[row] = block
        free = np.flatnonzero(~self._active[row])
        if free.size == 0:
            raise InvalidRequest(
                f"a session has at most {MAX_PLACES_PER_SESSION} places", field="places"
            )
        index = int(free[0])
        frame = place.frame
        self._active[row, index] = True
        self._centre[row, :, index] = frame.centre
        self._east[row, :, index] = frame.east
        self._north[row, :, index] = frame.north
        near_m = place.reach_m + place.margin_m + place.depth_m + _NEAR_SLACK_M
        self._cos_near[row, index] = math.cos(min(near_m / EARTH_RADIUS_M, math.pi))
        self._params[row, index] = (place.reach_m, place.depth_m, place.margin_m)
        self._is_polygon[row, index] = place.is_polygon
        self._inner[row, index] = place.inner_xy
        self._places[row, index] = place
        self._shapes[row, index] = place.shape
        self._boundaries[row, index] = place.boundary
        self._present[row, :, index] = False
        self._streak[row, :, index] = 0
        return index

    def remove_place(self, block: int, index: int) -> Place:
        """Remove place ``index`` of a block (its state goes with it); returns it.

        Raises ``KeyError`` when there is no such place.  The block's row is freed
        with its last place.
        """
        row = self._row_of.get(block)
        if row is None or not 0 <= index < MAX_PLACES_PER_SESSION or not self._active[row, index]:
            raise KeyError(f"block {block} has no place {index}")
        place: Place = self._places[row, index]
        self._active[row, index] = False
        self._params[row, index] = 0.0
        self._is_polygon[row, index] = False
        self._cos_near[row, index] = 2.0
        self._places[row, index] = None
        self._shapes[row, index] = None
        self._boundaries[row, index] = None
        self._present[row, :, index] = False
        self._streak[row, :, index] = 0
        if not self._active[row].any():
            self._release(block, row)
        return place

    def _release(self, block: int, row: int) -> None:
        self._reset_row(row)
        del self._row_of[block]
        self._free_rows.append(row)

    def clear_block(self, block: int) -> None:
        """Forget a block's places and state (the session ended).  No-op without places."""
        row = self._row_of.get(block)
        if row is not None:
            self._release(block, row)

    def clear_slot(self, block: int, slot: int) -> None:
        """Forget a participant's state at every place (the participant left).

        Call it with ``GeoIndex.free_slot``: a location still in the index would count
        as a new fix."""
        row = self._row_of.get(block)
        if row is not None:
            self._present[row, slot] = False
            self._streak[row, slot] = 0
            self._seen[row, slot] = np.nan

    def places(self, block: int) -> dict[int, Place]:
        """The places of a block by index."""
        row = self._row_of.get(block)
        if row is None:
            return {}
        return {int(i): self._places[row, i] for i in np.flatnonzero(self._active[row])}

    def present(self, block: int) -> IntArray:
        """``(n, 2)`` array of ``slot, place``: who is at which place now (for the
        state a connecting client receives)."""
        row = self._row_of.get(block)
        if row is None:
            return np.zeros((0, 2), dtype=np.intp)
        return np.argwhere(self._present[row]).astype(np.intp)

    def __len__(self) -> int:
        """Blocks (sessions) with at least one entry."""
        return len(self._row_of)

    def statistics(self) -> PlaceStatistics:
        return PlaceStatistics(
            sessions=len(self._row_of),
            places=int(self._active.sum()),
            present=int(self._present.sum()),
        )

    # --- the tick -----------------------------------------------------------------------
    def tick(self, arrays: IndexArrays, now: float) -> PlaceEvents:
        """Apply every new fix of every block with places (Rules 1-4), vectorized.

        ``arrays``: :meth:`GeoIndex.arrays`, taken for this tick.  ``now``: the same
        monotonic time as the index's ``received_at``.  Cost: a few array operations
        over ``(blocks with places) x 50 x 20``, exact geometry only for the pairs
        near a place or with state, and shapely only for those near a polygon.
        """
        if arrays.lat.shape[1] != self.block_size:
            raise ValueError("the index's block size differs from this one's")
        rows = np.flatnonzero(self._block >= 0)
        if rows.size == 0:
            return _EMPTY_EVENTS
        blocks = self._block[rows]
        received = arrays.received_at[blocks]
        with np.errstate(invalid="ignore"):
            fresh = received > now - arrays.ttl_s
        seen = self._seen[rows]

        expired = _NO_EVENTS
        stale = ~fresh & ~np.isnan(seen)
        if stale.any():
            stale_i, stale_slots = np.nonzero(stale)
            stale_rows = rows[stale_i]
            was = self._present[stale_rows, stale_slots]  # (k, places)
            k, places = np.nonzero(was)
            expired = _events(blocks[stale_i[k]], stale_slots[k], places)
            self._present[stale_rows, stale_slots] = False
            self._streak[stale_rows, stale_slots] = 0
            self._seen[stale_rows, stale_slots] = np.nan

        new = fresh & (received != seen)  # a NaN ``seen`` differs from everything
        if not new.any():
            return PlaceEvents(_NO_EVENTS, _NO_EVENTS, expired) if expired.size else _EMPTY_EVENTS
        self._seen[rows] = np.where(new, received, self._seen[rows])
        units = unit_vectors(arrays.lat[blocks], arrays.lng[blocks])  # (rows, slots, 3)

        # Prefilter, (rows, slots, places): a new fix near a place (dot product of unit
        # vectors, one batched matmul), or a pair with state.  Every other pair stays
        # "not present, no streak".
        with np.errstate(invalid="ignore"):
            dots = units @ self._centre[rows]
            near = dots >= self._cos_near[rows][:, None, :]
        near |= self._present[rows]
        near |= self._streak[rows] > 0
        near &= new[:, :, None]
        pair_i, slot, place = np.nonzero(near)
        if pair_i.size == 0:
            return PlaceEvents(_NO_EVENTS, _NO_EVENTS, expired) if expired.size else _EMPTY_EVENTS
        # Flat indexes: one-dimensional gathers are the cheap ones.
        row = rows[pair_i]
        pair_block = blocks[pair_i]
        row_place = row * MAX_PLACES_PER_SESSION + place
        state_at = (row * self.block_size + slot) * MAX_PLACES_PER_SESSION + place
        present_flat = self._present.reshape(-1)
        streak_flat = self._streak.reshape(-1)
        params = self._params.reshape(-1, _PARAMS)[row_place]
        reach, depth, margin = params[:, _REACH], params[:, _DEPTH], params[:, _MARGIN]
        accuracy = arrays.accuracy[pair_block, slot]
        accuracy = np.where(np.isnan(accuracy), ASSUMED_ACCURACY_M, accuracy)
        need = ACCURACY_DEPTH_FRACTION * np.minimum(accuracy, depth)
        present = present_flat[state_at]
        # Great-circle distance from the dot product: good to millimetres at these
        # distances; a decision within a centimetre of its threshold is redone exactly.
        dense_at = (pair_i * self.block_size + slot) * MAX_PLACES_PER_SESSION + place
        chord2 = np.maximum(2.0 - 2.0 * dots.reshape(-1)[dense_at], 0.0)
        distance = 2.0 * EARTH_RADIUS_M * np.arcsin(np.minimum(np.sqrt(chord2) * 0.5, 1.0))
        threshold = np.where(present, reach + margin + need, reach - need)
        close = np.flatnonzero(np.abs(distance - threshold) < _REFINE_M)
        if close.size:
            distance[close] = great_circle_m(
                units[pair_i[close], slot[close]], self._centre[row[close], :, place[close]]
            )
        # A circle's signed distance; for a polygon an upper bound, exact enough to
        # decide every pair beyond ``reach + margin + need`` (outside, far enough).
        signed = reach - distance
        qualifies = np.where(present, signed <= -(margin + need), signed >= need)
        polygon = self._is_polygon.reshape(-1)[row_place]
        exact = np.flatnonzero(polygon & (distance <= reach + margin + need))
        if exact.size:
            # Frame coordinates of every fix in every place's frame: two more matmuls.
            east = (units @ self._east[rows]).reshape(-1)[dense_at[exact]]
            north = (units @ self._north[rows]).reshape(-1)[dense_at[exact]]
            x, y = project(east, north, dots.reshape(-1)[dense_at[exact]])
            qualifies[exact] = self._polygon_qualifies(
                x,
                y,
                row_place[exact],
                present[exact],
                need[exact],
                margin[exact],
                depth[exact],
            )

        streak = np.where(qualifies, streak_flat[state_at] + 1, 0)
        flip = streak >= FIXES_TO_CHANGE
        present_flat[state_at] = present ^ flip
        streak_flat[state_at] = np.where(flip, 0, streak)
        arrived = np.flatnonzero(flip & ~present)
        departed = np.flatnonzero(flip & present)
        return PlaceEvents(
            _events(pair_block[arrived], slot[arrived], place[arrived]),
            _events(pair_block[departed], slot[departed], place[departed]),
            expired,
        )

    def _polygon_qualifies(
        self,
        x: FloatArray,
        y: FloatArray,
        row_place: IntArray,
        present: BoolArray,
        need: FloatArray,
        margin: FloatArray,
        depth: FloatArray,
    ) -> BoolArray:
        """Rule 1 for pairs near a polygon, at ``x, y`` in each place's frame.

        A fix inside the largest inscribed circle is inside the polygon, at least
        ``depth - (distance to its centre)`` from the boundary: that decides a present
        participant (no departure) and a deep enough arrival in numpy.  The others go
        to shapely (prepared ``contains_xy`` and ``dwithin``).
        """
        inner = self._inner.reshape(-1, 2)[row_place]
        slack = depth - np.hypot(x - inner[:, 0], y - inner[:, 1])
        result = ~present & (slack >= need)
        undecided = np.flatnonzero(~result & ~(present & (slack >= 0.0)))
        if undecided.size == 0:
            return result
        x, y, present = x[undecided], y[undecided], present[undecided]
        row_place, need, margin = row_place[undecided], need[undecided], margin[undecided]
        shapes = self._shapes.reshape(-1)[row_place]
        inside = shapely.contains_xy(shapes, x, y)
        decided = np.zeros(x.shape, dtype=bool)
        # Arrival side: inside, and the boundary no nearer than ``need``.
        check = ~present & inside
        if check.any():
            boundaries = self._boundaries.reshape(-1)[row_place[check]]
            points = shapely.points(x[check], y[check])
            decided[check] = ~shapely.dwithin(boundaries, points, need[check])
        # Departure side: outside, and the polygon no nearer than ``margin + need``.
        check = present & ~inside
        if check.any():
            points = shapely.points(x[check], y[check])
            decided[check] = ~shapely.dwithin(shapes[check], points, margin[check] + need[check])
        result[undecided] = decided
        return result
