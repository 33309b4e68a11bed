"""The hub: the sessions this process hosts, the geo tick, admission and housekeeping.

Resource handling:
    :func:`open_hub` is an async context manager owning one nursery.  In it run the
    geo tick (eviction and viewport hints for all sessions in one vectorized call per
    tick), the housekeeping loop (persist activity, sweep expired/inactive sessions,
    purge long-ended ones), the pacing loop (the flush window from the CPU share,
    :mod:`locshare._pacing`; only when it may widen) and one task per live
    :class:`~._actor.SessionActor`.  Leaving the context shuts down gracefully: 1001 to
    every socket, a deadline of ``grace_s``, activity persisted, then cancellation.

Rule (one writer): the hub changes no session's state.  What REST handlers and the
sweeper decide (a join, a departure, an end) is persisted first, then published on the
session bus (:mod:`._bus`); the geo tick posts evictions and hints to the actors; a
handshake posts an attach and waits for the actor's answer.  The hub is the actor's
host (:class:`~._actor.SessionHost`): it lends the geo index, the counters, the bus.

Sessions are loaded lazily: the first WebSocket connection of a session subscribes to
its events, then loads its record and participants from storage (so nothing published
meanwhile is missed); concurrent loads of one session are coalesced.  A session with no
socket for ``idle_unload_s`` leaves memory; its locations have expired by then anyway.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._auth import Claims, TokenAuthority
from .._clock import WallClock
from ..errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    SessionEnded,
    StorageError,
    TooManyPlaces,
    Unauthorized,
    Unavailable,
)
from ..geo import (
    MAX_PLACES_PER_SESSION,
    BBox,
    GeoIndex,
    Place,
    PlaceIndex,
    Route,
    RouteIndex,
    parse_route_geojson,
)
from ..proto._pacing import FlushPacer
from ..proto._ratelimit import KeyedLimiter
from ..storage._model import ParticipantRecord, PlaceRecord, RouteRecord, Storage
from ._actor import SessionActor
from ._alarms import AlarmClock
from ._bus import LocalBus, SessionBus
from ._connection import Attach, AttachReply, Connection
from ._cores import CoresBusy
from ._events import (
    ConvoyTick,
    Ended,
    Evicted,
    HintDue,
    Joined,
    Left,
    PlaceAdded,
    PlaceRemoved,
    PlaceTick,
    RouteChanged,
    Shutdown,
    Unhosted,
)
from ._inbox import Inbox
from ._settings import RuntimeSettings
from ._stats import HubStats
from ._transport import Transport

log = logging.getLogger("locshare.hub")

HINT_INTERVAL_S = 1.0
MIN_TICK_S = 0.01
# Places and routes need a fix's arrival or expiry within about a second, not at once.
GROUP_TICK_INTERVAL_S = 1.0
PACE_INTERVAL_S = 1.0  # how often the flush window is re-fitted to the CPU share
ATTACH_ATTEMPTS = 3
# Routes parsed on this node for storing, kept for its own actor's reload (pop on use).
FRESH_ROUTES_KEPT = 8
# Building a route (up to 20,000 points: tens of milliseconds) runs in a thread; at
# most this many at once, so uploads cannot take every core.
ROUTE_BUILDERS = 2


class Hub:
    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        settings: RuntimeSettings,
        tokens: TokenAuthority,
        clock: WallClock,
        storage: Storage,
        bus: SessionBus,
    ) -> None:
        self._nursery = nursery
        self.settings = settings
        self.tokens = tokens
        self.clock = clock
        self.storage = storage
        self.bus = bus
        self.index = GeoIndex(
            block_size=settings.block_size,
            ttl_s=settings.location_ttl_s,
            min_hint_interval_s=HINT_INTERVAL_S,
        )
        self.places = PlaceIndex(block_size=settings.block_size)
        self.routes = RouteIndex(block_size=settings.block_size)
        self.route_builders = trio.CapacityLimiter(ROUTE_BUILDERS)
        self._fresh_routes: dict[uuid.UUID, tuple[RouteRecord, Route]] = {}
        self.stats = HubStats()
        self.alarms = AlarmClock()
        self.pacer = FlushPacer(
            settings.flush_interval_s,
            settings.flush_interval_max_s,
            min_s=settings.flush_interval_min_s,
        )
        self.sessions: dict[uuid.UUID, SessionActor] = {}
        self._by_block: dict[int, SessionActor] = {}
        self._unsubscribe: dict[uuid.UUID, Callable[[], None]] = {}
        self._loading: dict[uuid.UUID, trio.Event] = {}
        self._connections_by_address: dict[str, int] = {}
        self._connects_by_address = KeyedLimiter(settings.ws_connects_per_address_per_min, 60.0)
        # Activity written to storage (wall times), to write only what changed.
        self._persisted_sessions: dict[uuid.UUID, float] = {}
        self._persisted_members: dict[uuid.UUID, float] = {}
        self._pending_sessions: dict[uuid.UUID, float] = {}
        self._pending_members: dict[uuid.UUID, float] = {}
        self.shutting_down = False

    # --- the host of every actor (SessionHost) --------------------------------------------
    @property
    def window_s(self) -> float:
        return self.pacer.window_s

    def connection_attached(self, connection: Connection) -> None:
        address = connection.transport.remote_address
        self._connections_by_address[address] = self._connections_by_address.get(address, 0) + 1
        self.stats.connections_opened += 1

    def connection_closed(self, connection: Connection) -> None:
        address = connection.transport.remote_address
        left = self._connections_by_address.get(address, 0) - 1
        if left > 0:
            self._connections_by_address[address] = left
        else:
            self._connections_by_address.pop(address, None)

    def session_timed_out(self, session_id: uuid.UUID, reason: str) -> None:
        """An actor's own deadline passed (expiry, inactivity): persist the end, and
        tell the other nodes hosting the session."""
        self._nursery.start_soon(self._persist_end, session_id, reason)

    async def _persist_end(self, session_id: uuid.UUID, reason: str) -> None:
        try:
            await self.storage.end_session(
                session_id=session_id, reason=reason, now=self.clock.now()
            )
        except StorageError:
            log.warning(
                "could not persist session end; the sweeper will",
                extra={"session_id": str(session_id)},
            )
        self.bus.publish(session_id, Ended(reason))

    def actor_finished(self, actor: SessionActor) -> None:
        """Called from the actor's ``finally``: it has released everything."""
        if self.sessions.get(actor.id) is actor:
            del self.sessions[actor.id]
        self._by_block.pop(actor.block, None)
        unsubscribe = self._unsubscribe.pop(actor.id, None)
        if unsubscribe is not None:
            unsubscribe()
            self.bus.unhost(actor.id)
            if self.bus.distributed and actor.end_reason is None:
                # Unloaded while the session goes on elsewhere: its hosts stop
                # publishing positions for this node.
                self.bus.publish(actor.id, Unhosted(self.bus.node_id))
        self._note_activity(actor)

    # --- sessions in memory ---------------------------------------------------------------
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
                await actor.finished.wait()  # unloading: wait, then load again
                continue
            loading = self._loading.get(session_id)
            if loading is not None:
                await loading.wait()
                continue
            return await self._load(session_id)

    async def _load(self, session_id: uuid.UUID) -> SessionActor:
        done = self._loading[session_id] = trio.Event()
        inbox = Inbox(self.settings.inbox_max_events)
        # Subscribe first: what is published while storage is read waits in the inbox.
        unsubscribe = self.bus.subscribe(session_id, inbox.post)
        try:
            others = await self.bus.host(session_id)
            record = await self.storage.get_session(session_id)
            if record is None:
                raise Unauthorized("unknown session")
            ended = record.effective_end(self.clock.now())
            if ended is not None:
                raise SessionEnded(f"session {ended}")
            if len(self.sessions) >= self.settings.max_sessions_in_memory:
                self.stats.rate_limited += 1
                raise RateLimited(
                    "the server holds as many live sessions as it may; try again later"
                )
            participants = await self.storage.list_participants(session_id)
            places = await self.storage.list_places(session_id)
            route = await self.load_route(session_id)
            actor = SessionActor(
                self,
                record,
                participants,
                inbox,
                places=places,
                route=route,
                peers=others,
            )
        except BaseException:
            unsubscribe()
            self.bus.unhost(session_id)
            raise
        finally:
            del self._loading[session_id]
            done.set()
        self._unsubscribe[session_id] = unsubscribe
        self.sessions[session_id] = actor
        self._by_block[actor.block] = actor
        await self._nursery.start(actor.run)
        return actor

    # --- WebSocket admission ----------------------------------------------------------------
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
        if self._connections_by_address.get(address, 0) >= self.settings.ws_connections_per_address:
            self.stats.rate_limited += 1
            raise RateLimited("too many connections from this address")
        actor = await self.get_actor(claims.session_id)
        await self._participant_if_new(actor, claims.subject)
        return claims

    async def _participant_if_new(
        self, actor: SessionActor, user_id: uuid.UUID
    ) -> ParticipantRecord | None:
        """``None`` if the actor knows the member; else their record from storage (joined
        after the session was loaded, and the join notice raced the load)."""
        if user_id in actor.members:
            return None
        participant = await self.storage.get_participant(actor.id, user_id)
        if participant is None or not participant.is_active:
            raise Unauthorized("this participant has left the session")
        return participant

    async def connect(self, claims: Claims, transport: Transport) -> Connection:
        """Attach an upgraded socket to its session (after :meth:`authorize`)."""
        for _attempt in range(ATTACH_ATTEMPTS):
            actor = await self.get_actor(claims.session_id)
            participant = await self._participant_if_new(actor, claims.subject)
            reply = AttachReply()
            if not actor.post(Attach(claims.subject, transport, reply, participant)):
                raise Unavailable("the session is busy; try again")
            await reply.done.wait()
            if reply.connection is not None:
                return reply.connection
            if actor.end_reason is not None:
                raise SessionEnded(f"session {actor.end_reason}")
            if claims.subject not in actor.members and not actor.ending:
                raise Unauthorized("this participant has left the session")
        raise Unavailable("the session is restarting; try again")

    # --- what REST handlers decided (persisted, then published) -------------------------------
    def participant_joined(self, participant: ParticipantRecord) -> None:
        self.bus.publish(participant.session_id, Joined(participant))

    async def leave(
        self, session_id: uuid.UUID, user_id: uuid.UUID, *, reason: str, close_code: int
    ) -> bool:
        """Persist a departure, then tell every node hosting the session."""
        changed = await self.storage.leave(
            session_id=session_id, participant_id=user_id, reason=reason, now=self.clock.now()
        )
        if changed:
            self.bus.publish(session_id, Left(user_id, reason, close_code))
        return changed

    async def end_session(self, session_id: uuid.UUID, reason: str) -> bool:
        changed = await self.storage.end_session(
            session_id=session_id, reason=reason, now=self.clock.now()
        )
        self.bus.publish(session_id, Ended(reason))
        return changed

    # --- places and the route (issue 14): persisted, then published -------------------------
    async def add_place(
        self, session_id: uuid.UUID, place: Place, author: uuid.UUID | None
    ) -> PlaceRecord:
        """Store a checked place (``author`` None: the creator), then tell every node."""
        data = place.to_json()
        record = PlaceRecord(
            id=uuid.uuid4(),
            session_id=session_id,
            name=place.name,
            kind=place.kind,
            author=author,
            geometry=data["geometry"],
            radius_m=data.get("radius_m"),
            created_at=self.clock.now(),
        )
        if not await self.storage.add_place(record, limit=MAX_PLACES_PER_SESSION):
            raise TooManyPlaces(f"a session has at most {MAX_PLACES_PER_SESSION} places")
        self.bus.publish(session_id, PlaceAdded(record))
        return record

    async def remove_place(
        self, session_id: uuid.UUID, place_id: uuid.UUID, by: uuid.UUID | None
    ) -> None:
        """Remove a place: ``by`` its author, or None (the creator)."""
        existing = await self.storage.get_place(session_id, place_id)
        if existing is None:
            raise NotFound("no such place in this session")
        if by is not None and existing.author != by:
            raise Forbidden("only the place's author or the session's creator may remove it")
        if await self.storage.remove_place(session_id, place_id) is not None:
            self.bus.publish(session_id, PlaceRemoved(place_id))

    async def set_route(self, session_id: uuid.UUID, route: Route, off_route_m: float) -> None:
        record = RouteRecord(
            session_id, route.to_geojson(simplified=False), off_route_m, self.clock.now()
        )
        await self.storage.set_route(record)
        self._keep_fresh(session_id, record, route)
        self.bus.publish(session_id, RouteChanged())

    async def set_off_route(self, session_id: uuid.UUID, off_route_m: float) -> RouteRecord:
        """Change the off-route threshold of the session's route (NotFound: none)."""
        current = await self.storage.get_route(session_id)
        if current is None:
            raise NotFound("this session has no route")
        record = RouteRecord(session_id, current.geometry, off_route_m, self.clock.now())
        await self.storage.set_route(record)
        actor = self.sessions.get(session_id)
        built = None if actor is None else self.routes.route(actor.block)
        if built is not None:  # the same line: this node's actor need not build it again
            self._keep_fresh(session_id, record, built)
        self.bus.publish(session_id, RouteChanged())
        return record

    def _keep_fresh(self, session_id: uuid.UUID, record: RouteRecord, route: Route) -> None:
        self._fresh_routes[session_id] = (record, route)
        while len(self._fresh_routes) > FRESH_ROUTES_KEPT:
            del self._fresh_routes[next(iter(self._fresh_routes))]

    async def clear_route(self, session_id: uuid.UUID) -> bool:
        cleared = await self.storage.clear_route(session_id)
        if cleared:
            self.bus.publish(session_id, RouteChanged())
        return cleared

    async def load_route(self, session_id: uuid.UUID) -> tuple[RouteRecord, Route] | None:
        """The session's route from storage, built in a thread (or the copy this node
        built when it stored it)."""
        record = await self.storage.get_route(session_id)
        if record is None:
            return None
        fresh = self._fresh_routes.pop(session_id, None)
        if fresh is not None and abs(fresh[0].updated_at - record.updated_at) < 1e-3:
            return record, fresh[1]
        try:
            route = await self.build_route(parse_route_geojson, record.geometry)
        except InvalidRequest as exc:
            log.warning(
                "a stored route was not loaded: %s",
                exc.message,
                extra={"session_id": str(session_id)},
            )
            return None
        return record, route

    async def build_route(self, parse: Callable[[object], Route], data: object) -> Route:
        """Run a route parser in a worker thread (at most ``ROUTE_BUILDERS`` at once)."""
        return await trio.to_thread.run_sync(parse, data, limiter=self.route_builders)

    # --- periodic work --------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        """Rule: one vectorized geo tick for all sessions, at least once per second and
        exactly when the oldest location expires.  The index overwrites what expired
        (retention does not wait for anyone); the actors hear about it as events.

        Places and routes (``_group_tick``) are ticked at most once per
        ``GROUP_TICK_INTERVAL_S``: expiries can fall due every few milliseconds (people
        asked for a fix every 30 s, the location TTL, expire continually), and the group
        tick covers every session with places at each call.  Measured in ``realistic``
        (10,000 people, 1,650 groups, py-spy): the place tick had 11.7 % of the server's
        samples when it ran at every expiry, under 1 % at once a second; the adaptive
        leg's CPU went from 74.0 to 69.3 % of a core (120 s legs)."""
        next_group_tick = -math.inf
        while True:
            now = trio.current_time()
            result = self.index.tick(now)
            if result.evicted_blocks.size:
                self.stats.evictions += int(result.evicted_blocks.size)
                by_block: dict[int, list[int]] = {}
                for block, slot in zip(
                    result.evicted_blocks.tolist(), result.evicted_slots.tolist(), strict=True
                ):
                    by_block.setdefault(block, []).append(slot)
                for block, slots in by_block.items():
                    actor = self._by_block.get(block)
                    if actor is not None:
                        actor.post(Evicted(tuple(slots)))
            for block, box in zip(
                result.hint_blocks.tolist(), result.hint_boxes.tolist(), strict=True
            ):
                actor = self._by_block.get(block)
                if actor is not None and actor.fanout:
                    actor.post(HintDue(BBox(*box)))
            if now >= next_group_tick:
                self._group_tick(now)
                next_group_tick = now + GROUP_TICK_INTERVAL_S
            wake = min(now + HINT_INTERVAL_S, self.index.next_expiry())
            await trio.sleep_until(max(wake, now + MIN_TICK_S))

    def _group_tick(self, now: float) -> None:
        """Places and routes of every session, in the same tick (issue 14): arrivals and
        departures, and the convoys that changed, posted to their actors with the
        members' and places' ids as they are now."""
        if not (len(self.places) or len(self.routes)):
            return
        arrays = self.index.arrays()
        events = self.places.tick(arrays, now)
        if events:
            found: dict[int, tuple[list[tuple[uuid.UUID, uuid.UUID]], list[Any]]] = {}
            rows = (
                (events.arrivals, None),
                (events.departures, "left"),
                (events.expired, "expired"),
            )
            for array, reason in rows:
                for block, slot, index in array.tolist():
                    actor = self._by_block.get(block)
                    if actor is None:
                        continue
                    member = actor.by_slot[slot]
                    place_id = actor.group.place_id_at(index)
                    if member is None or place_id is None:
                        continue
                    arrivals, departures = found.setdefault(block, ([], []))
                    if reason is None:
                        arrivals.append((member.id, place_id))
                    else:
                        departures.append((member.id, place_id, reason))
            for block, (arrivals, departures) in found.items():
                self._by_block[block].post(PlaceTick(tuple(arrivals), tuple(departures)))
        for convoy in self.routes.tick(arrays, now):
            actor = self._by_block.get(convoy.block)
            if actor is not None:
                actor.post(ConvoyTick(convoy))

    async def _pace_loop(self) -> None:
        """Rule: once a second, the process's CPU share and how busy its cores are set the
        flush window (``_pacing``)."""
        cores = CoresBusy()
        cpu, wall = time.process_time(), trio.current_time()
        while True:
            await trio.sleep(PACE_INTERVAL_S)
            cpu_now, wall_now = time.process_time(), trio.current_time()
            self.pacer.observe(cpu_now - cpu, wall_now - wall, cores.sample())
            cpu, wall = cpu_now, wall_now

    async def _housekeeping_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.sweep_interval_s)
            await self.housekeep()

    async def housekeep(self) -> None:
        """Persist activity, then end expired/inactive sessions and purge old ones."""
        try:
            await self.persist_activity()
            now = self.clock.now()
            ended = await self.storage.sweep(
                now=now, inactive_before=now - self.settings.inactivity_timeout_s
            )
            for session_id, reason in ended:
                self.bus.publish(session_id, Ended(reason))
            await self.storage.purge_ended(ended_before=now - self.settings.ended_retention_s)
        except StorageError as exc:
            log.warning("housekeeping skipped: %s", exc)

    def _note_activity(self, actor: SessionActor) -> None:
        """Queue what changed since it was last persisted (wall times only grow)."""
        activity = actor.activity()
        if activity.session > self._persisted_sessions.get(actor.id, 0.0):
            self._pending_sessions[actor.id] = activity.session
        for member_id, seen in activity.members.items():
            if seen > self._persisted_members.get(member_id, 0.0):
                self._pending_members[member_id] = seen

    async def persist_activity(self) -> None:
        for actor in list(self.sessions.values()):
            self._note_activity(actor)
        sessions, members = self._pending_sessions, self._pending_members
        self._pending_sessions, self._pending_members = {}, {}
        try:
            await self.storage.record_activity(sessions, members)
        except StorageError:
            # Keep them for next time (newer values win); bounded by sessions + members.
            for key, value in sessions.items():
                self._pending_sessions[key] = max(value, self._pending_sessions.get(key, 0.0))
            for key, value in members.items():
                self._pending_members[key] = max(value, self._pending_members.get(key, 0.0))
            raise
        self._persisted_sessions.update(sessions)
        self._persisted_members.update(members)
        # Forget what no live session holds any more (bounded by what is in memory).
        live_members = {m for a in self.sessions.values() for m in a.members}
        for key in [k for k in self._persisted_sessions if k not in self.sessions]:
            del self._persisted_sessions[key]
        for key in [k for k in self._persisted_members if k not in live_members]:
            del self._persisted_members[key]

    async def shutdown(self, grace_s: float) -> None:
        """Close every socket with 1001 and wait up to ``grace_s`` for the sessions to go."""
        self.shutting_down = True
        with trio.move_on_after(grace_s):
            for actor in list(self.sessions.values()):
                actor.post(Shutdown())
            for actor in list(self.sessions.values()):
                await actor.finished.wait()
        with trio.move_on_after(max(1.0, grace_s / 2)):
            try:
                await self.persist_activity()
            except StorageError as exc:
                log.warning("could not persist activity at shutdown: %s", exc)

    # --- introspection --------------------------------------------------------------------
    def connection_count(self) -> int:
        return sum(len(actor.fanout) for actor in self.sessions.values())

    def member_count(self) -> int:
        return sum(len(actor.members) for actor in self.sessions.values())


@asynccontextmanager
async def open_hub(
    *,
    settings: RuntimeSettings,
    tokens: TokenAuthority,
    storage: Storage,
    clock: WallClock | None = None,
    bus: SessionBus | None = None,
) -> AsyncIterator[Hub]:
    async with trio.open_nursery() as nursery:
        hub = Hub(
            nursery,
            settings=settings,
            tokens=tokens,
            clock=clock or WallClock(),
            storage=storage,
            bus=bus or LocalBus(),
        )
        nursery.start_soon(hub.alarms.run)
        nursery.start_soon(hub._tick_loop)
        if hub.pacer.adaptive:
            nursery.start_soon(hub._pace_loop)
        nursery.start_soon(hub._housekeeping_loop)
        try:
            yield hub
        finally:
            with trio.CancelScope(shield=True):
                await hub.shutdown(settings.shutdown_grace_s)
            nursery.cancel_scope.cancel()
