"""The WebSocket protocol end to end: real server, real PostgreSQL, real sockets, real clients.

Every test runs on both ways in: the dedicated listener (``--ws-port``) and ``/ws`` on
the REST port.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from tests.conftest import Running

pytestmark = pytest.mark.parametrize("single_port", [False, True], ids=["ws-port", "rest-port"])


class Peer:
    def __init__(self, ws: WebSocketConnection, joined: dict[str, Any]) -> None:
        self.ws = ws
        self.joined = joined
        self.user_id = joined["user_id"]

    async def send(self, kind: str, data: dict[str, Any] | None = None) -> None:
        await self.ws.send_message(orjson.dumps({"type": kind, "data": data or {}}).decode())

    async def next_of(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                frame = orjson.loads(await self.ws.get_message())
                if frame["type"] == kind:
                    return dict(frame["data"])

    async def close_code(self, timeout: float = 10.0) -> int | None:
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code


async def connect(
    server: Running, nursery: trio.Nursery, joined: dict[str, Any], single_port: bool
) -> Peer:
    port = server.info.port if single_port else server.info.ws_port
    ws = await nursery.start(_hold, port, f"/ws?token={joined['websocket_token']}")
    peer = Peer(ws, joined)
    state = await peer.next_of("session_state")
    assert state["you"]["user_id"] == joined["user_id"]
    return peer


async def _hold(
    port: int, resource: str, task_status: trio.TaskStatus[WebSocketConnection]
) -> None:
    """A real trio-websocket client on a TCP stream this test owns and always closes
    (trio-websocket leaves its socket open when the *server* closes first)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(
                nursery, stream, "127.0.0.1", resource, message_queue_size=256
            )
            task_status.started(ws)
            await trio.sleep_forever()  # until the test cancels its nursery
    finally:
        await trio.aclose_forcefully(stream)


async def test_locations_flow_between_participants(server: Running, single_port: bool) -> None:
    created = await server.create_session(name="Ride")
    sid = created["session_id"]
    ann, bo = await server.join(sid, "Ann"), await server.join(sid, "Bo")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await connect(server, nursery, ann, single_port)
            b = await connect(server, nursery, bo, single_port)
            assert await a.next_of("presence") == {"user_id": bo["user_id"], "online": True}
            await a.send("location_update", {"lat": 45.0, "lng": 7.0, "speed": 12.5})
            update = (await b.next_of("locations"))["updates"][0]
            assert (update["user_id"], update["lat"], update["lng"], update["speed"]) == (
                ann["user_id"],
                45.0,
                7.0,
                12.5,
            )
            hint = await b.next_of("viewport")
            assert hint["center"] == pytest.approx({"lat": 45.0, "lng": 7.0})
            await b.send("ping")
            assert "server_time" in await b.next_of("pong")
            await a.ws.aclose()
            assert await b.next_of("presence") == {"user_id": ann["user_id"], "online": False}
            nursery.cancel_scope.cancel()


async def test_refusals_before_the_upgrade(server: Running, single_port: bool) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    ann = await server.join(sid, "Ann")

    async def refused(token: str) -> tuple[int, str]:
        # Our own TCP stream, closed by us: trio-websocket's open_websocket_url leaks
        # its socket when the server refuses the upgrade.
        port = server.info.port if single_port else server.info.ws_port
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        refusals: list[ConnectionRejected] = []
        try:
            async with trio.open_nursery() as nursery:
                await wrap_client_stream(nursery, stream, "127.0.0.1", f"/ws?token={token}")
        except* ConnectionRejected as group:
            refusals.extend(e for e in group.exceptions if isinstance(e, ConnectionRejected))
        finally:
            await stream.aclose()
        assert refusals, "accepted"
        body = orjson.loads(refusals[0].body or b"{}")
        return refusals[0].status_code, body.get("error", {}).get("code", "")

    with trio.fail_after(30):
        assert await refused("") == (401, "unauthorized")
        assert await refused("x.y.z") == (401, "unauthorized")
        assert await refused(created["creator_token"]) == (401, "unauthorized")
        other = await server.create_session()
        await server.http.delete(
            f"/api/sessions/{other['session_id']}",
            headers={"Authorization": f"Bearer {other['creator_token']}"},
        )
        await server.http.delete(
            f"/api/sessions/{sid}/participants/{ann['user_id']}",
            headers={"Authorization": f"Bearer {ann['websocket_token']}"},
        )
        assert await refused(ann["websocket_token"]) == (401, "unauthorized")  # left
        bo = await server.join(sid, "Bo")
        await server.http.delete(
            f"/api/sessions/{sid}", headers={"Authorization": f"Bearer {created['creator_token']}"}
        )
        assert await refused(bo["websocket_token"]) == (410, "session_ended")


