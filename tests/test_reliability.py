"""Faults: a crashing session actor, a killed server, a database that goes away."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from tests.conftest import JWT_SECRET, Running, running, server_config
from tests.test_cli import Server


class Client:
    """A participant's socket on a TCP stream the test owns (and always closes)."""

    def __init__(self, port: int, joined: dict[str, Any]) -> None:
        self.port = port
        self.joined = joined
        self.ws: WebSocketConnection | None = None
        self.stream: trio.SocketStream | None = None

    async def open(self, nursery: trio.Nursery) -> dict[str, Any]:
        self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        self.ws = await wrap_client_stream(
            nursery,
            self.stream,
            "127.0.0.1",
            f"/ws?token={self.joined['websocket_token']}",
            message_queue_size=512,
        )
        frame = orjson.loads(await self.ws.get_message())
        assert frame["type"] == "session_state"
        return dict(frame["data"])

    async def send_location(self, lat: float, lng: float) -> None:
        assert self.ws is not None
        await self.ws.send_message(
            orjson.dumps({"type": "location_update", "data": {"lat": lat, "lng": lng}}).decode()
        )

    async def next_of(self, kind: str) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            frame = orjson.loads(await self.ws.get_message())
            if frame["type"] == kind:
                return dict(frame["data"])

    async def close_code(self) -> int | None:
        assert self.ws is not None
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason.code

    async def aclose(self) -> None:
        if self.stream is not None:
            await trio.aclose_forcefully(self.stream)


# --- one session's actor crashes ------------------------------------------------------
async def test_a_crashing_session_restarts_alone(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="locshare.session")
    broken_session = await server.create_session(name="broken")
    healthy_session = await server.create_session(name="healthy")
    b1, b2 = [await server.join(broken_session["session_id"], n) for n in ("b1", "b2")]
    h1, h2 = [await server.join(healthy_session["session_id"], n) for n in ("h1", "h2")]
    clients = [Client(server.info.ws_port, j) for j in (b1, b2, h1, h2)]
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    await client.open(nursery)
                broken_actor = server.hub.sessions[uuid.UUID(broken_session["session_id"])]

                def injected_fault() -> None:
                    raise RuntimeError("injected fault")

                broken_actor._flush = injected_fault  # the next flush of this one session fails
                await clients[0].send_location(1.0, 1.0)
                assert await clients[1].close_code() == 1011
                assert await clients[0].close_code() == 1011
                # The other session never noticed.
                await clients[2].send_location(2.0, 2.0)
                assert (await clients[3].next_of("locations"))["updates"][0]["lat"] == 2.0
                # The broken session's clients reconnect with their tokens to a fresh actor.
                for client in clients[:2]:
                    await client.aclose()
                    state = await client.open(nursery)
                    assert {p["display_name"] for p in state["participants"]} == {"b1", "b2"}
                await clients[0].send_location(3.0, 3.0)
                assert (await clients[1].next_of("locations"))["updates"][0]["lat"] == 3.0
                nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()
    assert server.hub.stats.session_crashes == 1
    crash = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert crash and crash[0].session_id == broken_session["session_id"]  # type: ignore[attr-defined]


# --- the server is killed and restarted ------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="locshare-crash-"))
    yield path
    # The embedded PostgreSQL may have outlived a killed server: stop it.
    pgdata = path / "data" / "pg"
    if (pgdata / "postmaster.pid").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()
    shutil.rmtree(path, ignore_errors=True)


