"""Attacks on places, the route and statuses (issue 14).

* **The 20-place limit under a race** (it did not hold at first: 24 concurrent adds
  were all stored, because the count ran in the same statement as the lock it waited
  for, on a snapshot from before the wait).  Now 20 are stored and 4 get 409.
* **Bodies**: a route upload may be 8 MiB and a place 64 KiB, every other body 16 KiB;
  an announced 9 MiB route, a 100 KiB place and a 100 KiB body anywhere else get 413
  before the body is sent, and the larger limits do not leak to other paths.
* **Floods over the WebSocket**: place and status changes have their own budget (10,
  then one per 2 s): a flood stores at most that many places and tells the others at
  most that many statuses, and the session goes on.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import trio

from tests.net.rawws import RawWebSocket
from tests.security.conftest import Honest, first_of
from tests.security.wire import answers, exchange


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_twenty_places_at_most_under_concurrent_adds(honest: Honest) -> None:
    server = honest.server
    url = f"/api/sessions/{honest.session_id}/places"
    statuses: list[int] = []

    async def add(i: int) -> None:
        body = {"name": f"P{i}", "kind": "poi", "lat": 1.0, "lng": 1.0}
        response = await server.http.post(
            url, json=body, headers=bearer(honest.attacker["websocket_token"])
        )
        statuses.append(response.status_code)

    async with trio.open_nursery() as nursery:
        for i in range(24):
            nursery.start_soon(add, i)
    assert sorted(statuses) == [201] * 20 + [409] * 4, sorted(statuses)
    listed = await server.http.get(url, headers=bearer(honest.attacker["websocket_token"]))
    assert len(listed.json()["places"]) == 20
    await honest.assert_still_flowing()


def request(method: str, path: str, length: int, content_type: str, token: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Type: {content_type}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def test_large_bodies_only_where_they_belong(honest: Honest) -> None:
    port = honest.server.info.port
    sid = honest.session_id
    creator = honest.created["creator_token"]
    member = honest.attacker["websocket_token"]
    refused = [
        ("PUT", f"/api/sessions/{sid}/route", 9 << 20, "application/gpx+xml", creator),
        ("POST", f"/api/sessions/{sid}/places", 100 << 10, "application/json", member),
        ("POST", f"/api/sessions/{sid}/join", 100 << 10, "application/json", member),
        ("PUT", f"/api/sessions/{sid}/route/x", 100 << 10, "application/json", creator),
        ("POST", f"/api/sessions/{sid}/route", 100 << 10, "application/json", creator),
        ("PATCH", f"/api/sessions/{sid}/route", 100 << 10, "application/json", creator),
    ]
    for method, path, length, content_type, token in refused:
        # Only the head is sent: the answer must not wait for the body.
        raw = await exchange(port, request(method, path, length, content_type, token), until=1)
        (answer,) = answers(raw)
        assert answer.status == 413, (method, path, raw[:200])
        assert answer.headers.get("connection") == "close"
        assert orjson.loads(answer.body)["error"]["code"] == "payload_too_large"
    # Within its own limit, a route's body is read and judged on its content.
    body = b"<gpx>" + b" " * (1 << 20) + b"</gpx>"
    raw = await exchange(
        port,
        request("PUT", f"/api/sessions/{sid}/route", len(body), "application/gpx+xml", creator)
        + body,
        until=1,
        timeout=20,
    )
    (answer,) = answers(raw)
    assert answer.status == 422, raw[:300]
    await honest.assert_still_flowing()


async def flood(ws: RawWebSocket, messages: list[dict[str, Any]]) -> None:
    for message in messages:
        await ws.send_text(orjson.dumps(message).decode())
        await trio.sleep(0.11)  # inside the 10 messages/s budget: only the change budget bites


async def test_a_flood_of_places_and_statuses_is_bounded(honest: Honest) -> None:
    server = honest.server
    port = server.info.ws_port
    ws = await RawWebSocket.connect(port, honest.ws_resource())
    try:
        await first_of(ws, "session_state")
        places = [
            {
                "type": "place_add",
                "data": {"name": f"Spam {i}", "kind": "hazard", "lat": 1.0, "lng": 1.0},
            }
            for i in range(25)
        ]
        statuses = [
            {"type": "set_status", "data": {"status": "need_help", "text": f"#{i}"}}
            for i in range(25)
        ]
        with trio.fail_after(60):
            await flood(ws, places + statuses)
            await ws.send_text('{"type":"ping","data":{"id":"end"}}')
            errors = []
            while True:
                _opcode, payload = await ws.receive()
                message = orjson.loads(payload)
                if message["type"] == "pong":
                    break
                if message["type"] == "error":
                    errors.append(message["data"]["code"])
        assert "rate_limited" in errors
        stored = await server.hub.storage.list_places(uuid.UUID(honest.session_id))
        # 10 at once, then one per 2 s over the 5.5 s of the flood: far below 25.
        assert 10 <= len(stored) <= 14
        await honest.assert_still_flowing()
    finally:
        await ws.aclose()
