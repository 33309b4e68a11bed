"""Abuse limits: each answers rate_limited (429 or the WebSocket error) and never
degrades anyone else.  A second loopback address (127.0.0.2) plays "someone else"."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import wrap_client_stream

from tests.conftest import Running
from tests.net.rawws import RawWebSocket


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {
        "sessions_per_address_per_min": 3,
        "joins_per_session_per_min": 4,
        "ws_connections_per_address": 2,
        "max_sessions_in_memory": 2,
    }


def other_client(server: Running) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.info.port}", transport=transport, timeout=10
    )


async def test_session_creation_per_address(server: Running) -> None:
    for _ in range(3):
        assert (await server.http.post("/api/sessions")).status_code == 201
    refused = await server.http.post("/api/sessions")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    # 3 per minute: the next token comes at most 20 s after the burst.
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    async with other_client(server) as other:
        assert (await other.post("/api/sessions")).status_code == 201
    # Reads are not limited.
    assert (await server.http.get("/health")).status_code == 200


async def test_joins_per_session(server: Running) -> None:
    async with other_client(server) as other:
        busy = (await other.post("/api/sessions")).json()
        calm = (await other.post("/api/sessions")).json()
        for i in range(4):
            assert (
                await other.post(
                    f"/api/sessions/{busy['session_id']}/join", json={"display_name": f"p{i}"}
                )
            ).status_code == 201
        refused = await other.post(
            f"/api/sessions/{busy['session_id']}/join", json={"display_name": "late"}
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 15  # 4 per minute
        assert (
            await other.post(f"/api/sessions/{calm['session_id']}/join", json={"display_name": "x"})
        ).status_code == 201


async def open_ws(
    port: int, token: str, nursery: trio.Nursery, local: str | None = None
) -> tuple[Any, trio.SocketStream]:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    ws = await wrap_client_stream(nursery, stream, "127.0.0.1", f"/ws?token={token}")
    return ws, stream


async def test_websocket_connections_per_address_and_sessions_in_memory(server: Running) -> None:
    async with other_client(server) as other:
        sessions = [(await other.post("/api/sessions")).json() for _ in range(3)]
        members = [
            [
                (
                    await other.post(
                        f"/api/sessions/{s['session_id']}/join", json={"display_name": f"m{i}"}
                    )
                ).json()
                for i in range(3)
            ]
            for s in sessions
        ]
    streams: list[trio.SocketStream] = []
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for member in members[0][:2]:
                    ws, stream = await open_ws(
                        server.info.ws_port, member["websocket_token"], nursery
                    )
                    streams.append(stream)
                    assert orjson.loads(await ws.get_message())["type"] == "session_state"
                # A third socket from this address is refused before the upgrade.
                try:
                    raw = await RawWebSocket.connect(
                        server.info.ws_port, f"/ws?token={members[0][2]['websocket_token']}"
                    )
                except ConnectionError as exc:
                    assert "429" in str(exc)
                else:
                    await raw.aclose()
                    raise AssertionError("a third connection was accepted")
                # Someone else is not affected.
                ws, stream = await open_ws(
                    server.info.ws_port,
                    members[0][2]["websocket_token"],
                    nursery,
                    local="127.0.0.2",
                )
                streams.append(stream)
                assert orjson.loads(await ws.get_message())["type"] == "session_state"
                # Two sessions are live in memory now (the maximum); a third is refused...
                ws, stream = await open_ws(
                    server.info.ws_port,
                    members[1][0]["websocket_token"],
                    nursery,
                    local="127.0.0.2",
                )
                streams.append(stream)
                assert orjson.loads(await ws.get_message())["type"] == "session_state"
                try:
                    raw = await RawWebSocket.connect(
                        server.info.ws_port, f"/ws?token={members[2][0]['websocket_token']}"
                    )
                except ConnectionError as exc:
                    assert "429" in str(exc)
                else:
                    await raw.aclose()
                    raise AssertionError("a third live session was loaded")
                # ...while the live ones keep working.
                assert len(server.hub.sessions) == 2
                assert uuid.UUID(sessions[2]["session_id"]) not in server.hub.sessions
                nursery.cancel_scope.cancel()
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)
    metrics = (await server.http.get("/metrics")).text
    assert "locshare_rate_limited_total" in metrics


async def test_ids_and_tokens_are_unguessable(server: Running) -> None:
    created = [await server.create_session() for _ in range(2)]
    ids = [uuid.UUID(c["session_id"]) for c in created]
    assert all(i.version == 4 for i in ids)  # 122 random bits each
    joined = await server.join(created[0]["session_id"], "x")
    assert uuid.UUID(joined["user_id"]).version == 4
    # Tokens are HMAC-SHA256 signed: changing any character of the signature fails.
    token = joined["websocket_token"]
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    response = await server.http.get(
        f"/api/sessions/{created[0]['session_id']}/participants",
        headers={"Authorization": f"Bearer {tampered}"},
    )
    assert response.status_code == 401


async def test_no_cross_session_access_across_many_sessions(server: Running) -> None:
    """Every participant's token against every other session: always refused."""
    sessions = [await server.create_session() for _ in range(2)]
    async with other_client(server) as other:
        sessions += [(await other.post("/api/sessions")).json() for _ in range(3)]
    members = {s["session_id"]: await server.join(s["session_id"], "p") for s in sessions}
    for own_sid, member in members.items():
        for sid in members:
            if sid == own_sid:
                continue
            headers = {"Authorization": f"Bearer {member['websocket_token']}"}
            assert (
                await server.http.get(f"/api/sessions/{sid}/participants", headers=headers)
            ).status_code == 403
            target = members[sid]["user_id"]
            assert (
                await server.http.delete(
                    f"/api/sessions/{sid}/participants/{target}", headers=headers
                )
            ).status_code == 403
            assert (
                await server.http.delete(f"/api/sessions/{sid}", headers=headers)
            ).status_code == 403


@pytest.mark.parametrize(
    "server_overrides", [{"sessions_per_address_per_min": 1, "trusted_proxy_hops": 1}]
)
async def test_behind_a_trusted_proxy_limits_apply_per_forwarded_client(server: Running) -> None:
    def via_proxy(client: str) -> dict[str, str]:
        return {"X-Forwarded-For": f"{client}, 10.0.0.1"}  # the proxy appends the client

    # One hop trusted: the last X-Forwarded-For entry is the client's address.
    assert (
        await server.http.post("/api/sessions", headers={"X-Forwarded-For": "203.0.113.7"})
    ).status_code == 201
    assert (
        await server.http.post("/api/sessions", headers={"X-Forwarded-For": "203.0.113.7"})
    ).status_code == 429
    assert (
        await server.http.post("/api/sessions", headers={"X-Forwarded-For": "198.51.100.9"})
    ).status_code == 201
    # A client cannot dodge the limit by sending its own header: the proxy's entry wins.
    assert (
        await server.http.post("/api/sessions", headers=via_proxy("1.2.3.4"))
    ).status_code == 201
    assert (
        await server.http.post("/api/sessions", headers=via_proxy("5.6.7.8"))
    ).status_code == 429
