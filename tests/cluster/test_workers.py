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
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

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


def worker_slots(supervisor: Supervisor) -> dict[int, psutil.Process]:
    """The live workers by their slot index (``LOCSHARE_WORKER_SLOT``, index/count)."""
    slots = {}
    for worker in supervisor.workers():
        try:
            slot = worker.environ().get("LOCSHARE_WORKER_SLOT", "")
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
        slots[int(slot.partition("/")[0])] = worker
    return slots


def client_ports_of(worker: psutil.Process, ports: set[int]) -> set[int]:
    """The peers' ports of ``worker``'s established connections on ``ports``."""
    return {
        c.raddr.port
        for c in worker.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port in ports and c.raddr
    }


async def test_each_session_stays_in_the_worker_that_owns_it(tmp_path: Path) -> None:
    """Session affinity: whichever worker the kernel gives a connection to, the socket
    ends in the worker that owns its session (session id modulo the workers), through
    both ports; while that worker is down its sessions are served by the other, and
    afterwards the restarted worker takes them again."""
    redis_required()
    with trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(tmp_path / "data")
            await supervisor.start(nursery)
            sockets_dir = tmp_path / "data" / "workers"
            with trio.fail_after(30):
                while len(supervisor.workers()) < 2 or len(list(sockets_dir.glob("w*.sock"))) < 2:
                    await trio.sleep(0.1)
            ports = {supervisor.port, supervisor.ws_port}
            base = f"http://127.0.0.1:{supervisor.port}"
            by_owner: dict[int, tuple[str, list[dict[str, Any]]]] = {}
            async with httpx.AsyncClient(base_url=base) as http:
                while len(by_owner) < 2:
                    sid = (await http.post("/api/sessions", json={})).json()["session_id"]
                    owner = uuid.UUID(sid).int % 2
                    if owner not in by_owner:
                        people = [await join(http, sid, f"p{i}") for i in range(8)]
                        by_owner[owner] = (sid, people)

                async def connect_one(
                    person: dict[str, Any], port: int, clients: trio.Nursery
                ) -> Any:
                    ws = await clients.start(_hold, port, f"/ws?token={person['websocket_token']}")
                    assert orjson.loads(await ws.get_message())["type"] == "session_state"
                    return ws

                async with trio.open_nursery() as clients:
                    local_ports: dict[int, set[int]] = {0: set(), 1: set()}
                    for owner, (_sid, people) in by_owner.items():
                        for i, person in enumerate(people):
                            # Half through the dedicated port, half through the REST port.
                            port = supervisor.ws_port if i % 2 else supervisor.port
                            ws = await connect_one(person, port, clients)
                            local_ports[owner].add(ws.local.port)
                    slots = worker_slots(supervisor)
                    with trio.fail_after(10):
                        while any(
                            client_ports_of(slots[owner], ports) < local_ports[owner]
                            for owner in (0, 1)
                        ):
                            await trio.sleep(0.1)
                    for owner in (0, 1):
                        held = client_ports_of(slots[owner], ports)
                        assert local_ports[owner] <= held
                        assert not local_ports[1 - owner] & held
                    # /health/detailed of each worker (a fresh connection reaches either)
                    # counts what it passed and took over: 16 sockets, each either kept
                    # or passed once.
                    seen: dict[str, dict[str, Any]] = {}
                    with trio.fail_after(30):
                        while len(seen) < 2:
                            async with httpx.AsyncClient(base_url=base) as fresh:
                                worker = (await fresh.get("/health/detailed")).json()["worker"]
                                seen[worker["slot"]] = worker
                    assert set(seen) == {"0/2", "1/2"}
                    assert all(w["affinity"] == "session" for w in seen.values())
                    sent = sum(w["handoffs"]["sent"] for w in seen.values())
                    received = sum(w["handoffs"]["received"] for w in seen.values())
                    assert sent == received > 0
                    assert all(
                        w["handoffs"]["failed"] == w["handoffs"]["refused"] == 0
                        for w in seen.values()
                    )
                    # One scrape of the shared port has every worker's metrics.
                    async with httpx.AsyncClient(base_url=base) as fresh:
                        text = (await fresh.get("/metrics")).text
                    families = {f.name: f for f in text_string_to_metric_families(text)}
                    up = families["locshare_worker_scrape_up"].samples
                    assert {(s.labels["worker"], s.value) for s in up} == {("0", 1), ("1", 1)}
                    connections = families["locshare_connections"].samples
                    assert {s.labels["worker"] for s in connections} == {"0", "1"}
                    assert sum(s.value for s in connections) == 16
                    handed = [
                        s
                        for s in families["locshare_handoffs_sent"].samples
                        if s.name.endswith("_total")
                    ]
                    assert sum(s.value for s in handed) == sent
                    # The owner of session 0 dies: its members reconnect to the other
                    # worker, which serves them while the hand-over has nowhere to go.
                    victim = slots[0]
                    victim.kill()
                    victim.wait(10)
                    _sid0, people0 = by_owner[0]
                    ws = await connect_one(people0[0], supervisor.ws_port, clients)
                    assert ws.local.port in client_ports_of(slots[1], ports)
                    # Once the slot's worker runs again, new connections go to it.
                    with trio.fail_after(60):
                        while True:
                            restarted = worker_slots(supervisor).get(0)
                            if restarted is not None and restarted.pid != victim.pid:
                                ws = await connect_one(people0[1], supervisor.ws_port, clients)
                                if ws.local.port in client_ports_of(restarted, ports):
                                    break
                                await ws.aclose()
                            await trio.sleep(0.2)
                    clients.cancel_scope.cancel()
            supervisor.proc.send_signal(signal.SIGTERM)
            assert await supervisor.proc.wait() == 0
            assert not sockets_dir.exists()
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
