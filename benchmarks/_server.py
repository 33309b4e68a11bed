"""Start and stop a locshare server for a benchmark: own data dir, embedded database,
pinned to one CPU with ``taskset`` (the load runs on the other CPUs).

Placement.  By default the server (and its embedded PostgreSQL, which inherits the
pinning) runs on the first CPU and the load on the others.  Cluster shapes (``--workers
N``, ``--nodes N``) cannot be held to one core, so :func:`share_cores` switches to
*shared* placement: nothing is pinned, the server side and the load client both run on
every CPU, and the load client's CPU is reported next to the server's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# Run the server from another checkout (e.g. ``git worktree add /tmp/bench HEAD``) while
# this one is being edited: its directory goes first on the server's PYTHONPATH.
SOURCE_ENV = "LOCSHARE_BENCH_SOURCE"

# Limits meant for the open internet would throttle a load test from one address.
BENCH_ENV = {
    "LOCSHARE_SESSIONS_PER_ADDRESS_PER_MIN": "1000000",
    "LOCSHARE_JOINS_PER_SESSION_PER_MIN": "1000000",
    "LOCSHARE_WS_CONNECTIONS_PER_ADDRESS": "1000000",
    "LOCSHARE_WS_CONNECTS_PER_ADDRESS_PER_MIN": "1000000",
    "LOCSHARE_MAX_MESSAGES_PER_S": "1000",
    "LOCSHARE_LOG_LEVEL": "WARNING",
}


# Settings that change what is measured (the flush window: batching against CPU), taken
# from this environment or set by a command (``cluster --fixed-window``), and recorded
# with every run (``server_settings``).
RECORDED_SETTINGS = (
    "LOCSHARE_FLUSH_INTERVAL_MS",
    "LOCSHARE_FLUSH_INTERVAL_MIN_MS",
    "LOCSHARE_FLUSH_INTERVAL_MAX_MS",
)
_SETTINGS: dict[str, str] = {}


def fix_flush_window(fixed: bool = True) -> None:
    """``True``: servers started from now on keep their flush window at
    ``flush_interval_ms`` (its minimum and maximum set to it: the pacer neither narrows
    nor widens it), so that legs compare at the same batching; ``False``: back to the
    environment's settings."""
    _SETTINGS.clear()
    if fixed:
        window = os.environ.get("LOCSHARE_FLUSH_INTERVAL_MS", "100")
        _SETTINGS["LOCSHARE_FLUSH_INTERVAL_MIN_MS"] = window
        _SETTINGS["LOCSHARE_FLUSH_INTERVAL_MAX_MS"] = window


def server_settings() -> dict[str, str]:
    """The :data:`RECORDED_SETTINGS` the servers get (empty: the defaults)."""
    env = {**os.environ, **_SETTINGS}
    return {name: env[name] for name in RECORDED_SETTINGS if name in env}


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    ws_port: int
    data_dir: Path
    server_cpu: int | None
    log_lines: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    netns: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)


# The CPUs this process may use, read once: after pin_self_to_load_cpus() the process's
# own affinity no longer shows the server's CPU.
_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
_SHARED = {"on": False}


def share_cores(shared: bool = True) -> None:
    """Shared placement (``True``): nothing pinned, server side and load on every CPU;
    ``False``: back to the default (server on the first CPU, load on the others).
    Applies to servers started and load processes spawned from now on."""
    _SHARED["on"] = shared
    pin_self_to_load_cpus()


def cores_shared() -> bool:
    """Whether server and load share every CPU (always so with one CPU)."""
    return _SHARED["on"] or len(_CPUS) < 2


def server_cpu() -> int | None:
    """The CPU the server is pinned to (the first one), or None: one CPU, or shared."""
    return None if cores_shared() else _CPUS[0]


def server_cpus() -> list[int]:
    """The CPUs the server side may run on."""
    return list(_CPUS) if cores_shared() else _CPUS[:1]


def load_cpus() -> list[int]:
    """The CPUs the load runs on: all but the server's (all of them when shared)."""
    return list(_CPUS) if cores_shared() else _CPUS[1:]


def pin_self_to_load_cpus() -> None:
    if _CPUS:
        os.sched_setaffinity(0, load_cpus())


