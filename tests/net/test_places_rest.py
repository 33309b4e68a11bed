"""Places and the route over REST (issue 14), against a real server and PostgreSQL.

Success paths, every refusal the issue lists (invalid GeoJSON, a self-intersecting
polygon, 501 vertices, a 21st place, text too long, an unknown kind, a place on another
session, a route from a non-creator, binary garbage as GPX, an XML bomb, a DTD, an
oversized file: ``tests/security/test_group_attacks.py``) with its structured error, and that a refusal loses nothing else: a
socket of the session keeps receiving and nothing was stored.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import orjson
import trio

from tests.conftest import Running, random_id
from tests.net.test_rest import assert_error, bearer
from tests.net.test_websocket import connect

LAT, LNG = 45.0, 7.0
M_PER_DEG = 111_195.0


def north(metres: float) -> float:
    return LAT + metres / M_PER_DEG


def polygon(vertices: int, radius_m: float = 100.0) -> dict[str, Any]:
    ring = []
    for i in range(vertices):
        angle = 2 * math.pi * i / vertices
        ring.append(
            [
                LNG + radius_m * math.cos(angle) / (M_PER_DEG * math.cos(math.radians(LAT))),
                LAT + radius_m * math.sin(angle) / M_PER_DEG,
            ]
        )
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def line(points: int, step_m: float = 5.0) -> dict[str, Any]:
    return {
        "type": "LineString",
        "coordinates": [[LNG, north(i * step_m)] for i in range(points)],
    }


def gpx(points: int) -> bytes:
    body = "".join(
        f'<trkpt lat="{north(i * 5.0):.7f}" lon="{LNG:.7f}"><ele>300</ele></trkpt>'
        for i in range(points)
    )
    return (
        '<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'
        f"<trk><trkseg>{body}</trkseg></trk></gpx>"
    ).encode()


async def setup(server: Running) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    created = await server.create_session(name="Ride")
    sid = created["session_id"]
    return sid, created, await server.join(sid, "Ann"), await server.join(sid, "Bo")


async def test_places_add_list_remove(server: Running) -> None:
    sid, created, ann, bo = await setup(server)
    url = f"/api/sessions/{sid}/places"
    async with trio.open_nursery() as nursery:
        watcher = await connect(server, nursery, bo, False)
        response = await server.http.post(
            url,
            json={"name": " Camp ", "kind": "meet", "lat": LAT, "lng": LNG, "radius_m": 120},
            headers=bearer(ann["websocket_token"]),
        )
        assert response.status_code == 201, response.text
        place = response.json()
        assert response.headers["location"] == f"{url}/{place['place_id']}"
        assert place["name"] == "Camp" and place["author"] == ann["user_id"]
        assert place["geometry"] == {"type": "Point", "coordinates": [LNG, LAT]}
        assert place["radius_m"] == 120
        assert await watcher.next_of("place_added") == place
        # The creator adds a polygon (author null).
        field = await server.http.post(
            url,
            json={"name": "Field", "kind": "parking", "geometry": polygon(500)},
            headers=bearer(created["creator_token"]),
        )
        assert field.status_code == 201, field.text
        assert field.json()["author"] is None and field.json()["radius_m"] is None
        listed = (await server.http.get(url, headers=bearer(bo["websocket_token"]))).json()
        assert [p["name"] for p in listed["places"]] == ["Camp", "Field"]
        # Bo did not add Camp: 403; Ann removes it; the creator removes anything.
        one = f"{url}/{place['place_id']}"
        assert_error(
            await server.http.delete(one, headers=bearer(bo["websocket_token"])), 403, "forbidden"
        )
        assert (
            await server.http.delete(one, headers=bearer(ann["websocket_token"]))
        ).status_code == 204
        assert await watcher.next_of("place_removed") == {"place_id": place["place_id"]}
        assert_error(
            await server.http.delete(one, headers=bearer(ann["websocket_token"])), 404, "not_found"
        )
        two = f"{url}/{field.json()['place_id']}"
        assert (
            await server.http.delete(two, headers=bearer(created["creator_token"]))
        ).status_code == 204
        assert_error(
            await server.http.delete(f"{url}/not-a-uuid", headers=bearer(created["creator_token"])),
            404,
            "not_found",
        )
        nursery.cancel_scope.cancel()


async def test_bad_places_are_refused_and_lose_nothing(server: Running) -> None:
    sid, _created, ann, bo = await setup(server)
    url = f"/api/sessions/{sid}/places"
    token = bearer(ann["websocket_token"])
    bow_tie = {
        "type": "Polygon",
        "coordinates": [
            [[LNG, LAT], [LNG + 0.01, LAT + 0.01], [LNG + 0.01, LAT], [LNG, LAT + 0.01], [LNG, LAT]]
        ],
    }
    cases: list[tuple[Any, int, str, str]] = [
        (
            {"name": "x" * 61, "kind": "meet", "lat": LAT, "lng": LNG},
            422,
            "invalid_request",
            "name",
        ),
        (
            {"name": "Camp", "kind": "castle", "lat": LAT, "lng": LNG},
            422,
            "invalid_request",
            "kind",
        ),
        ({"name": "Camp", "kind": "meet", "lat": 91, "lng": LNG}, 422, "invalid_request", "lat"),
        (
            {"name": "Camp", "kind": "meet", "lat": LAT, "lng": LNG, "radius_m": 5},
            422,
            "invalid_request",
            "radius_m",
        ),
        (
            {"name": "Camp", "kind": "meet", "geometry": {"type": "Polygon", "coordinates": "x"}},
            422,
            "invalid_request",
            "geometry.coordinates",
        ),
        (
            {"name": "Camp", "kind": "meet", "geometry": {"type": "Nope"}},
            422,
            "invalid_request",
            "geometry",
        ),
        (
            {"name": "Camp", "kind": "meet", "geometry": polygon(501)},
            422,
            "invalid_request",
            "geometry.coordinates",
        ),
        (
            {"name": "Tie", "kind": "hazard", "geometry": bow_tie},
            422,
            "invalid_request",
            "geometry",
        ),
        (["not", "an", "object"], 422, "invalid_request", ""),
    ]
    async with trio.open_nursery() as nursery:
        watcher = await connect(server, nursery, bo, False)
        for body, status, code, field in cases:
            error = assert_error(
                await server.http.post(url, json=body, headers=token), status, code
            )
            if field:
                assert error.get("field") == field, (body, error)
        tie = assert_error(
            await server.http.post(
                url, json={"name": "Tie", "kind": "hazard", "geometry": bow_tie}, headers=token
            ),
            422,
            "invalid_request",
        )
        # shapely's reason, with where, in degrees.
        assert "Self-intersection" in tie["message"] and "[7.0" in tie["message"]
        assert_error(
            await server.http.post(
                url, content=b"{nope", headers={**token, "Content-Type": "application/json"}
            ),
            400,
            "malformed_json",
        )
        assert_error(
            await server.http.post(
                url, content=b"name=x", headers={**token, "Content-Type": "text/plain"}
            ),
            415,
            "unsupported_media_type",
        )
        assert_error(
            await server.http.post(url, json={"name": "A", "kind": "meet", "lat": LAT, "lng": LNG}),
            401,
            "unauthorized",
        )
        # A token of another session, on this one: 403; on an unknown session: 403.
        other = await server.create_session()
        stranger = await server.join(other["session_id"], "X")
        assert_error(
            await server.http.post(
                url,
                json={"name": "A", "kind": "meet", "lat": LAT, "lng": LNG},
                headers=bearer(stranger["websocket_token"]),
            ),
            403,
            "forbidden",
        )
        assert_error(
            await server.http.get(f"/api/sessions/{random_id()}/places", headers=token),
            403,
            "forbidden",
        )
        # Nothing was stored; the socket of the session still receives.
        assert (await server.http.get(url, headers=token)).json() == {"places": []}
        peer = await connect(server, nursery, ann, False)
        await peer.send("location_update", {"lat": LAT, "lng": LNG})
        assert (await watcher.next_of("locations"))["updates"][0]["user_id"] == ann["user_id"]
        nursery.cancel_scope.cancel()


async def test_twenty_first_place_is_409(server: Running) -> None:
    sid, created, ann, _bo = await setup(server)
    url = f"/api/sessions/{sid}/places"

    async def add(i: int) -> int:
        body = {"name": f"P{i}", "kind": "poi", "lat": LAT, "lng": LNG}
        return (
            await server.http.post(url, json=body, headers=bearer(ann["websocket_token"]))
        ).status_code

    # Concurrently: the limit holds under races (the session row is locked).
    statuses: list[int] = []

    async def one(i: int) -> None:
        statuses.append(await add(i))

    async with trio.open_nursery() as nursery:
        for i in range(24):
            nursery.start_soon(one, i)
    assert sorted(statuses) == [201] * 20 + [409] * 4, str(sorted(statuses))
    assert_error(
        await server.http.post(
            url,
            json={"name": "x", "kind": "poi", "lat": 1, "lng": 1},
            headers=bearer(created["creator_token"]),
        ),
        409,
        "too_many_places",
    )
    assert (
        len((await server.http.get(url, headers=bearer(ann["websocket_token"]))).json()["places"])
        == 20
    )


async def test_route_set_change_clear(server: Running) -> None:
    sid, created, ann, bo = await setup(server)
    url = f"/api/sessions/{sid}/route"
    creator = bearer(created["creator_token"])
    async with trio.open_nursery() as nursery:
        watcher = await connect(server, nursery, bo, False)
        # 20,000 points of GeoJSON (about 800 KB: over max_body_bytes, under the route's limit).
        body = orjson.dumps(line(20_000, step_m=2.0))
        assert len(body) > 16384
        response = await server.http.put(
            url, content=body, headers={**creator, "Content-Type": "application/geo+json"}
        )
        assert response.status_code == 200, response.text
        summary = response.json()
        assert summary["points"] == 20_000 and summary["simplified_points"] <= 2000
        assert summary["off_route_m"] == 200 and abs(summary["length_m"] - 39_998) < 50
        route_set = await watcher.next_of("route_set", timeout=20)
        assert route_set["points"] == 20_000
        assert len(route_set["geometry"]["coordinates"]) == summary["simplified_points"]
        # A GPX file, with a threshold.
        response = await server.http.put(
            f"{url}?off_route_m=350",
            content=gpx(300),
            headers={**creator, "Content-Type": "application/gpx+xml"},
        )
        assert response.status_code == 200, response.text
        assert (await watcher.next_of("route_set", timeout=20))["off_route_m"] == 350
        patched = await server.http.patch(url, json={"off_route_m": 500}, headers=creator)
        assert patched.json() == {"off_route_m": 500}
        assert (await watcher.next_of("route_set", timeout=20))["off_route_m"] == 500
        assert (await server.http.delete(url, headers=creator)).status_code == 204
        assert await watcher.next_of("route_cleared", timeout=20) == {}
        assert_error(await server.http.delete(url, headers=creator), 404, "not_found")
        assert_error(
            await server.http.patch(url, json={"off_route_m": 300}, headers=creator),
            404,
            "not_found",
        )
        # A socket connecting now gets no route.
        peer = await connect(server, nursery, ann, False)
        await peer.send("ping", {"id": 1})
        await peer.next_of("pong")
        nursery.cancel_scope.cancel()


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<gpx><trk><trkseg><trkpt lat="1" lon="1"><name>&lol3;</name></trkpt></trkseg></trk></gpx>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE gpx [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<gpx><trk><trkseg><trkpt lat="1" lon="1"><name>&x;</name></trkpt></trkseg></trk></gpx>"""


