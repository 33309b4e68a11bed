"""Prometheus metrics: every promised name, real values, and nothing private."""

from __future__ import annotations

import re

import orjson
import trio
from trio_websocket import wrap_client_stream

from tests.conftest import Running

EXPECTED = {
    "locshare_sessions_active",
    "locshare_connections",
    "locshare_flush_window_seconds",
    "locshare_cpu_share",
    "locshare_participants",
    "locshare_places",
    "locshare_routes",
    "locshare_updates_received_total",
    "locshare_frames_sent_total",
    "locshare_bytes_sent_total",
    "locshare_deliveries_total",
    "locshare_evictions_total",
    "locshare_viewport_hints_total",
    "locshare_rate_limited_total",
    "locshare_slow_disconnects_total",
    "locshare_session_crashes_total",
    "locshare_connections_opened_total",
    "locshare_embedded_db_restarts_total",
    "locshare_errors_total",
    "locshare_flush_duration_seconds_bucket",
    "locshare_fanout_latency_seconds_bucket",
    "locshare_http_request_duration_seconds_bucket",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
}


def samples(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def value(values: dict[str, float], name: str) -> float:
    return values.get(name, 0.0)


async def test_metrics_reflect_activity_and_hold_nothing_private(server: Running) -> None:
    created = await server.create_session(name="Secret Meetup Name")
    sid = created["session_id"]
    ann = await server.join(sid, "Annabelle Private")
    bo = await server.join(sid, "Bo")
    await server.http.post(f"/api/sessions/{sid}/join", json={"display_name": ""})  # a 422
    stream_a = await trio.open_tcp_stream("127.0.0.1", server.info.ws_port)
    stream_b = await trio.open_tcp_stream("127.0.0.1", server.info.ws_port)
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                a = await wrap_client_stream(
                    nursery, stream_a, "127.0.0.1", f"/ws?token={ann['websocket_token']}"
                )
                b = await wrap_client_stream(
                    nursery, stream_b, "127.0.0.1", f"/ws?token={bo['websocket_token']}"
                )
                await a.send_message(
                    orjson.dumps(
                        {"type": "location_update", "data": {"lat": 47.123456, "lng": 8.654321}}
                    ).decode()
                )
                await a.send_message("not json")
                while True:
                    frame = orjson.loads(await b.get_message())
                    if frame["type"] == "locations":
                        break
                text = (await server.http.get("/metrics")).text
                nursery.cancel_scope.cancel()
    finally:
        await stream_a.aclose()
        await stream_b.aclose()
    values = samples(text)
    names = {re.sub(r"\{.*", "", key) for key in values}
    assert names >= EXPECTED, EXPECTED - names
    assert value(values, "locshare_sessions_active") >= 1
    assert value(values, "locshare_connections") >= 2
    assert value(values, "locshare_updates_received_total") >= 1
    assert value(values, "locshare_deliveries_total") >= 2
    assert value(values, 'locshare_errors_total{code="malformed_message"}') >= 1
    assert value(values, 'locshare_errors_total{code="invalid_request"}') >= 1
    assert (
        value(
            values,
            'locshare_http_request_duration_seconds_count{method="POST",route="/api/sessions/<session_id>/join",status="201"}',
        )
        >= 2
    )
    assert value(values, "locshare_fanout_latency_seconds_count") >= 1
    assert 0.1 <= value(values, "locshare_flush_window_seconds") <= 0.25
    assert value(values, "locshare_cpu_share") >= 0
    for private in (
        "47.12",
        "8.65",
        "Annabelle",
        "Secret Meetup",
        ann["websocket_token"][:20],
        sid,
        ann["user_id"],
    ):
        assert private not in text


async def test_every_metric_the_dashboard_queries_is_exported(server: Running) -> None:
    import json
    from pathlib import Path

    from tests.test_deploy import CLUSTER_ONLY, dashboard_metrics, metric_family

    text = (await server.http.get("/metrics")).text
    # Every family is declared by a "# TYPE" line, even before it has a sample.
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    exported = {metric_family(m).removesuffix("_total") for m in exported}
    dashboard = json.loads(
        (Path(__file__).resolve().parent.parent / "deploy/grafana/locshare.json").read_text()
    )
    queried = {m.removesuffix("_total") for m in dashboard_metrics(dashboard) - CLUSTER_ONLY}
    assert queried <= exported, queried - exported


# --- --workers: one scrape, every worker ------------------------------------------------
def _exposition(connections: int, updates: int) -> str:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    Gauge("locshare_connections", "Open WebSocket connections.", registry=registry).set(connections)
    Counter("locshare_updates_received", "Updates.", registry=registry).inc(updates)
    Histogram("locshare_flush_duration_seconds", "Flushes.", registry=registry).observe(0.01)
    return generate_latest(registry).decode()


def test_worker_metrics_merge_into_one_family_each_labelled_by_worker() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from locshare._metrics import merge_worker_metrics

    text = merge_worker_metrics(
        {"0": _exposition(3, 10), "1": _exposition(4, 20), "2": None}
    ).decode()
    # One HELP and one TYPE line per family (Prometheus refuses a family twice).
    assert text.count("# TYPE locshare_connections gauge") == 1
    assert text.count("# TYPE locshare_updates_received_total counter") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    by_worker = {s.labels["worker"]: s.value for s in families["locshare_connections"].samples}
    assert by_worker == {"0": 3.0, "1": 4.0}
    updates = {
        s.labels["worker"]: s.value
        for s in families["locshare_updates_received"].samples
        if s.name.endswith("_total")
    }
    assert updates == {"0": 10.0, "1": 20.0}
    buckets = [s for s in families["locshare_flush_duration_seconds"].samples if "le" in s.labels]
    assert {s.labels["worker"] for s in buckets} == {"0", "1"}
    up = {s.labels["worker"]: s.value for s in families["locshare_worker_scrape_up"].samples}
    assert up == {"0": 1.0, "1": 1.0, "2": 0.0}  # worker 2 did not answer
