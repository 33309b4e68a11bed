"""The network edge: the WebSocket listener and transport, the REST port's front door,
the HTTP app (REST routes, web pages, OpenAPI).  It calls into the runtime; nothing
below it imports it."""

from __future__ import annotations
