"""Two and three locshare nodes in one session, through a real Redis (issue 13).

Every guarantee of docs/protocol.md must hold across nodes: ``session_state`` first and
consistent, every update to every participant on every node, presence online on any
node, REST changes through any node reaching every node's sockets, viewport hints that
cover the whole session.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import trio

from tests.cluster.conftest import RedisServer, cluster, wait_until
from tests.conftest import Running
from tests.net.test_websocket import Peer, _hold, connect


def located(frame: dict[str, Any]) -> dict[str, float]:
    return {u["user_id"]: u["lat"] for u in frame["updates"]}


async def next_location_of(peer: Peer, user_id: str, timeout: float = 10.0) -> float:
    with trio.fail_after(timeout):
        while True:
            frame = await peer.next_of("locations", timeout)
            if user_id in located(frame):
                return located(frame)[user_id]


async def location_reaches(peer: Peer, user_id: str, lat: float, timeout: float = 10.0) -> None:
    """Read ``peer``'s frames until ``user_id``'s position ``lat`` arrives."""
    with trio.fail_after(timeout):
        while await next_location_of(peer, user_id, timeout) != lat:
            pass


async def test_updates_presence_and_hints_cross_nodes(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        created = await a.create_session(name="Two nodes")
        sid = created["session_id"]
        ann = await a.join(sid, "Ann")
        bo = await b.join(sid, "Bo")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                pb = await connect(b, nursery, bo, True)  # node b, its REST port's /ws
                # Presence is "online on any node".
                assert await pa.next_of("presence") == {"user_id": bo["user_id"], "online": True}
                for i in range(5):
                    await pa.send("location_update", {"lat": 48.0 + i, "lng": 11.0})
                    assert await next_location_of(pb, ann["user_id"]) == 48.0 + i
                    await pb.send("location_update", {"lat": 47.0 - i, "lng": 12.0})
                    assert await next_location_of(pa, bo["user_id"]) == 47.0 - i
                    await trio.sleep(0.15)  # under the message rate limit
                # Hints on both nodes cover both participants.
                for peer in (pa, pb):
                    with trio.fail_after(10):
                        while True:
                            hint = await peer.next_of("viewport")
                            if set(hint["participants"]) == {ann["user_id"], bo["user_id"]}:
                                break
                # Bo goes away: Ann sees him offline although he was on another node.
                await pb.ws.aclose()
                assert await pa.next_of("presence") == {"user_id": bo["user_id"], "online": False}
                nursery.cancel_scope.cancel()


async def test_a_node_new_to_a_session_gets_its_current_state(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster(database_url, tmp_path, redis_server.url, nodes=3) as (a, b, c):
        sid = (await a.create_session())["session_id"]
        ann, bo, cy = [await a.join(sid, name) for name in ("Ann", "Bo", "Cy")]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                pb = await connect(b, nursery, bo, False)
                await pa.send("location_update", {"lat": 10.5, "lng": 20.5})
                await next_location_of(pb, ann["user_id"])
                await pb.send("location_update", {"lat": 30.5, "lng": 40.5})
                await next_location_of(pa, bo["user_id"])
                await pb.send("set_status", {"status": "break", "text": "coffee"})
                await pa.next_of("status")
                # Node c has never hosted this session: Cy's first frame must already
                # hold both positions, both online, and Bo's status (memory only).
                state = await connect_first(c, nursery, cy)
                people = {p["user_id"]: p for p in state["participants"]}
                assert people[ann["user_id"]]["location"]["lat"] == 10.5
                assert people[bo["user_id"]]["location"]["lat"] == 30.5
                assert people[ann["user_id"]]["online"] and people[bo["user_id"]]["online"]
                assert people[bo["user_id"]]["status"]["text"] == "coffee"
                assert people[ann["user_id"]]["status"] is None
                assert state["viewport"] is not None
                nursery.cancel_scope.cancel()


async def connect_first(
    server: Running, nursery: trio.Nursery, joined: dict[str, Any]
) -> dict[str, Any]:
    """Connect and return the first frame's data (asserting it is ``session_state``)."""
    ws = await nursery.start(_hold, server.info.ws_port, f"/ws?token={joined['websocket_token']}")
    first = orjson.loads(await ws.get_message())
    assert first["type"] == "session_state"
    return dict(first["data"])