async def test_sigkill_then_restart_recovers(data_dir: Path) -> None:
    """Sessions and participants come back from PostgreSQL, every client reconnects
    with its token and updates flow again.  How fast is measured by the `fault`
    benchmark (speed is never asserted in tests); here it is only recorded."""
    port, ws_port = free_port(), free_port()
    env = {
        "LOCSHARE_DATA_DIR": str(data_dir / "data"),
        "LOCSHARE_PORT": str(port),
        "LOCSHARE_WS_PORT": str(ws_port),
        "LOCSHARE_JWT_SECRET": JWT_SECRET,
        "LOCSHARE_JOINS_PER_SESSION_PER_MIN": "1000",
    }
    n = 20
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            first = Server(env)
            await first.start(nursery)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                created = (await http.post("/api/sessions", json={"name": "Convoy"})).json()
                sid = created["session_id"]
                joined = [
                    (
                        await http.post(
                            f"/api/sessions/{sid}/join", json={"display_name": f"rider {i}"}
                        )
                    ).json()
                    for i in range(n)
                ]
            clients = [Client(ws_port, j) for j in joined]
            async with trio.open_nursery() as sockets:
                for client in clients:
                    await client.open(sockets)
                for i, client in enumerate(clients):
                    await client.send_location(45.0 + i * 0.001, 7.0)
                await clients[-1].next_of("locations")
                first.proc.kill()  # SIGKILL in the middle of a busy session
                assert await first.proc.wait() == -signal.SIGKILL
                sockets.cancel_scope.cancel()
            for client in clients:
                await client.aclose()
            nursery.cancel_scope.cancel()

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            second = Server(env)
            await second.start(nursery)
            restarted = time.monotonic()
            async with trio.open_nursery() as sockets:
                states = []
                for client in clients:
                    states.append(await client.open(sockets))
                for i, client in enumerate(clients):
                    await client.send_location(46.0 + i * 0.001, 7.0)
                got = await clients[0].next_of("locations")
                recovery_s = time.monotonic() - restarted
                sockets.cancel_scope.cancel()
            for client in clients:
                await client.aclose()
            # Metadata survived; no location did.
            for state in states:
                assert state["session"]["name"] == "Convoy"
                assert len(state["participants"]) == n
                assert all(p["location"] is None for p in state["participants"])
            assert got["updates"]
            print(f"recovery after SIGKILL: {recovery_s:.2f} s for {n} clients")  # shown with -s
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                details = (await http.get(f"/api/sessions/{sid}")).json()
            assert (details["participant_count"], details["is_active"]) == (n, True)
            second.proc.send_signal(signal.SIGTERM)
            assert await second.proc.wait() == 0
            nursery.cancel_scope.cancel()


# --- the embedded PostgreSQL dies -------------------------------------------------------
# (It is restarted: tests/security/test_embedded_db_killed.py.)
def embedded_env(data_dir: Path) -> dict[str, str]:
    return {
        "LOCSHARE_DATA_DIR": str(data_dir / "data"),
        "LOCSHARE_PORT": "0",
        "LOCSHARE_WS_PORT": "0",
        "LOCSHARE_JWT_SECRET": JWT_SECRET,
    }


async def stop_process(process: trio.Process) -> None:
    """Kill the server if a failed test left it running."""
    if process.returncode is None:
        process.kill()
        await process.wait()


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


