"""The session bus a server runs with: in-process by default, Redis in cluster mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._clock import WallClock
from .._config import Config
from ..runtime import LocalBus, SessionBus
from ._redis_bus import RedisBus


@asynccontextmanager
async def open_bus(config: Config, clock: WallClock) -> AsyncIterator[SessionBus]:
    """Resource handling: the Redis bus's tasks run in a nursery owned here; they stop
    when the block is left (after the hub, which publishes while it shuts down)."""
    if not config.redis_url:
        yield LocalBus(config.node_id or None)
        return
    bus = RedisBus(
        config.redis_url,
        clock=clock,
        node_id=config.node_id or None,
        allow_persistence=config.redis_allow_persistence,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        try:
            yield bus
        finally:
            nursery.cancel_scope.cancel()
