"""Prometheus metrics at ``GET /metrics``.

The hot path only adds to plain integers (:class:`~locshare._stats.HubStats`); this
collector turns them into metric families when Prometheus scrapes.  Each server has
its own registry, so several servers can live in one process (tests).

Privacy rule: labels are only ``code`` (an error code), ``method``, ``route`` (the URL
rule template, never the URL) and ``status``.  No location, name, token or session id
ever becomes a label or a value.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .runtime._bus import BusStatistics
from .runtime._stats import DURATION_BUCKETS_S, Histogram

if TYPE_CHECKING:
    from .runtime import Hub

_METHODS = frozenset({"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"})

COUNTERS: dict[str, tuple[str, str]] = {
    # metric name (without _total): (HubStats attribute, help)
    "locshare_updates_received": ("updates_received", "Location updates accepted from clients."),
    "locshare_frames_sent": ("frames_sent", "WebSocket frames written to clients."),
    "locshare_bytes_sent": ("bytes_sent", "Payload bytes written to clients."),
    "locshare_deliveries": (
        "deliveries",
        "Location frames queued to recipients (one per recipient per flush).",
    ),
    "locshare_evictions": ("evictions", "Locations forgotten after the retention period."),
    "locshare_viewport_hints": ("hints_sent", "Viewport hints queued to clients."),
    "locshare_rate_limited": (
        "rate_limited",
        "Requests, connections or messages refused by an abuse limit.",
    ),
    "locshare_slow_disconnects": ("slow_disconnects", "Clients disconnected for not reading."),
    "locshare_session_crashes": ("session_crashes", "Session actors that failed unexpectedly."),
    "locshare_connection_errors": (
        "connection_errors",
        "Connections whose code failed unexpectedly (closed; the server went on).",
    ),
    "locshare_message_errors": (
        "message_errors",
        "Client messages whose handling failed unexpectedly (the sender got an error).",
    ),
    "locshare_flood_disconnects": (
        "flood_disconnects",
        "Connections closed with 1008 for sending far more messages than allowed.",
    ),
    "locshare_connections_opened": (
        "connections_opened",
        "WebSocket connections attached to a session.",
    ),
    "locshare_handoffs_sent": (
        "handoffs_sent",
        "WebSockets passed to the worker that serves their session (--workers).",
    ),
    "locshare_handoffs_received": (
        "handoffs_received",
        "WebSockets taken over from another worker (--workers).",
    ),
    "locshare_handoffs_failed": (
        "handoffs_failed",
        "Hand-overs that could not be sent (worker restarting, queue full): served here.",
    ),
    "locshare_handoffs_refused": (
        "handoffs_refused",
        "Malformed hand-over datagrams, closed unread.",
    ),
    "locshare_embedded_db_restarts": (
        "embedded_db_restarts",
        "Restarts of the embedded PostgreSQL after its postmaster died.",
    ),
}


class _HubCollector(Collector):
    def __init__(self, hub: Hub, http: dict[tuple[str, str, str], Histogram]) -> None:
        self._hub = hub
        self._http = http

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        stats = hub.stats
        yield GaugeMetricFamily(
            "locshare_sessions_active", "Live sessions in memory.", value=len(hub.sessions)
        )
        yield GaugeMetricFamily(
            "locshare_connections", "Open WebSocket connections.", value=hub.connection_count()
        )
        yield GaugeMetricFamily(
            "locshare_participants", "Participants of the live sessions.", value=hub.member_count()
        )
        places = hub.places.statistics()
        yield GaugeMetricFamily(
            "locshare_places",
            "Places (meeting points...) of the live sessions.",
            value=places.places,
        )
        yield GaugeMetricFamily(
            "locshare_routes", "Live sessions with a route.", value=len(hub.routes)
        )
        yield GaugeMetricFamily(
            "locshare_flush_window_seconds",
            "Current flush window: narrowed from flush_interval_ms while the cores have room, "
            "widened under CPU load.",
            value=hub.pacer.window_s,
        )
        yield GaugeMetricFamily(
            "locshare_cpu_share",
            "This process's CPU seconds per second, as last measured by the flush pacer.",
            value=hub.pacer.cpu_share,
        )
        cores_busy = hub.pacer.cores_busy
        yield GaugeMetricFamily(
            "locshare_cores_busy_ratio",
            "Busy share of the CPUs this process may run on (every process counted), "
            "as last measured by the flush pacer (NaN: not measured yet, or unreadable).",
            value=math.nan if cores_busy is None else cores_busy,
        )
        for name, (attribute, text) in COUNTERS.items():
            yield CounterMetricFamily(name, text, value=getattr(stats, attribute))
        errors = CounterMetricFamily(
            "locshare_errors", "Errors answered to clients, by code.", labels=["code"]
        )
        for code, count in sorted(stats.errors.items()):
            errors.add_metric([code], count)
        yield errors
        yield _histogram(
            "locshare_flush_duration_seconds",
            "Time to encode and queue one session's batched locations.",
            stats.flush_seconds,
        )
        yield _histogram(
            "locshare_fanout_latency_seconds",
            "From a flush to its frame being written to a client socket.",
            stats.fanout_seconds,
        )
        yield from _bus_metrics(hub.bus.statistics())
        requests = HistogramMetricFamily(
            "locshare_http_request_duration_seconds",
            "REST request duration.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), histogram in sorted(self._http.items()):
            requests.add_metric([method, route, status], histogram.cumulative(), histogram.total)
        yield requests


BUS_COUNTERS: dict[str, tuple[str, str]] = {
    "locshare_bus_messages_sent": ("messages_out", "Messages this node sent on the session bus."),
    "locshare_bus_messages_received": ("messages_in", "Bus messages this node received."),
    "locshare_bus_bytes_sent": ("bytes_out", "Bytes of bus messages sent."),
    "locshare_bus_bytes_received": ("bytes_in", "Bytes of bus messages received."),
    "locshare_bus_events_dropped": (
        "events_dropped",
        "Events not sent on the bus (positions while Redis was away; a full queue).",
    ),
    "locshare_bus_reconnects": ("reconnects", "Times the bus reconnected to Redis."),
    "locshare_bus_errors": ("errors", "Bus errors (lost connections, unreadable messages)."),
}


def _bus_metrics(bus: BusStatistics) -> Iterator[Metric]:
    """Cluster mode's session bus (in one process: only ``locshare_bus_up``, 1)."""
    yield GaugeMetricFamily(
        "locshare_bus_up",
        "1 while the session bus works (always in one process), 0 while Redis is away.",
        value=1 if bus.state in ("local", "up") else 0,
    )
    if bus.kind == "local":
        return
    yield GaugeMetricFamily("locshare_bus_nodes", "Other live nodes heard.", value=bus.nodes)
    for name, (attribute, text) in BUS_COUNTERS.items():
        yield CounterMetricFamily(name, text, value=getattr(bus, attribute))
    if bus.publish_seconds is not None:
        yield _histogram(
            "locshare_bus_publish_seconds",
            "Time to send one bus tick's messages (one pipeline).",
            bus.publish_seconds,
        )


