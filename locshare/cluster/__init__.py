"""Cluster mode: the session bus over Redis, so that many processes and machines serve
the same sessions (``LOCSHARE_REDIS_URL``), and the supervisor of ``--workers N``."""

from __future__ import annotations

from ._open import open_bus
from ._redis_bus import RedisBus, default_node_id
from ._supervisor import Supervisor, run_supervisor

__all__ = ["RedisBus", "Supervisor", "default_node_id", "open_bus", "run_supervisor"]
