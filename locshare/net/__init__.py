"""The network edges: WebSocket protocol (sans-io), transports, and HTTP routes."""

from __future__ import annotations

from ._protocol import CLIENT_MESSAGES, LOCATION_ENTRY_FIELDS, SERVER_MESSAGES

__all__ = ["CLIENT_MESSAGES", "LOCATION_ENTRY_FIELDS", "SERVER_MESSAGES"]
