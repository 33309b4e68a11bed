"""The one-file binary as users (and the Dockerfile) build and run it.

Built once per run with ``python packaging/build_binary.py`` into a temporary directory
(the Dockerfile runs the same command), then run as a real process: ``serve``, REST,
the web page, WebSocket locations between two participants, ``healthcheck``, SIGTERM.

``serve`` runs three ways: with the embedded PostgreSQL in a data directory of its own;
the same as an unprivileged user when the tests run as root (root and non-root take
different paths in ``pgserver``: as root it runs PostgreSQL as the ``pgserver`` system
user, who must be able to read the unpacked bundle); and with an external database
(``LOCSHARE_DATABASE_URL``: the test suite's PostgreSQL, see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from tests.conftest import JWT_SECRET
from tests.test_cli import reap_on_exit

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# The Dockerfile's build stage runs this script too (tests/test_deploy.py checks that).
BUILD_SCRIPT = "packaging/build_binary.py"
BUILD_TIMEOUT_S = 1800
UNPRIVILEGED_UID = 65534  # nobody


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("binary")
    result = subprocess.run(
        [sys.executable, BUILD_SCRIPT, "--dist", str(out / "dist"), "--work", str(out / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    built = out / "dist" / "locshare"
    assert built.stat().st_mode & stat.S_IXUSR
    return built


def run(binary: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_commands_other_than_serve(binary: Path) -> None:
    assert run(binary, "--version").stdout.startswith("locshare ")
    settings = run(binary, "settings", "--markdown")
    assert settings.returncode == 0
    assert "| `LOCSHARE_PORT` | `--port` | `8080` |" in settings.stdout
    refused = run(binary, "serve", LOCSHARE_PORT="eighty")
    assert refused.returncode == 2
    assert "LOCSHARE_PORT (--port)='eighty' is not an integer" in refused.stderr
    down = run(binary, "healthcheck", "--url", "http://127.0.0.1:9/health/ready", "--timeout", "1")
    assert down.returncode == 1


# --- serve ------------------------------------------------------------------------------
class Peer:
    def __init__(self, ws: WebSocketConnection, joined: dict[str, Any]) -> None:
        self.ws = ws
        self.user_id = joined["user_id"]

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        await self.ws.send_message(orjson.dumps({"type": kind, "data": data}).decode())

    async def next_of(self, kind: str) -> dict[str, Any]:
        with trio.fail_after(10):
            while True:
                frame = orjson.loads(await self.ws.get_message())
                if frame["type"] == kind:
                    return dict(frame["data"])


async def hold_websocket(
    port: int, resource: str, task_status: trio.TaskStatus[WebSocketConnection]
) -> None:
    """A trio-websocket client on a TCP stream the test owns and always closes
    (``open_websocket_url`` leaks its socket when the server closes first)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", resource)
            task_status.started(ws)
            await trio.sleep_forever()
    finally:
        await trio.aclose_forcefully(stream)


class BinaryServer:
    """``locshare serve`` from the binary; its ports come from the JSON log."""

    proc: trio.Process

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command = command
        self.env = env
        self.port = 0
        self.ws_port = 0
        self.log: list[dict[str, Any]] = []
        self.other_output: list[str] = []
        self.log_closed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        self.proc = await trio.lowlevel.open_process(
            [*self.command, "serve"],
            env={
                **os.environ,
                **self.env,
                "LOCSHARE_HOST": "127.0.0.1",
                "LOCSHARE_PORT": "0",
                "LOCSHARE_WS_PORT": "0",
                "LOCSHARE_LOG_FORMAT": "json",
            },
            stderr=subprocess.PIPE,
        )
        settled = trio.Event()
        nursery.start_soon(reap_on_exit, self.proc)
        nursery.start_soon(self._read_log, settled)
        with trio.fail_after(120):
            await settled.wait()
        assert self.port, f"did not start: {self.log} {self.other_output}"

    async def _read_log(self, settled: trio.Event) -> None:
        assert self.proc.stderr is not None
        buffer = b""
        try:
            async for chunk in self.proc.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        self.other_output.append(line.decode(errors="replace"))
                        continue
                    self.log.append(entry)
                    if entry.get("msg") == "locshare is listening":
                        self.port, self.ws_port = entry["port"], entry["ws_port"]
                        settled.set()
        finally:
            with trio.CancelScope(shield=True):
                await self.proc.stderr.aclose()
        settled.set()  # exited before listening
        self.log_closed.set()


