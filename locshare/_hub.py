"""The hub: every live session in memory, the geo tick, and the session lifecycle.

Resource handling:
    :func:`open_hub` is an async context manager owning one nursery.  In it run the
    geo tick (eviction and viewport hints for all sessions in one vectorized call per
    tick), the housekeeping loop (persist activity, sweep expired/inactive sessions,
    purge long-ended ones; only with storage), the pacing loop (the flush window from
    the CPU share, :mod:`locshare._pacing`; only when it may widen) and one task per live
    :class:`~locshare._session.SessionActor`.  Leaving the context shuts down
    gracefully: 1001 to every socket, a deadline of ``grace_s``, activity persisted,
    then cancellation.

Storage is optional.  Without it the hub runs purely in memory (sessions are opened
with :meth:`Hub.open_session`); that is how the time-driven tests run under trio's
``autojump_clock``, where a real database round trip would let the mock clock jump.

Sessions are loaded lazily: the first WebSocket connection of a session loads its
record and participants from storage; concurrent loads of one session are coalesced.
A session with no socket for ``idle_unload_s`` leaves memory; its locations have
expired by then anyway.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ._auth import Claims, TokenAuthority
from ._clock import WallClock
from ._model import ParticipantRecord, SessionRecord, Storage
from ._pacing import FlushPacer
from ._ratelimit import KeyedLimiter
from ._session import Connection, RuntimeSettings, SessionActor
from ._stats import HubStats
from .errors import RateLimited, SessionEnded, StorageError, Unauthorized, Unavailable
from .geo import BBox, GeoIndex
from .net._transport import Transport

log = logging.getLogger("locshare.hub")

HINT_INTERVAL_S = 1.0
MIN_TICK_S = 0.01
PACE_INTERVAL_S = 1.0  # how often the flush window is re-fitted to the CPU share


@dataclass(frozen=True, slots=True)
class HousekeepingSettings:
    sweep_interval_s: float = 30.0
    ended_retention_s: float = 86400.0
    ws_connections_per_address: int = 500
    ws_connects_per_address_per_min: int = 600
    max_sessions_in_memory: int = 20000


class Hub:
    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        settings: RuntimeSettings,
        housekeeping: HousekeepingSettings,
        tokens: TokenAuthority,
        clock: WallClock,
        storage: Storage | None = None,
    ) -> None:
        self._nursery = nursery
        self.settings = settings
        self.housekeeping = housekeeping
        self.tokens = tokens
        self.clock = clock
        self.storage = storage
        self.index = GeoIndex(
            block_size=settings.block_size,
            ttl_s=settings.location_ttl_s,
            min_hint_interval_s=HINT_INTERVAL_S,
        )
        self.stats = HubStats()
        self.pacer = FlushPacer(
            settings.flush_interval_s,
            max(settings.flush_interval_s, settings.flush_interval_max_s or 0.0),
        )
        self.sessions: dict[uuid.UUID, SessionActor] = {}
        self._by_block: dict[int, SessionActor] = {}
        self._loading: dict[uuid.UUID, trio.Event] = {}
        self._finished: dict[uuid.UUID, trio.Event] = {}
        self._connections_by_address: dict[str, int] = {}
        self._connects_by_address = KeyedLimiter(housekeeping.ws_connects_per_address_per_min, 60.0)
        self._pending_sessions: dict[uuid.UUID, float] = {}
        self._pending_participants: dict[uuid.UUID, float] = {}
        self.shutting_down = False

    # --- sessions in memory ---------------------------------------------------------------
    async def open_session(
        self, record: SessionRecord, participants: list[ParticipantRecord]
    ) -> SessionActor:
        """Start the actor of a session (already loaded or created by the caller)."""
        if len(self.sessions) >= self.housekeeping.max_sessions_in_memory:
            raise RateLimited("the server holds as many live sessions as it may; try again later")
        actor = SessionActor(
            self, record, participants, settings=self.settings, index=self.index, clock=self.clock
        )
        self.sessions[record.id] = actor
        self._by_block[actor.block] = actor
        self._finished[record.id] = trio.Event()
        await self._nursery.start(actor.run)
        return actor

    async def get_actor(self, session_id: uuid.UUID) -> SessionActor:
        """The live actor of a session, loading it from storage if needed."""
        while True:
            actor = self.sessions.get(session_id)
            if actor is not None:
                if not actor.started.is_set():
                    # Registered, but its nursery is still starting (found by the
                    # benchmarks: many sockets connecting to a session being loaded).
                    await actor.started.wait()
                    continue
                if not actor.ending:
                    return actor
                if actor.end_reason is not None:
                    raise SessionEnded(f"session {actor.end_reason}")
                await self._finished[session_id].wait()  # unloading: wait, then reload
                continue
            loading = self._loading.get(session_id)
            if loading is not None:
                await loading.wait()
                continue
            if self.storage is None:
                raise Unauthorized("unknown session")
            return await self._load(session_id)

    async def _load(self, session_id: uuid.UUID) -> SessionActor:
        assert self.storage is not None
        done = self._loading[session_id] = trio.Event()
        try:
            record = await self.storage.get_session(session_id)
            if record is None:
                raise Unauthorized("unknown session")
            ended = record.effective_end(self.clock.now())
            if ended is not None:
                raise SessionEnded(f"session {ended}")
            participants = await self.storage.list_participants(session_id)
            return await self.open_session(record, participants)
        finally:
            del self._loading[session_id]
            done.set()

    def _actor_finished(self, actor: SessionActor) -> None:
        """Called from the actor's ``finally``: it has released everything."""
        if self.sessions.get(actor.id) is actor:
            del self.sessions[actor.id]
        self._by_block.pop(actor.block, None)
        session_time, seen = actor.take_activity()
        if session_time is not None:
            self._pending_sessions[actor.id] = session_time
        self._pending_participants.update(seen)
        finished = self._finished.pop(actor.id, None)
        if finished is not None:
            finished.set()

    # --- WebSocket admission --------------------------------------------------------------
    async def authorize(self, token: str, address: str) -> Claims:
        """Everything that can be checked before the WebSocket upgrade (-> HTTP status)."""
        if self.shutting_down:
            raise Unavailable("the server is shutting down")
        # First, before any work an attacker could make us repeat: a client that
        # reconnects in a loop (each 1008 for flooding, say) is slowed to this rate.
        if not self._connects_by_address.hit(address, trio.current_time()):
            self.stats.rate_limited += 1
            raise RateLimited("too many connection attempts from this address")
        claims = self.tokens.verify(token, self.clock.now())
        if claims.role != "participant":
            raise Unauthorized(
                "a creator token cannot connect; join the session to get a participant token"
            )
        if (
            self._connections_by_address.get(address, 0)
            >= self.housekeeping.ws_connections_per_address
        ):
            self.stats.rate_limited += 1
            raise RateLimited("too many connections from this address")
        actor = await self.get_actor(claims.session_id)
        await self._ensure_member(actor, claims.subject)
        return claims

    async def _ensure_member(self, actor: SessionActor, user_id: uuid.UUID) -> None:
        if actor.member_for(user_id) is not None:
            return
        # Joined after the session was loaded, and the join notice raced the load?
        participant = (
            None if self.storage is None else await self.storage.get_participant(actor.id, user_id)
        )
        if participant is None or not participant.is_active:
            raise Unauthorized("this participant has left the session")
        if not actor.ending:
            actor.add_participant(participant)

    async def connect(self, claims: Claims, transport: Transport) -> Connection:
        """Attach an upgraded socket to its session (after :meth:`authorize`)."""
        for _attempt in range(3):
            actor = await self.get_actor(claims.session_id)
            await self._ensure_member(actor, claims.subject)
            connection = actor.attach(claims.subject, transport)
            if connection is not None:
                self._connections_by_address[transport.remote_address] = (
                    self._connections_by_address.get(transport.remote_address, 0) + 1
                )
                self.stats.connections_opened += 1
                return connection
            if actor.end_reason is not None:
                raise SessionEnded(f"session {actor.end_reason}")
        raise Unavailable("the session is restarting; try again")

    def _connection_closed(self, connection: Connection) -> None:
        address = connection.transport.remote_address
        left = self._connections_by_address.get(address, 0) - 1
        if left > 0:
            self._connections_by_address[address] = left
        else:
            self._connections_by_address.pop(address, None)

    # --- lifecycle events -----------------------------------------------------------------
    def participant_joined(self, participant: ParticipantRecord) -> None:
        actor = self.sessions.get(participant.session_id)
        if actor is not None and not actor.ending:
            actor.add_participant(participant)

    async def leave(
        self, session_id: uuid.UUID, user_id: uuid.UUID, *, reason: str, close_code: int
    ) -> bool:
        """Persist a departure, then tell the live session (closing the socket)."""
        changed = True
        if self.storage is not None:
            changed = await self.storage.leave(
                session_id=session_id, participant_id=user_id, reason=reason, now=self.clock.now()
            )
        actor = self.sessions.get(session_id)
        if actor is not None:
            changed = actor.remove_participant(user_id, reason, close_code) or changed
        return changed

    async def end_session(self, session_id: uuid.UUID, reason: str) -> bool:
        changed = True
        if self.storage is not None:
            changed = await self.storage.end_session(
                session_id=session_id, reason=reason, now=self.clock.now()
            )
        actor = self.sessions.get(session_id)
        if actor is not None:
            actor.end(reason)
        return changed

    def session_timed_out(self, actor: SessionActor, reason: str) -> None:
        """The actor's own deadline passed (expiry or inactivity)."""
        actor.end(reason)
        if self.storage is not None:
            self._nursery.start_soon(self._persist_end, actor.id, reason)

    async def _persist_end(self, session_id: uuid.UUID, reason: str) -> None:
        assert self.storage is not None
        try:
            await self.storage.end_session(
                session_id=session_id, reason=reason, now=self.clock.now()
            )
        except StorageError:
            log.warning(
                "could not persist session end; the sweeper will",
                extra={"session_id": str(session_id)},
            )

    # --- periodic work --------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        """Rule: one vectorized geo tick for all sessions, at least once per second and
        exactly when the oldest location expires."""
        while True:
            now = trio.current_time()
            result = self.index.tick(now)
            if result.evicted_blocks.size:
                self.stats.evictions += int(result.evicted_blocks.size)
                for block, slot in zip(
                    result.evicted_blocks.tolist(), result.evicted_slots.tolist(), strict=True
                ):
                    actor = self._by_block.get(block)
                    if actor is not None:
                        actor.on_evicted(slot)
            for block, box in zip(
                result.hint_blocks.tolist(), result.hint_boxes.tolist(), strict=True
            ):
                actor = self._by_block.get(block)
                if actor is not None and actor.connections:
                    actor.on_hint(BBox(*box))
            wake = min(now + HINT_INTERVAL_S, self.index.next_expiry())
            await trio.sleep_until(max(wake, now + MIN_TICK_S))

    async def _pace_loop(self) -> None:
        """Rule: once a second, the process's CPU share sets the flush window (``_pacing``)."""
        cpu, wall = time.process_time(), trio.current_time()
        while True:
            await trio.sleep(PACE_INTERVAL_S)
            cpu_now, wall_now = time.process_time(), trio.current_time()
            self.pacer.observe(cpu_now - cpu, wall_now - wall)
            cpu, wall = cpu_now, wall_now

    async def _housekeeping_loop(self) -> None:
        while True:
            await trio.sleep(self.housekeeping.sweep_interval_s)
            await self.housekeep()

    async def housekeep(self) -> None:
        """Persist activity, then end expired/inactive sessions and purge old ones."""
        if self.storage is None:
            return
        try:
            await self.persist_activity()
            now = self.clock.now()
            ended = await self.storage.sweep(
                now=now, inactive_before=now - self.settings.inactivity_timeout_s
            )
            for session_id, reason in ended:
                actor = self.sessions.get(session_id)
                if actor is not None:
                    actor.end(reason)
            await self.storage.purge_ended(ended_before=now - self.housekeeping.ended_retention_s)
        except StorageError as exc:
            log.warning("housekeeping skipped: %s", exc)

    async def persist_activity(self) -> None:
        if self.storage is None:
            return
        sessions, participants = self._pending_sessions, self._pending_participants
        self._pending_sessions, self._pending_participants = {}, {}
        for actor in self.sessions.values():
            session_time, seen = actor.take_activity()
            if session_time is not None:
                sessions[actor.id] = session_time
            participants.update(seen)
        try:
            await self.storage.record_activity(sessions, participants)
        except StorageError:
            # Keep them for next time (newer values win); bounded by sessions + members.
            for key, value in sessions.items():
                self._pending_sessions[key] = max(value, self._pending_sessions.get(key, -math.inf))
            for key, value in participants.items():
                self._pending_participants[key] = max(
                    value, self._pending_participants.get(key, -math.inf)
                )
            raise

    async def shutdown(self, grace_s: float) -> None:
        """Close every socket with 1001 and wait up to ``grace_s`` for the sessions to go."""
        self.shutting_down = True
        with trio.move_on_after(grace_s):
            for actor in list(self.sessions.values()):
                actor.shutdown()
            for event in list(self._finished.values()):
                await event.wait()
        if self.storage is not None:
            with trio.move_on_after(max(1.0, grace_s / 2)):
                try:
                    await self.persist_activity()
                except StorageError as exc:
                    log.warning("could not persist activity at shutdown: %s", exc)

    # --- introspection --------------------------------------------------------------------
    def connection_count(self) -> int:
        return sum(len(actor.connections) for actor in self.sessions.values())

    def member_count(self) -> int:
        return sum(len(actor.members) for actor in self.sessions.values())


@asynccontextmanager
async def open_hub(
    *,
    settings: RuntimeSettings,
    housekeeping: HousekeepingSettings | None = None,
    tokens: TokenAuthority,
    clock: WallClock | None = None,
    storage: Storage | None = None,
    grace_s: float = 5.0,
) -> AsyncIterator[Hub]:
    async with trio.open_nursery() as nursery:
        hub = Hub(
            nursery,
            settings=settings,
            housekeeping=housekeeping or HousekeepingSettings(),
            tokens=tokens,
            clock=clock or WallClock(),
            storage=storage,
        )
        nursery.start_soon(hub._tick_loop)
        if hub.pacer.adaptive:
            nursery.start_soon(hub._pace_loop)
        if storage is not None:
            nursery.start_soon(hub._housekeeping_loop)
        try:
            yield hub
        finally:
            with trio.CancelScope(shield=True):
                await hub.shutdown(grace_s)
            nursery.cancel_scope.cancel()
