"""Shared fixtures: a real PostgreSQL, a real server on ephemeral ports, real clients.

Database: one embedded PostgreSQL (pgserver) per test run, in a temporary directory,
or the server at ``LOCSHARE_TEST_DATABASE_URL`` when set.  Either way the run gets its
own freshly created database, migrated once; tests that need an empty one (migrations)
create another with :func:`fresh_database`.

Slow suites (``@pytest.mark.slow``) run when ``CI`` is set or with ``--slow``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import trio

from locshare._clock import WallClock
from locshare._config import Config
from locshare._server import ServerInfo, run_server
from locshare.storage._postgres import PostgresStorage, drop_database, ensure_database

JWT_SECRET = "test-secret-" + "x" * 40


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow") or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: runs with --slow or CI=true")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --- database ---------------------------------------------------------------------------
def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@dataclass
class PgServer:
    admin_url: str
    handle: Any = None
    created: list[str] = field(default_factory=list)

    def new_database(self, prefix: str = "locshare_test") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        trio.run(ensure_database, self.admin_url, name)
        self.created.append(name)
        return _with_database(self.admin_url, name)

    def drop_created(self) -> None:
        for name in self.created:
            trio.run(drop_database, self.admin_url, name)
        self.created.clear()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("LOCSHARE_TEST_DATABASE_URL")
    if external:
        server = PgServer(external)
        yield server
        server.drop_created()  # leave the external server as we found it
        return
    directory = Path(tempfile.mkdtemp(prefix="locshare-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        handle = pgserver.get_server(directory / "pg", cleanup_mode="stop")
    try:
        yield PgServer(handle.get_uri("postgres"), handle)
    finally:
        handle.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


async def _migrate(url: str) -> None:
    async with PostgresStorage.open(url) as storage:
        await storage.migrate()


@pytest.fixture(scope="session")
def database_url(pg_server: PgServer) -> str:
    url = pg_server.new_database()
    trio.run(_migrate, url)
    return url


@pytest.fixture
def fresh_database(pg_server: PgServer) -> str:
    """An empty, unmigrated database of its own."""
    return pg_server.new_database("locshare_fresh")


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[PostgresStorage]:
    async with PostgresStorage.open(database_url) as opened:
        yield opened


# --- a running server -------------------------------------------------------------------
@dataclass
class Running:
    info: ServerInfo
    clock: WallClock
    shutdown: trio.Event
    http: httpx.AsyncClient

    @property
    def base(self) -> str:
        return self.info.base_url

    def ws_url(self, token: str, *, single_port: bool = False) -> str:
        if single_port:
            return f"ws://127.0.0.1:{self.info.port}/ws?token={token}"
        return f"ws://127.0.0.1:{self.info.ws_port}/ws?token={token}"

    async def create_session(self, **body: Any) -> dict[str, Any]:
        response = await self.http.post("/api/sessions", json=body or None)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def join(self, session_id: str, name: str = "Ann", **extra: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"/api/sessions/{session_id}/join", json={"display_name": name, **extra}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    @property
    def hub(self) -> Any:
        return self.info.hub


def server_config(database_url: str, data_dir: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "ws_port": 0,
        "database_url": database_url,
        "data_dir": str(data_dir),
        "jwt_secret": JWT_SECRET,
        "gc_tuning": False,
        "shutdown_grace_s": 2.0,
        "sessions_per_address_per_min": 100_000,
        "joins_per_session_per_min": 100_000,
        "ws_connections_per_address": 100_000,
        "ws_connects_per_address_per_min": 1_000_000,
    }
    values.update(overrides)
    return Config.load(values, environ={})


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    """Override in a test module to change the server's settings."""
    return {}


@pytest.fixture
async def server(
    database_url: str, tmp_path: Path, server_overrides: dict[str, Any]
) -> AsyncIterator[Running]:
    async with running(server_config(database_url, tmp_path, **server_overrides)) as started:
        yield started


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Running]:
    """A server on ephemeral ports for the duration of the block, then a clean shutdown."""
    clock = WallClock()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: run_server(
                config,
                shutdown=shutdown,
                clock=clock,
                handle_signals=False,
                task_status=task_status,
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{info.port}", timeout=10) as http:
            yield Running(info, clock, shutdown, http)
        shutdown.set()


def random_id() -> str:
    return str(uuid.uuid4())
