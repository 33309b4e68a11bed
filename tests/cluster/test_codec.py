"""The bus codec: every session event survives the trip between nodes, and a message
this version cannot read is refused as a whole (no partial application)."""

from __future__ import annotations

import uuid

import orjson
import pytest

from locshare.cluster._codec import (
    MalformedBusMessage,
    decode_message,
    encode_event,
    encode_message,
)
from locshare.runtime._events import (
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
from locshare.storage._model import ParticipantRecord, PlaceRecord

SID = uuid.uuid4()
USER = uuid.uuid4()


def located(wall: float) -> Located:
    return Located(USER, 45.5, 7.25, 5.0, 90.0, 12.0, 1_800_000_000.0, wall - 100.0, wall)


EVENTS: list[SessionEvent] = [
    LocatedBatch("n1", (located(1_800_000_000.0),)),
    Joined(ParticipantRecord(USER, SID, "Ann", "#336699", 1.0, 2.0, True, None)),
    Left(USER, "removed", 4403),
    Ended("expired"),
    Presence("n1", USER, True, False),
    StateRequest("n1"),
    Unhosted("n1"),
    StateReply(
        "n1",
        "n2",
        (located(1_800_000_000.0),),
        ((USER, "n1", True),),
        (StatusSet(USER, "need_help", "flat tyre", 1_800_000_001.5),),
    ),
    PlaceAdded(
        PlaceRecord(
            uuid.uuid4(),
            SID,
            "Camp",
            "meet",
            USER,
            {"type": "Point", "coordinates": [7.0, 45.0]},
            50.0,
            1_800_000_000.25,
        )
    ),
    PlaceAdded(
        PlaceRecord(
            uuid.uuid4(),
            SID,
            "Lot",
            "parking",
            None,
            {"type": "Polygon", "coordinates": [[[7, 45], [7.1, 45], [7.1, 45.1], [7, 45]]]},
            None,
            1_800_000_000.0,
        )
    ),
    PlaceRemoved(uuid.uuid4()),
    RouteChanged(),
    StatusSet(USER, "break", None, 1_800_000_002.0),
    StatusSet(USER, None, None, None),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_survives_the_trip(event: SessionEvent) -> None:
    data = encode_message("n1", [encode_event(SID, event)])
    origin, [(session_id, decoded)] = decode_message(data, lambda wall: wall - 100.0)
    assert (origin, session_id) == ("n1", SID)
    assert decoded == event


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"o": 1, "e": []}',
        b'{"o": "n1"}',
        orjson.dumps({"o": "n1", "e": [[str(SID), "?", None]]}),
        orjson.dumps({"o": "n1", "e": [["not-a-uuid", "E", "ended"]]}),
        orjson.dumps({"o": "n1", "e": [[str(SID), "S", ["x", "break", None, None]]]}),
        orjson.dumps({"o": "n1", "e": [[str(SID), "A", [str(USER), "n", "meet", None, [], 1, 2]]]}),
        # A good event followed by a bad one: nothing of the message is applied.
        orjson.dumps({"o": "n1", "e": [[str(SID), "E", "ended"], [str(SID), "R", [1, 2]]]}),
    ],
)
def test_unreadable_messages_are_refused_whole(data: bytes) -> None:
    with pytest.raises(MalformedBusMessage):
        decode_message(data, lambda wall: wall)


def test_statuses_and_positions_carry_no_coordinate_in_repr() -> None:
    reply = EVENTS[6]
    assert "45.5" not in repr(reply) and "7.25" not in repr(reply)
