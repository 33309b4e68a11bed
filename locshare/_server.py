"""Everything under one ``trio.run``: storage, hub, REST (hypercorn) and the WebSocket listener.

Start-up order:
    1. the embedded PostgreSQL (unless ``database_url``), the JWT secret;
    2. storage (trio-asyncio loop + asyncpg pool) and migrations;
    3. the hub (geo tick, housekeeping, session actors);
    4. the fast WebSocket listener and hypercorn serving the quart-trio app;
    5. ``task_status.started(ServerInfo)``, then the GC tuning (Rule below).

Graceful shutdown (SIGINT/SIGTERM or ``shutdown.set()``): stop accepting on both ports,
close every WebSocket with 1001, persist activity, let in-flight requests finish
within ``shutdown_grace_s``, then return (the CLI exits 0).

Rule (GC): after start-up, ``gc.freeze()`` moves everything allocated so far out of
the collector's view and the thresholds go to (50 000, 50, 1000).  Measured on this
machine, that halved latency tails and cut CPU by a third (docs/design.md).
"""

from __future__ import annotations

import gc
import logging
import signal
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.middleware import ProxyFixMiddleware

from ._auth import TokenAuthority, load_or_create_secret
from ._clock import WallClock
from ._config import Config, parse_slot
from ._metrics import Metrics, WorkerMetrics
from .cluster import open_bus
from .net._front import NoWebSockets, serve_http
from .net._handoff import Handoff
from .net._http import create_app
from .net._wsserver import open_listeners, serve_websockets
from .runtime import Hub, RuntimeSettings, open_hub
from .runtime._service import PublicUrls, Service
from .storage._embedded import EmbeddedSupervisor, start_embedded
from .storage._postgres import PostgresStorage

log = logging.getLogger("locshare.server")

GC_THRESHOLDS = (50_000, 50, 1000)
HTTP_READ_TIMEOUT_S = 30


@dataclass(frozen=True, slots=True)
class ServerInfo:
    port: int
    ws_port: int
    base_url: str
    websocket_url: str
    database_url: str
    hub: Any = field(default=None, repr=False, compare=False)  # for tests and embedding
    app: Any = field(default=None, repr=False, compare=False)


def _hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    hc.accesslog = None  # request lines can carry tokens: never logged
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = config.shutdown_grace_s
    hc.websocket_max_message_size = config.max_message_bytes
    hc.include_server_header = False
    hc.read_timeout = HTTP_READ_TIMEOUT_S  # a client that stops sending mid-request is dropped
    return hc


