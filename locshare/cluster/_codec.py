"""Session events on the wire between nodes (no I/O, no clock read).

One bus message carries everything one node had to share for the sessions of one
channel bucket within one bus tick::

    {"o": origin_node, "e": [[session_id, kind, payload], ...]}

Kinds: ``L`` positions, ``J`` joined, ``X`` left/removed, ``E`` ended, ``P`` presence,
``Q`` state request, ``R`` state reply, ``U`` no longer hosted by the sender, ``A``
place added, ``D`` place removed, ``T`` route changed (read it from storage), ``S``
status.  Positions cross with the *wall* time they were received; the receiver turns
it into its own monotonic time (``to_monotonic``), so retention counts from the first
receipt on every node.

Privacy: payloads carry names and positions, which is why they only ever travel in
pub/sub messages (Redis keeps none of them); channel names and keys carry ids only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final

import orjson

from ..runtime._events import (
    Ended,
    Joined,
    Left,
    Located,
    LocatedBatch,
    PlaceAdded,
    PlaceRemoved,
    Presence,
    RouteChanged,
    SessionEvent,
    StateReply,
    StateRequest,
    StatusSet,
    Unhosted,
)
from ..storage._model import ParticipantRecord, PlaceRecord

KIND_LOCATED: Final = "L"


class MalformedBusMessage(ValueError):
    """A bus message this version cannot read (another version, or corruption)."""


def _located_out(event: Located) -> list[Any]:
    return [
        str(event.user_id),
        event.lat,
        event.lng,
        event.accuracy,
        event.heading,
        event.speed,
        event.client_ts,
        event.received_wall,
    ]


def _located_in(row: list[Any], to_monotonic: Callable[[float], float]) -> Located:
    user, lat, lng, accuracy, heading, speed, client_ts, wall = row
    return Located(
        uuid.UUID(user),
        float(lat),
        float(lng),
        accuracy,
        heading,
        speed,
        client_ts,
        to_monotonic(float(wall)),
        float(wall),
    )


def _status_out(event: StatusSet) -> list[Any]:
    return [str(event.user_id), event.status, event.text, event.at]


def _status_in(row: list[Any]) -> StatusSet:
    user, status, text, at = row
    return StatusSet(
        uuid.UUID(user),
        None if status is None else str(status),
        None if text is None else str(text),
        None if at is None else float(at),
    )


def encode_event(session_id: uuid.UUID, event: SessionEvent) -> list[Any]:
    """One ``[session_id, kind, payload]`` entry."""
    sid = str(session_id)
    if isinstance(event, LocatedBatch):
        return [sid, KIND_LOCATED, [_located_out(e) for e in event.updates]]
    if isinstance(event, Joined):
        p = event.participant
        return [
            sid,
            "J",
            [str(p.id), p.display_name, p.avatar_color, p.joined_at, p.last_seen],
        ]
    if isinstance(event, Left):
        return [sid, "X", [str(event.user_id), event.reason, event.close_code]]
    if isinstance(event, Ended):
        return [sid, "E", event.reason]
    if isinstance(event, Presence):
        return [sid, "P", [str(event.user_id), event.online, event.visible]]
    if isinstance(event, StateRequest):
        return [sid, "Q", None]
    if isinstance(event, Unhosted):
        return [sid, "U", None]
    if isinstance(event, StateReply):
        return [
            sid,
            "R",
            [
                event.to,
                [_located_out(e) for e in event.located],
                [[str(user), node, visible] for user, node, visible in event.online],
                [_status_out(s) for s in event.statuses],
            ],
        ]
    if isinstance(event, PlaceAdded):
        place = event.place
        author = None if place.author is None else str(place.author)
        return [
            sid,
            "A",
            [
                str(place.id),
                place.name,
                place.kind,
                author,
                place.geometry,
                place.radius_m,
                place.created_at,
            ],
        ]
    if isinstance(event, PlaceRemoved):
        return [sid, "D", str(event.place_id)]
    if isinstance(event, RouteChanged):
        return [sid, "T", None]
    if isinstance(event, StatusSet):
        return [sid, "S", _status_out(event)]
    raise TypeError(f"not a session event: {type(event).__name__}")


def encode_message(origin: str, entries: list[list[Any]]) -> bytes:
    return orjson.dumps({"o": origin, "e": entries})


def decode_message(
    data: bytes, to_monotonic: Callable[[float], float]
) -> tuple[str, list[tuple[uuid.UUID, SessionEvent]]]:
    """``(origin, [(session_id, event), ...])``; :class:`MalformedBusMessage` if unreadable."""
    try:
        message = orjson.loads(data)
        origin = message["o"]
        if not isinstance(origin, str):
            raise TypeError
        events: list[tuple[uuid.UUID, SessionEvent]] = []
        for sid, kind, payload in message["e"]:
            session_id = uuid.UUID(sid)
            events.append((session_id, _decode(origin, session_id, kind, payload, to_monotonic)))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MalformedBusMessage(f"unreadable bus message ({type(exc).__name__})") from None
    return origin, events


def _decode(
    origin: str,
    session_id: uuid.UUID,
    kind: str,
    payload: Any,
    to_monotonic: Callable[[float], float],
) -> SessionEvent:
    if kind == KIND_LOCATED:
        return LocatedBatch(origin, tuple(_located_in(row, to_monotonic) for row in payload))
    if kind == "J":
        user, name, color, joined_at, last_seen = payload
        return Joined(
            ParticipantRecord(
                uuid.UUID(user),
                session_id,
                str(name),
                str(color),
                float(joined_at),
                float(last_seen),
                True,
                None,
            )
        )
    if kind == "X":
        user, reason, code = payload
        return Left(uuid.UUID(user), str(reason), int(code))
    if kind == "E":
        return Ended(str(payload))
    if kind == "P":
        user, online, visible = payload
        return Presence(origin, uuid.UUID(user), bool(online), bool(visible))
    if kind == "Q":
        return StateRequest(origin)
    if kind == "U":
        return Unhosted(origin)
    if kind == "R":
        to, located, online, statuses = payload
        return StateReply(
            origin,
            str(to),
            tuple(_located_in(row, to_monotonic) for row in located),
            tuple((uuid.UUID(user), str(node), bool(visible)) for user, node, visible in online),
            tuple(_status_in(row) for row in statuses),
        )
    if kind == "A":
        place_id, name, place_kind, author, geometry, radius_m, created_at = payload
        if not isinstance(geometry, dict):
            raise TypeError
        return PlaceAdded(
            PlaceRecord(
                uuid.UUID(place_id),
                session_id,
                str(name),
                str(place_kind),
                None if author is None else uuid.UUID(author),
                geometry,
                None if radius_m is None else float(radius_m),
                float(created_at),
            )
        )
    if kind == "D":
        return PlaceRemoved(uuid.UUID(payload))
    if kind == "T":
        return RouteChanged()
    if kind == "S":
        return _status_in(payload)
    raise ValueError(f"unknown kind {kind!r}")
