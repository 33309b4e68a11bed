"""Cluster tests: a real ``redis-server`` the test starts itself, and several real locshare
nodes sharing one PostgreSQL.

Redis: a private ``redis-server`` from PATH on a Unix socket in a temporary directory,
persistence off; or the server at ``LOCSHARE_TEST_REDIS_URL``.  Without either, the
cluster tests are skipped locally and fail under ``CI=true`` (.ci/run installs Debian's
redis-server).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import Running, running, server_config


@dataclass
class RedisServer:
    url: str
    directory: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    socket: Path | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def start(self) -> None:
        """(Re)start the private server on the same socket (after :meth:`stop` or a kill)."""
        assert self.directory is not None and self.socket is not None
        self.process = _spawn(self.directory, self.socket)


def _spawn(directory: Path, sock: Path, *extra: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    process = subprocess.Popen(
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
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)
    return process


def redis_required() -> None:
    if shutil.which("redis-server") is None and not os.environ.get("LOCSHARE_TEST_REDIS_URL"):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server is not installed (CI must have it: see .ci/run)")
        pytest.skip("redis-server is not installed (apt install redis-server)")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    external = os.environ.get("LOCSHARE_TEST_REDIS_URL")
    if external:
        yield RedisServer(external)
        return
    redis_required()
    directory = Path(tempfile.mkdtemp(prefix="locshare-redis-"))
    sock = directory / "redis.sock"
    server = RedisServer(f"unix://{sock}", directory, _spawn(directory, sock), sock)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@asynccontextmanager
async def cluster(
    database_url: str, tmp_path: Path, redis_url: str, nodes: int = 2, **overrides: Any
) -> AsyncIterator[list[Running]]:
    """``nodes`` locshare servers in this process, one database, one Redis."""
    async with AsyncExitStack() as stack:
        started = []
        for i in range(nodes):
            config = server_config(
                database_url,
                tmp_path / f"node{i}",
                redis_url=redis_url,
                node_id=f"node{i}",
                **overrides,
            )
            started.append(await stack.enter_async_context(running(config)))
        yield started


async def wait_until(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)
