"""The one frozen configuration object.

Every field is a setting: it has a default, an environment variable
``LOCSHARE_<NAME>`` and a command-line option ``--<name-with-dashes>``.  Precedence is
command line > environment > default.  :meth:`Config.load` validates everything at
start-up and raises :class:`~locshare.errors.ConfigError` naming the offending setting,
so a typo never surfaces later as a confusing runtime failure.

The README's settings table is generated from this module (``locshare settings
--markdown``), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

ENV_PREFIX = "LOCSHARE_"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
    group: str = "server",
) -> Any:
    return field(
        default=default,
        metadata={
            "help": help,
            "minimum": minimum,
            "maximum": maximum,
            "choices": choices,
            "secret": secret,
            "group": group,
        },
    )


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "locshare")


def parse_slot(slot: str) -> tuple[int, int]:
    """``"index/count"`` (the supervisor's ``worker_slot``) -> (index, count)."""
    index_text, _, count_text = slot.partition("/")
    if not (index_text.isdigit() and count_text.isdigit()):
        raise ValueError(f"worker slot {slot!r}: expected index/count")
    index, count = int(index_text), int(count_text)
    if not 0 <= index < count:
        raise ValueError(f"worker slot {slot!r}: need 0 <= index < count")
    return index, count


@dataclass(frozen=True)
class Config:
    """All settings of one locshare server.  Immutable; build it with :meth:`load`."""

    # --- network -------------------------------------------------------------------
    host: str = _setting("0.0.0.0", "Address both listeners bind to.")
    port: int = _setting(8080, "REST API, web page and single-port /ws.", minimum=0, maximum=65535)
    ws_port: int = _setting(
        8081, "Dedicated fast WebSocket listener (0 picks a free port).", minimum=0, maximum=65535
    )
    public_url: str = _setting(
        "",
        "Base URL users reach the REST port at; join links use it. Default http://localhost:<port>.",
    )
    trusted_proxy_hops: int = _setting(
        0,
        "Reverse proxies in front of the REST port whose X-Forwarded-For is trusted for the client"
        " address (rate limits); 0 trusts none.",
        minimum=0,
        maximum=10,
    )
    public_ws_url: str = _setting(
        "", "WebSocket URL handed out by join. Default ws://<public host>:<ws-port>/ws."
    )
    # --- storage -------------------------------------------------------------------
    data_dir: str = _setting(
        _default_data_dir(),
        "Directory for the embedded PostgreSQL and the generated JWT secret.",
        group="storage",
    )
    database_url: str = _setting(
        "",
        "postgresql:// URL of an external server; empty starts the embedded one in data-dir.",
        secret=True,
        group="storage",
    )
    db_pool_size: int = _setting(
        10, "Database connections in the pool.", minimum=1, maximum=200, group="storage"
    )
    db_timeout_s: float = _setting(
        5.0,
        "Longest wait for one database call before answering 503.",
        minimum=0.1,
        maximum=120,
        group="storage",
    )
    jwt_secret: str = _setting(
        "",
        "HS256 signing secret (>= 32 chars). Empty: generated once, kept in data-dir (mode 0600).",
        secret=True,
        group="storage",
    )
    # --- cluster -------------------------------------------------------------------
    redis_url: str = _setting(
        "",
        "redis://, rediss:// or unix:// URL (user/password/ACL in the URL) of the Redis or"
        " Valkey that links the nodes of a cluster; empty: one process (no Redis).",
        secret=True,
        group="cluster",
    )
    redis_allow_persistence: bool = _setting(
        False,
        "Start even if Redis persists to disk (RDB save or AOF): positions would reach its"
        " files. Off: such a Redis is refused.",
        group="cluster",
    )
    workers: str = _setting(
        "1",
        "Worker processes sharing both ports (SO_REUSEPORT); 'auto' = one per CPU. With more"
        " than one, a supervisor runs them with one embedded PostgreSQL and, without"
        " --redis-url, a private redis-server (needs redis-server on PATH).",
        group="cluster",
    )
    worker_affinity: str = _setting(
        "session",
        "With --workers N: 'session' passes each WebSocket to the worker that serves its"
        " session (by session id), so a session stays in one process while that worker"
        " runs; 'none' leaves the kernel's spread, every session split over the workers.",
        choices=("session", "none"),
        group="cluster",
    )
    workers_dir: str = _setting(
        "",
        "Directory of the workers' sockets for hand-overs and metrics (set by the"
        " supervisor of --workers for its workers; empty: a single process).",
        group="cluster",
    )
    worker_slot: str = _setting(
        "",
        "This worker's place among the supervisor's, 'index/count' (set by the supervisor"
        " of --workers, with workers-dir).",
        group="cluster",
    )
    reuse_port: bool = _setting(
        False,
        "Listen with SO_REUSEPORT, sharing both ports with other locshare processes (set"
        " for the workers of --workers; also for running several nodes on one machine).",
        group="cluster",
    )
    node_id: str = _setting(
        "",
        "This node's name on the session bus (ids only; default: host name, process id and"
        " a random suffix).",
        group="cluster",
    )
    # --- sessions ------------------------------------------------------------------
    location_ttl_s: float = _setting(
        30.0,
        "A location is forgotten this long after it was received.",
        minimum=1,
        maximum=3600,
        group="sessions",
    )
    update_interval_s: float = _setting(
        2.0,
        "How often a watched, moving participant is asked to send their location (the base"
        " interval; reason 'watched').",
        minimum=0.2,
        maximum=300,
        group="sessions",
    )
    stationary_interval_s: float = _setting(
        10.0,
        "Interval asked of a watched participant who moved less than stationary_distance_m"
        " over stationary_window_s (update_interval reason 'stationary').",
        minimum=0.2,
        maximum=600,
        group="sessions",
    )
    at_place_interval_s: float = _setting(
        15.0,
        "Interval asked of a watched participant at a meeting point (reason 'at_place').",
        minimum=0.2,
        maximum=600,
        group="sessions",
    )
    unwatched_interval_s: float = _setting(
        30.0,
        "Interval asked while no other participant has the map on screen (reason"
        " 'nobody_watching').",
        minimum=0.2,
        maximum=600,
        group="sessions",
    )
    stationary_distance_m: float = _setting(
        25.0,
        "A participant who stays within this many metres for stationary_window_s counts as"
        " stationary.",
        minimum=1,
        maximum=10_000,
        group="sessions",
    )
    stationary_window_s: float = _setting(
        60.0,
        "How long a participant must stay within stationary_distance_m to count as stationary.",
        minimum=1,
        maximum=3600,
        group="sessions",
    )
    flush_interval_ms: int = _setting(
        100,
        "Location updates of a session received within this window go out as one frame.",
        minimum=1,
        maximum=5000,
        group="sessions",
    )
    flush_interval_min_ms: int = _setting(
        15,
        "While the server has room (its CPU below 50 % of a core, and its cores below 75 %"
        " busy), the flush window narrows down to this: updates go out sooner, at more CPU"
        " per delivery. At or above flush_interval_ms: no narrowing.",
        minimum=1,
        maximum=5000,
        group="sessions",
    )
    flush_interval_max_ms: int = _setting(
        250,
        "While the server's core is busy (CPU above 75 %), the flush window widens up to "
        "this: fewer, fuller frames. At or below flush_interval_ms: a fixed window.",
        minimum=1,
        maximum=5000,
        group="sessions",
    )
    inactivity_timeout_s: float = _setting(
        3600.0,
        "A session without activity this long ends with reason 'inactive'.",
        minimum=60,
        maximum=7 * 86400,
        group="sessions",
    )
    sweep_interval_s: float = _setting(
        30.0,
        "How often expired and inactive sessions are swept and activity is persisted.",
        minimum=0.1,
        maximum=3600,
        group="sessions",
    )
    ended_retention_s: float = _setting(
        86400.0,
        "Ended sessions and their participant names are deleted this long after the end"
        " (and erased from the table files within about 5 minutes more).",
        minimum=0,
        maximum=90 * 86400,
        group="sessions",
    )
    idle_unload_s: float = _setting(
        120.0,
        "A session with no open socket is unloaded from memory after this long.",
        minimum=1,
        maximum=86400,
        group="sessions",
    )
    max_fit_zoom: float = _setting(
        17.0, "Highest zoom a viewport hint ever asks for.", minimum=0, maximum=22, group="sessions"
    )
    slow_client_timeout_s: float = _setting(
        30.0,
        "A client that reads nothing this long is disconnected.",
        minimum=1,
        maximum=3600,
        group="sessions",
    )
    shutdown_grace_s: float = _setting(
        10.0,
        "On SIGTERM/SIGINT: time for sockets to close before tasks are cancelled.",
        minimum=0,
        maximum=600,
        group="sessions",
    )
    # --- limits --------------------------------------------------------------------
    max_body_bytes: int = _setting(
        16384, "Largest REST request body.", minimum=256, maximum=1 << 20, group="limits"
    )
    max_message_bytes: int = _setting(
        16384,
        "Largest WebSocket message; bigger closes with 1009.",
        minimum=256,
        maximum=1 << 20,
        group="limits",
    )
    max_messages_per_s: float = _setting(
        10.0,
        "Messages per second one participant may send; excess is dropped with rate_limited.",
        minimum=0.1,
        maximum=10000,
        group="limits",
    )
    sessions_per_address_per_min: int = _setting(
        20,
        "Session creations per client address per minute.",
        minimum=1,
        maximum=1_000_000,
        group="limits",
    )
    joins_per_session_per_min: int = _setting(
        120, "Joins per session per minute.", minimum=1, maximum=1_000_000, group="limits"
    )
    ws_connections_per_address: int = _setting(
        500,
        "Open WebSocket connections per client address.",
        minimum=1,
        maximum=1_000_000,
        group="limits",
    )
    ws_connects_per_address_per_min: int = _setting(
        600,
        "WebSocket connection attempts per client address per minute (a burst of this many,"
        " then this many per minute); more are refused with 429 before the token is checked.",
        minimum=1,
        maximum=1_000_000,
        group="limits",
    )
    max_sessions_in_memory: int = _setting(
        20000,
        "Live sessions held in memory at once; more answer rate_limited.",
        minimum=1,
        maximum=1_000_000,
        group="limits",
    )
    # --- runtime -------------------------------------------------------------------
    gc_tuning: bool = _setting(
        True,
        "gc.freeze() after start-up and raised GC thresholds (halves latency tails).",
        group="runtime",
    )
    metrics: bool = _setting(
        True, "Serve Prometheus metrics at /metrics (counts only, no locations).", group="runtime"
    )
    log_level: str = _setting(
        "INFO", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR"), group="runtime"
    )
    log_format: str = _setting(
        "text",
        "text (readable) or json (one object per line).",
        choices=("text", "json"),
        group="runtime",
    )
    tile_url: str = _setting(
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        "Map tile URL template for the web page and the app (empty: no tiles).",
        group="runtime",
    )
    tile_attribution: str = _setting(
        "© OpenStreetMap contributors", "Attribution shown with the tiles.", group="runtime"
    )

    # ---------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """Build a validated config: ``overrides`` (e.g. CLI) > ``environ`` > defaults."""
        environ = os.environ if environ is None else environ
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                raw: Any = overrides.pop(f.name)
            elif env_name(f.name) in environ:
                raw = environ[env_name(f.name)]
            else:
                continue
            values[f.name] = _coerce(f, raw)
        if overrides:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(overrides))}")
        config = cls(**values)
        config.validate()
        return config

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed, validated again."""
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            name = setting_label(f.name)
            if meta["minimum"] is not None and value < meta["minimum"]:
                raise ConfigError(f"{name}={value!r} is below the minimum {meta['minimum']}")
            if meta["maximum"] is not None and value > meta["maximum"]:
                raise ConfigError(f"{name}={value!r} is above the maximum {meta['maximum']}")
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ConfigError(f"{name}={value!r} must be one of {', '.join(meta['choices'])}")
        for name, check in _URL_CHECKS.items():
            value = getattr(self, name)
            if value and not check(value):
                raise ConfigError(
                    f"{setting_label(name)}={_shown(name, value)!r} is not a valid URL for this setting"
                )
        if self.jwt_secret and len(self.jwt_secret) < 32:
            raise ConfigError(f"{setting_label('jwt_secret')} must be at least 32 characters long")
        if self.tile_url and not all(p in self.tile_url for p in ("{z}", "{x}", "{y}")):
            raise ConfigError(f"{setting_label('tile_url')} must contain {{z}}, {{x}} and {{y}}")
        if self.workers != "auto" and not (
            self.workers.isdigit() and 1 <= int(self.workers) <= 256
        ):
            raise ConfigError(
                f"{setting_label('workers')}={self.workers!r} must be a number from 1 to 256, or auto"
            )
        if self.workers_dir:
            try:
                parse_slot(self.worker_slot)
            except ValueError as exc:
                raise ConfigError(
                    f"{setting_label('workers_dir')} needs {setting_label('worker_slot')}: {exc}"
                ) from None
        if self.redis_url and not self.jwt_secret:
            raise ConfigError(
                f"cluster mode ({setting_label('redis_url')}) needs {setting_label('jwt_secret')}:"
                " the same secret on every node, so that a token issued by one node is accepted"
                " by all (a secret generated per node would not be)"
            )
        if self.port and self.port == self.ws_port:
            raise ConfigError(f"{setting_label('port')} and {setting_label('ws_port')} must differ")

    # --- derived values ------------------------------------------------------------
    @property
    def worker_count(self) -> int:
        """``workers`` as a number (``auto``: the CPUs this process may run on)."""
        if self.workers == "auto":
            return (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        return int(self.workers)

    @property
    def flush_interval_s(self) -> float:
        return self.flush_interval_ms / 1000.0

    @property
    def flush_interval_min_s(self) -> float:
        """The narrowest flush window; never wider than the configured one."""
        return min(self.flush_interval_min_ms, self.flush_interval_ms) / 1000.0

    @property
    def flush_interval_max_s(self) -> float:
        """The widest flush window; never narrower than the configured one."""
        return max(self.flush_interval_max_ms, self.flush_interval_ms) / 1000.0

    def public_base_url(self, bound_port: int | None = None) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://localhost:{bound_port or self.port}"

    def public_websocket_url(
        self, bound_ws_port: int | None = None, bound_port: int | None = None
    ) -> str:
        if self.public_ws_url:
            return self.public_ws_url
        base = urlsplit(self.public_base_url(bound_port))
        scheme = "wss" if base.scheme == "https" else "ws"
        return f"{scheme}://{base.hostname}:{bound_ws_port or self.ws_port}/ws"

    def safe_summary(self) -> dict[str, Any]:
        """Settings for a start-up log line, with secrets masked."""
        return {
            f.name: (
                "***" if f.metadata["secret"] and getattr(self, f.name) else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def setting_label(field_name: str) -> str:
    """How errors name a setting: both ways to set it, ``LOCSHARE_PORT (--port)``."""
    return f"{env_name(field_name)} ({option_name(field_name)})"


def _shown(name: str, value: str) -> str:
    return "***" if name in ("database_url", "redis_url") else value


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_ws_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)


def _is_pg_url(value: str) -> bool:
    return urlsplit(value).scheme in ("postgresql", "postgres")


def _is_redis_url(value: str) -> bool:
    parts = urlsplit(value)
    if parts.scheme == "unix":
        return bool(parts.path)
    return parts.scheme in ("redis", "rediss") and bool(parts.hostname)


_URL_CHECKS: dict[str, Callable[[str], bool]] = {
    "public_url": _is_http_url,
    "public_ws_url": _is_ws_url,
    "database_url": _is_pg_url,
    "redis_url": _is_redis_url,
}


def _coerce(f: dataclasses.Field[Any], raw: Any) -> Any:
    kind = (
        f.type
        if isinstance(f.type, type)
        else {"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]
    )
    choices = f.metadata["choices"]
    if kind is str and choices:
        text = str(raw).strip()
        return next((c for c in choices if c.lower() == text.lower()), text)
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    try:
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        return text
    except ValueError:
        expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "text")
        shown = _shown(f.name, text)
        raise ConfigError(f"{setting_label(f.name)}={shown!r} is not {expected}") from None


def settings_table_markdown() -> str:
    """The README's settings table, generated from :class:`Config`."""
    rows = ["| Environment variable | Option | Default | Meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(Config):
        default = f.default
        if f.name == "data_dir":
            default = "$XDG_DATA_HOME/locshare (~/.local/share/locshare)"
        shown = "(empty)" if default == "" else str(default).replace("|", "\\|")
        rows.append(
            f"| `{env_name(f.name)}` | `--{f.name.replace('_', '-')}` | `{shown}` | {f.metadata['help']} |"
        )
    return "\n".join(rows)
