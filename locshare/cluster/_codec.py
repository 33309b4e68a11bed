"""Session events on the wire between nodes (no I/O, no clock read).

One bus message carries everything one node had to share for the sessions of one
channel bucket within one bus tick::

    {"o": origin_node, "e": [[session_id, kind, payload], ...]}

Kinds: ``L`` positions, ``J`` joined, ``X`` left/removed, ``E`` ended, ``P`` presence,
``Q`` state request, ``R`` state reply.  Positions cross with the *wall* time they were
received; the receiver turns it into its own monotonic time (``to_monotonic``), so
retention counts from the first receipt on every node.

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
    Presence,
    SessionEvent,
    StateReply,
    StateRequest,
)
from ..storage._model import ParticipantRecord

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
        return [sid, "P", [str(event.user_id), event.online]]
    if isinstance(event, StateRequest):
        return [sid, "Q", None]
    if isinstance(event, StateReply):
        return [
            sid,
            "R",
            [
                event.to,
                [_located_out(e) for e in event.located],
                [[str(user), node] for user, node in event.online],
            ],
        ]
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
        user, online = payload
        return Presence(origin, uuid.UUID(user), bool(online))
    if kind == "Q":
        return StateRequest(origin)
    if kind == "R":
        to, located, online = payload
        return StateReply(
            origin,
            str(to),
            tuple(_located_in(row, to_monotonic) for row in located),
            tuple((uuid.UUID(user), str(node)) for user, node in online),
        )
    raise ValueError(f"unknown kind {kind!r}")
