"""``locshare serve --workers 2`` end to end, with the README's commands (issue 13).

A supervisor starts the embedded PostgreSQL, a private redis-server and two workers that
share both ports; participants on either worker see each other; a killed worker is
started again; SIGTERM stops everything with status 0; workers that keep dying end the
supervisor with status 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
import trio

from tests.cluster.conftest import redis_required
from tests.net.test_websocket import _hold
from tests.test_cli import Server

pytestmark = pytest.mark.slow


class Supervisor(Server):
    def __init__(self, data_dir: Path) -> None:
        super().__init__(
            {
                "LOCSHARE_DATA_DIR": str(data_dir),
                "LOCSHARE_PORT": "0",
                "LOCSHARE_WS_PORT": "0",
                "LOCSHARE_WORKERS": "2",
                "LOCSHARE_GC_TUNING": "false",
            }
        )

    def workers(self) -> list[psutil.Process]:
        """The live worker processes (a killed worker not yet reaped is a zombie: skipped)."""
        alive = []
        for child in psutil.Process(self.proc.pid).children():
            try:
                if "serve" in child.cmdline() and "redis" not in child.name():
                    alive.append(child)
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue
        return alive


async def join(http: httpx.AsyncClient, sid: str, name: str) -> dict[str, Any]:
    response = await http.post(f"/api/sessions/{sid}/join", json={"display_name": name})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_two_workers_serve_one_session(tmp_path: Path) -> None:
    redis_required()
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(tmp_path / "data")
            await supervisor.start(nursery)
            with trio.fail_after(30):
                while len(supervisor.workers()) < 2:
                    await trio.sleep(0.1)
            base = f"http://127.0.0.1:{supervisor.port}"
            async with httpx.AsyncClient(base_url=base) as http:
                # Fresh connections land on both workers (SO_REUSEPORT).
                nodes = set()
                for _ in range(40):
                    async with httpx.AsyncClient(base_url=base) as fresh:
                        nodes.add((await fresh.get("/health/detailed")).json()["bus"]["node_id"])
                assert len(nodes) == 2, nodes
                sid = (await http.post("/api/sessions", json={})).json()["session_id"]
                people = [await join(http, sid, f"p{i}") for i in range(6)]
            async with trio.open_nursery() as clients:
                sockets = [
                    await clients.start(
                        _hold, supervisor.ws_port, f"/ws?token={p['websocket_token']}"
                    )
                    for p in people
                ]
                for ws in sockets:
                    assert orjson.loads(await ws.get_message())["type"] == "session_state"
                await sockets[0].send_message(
                    orjson.dumps(
                        {"type": "location_update", "data": {"lat": 1.25, "lng": 2.5}}
                    ).decode()
                )
                for ws in sockets[1:]:
                    with trio.fail_after(10):
                        while True:
                            message = orjson.loads(await ws.get_message())
                            if message["type"] == "locations":
                                assert message["data"]["updates"][0]["lat"] == 1.25
                                break
                clients.cancel_scope.cancel()
            # A killed worker is started again.
            victim = supervisor.workers()[0]
            victim.kill()
            with trio.fail_after(30):
                while True:
                    alive = [w for w in supervisor.workers() if w.pid != victim.pid]
                    if len(alive) == 2:
                        break
                    await trio.sleep(0.2)
            messages = [entry.get("msg") for entry in supervisor.log]
            assert "worker exited; starting it again" in messages
            # SIGTERM: everything stops, status 0, nothing left behind.
            children = psutil.Process(supervisor.proc.pid).children(recursive=True)
            supervisor.proc.send_signal(signal.SIGTERM)
            assert await supervisor.proc.wait() == 0
            with trio.fail_after(10):
                while any(child.is_running() and child.status() != "zombie" for child in children):
                    await trio.sleep(0.1)
            assert not (tmp_path / "data" / "redis").exists()
            nursery.cancel_scope.cancel()


async def test_workers_that_keep_dying_end_the_supervisor_with_status_1(tmp_path: Path) -> None:
    redis_required()
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(tmp_path / "data")
            await supervisor.start(nursery)
            killed: set[int] = set()
            while supervisor.proc.returncode is None:
                for worker in supervisor.workers():
                    if worker.pid not in killed:
                        killed.add(worker.pid)
                        worker.kill()
                await trio.sleep(0.2)
            assert await supervisor.proc.wait() == 1
            assert len(killed) > 5
            errors = [e["msg"] for e in supervisor.log if e.get("level") == "error"]
            assert any("workers exited" in message for message in errors), errors
            nursery.cancel_scope.cancel()


def test_workers_without_redis_server_name_the_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {
        **os.environ,
        "PATH": str(empty),
        "LOCSHARE_DATA_DIR": str(tmp_path / "data"),
        "LOCSHARE_PORT": "0",
        "LOCSHARE_WS_PORT": "0",
        "LOCSHARE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
    }
    result = subprocess.run(
        [sys.executable, "-m", "locshare", "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "apt install redis-server" in result.stderr