async def test_bad_routes_are_refused_and_lose_nothing(server: Running) -> None:
    sid, created, ann, bo = await setup(server)
    url = f"/api/sessions/{sid}/route"
    creator = bearer(created["creator_token"])
    json_type = {"Content-Type": "application/json"}
    gpx_type = {"Content-Type": "application/gpx+xml"}
    good = orjson.dumps(line(10))
    assert (
        await server.http.put(url, content=good, headers={**creator, **json_type})
    ).status_code == 200
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (good, {**bearer(ann["websocket_token"]), **json_type}, 403, "forbidden"),
        (good, json_type, 401, "unauthorized"),
        (b"\x00\xff\xfe garbage \x89PNG", {**creator, **gpx_type}, 422, "invalid_request"),
        (BOMB, {**creator, **gpx_type}, 422, "invalid_request"),
        (EXTERNAL, {**creator, **gpx_type}, 422, "invalid_request"),
        (b"<html><body>hi</body></html>", {**creator, **gpx_type}, 422, "invalid_request"),
        (gpx(20_001), {**creator, **gpx_type}, 422, "invalid_request"),
        (orjson.dumps(line(20_001)), {**creator, **json_type}, 422, "invalid_request"),
        (orjson.dumps(line(1)), {**creator, **json_type}, 422, "invalid_request"),
        (orjson.dumps(polygon(5)), {**creator, **json_type}, 422, "invalid_request"),
        (
            b'{"type": "LineString", "coordinates": [[0, 0], [0, "x"]]}',
            {**creator, **json_type},
            422,
            "invalid_request",
        ),
        (
            b'{"type": "LineString", "coordinates": [[0, 0], [0, 91]]}',
            {**creator, **json_type},
            422,
            "invalid_request",
        ),
        (b"{not json", {**creator, **json_type}, 400, "malformed_json"),
        (good, {**creator, "Content-Type": "text/csv"}, 415, "unsupported_media_type"),
        (b"", {**creator, **json_type}, 422, "invalid_request"),
    ]
    async with trio.open_nursery() as nursery:
        watcher = await connect(server, nursery, bo, False)
        for body, headers, status, code in cases:
            assert_error(await server.http.put(url, content=body, headers=headers), status, code)
        assert_error(
            await server.http.put(
                f"{url}?off_route_m=5", content=good, headers={**creator, **json_type}
            ),
            422,
            "invalid_request",
        )
        assert_error(
            await server.http.patch(url, json={"off_route_m": "far"}, headers=creator),
            422,
            "invalid_request",
        )
        assert_error(
            await server.http.patch(url, json={"off_route_m": 1e9}, headers=creator),
            422,
            "invalid_request",
        )
        # The first route is still the session's; the session still works.
        await watcher.send("ping", {"id": "after"})
        assert (await watcher.next_of("pong"))["id"] == "after"
        peer = await connect(server, nursery, ann, False)
        await peer.send("location_update", {"lat": LAT, "lng": LNG})
        assert (await watcher.next_of("locations"))["updates"][0]["user_id"] == ann["user_id"]
        nursery.cancel_scope.cancel()
    stored = await server.hub.storage.get_route(uuid.UUID(sid))
    assert stored is not None and len(stored.geometry["coordinates"]) == 10


async def test_place_changes_are_rate_limited_per_session(server: Running) -> None:
    sid, _created, ann, _bo = await setup(server)
    url = f"/api/sessions/{sid}/places"
    token = bearer(ann["websocket_token"])
    statuses = []
    for _i in range(70):
        one = f"{url}/{random_id()}"
        statuses.append((await server.http.delete(one, headers=token)).status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and statuses.count(404) == 60
    response = await server.http.delete(f"{url}/{random_id()}", headers=token)
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
