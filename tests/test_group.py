"""Places, arrivals, the route and the convoy, statuses (issue 14) in the live runtime.

The same harness as ``test_runtime.py`` (autojump clock, in-memory storage, the real
WebSocket handshake and transport over memory streams): what the clients receive, in
which order, and what is left behind.  The geometry itself is tested in
``tests/geo/``; here it is the wiring: events reach every socket, a new socket's
``session_state`` has everything, bad input costs only an ``error``.
"""

from __future__ import annotations

import itertools
import math
import uuid
from typing import Any

import trio
import trio.testing

from locshare.geo import parse_route_geojson
from locshare.storage._model import ParticipantRecord, SessionRecord
from tests.test_runtime import Client, Harness, end_all, running_hub

# A place 50 m across near Munich, and a route 3 km north from its south edge.
LAT, LNG = 48.1, 11.5
M_PER_DEG = 111_195.0


def north(metres: float) -> float:
    return LAT + metres / M_PER_DEG


def east(metres: float) -> float:
    return LNG + metres / (M_PER_DEG * math.cos(math.radians(LAT)))


def circle(name: str = "Camp", kind: str = "meet", radius_m: float = 50) -> dict[str, Any]:
    return {"name": name, "kind": kind, "lat": LAT, "lng": LNG, "radius_m": radius_m}


async def barrier(client: Client, tag: str = "b") -> list[dict[str, Any]]:
    """Every frame the client receives before the pong to a ping (in order)."""
    await client.send("ping", {"id": tag})
    frames = []
    while True:
        frame = await client.next()
        if frame["type"] == "pong" and frame["data"]["id"] == tag:
            return frames
        frames.append(frame)


async def connected(
    h: Harness, *names: str
) -> tuple[SessionRecord, list[ParticipantRecord], list[Client]]:
    """A session with ``names`` joined, each connected (``session_state`` read)."""
    record, people = await h.session(list(names))
    return record, people, [await h.connect(record, person) for person in people]


async def finish(h: Harness) -> None:
    """End every session; nothing may be left behind."""
    await end_all(h)
    await h.assert_nothing_left()


async def add_place(client: Client, data: dict[str, Any]) -> dict[str, Any]:
    await client.send("place_add", data)
    return await client.next_of("place_added")


async def test_a_place_reaches_everyone_and_every_new_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann, bo, cy) = await h.session(["Ann", "Bo", "Cy"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        added = await add_place(a, circle())
        assert added["author"] == str(ann.id) and added["kind"] == "meet"
        assert added["geometry"] == {"type": "Point", "coordinates": [LNG, LAT]}
        assert added["radius_m"] == 50
        assert await b.next_of("place_added") == added
        c = await h.connect(record, cy, first=False)
        state = (await c.next())["data"]
        assert state["places"] == [added]
        assert state["arrivals"] == [] and state["route"] is None and state["convoy"] is None
        # Only the author (or the creator, over REST) removes it.
        await b.send("place_remove", {"place_id": added["place_id"]})
        assert (await b.next_of("error"))["code"] == "forbidden"
        await a.send("place_remove", {"place_id": added["place_id"]})
        for client in (a, b, c):
            assert await client.next_of("place_removed") == {"place_id": added["place_id"]}
        await a.send("place_remove", {"place_id": added["place_id"]})
        assert (await a.next_of("error"))["code"] == "invalid_place"
        assert await h.storage.list_places(record.id) == []
        await finish(h)
        assert len(h.hub.places) == 0


def square(vertices: int) -> dict[str, Any]:
    """A valid ring of ``vertices`` distinct vertices around the place's centre, at 7
    decimals (1 cm) as clients send them: 500 of them fit in a 16 KiB message."""
    ring = []
    for i in range(vertices):
        angle = 2 * math.pi * i / vertices
        x, y = east(100 * math.cos(angle)), north(100 * math.sin(angle))
        ring.append([round(x, 7), round(y, 7)])
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


BAD_PLACES: list[tuple[dict[str, Any], str]] = [
    ({**circle(), "name": ""}, "name"),
    ({**circle(), "name": "x" * 61}, "name"),
    ({**circle(), "name": "a\u202eb"}, "name"),
    ({**circle(), "kind": "castle"}, "kind"),
    ({**circle(), "radius_m": 9}, "radius_m"),
    ({**circle(), "radius_m": 2001}, "radius_m"),
    ({**circle(), "lat": 91}, "lat"),
    ({**circle(), "lng": "east"}, "lng"),
    ({"name": "No shape", "kind": "poi"}, "geometry"),
    ({"name": "Bad", "kind": "poi", "geometry": {"type": "Polygon"}}, "coordinates"),
    (
        {"name": "Bad", "kind": "poi", "geometry": {"type": "LineString", "coordinates": []}},
        "Point",
    ),
    ({"name": "Bad", "kind": "poi", "geometry": "not geojson"}, "geometry"),
    ({"name": "Big", "kind": "poi", "geometry": square(501)}, "500"),
    (
        {
            "name": "Bow tie",
            "kind": "hazard",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [
                        [east(0), north(0)],
                        [east(100), north(100)],
                        [east(100), north(0)],
                        [east(0), north(100)],
                        [east(0), north(0)],
                    ]
                ],
            },
        },
        "Self-intersection",
    ),
]


