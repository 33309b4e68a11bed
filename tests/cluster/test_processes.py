"""Cluster nodes as real processes: one is SIGKILLed mid-session (issue 13).

The other node shows the dead node's members offline within 10 s (heartbeats stop);
their clients reconnect to the surviving node and receive again within 5 s; the
participants on the surviving node see no gap.
"""

from __future__ import annotations

import itertools
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.cluster.conftest import RedisServer
from tests.conftest import JWT_SECRET
from tests.net.test_websocket import _hold
from tests.test_cli import Server


def node_env(tmp_path: Path, name: str, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "LOCSHARE_DATA_DIR": str(tmp_path / name),
        "LOCSHARE_DATABASE_URL": database_url,
        "LOCSHARE_REDIS_URL": redis_url,
        "LOCSHARE_NODE_ID": name,
        "LOCSHARE_PORT": "0",
        "LOCSHARE_WS_PORT": "0",
        "LOCSHARE_JWT_SECRET": JWT_SECRET,
        "LOCSHARE_GC_TUNING": "false",
        "LOCSHARE_WS_CONNECTS_PER_ADDRESS_PER_MIN": "100000",
    }


async def stop(*servers: Server) -> None:
    for server in servers:
        if server.proc.returncode is None:
            server.proc.terminate()
        await server.proc.wait()  # its log reader closes the pipe at the end


class Sharer:
    """A participant that sends a position every 0.25 s and records what it receives."""

    def __init__(self, joined: dict[str, Any]) -> None:
        self.joined = joined
        self.received: list[tuple[float, str]] = []  # (monotonic time, sender id)
        self.presence: list[tuple[float, str, bool]] = []
        self.connected_at: list[float] = []

    async def run(self, ports: list[int]) -> None:
        """Connect to the first port that answers; on a drop, the next (backoff 0.25 s)."""
        attempt = 0
        while True:
            port = ports[attempt % len(ports)]
            attempt += 1
            try:
                async with trio.open_nursery() as nursery:
                    ws = await nursery.start(
                        _hold, port, f"/ws?token={self.joined['websocket_token']}"
                    )
                    self.connected_at.append(trio.current_time())
                    nursery.start_soon(self._send, ws)
                    while True:
                        message = orjson.loads(await ws.get_message())
                        now = trio.current_time()
                        if message["type"] == "locations":
                            for update in message["data"]["updates"]:
                                self.received.append((now, update["user_id"]))
                        elif message["type"] == "presence":
                            data = message["data"]
                            self.presence.append((now, data["user_id"], data["online"]))
            except* (OSError, Exception):
                pass
            await trio.sleep(0.25)

    async def _send(self, ws: Any) -> None:
        lat = 10.0
        while True:
            lat += 0.0001
            await ws.send_message(
                orjson.dumps({"type": "location_update", "data": {"lat": lat, "lng": 5.0}}).decode()
            )
            await trio.sleep(0.25)


@pytest.mark.slow
async def test_a_node_killed_mid_session(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            survivor = Server(node_env(tmp_path, "survivor", database_url, redis_server.url))
            victim = Server(node_env(tmp_path, "victim", database_url, redis_server.url))
            await survivor.start(nursery)
            await victim.start(nursery)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{survivor.port}") as http:
                sid = (await http.post("/api/sessions", json={})).json()["session_id"]
                people = [
                    (await http.post(f"/api/sessions/{sid}/join", json={"display_name": n})).json()
                    for n in ("Ann", "Cy", "Bo")
                ]
            ann, cy, bo = (Sharer(p) for p in people)
            async with trio.open_nursery() as clients:
                clients.start_soon(ann.run, [survivor.ws_port])
                clients.start_soon(cy.run, [survivor.ws_port])
                clients.start_soon(bo.run, [victim.ws_port, survivor.ws_port])
                await trio.sleep(3)
                bo_id = bo.joined["user_id"]
                assert any(s == bo_id for _, s in ann.received), "Bo's updates crossed nodes"
                victim.proc.send_signal(signal.SIGKILL)
                killed = trio.current_time()
                await trio.sleep(12)
                clients.cancel_scope.cancel()
            # Bo is back (on the survivor) and receiving within 5 s of the kill.
            back = [t for t in bo.connected_at if t > killed]
            assert back, "Bo reconnected"
            receiving = [t for t, sender in bo.received if t > killed and sender != bo_id]
            assert receiving and receiving[0] - killed < 5.0, receiving[:1]
            # Ann, on the survivor, kept receiving Cy (same node) without a gap.
            times = [t for t, sender in ann.received if sender == cy.joined["user_id"]]
            around = [t for t in times if killed - 2 < t < killed + 10]
            gaps = [b - a for a, b in itertools.pairwise(around)]
            assert around and max(gaps) < 1.5, gaps
            print(
                f"bo back after {back[0] - killed:.2f} s, receiving after "
                f"{receiving[0] - killed:.2f} s; largest gap for Ann {max(gaps):.2f} s"
            )
            await stop(survivor, victim)
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_members_of_a_dead_node_go_offline_within_10_s(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Bo stays disconnected after his node dies: Ann sees him offline within 10 s."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            survivor = Server(node_env(tmp_path, "survivor", database_url, redis_server.url))
            victim = Server(node_env(tmp_path, "victim", database_url, redis_server.url))
            await survivor.start(nursery)
            await victim.start(nursery)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{survivor.port}") as http:
                sid = (await http.post("/api/sessions", json={})).json()["session_id"]
                people = [
                    (await http.post(f"/api/sessions/{sid}/join", json={"display_name": n})).json()
                    for n in ("Ann", "Bo")
                ]
            ann, bo = Sharer(people[0]), Sharer(people[1])
            async with trio.open_nursery() as clients:
                clients.start_soon(ann.run, [survivor.ws_port])
                clients.start_soon(bo.run, [victim.ws_port])  # never reconnects elsewhere
                await trio.sleep(2)
                bo_id = bo.joined["user_id"]
                assert any(u == bo_id and online for _, u, online in ann.presence) or ann.received
                victim.proc.send_signal(signal.SIGKILL)
                killed = trio.current_time()
                with trio.fail_after(12):
                    while not any(
                        u == bo_id and not online and t > killed for t, u, online in ann.presence
                    ):
                        await trio.sleep(0.1)
                offline_after = trio.current_time() - killed
                clients.cancel_scope.cancel()
            assert offline_after < 10.0
            print(f"Bo offline for Ann {offline_after:.2f} s after his node died")
            await stop(survivor, victim)
            nursery.cancel_scope.cancel()