async def test_rest_changes_through_one_node_reach_the_other(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        created = await a.create_session()
        sid = created["session_id"]
        ann, bo, cy = [await a.join(sid, name) for name in ("Ann", "Bo", "Cy")]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                pb = await connect(a, nursery, bo, False)
                # A join through node b reaches node a's sockets.
                dee = await b.join(sid, "Dee")
                joined = await pa.next_of("participant_joined")
                assert joined["user_id"] == dee["user_id"]
                # Removal by the creator through node b: Bo's socket on node a closes 4403.
                started = trio.current_time()
                removed = await b.http.delete(
                    f"/api/sessions/{sid}/participants/{bo['user_id']}",
                    headers={"Authorization": f"Bearer {created['creator_token']}"},
                )
                assert removed.status_code == 204
                assert await pb.close_code() == 4403
                left = await pa.next_of("participant_left")
                assert left == {"user_id": bo["user_id"], "reason": "removed"}
                assert trio.current_time() - started < 1.0
                # Cy leaves through node b's REST.
                gone = await b.http.delete(
                    f"/api/sessions/{sid}/participants/{cy['user_id']}",
                    headers={"Authorization": f"Bearer {cy['websocket_token']}"},
                )
                assert gone.status_code == 204
                assert (await pa.next_of("participant_left"))["user_id"] == cy["user_id"]
                # The end through node b reaches node a's sockets within a second.
                started = trio.current_time()
                ended = await b.http.delete(
                    f"/api/sessions/{sid}",
                    headers={"Authorization": f"Bearer {created['creator_token']}"},
                )
                assert ended.status_code == 204
                assert await pa.next_of("session_ended") == {"reason": "ended"}
                assert await pa.close_code() == 4000
                assert trio.current_time() - started < 1.0
                nursery.cancel_scope.cancel()


async def test_the_cap_stays_atomic_across_nodes(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        sid = (await a.create_session(max_participants=5))["session_id"]
        statuses: list[int] = []

        async def join(node: Running, i: int) -> None:
            response = await node.http.post(
                f"/api/sessions/{sid}/join", json={"display_name": f"p{i}"}
            )
            statuses.append(response.status_code)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(12):
                    nursery.start_soon(join, a if i % 2 else b, i)
        assert statuses.count(201) == 5 and statuses.count(409) == 7


async def test_bus_tasks_end_with_the_sessions_and_the_server(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    before = trio.lowlevel.current_statistics().tasks_living
    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        created = await a.create_session()
        sid = created["session_id"]
        ann = await a.join(sid, "Ann")
        bo = await b.join(sid, "Bo")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                pb = await connect(b, nursery, bo, False)
                ended = await b.http.delete(
                    f"/api/sessions/{sid}",
                    headers={"Authorization": f"Bearer {created['creator_token']}"},
                )
                assert ended.status_code == 204
                assert await pa.close_code() == 4000
                assert await pb.close_code() == 4000
                nursery.cancel_scope.cancel()
            for node in (a, b):
                await wait_until(lambda node=node: not node.hub.sessions)
            assert not a.hub.bus._subscribers and not b.hub.bus._subscribers
            assert uuid.UUID(sid) not in a.hub.bus._hosted
    with trio.fail_after(10):
        while trio.lowlevel.current_statistics().tasks_living > before:
            await trio.sleep(0.05)


async def test_who_watches_counts_on_every_node(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Issue 15 across nodes: Bo's map on node b decides Ann's interval on node a."""
    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        sid = (await a.create_session())["session_id"]
        ann, bo = await a.join(sid, "Ann"), await b.join(sid, "Bo")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                assert (await pa.next_of("update_interval"))["reason"] == "nobody_watching"
                pb = await connect(b, nursery, bo, False)
                assert await pa.next_of("update_interval") == {"seconds": 2.0, "reason": "watched"}
                await pb.send("visibility", {"visible": False})
                slowed = await pa.next_of("update_interval")
                assert slowed == {"seconds": 30.0, "reason": "nobody_watching"}
                await trio.sleep(5)  # past the locate_now rate limit
                shown = trio.current_time()
                await pb.send("visibility", {"visible": True})
                assert await pa.next_of("locate_now") == {}
                assert await pa.next_of("update_interval") == {"seconds": 2.0, "reason": "watched"}
                assert trio.current_time() - shown < 1.0
                nursery.cancel_scope.cancel()


async def test_places_route_and_statuses_cross_nodes(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Issue 14 across nodes: a place, a status and the route set through one node
    reach the sockets of the other; each node computes arrivals and the convoy from the
    positions the bus brings it."""
    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        created = await a.create_session()
        sid = created["session_id"]
        ann, bo = await a.join(sid, "Ann"), await b.join(sid, "Bo")
        creator = {"Authorization": f"Bearer {created['creator_token']}"}
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                pb = await connect(b, nursery, bo, False)
                await pa.send(
                    "place_add",
                    {"name": "Camp", "kind": "meet", "lat": 45.0, "lng": 7.0, "radius_m": 100},
                )
                place = await pb.next_of("place_added")
                assert place["author"] == ann["user_id"]
                # Ann (node a) arrives; Bo (node b) hears it from his own node.
                for _ in range(2):
                    await pa.send("location_update", {"lat": 45.0, "lng": 7.0, "accuracy": 5})
                    await trio.sleep(1.2)
                arrived = await pb.next_of("arrived")
                assert arrived == {"user_id": ann["user_id"], "place_id": place["place_id"]}
                await pb.send("set_status", {"status": "need_help", "text": "fuel"})
                status = await pa.next_of("status")
                assert (status["user_id"], status["status"]) == (bo["user_id"], "need_help")
                # The route, stored through node b, is read by node a from PostgreSQL.
                route = {
                    "type": "LineString",
                    "coordinates": [[7.0, 44.99], [7.0, 45.05]],
                }
                response = await b.http.put(
                    f"/api/sessions/{sid}/route",
                    content=orjson.dumps(route),
                    headers={**creator, "Content-Type": "application/json"},
                )
                assert response.status_code == 200, response.text
                assert (await pa.next_of("route_set"))["points"] == 2
                await pb.send("location_update", {"lat": 45.02, "lng": 7.0})
                while len((convoy := await pa.next_of("convoy"))["order"]) < 2:
                    pass
                assert convoy["order"] == [bo["user_id"], ann["user_id"]]
                # A place removed through node b's REST by the creator.
                removed = await b.http.delete(
                    f"/api/sessions/{sid}/places/{place['place_id']}", headers=creator
                )
                assert removed.status_code == 204
                assert await pa.next_of("place_removed") == {"place_id": place["place_id"]}
                nursery.cancel_scope.cancel()


async def test_a_cluster_node_exports_the_bus_metrics(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Every bus metric the dashboard queries is exported by a node in cluster mode."""
    from tests.test_deploy import CLUSTER_ONLY, metric_family

    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        sid = (await a.create_session())["session_id"]
        ann, bo = await a.join(sid, "Ann"), await b.join(sid, "Bo")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                pb = await connect(b, nursery, bo, False)
                await pa.send("location_update", {"lat": 1.5, "lng": 2.5})
                await location_reaches(pb, ann["user_id"], 1.5)
                nursery.cancel_scope.cancel()
        text = (await a.http.get("/metrics")).text
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert {metric_family(m) for m in CLUSTER_ONLY} <= {metric_family(m) for m in exported}
    sent = [
        line for line in text.splitlines() if line.startswith("locshare_bus_messages_sent_total")
    ]
    assert sent and float(sent[0].split()[-1]) > 0


async def record_messages(stream: Any, reader: Any, seen: list[bytes]) -> None:
    """Append every pub/sub message's payload read from ``stream`` to ``seen``."""
    from locshare.cluster._resp import READ_BYTES

    while True:
        reader.feed(await stream.receive_some(READ_BYTES))
        for reply in reader.replies():
            if isinstance(reply, list) and reply[0] == b"message":
                seen.append(reply[2])


async def test_positions_go_on_the_bus_only_while_another_node_hosts_the_session(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A session whose members are all on one node costs Redis nothing per position
    (found by the sticky benchmark: every flush was published anyway); once another
    node hosts it, positions cross."""
    from locshare.cluster._resp import subscribe

    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        sid = (await a.create_session())["session_id"]
        ann, al, bo = await a.join(sid, "Ann"), await a.join(sid, "Al"), await b.join(sid, "Bo")
        channels = [a.hub.bus.channel(i) for i in range(a.hub.bus.buckets)]
        stream, reader, _early = await subscribe(redis_server.url, channels)
        seen: list[bytes] = []

        async with stream:
            with trio.fail_after(40):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(record_messages, stream, reader, seen)
                    pa = await connect(a, nursery, ann, False)
                    pal = await connect(a, nursery, al, False)
                    for i in range(10):
                        await pa.send("location_update", {"lat": 10.0 + i, "lng": 1.0})
                        await location_reaches(pal, ann["user_id"], 10.0 + i)
                    await trio.sleep(0.5)  # a bus tick or ten
                    positions = [m for m in seen if sid.encode() in m and b'"L"' in m]
                    assert positions == []
                    pb = await connect(b, nursery, bo, False)
                    await pa.send("location_update", {"lat": 30.0, "lng": 1.0})
                    await location_reaches(pb, ann["user_id"], 30.0)
                    assert any(sid.encode() in m and b'"L"' in m for m in seen)
                    nursery.cancel_scope.cancel()


async def test_a_node_that_unloads_the_session_is_sent_no_more_positions(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Bo's node unloads the session once his socket has been gone ``idle_unload_s``; it
    says so on the bus (``Unhosted``), and Ann's node stops publishing positions for it
    (before, it went on until that node died)."""
    from locshare.cluster._resp import subscribe

    async with cluster(database_url, tmp_path, redis_server.url, idle_unload_s=1) as (a, b):
        sid = (await a.create_session())["session_id"]
        ann, bo = await a.join(sid, "Ann"), await b.join(sid, "Bo")
        channels = [a.hub.bus.channel(i) for i in range(a.hub.bus.buckets)]
        stream, reader, _early = await subscribe(redis_server.url, channels)
        seen: list[bytes] = []

        def positions() -> int:
            return sum(1 for m in seen if sid.encode() in m and b'"L"' in m)

        async with stream:
            with trio.fail_after(40):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(record_messages, stream, reader, seen)
                    pa = await connect(a, nursery, ann, False)
                    pb = await connect(b, nursery, bo, False)
                    await pa.send("location_update", {"lat": 30.0, "lng": 1.0})
                    await location_reaches(pb, ann["user_id"], 30.0)
                    assert positions() > 0
                    actor = a.hub.sessions[uuid.UUID(sid)]
                    assert actor.peers == {"node1"}
                    await pb.ws.aclose()
                    await wait_until(lambda: uuid.UUID(sid) not in b.hub.sessions)
                    await wait_until(lambda: not actor.peers)
                    await trio.sleep(0.3)  # the last bus ticks
                    before = positions()
                    for i in range(5):
                        await pa.send("location_update", {"lat": 40.0 + i, "lng": 1.0})
                        await trio.sleep(0.15)
                    await trio.sleep(0.5)
                    assert positions() == before
                    # Bo comes back: his node hosts the session again and gets positions.
                    pb = await connect(b, nursery, bo, False)
                    await pa.send("location_update", {"lat": 50.0, "lng": 1.0})
                    await location_reaches(pb, ann["user_id"], 50.0)
                    assert positions() > before
                    nursery.cancel_scope.cancel()
