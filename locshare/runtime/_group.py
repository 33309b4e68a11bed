"""A session's places, route, convoy and statuses (issue 14): state its actor owns.

The actor is the only caller (Rule 1 of :mod:`._actor`): it hands this object the
events it applies and sends the messages these methods return.  Nothing here awaits,
reads a clock or touches a socket; the places' and the route's geometry live in the
hub's :class:`~locshare.geo.PlaceIndex` and :class:`~locshare.geo.RouteIndex` (one
vectorized tick for all sessions), of which this object uses the session's block.

Privacy: arrivals and the convoy are derived from positions and live here only while
the positions do (the indexes forget a participant's state when the location
expires, and this object follows their events); statuses are in memory only.  Places
and the route are session data, stored like names.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._clock import rfc3339
from ..errors import InvalidRequest
from ..geo import (
    BBox,
    Convoy,
    Place,
    PlaceIndex,
    Route,
    RouteIndex,
    bboxes,
    parse_place,
)
from ..storage._model import PlaceRecord, RouteRecord

log = logging.getLogger("locshare.session")

MEET: str = "meet"
# A circle's box is drawn through this many points on its rim (the union of boxes is
# taken by ``geo.bboxes`` over points, which handles the antimeridian).
_RIM_POINTS = 8


@dataclass(eq=False)
class PlaceEntry:
    record: PlaceRecord
    index: int  # the place's index in the session's row of the PlaceIndex
    place: Place
    message: dict[str, Any]  # ``place_added`` data


def place_message(record: PlaceRecord) -> dict[str, Any]:
    return {
        "place_id": str(record.id),
        "name": record.name,
        "kind": record.kind,
        "author": None if record.author is None else str(record.author),
        "geometry": record.geometry,
        "radius_m": record.radius_m,
        "created_at": rfc3339(record.created_at),
    }


def route_message(record: RouteRecord, route: Route) -> dict[str, Any]:
    return {
        "geometry": route.to_geojson(simplified=True),
        "points": route.points,
        "tolerance_m": round(route.simplify_tolerance_m, 2),
        "length_m": round(route.length_m, 1),
        "off_route_m": record.off_route_m,
    }


def _outline(place: Place) -> tuple[list[float], list[float]]:
    """Points whose box is the place's box: a polygon's vertices, a circle's rim."""
    if place.rings is not None:
        ring = place.rings[0]
        return ring[:, 1].tolist(), ring[:, 0].tolist()
    assert place.radius_m is not None
    angles = np.linspace(0.0, 2.0 * math.pi, _RIM_POINTS, endpoint=False)
    east = place.radius_m * np.sin(angles)
    north = place.radius_m * np.cos(angles)
    lat, lng = place.frame.inverse(east, north)
    return np.asarray(lat).tolist(), np.asarray(lng).tolist()


