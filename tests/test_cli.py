"""The command line as users run it: a real process, signals, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from tests.conftest import JWT_SECRET


def locshare(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locshare", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        **kwargs,
    )


def test_configuration_errors_exit_2_with_the_setting_named() -> None:
    result = locshare("serve", env={"LOCSHARE_PORT": "eighty"})
    assert result.returncode == 2
    assert "LOCSHARE_PORT (--port)='eighty' is not an integer" in result.stderr
    result = locshare("serve", "--location-ttl-s", "0")
    assert result.returncode == 2
    assert "LOCSHARE_LOCATION_TTL_S (--location-ttl-s)=0.0 is below the minimum" in result.stderr


def test_every_option_has_help_text() -> None:
    for command in ("serve", "settings", "healthcheck"):
        result = locshare(command, "--help")
        assert result.returncode == 0
        lines = result.stdout.splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith("--") and stripped != "--help" and "  " not in stripped:
                # An option alone on its line: its help must follow on the next line.
                following = lines[number + 1].strip() if number + 1 < len(lines) else ""
                assert following and not following.startswith("-"), (command, stripped)


def test_settings_table() -> None:
    result = locshare("settings", "--markdown")
    assert result.returncode == 0
    assert "| `LOCSHARE_PORT` | `--port` | `8080` |" in result.stdout


def test_healthcheck_fails_without_a_server() -> None:
    result = locshare("healthcheck", "--url", "http://127.0.0.1:9/health/ready", "--timeout", "1")
    assert result.returncode == 1
    assert "not ready" in result.stderr


def test_help_lists_the_main_options() -> None:
    result = locshare("serve", "--help")
    for option in ("--host", "--port", "--ws-port", "--data-dir", "--database-url", "--public-url"):
        assert option in result.stdout


async def close_code(ws: WebSocketConnection) -> int | None:
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as exc:
        return exc.reason.code


async def reap_on_exit(proc: trio.Process) -> None:
    """Ends with the process; if the test's nursery ends first, however it ends, the
    process is stopped: nothing of the server is left."""
    try:
        await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()  # SIGTERM: a supervisor also stops its workers
                with trio.move_on_after(20):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


class Server:
    """``python -m locshare serve`` in a subprocess, JSON logs read for its ports."""

    proc: trio.Process

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = 0
        self.ws_port = 0
        self.log: list[dict[str, Any]] = []

    async def start(self, nursery: trio.Nursery) -> None:
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "locshare", "serve"],
            env={
                **os.environ,
                **self.env,
                "LOCSHARE_LOG_FORMAT": "json",
                "LOCSHARE_HOST": "127.0.0.1",
            },
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        ready = trio.Event()
        nursery.start_soon(reap_on_exit, self.proc)
        nursery.start_soon(self._read_log, ready)
        with trio.fail_after(60):
            await ready.wait()

    async def _read_log(self, ready: trio.Event) -> None:
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
                        continue
                    self.log.append(entry)
                    if entry.get("msg") == "locshare is listening":
                        self.port, self.ws_port = entry["port"], entry["ws_port"]
                        ready.set()
        finally:
            with trio.CancelScope(shield=True):
                await self.proc.stderr.aclose()


async def test_serve_with_the_embedded_database_and_sigterm(tmp_path: Path) -> None:
    env = {
        "LOCSHARE_DATA_DIR": str(tmp_path / "data"),
        "LOCSHARE_PORT": "0",
        "LOCSHARE_WS_PORT": "0",
        "LOCSHARE_JWT_SECRET": JWT_SECRET,
    }
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = Server(env)
            await server.start(nursery)
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base) as http:
                created = (await http.post("/api/sessions", json={"name": "CLI"})).json()
                joined = (
                    await http.post(
                        f"/api/sessions/{created['session_id']}/join", json={"display_name": "Ann"}
                    )
                ).json()
                assert (await http.get("/health/ready")).status_code == 200
            check = await trio.run_process(
                [sys.executable, "-m", "locshare", "healthcheck"],
                env={**os.environ, "LOCSHARE_PORT": str(server.port)},
                check=False,
            )
            assert check.returncode == 0
            stream = await trio.open_tcp_stream("127.0.0.1", server.ws_port)
            try:
                async with trio.open_nursery() as client_nursery:
                    ws = await wrap_client_stream(
                        client_nursery,
                        stream,
                        "127.0.0.1",
                        f"/ws?token={joined['websocket_token']}",
                    )
                    assert orjson.loads(await ws.get_message())["type"] == "session_state"
                    signalled = trio.current_time()
                    server.proc.send_signal(signal.SIGTERM)
                    assert await close_code(ws) == 1001
            finally:
                await trio.aclose_forcefully(stream)
            assert await server.proc.wait() == 0
            print(f"SIGTERM to exit 0: {trio.current_time() - signalled:.2f} s")  # shown with -s
            messages = [entry["msg"] for entry in server.log]
            assert "received SIGTERM: shutting down gracefully" in messages
            assert messages[-1] == "locshare stopped"
            nursery.cancel_scope.cancel()
    # The embedded database kept the session across the restart (metadata, no locations).
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = Server(env)
            await server.start(nursery)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                details = (await http.get(f"/api/sessions/{created['session_id']}")).json()
                assert (details["name"], details["participant_count"], details["is_active"]) == (
                    "CLI",
                    1,
                    True,
                )
            server.proc.send_signal(signal.SIGINT)
            assert await server.proc.wait() == 0
            nursery.cancel_scope.cancel()
    # No log line carried a name, a token or a coordinate.
    text = "\n".join(json.dumps(entry) for entry in server.log)
    assert JWT_SECRET not in text and "Ann" not in text


def test_readme_settings_table_is_current() -> None:
    from locshare._cli import README_END, README_START
    from locshare._config import settings_table_markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert table == settings_table_markdown(), "run: locshare settings --update-readme README.md"


def test_settings_update_readme_rewrites_only_between_markers(tmp_path: Path) -> None:
    from locshare._cli import README_END, README_START, main
    from locshare._config import settings_table_markdown

    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n\n{README_START}\nold table\n{README_END}\n\n## after\n")
    assert main(["settings", "--update-readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# top\n\n") and text.endswith(f"{README_END}\n\n## after\n")
    assert settings_table_markdown().strip() in text
    # A file without the markers is refused and left as it was.
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# nothing to replace\n")
    assert main(["settings", "--update-readme", str(plain)]) == 2
    assert plain.read_text() == "# nothing to replace\n"