def placement() -> dict[str, object]:
    """Where things ran, for ``results.json``."""
    return {
        "shared": cores_shared(),
        "server_cpus": server_cpus(),
        "load_cpus": load_cpus(),
        "pinned_with": "taskset" if server_cpu() is not None else None,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SEPARATE_DB: dict[str, object] = {}


def separate_database(data_dir: Path) -> str:
    """A PostgreSQL started by this (load) process, so it runs on the load CPUs and not
    on the server's core: for measuring locshare alone on its core."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        handle = pgserver.get_server(data_dir / "separate-pg", cleanup_mode="stop")
    _SEPARATE_DB[str(data_dir)] = handle
    return str(handle.get_uri("postgres"))


def start_server(
    data_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    port: int = 0,
    ws_port: int = 0,
    separate_db: bool = False,
    host: str = "127.0.0.1",
    netns: str | None = None,
    workers: int = 1,
    listeners: int = 1,
) -> ServerProcess:
    """``separate_db``: PostgreSQL on the load CPUs instead of the embedded one, which
    inherits the server's pinning and shares its core.  ``netns``: run the server in
    that network namespace (``ip netns exec``), listening on ``host``, which must be
    reachable from here (the lossy scenario).  ``workers``: ``locshare serve --workers
    N`` (a supervisor, N workers, a private redis-server); ready once every worker
    listens on both ports.  ``listeners``: with ``LOCSHARE_REUSE_PORT`` in
    ``extra_env``, the processes that will then listen on these ports (this one
    included), so that readiness waits for this one's own sockets."""
    made_dir = data_dir is None
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="locshare-bench-"))
    if separate_db:
        extra_env = {**(extra_env or {}), "LOCSHARE_DATABASE_URL": separate_database(data_dir)}
    port = port or _free_port()
    ws_port = ws_port or _free_port()
    env = {
        **os.environ,
        **BENCH_ENV,
        **_SETTINGS,
        "LOCSHARE_HOST": host,
        "LOCSHARE_PORT": str(port),
        "LOCSHARE_WS_PORT": str(ws_port),
        "LOCSHARE_DATA_DIR": str(data_dir),
        "LOCSHARE_LOG_FORMAT": "json",
        **({"LOCSHARE_WORKERS": str(workers)} if workers > 1 else {}),
        **(extra_env or {}),
    }
    if host != "127.0.0.1":
        env.setdefault("LOCSHARE_PUBLIC_URL", f"http://{host}:{port}")
        env.setdefault("LOCSHARE_PUBLIC_WS_URL", f"ws://{host}:{ws_port}/ws")
    cmd = [sys.executable, "-m", "locshare", "serve"]
    cpu = server_cpu()
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    else:
        cpu = None
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    source = os.environ.get(SOURCE_ENV)
    if source:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=source or None
    )
    server = ServerProcess(proc, port, ws_port, data_dir, cpu, host=host, netns=netns)

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            server.log_lines.append(raw.decode(errors="replace").rstrip())

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 90
    shared_ports = workers > 1 or listeners > 1
    while not _answers(f"http://{host}:{port}/health/ready") or (
        shared_ports and not _all_listening(proc.pid, workers, {port, ws_port})
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            if made_dir:
                stop_database(data_dir)
                shutil.rmtree(data_dir, ignore_errors=True)
            raise RuntimeError("the server did not start:\n" + "\n".join(server.log_lines[-20:]))
        time.sleep(0.2)
    return server


def listening_ports(pid: int) -> set[int]:
    """The TCP ports ``pid`` listens on (its own sockets)."""
    try:
        proc = psutil.Process(pid)
        connections = getattr(proc, "net_connections", proc.connections)(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


def worker_processes(supervisor: int) -> list[psutil.Process]:
    """The locshare workers among the children of a ``--workers`` supervisor."""
    try:
        children = psutil.Process(supervisor).children()
    except psutil.Error:
        return []
    out = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if "locshare" in child.cmdline():
                out.append(child)
    return out


def _all_listening(pid: int, workers: int, ports: set[int]) -> bool:
    """With shared ports /health/ready may be answered by another process: wait until
    ``pid`` (or each of its ``workers``) listens on every one of ``ports``."""
    if workers <= 1:
        return ports <= listening_ports(pid)
    procs = worker_processes(pid)
    return len(procs) == workers and all(ports <= listening_ports(p.pid) for p in procs)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_server(server: ServerProcess, timeout: float = 20.0) -> int | None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    handle = _SEPARATE_DB.pop(str(server.data_dir), None)
    if handle is not None:
        handle.cleanup()  # type: ignore[attr-defined]
    return server.proc.returncode


def kill_server(server: ServerProcess) -> None:
    """SIGKILL, as a crash would: the embedded PostgreSQL keeps running."""
    server.proc.kill()
    server.proc.wait()


def database_processes(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL of ``data_dir`` (postmaster and its children).  It is
    daemonized by pg_ctl, so it is not a child of the server process."""
    marker = str(data_dir / "pg")
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "-D" in cmdline and any(arg.rstrip("/") == marker for arg in cmdline):
            with contextlib.suppress(psutil.Error):
                return [proc, *proc.children(recursive=True)]
    return []


def stop_database(data_dir: Path, timeout: float = 10.0) -> None:
    """Stop an embedded PostgreSQL left running (after a SIGKILL the server's exit
    hook never ran): fast shutdown (SIGINT) of its postmaster."""
    procs = database_processes(data_dir)
    if not procs:
        return
    with contextlib.suppress(psutil.Error):
        procs[0].send_signal(signal.SIGINT)
        procs[0].wait(timeout)


@contextlib.contextmanager
def running_server(target: str | None = None, **kwargs: object) -> Iterator[str]:
    """Yield a base URL: ``target`` if given, else a server started (and stopped) here."""
    if target:
        yield target.rstrip("/")
        return
    server = start_server(**kwargs)  # type: ignore[arg-type]
    try:
        yield server.base_url
    finally:
        stop_server(server)
        stop_database(server.data_dir)
        shutil.rmtree(server.data_dir, ignore_errors=True)