async def test_embedded_postgres_that_cannot_restart_makes_the_process_exit_1(
    data_dir: Path,
) -> None:
    """If PostgreSQL cannot be brought back, locshare must not linger answering 503: it
    shuts down gracefully (sockets get 1001) and exits non-zero, so that its service
    manager restarts it.  The restart is made to fail the way an operator's chmod
    would: PostgreSQL refuses a data directory that others may write."""
    pgdata = data_dir / "data" / "pg"
    server = Server(embedded_env(data_dir))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await server.start(nursery)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                    created = (await http.post("/api/sessions", json={"name": "Doomed"})).json()
                    ann = (
                        await http.post(
                            f"/api/sessions/{created['session_id']}/join",
                            json={"display_name": "Ann"},
                        )
                    ).json()
                client = Client(server.ws_port, ann)
                async with trio.open_nursery() as sockets:
                    await client.open(sockets)
                    pgdata.chmod(0o777)
                    os.kill(postmaster_pid(pgdata), signal.SIGKILL)
                    killed = trio.current_time()
                    assert await client.close_code() == 1001
                    sockets.cancel_scope.cancel()
                await client.aclose()
                assert await server.proc.wait() == 1
                print(f"exit status 1 {trio.current_time() - killed:.1f} s after the kill")  # -s
            finally:
                pgdata.chmod(0o700)
                with trio.CancelScope(shield=True):
                    await stop_process(server.proc)
            nursery.cancel_scope.cancel()
    errors = [entry["msg"] for entry in server.log if entry["level"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "locshare cannot run: the embedded PostgreSQL died and could not be restarted"
    )
    assert "has invalid permissions" in errors[0]  # PostgreSQL's reason, from its log
    failed = [e for e in server.log if e["msg"] == "restarting the embedded PostgreSQL failed"]
    assert [e["attempt"] for e in failed] == [1, 2, 3]


# --- the database goes away and comes back ----------------------------------------------
class OwnDatabase:
    """An embedded PostgreSQL of this test's own, which the test stops and starts."""

    def __init__(self, directory: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver import _commands

        self._pg_ctl = _commands.pg_ctl
        self.handle = pgserver.get_server(directory / "pg", cleanup_mode="stop")
        info = self.handle.get_postmaster_info()
        self.socket_dir = info.socket_dir
        self.pgdata = directory / "pg"
        self.url = str(self.handle.get_uri("postgres"))

    def stop(self) -> None:
        self._pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.pgdata, user=self.handle.system_user)

    def start(self) -> None:
        args = [
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        ]
        self._pg_ctl(args, pgdata=self.pgdata, user=self.handle.system_user)


@pytest.fixture
def own_database() -> Iterator[OwnDatabase]:
    directory = Path(tempfile.mkdtemp(prefix="locshare-outage-"))
    database = OwnDatabase(directory)
    yield database
    database.handle.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def outage_server(own_database: OwnDatabase, tmp_path: Path) -> AsyncIterator[Running]:
    from locshare.storage._postgres import PostgresStorage

    async with PostgresStorage.open(own_database.url) as storage:
        await storage.migrate()
    config = server_config(own_database.url, tmp_path, db_timeout_s=1.0, sweep_interval_s=0.5)
    async with running(config) as started:
        yield started


async def test_database_outage(outage_server: Running, own_database: OwnDatabase) -> None:
    server = outage_server
    created = await server.create_session()
    sid = created["session_id"]
    ann, bo = await server.join(sid, "Ann"), await server.join(sid, "Bo")
    clients = [Client(server.info.ws_port, j) for j in (ann, bo)]
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    await client.open(nursery)
                await trio.to_thread.run_sync(own_database.stop)
                # REST says so, clearly.
                response = await server.http.post("/api/sessions")
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "unavailable"
                assert int(response.headers["retry-after"]) >= 1
                ready = await server.http.get("/health/ready")
                assert ready.status_code == 503
                assert int(ready.headers["retry-after"]) >= 1
                assert (await server.http.get("/health")).json()["database"] == "unavailable"
                # The live session keeps sharing locations from memory.
                for i in range(3):
                    await clients[0].send_location(10.0 + i, 20.0)
                    assert (await clients[1].next_of("locations"))["updates"][0]["lat"] == 10.0 + i
                    await trio.sleep(0.6)  # housekeeping runs meanwhile and must not break anything
                await trio.to_thread.run_sync(own_database.start)
                back = trio.current_time()
                # Everything resumes.
                deadline = trio.current_time() + 15
                while (await server.http.get("/health/ready")).status_code != 200:
                    assert trio.current_time() < deadline
                    await trio.sleep(0.2)
                print(
                    f"REST ready {trio.current_time() - back:.2f} s after the database was back"
                )  # -s
                assert (await server.http.post("/api/sessions")).status_code == 201
                cy = await server.join(sid, "Cy")
                assert (await clients[0].next_of("participant_joined"))["user_id"] == cy["user_id"]
                await clients[1].send_location(1.0, 2.0)
                assert (await clients[0].next_of("locations"))["updates"][0]["lat"] == 1.0
                nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()


async def test_a_failing_admission_costs_one_connection(
    server: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    created = await server.create_session()
    ann, bo = (
        await server.join(created["session_id"], "Ann"),
        await server.join(created["session_id"], "Bo"),
    )
    real_connect = server.hub.connect
    calls = 0

    async def connect_failing_once(claims: Any, transport: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected admission fault")
        return await real_connect(claims, transport)

    monkeypatch.setattr(server.hub, "connect", connect_failing_once)
    first = Client(server.info.ws_port, ann)
    clients = [first, Client(server.info.ws_port, bo)]
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                with pytest.raises(ConnectionClosed):
                    await first.open(nursery)  # this one is dropped...
                await first.aclose()
                await first.open(nursery)  # ...and the listener still serves everyone
                await clients[1].open(nursery)
                await first.send_location(1.0, 2.0)
                assert (await clients[1].next_of("locations"))["updates"][0]["lat"] == 1.0
                nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()
    assert any("a connection's code failed" in r.getMessage() for r in caplog.records)
    assert server.hub.stats.connection_errors == 1
