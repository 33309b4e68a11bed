"""Browser tests: a real ``locshare serve`` process and Debian's chromium driven by Playwright.

Playwright's async API needs asyncio while this suite runs under pytest-trio, so the
browser tests are plain sync functions using Playwright's sync API, and the server runs
as a subprocess configured through the environment (as in ``tests/test_cli.py``); its
ports come from the "locshare is listening" JSON log line.

Chromium is the system's (``apt-get install chromium``), never a Playwright download.
Without it the browser tests are skipped, unless ``CI`` is set: then they fail.

Screenshots go to ``test-artifacts/web/`` (git-ignored). With
``LOCSHARE_UPDATE_DOCS_IMAGES=1`` the ones the README shows are also copied to
``docs/img/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.conftest import JWT_SECRET

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "web"
DOCS_IMAGES = ROOT / "docs" / "img"

# Fast enough for tests, slow enough for a loaded 2-core machine: a sharing page sends
# every second and stays fresh for 5 s.
UPDATE_INTERVAL_S = 1
LOCATION_TTL_S = 5
SERVER_START_TIMEOUT_S = 60
# Generous: other work shares the machine's two cores.
BROWSER_TIMEOUT_MS = 20_000
expect.set_options(timeout=BROWSER_TIMEOUT_MS)

PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class WebServer:
    """``python -m locshare serve`` in a subprocess; :meth:`restart` keeps the port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = 0
        self.log: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> None:
        listening = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "locshare", "serve"],
            env={
                **os.environ,
                **self.env,
                "LOCSHARE_PORT": str(port),
                "LOCSHARE_WS_PORT": "0",
                "LOCSHARE_HOST": "127.0.0.1",
                "LOCSHARE_LOG_FORMAT": "json",
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(
            target=self._read_log, args=(self.proc, listening), daemon=True
        )
        self._reader.start()
        if not listening.wait(SERVER_START_TIMEOUT_S):
            self.stop()
            pytest.fail(f"locshare did not start; log: {self.log[-5:]}")

    def _read_log(self, proc: subprocess.Popen[bytes], listening: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            self.log.append(entry)
            if entry.get("msg") == "locshare is listening":
                self.port = int(entry["port"])
                listening.set()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        port = self.port
        self.stop()
        self.start(port)

    # --- REST, for setting up and checking ------------------------------------------------
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10)

    def create_session(self, **body: Any) -> dict[str, Any]:
        with self.http() as http:
            response = http.post("/api/sessions", json=body or None)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def session(self, session_id: str) -> dict[str, Any]:
        with self.http() as http:
            response = http.get(f"/api/sessions/{session_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def end_session(self, created: dict[str, Any]) -> None:
        with self.http() as http:
            response = http.delete(
                f"/api/sessions/{created['session_id']}",
                headers={"Authorization": f"Bearer {created['creator_token']}"},
            )
        assert response.status_code == 204, response.text


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "LOCSHARE_DATABASE_URL": database_url,
        "LOCSHARE_JWT_SECRET": JWT_SECRET,
        "LOCSHARE_TILE_URL": "",  # no internet here: markers on the neutral background
        "LOCSHARE_UPDATE_INTERVAL_S": str(UPDATE_INTERVAL_S),
        "LOCSHARE_LOCATION_TTL_S": str(LOCATION_TTL_S),
        "LOCSHARE_SHUTDOWN_GRACE_S": "1",
        "LOCSHARE_GC_TUNING": "false",
        "LOCSHARE_SESSIONS_PER_ADDRESS_PER_MIN": "100000",
        "LOCSHARE_JOINS_PER_SESSION_PER_MIN": "100000",
        "LOCSHARE_WS_CONNECTIONS_PER_ADDRESS": "100000",
        "LOCSHARE_WS_CONNECTS_PER_ADDRESS_PER_MIN": "100000",
        **extra,
    }


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Module scope, not session: Playwright's sync API keeps an asyncio loop around,
    # which must be gone before the trio tests of other modules run.
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install chromium"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    with standard_asyncio_policy(), sync_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def devices(playwright: Playwright) -> dict[str, dict[str, Any]]:
    """Playwright's device descriptors (user agent, viewport, is_mobile, has_touch), for
    ``open_tab(devices["Pixel 7"])``; all of them are emulated in this Chromium."""
    return dict(playwright.devices)


@contextlib.contextmanager
def standard_asyncio_policy() -> Iterator[None]:
    """Playwright's sync API makes its own asyncio loop with ``asyncio.new_event_loop()``;
    trio-asyncio (imported for the database) replaces the loop policy process-wide, which
    would hand Playwright a trio-asyncio loop.  Use the standard policy meanwhile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies are deprecated in 3.14
        previous = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(previous)


@pytest.fixture(scope="module")
def web_server(database_url: str) -> Iterator[WebServer]:
    server = WebServer(server_env(database_url))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_server(database_url: str) -> Iterator[Callable[..., WebServer]]:
    """A server of the test's own (for restarts or other settings)."""
    started: list[WebServer] = []

    def make(**extra: str) -> WebServer:
        server = WebServer(server_env(database_url, **extra))
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@dataclass
class Tab:
    """One browser context with one page, and every console error it produced."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    def assert_no_console_errors(self) -> None:
        assert self.errors == []


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    tabs: list[Tab] = []

    def open_tab(device: dict[str, Any] = PHONE, **options: Any) -> Tab:
        context = browser.new_context(**device, **options)
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        page = context.new_page()
        tab = Tab(context, page)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                tab.errors.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
        tabs.append(tab)
        return tab

    yield open_tab
    for tab in tabs:
        tab.context.close()


DOCS_SCREENSHOTS = {"join-page-phone": "join-page.png", "live-map-desktop": "live-map.png"}


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if name in DOCS_SCREENSHOTS and os.environ.get("LOCSHARE_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / DOCS_SCREENSHOTS[name])
    return path
