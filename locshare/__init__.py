"""locshare: self-hosted real-time group location sharing.

Layout: ``geo/`` (live location index, viewport fitting; sans-io), ``net/`` (WebSocket
protocol, transports, HTTP routes), ``_hub``/``_session`` (the runtime: one actor per
live session), ``_storage`` (PostgreSQL), ``_config``, ``_cli``.

The runtime names are imported lazily, so the sans-io cores (``locshare.geo``,
``locshare.net._protocol``) can be imported without trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import Config
from ._version import __version__

if TYPE_CHECKING:
    from ._server import ServerInfo, run_server

__all__ = ["Config", "ServerInfo", "__version__", "run_server"]


def __getattr__(name: str) -> Any:
    if name in ("ServerInfo", "run_server"):
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module 'locshare' has no attribute {name!r}")
