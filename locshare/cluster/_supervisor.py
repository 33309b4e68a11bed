"""``locshare serve --workers N``: N worker processes, one machine, one cluster.

The supervisor does no serving itself.  It provides what the workers share, then starts
them and watches them:

1. the database: the embedded PostgreSQL in the data directory (started, migrated and
   supervised here, as ``run_server`` would), unless ``--database-url``;
2. the JWT secret: the configured one, or the one generated once in the data directory,
   handed to every worker (so a token of one worker is accepted by all);
3. the session bus: ``--redis-url``, or a private ``redis-server`` from PATH on a Unix
   socket in the data directory, persistence off;
4. both ports: chosen here (a port of 0 becomes a free one) and held by a bound,
   never-listening ``SO_REUSEPORT`` socket, so that a restarted worker binds the same
   number; the workers listen with ``SO_REUSEPORT`` and the kernel spreads connections;
5. the workers: ``locshare serve`` with ``--workers 1`` and every other setting as given
   here (passed as ``LOCSHARE_*`` environment variables).

Policy: a worker that exits while nobody asked it to is started again after a backoff
(0.5 s doubling to 5 s); more than ``MAX_CRASHES`` exits within ``CRASH_WINDOW_S`` stop
everything and the supervisor exits with status 1 (a service manager then decides).
SIGTERM or SIGINT is forwarded to the workers as SIGTERM (graceful: 1001 to every
socket); after ``shutdown_grace_s`` + ``STOP_MARGIN_S`` the rest are killed, then Redis
and PostgreSQL stop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any, Final

import trio

from .._auth import load_or_create_secret
from .._config import Config, env_name
from ..errors import ConfigError, LocshareError
from ..storage._embedded import EmbeddedSupervisor, start_embedded
from ..storage._postgres import PostgresStorage

log = logging.getLogger("locshare.supervisor")

CRASH_WINDOW_S: Final = 60.0
MAX_CRASHES: Final = 5
BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 5.0
STOP_MARGIN_S: Final = 5.0
REDIS_START_TIMEOUT_S: Final = 10.0
REDIS_SOCKET: Final = "redis.sock"


class WorkersKeptCrashing(LocshareError):
    """More than MAX_CRASHES worker exits within CRASH_WINDOW_S."""


def worker_command() -> list[str]:
    """How to start ``locshare serve`` again (the one-file binary is its own interpreter)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "serve"]
    return [sys.executable, "-m", "locshare", "serve"]


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never-listening SO_REUSEPORT socket: holds the port number for the workers
    (a listening socket would take a share of the connections and never accept them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_environment(config: Config, **overrides: str) -> dict[str, str]:
    """Every setting of ``config`` as ``LOCSHARE_*`` variables, then ``overrides``."""
    env = dict(os.environ)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        env[env_name(f.name)] = (
            ("true" if value else "false") if isinstance(value, bool) else str(value)
        )
    env.update({env_name(name): value for name, value in overrides.items()})
    return env


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.count = config.worker_count
        self.data_dir = Path(config.data_dir).expanduser()
        self.crashes: deque[float] = deque()
        self.failure: LocshareError | None = None
        self.processes: dict[int, trio.Process] = {}
        self._stop = trio.Event()

    async def run(self) -> None:
        config = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database_url = config.database_url
        embedded: Any = None
        if not database_url:
            database_url, embedded = await start_embedded(self.data_dir)
        secret = load_or_create_secret(config.jwt_secret, self.data_dir)
        async with trio.open_nursery() as nursery:
            redis_url = config.redis_url
            redis: trio.Process | None = None
            redis_dir = self.data_dir / "redis"
            if not redis_url:
                redis_url, redis = await self._start_redis(redis_dir)
            # The workers' sockets: hand-overs (net/_handoff.py) and metrics (_metrics.py).
            workers_dir = str(_fresh_directory(self.data_dir / "workers"))
            http = reserve_port(config.host, config.port)
            ws = reserve_port(config.host, config.ws_port)
            try:
                async with PostgresStorage.open(database_url, pool_size=2) as storage:
                    await storage.migrate()  # once, before the workers (they would queue)
                    if embedded is not None:
                        supervisor = EmbeddedSupervisor(
                            embedded, storage, on_lost=self._database_lost
                        )
                        nursery.start_soon(supervisor.run)
                    environment = worker_environment(
                        config,
                        database_url=database_url,
                        redis_url=redis_url,
                        jwt_secret=secret,
                        port=str(http.getsockname()[1]),
                        ws_port=str(ws.getsockname()[1]),
                        reuse_port="true",
                        workers="1",
                        workers_dir=workers_dir,
                    )
                    log.info(
                        "starting workers",
                        extra={
                            "workers": self.count,
                            "port": http.getsockname()[1],
                            "ws_port": ws.getsockname()[1],
                        },
                    )
                    async with trio.open_nursery() as workers:
                        workers.start_soon(self._watch_signals)
                        for index in range(self.count):
                            workers.start_soon(self._keep_running, index, environment)
                        await self._stop.wait()
                        await self._stop_workers()
                        workers.cancel_scope.cancel()
            finally:
                http.close()
                ws.close()
                shutil.rmtree(workers_dir, ignore_errors=True)
                if redis is not None:
                    redis.terminate()
                    with trio.move_on_after(5) as waited:
                        waited.shield = True
                        await redis.wait()
                    shutil.rmtree(redis_dir, ignore_errors=True)
                nursery.cancel_scope.cancel()
        del embedded  # the embedded PostgreSQL stops when this process exits
        if self.failure is not None:
            raise self.failure

    def _database_lost(self) -> None:
        self.failure = LocshareError("the embedded PostgreSQL died and could not be restarted")
        self._stop.set()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s: stopping the workers", signal.Signals(signum).name)
                self._stop.set()
                return

    async def _keep_running(self, index: int, environment: dict[str, str]) -> None:
        backoff = BACKOFF_MIN_S
        env = {
            **environment,
            env_name("node_id"): f"{socket.gethostname()}-w{index}",
            env_name("worker_slot"): f"{index}/{self.count}",
        }
        while True:
            process = await trio.lowlevel.open_process(worker_command(), env=env)
            self.processes[index] = process
            started = trio.current_time()
            code = await process.wait()
            del self.processes[index]
            if self._stop.is_set():
                return
            now = trio.current_time()
            log.error("worker exited; starting it again", extra={"worker": index, "status": code})
            self.crashes.append(now)
            while self.crashes and self.crashes[0] < now - CRASH_WINDOW_S:
                self.crashes.popleft()
            if len(self.crashes) > MAX_CRASHES:
                self.failure = WorkersKeptCrashing(
                    f"workers exited {len(self.crashes)} times within {CRASH_WINDOW_S:g} s"
                )
                self._stop.set()
                return
            if now - started > CRASH_WINDOW_S:
                backoff = BACKOFF_MIN_S
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _stop_workers(self) -> None:
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.config.shutdown_grace_s + STOP_MARGIN_S):
            for process in list(self.processes.values()):
                await process.wait()
        for process in list(self.processes.values()):
            if process.returncode is None:
                log.warning("a worker did not stop in time; killing it")
                process.kill()

    async def _start_redis(self, directory: Path) -> tuple[str, trio.Process]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "--workers needs redis-server on PATH (Debian/Ubuntu: apt install "
                "redis-server), or an existing Redis given with --redis-url "
                "(LOCSHARE_REDIS_URL)"
            )
        sock = _fresh_directory(directory) / REDIS_SOCKET
        process = await trio.lowlevel.open_process(
            [
                binary,
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        with trio.move_on_after(REDIS_START_TIMEOUT_S):
            # Polling: nothing tells when redis-server has created its socket file.
            while not sock.exists() and process.returncode is None:  # noqa: ASYNC110
                await trio.sleep(0.02)
        if not sock.exists():
            process.kill()
            raise ConfigError(
                f"the private redis-server did not start (status {process.returncode})"
            )
        return f"unix://{sock}", process


def _fresh_directory(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)  # a killed run's leftovers
    directory.mkdir(mode=0o700)
    return directory


async def run_supervisor(config: Config) -> None:
    await Supervisor(config).run()