@dataclass
class Launch:
    command: list[str]
    data_dir: Path
    database_url: str = ""  # empty: the embedded PostgreSQL in data_dir

    @property
    def env(self) -> dict[str, str]:
        return {
            "LOCSHARE_DATA_DIR": str(self.data_dir),
            "LOCSHARE_DATABASE_URL": self.database_url,
            "LOCSHARE_JWT_SECRET": JWT_SECRET,
        }


@pytest.fixture(params=["embedded-db", "embedded-db-unprivileged", "external-db"])
def launch(request: pytest.FixtureRequest, binary: Path, tmp_path: Path) -> Iterator[Launch]:
    """The binary as the current user, as nobody (when root), or with an external database
    (the test suite's server: ``LOCSHARE_TEST_DATABASE_URL`` or its own pgserver)."""
    if request.param == "embedded-db":
        yield Launch([str(binary)], tmp_path / "data")
        return
    if request.param == "external-db":
        yield Launch([str(binary)], tmp_path / "data", request.getfixturevalue("fresh_database"))
        return
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run the binary as another user")
    # A directory the user nobody can enter, with a copy of the binary and the data directory.
    directory = Path(tempfile.mkdtemp(prefix="locshare-bin-"))
    try:
        directory.chmod(0o755)
        shutil.copy2(binary, directory / "locshare")
        data = directory / "data"
        data.mkdir()
        os.chown(data, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        command = [
            setpriv,
            f"--reuid={UNPRIVILEGED_UID}",
            f"--regid={UNPRIVILEGED_UID}",
            "--clear-groups",
            "--",
            str(directory / "locshare"),
        ]
        yield Launch(command, data)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_serve(launch: Launch) -> None:
    command = launch.command
    server = BinaryServer(command, launch.env)
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            await server.start(nursery)
            listening = next(e for e in server.log if e["msg"] == "locshare is listening")
            assert listening["embedded_db"] is not bool(launch.database_url)
            migrated = [e for e in server.log if e["msg"] == "database migrations applied"]
            assert migrated and migrated[0]["versions"], "migrations missing from the bundle"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                created = (await http.post("/api/sessions", json={"name": "Binary"})).json()
                sid = created["session_id"]
                # Joins run a plpgsql function: PostgreSQL's lib/ came along too.
                ann, bo = [
                    (
                        await http.post(f"/api/sessions/{sid}/join", json={"display_name": name})
                    ).json()
                    for name in ("Ann", "Bo")
                ]
                assert (await http.get("/health/ready")).status_code == 200
                # The join page renders from the bundled locshare/web templates.
                page = await http.get(f"/join/{sid}")
                assert page.status_code == 200
                assert page.headers["content-type"].startswith("text/html")
            check = await trio.run_process(
                [*command, "healthcheck"],
                env={**os.environ, "LOCSHARE_PORT": str(server.port)},
                check=False,
            )
            assert check.returncode == 0
            async with trio.open_nursery() as clients:
                a = Peer(
                    await clients.start(
                        hold_websocket, server.ws_port, f"/ws?token={ann['websocket_token']}"
                    ),
                    ann,
                )
                b = Peer(
                    await clients.start(
                        hold_websocket, server.ws_port, f"/ws?token={bo['websocket_token']}"
                    ),
                    bo,
                )
                await a.next_of("session_state")
                await b.next_of("session_state")
                await a.send("location_update", {"lat": 46.5, "lng": 8.25})
                update = (await b.next_of("locations"))["updates"][0]
                assert (update["user_id"], update["lat"], update["lng"]) == (
                    a.user_id,
                    46.5,
                    8.25,
                )
                clients.cancel_scope.cancel()
            server.proc.send_signal(signal.SIGTERM)
            assert await server.proc.wait() == 0
            await server.log_closed.wait()
    assert server.log[-1]["msg"] == "locshare stopped", server.other_output
    if not launch.database_url:
        # pgserver stopped the embedded PostgreSQL on the way out.
        assert (launch.data_dir / "pg" / "PG_VERSION").exists()
        assert not (launch.data_dir / "pg" / "postmaster.pid").exists()