async def _watch_signals(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down gracefully", signal.Signals(signum).name)
            shutdown.set()
            return


async def _in_scope(scope: trio.CancelScope, fn: Any) -> None:
    with scope:
        await fn()


async def run_server(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    clock: WallClock | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until ``shutdown`` is set (or a signal arrives), then shut down gracefully."""
    shutdown = trio.Event() if shutdown is None else shutdown
    clock = clock or WallClock()
    embedded: Any = None
    supervisor: EmbeddedSupervisor | None = None
    database_url = config.database_url
    if not database_url:
        database_url, embedded = await start_embedded(config.data_dir)
    secret = load_or_create_secret(config.jwt_secret, config.data_dir)
    tokens = TokenAuthority(secret)
    settings = RuntimeSettings.from_config(config)

    async with PostgresStorage.open(
        database_url, pool_size=config.db_pool_size, timeout_s=config.db_timeout_s
    ) as storage:
        applied = await storage.migrate()
        if applied:
            log.info("database migrations applied", extra={"versions": applied})
        async with (
            open_bus(config, clock) as bus,
            open_hub(
                settings=settings, tokens=tokens, storage=storage, clock=clock, bus=bus
            ) as hub,
        ):
            urls = PublicUrls(config.public_base_url(), config.public_websocket_url())
            service = Service(
                storage=storage,
                hub=hub,
                tokens=tokens,
                clock=clock,
                urls=urls,
                sessions_per_address_per_min=config.sessions_per_address_per_min,
                joins_per_session_per_min=config.joins_per_session_per_min,
            )
            if embedded is not None:
                supervisor = EmbeddedSupervisor(
                    embedded, storage, on_lost=shutdown.set, on_restart=hub.stats.count_db_restart
                )
                service.embedded_database = lambda: supervisor.state
            metrics = Metrics(hub) if config.metrics else None
            if metrics is not None:
                service.observe_request = metrics.observe_request
            handoff, worker_metrics = _worker_parts(config, hub, metrics, service)
            scrape = None if metrics is None else metrics.scrape
            if worker_metrics is not None:
                scrape = worker_metrics.scrape  # every worker's, labelled
            app = create_app(
                service,
                max_body_bytes=config.max_body_bytes,
                tile_url=config.tile_url,
                tile_attribution=config.tile_attribution,
                render_metrics=scrape,
            )
            # Quart's documented middleware hook: wrap app.asgi_app.  WebSockets never
            # reach the app (the front door routes them, net/_front.py).
            middleware: Any = NoWebSockets(cast(Any, app.asgi_app))
            if config.trusted_proxy_hops:
                # REST requests see the client behind the proxy (the front door applies
                # the same rule to /ws).
                middleware = ProxyFixMiddleware(
                    middleware, mode="legacy", trusted_hops=config.trusted_proxy_hops
                )
            app.asgi_app = cast(Any, middleware)  # type: ignore[method-assign]
            http_listeners = await open_listeners(
                config.host, config.port, backlog=2048, reuse_port=config.reuse_port
            )
            port = http_listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        serve_http,
                        app,
                        _hypercorn_config(config),
                        listeners=http_listeners,
                        hub_getter=lambda: hub,
                        stats=hub.stats,
                        max_message_bytes=config.max_message_bytes,
                        trusted_proxy_hops=config.trusted_proxy_hops,
                        shutdown_trigger=shutdown.wait,
                        max_body_bytes=config.max_body_bytes,
                        handoff=handoff,
                    )
                )
                signal_scope = trio.CancelScope()
                if handle_signals:
                    nursery.start_soon(_in_scope, signal_scope, partial(_watch_signals, shutdown))
                supervisor_scope = trio.CancelScope()
                if supervisor is not None:
                    nursery.start_soon(_in_scope, supervisor_scope, supervisor.run)
                async with trio.open_nursery() as ws_nursery:
                    if worker_metrics is not None:
                        await ws_nursery.start(worker_metrics.serve)
                    ws_port = await ws_nursery.start(
                        partial(
                            serve_websockets,
                            hub,
                            config.host,
                            config.ws_port,
                            max_message_bytes=config.max_message_bytes,
                            reuse_port=config.reuse_port,
                            handoff=handoff,
                            trusted_proxy_hops=config.trusted_proxy_hops,
                        )
                    )
                    service.urls = PublicUrls(
                        config.public_base_url(port), config.public_websocket_url(ws_port, port)
                    )
                    log.info(
                        "locshare is listening",
                        extra={
                            "port": port,
                            "ws_port": ws_port,
                            "embedded_db": embedded is not None,
                        },
                    )
                    if config.gc_tuning:
                        gc.collect()
                        gc.freeze()
                        gc.set_threshold(*GC_THRESHOLDS)
                    task_status.started(
                        ServerInfo(
                            port,
                            ws_port,
                            service.urls.base,
                            service.urls.websocket,
                            _redact(database_url),
                            hub,
                            app,
                        )
                    )
                    await shutdown.wait()
                    ws_nursery.cancel_scope.cancel()  # stop accepting WebSockets
                # hypercorn stopped accepting on the same trigger; now 1001 to every
                # socket, activity persisted, and in-flight requests get the grace period.
                signal_scope.cancel()
                supervisor_scope.cancel()
                nursery.cancel_scope.deadline = trio.current_time() + config.shutdown_grace_s + 1.0
                await hub.shutdown(config.shutdown_grace_s)
    if supervisor is not None:
        supervisor.raise_if_lost()  # after the graceful shutdown: exit status 1
    log.info("locshare stopped")
    del embedded  # the embedded PostgreSQL stops when the process exits


def _worker_parts(
    config: Config, hub: Hub, metrics: Metrics | None, service: Service
) -> tuple[Handoff | None, WorkerMetrics | None]:
    """A worker of ``--workers N`` (``workers_dir`` and ``worker_slot`` set by the
    supervisor): its hand-over of WebSockets (with session affinity), its part in
    scrapes of every worker's metrics, and its place in ``/health/detailed``."""
    if not config.workers_dir:
        return None, None
    index, count = parse_slot(config.worker_slot)
    directory = Path(config.workers_dir)
    handoff = None
    if config.worker_affinity == "session":
        handoff = Handoff(directory, index, count, hub.stats)
    worker_metrics = None if metrics is None else WorkerMetrics(metrics, directory, index, count)
    stats = hub.stats
    service.worker_state = lambda: {
        "slot": config.worker_slot,
        "affinity": config.worker_affinity,
        "handoffs": {
            "sent": stats.handoffs_sent,
            "received": stats.handoffs_received,
            "failed": stats.handoffs_failed,
            "refused": stats.handoffs_refused,
        },
    }
    return handoff, worker_metrics


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
