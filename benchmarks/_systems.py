"""The systems under test: locshare and the reference servers of ``compare``.

Each is started pinned to the server CPU (``taskset``; the load runs on the others) on
free local ports, and stopped afterwards.  A :class:`System` tells the controller which
processes to sample (CPU, RSS) and, for locshare, how to crash and restart it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from . import _server

REFERENCE_DIR = Path(__file__).parent / "reference"


class SystemUnavailable(Exception):
    """A reference system is not installed here: the comparison skips it."""


@dataclass
class System:
    name: str
    protocol: str
    host: str = "127.0.0.1"
    port: int = 0
    base_url: str = ""  # locshare REST
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None  # the process to sample (None with --target and no --server-pid)
    workdir: Path | None = None
    version: str = ""
    notes: list[str] = field(default_factory=list)

    def server_process(self) -> psutil.Process | None:
        if self.pid is None:
            return None
        try:
            return psutil.Process(self.pid)
        except psutil.Error:
            return None

    def database_processes(self) -> list[psutil.Process]:
        return []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


class LocshareSystem(System):
    """locshare started here (``benchmarks/_server.py``) or a ``--target``."""

    def __init__(
        self,
        target: str | None = None,
        server_pid: int | None = None,
        separate_db: bool = False,
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        from locshare._version import __version__

        super().__init__("locshare", "locshare", version=__version__)
        self.server: _server.ServerProcess | None = None
        self.restarted_at: float | None = None
        if target:
            self.base_url = target.rstrip("/")
            self.pid = server_pid
            if server_pid is None:
                self.notes.append("external target without --server-pid: no server CPU/RSS")
            return
        self.server = _server.start_server(separate_db=separate_db, host=host, netns=netns)
        self.base_url = self.server.base_url
        self.pid = self.server.proc.pid
        self.host = host
        self.port = self.server.ws_port

    def database_processes(self) -> list[psutil.Process]:
        if self.server is None:
            return []
        return _server.database_processes(self.server.data_dir)

    def kill(self) -> None:
        assert self.server is not None, "fault needs a server started by the benchmark"
        _server.kill_server(self.server)

    def restart(self) -> None:
        """Start again on the same ports and data dir (the database is reused)."""
        old = self.server
        assert old is not None
        deadline = time.monotonic() + 30
        while True:
            try:
                self.server = _server.start_server(
                    data_dir=old.data_dir,
                    port=old.port,
                    ws_port=old.ws_port,
                    host=old.host,
                    netns=old.netns,
                )
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the port may still be held for a moment
        self.pid = self.server.proc.pid
        self.restarted_at = time.time()

    def stop(self) -> None:
        if self.server is not None:
            _server.stop_server(self.server)
            _server.stop_database(self.server.data_dir)
            shutil.rmtree(self.server.data_dir, ignore_errors=True)
            self.server = None


def _pinned(cmd: list[str]) -> list[str]:
    cpu = _server.server_cpu()
    if cpu is not None and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemUnavailable(f"exited with {proc.returncode}: {err[-400:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemUnavailable(f"did not listen on port {port} within {timeout:.0f} s")


def _start(
    name: str, protocol: str, cmd: list[str], port: int, workdir: Path, version: str
) -> System:
    proc = subprocess.Popen(
        _pinned(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir
    )
    system = System(
        name, protocol, port=port, proc=proc, pid=proc.pid, workdir=workdir, version=version
    )
    try:
        _wait_port(port, proc)
    except SystemUnavailable:
        system.stop()
        raise
    return system


def start_ws_broadcast() -> System:
    """benchmarks/reference/ws_broadcast.py: asyncio ``websockets`` room broadcast."""
    try:
        import websockets
    except ImportError as exc:
        raise SystemUnavailable(
            "the websockets package is not installed (pip install websockets)"
        ) from exc
    port = _server._free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    script = REFERENCE_DIR / "ws_broadcast.py"
    return _start(
        "websockets broadcast",
        "ws",
        [sys.executable, str(script), "--port", str(port)],
        port,
        workdir,
        f"websockets {getattr(websockets, '__version__', '?')}",
    )


MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "mosquitto")


def start_mosquitto() -> System:
    """Mosquitto (the broker behind OwnTracks): its own instance, no persistence."""
    binary = next((b for b in MOSQUITTO_CANDIDATES if shutil.which(b)), None)
    if binary is None:
        raise SystemUnavailable("mosquitto is not installed (apt install mosquitto)")
    port = _server._free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_connections -1\nlog_dest stderr\nlog_type error\n"
        "max_queued_messages 10000\n"
    )
    if os.geteuid() == 0:
        conf.write_text(conf.read_text() + "user root\n")
    version = subprocess.run([binary, "-h"], capture_output=True, text=True).stdout.splitlines()
    return _start(
        "Mosquitto MQTT",
        "mqtt",
        [binary, "-c", str(conf)],
        port,
        workdir,
        version[0] if version else "mosquitto",
    )


def start_redis() -> System:
    """Redis pub/sub: its own instance, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemUnavailable("redis-server is not installed (apt install redis-server)")
    port = _server._free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    return _start(
        "Redis pub/sub",
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxclients",
            "20000",
            "--dir",
            str(workdir),
        ],
        port,
        workdir,
        version.split(" sha=")[0],
    )


REFERENCES = {"ws": start_ws_broadcast, "mqtt": start_mosquitto, "redis": start_redis}
