"""locshare: self-hosted real-time group location sharing.

Layout, from the bottom up (each layer imports only the ones below it; a test checks):

* ``geo/``: the live location index and viewport fitting (sans-io, numpy);
* ``proto/``: the WebSocket and REST protocol, frame decoding, outbox, pacing and
  rate-limit policies (sans-io);
* ``storage/``: the records, the :class:`Storage` seam, PostgreSQL (and the embedded
  server), an in-memory adapter;
* ``runtime/``: one actor per live session, the hub, the session bus and fan-out seams,
  the REST operations;
* ``net/``: the edge: WebSocket listener and transport, the REST port's front door,
  the HTTP app;
* ``_server`` (composes everything), ``_cli``, ``_config``, ``_metrics``, ``_auth``,
  ``_logging``, ``_clock``, ``errors``.

The runtime names are imported lazily, so the sans-io cores (``locshare.geo``,
``locshare.proto``) can be imported without trio.
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
