"""What every attack test needs: a live session with honest participants who must keep
receiving, and a raw socket for the attacker.

Rule of this suite: an attack that ever worked stays here as a test, asserting the
documented outcome *and* that an honest client in the same session kept receiving.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import trio

from tests.conftest import Running
from tests.net.rawws import Closed, RawWebSocket

_lat = itertools.count(1)


@dataclass
class Honest:
    """Two honest participants of one session (Ann sends, Bo receives), on the dedicated
    port, and the attacker's own join in the same session (``created``: the session's
    creation answer, with its creator token)."""

    server: Running
    session_id: str
    ann: RawWebSocket
    bo: RawWebSocket
    attacker: dict[str, Any]
    created: dict[str, Any] = field(default_factory=dict)

    async def assert_still_flowing(self, timeout: float = 10.0) -> None:
        """Ann's next update reaches Bo, and the server still answers readiness."""
        lat = 10.0 + next(_lat) / 1000.0
        await self.ann.send_text(
            orjson.dumps({"type": "location_update", "data": {"lat": lat, "lng": 5.0}}).decode()
        )
        with trio.fail_after(timeout):
            while True:
                _opcode, payload = await self.bo.receive()
                message = orjson.loads(payload)
                if message["type"] == "locations" and any(
                    u["lat"] == lat for u in message["data"]["updates"]
                ):
                    break
        ready = await self.server.http.get("/health/ready")
        assert ready.status_code == 200, ready.text

    def ws_resource(self) -> str:
        return f"/ws?token={self.attacker['websocket_token']}"


async def first_of(ws: RawWebSocket, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            _opcode, payload = await ws.receive()
            message = orjson.loads(payload)
            if message["type"] == kind:
                return dict(message["data"])


async def close_code(ws: RawWebSocket, timeout: float = 10.0) -> int | None:
    """Read until the server closes; its close code (``None``: no close frame)."""
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.receive()
        except Closed as exc:
            return exc.code


@pytest.fixture
async def honest(server: Running) -> AsyncIterator[Honest]:
    created = await server.create_session(name="Target")
    sid = created["session_id"]
    ann_join = await server.join(sid, "Ann")
    bo_join = await server.join(sid, "Bo")
    attacker = await server.join(sid, "Mallory")
    port = server.info.ws_port
    ann = await RawWebSocket.connect(port, f"/ws?token={ann_join['websocket_token']}")
    bo = await RawWebSocket.connect(port, f"/ws?token={bo_join['websocket_token']}")
    try:
        await first_of(ann, "session_state")
        await first_of(bo, "session_state")
        yield Honest(server, sid, ann, bo, attacker, created)
    finally:
        await ann.aclose()
        await bo.aclose()
