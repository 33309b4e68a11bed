"""The protocol, sans-io: WebSocket messages (parsing, validation, encoding), the fast
frame decoder, REST bodies, and the policies that need no I/O (a connection's bounded
outbox, the flush window, token buckets).

Nothing in this package imports trio, quart, hypercorn or asyncpg, or reads a clock: a
test imports it with those blocked.
"""

from __future__ import annotations

from ._messages import CLIENT_MESSAGES, LOCATION_ENTRY_FIELDS, SERVER_MESSAGES

__all__ = ["CLIENT_MESSAGES", "LOCATION_ENTRY_FIELDS", "SERVER_MESSAGES"]
