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

from . import _load, _server

REFERENCE_DIR = Path(__file__).parent / "reference"
REDIS_INFO_TIMEOUT_S = 5.0
# The counters of Redis's INFO that say how much the session bus carried.
REDIS_COUNTERS = {
    "cmdstat_publish": "publishes",  # messages the nodes published (every bus tick, beats)
    "total_net_input_bytes": "net_input_bytes",
    "total_net_output_bytes": "net_output_bytes",  # the messages again, once per subscriber
    "total_commands_processed": "commands",
}

RedisAddress = tuple[str, int] | str  # host and port, or a Unix socket's path


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

    def server_processes(self) -> dict[str, psutil.Process]:
        """Every server-side process to sample, by role (``server``; in cluster shapes
        ``supervisor``, ``worker 0``..., ``node 0``..., ``redis``).  A role keeps its
        name when its process is replaced (a restarted worker)."""
        proc = self.server_process()
        return {"server": proc} if proc is not None else {}

    def shape(self) -> dict[str, object]:
        """What ran server-side, for ``results.json`` and the tables."""
        return {"kind": "single", "processes": 1}

    def metrics_urls(self) -> dict[str, str]:
        """Where each process's /metrics can be read (none where processes share a port:
        the answer would come from any of them)."""
        return {}

    def database_processes(self) -> list[psutil.Process]:
        return []

    def redis_address(self) -> RedisAddress | None:
        """The Redis a cluster shape relays through (its counters are read at the start
        and at the end of the measurement), or None."""
        return None

    def assign(self, participants: list[_load.Participant]) -> list[_load.Participant]:
        """Which node each participant connects to, where the system decides (nodes at
        distinct addresses); by default the URL their join returned."""
        return participants

    def place_churn(self, slots: list[_load.ChurnSlot]) -> list[_load.ChurnSlot]:
        """Where churners connect (as :meth:`assign`); by default where their join says."""
        return slots

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
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        from locshare._version import __version__

        super().__init__("locshare", "locshare", version=__version__)
        self.server: _server.ServerProcess | None = None
        self.restarted_at: float | None = None
        self.workers = workers
        self._roles: dict[int, str] = {}  # pid -> role, for the supervisor's children
        if workers > 1:
            self.name = f"locshare, {workers} workers"
        if target:
            self.base_url = target.rstrip("/")
            self.pid = server_pid
            if server_pid is None:
                self.notes.append("external target without --server-pid: no server CPU/RSS")
            return
        self.server = _server.start_server(
            separate_db=separate_db, host=host, netns=netns, workers=workers, extra_env=extra_env
        )
        self.base_url = self.server.base_url
        self.pid = self.server.proc.pid
        self.host = host
        self.port = self.server.ws_port

    def server_processes(self) -> dict[str, psutil.Process]:
        if self.workers <= 1:
            return super().server_processes()
        supervisor = self.server_process()
        if supervisor is None:
            return {}
        out = {"supervisor": supervisor}
        with contextlib.suppress(psutil.Error):
            for child in supervisor.children():
                role = self._roles.get(child.pid) or self._role_of(child)
                if role:
                    self._roles[child.pid] = role
                    out[role] = child
        return out

    def _role_of(self, child: psutil.Process) -> str | None:
        """``redis``, or ``worker i`` from the node id the supervisor gave it
        (``<host>-w<i>``): stable across a worker's restarts."""
        try:
            if child.name().startswith("redis"):
                return "redis"
            node_id = child.environ().get("LOCSHARE_NODE_ID", "")
        except psutil.Error:
            return None
        _, _, index = node_id.rpartition("-w")
        return f"worker {index}" if index.isdigit() else None

    def shape(self) -> dict[str, object]:
        if self.workers <= 1:
            return super().shape()
        return {
            "kind": "workers",
            "workers": self.workers,
            "processes": self.workers + 2,
            "redis": "private redis-server of the supervisor (Unix socket)",
            "ports": "shared by the workers (SO_REUSEPORT)",
        }

    def metrics_urls(self) -> dict[str, str]:
        return {"server": self.base_url} if self.workers <= 1 and self.base_url else {}

    def database_processes(self) -> list[psutil.Process]:
        if self.server is None:
            return []
        return _server.database_processes(self.server.data_dir)

    def redis_address(self) -> RedisAddress | None:
        """The supervisor's private Redis: a Unix socket in its data directory
        (``redis/redis.sock``, locshare/cluster/_supervisor.py)."""
        if self.workers <= 1 or self.server is None:
            return None
        path = self.server.data_dir / "redis" / "redis.sock"
        return str(path) if path.exists() else None

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
                    workers=self.workers,
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
            log_path = os.environ.get("LOCSHARE_BENCH_SERVER_LOG")
            if log_path:  # the server's stderr, for looking into a run
                Path(log_path).write_text("\n".join(self.server.log_lines) + "\n")
            _server.stop_database(self.server.data_dir)
            shutil.rmtree(self.server.data_dir, ignore_errors=True)
            self.server = None


def redis_counters(address: RedisAddress) -> dict[str, int]:
    """What the session bus carried so far, from Redis's ``INFO stats`` and ``INFO
    commandstats`` (:data:`REDIS_COUNTERS`); empty if Redis cannot be asked."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    text = b""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(REDIS_INFO_TIMEOUT_S)
            sock.connect(address)
            for section in (b"stats", b"commandstats"):
                sock.sendall(b"INFO %s\r\n" % section)
                text += _read_bulk(sock)
    except (OSError, ValueError):
        return {}
    out: dict[str, int] = {}
    for line in text.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        name = REDIS_COUNTERS.get(key)
        if name is None:
            continue
        if key.startswith("cmdstat_"):  # calls=N,usec=...
            value = value.split(",")[0].partition("=")[2]
        with contextlib.suppress(ValueError):
            out[name] = int(value)
    return out


def _read_bulk(sock: socket.socket) -> bytes:
    """One RESP bulk string (``$<length>\r\n<data>\r\n``)."""
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("Redis closed the connection")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n")
    if not head.startswith(b"$"):
        raise ValueError(f"not a bulk string: {head[:40]!r}")
    length = int(head[1:])
    while len(buf) < length + 2:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("Redis closed the connection")
        buf += chunk
    return buf[:length]


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
