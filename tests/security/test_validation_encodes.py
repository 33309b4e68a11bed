"""The class behind finding 2: what validation accepts, encoding must accept.

Property: every ``location_update`` the protocol's validator accepts goes through a
real flush (the session runtime, a real wsproto connection, under trio's mock clock)
and comes out encoded in a ``locations`` frame; every one it refuses gets
``invalid_location`` and changes nothing.  Either way the session lives on.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from locshare.errors import ProtocolError
from locshare.proto import _messages as proto
from tests.test_runtime import running_hub


def _stamp(moment: datetime, offset_minutes: int, style: int) -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.astimezone(UTC).replace(tzinfo=None)  # naive UTC wall time
    try:
        shifted = local + timedelta(minutes=offset_minutes)
    except OverflowError:
        shifted = local
    text = shifted.replace(tzinfo=zone).isoformat()
    return text.replace("+00:00", "Z") if style == 0 else text


moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda d: d.replace(tzinfo=UTC))
stamps = st.one_of(
    st.builds(_stamp, moments, st.integers(-1439, 1439), st.integers(0, 1)),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "9999-12-29T23:59:59.999999-23:59",
            "1970-01-01T00:00:00Z",
            "2026-12-01T12:00:00.123456+05:30",
        ]
    ),
    st.text(max_size=45),
    st.none(),
)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
)
payloads = st.fixed_dictionaries(
    {
        "lat": st.one_of(st.floats(-90, 90), numbers),
        "lng": st.one_of(st.floats(-180, 180), numbers),
    },
    optional={
        "accuracy": numbers,
        "heading": numbers,
        "speed": numbers,
        "timestamp": stamps,
    },
)


async def _through_a_flush(batch: list[dict[str, Any]]) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        for data in batch:
            raw = orjson.dumps({"type": "location_update", "data": data}).decode()
            try:
                accepted = proto.parse_client_message(raw)
            except ProtocolError:
                accepted = None
            await a.ws.send_message(raw)
            if accepted is None:
                assert (await a.next_of("error"))["code"] == "invalid_location"
                continue
            assert isinstance(accepted, proto.LocationUpdate)
            update = (await b.next_of("locations"))["updates"][-1]
            assert update["user_id"] == a.user_id
            assert math.isclose(update["lat"], accepted.lat)
            assert math.isclose(update["lng"], accepted.lng)
            assert isinstance(update["timestamp"], str)
        assert h.hub.stats.session_crashes == 0
        await a.send("ping", {"id": "alive"})
        assert (await a.next_of("pong"))["id"] == "alive"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=8))
@example([{"lat": 1.0, "lng": 2.0, "timestamp": "0001-01-01T00:00:00+14:00"}])
@example([{"lat": 1.0, "lng": 2.0, "timestamp": "9999-12-31T23:59:59-14:00"}])
def test_every_accepted_location_update_flushes_and_encodes(batch: list[dict[str, Any]]) -> None:
    trio.run(_through_a_flush, batch, clock=trio.testing.MockClock(autojump_threshold=0))