class Group:
    """See the module docstring.  ``block``: the session's block in both indexes."""

    def __init__(self, places: PlaceIndex, routes: RouteIndex, block: int) -> None:
        self._place_index = places
        self._route_index = routes
        self.block = block
        self.places: dict[uuid.UUID, PlaceEntry] = {}
        self.by_index: dict[int, uuid.UUID] = {}
        self.arrivals: dict[tuple[uuid.UUID, uuid.UUID], None] = {}  # (member, place)
        self.route_record: RouteRecord | None = None
        self.route: dict[str, Any] | None = None  # ``route_set`` data
        self.route_generation = 0  # RouteChanged events seen
        self.convoy: dict[str, Any] | None = None  # the last ``convoy`` data sent
        self.convoy_due: dict[str, Any] | None = None  # newer, waiting for the 1 s limit
        self.convoy_sent_at = -math.inf
        self.statuses: dict[uuid.UUID, dict[str, Any]] = {}  # ``status`` data, no user_id
        self._raw_statuses: dict[uuid.UUID, tuple[str, str | None, float | None]] = {}
        self._outline: tuple[list[float], list[float]] | None = None

    # --- places -------------------------------------------------------------------------
    def add_place(self, record: PlaceRecord) -> dict[str, Any] | None:
        """Add a stored place; its ``place_added`` data, or ``None`` if known already
        (or unreadable, or over the limit: logged)."""
        if record.id in self.places:
            return None
        try:
            place = _parse_record(record)
            index = self._place_index.add_place(self.block, place)
        except InvalidRequest as exc:
            log.warning(
                "a stored place was not loaded: %s",
                exc.message,
                extra={"session_id": str(record.session_id)},
            )
            return None
        message = place_message(record)
        self.places[record.id] = PlaceEntry(record, index, place, message)
        self.by_index[index] = record.id
        self._outline = None
        return message

    def remove_place(self, place_id: uuid.UUID) -> set[uuid.UUID] | None:
        """Remove a place; the members who were at it (``None``: no such place)."""
        entry = self.places.pop(place_id, None)
        if entry is None:
            return None
        self._place_index.remove_place(self.block, entry.index)
        del self.by_index[entry.index]
        self._outline = None
        members = {m for (m, p) in self.arrivals if p == place_id}
        for member in members:
            del self.arrivals[(member, place_id)]
        return members

    def arrive(self, member: uuid.UUID, place_id: uuid.UUID) -> bool:
        if place_id not in self.places or (member, place_id) in self.arrivals:
            return False
        self.arrivals[(member, place_id)] = None
        return True

    def depart(self, member: uuid.UUID, place_id: uuid.UUID) -> bool:
        return self.arrivals.pop((member, place_id), False) is None

    def at_meeting_point(self, member: uuid.UUID) -> bool:
        """Whether ``member`` is at a meeting point (kind ``meet``)."""
        return any(
            m == member and self.places[p].record.kind == MEET
            for (m, p) in self.arrivals
            if p in self.places
        )

    def place_id_at(self, index: int) -> uuid.UUID | None:
        return self.by_index.get(index)

    def outline(self) -> tuple[list[float], list[float]]:
        """Latitudes and longitudes whose bounding box covers every place."""
        if self._outline is None:
            lats: list[float] = []
            lngs: list[float] = []
            for entry in self.places.values():
                lat, lng = _outline(entry.place)
                lats += lat
                lngs += lng
            self._outline = (lats, lngs)
        return self._outline

    # --- members ------------------------------------------------------------------------
    def member_removed(self, member: uuid.UUID, slot: int) -> None:
        """A member left: forget their state (no event; ``participant_left`` says it)."""
        self._place_index.clear_slot(self.block, slot)
        self._route_index.clear_slot(self.block, slot)
        for key in [k for k in self.arrivals if k[0] == member]:
            del self.arrivals[key]
        self.statuses.pop(member, None)
        self._raw_statuses.pop(member, None)

    def set_status(
        self, member: uuid.UUID, status: str | None, text: str | None, at: float | None
    ) -> dict[str, Any]:
        """Set or clear (``status`` None) a status; the ``status`` message data."""
        data = {"status": status, "text": text, "at": None if at is None else rfc3339(at)}
        if status is None:
            self.statuses.pop(member, None)
            self._raw_statuses.pop(member, None)
        else:
            self.statuses[member] = data
            self._raw_statuses[member] = (status, text, at)
        return {"user_id": str(member), **data}

    def raw_statuses(self) -> list[tuple[uuid.UUID, str, str | None, float | None]]:
        """Every status as set (wall times), for another node taking the session up."""
        return [(m, s, t, at) for m, (s, t, at) in self._raw_statuses.items()]

    # --- the route and the convoy -----------------------------------------------------------
    def set_route(self, record: RouteRecord | None, route: Route | None) -> str | None:
        """Apply a loaded route: ``"route_set"``, ``"route_cleared"`` or ``None``
        (nothing changed)."""
        if record is None or route is None:
            had = self.route is not None
            self._route_index.clear_route(self.block)
            self.route_record = self.route = self.convoy = self.convoy_due = None
            return "route_cleared" if had else None
        if self.route_record == record:
            return None
        self._route_index.set_route(self.block, route, off_route_m=record.off_route_m)
        self.route_record = record
        self.route = route_message(record, route)
        self.convoy = self.convoy_due = None
        return "route_set"

    def convoy_message(self, convoy: Convoy, user_at: list[str | None]) -> dict[str, Any] | None:
        """The ``convoy`` data for a tick's convoy (slots named by ``user_at``), or
        ``None`` when it says what the last one said.  Metres and seconds rounded to
        whole numbers: a rider creeping forward by centimetres is no news."""
        order: list[str] = []
        gaps_m: list[float] = []
        gaps_s: list[float | None] = []
        keep = [i for i, slot in enumerate(convoy.order) if user_at[slot] is not None]
        for n, i in enumerate(keep):
            order.append(user_at[convoy.order[i]])  # type: ignore[arg-type]
            if n + 1 < len(keep):
                j = keep[n + 1]
                gaps_m.append(round(convoy.along_m[i] - convoy.along_m[j]))
                seconds = convoy.gaps_s[i] if j == i + 1 else None
                gaps_s.append(None if seconds is None else round(seconds))
        off_route = [
            {"user_id": user_at[slot], "distance_m": round(metres)}
            for slot, metres in convoy.off_route
            if user_at[slot] is not None
        ]
        message = {"order": order, "gaps_m": gaps_m, "gaps_s": gaps_s, "off_route": off_route}
        latest = self.convoy_due if self.convoy_due is not None else self.convoy
        if message == latest:
            return None
        return message

    def clear(self) -> None:
        """The session leaves this process: free its rows in both indexes."""
        self._place_index.clear_block(self.block)
        self._route_index.clear_route(self.block)

    # --- what a connecting client gets --------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "places": [entry.message for entry in self.places.values()],
            "arrivals": [{"user_id": str(m), "place_id": str(p)} for (m, p) in self.arrivals],
            "route": self.route,
            "convoy": self.convoy,
        }


def _parse_record(record: PlaceRecord) -> Place:
    spec: dict[str, Any] = {"name": record.name, "kind": record.kind, "geometry": record.geometry}
    if record.radius_m is not None:
        spec["radius_m"] = record.radius_m
    return parse_place(spec)


def union_box(box: BBox | None, lats: list[float], lngs: list[float]) -> BBox | None:
    """The box covering ``box`` (may cross the antimeridian) and the points."""
    if box is not None:
        width = (box.east - box.west) % 360.0
        span = [box.west + width * k / 4 for k in range(5)]
        lats = [*lats, box.south, box.north, box.south, box.north, box.south]
        lngs = [*lngs, *(((x + 180.0) % 360.0) - 180.0 for x in span)]
    if not lats:
        return None
    west, south, east, north, _count = bboxes(np.array([lats]), np.array([lngs]))
    return BBox(float(west[0]), float(south[0]), float(east[0]), float(north[0]))
