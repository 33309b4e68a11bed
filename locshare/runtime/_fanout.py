"""The local fan-out seam: the sockets of one session on this process.

A session's actor owns one :class:`LocalFanout` and is its only caller.  It knows
which member each connection belongs to (at most one current connection per member:
a newer one replaces the older), delivers frames to all of them, or one frame per
distinct screen size, and closes one member or everyone.  Delivering never awaits:
frames go into each connection's bounded outbox (or straight to its idle socket).

Who is online *here* is this set; who is online in the session (any node) is the
actor's business, from presence events of the other nodes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

from ..proto import _messages as proto
from ._connection import Connection

Viewport = tuple[int, int, int, bool]


class Fanout(Protocol):
    def attach(self, connection: Connection) -> Connection | None: ...

    def detach(self, connection: Connection) -> bool: ...

    def deliver(self, frame: proto.OutFrame, *, exclude: Connection | None = None) -> None: ...

    def deliver_per_viewport(
        self, build: Callable[[Viewport], proto.OutFrame], before: proto.OutFrame | None
    ) -> int: ...

    def close_member(self, user_id: uuid.UUID, code: int, reason: str) -> bool: ...

    def close_all(self, code: int, reason: str, final: proto.OutFrame | None = None) -> None: ...

    def is_online(self, user_id: uuid.UUID) -> bool: ...

    def watching(self) -> int: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Connection]: ...


class LocalFanout:
    def __init__(self) -> None:
        self._connections: set[Connection] = set()
        self._current: dict[uuid.UUID, Connection] = {}

    def attach(self, connection: Connection) -> Connection | None:
        """Add a member's new connection; returns the one it replaces (still open)."""
        user_id = connection.member.id
        old = self._current.get(user_id)
        self._current[user_id] = connection
        self._connections.add(connection)
        return old

    def detach(self, connection: Connection) -> bool:
        """Forget a connection that ended; ``True`` if it was its member's current one."""
        if connection not in self._connections:
            return False
        self._connections.discard(connection)
        user_id = connection.member.id
        if self._current.get(user_id) is connection:
            del self._current[user_id]
            return True
        return False

    def deliver(self, frame: proto.OutFrame, *, exclude: Connection | None = None) -> None:
        for connection in self._connections:
            if connection is not exclude:
                connection.put(frame)

    def deliver_per_viewport(
        self, build: Callable[[Viewport], proto.OutFrame], before: proto.OutFrame | None
    ) -> int:
        """One frame per distinct screen size (``before`` goes ahead of it, in the same
        write) to the connections whose map is on screen; returns how many got one."""
        groups: dict[Viewport, list[Connection]] = {}
        for connection in self._connections:
            if connection.visible:  # a hidden map is sent no positions and no hints
                groups.setdefault(connection.viewport, []).append(connection)
        sent = 0
        for size, members in groups.items():
            frame = build(size)
            frames = [frame] if before is None else [before, frame]
            for connection in members:
                connection.put_all(frames)
            sent += len(members)
        return sent

    def watching(self) -> int:
        """Connections here whose map is on screen (the ones sent positions)."""
        return sum(1 for connection in self._connections if connection.visible)

    def close_member(self, user_id: uuid.UUID, code: int, reason: str) -> bool:
        connection = self._current.pop(user_id, None)
        if connection is None:
            return False
        connection.close(code, reason)
        return True

    def close_all(self, code: int, reason: str, final: proto.OutFrame | None = None) -> None:
        for connection in list(self._connections):
            connection.close(code, reason, final=final)

    def abort_all(self) -> None:
        for connection in list(self._connections):
            connection.abort()
        self._connections.clear()
        self._current.clear()

    def is_online(self, user_id: uuid.UUID) -> bool:
        return user_id in self._current

    def current(self, user_id: uuid.UUID) -> Connection | None:
        return self._current.get(user_id)

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, connection: object) -> bool:
        return connection in self._connections

    def __bool__(self) -> bool:
        return bool(self._connections)

    def __iter__(self) -> Iterator[Connection]:
        return iter(self._connections)