async def test_bad_places_get_invalid_place_and_lose_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        _record, (_ann, _bo), (a, b) = await connected(h, "Ann", "Bo")
        await a.location(north(500), LNG)
        await b.next_of("locations")
        for data, says in BAD_PLACES:
            await a.send("place_add", data)
            error = await a.next_of("error")
            assert error["code"] == "invalid_place", (data, error)
            assert says in error["message"], (says, error["message"])
            await trio.sleep(2.0)  # within the per-member budget of changes
        for bad in ({}, {"place_id": "nope"}, {"place_id": 7}):
            await a.send("place_remove", bad)
            assert (await a.next_of("error"))["code"] == "invalid_place"
            await trio.sleep(2.0)
        # A 500-vertex polygon is fine; nothing of the above was stored or sent.
        assert (await add_place(a, {"name": "Field", "kind": "poi", "geometry": square(500)}))[
            "geometry"
        ]["type"] == "Polygon"
        assert [f["type"] for f in await barrier(b) if f["type"] == "place_added"] == [
            "place_added"
        ]
        # Ann still shares, Bo still receives.
        await a.location(north(600), LNG)
        assert (await b.next_of("locations"))["updates"][0]["lat"] == north(600)
        await finish(h)


async def test_twenty_places_at_most_and_changes_are_budgeted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann,) = await h.session(["Ann"])
        a = await h.connect(record, ann)
        for i in range(20):
            await add_place(a, circle(f"P{i}", "poi"))
            await trio.sleep(2.0)
        await a.send("place_add", circle("P20", "poi"))
        error = await a.next_of("error")
        assert error["code"] == "invalid_place" and "20" in error["message"]
        assert len(await h.storage.list_places(record.id)) == 20
        # A burst of status changes (within the message budget): 10 pass and one per
        # 2 s after them, the rest are refused.
        await trio.sleep(30)
        for i in range(15):
            await a.send("set_status", {"status": "break", "text": f"#{i}"})
            await trio.sleep(0.15)
        frames = await barrier(a)
        assert 10 <= [f["type"] for f in frames].count("status") <= 11
        assert {f["data"]["code"] for f in frames if f["type"] == "error"} == {"rate_limited"}
        await finish(h)


async def test_arrival_departure_and_expiry(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo), (a, b) = await connected(h, "Ann", "Bo")
        place = await add_place(a, circle())  # (skips Ann's update_interval frames)
        # One fix inside is not an arrival; the second one is (1 s apart: one per tick).
        await a.location(LAT, LNG, accuracy=5)
        await trio.sleep(1.5)
        assert "arrived" not in [f["type"] for f in await barrier(b, "one")]
        await a.location(north(5), LNG, accuracy=5)
        arrival = await b.next_of("arrived")
        assert arrival == {"user_id": str(ann.id), "place_id": place["place_id"]}
        # At a meeting point, while watched: asked less often.
        assert await a.next_of("update_interval") == {"seconds": 15.0, "reason": "at_place"}
        c_state = h.hub.sessions[record.id].state_frame(
            h.hub.sessions[record.id].fanout.current(bo.id)
        )  # type: ignore[arg-type]
        assert b'"arrivals":[{"user_id":"%s"' % str(ann.id).encode() in c_state.payload
        # Jitter just outside the radius (within the 20 % margin) is no departure.
        for metres in (55, 58, 52):
            await a.location(north(metres), LNG, accuracy=3)
            await trio.sleep(1.5)
        assert "departed" not in [f["type"] for f in await barrier(b, "jitter")]
        # Outside the grown place for two fixes: departed.
        await a.location(north(90), LNG, accuracy=3)
        await trio.sleep(1.5)
        await a.location(north(95), LNG, accuracy=3)
        assert await b.next_of("departed") == {
            "user_id": str(ann.id),
            "place_id": place["place_id"],
            "reason": "left",
        }
        assert await a.next_of("update_interval") == {"seconds": 2.0, "reason": "watched"}
        # Back in, then silent: the location expires, and with it the arrival.
        await a.location(LAT, LNG, accuracy=5)
        await trio.sleep(1.5)
        await a.location(LAT, LNG, accuracy=5)
        await b.next_of("arrived")
        silent = trio.current_time()
        departed = await b.next_of("departed", timeout=60)
        assert departed["reason"] == "expired"
        assert 29.0 <= trio.current_time() - silent <= 32.0
        actor = h.hub.sessions[record.id]
        assert actor.group.arrivals == {}
        await finish(h)


