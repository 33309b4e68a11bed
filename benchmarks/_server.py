"""Start and stop a locshare server for a benchmark: own data dir, embedded database,
pinned to one CPU with ``taskset`` (the load runs on the other CPUs)."""

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


def server_cpu() -> int | None:
    """The CPU the server is pinned to (the first one), or None with one CPU."""
    return _CPUS[0] if len(_CPUS) >= 2 else None


def load_cpus() -> list[int]:
    """The CPUs the load runs on: all but the server's."""
    return _CPUS[1:] if len(_CPUS) >= 2 else list(_CPUS)


def pin_self_to_load_cpus() -> None:
    if len(_CPUS) >= 2:
        os.sched_setaffinity(0, _CPUS[1:])


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
) -> ServerProcess:
    """``separate_db``: PostgreSQL on the load CPUs instead of the embedded one, which
    inherits the server's pinning and shares its core.  ``netns``: run the server in
    that network namespace (``ip netns exec``), listening on ``host``, which must be
    reachable from here (the lossy scenario)."""
    made_dir = data_dir is None
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="locshare-bench-"))
    if separate_db:
        extra_env = {**(extra_env or {}), "LOCSHARE_DATABASE_URL": separate_database(data_dir)}
    port = port or _free_port()
    ws_port = ws_port or _free_port()
    env = {
        **os.environ,
        **BENCH_ENV,
        "LOCSHARE_HOST": host,
        "LOCSHARE_PORT": str(port),
        "LOCSHARE_WS_PORT": str(ws_port),
        "LOCSHARE_DATA_DIR": str(data_dir),
        "LOCSHARE_LOG_FORMAT": "json",
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
    while not _answers(f"http://{host}:{port}/health/ready"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            if made_dir:
                stop_database(data_dir)
                shutil.rmtree(data_dir, ignore_errors=True)
            raise RuntimeError("the server did not start:\n" + "\n".join(server.log_lines[-20:]))
        time.sleep(0.2)
    return server


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
