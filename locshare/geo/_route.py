"""The convoy's route: parsing (GeoJSON, GPX), a simplified copy, and the convoy per tick.

A :class:`Route` is a line of up to :data:`ROUTE_MAX_POINTS` points, built by
:func:`parse_route_geojson` or :func:`parse_gpx` (both raise
:class:`~locshare.errors.InvalidRequest`, or :class:`~locshare.errors.PayloadTooLarge`
for an oversized GPX).  The server keeps the whole line; clients get
``Route.simplified_*``: ``shapely.simplify`` (Douglas-Peucker, original vertices) at
the smallest tolerance of 1 m x 1.5^k that leaves at most
:data:`ROUTE_SIMPLIFIED_MAX_POINTS` points; the tolerance is ``simplify_tolerance_m``.

Geometry: the route is drawn in its own azimuthal equidistant frame (``_projection``)
centred on its points, so it may cross the antimeridian or pass near a pole.  It may
reach :data:`ROUTE_MAX_RADIUS_M` from that centre (a 4,000 km trip), where the frame
stretches lengths across the radius by at most 1.7 %.  Distance *along* the route is
great-circle (each segment's length on the sphere, summed over the whole line).

Rule 1 (locating a fix).  Fixes are located on the *search line*: the route
simplified at :data:`SEARCH_TOLERANCE_M` (a GPS track with a point every few metres
has far fewer points on it; every point of the route is within 2 m of it), carrying
the whole line's along-distance at its vertices.  So ``off`` is exact to 2 m, and
``along`` to a few metres for a rider on the road (further off the road, the foot of
the perpendicular follows the simplified line's direction).
The fix's place is the nearest point of that line, except where the route passes the
same spot more than once (an out-and-back, a figure eight, laps).  Every *pass* (a run
of consecutive segments) within :data:`ROUTE_AMBIGUITY_M` of the nearest distance is a
candidate, at its own nearest point.  With a previous fix, the pass nearest in
along-distance to it wins (continuity), except that when the rider moved more than
:data:`ROUTE_AMBIGUITY_M` since its previous fix, a pass heading against that motion
loses to any other (the U-turn of an out-and-back on one road).  Without a previous
fix, the earliest pass wins (a convoy rides out before it rides back).
Search: the line is cut in chunks of :data:`ROUTE_CHUNK_SEGMENTS` segments.  A fix
that moved less than ``NEIGHBOUR_M / 2 - ROUTE_AMBIGUITY_M`` (125 m) from its previous
nearest point looks only at the chunks near its previous chunk (precomputed neighbour
lists: whatever lies within ``r`` of the fix lies within ``2 r`` of its previous
nearest point), for every session at once; other fixes (the first, the far) query
their route's STRtree with a box, widened until complete.  Exact distances are numpy.
Rule 2 (the convoy).  For every fresh participant of a session with a route: its
distance along the route and off it.  ``order``: furthest along first (the leader),
ties by slot; ``gaps_m[i]``: along-distance from ``order[i + 1]`` up to ``order[i]``;
``gaps_s[i]``: that gap at the follower's speed, from the index's ``speed`` when the
client sent one, else its speed along the route over at least
:data:`SPEED_BASELINE_S`, else ``None`` (also when slower than
:data:`MIN_SPEED_M_S`).  ``off_route``: participants farther than ``off_route_m``
from the line (they stay in ``order``: clients grey them out).
Rule 3 (state and retention).  Per ``(block, slot)``: the last fix seen (its
``received_at``, position, distance along and off, nearest point and chunk) and a
reference fix for the speed.  It is wiped when the location stops being fresh, the slot or block is
cleared, or the route changes: nothing derived from a location outlives it.

Sans-io: ``now`` is an argument; nothing here reads a clock or does I/O.  Building a
:class:`Route` costs tens of milliseconds for 20,000 points (simplification, the
tree): the runtime should build it off the event loop (``trio.to_thread.run_sync``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Final
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as DefusedElementTree
import numpy as np
import numpy.typing as npt
import shapely
from defusedxml import DefusedXmlException

from ..errors import InvalidRequest, PayloadTooLarge
from ._geojson import geometry_object
from ._geojson import positions as parse_positions
from ._index import IndexArrays
from ._projection import LocalFrame, great_circle_m, project, unit_vectors

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
Int32Array = npt.NDArray[np.int32]

ROUTE_MAX_POINTS: Final = 20_000
ROUTE_SIMPLIFIED_MAX_POINTS: Final = 2_000
ROUTE_MAX_RADIUS_M: Final = 2_000_000.0
SIMPLIFY_START_TOLERANCE_M: Final = 1.0
SIMPLIFY_TOLERANCE_STEP: Final = 1.5
SEARCH_TOLERANCE_M: Final = 2.0  # the search line's simplification (Rule 1)
GPX_MAX_BYTES: Final = 8 * 1024 * 1024  # 20,000 points with time, elevation and extensions fit
GPX_MAX_DEPTH: Final = 32  # GPX nests 4 deep (gpx/trk/trkseg/trkpt) plus extensions
OFF_ROUTE_DEFAULT_M: Final = 200.0
ROUTE_AMBIGUITY_M: Final = 25.0
ROUTE_CHUNK_SEGMENTS: Final = 4
# Chunks whose boxes are this close are each other's neighbours (Rule 1's search): a
# fix that moved less than NEIGHBOUR_M / 2 - ROUTE_AMBIGUITY_M (125 m) since its
# previous one is searched there.
NEIGHBOUR_M: Final = 300.0
FIRST_SEARCH_M: Final = 1_000.0  # the first box around a fix without history
SEARCH_GROWTH: Final = 8.0
SPEED_BASELINE_S: Final = 5.0
MIN_SPEED_M_S: Final = 0.5
_MAX_SEARCH_ROUNDS: Final = 12  # 1 km x 8^6 covers the globe; one more completes
_AGAINST_M: Final = 1e9  # a pass heading against the rider's motion loses to any other

_GPX_FIELD: Final = "gpx"


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A checked route (module docstring).

    ``lat``/``lng``: the whole line, read-only, consecutive repeated points dropped.
    The search line (Rule 1), in frame metres: ``chunks``, ``(n_chunks, 7, K)``, per
    segment of each chunk of K: start ``x, y``, ``dx, dy`` to its end, ``1 / length^2``
    (0 for the last chunk's padding), along-distance at the start and its increase;
    ``boxes``, the chunks' ``(n_chunks, 4)`` bounds ``x0, y0, x1, y1``;
    ``neighbour_start`` (``n_chunks + 1``) and ``neighbours``, int32, the chunks
    within :data:`NEIGHBOUR_M` of each chunk ``c`` being
    ``neighbours[neighbour_start[c]:neighbour_start[c + 1]]``; ``tree``, an STRtree
    of the boxes.  Memory: 16 bytes per point of the whole line, about 90 per point
    of the search line, and the simplified copy: 0.6 to 0.9 MB for 20,000 points.
    """

    lat: FloatArray = field(repr=False)
    lng: FloatArray = field(repr=False)
    length_m: float
    simplified_lat: FloatArray = field(repr=False)
    simplified_lng: FloatArray = field(repr=False)
    simplify_tolerance_m: float
    frame: LocalFrame = field(repr=False)
    chunks: FloatArray = field(repr=False)
    boxes: FloatArray = field(repr=False)
    neighbour_start: Int32Array = field(repr=False)
    neighbours: Int32Array = field(repr=False)
    tree: Any = field(repr=False)

    @property
    def points(self) -> int:
        return int(self.lat.size)

    @property
    def simplified_points(self) -> int:
        return int(self.simplified_lat.size)

    @classmethod
    def from_lat_lng(
        cls, lat: npt.ArrayLike, lng: npt.ArrayLike, *, field: str = "coordinates"
    ) -> Route:
        """Build a route from checked degrees (:func:`parse_route_geojson` and
        :func:`parse_gpx` call this).  Raises :class:`InvalidRequest` naming ``field``
        when there are more than :data:`ROUTE_MAX_POINTS` points, fewer than two
        distinct ones, or the route reaches too far."""
        lat_a = np.array(lat, dtype=np.float64).ravel()
        lng_a = np.array(lng, dtype=np.float64).ravel()
        if lat_a.size > ROUTE_MAX_POINTS:
            raise InvalidRequest(
                f"a route has at most {ROUTE_MAX_POINTS} points, not {lat_a.size}", field=field
            )
        keep = np.ones(lat_a.size, dtype=bool)
        keep[1:] = (lat_a[1:] != lat_a[:-1]) | (lng_a[1:] != lng_a[:-1])
        lat_a, lng_a = lat_a[keep], lng_a[keep]
        if lat_a.size < 2:
            raise InvalidRequest("a route needs at least two distinct points", field=field)
        units = unit_vectors(lat_a, lng_a)
        try:
            frame = LocalFrame.around(lat_a, lng_a)
        except ValueError:
            raise InvalidRequest("the route goes around the globe", field=field) from None
        radius = float(great_circle_m(units, frame.centre).max())
        if radius > ROUTE_MAX_RADIUS_M:
            raise InvalidRequest(
                f"the route reaches {radius / 1000:.0f} km from its centre; at most"
                f" {ROUTE_MAX_RADIUS_M / 1000:.0f} km (split it into legs)",
                field=field,
            )
        x, y = frame.forward_units(units)
        along = np.concatenate([[0.0], np.cumsum(great_circle_m(units[1:], units[:-1]))])
        line = shapely.linestrings(x, y)
        search = _kept(x, y, shapely.simplify(line, SEARCH_TOLERANCE_M, preserve_topology=False))
        chunks, boxes = _chunks(x[search], y[search], along[search])
        tree = shapely.STRtree(shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]))
        tolerance = SIMPLIFY_START_TOLERANCE_M
        while True:
            simple = shapely.simplify(line, tolerance, preserve_topology=False)
            if shapely.get_num_coordinates(simple) <= ROUTE_SIMPLIFIED_MAX_POINTS:
                break
            tolerance *= SIMPLIFY_TOLERANCE_STEP
        shown = _kept(x, y, simple)
        arrays = [lat_a, lng_a, lat_a[shown], lng_a[shown], chunks, boxes]
        for array in arrays:
            array.flags.writeable = False
        neighbour_start, neighbours = _neighbours(tree, boxes)
        neighbour_start.flags.writeable = False
        neighbours.flags.writeable = False
        return cls(
            lat_a,
            lng_a,
            float(along[-1]),
            arrays[2],
            arrays[3],
            tolerance,
            frame,
            chunks,
            boxes,
            neighbour_start,
            neighbours,
            tree,
        )

    def to_geojson(self, *, simplified: bool = True) -> dict[str, Any]:
        """A GeoJSON LineString: the simplified copy (for clients) or the whole line."""
        lat, lng = (
            (self.simplified_lat, self.simplified_lng) if simplified else (self.lat, self.lng)
        )
        return {"type": "LineString", "coordinates": np.stack([lng, lat], axis=1).tolist()}

    def locate(self, lat: npt.ArrayLike, lng: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Distance along the route and off it, in metres, of points without history
        (Rule 1: the earliest of equally near passes)."""
        x, y = self.frame.forward(lat, lng)
        x, y = np.atleast_1d(x), np.atleast_1d(y)
        n = x.size
        found = _locate(
            _Lines.of([self]),
            np.zeros(n, dtype=np.intp),
            x,
            y,
            np.full(n, np.nan),
            np.full(n, -1, dtype=np.intp),
            np.full(n, FIRST_SEARCH_M),
            np.full(n, np.nan),
            np.full(n, np.nan),
        )
        return found.along, found.off


def _kept(x: FloatArray, y: FloatArray, simple: Any) -> IntArray:
    """Indices of the vertices a Douglas-Peucker simplification kept.

    It keeps original vertices, in order: matching them back exactly gives clients
    the uploaded coordinates, not a round trip through the projection.
    """
    kept_xy = shapely.get_coordinates(simple)
    kept = np.empty(kept_xy.shape[0], dtype=np.intp)
    i = 0
    for j, (kx, ky) in enumerate(kept_xy.tolist()):
        while x[i] != kx or y[i] != ky:
            i += 1
        kept[j] = i
    return kept


def _chunks(x: FloatArray, y: FloatArray, along: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The search line's segments in chunks of K, ``(n_chunks, 7, K)`` (see
    :class:`Route`), and the chunks' bounds ``(n_chunks, 4)``."""
    k = ROUTE_CHUNK_SEGMENTS
    segments = x.size - 1
    n_chunks = -(-segments // k)
    start = np.minimum(np.arange(n_chunks * k), segments).reshape(n_chunks, k)
    end = np.minimum(start + 1, segments)
    dx, dy = x[end] - x[start], y[end] - y[start]
    length2 = dx * dx + dy * dy
    with np.errstate(divide="ignore"):
        inverse = np.where(length2 > 0.0, 1.0 / length2, 0.0)
    chunks = np.stack(
        [x[start], y[start], dx, dy, inverse, along[start], along[end] - along[start]], axis=1
    )
    xs = np.concatenate([x[start], x[end]], axis=1)
    ys = np.concatenate([y[start], y[end]], axis=1)
    boxes = np.stack([xs.min(axis=1), ys.min(axis=1), xs.max(axis=1), ys.max(axis=1)], axis=1)
    return np.ascontiguousarray(chunks), boxes


def _neighbours(tree: Any, boxes: FloatArray) -> tuple[Int32Array, Int32Array]:
    """Each chunk's neighbours (chunks whose boxes are within NEIGHBOUR_M), as CSR."""
    d = NEIGHBOUR_M
    grown = shapely.box(boxes[:, 0] - d, boxes[:, 1] - d, boxes[:, 2] + d, boxes[:, 3] + d)
    chunk, other = tree.query(grown)
    order = np.lexsort((other, chunk))
    counts = np.bincount(chunk, minlength=boxes.shape[0])
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return start, other[order].astype(np.int32)


# --- parsing ------------------------------------------------------------------------------
def parse_route_geojson(data: object) -> Route:
    """A route from GeoJSON: a ``LineString``, or a ``Feature`` whose geometry is one.

    2 to 20,000 positions ``[lng, lat(, alt)]``.  Raises :class:`InvalidRequest`
    naming the field.
    """
    geometry = geometry_object(data, "route")
    if geometry["type"] == "Feature":
        geometry = geometry_object(geometry.get("geometry"), "route.geometry")
    if geometry["type"] != "LineString":
        raise InvalidRequest("'route' must be a GeoJSON LineString", field="route")
    field_name = "route.coordinates"
    points = parse_positions(
        geometry.get("coordinates"), field_name, min_count=2, max_count=ROUTE_MAX_POINTS
    )
    return Route.from_lat_lng(points[:, 1], points[:, 0], field=field_name)


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _gpx_point(attributes: dict[str, str], count: int) -> tuple[float, float]:
    try:
        lat = float(attributes["lat"])
        lng = float(attributes["lon"])
    except (KeyError, ValueError):
        raise InvalidRequest(
            f"GPX point {count} needs numeric 'lat' and 'lon' attributes", field=_GPX_FIELD
        ) from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
        raise InvalidRequest(f"GPX point {count} is outside the globe", field=_GPX_FIELD)
    return lat, lng


def parse_gpx(raw: bytes) -> Route:
    """A route from a GPX document: its track points (``trk/trkseg/trkpt``, every
    track and segment in document order), or its route points (``rte/rtept``) when it
    has no track.  GPX 1.0, 1.1 or no namespace.

    Refused (:class:`InvalidRequest`, field ``gpx``, unless stated): more than
    :data:`GPX_MAX_BYTES` (:class:`PayloadTooLarge`, before parsing); a DTD, entity
    declarations or external references (``defusedxml``: no XML bomb, no external
    entity); anything not well-formed XML (binary garbage); a root that is not
    ``gpx``; nesting deeper than :data:`GPX_MAX_DEPTH`; more than
    :data:`ROUTE_MAX_POINTS` points (parsing stops there).  Parsing streams and drops
    every element once read, so memory stays bounded by the points kept.
    """
    if len(raw) > GPX_MAX_BYTES:
        raise PayloadTooLarge(
            f"a GPX file may be at most {GPX_MAX_BYTES // (1024 * 1024)} MiB", field=_GPX_FIELD
        )
    track: list[tuple[float, float]] = []
    route: list[tuple[float, float]] = []
    stack: list[Any] = []
    try:
        events = DefusedElementTree.iterparse(
            io.BytesIO(raw),
            events=("start", "end"),
            forbid_dtd=True,
            forbid_entities=True,
            forbid_external=True,
        )
        for event, element in events:
            if event == "start":
                if not stack and _local(element.tag) != "gpx":
                    raise InvalidRequest(
                        "the document is not GPX (no <gpx> root)", field=_GPX_FIELD
                    )
                stack.append(element)
                if len(stack) > GPX_MAX_DEPTH:
                    raise InvalidRequest(
                        f"GPX nested deeper than {GPX_MAX_DEPTH} elements", field=_GPX_FIELD
                    )
                continue
            stack.pop()
            name = _local(element.tag)
            if name in ("trkpt", "rtept"):
                points = track if name == "trkpt" else route
                if len(points) >= ROUTE_MAX_POINTS:
                    raise InvalidRequest(
                        f"a route has at most {ROUTE_MAX_POINTS} points", field=_GPX_FIELD
                    )
                points.append(_gpx_point(element.attrib, len(points)))
            # Drop what was read: memory stays bounded whatever the document's size.
            element.clear()
            if stack:
                stack[-1].remove(element)
    except DefusedXmlException:
        raise InvalidRequest(
            "GPX with a DTD, entity declarations or external references is refused",
            field=_GPX_FIELD,
        ) from None
    except ParseError as exc:
        raise InvalidRequest(f"not a GPX document: {exc}", field=_GPX_FIELD) from None
    points = track or route
    if not points:
        raise InvalidRequest("the GPX document has no track or route points", field=_GPX_FIELD)
    array = np.asarray(points, dtype=np.float64)
    return Route.from_lat_lng(array[:, 0], array[:, 1], field=_GPX_FIELD)


# --- locating fixes (Rule 1), vectorized over routes ----------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class _Lines:
    """The search lines of several routes, concatenated, so one array operation
    serves every session: route ``i``'s chunks start at ``offsets[i]``; the
    neighbour lists hold global chunk numbers."""

    routes: list[Route]
    offsets: IntArray
    chunks: FloatArray
    boxes: FloatArray
    neighbour_start: IntArray
    neighbours: IntArray

    @classmethod
    def of(cls, routes: list[Route]) -> _Lines:
        sizes = np.array([r.chunks.shape[0] for r in routes], dtype=np.intp)
        offsets = np.cumsum(sizes) - sizes
        lists = np.array([r.neighbours.size for r in routes], dtype=np.intp)
        list_offsets = np.cumsum(lists) - lists
        starts = [r.neighbour_start[:-1] + o for r, o in zip(routes, list_offsets, strict=True)]
        starts.append(np.array([lists.sum()]))
        return cls(
            routes,
            offsets,
            np.concatenate([r.chunks for r in routes]),
            np.concatenate([r.boxes for r in routes]),
            np.concatenate(starts).astype(np.intp),
            np.concatenate([r.neighbours + o for r, o in zip(routes, offsets, strict=True)]).astype(
                np.intp
            ),
        )


@dataclass(frozen=True, slots=True)
class _Located:
    along: FloatArray
    off: FloatArray
    qx: FloatArray
    qy: FloatArray
    chunk: IntArray  # the chosen point's chunk, local to its route


def _first_per_group(group: IntArray, value: FloatArray) -> tuple[IntArray, IntArray]:
    """For ``group`` sorted ascending: each group's id and the index of its smallest
    ``value`` (the first one on ties)."""
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    smallest = np.minimum.reduceat(value, starts)
    counts = np.diff(np.r_[starts, group.size])
    hits = np.flatnonzero(value == np.repeat(smallest, counts))
    firsts = hits[np.r_[True, group[hits][1:] != group[hits][:-1]]]
    return group[starts], firsts


def _candidates(
    lines: _Lines,
    owner: IntArray,
    px: FloatArray,
    py: FloatArray,
    r: FloatArray,
    chunk: IntArray,
) -> tuple[IntArray, IntArray]:
    """Every chunk whose box meets the box ``[p - r, p + r]`` of each fix, as pairs
    ``(fix, global chunk)`` sorted by fix, then chunk.  ``chunk``: the fix's previous
    chunk (local; -1: none): its neighbours are complete when ``2 r <= NEIGHBOUR_M``,
    and are read for every such fix at once; the other fixes query their route's
    tree (``owner``, the route of each fix, sorted)."""
    fix_parts: list[IntArray] = []
    chunk_parts: list[IntArray] = []
    near = np.flatnonzero((chunk >= 0) & (2.0 * r <= NEIGHBOUR_M))
    far_mask = np.ones(owner.size, dtype=bool)
    if near.size:
        far_mask[near] = False
        own = lines.offsets[owner[near]] + chunk[near]
        first = lines.neighbour_start[own]
        count = lines.neighbour_start[own + 1] - first
        ends = np.cumsum(count)
        which = np.repeat(near, count)
        found = lines.neighbours[np.arange(ends[-1]) + np.repeat(first - (ends - count), count)]
        box = lines.boxes[found]
        x, y, rr = px[which], py[which], r[which]
        hit = (box[:, 0] <= x + rr) & (box[:, 2] >= x - rr)
        hit &= (box[:, 1] <= y + rr) & (box[:, 3] >= y - rr)
        fix_parts.append(which[hit])
        chunk_parts.append(found[hit])
    far = np.flatnonzero(far_mask)
    if far.size:
        x, y, rr = px[far], py[far], r[far]
        boxes = shapely.box(x - rr, y - rr, x + rr, y + rr)
        groups = far_owner = owner[far]
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        ends = np.r_[starts[1:], far.size]
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
            route = int(far_owner[lo])
            which, found = lines.routes[route].tree.query(boxes[lo:hi])
            order = np.lexsort((found, which))  # (fix, chunk): passes are runs (_locate)
            which, found = which[order], found[order]
            fix_parts.append(far[lo + which])
            chunk_parts.append(found + lines.offsets[route])
    if not fix_parts:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    pair_fix = np.concatenate(fix_parts)
    pair_chunk = np.concatenate(chunk_parts)
    # Each fix came from one path, in chunk order: a stable sort by fix keeps that.
    order = np.argsort(pair_fix, kind="stable")
    return pair_fix[order], pair_chunk[order]


def _locate(
    lines: _Lines,
    route_of: IntArray,
    x: FloatArray,
    y: FloatArray,
    previous: FloatArray,
    previous_chunk: IntArray,
    radius: FloatArray,
    motion_x: FloatArray,
    motion_y: FloatArray,
) -> _Located:
    """Rule 1 for fixes ``(x, y)`` in the frames of ``lines.routes[route_of]``
    (``route_of`` sorted ascending).  ``previous``: each fix's previous along-distance
    (NaN: none) and ``previous_chunk`` its chunk (-1: none); ``radius``: the first
    search box's half-width, at least the distance to the previous nearest point
    plus :data:`ROUTE_AMBIGUITY_M`; ``motion_x, motion_y``: the rider's recent
    displacement in the frame (NaN: unknown or too small to tell)."""
    n = x.size
    along = np.full(n, np.nan)
    off = np.full(n, np.nan)
    qx = np.full(n, np.nan)
    qy = np.full(n, np.nan)
    q_chunk = np.full(n, -1, dtype=np.intp)
    radius = radius.copy()
    hint = previous_chunk.copy()
    pending = np.arange(n)
    k = ROUTE_CHUNK_SEGMENTS
    for _ in range(_MAX_SEARCH_ROUNDS):
        if pending.size == 0:
            break
        px, py, r = x[pending], y[pending], radius[pending]
        pair_fix, pair_chunk = _candidates(lines, route_of[pending], px, py, r, hint[pending])
        hint[pending] = -1  # later rounds widen the box: the tree
        if pair_fix.size == 0:
            radius[pending] *= SEARCH_GROWTH
            continue
        # Every segment of every candidate chunk: (pairs, K), contiguous rows.
        data = lines.chunks[pair_chunk]
        ax, ay, dx, dy, inverse, a0, da = (data[:, i] for i in range(7))
        fx = px[pair_fix][:, None] - ax
        fy = py[pair_fix][:, None] - ay
        t = fx * dx
        t += fy * dy
        t *= inverse
        np.clip(t, 0.0, 1.0, out=t)
        fx -= t * dx
        fy -= t * dy
        fx *= fx
        fy *= fy
        fx += fy
        dist = np.sqrt(fx, out=fx).ravel()
        seg_along = (a0 + t * da).ravel()

        pair_starts = np.flatnonzero(np.r_[True, pair_fix[1:] != pair_fix[:-1]])
        fixes = pair_fix[pair_starts]
        dmin = np.full(pending.size, np.inf)
        dmin[fixes] = np.minimum.reduceat(dist, pair_starts * k)
        reach = dmin + ROUTE_AMBIGUITY_M
        complete = reach <= r
        threshold = np.where(complete, reach, -1.0)[pair_fix]
        keep = np.flatnonzero(dist.reshape(-1, k) <= threshold[:, None])
        if keep.size:
            # Kept segments in (fix, segment) order: a run of consecutive segments is
            # one pass of the route near the fix.
            pair = keep // k
            kf, kd, ka = pair_fix[pair], dist[keep], seg_along[keep]
            segment = pair_chunk[pair] * k + keep % k
            first = np.r_[True, (kf[1:] != kf[:-1]) | (segment[1:] != segment[:-1] + 1)]
            starts = np.flatnonzero(first)
            pass_fix = kf[starts]
            lo = np.minimum.reduceat(ka, starts)
            hi = np.maximum.reduceat(ka, starts)
            _, nearest_in_pass = _first_per_group(np.cumsum(first) - 1, kd)
            # The pass nearest in along to the previous fix (continuity), among the
            # passes heading the way the rider moves when it moved; else the earliest.
            prev = previous[pending][pass_fix]
            gap = np.maximum(np.maximum(lo - prev, prev - hi), 0.0)
            rep = keep[nearest_in_pass]
            rep_pair, rep_seg = np.divmod(rep, k)
            mx, my = motion_x[pending][pass_fix], motion_y[pending][pass_fix]
            heading = mx * dx[rep_pair, rep_seg] + my * dy[rep_pair, rep_seg]
            against = heading < 0.0  # NaN (no motion known) compares False
            cost = np.where(np.isnan(prev), lo, gap + np.where(against, _AGAINST_M, 0.0))
            chosen_fix, chosen_pass = _first_per_group(pass_fix, cost)
            target = pending[chosen_fix]
            best = keep[nearest_in_pass[chosen_pass]]  # index into the flattened (pairs, K)
            pair, seg = np.divmod(best, k)
            along[target] = seg_along[best]
            off[target] = dist[best]
            tt = t[pair, seg]
            qx[target] = ax[pair, seg] + tt * dx[pair, seg]
            qy[target] = ay[pair, seg] + tt * dy[pair, seg]
            q_chunk[target] = pair_chunk[pair] - lines.offsets[route_of[target]]
        incomplete = ~complete
        grown = np.where(np.isfinite(dmin), reach, r * SEARCH_GROWTH)
        radius[pending[incomplete]] = grown[incomplete]
        pending = pending[incomplete]
    if pending.size:  # unreachable: the rounds cover the globe
        raise AssertionError("route search did not converge")
    return _Located(along, off, qx, qy, q_chunk)


# --- the convoy (Rule 2) ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Convoy:
    """One session's convoy (Rule 2).  Slots, leader first; metres; seconds."""

    block: int
    order: tuple[int, ...]
    along_m: tuple[float, ...]  # of each participant in ``order``
    gaps_m: tuple[float, ...]  # ``len(order) - 1``
    gaps_s: tuple[float | None, ...]
    off_route: tuple[tuple[int, float], ...]  # (slot, metres), by slot

    def to_json(self) -> dict[str, Any]:
        return {
            "order": list(self.order),
            "along_m": list(self.along_m),
            "gaps_m": list(self.gaps_m),
            "gaps_s": list(self.gaps_s),
            "off_route": [list(pair) for pair in self.off_route],
        }


@dataclass(frozen=True, slots=True)
class RouteStatistics:
    sessions: int  # blocks with a route
    points: int  # full-route points kept, all sessions


class RouteIndex:
    """The route of every session that has one, and each participant's position on it
    (module docstring: Rules 1-3).

    Storage like :class:`PlaceIndex`: a row per block with a route (free list,
    doubling), state arrays ``(rows, block_size)``.  Not thread-safe; owned by the
    geo tick's task.
    """

    def __init__(
        self,
        *,
        block_size: int = 50,
        off_route_m: float = OFF_ROUTE_DEFAULT_M,
        initial_rows: int = 16,
    ) -> None:
        if block_size < 1 or initial_rows < 1:
            raise ValueError("block_size and initial_rows must be positive")
        self.block_size = block_size
        self.off_route_m = off_route_m
        self._row_of: dict[int, int] = {}
        self._routes: list[Route | None] = []
        self._free_rows: list[int] = []
        self._capacity = 0
        self._block = np.zeros(0, dtype=np.intp)
        self._dirty = np.zeros(0, dtype=bool)
        self._off_route = np.zeros(0)  # per row: its off-route threshold (metres)
        # Per row, the route's frame as columns east, north, centre: a fix's unit
        # vector times it gives its frame coordinates' ingredients (one matmul).
        self._frame = np.zeros((0, 3, 3))
        self._state = np.zeros((0, block_size, len(_STATE)))  # NaN: none
        # Every route's search line, concatenated (rebuilt at the first tick after a
        # route changes: a copy of the search lines, ~65 bytes per search point).
        self._lines: _Lines | None = None
        self._line_of = np.zeros(0, dtype=np.intp)  # row -> route number in _lines
        self._grow(initial_rows)

    def _grow(self, rows: int) -> None:
        old = self._capacity
        extra = rows - old
        self._block = np.concatenate([self._block, np.full(extra, -1, dtype=np.intp)])
        self._dirty = np.concatenate([self._dirty, np.zeros(extra, dtype=bool)])
        self._off_route = np.concatenate([self._off_route, np.full(extra, self.off_route_m)])
        self._frame = np.concatenate([self._frame, np.zeros((extra, 3, 3))])
        pad = np.full((extra, self.block_size, len(_STATE)), np.nan)
        self._state = np.concatenate([self._state, pad])
        self._routes.extend([None] * extra)
        self._line_of = np.concatenate([self._line_of, np.full(extra, -1, dtype=np.intp)])
        self._free_rows.extend(range(rows - 1, old - 1, -1))
        self._capacity = rows

    # --- routes -------------------------------------------------------------------------
    def set_route(self, block: int, route: Route, *, off_route_m: float | None = None) -> None:
        """Give a block a route, replacing any; its convoy state starts afresh and the
        next tick reports its convoy.  ``off_route_m``: this block's off-route threshold
        (default: the index's)."""
        row = self._row_of.get(block)
        if row is None:
            if not self._free_rows:
                self._grow(self._capacity * 2)
            row = self._free_rows.pop()
            self._row_of[block] = row
            self._block[row] = block
        self._routes[row] = route
        self._off_route[row] = self.off_route_m if off_route_m is None else off_route_m
        frame = route.frame
        self._frame[row] = np.stack([frame.east, frame.north, frame.centre], axis=1)
        self._state[row] = np.nan
        self._dirty[row] = True
        self._lines = None

    def route(self, block: int) -> Route | None:
        row = self._row_of.get(block)
        return None if row is None else self._routes[row]

    def clear_route(self, block: int) -> Route | None:
        """Remove a block's route and state; returns the route (``None`` if none).
        Also what to call when the session ends."""
        row = self._row_of.pop(block, None)
        if row is None:
            return None
        route = self._routes[row]
        self._routes[row] = None
        self._block[row] = -1
        self._dirty[row] = False
        self._state[row] = np.nan
        self._free_rows.append(row)
        self._lines = None
        return route

    clear_block = clear_route

    def clear_slot(self, block: int, slot: int) -> None:
        """Forget a participant's state (the participant left).  Call it with
        ``GeoIndex.free_slot``: a location still in the index would count as a new fix."""
        row = self._row_of.get(block)
        if row is not None:
            self._state[row, slot] = np.nan
            self._dirty[row] = True

    def __len__(self) -> int:
        """Blocks (sessions) with at least one entry."""
        return len(self._row_of)

    def statistics(self) -> RouteStatistics:
        points = sum(r.points for r in self._routes if r is not None)
        return RouteStatistics(sessions=len(self._row_of), points=points)

    # --- the tick -----------------------------------------------------------------------
    def tick(self, arrays: IndexArrays, now: float) -> list[Convoy]:
        """Locate every new fix of every block with a route (Rule 1, vectorized over
        all of them), and return the convoy of each block whose inputs changed (a new
        fix, an expired one, a cleared slot, a new route), in block order.

        ``arrays``: :meth:`GeoIndex.arrays`, taken for this tick; ``now``: the same
        monotonic time as the index's ``received_at``."""
        if arrays.lat.shape[1] != self.block_size:
            raise ValueError("the index's block size differs from this one's")
        rows = np.flatnonzero(self._block >= 0)
        if rows.size == 0:
            return []
        blocks = self._block[rows]
        received = arrays.received_at[blocks]
        with np.errstate(invalid="ignore"):
            fresh = received > now - arrays.ttl_s
        seen = self._state[rows, :, _SEEN]
        stale = ~fresh & ~np.isnan(seen)
        if stale.any():
            stale_i, stale_slots = np.nonzero(stale)
            self._state[rows[stale_i], stale_slots] = np.nan
        new = fresh & (received != seen)
        changed = new.any(axis=1) | stale.any(axis=1) | self._dirty[rows]
        if new.any():
            self._locate_new(rows, blocks, new, received, arrays)
        self._dirty[rows] = False
        if not changed.any():
            return []
        changed_blocks = blocks[changed]
        return self._convoys(rows[changed], changed_blocks, arrays.speed[changed_blocks])

    def _locate_new(
        self,
        rows: IntArray,
        blocks: IntArray,
        new: npt.NDArray[np.bool_],
        received: FloatArray,
        arrays: IndexArrays,
    ) -> None:
        fix_i, slot = np.nonzero(new)  # rows ascending: grouped by route
        row = rows[fix_i]
        at = received[fix_i, slot]
        last = self._state[row, slot]  # (fixes, fields)
        units = unit_vectors(arrays.lat[blocks], arrays.lng[blocks])  # (rows, slots, 3)
        components = (units @ self._frame[rows])[fix_i, slot]  # (fixes, 3)
        x, y = project(components[:, 0], components[:, 1], components[:, 2])
        radius = np.hypot(x - last[:, _QX], y - last[:, _QY]) + ROUTE_AMBIGUITY_M
        radius = np.where(np.isnan(radius), FIRST_SEARCH_M, radius)
        last_chunk = np.where(np.isnan(last[:, _CHUNK]), -1, last[:, _CHUNK]).astype(np.intp)
        lines = self._search_lines()
        # Motion since the previous fix, when it is more than GPS wander: it tells which
        # way a rider goes on a road driven both ways (the U-turn of an out-and-back).
        mx, my = x - last[:, _X], y - last[:, _Y]
        small = ~(np.hypot(mx, my) >= ROUTE_AMBIGUITY_M)
        mx[small] = np.nan
        my[small] = np.nan
        found = _locate(
            lines, self._line_of[row], x, y, last[:, _ALONG], last_chunk, radius, mx, my
        )
        # The speed's reference fix: set on the first fix, moved on once SPEED_BASELINE_S
        # have passed (a baseline of one second would be mostly GPS jitter).
        ref_along, ref_at = last[:, _REF_ALONG], last[:, _REF_AT]
        elapsed = at - ref_at
        due = elapsed >= SPEED_BASELINE_S
        with np.errstate(invalid="ignore", divide="ignore"):
            speed = np.where(due, (found.along - ref_along) / elapsed, last[:, _SPEED])
        reset = np.isnan(ref_at) | due
        update = np.empty_like(last)
        update[:, _SEEN] = at
        update[:, _ALONG] = found.along
        update[:, _OFF] = found.off
        update[:, _QX] = found.qx
        update[:, _QY] = found.qy
        update[:, _CHUNK] = found.chunk
        update[:, _REF_ALONG] = np.where(reset, found.along, ref_along)
        update[:, _REF_AT] = np.where(reset, at, ref_at)
        update[:, _X] = x
        update[:, _Y] = y
        update[:, _SPEED] = speed
        self._state[row, slot] = update

    def _search_lines(self) -> _Lines:
        if self._lines is None:
            rows = np.flatnonzero(self._block >= 0)
            routes: list[Route] = [self._routes[r] for r in rows.tolist()]  # type: ignore[misc]
            self._lines = _Lines.of(routes)
            self._line_of[:] = -1
            self._line_of[rows] = np.arange(rows.size)
        return self._lines

    def _convoys(
        self, rows: IntArray, blocks: IntArray, reported_speed: FloatArray
    ) -> list[Convoy]:
        """Rule 2 for ``rows``; ``reported_speed``: the index's ``speed`` of their
        blocks, ``(rows, block_size)``."""
        state = self._state[rows]
        along = state[:, :, _ALONG]  # NaN: no fresh fix
        order = np.argsort(-along, axis=1, kind="stable")  # NaN sorts last
        counts = (~np.isnan(along)).sum(axis=1)
        ranked = np.take_along_axis(along, order, axis=1)
        gaps = ranked[:, :-1] - ranked[:, 1:]
        followers = order[:, 1:]
        reported = np.take_along_axis(reported_speed, followers, axis=1)
        estimated = np.take_along_axis(state[:, :, _SPEED], followers, axis=1)
        speed = np.where(np.isnan(reported), estimated, reported)
        with np.errstate(invalid="ignore", divide="ignore"):
            gaps_s = np.where(speed >= MIN_SPEED_M_S, gaps / speed, np.nan)
        off = state[:, :, _OFF]
        with np.errstate(invalid="ignore"):
            far_i, far_slot = np.nonzero(off > self._off_route[rows][:, None])
        far_off = off[far_i, far_slot].tolist()
        off_route: list[list[tuple[int, float]]] = [[] for _ in range(rows.size)]
        for i, far_s, metres in zip(far_i.tolist(), far_slot.tolist(), far_off, strict=True):
            off_route[i].append((far_s, metres))
        # One conversion of each array to lists, then slicing: Python per element only
        # where a NaN must become None.
        order_l, ranked_l, gaps_l = order.tolist(), ranked.tolist(), gaps.tolist()
        seconds = gaps_s.astype(object)
        seconds[np.isnan(gaps_s)] = None
        gaps_s_l = seconds.tolist()
        convoys = []
        for i, (block, n) in enumerate(zip(blocks.tolist(), counts.tolist(), strict=True)):
            m = max(n - 1, 0)
            convoys.append(
                Convoy(
                    block=block,
                    order=tuple(order_l[i][:n]),
                    along_m=tuple(ranked_l[i][:n]),
                    gaps_m=tuple(gaps_l[i][:m]),
                    gaps_s=tuple(gaps_s_l[i][:m]),
                    off_route=tuple(off_route[i]),
                )
            )
        return convoys

    def convoy(self, block: int) -> Convoy | None:
        """The block's convoy as of the last tick (for a connecting client); ``None``
        without a route.  It reads only this state, so ``gaps_s`` uses the estimated
        speeds, not the index's ``speed`` field."""
        row = self._row_of.get(block)
        if row is None:
            return None
        rows = np.array([row], dtype=np.intp)
        return self._convoys(rows, np.array([block]), np.full((1, self.block_size), np.nan))[0]


# Per (row, slot): the last fix's received_at, its along and off distances, nearest
# point (frame metres) and its chunk, its position (frame metres), the speed's reference
# fix (along, time) and the last estimated speed.  Float64, NaN: none.
_STATE: Final = (
    "seen",
    "along",
    "off",
    "qx",
    "qy",
    "chunk",
    "x",
    "y",
    "ref_along",
    "ref_at",
    "speed",
)
_SEEN, _ALONG, _OFF, _QX, _QY, _CHUNK, _X, _Y, _REF_ALONG, _REF_AT, _SPEED = range(len(_STATE))
