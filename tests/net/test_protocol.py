"""The sans-io message protocol: parsing, validation, encoding."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from locshare._clock import parse_rfc3339, rfc3339
from locshare.errors import (
    InvalidLocation,
    InvalidPlace,
    InvalidStatus,
    MalformedMessage,
    UnknownType,
)
from locshare.proto import _messages as proto


def msg(kind: str, data: object = None) -> str:
    envelope: dict[str, object] = {"type": kind}
    if data is not None:
        envelope["data"] = data
    return orjson.dumps(envelope).decode()


def test_location_update_full_and_minimal() -> None:
    full = proto.parse_client_message(
        msg(
            "location_update",
            {
                "lat": 52.5,
                "lng": 13.4,
                "accuracy": 5,
                "heading": 359.5,
                "speed": 3.2,
                "timestamp": "2026-11-20T12:00:00.250Z",
                "extra": 1,
            },
        )
    )
    assert isinstance(full, proto.LocationUpdate)
    assert (full.lat, full.lng, full.accuracy, full.heading, full.speed) == (
        52.5,
        13.4,
        5.0,
        359.5,
        3.2,
    )
    assert full.timestamp == pytest.approx(parse_rfc3339("2026-11-20T12:00:00.250Z"))
    minimal = proto.parse_client_message(msg("location_update", {"lat": -90, "lng": 180}))
    assert minimal == proto.LocationUpdate(-90.0, 180.0)
    nulls = proto.parse_client_message(
        msg("location_update", {"lat": 0, "lng": 0, "accuracy": None, "timestamp": None})
    )
    assert nulls == proto.LocationUpdate(0.0, 0.0)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"lat": 1},
        {"lng": 1},
        {"lat": 90.0001, "lng": 0},
        {"lat": -91, "lng": 0},
        {"lat": 0, "lng": 180.5},
        {"lat": 0, "lng": -181},
        {"lat": "1", "lng": 2},
        {"lat": True, "lng": 2},
        {"lat": [1], "lng": 2},
        {"lat": 0, "lng": 0, "accuracy": -1},
        {"lat": 0, "lng": 0, "accuracy": 1e8},
        {"lat": 0, "lng": 0, "heading": 360.1},
        {"lat": 0, "lng": 0, "heading": -1},
        {"lat": 0, "lng": 0, "speed": -0.5},
        {"lat": 0, "lng": 0, "speed": 1e5},
        {"lat": 0, "lng": 0, "timestamp": "yesterday"},
        {"lat": 0, "lng": 0, "timestamp": "2026-11-20T12:00:00"},  # no timezone
        {"lat": 0, "lng": 0, "timestamp": 12345},
    ],
)
def test_invalid_locations(data: dict[str, object]) -> None:
    with pytest.raises(InvalidLocation) as info:
        proto.parse_client_message(orjson.dumps({"type": "location_update", "data": data}))
    assert info.value.code == "invalid_location"
    assert info.value.close_code is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b"42",
        b'"text"',
        b'{"data": {}}',
        b'{"type": 5}',
        b'{"type": "ping", "data": []}',
        b'{"type": "location_update", "data": "x"}',
        b'{"type":"location_update","data":{"lat":NaN,"lng":0}}',
        b'{"type":"location_update","data":{"lat":Infinity,"lng":0}}',
        b'{"type":"location_update","data":{"lat":1e999,"lng":0}}',
        b'{"type":"location_update","data":{"lat":123456789012345678901234567890,"lng":0}}',
        b"[" * 2000 + b"]" * 2000,
        b'{"type":"ping"}\xff',
    ],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises((MalformedMessage, InvalidLocation)):
        proto.parse_client_message(raw)


def test_binary_frames_are_malformed() -> None:
    with pytest.raises(MalformedMessage, match="binary"):
        proto.parse_client_message(msg("ping").encode(), is_text=False)


def test_unknown_type() -> None:
    with pytest.raises(UnknownType):
        proto.parse_client_message(msg("teleport", {}))
    with pytest.raises(UnknownType) as info:
        proto.parse_client_message(msg("x" * 10000, {}))
    assert len(info.value.message) < 200


def test_viewport_size() -> None:
    assert proto.parse_client_message(
        msg("viewport_size", {"width": 1080, "height": 1920, "padding": 30})
    ) == proto.ViewportSize(1080, 1920, 30)
    assert proto.parse_client_message(
        msg("viewport_size", {"width": 400, "height": 800})
    ) == proto.ViewportSize(400, 800, 48)
    for bad in (
        {"width": 10, "height": 800},
        {"width": 400},
        {"width": 400, "height": 800, "padding": 200},
        {"width": 1e9, "height": 800},
        {"width": "400", "height": 800},
    ):
        with pytest.raises(MalformedMessage):
            proto.parse_client_message(msg("viewport_size", bad))


def test_ping_and_leave_accept_missing_or_null_data() -> None:
    assert proto.parse_client_message('{"type":"ping"}') == proto.Ping()
    assert proto.parse_client_message('{"type":"ping","data":null}') == proto.Ping()
    assert proto.parse_client_message(msg("leave", {})) == proto.Leave()


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    with contextlib.suppress(
        MalformedMessage, InvalidLocation, UnknownType, InvalidPlace, InvalidStatus
    ):
        proto.parse_client_message(raw)


def test_outframe_is_encoded_once_as_a_text_frame() -> None:
    frame = proto.encode("pong", {"server_time": rfc3339(0.0)})
    assert frame.wire is frame.wire  # cached
    assert "OutFrame(pong" in repr(frame) and "server_time" not in repr(frame)
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(frame.wire)
    (parsed,) = list(reader.received_frames())
    assert parsed.opcode is Opcode.TEXT
    assert orjson.loads(parsed.payload) == {
        "type": "pong",
        "data": {"server_time": "1970-01-01T00:00:00.000Z"},
    }
    big = proto.encode("locations", {"updates": [{"user_id": "x" * 36, "lat": 1.0}] * 2000})
    reader.receive_bytes(big.wire)
    (parsed,) = list(reader.received_frames())
    assert len(parsed.payload) == len(big.payload) > 65536


def test_close_frame_bytes() -> None:
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(proto.close_frame_bytes(4000, "session ended"))
    (parsed,) = list(reader.received_frames())
    assert parsed.opcode is Opcode.CLOSE
    assert parsed.payload == (4000, "session ended")


def test_contract_names_are_consistent() -> None:
    assert set(proto.CLIENT_MESSAGES) == {
        "location_update",
        "viewport_size",
        "ping",
        "leave",
        "visibility",
        "place_add",
        "place_remove",
        "set_status",
    }
    assert "user_id" in proto.LOCATION_ENTRY_FIELDS
    # The error codes are exactly the ones docs/protocol.md's table explains.
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    table = doc.split("### `error`", 1)[1].split("## Close codes", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \| (?!string)", table, re.MULTILINE))
    assert set(proto.ERROR_CODES) == documented


def test_ping_ids() -> None:
    assert proto.parse_client_message('{"type":"ping","data":{"id":"abc"}}') == proto.Ping("abc")
    assert proto.parse_client_message('{"type":"ping","data":{"id":42}}') == proto.Ping(42)
    for bad in (
        '{"id": true}',
        '{"id": 1.5}',
        '{"id": [1]}',
        '{"id": "%s"}' % ("x" * 65),
        '{"id": 9007199254740993}',
    ):
        with pytest.raises(MalformedMessage):
            proto.parse_client_message(f'{{"type":"ping","data":{bad}}}')


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"location_update","data":{"lat":1e999,"lng":0}}',
        b'{"type":"location_update","data":{"lat":0,"lng":-1e400}}',
        b'{"type":"location_update","data":{"lat":0,"lng":0,"accuracy":' + b"9" * 400 + b"}}",
        b'{"type":"location_update","data":{"lat":0,"lng":0,"speed":' + b"9" * 5000 + b"}}",
        '{"type":"location_update","data":{"lat":0,"lng":0,"heading":1e400}}',  # str frames
    ],
)
def test_numbers_beyond_a_double_are_invalid_location_not_malformed(raw: bytes | str) -> None:
    with pytest.raises(InvalidLocation) as info:
        proto.parse_client_message(raw)
    assert "between" in info.value.message


def test_numbers_beyond_a_double_in_unknown_fields_are_ignored() -> None:
    raw = b'{"type":"location_update","data":{"lat":1.5,"lng":2.5,"x":1e400},"y":-1e400}'
    assert proto.parse_client_message(raw) == proto.LocationUpdate(1.5, 2.5)
    with pytest.raises(MalformedMessage):  # a huge viewport is a bad viewport_size
        proto.parse_client_message(b'{"type":"viewport_size","data":{"width":1e400,"height":9}}')
    with pytest.raises(MalformedMessage):  # invalid JSON stays invalid
        proto.parse_client_message(b'{"type":"ping","data":{"x":1e400,"y":NaN}}')