async def test_rest_changes_reach_live_sockets(server: Running, single_port: bool) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    auth = {"Authorization": f"Bearer {created['creator_token']}"}
    ann, bo, cy = [await server.join(sid, name) for name in ("Ann", "Bo", "Cy")]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await connect(server, nursery, ann, single_port)
            b = await connect(server, nursery, bo, single_port)
            c = await connect(server, nursery, cy, single_port)
            dee = await server.join(sid, "Dee")
            joined = await a.next_of("participant_joined")
            assert (joined["user_id"], joined["display_name"], joined["online"]) == (
                dee["user_id"],
                "Dee",
                False,
            )
            # Bo leaves over REST: his socket closes 4403, the others are told.
            response = await server.http.delete(
                f"/api/sessions/{sid}/participants/{bo['user_id']}",
                headers={"Authorization": f"Bearer {bo['websocket_token']}"},
            )
            assert response.status_code == 204
            assert await b.close_code() == 4403
            assert await a.next_of("participant_left") == {
                "user_id": bo["user_id"],
                "reason": "left",
            }
            # The creator removes Cy.
            await server.http.delete(
                f"/api/sessions/{sid}/participants/{cy['user_id']}", headers=auth
            )
            assert await c.close_code() == 4403
            assert await a.next_of("participant_left") == {
                "user_id": cy["user_id"],
                "reason": "removed",
            }
            # The creator ends the session.
            await server.http.delete(f"/api/sessions/{sid}", headers=auth)
            assert await a.next_of("session_ended") == {"reason": "ended"}
            assert await a.close_code() == 4000
            nursery.cancel_scope.cancel()


async def test_leave_over_the_socket_is_persisted(server: Running, single_port: bool) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    ann, bo = await server.join(sid, "Ann"), await server.join(sid, "Bo")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await connect(server, nursery, ann, single_port)
            b = await connect(server, nursery, bo, single_port)
            await b.send("leave")
            assert await b.close_code() == 1000
            assert await a.next_of("participant_left") == {
                "user_id": bo["user_id"],
                "reason": "left",
            }
            nursery.cancel_scope.cancel()
    people = (
        await server.http.get(
            f"/api/sessions/{sid}/participants",
            headers={"Authorization": f"Bearer {ann['websocket_token']}"},
        )
    ).json()["participants"]
    assert {p["display_name"]: p["is_active"] for p in people} == {"Ann": True, "Bo": False}
    assert (await server.http.get(f"/api/sessions/{sid}")).json()["participant_count"] == 1


async def test_sessions_are_isolated(server: Running, single_port: bool) -> None:
    """Many sessions at once: nobody ever receives another session's data."""
    sessions = []
    for _ in range(8):
        created = await server.create_session()
        members = [await server.join(created["session_id"], f"m{i}") for i in range(3)]
        sessions.append((created, members))
    seen: dict[str, set[str]] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            peers = []
            for created, members in sessions:
                for member in members:
                    peers.append(
                        (created["session_id"], await connect(server, nursery, member, single_port))
                    )
            own = {m["user_id"]: c["session_id"] for c, ms in sessions for m in ms}
            for _sid, peer in peers:
                await peer.send("location_update", {"lat": 1.0, "lng": 1.0})

            async def collect(sid: str, peer: Peer) -> None:
                got: set[str] = set()
                while len(got) < 3:
                    frame = orjson.loads(await peer.ws.get_message())
                    if frame["type"] == "locations":
                        got |= {u["user_id"] for u in frame["data"]["updates"]}
                    for key in ("user_id",):
                        if key in frame["data"]:
                            got_sid = own.get(frame["data"][key])
                            assert got_sid in (None, sid)
                seen[peer.user_id] = got

            async with trio.open_nursery() as inner:
                for sid, peer in peers:
                    inner.start_soon(collect, sid, peer)
            nursery.cancel_scope.cancel()
    for user, got in seen.items():
        assert {own[u] for u in got} == {own[user]}


async def test_many_sockets_racing_the_session_load(server: Running, single_port: bool) -> None:
    """50 participants connect at once to a session not yet in memory: every one of them
    is admitted (the session actor is loaded once, and nobody attaches to it before its
    nursery runs)."""
    created = await server.create_session()
    members = [await server.join(created["session_id"], f"p{i}") for i in range(50)]
    states: list[dict[str, Any]] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def one(member: dict[str, Any]) -> None:
                peer = await connect(server, nursery, member, single_port)
                states.append(peer.joined)

            async with trio.open_nursery() as racers:
                for member in members:
                    racers.start_soon(one, member)
            nursery.cancel_scope.cancel()
    assert len(states) == 50
    assert server.hub.stats.session_crashes == 0