def _histogram(name: str, text: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, text)
    family.add_metric([], histogram.cumulative(), histogram.total)
    return family


class Metrics:
    """One server's registry: the hub collector, REST timings, process metrics."""

    def __init__(self, hub: Hub) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._http: dict[tuple[str, str, str], Histogram] = {}
        self.registry.register(_HubCollector(hub, self._http))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # Bounded label values: unknown methods fold into one, routes are templates.
        key = (method if method in _METHODS else "OTHER", route, str(status))
        histogram = self._http.get(key)
        if histogram is None:
            histogram = self._http[key] = Histogram(DURATION_BUCKETS_S)
        histogram.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        """``GET /metrics`` of a single process."""
        return self.render()


# --- --workers: one scrape for every worker ----------------------------------------------
PEER_TIMEOUT_S = 2.0
PEER_MAX_BYTES = 16 * 1024 * 1024


def metrics_socket(directory: Path, index: int) -> Path:
    return directory / f"m{index}.sock"


def merge_worker_metrics(texts: Mapping[str, str | None]) -> bytes:
    """Every worker's exposition text as one, each sample labelled ``worker``.

    ``texts``: worker index -> its text, ``None`` for a worker that did not answer;
    ``locshare_worker_scrape_up`` says which answered.  Families keep one HELP and TYPE
    line (Prometheus refuses a family twice), samples of all workers under it."""
    families: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        "locshare_worker_scrape_up",
        "1 for each worker whose metrics this scrape includes, 0 if it did not answer.",
        labels=["worker"],
    )
    for worker, text in sorted(texts.items()):
        up.add_metric([worker], 0 if text is None else 1)
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                merged.samples.append(sample._replace(labels={**sample.labels, "worker": worker}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families.values(), up]))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class WorkerMetrics:
    """``/metrics`` of a worker of ``--workers N``: all N workers' metrics.

    Why: the workers share the REST port, so a scrape reaches one of them at random, and
    Prometheus would see each counter jump between two processes' values (a reset at
    every switch).  So each worker also serves its own metrics on a Unix socket in the
    workers' directory, and a scrape of any worker gathers them all (a worker that does
    not answer within ``PEER_TIMEOUT_S`` is left out and shown as such).
    """

    def __init__(self, metrics: Metrics, directory: Path, index: int, count: int) -> None:
        self.metrics = metrics
        self.directory = directory
        self.index = index
        self.count = count

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer each connection on this worker's socket with its own metrics."""
        path = metrics_socket(self.directory, self.index)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(str(path))
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
            sock.listen(16)
            listener = trio.SocketListener(sock)
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._answer, stream)
        finally:
            sock.close()
            with contextlib.suppress(OSError):
                path.unlink()

    async def _answer(self, stream: trio.SocketStream) -> None:
        with trio.move_on_after(PEER_TIMEOUT_S):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(self.metrics.render())
        await trio.aclose_forcefully(stream)

    async def scrape(self) -> bytes:
        """``GET /metrics``: this worker's metrics and every other's that answers."""
        texts: dict[str, str | None] = {str(self.index): self.metrics.render().decode()}

        async def fetch(index: int) -> None:
            texts[str(index)] = None
            with trio.move_on_after(PEER_TIMEOUT_S):
                with contextlib.suppress(OSError, trio.BrokenResourceError):
                    stream = await trio.open_unix_socket(str(metrics_socket(self.directory, index)))
                    async with stream:
                        chunks, size = [], 0
                        while chunk := await stream.receive_some(65536):
                            size += len(chunk)
                            if size > PEER_MAX_BYTES:
                                return
                            chunks.append(chunk)
                        texts[str(index)] = b"".join(chunks).decode()

        async with trio.open_nursery() as nursery:
            for index in range(self.count):
                if index != self.index:
                    nursery.start_soon(fetch, index)
        return merge_worker_metrics(texts)