async def test_expiries_every_few_milliseconds_tick_places_once_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Locations expiring one after another make the index tick at each expiry (the
    30 s retention is exact), but places and routes are ticked at most once a second:
    they cover every session at each call (found by ``realistic``, where people asked
    for a fix every 30 s expire continually and the place tick took a fifth of the
    server's CPU)."""
    async with running_hub() as h:
        names = [f"P{i}" for i in range(6)]
        _record, _people, clients = await connected(h, *names)
        await add_place(clients[0], circle())
        index_ticks: list[float] = []
        place_ticks: list[float] = []
        real_index_tick, real_place_tick = h.hub.index.tick, h.hub.places.tick

        def index_tick(now: float) -> Any:
            index_ticks.append(now)
            return real_index_tick(now)

        def place_tick(arrays: Any, now: float) -> Any:
            place_ticks.append(now)
            return real_place_tick(arrays, now)

        h.hub.index.tick = index_tick  # type: ignore[method-assign]
        h.hub.places.tick = place_tick  # type: ignore[method-assign]
        start = trio.current_time()
        for i, client in enumerate(clients):  # fixes 0.15 s apart, then silence
            await client.location(north(10 * i), LNG, accuracy=5)
            await trio.sleep(0.15)
        await trio.sleep(32.0)
        expiring = [t for t in index_ticks if t >= start + 29.5]
        assert len(expiring) >= len(clients)  # one index tick per expiry, at least
        gaps = [b - a for a, b in itertools.pairwise(place_ticks)]
        assert place_ticks and min(gaps) >= 1.0 - 1e-9
        assert len(place_ticks) <= 32.0 + 1.5 + 2
        await finish(h)


async def test_removing_a_place_or_a_member_forgets_their_arrivals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (_ann, bo), (a, b) = await connected(h, "Ann", "Bo")
        first = await add_place(a, circle("One"))
        await trio.sleep(2)
        second = await add_place(a, circle("Two", "poi", radius_m=80))
        for _ in range(2):
            await b.location(LAT, LNG, accuracy=5)
            await trio.sleep(1.5)
        arrived = {(await a.next_of("arrived"))["place_id"] for _ in range(2)}
        assert arrived == {first["place_id"], second["place_id"]}
        await a.send("place_remove", {"place_id": first["place_id"]})
        await a.next_of("place_removed")
        actor = h.hub.sessions[record.id]
        assert set(actor.group.arrivals) == {(bo.id, uuid.UUID(second["place_id"]))}
        await h.hub.leave(record.id, bo.id, reason="left", close_code=4403)
        await a.next_of("participant_left")
        assert actor.group.arrivals == {}
        await finish(h)


async def test_viewport_fits_the_places_on_request(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        _record, (ann, _bo), (a, b) = await connected(h, "Ann", "Bo")
        # A place 3 km east of where Ann is.
        place = {**circle("Far", "poi", radius_m=200), "lng": east(3000)}
        await add_place(a, place)
        await a.location(LAT, LNG)
        plain = await b.next_of("viewport")
        assert plain["bbox"]["east"] < east(1)
        await b.send("viewport_size", {"width": 400, "height": 800, "include_places": True})
        fitted = await b.next_of("viewport")
        assert fitted["bbox"]["west"] <= LNG and fitted["bbox"]["east"] >= east(3190)
        assert fitted["participants"] == [str(ann.id)]
        assert fitted["zoom"] < plain["zoom"]
        for bad in ("yes", 1, [True]):
            await b.send("viewport_size", {"width": 400, "height": 800, "include_places": bad})
            assert (await b.next_of("error"))["code"] == "malformed_message"
        await finish(h)


async def test_status_reaches_everyone_and_lives_in_memory_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann, bo, cy) = await h.session(["Ann", "Bo", "Cy"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.send("set_status", {"status": "need_help", "text": "flat tyre"})
        status = await b.next_of("status")
        assert status["user_id"] == str(ann.id)
        assert status["status"] == "need_help" and status["text"] == "flat tyre"
        assert status["at"].endswith("Z")
        c = await h.connect(record, cy, first=False)
        state = (await c.next())["data"]
        mine = {p["user_id"]: p["status"] for p in state["participants"]}
        assert mine[str(ann.id)] == {k: status[k] for k in ("status", "text", "at")}
        assert mine[str(bo.id)] is None
        for bad, code in (
            ({"status": "lost"}, "invalid_status"),
            ({"status": 3}, "invalid_status"),
            ({"status": "break", "text": "x" * 81}, "invalid_status"),
            ({"status": "break", "text": ["list"]}, "invalid_status"),
            ({"status": "break", "text": "\u0007"}, "invalid_status"),
        ):
            await b.send("set_status", bad)
            assert (await b.next_of("error"))["code"] == code, bad
        await a.send("set_status", {"status": None, "text": "ignored when clearing"})
        assert await c.next_of("status") == {
            "user_id": str(ann.id),
            "status": None,
            "text": None,
            "at": None,
        }
        await a.send("set_status", {"status": "break"})
        await c.next_of("status")
        await h.hub.leave(record.id, ann.id, reason="left", close_code=4403)
        await c.next_of("participant_left")
        assert h.hub.sessions[record.id].group.statuses == {}
        await finish(h)


def line(points: list[tuple[float, float]]) -> dict[str, Any]:
    return {"type": "LineString", "coordinates": [[lng, lat] for lat, lng in points]}


async def test_route_and_convoy(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo, cy) = await h.session(["Ann", "Bo", "Cy"])
        route = parse_route_geojson(line([(LAT, LNG), (north(3000), LNG)]))
        await h.hub.set_route(record.id, route, 150.0)
        a = await h.connect(record, ann, first=False)
        state = (await a.next())["data"]
        assert state["route"]["points"] == 2 and state["route"]["off_route_m"] == 150.0
        assert state["route"]["geometry"]["type"] == "LineString"
        assert abs(state["route"]["length_m"] - 3000) < 5
        b = await h.connect(record, bo)
        c = await h.connect(record, cy)
        # Ann leads at 2 km, Bo at 1.5 km, Cy 300 m east of the road at 1 km.
        sent = trio.current_time()
        await a.location(north(2000), LNG)
        await b.location(north(1500), LNG)
        await c.location(north(1000), east(300))
        convoy = await b.next_of("convoy")
        while len(convoy["order"]) < 3:
            convoy = await b.next_of("convoy")
        assert convoy["order"] == [str(ann.id), str(bo.id), str(cy.id)]
        assert [abs(g - 500) <= 2 for g in convoy["gaps_m"]] == [True, True]
        assert convoy["gaps_s"] == [None, None]  # nobody has a speed yet
        assert convoy["off_route"] == [{"user_id": str(cy.id), "distance_m": 300}]
        assert trio.current_time() - sent < 3.0
        # At most one convoy a second, however often positions change.
        times = []
        for i in range(20):
            await a.location(north(2000 + 10 * i), LNG)
            await trio.sleep(0.2)
        frames = await barrier(b)
        times = [f for f in frames if f["type"] == "convoy"]
        assert 2 <= len(times) <= 5
        # The creator widens the threshold: Cy is on the route now.
        await h.hub.set_off_route(record.id, 400.0)
        route_set = await b.next_of("route_set")
        assert route_set["off_route_m"] == 400.0
        await c.location(north(1000), east(301))
        while (convoy := await b.next_of("convoy"))["off_route"]:
            pass
        await h.hub.clear_route(record.id)
        assert await a.next_of("route_cleared") == {}
        assert h.hub.sessions[record.id].group.convoy is None
        await finish(h)
        assert len(h.hub.routes) == 0


async def test_a_changed_route_is_read_again_and_sent_simplified(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann,) = await h.session(["Ann"])
        a = await h.connect(record, ann)
        # 20,000 points of a wiggly road: clients get at most 2,000.
        points = [
            (north(i * 2.0), east(3.0 * math.sin(i / 40.0) + (i % 3) * 0.5)) for i in range(20_000)
        ]
        route = parse_route_geojson(line(points))
        await h.hub.set_route(record.id, route, 200.0)
        message = await a.next_of("route_set")
        assert message["points"] == 20_000
        assert len(message["geometry"]["coordinates"]) <= 2000
        assert message["tolerance_m"] > 0
        await finish(h)


def test_union_box_across_the_antimeridian() -> None:
    from locshare.geo import BBox
    from locshare.runtime._group import union_box

    # Positions from 179 E to 179 W (a box crossing the antimeridian), a place at 178 W.
    box = union_box(BBox(179.0, -1.0, -179.0, 1.0), [0.5], [-178.0])
    assert box == BBox(179.0, -1.0, -178.0, 1.0)
    # A place west of the box: the box grows west, still across.
    box = union_box(BBox(179.0, -1.0, -179.0, 1.0), [2.0], [170.0])
    assert box == BBox(170.0, -1.0, -179.0, 2.0)
    # No positions: the places alone.
    assert union_box(None, [1.0, 2.0], [10.0, 11.0]) == BBox(10.0, 1.0, 11.0, 2.0)
    assert union_box(None, [], []) is None
    # A box wider than half the globe keeps its side (its interior gaps are smaller).
    wide = union_box(BBox(-100.0, 0.0, 120.0, 1.0), [0.5], [0.0])
    assert wide == BBox(-100.0, 0.0, 120.0, 1.0)
