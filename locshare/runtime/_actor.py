"""One live session on this process: its actor, the only task that changes its state.

Resource handling:
    A :class:`SessionActor` owns one nursery (started in the hub's nursery).  Its own
    task runs the loop below; every connection of the session runs in the same nursery
    (:meth:`~._connection.Connection.run`).  Ending the session queues
    ``session_ended`` + close 4000 on every connection, gives them ``close_grace_s`` to
    go, then cancels the nursery; ``finally`` unsubscribes from the bus, answers every
    event still waiting, releases the geo block (overwriting every location) and tells
    the host.  So when :meth:`SessionActor.run` returns, no task, socket or slot of the
    session is left.

Rule 1 (one writer): the session's state (members, connections, positions, deadlines)
changes only in the actor's loop, by applying events from its inbox
(:mod:`._inbox`) in arrival order: joins, departures and ends published on the bus by
REST handlers, the sweeper or other nodes; attaches from handshakes; departures of
connections; the geo tick's evictions and hints; positions from readers.  Everyone else
only reads (a new connection's ``session_state`` is built from a consistent snapshot:
the actor applies pending positions before attaching it).

Rule 2 (flush grid): positions wait in the inbox for the end of the flush window they
arrived in (``_pacing.next_flush_at``: a grid with a per-session phase, so the sessions'
flushes spread evenly); then one ``locations`` frame is encoded once, holding at most one
(the latest) entry per participant, and goes to every connection; a due viewport hint
rides with it.  With a distributed bus the same positions go to the other nodes as one
:class:`~._events.LocatedBatch` per flush.

Rule 3 (crash isolation): an exception in the actor's loop ends this session's tasks
only (its sockets get 1011 and reconnect to a fresh actor loaded from storage); it is
logged and counted, and the host goes on.

Privacy: the actor keeps no copy of a position: they live in the geo index (and briefly
in the inbox); log lines carry ids only.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._clock import WallClock, rfc3339
from ..errors import ApiError, StorageError
from ..geo import BBox, GeoIndex, Place, PlaceIndex, Route, RouteIndex, fit
from ..proto import _messages as proto
from ..proto._pacing import flush_phase, next_flush_at
from ..proto._rates import Stillness, choose_interval
from ..storage._model import ParticipantRecord, PlaceRecord, RouteRecord, SessionRecord
from ._alarms import AlarmClock
from ._bus import SessionBus
from ._connection import Attach, Connection, Detached, Viewport, VisibilityChanged
from ._events import (
    BusReconnected,
    ConvoyTick,
    Ended,
    Evicted,
    HintDue,
    Joined,
    Left,
    Located,
    LocatedBatch,
    NodeGone,
    PlaceAdded,
    PlaceRemoved,
    PlaceTick,
    Presence,
    RouteChanged,
    RouteLoaded,
    Shutdown,
    StateReply,
    StateRequest,
    StatusSet,
    Unhosted,
)
from ._fanout import LocalFanout
from ._group import Group, union_box
from ._inbox import Inbox

if TYPE_CHECKING:
    from ._settings import RuntimeSettings
    from ._stats import HubStats

log = logging.getLogger("locshare.session")

# A node that starts hosting a session other nodes host already waits this long at most
# for one of them to send the session's state before admitting its first socket.
STATE_WAIT_S = 0.5
# locate_now goes to a session's participants at most this often (a client toggling its
# visibility must not keep everyone's GPS awake).
LOCATE_NOW_MIN_INTERVAL_S = 5.0
# A session's convoy message goes out at most this often (issue 14).
CONVOY_MIN_INTERVAL_S = 1.0
# Reading a changed route from storage: attempts, and the first pause between them.
ROUTE_LOAD_ATTEMPTS = 4
ROUTE_LOAD_RETRY_S = 1.0


class SessionHost(Protocol):
    """What a session actor needs from the process hosting it (the hub)."""

    settings: RuntimeSettings
    stats: HubStats
    index: GeoIndex
    places: PlaceIndex
    routes: RouteIndex
    clock: WallClock
    bus: SessionBus
    alarms: AlarmClock

    @property
    def window_s(self) -> float: ...

    def connection_attached(self, connection: Connection) -> None: ...

    def connection_closed(self, connection: Connection) -> None: ...

    def session_timed_out(self, session_id: uuid.UUID, reason: str) -> None: ...

    def actor_finished(self, actor: SessionActor) -> None: ...

    async def leave(
        self, session_id: uuid.UUID, user_id: uuid.UUID, *, reason: str, close_code: int
    ) -> bool: ...

    async def add_place(
        self, session_id: uuid.UUID, place: Place, author: uuid.UUID | None
    ) -> PlaceRecord: ...

    async def remove_place(
        self, session_id: uuid.UUID, place_id: uuid.UUID, by: uuid.UUID | None
    ) -> None: ...

    async def load_route(self, session_id: uuid.UUID) -> tuple[RouteRecord, Route] | None: ...


@dataclass(eq=False)
class Member:
    """A participant who has not left.  ``slot`` is theirs in the session's geo block."""

    id: uuid.UUID
    id_str: str
    display_name: str
    avatar_color: str
    joined_at: float
    last_seen: float  # wall time: last position or connection activity
    slot: int
    location_at: float | None = None  # wall time of the last position received

    def summary(self, online: bool) -> dict[str, Any]:
        return {
            "user_id": self.id_str,
            "display_name": self.display_name,
            "avatar_color": self.avatar_color,
            "joined_at": rfc3339(self.joined_at),
            "online": online,
        }


@dataclass(frozen=True, slots=True)
class Activity:
    """What the host persists: wall times of the session's and each member's activity."""

    session: float
    members: dict[uuid.UUID, float]


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    members: int
    connections: int
    pending: int
    queued_events: int


class SessionActor:
    """The live state of one session on this process.  See the module docstring."""

    def __init__(
        self,
        host: SessionHost,
        record: SessionRecord,
        participants: list[ParticipantRecord],
        inbox: Inbox,
        *,
        places: list[PlaceRecord] | None = None,
        route: tuple[RouteRecord, Route] | None = None,
        peers: frozenset[str] = frozenset(),
    ) -> None:
        self.host = host
        self.settings = host.settings
        self.stats = host.stats
        self.clock = host.clock
        self.index = host.index
        self.id = record.id
        self.id_str = str(record.id)
        self.name = record.name
        self.created_at = record.created_at
        self.expires_at = record.expires_at
        self.max_participants = record.max_participants
        self.inbox = inbox
        self.block = self.index.allocate_block()
        self.members: dict[uuid.UUID, Member] = {}
        self.by_slot: list[Member | None] = [None] * self.index.block_size
        self.fanout = LocalFanout()
        # Members online on other nodes: node -> whether their map is visible there.
        self.remote_online: dict[uuid.UUID, dict[str, bool]] = {}
        self.stillness: dict[uuid.UUID, Stillness] = {}
        self._viewers_cache: set[uuid.UUID] | None = None
        self.group = Group(host.places, host.routes, self.block)
        for place in places or ():
            self.group.add_place(place)
        if route is not None:
            self.group.set_route(*route)
        self._anchor_expiry = math.inf
        self._locate_now_at = -math.inf
        self.pending: dict[uuid.UUID, None] = {}
        self.end_reason: str | None = None
        self._ending = False
        self._hint_due: BBox | None = None
        self._flush_at: float | None = None
        self._phase = flush_phase(record.id.int)
        self._nursery: trio.Nursery | None = None
        # Cluster: attaches wait (deferred) until another node sent the state, or until
        # STATE_WAIT_S passed (``None``: no wait).
        self._hosted_elsewhere = bool(peers)
        # Other nodes known to host this session: positions go on the bus only while
        # there is one (a session whose members are all here costs Redis nothing).  A
        # node that starts hosting it asks for its state first, so it is known before
        # it could miss anything; a node gone (no heartbeat) is forgotten.
        self.peers: set[str] = set(peers)
        self._state_until: float | None = None
        self._deferred: list[Attach] = []
        self.started = trio.Event()  # set once the loop runs
        self.finished = trio.Event()
        now = trio.current_time()
        wall = self.clock.now()
        self.expiry_deadline = now + (record.expires_at - wall)
        self.last_activity = now - max(0.0, wall - record.last_activity)
        self.idle_since: float | None = now
        for participant in participants:
            if participant.is_active:
                self._add_member(participant)

    # --- what others may call: posting, reading -------------------------------------
    def post(self, event: object) -> bool:
        return self.inbox.post(event)

    def locate(self, event: Located) -> None:
        self.inbox.locate(event)

    @property
    def ending(self) -> bool:
        """True once the session is ending, unloading or failing: no new connection."""
        if self._ending:
            return True
        return self._nursery is not None and self._nursery.cancel_scope.cancel_called

    def is_online(self, user_id: uuid.UUID) -> bool:
        """Online on any node: a socket here, or presence reported by another node."""
        return self.fanout.is_online(user_id) or bool(self.remote_online.get(user_id))

    def activity(self) -> Activity:
        """A snapshot for persisting (read-only; the host diffs it against what it wrote)."""
        wall = self.clock.now() - max(0.0, trio.current_time() - self.last_activity)
        return Activity(wall, {m.id: m.last_seen for m in self.members.values()})

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            len(self.members), len(self.fanout), len(self.pending), self.inbox.statistics().queued
        )

    # --- lifecycle ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if self._hosted_elsewhere:
                        self._state_until = trio.current_time() + STATE_WAIT_S
                        bus = self.host.bus
                        bus.publish(self.id, StateRequest(bus.node_id))
                    self.started.set()
                    task_status.started()
                    await self._loop()
                    # Sockets were told to close: give them a moment, then cancel.
                    nursery.cancel_scope.deadline = (
                        trio.current_time() + self.settings.close_grace_s
                    )
                    await self._drain_connections()
                    nursery.cancel_scope.cancel()
            except* Exception as group:
                # A bug inside this session: it must not take others down.  Its tasks
                # are gone; clients see their socket drop and reconnect to a fresh actor.
                self.stats.session_crashes += 1
                log.error(
                    "session actor crashed; its clients will reconnect",
                    extra={"session_id": self.id_str},
                    exc_info=group,
                )
        finally:
            self._ending = True
            self.host.alarms.cancel(self.inbox)
            self.started.set()  # never leave a waiter behind, even if start-up failed
            for event in [*self._deferred, *self.inbox.close()]:
                if isinstance(event, Attach):
                    event.reply.answer(None)
                elif isinstance(event, Detached):
                    self.host.connection_closed(event.connection)
            for connection in list(self.fanout):
                self.host.connection_closed(connection)
            self.fanout.abort_all()
            self.pending.clear()
            self.group.clear()
            self.index.free_block(self.block)
            self.host.actor_finished(self)
            self.finished.set()

    async def _loop(self) -> None:
        while True:
            if self._flush_at is None and (self.inbox.has_located or self._hint_due is not None):
                self._flush_at = next_flush_at(trio.current_time(), self.host.window_s, self._phase)
            # The clock rings the inbox at the next deadline (no cancel scope per wake).
            self.host.alarms.set(self.inbox, self._wake_at())
            await self.inbox.wait()
            for event in self.inbox.take_events():
                self._apply(event)
            if self._done():
                return
            now = trio.current_time()
            if self._state_until is not None and now >= self._state_until:
                self._state_received()  # nobody answered in time: go on without
            if self._flush_at is not None and now >= self._flush_at:
                self._flush()
            if now >= self._anchor_expiry:
                self._expire_anchors(now)
            if (
                self.group.convoy_due is not None
                and now >= self.group.convoy_sent_at + CONVOY_MIN_INTERVAL_S
            ):
                self._send_convoy(now)
            self._check_deadlines(now)
            if self._done():
                return

    def _done(self) -> bool:
        return self._ending

    async def _drain_connections(self) -> None:
        """Ending: keep taking connections' departures (and refusing attaches) until the
        last socket has gone."""
        while self.fanout:
            await self.inbox.wait()
            for event in self.inbox.take_events():
                if isinstance(event, Detached):
                    self._detached(event.connection)
                elif isinstance(event, Attach):
                    event.reply.answer(None)

    def _wake_at(self) -> float:
        wake = min(self.expiry_deadline, self.last_activity + self.settings.inactivity_timeout_s)
        if self.idle_since is not None:
            wake = min(wake, self.idle_since + self.settings.idle_unload_s)
        if self._flush_at is not None:
            wake = min(wake, self._flush_at)
        if self._state_until is not None:
            wake = min(wake, self._state_until)
        if self.group.convoy_due is not None:
            wake = min(wake, self.group.convoy_sent_at + CONVOY_MIN_INTERVAL_S)
        return min(wake, self._anchor_expiry)

    def _check_deadlines(self, now: float) -> None:
        if now >= self.expiry_deadline:
            self._end("expired")
            self.host.session_timed_out(self.id, "expired")
        elif now >= self.last_activity + self.settings.inactivity_timeout_s:
            self._end("inactive")
            self.host.session_timed_out(self.id, "inactive")
        elif self.idle_since is not None and now >= self.idle_since + self.settings.idle_unload_s:
            self._ending = True  # no socket for a while: leave memory (the session goes on)

    def _touch(self, now: float) -> None:
        """Record activity (pushes the inactivity deadline later; no timer restart)."""
        self.last_activity = max(self.last_activity, now)

    # --- applying events ------------------------------------------------------------------
    def _apply(self, event: object) -> None:
        origin = getattr(event, "origin", None)
        if isinstance(event, Unhosted):
            self.peers.discard(event.origin)  # it unloaded the session: no more positions
            return
        if origin is not None and origin != self.host.bus.node_id and origin not in self.peers:
            if isinstance(event, StateRequest):
                self.peers.add(origin)  # the state reply carries the positions
            else:
                self._met_peer(origin)
        if isinstance(event, Attach):
            if self._state_until is not None:
                self._deferred.append(event)
            else:
                self._attach(event)
        elif isinstance(event, Detached):
            self._detached(event.connection)
        elif isinstance(event, VisibilityChanged):
            self._visibility(event.connection, event.visible)
        elif isinstance(event, LocatedBatch):
            if event.origin != self.host.bus.node_id:
                self._apply_located(self._current(event.updates))
                if self.pending and self._flush_at is None:
                    self._flush_at = next_flush_at(
                        trio.current_time(), self.host.window_s, self._phase
                    )
        elif isinstance(event, Evicted):
            self._evicted(event.slots)
        elif isinstance(event, HintDue):
            if self.fanout:
                self._hint_due = event.box
        elif isinstance(event, Joined):
            self._add_participant(event.participant)
        elif isinstance(event, Left):
            self._remove_participant(event.user_id, event.reason, event.close_code)
        elif isinstance(event, Ended):
            self._end(event.reason)
        elif isinstance(event, Presence):
            if (
                event.online
                and event.origin != self.host.bus.node_id
                and self.fanout.is_online(event.user_id)
            ):
                # The member connected again on another node: this socket is the stale one.
                self.fanout.close_member(
                    event.user_id, proto.CLOSE_REPLACED, "replaced by a newer connection"
                )
            self._remote_presence(event)
        elif isinstance(event, StateRequest):
            self._send_state(event.origin)
        elif isinstance(event, StateReply):
            if event.to == self.host.bus.node_id:
                self._receive_state(event)
        elif isinstance(event, NodeGone):
            self._node_gone(event.node)
        elif isinstance(event, BusReconnected):
            self._resync()
        elif isinstance(event, PlaceTick):
            self._place_tick(event)
        elif isinstance(event, ConvoyTick):
            self._convoy_tick(event)
        elif isinstance(event, PlaceAdded):
            self._place_added(event.place)
        elif isinstance(event, PlaceRemoved):
            self._place_removed(event.place_id)
        elif isinstance(event, StatusSet):
            self._status_set(event)
        elif isinstance(event, RouteChanged):
            self.group.route_generation += 1
            if self._nursery is not None:
                self._nursery.start_soon(self._load_route, self.group.route_generation)
        elif isinstance(event, RouteLoaded):
            self._route_loaded(event)
        elif isinstance(event, Shutdown):
            self._flush()
            self.fanout.close_all(proto.CLOSE_GOING_AWAY, "server shutting down")
            self._ending = True

    def _end(self, reason: str) -> None:
        """End the session: ``session_ended`` then close 4000 on every socket."""
        if self._ending:
            return
        self.end_reason = reason
        frame = proto.encode("session_ended", {"reason": reason})
        self.fanout.close_all(proto.CLOSE_SESSION_ENDED, "session ended", final=frame)
        self._ending = True
        log.info("session ended", extra={"session_id": self.id_str, "reason": reason})

    # --- members ------------------------------------------------------------------------
    def _add_member(self, participant: ParticipantRecord) -> Member:
        slot = self.index.allocate_slot(self.block)
        member = Member(
            id=participant.id,
            id_str=str(participant.id),
            display_name=participant.display_name,
            avatar_color=participant.avatar_color,
            joined_at=participant.joined_at,
            last_seen=participant.last_seen,
            slot=slot,
        )
        self.members[participant.id] = member
        self.by_slot[slot] = member
        return member

    def _add_participant(self, participant: ParticipantRecord) -> Member | None:
        """A participant joined (or was found in the database): tell everyone."""
        existing = self.members.get(participant.id)
        if existing is not None or not participant.is_active or self._ending:
            return existing
        member = self._add_member(participant)
        self._touch(trio.current_time())
        self.fanout.deliver(
            proto.encode("participant_joined", member.summary(self.is_online(member.id)))
        )
        return member

    def _remove_participant(self, user_id: uuid.UUID, reason: str, close_code: int) -> None:
        """A participant left or was removed: free their slot, close their socket."""
        member = self.members.pop(user_id, None)
        if member is None:
            return
        self._viewers_cache = None
        self.pending.pop(user_id, None)
        self.inbox.drop_located(user_id)
        self.remote_online.pop(user_id, None)
        self.stillness.pop(user_id, None)
        self.group.member_removed(user_id, member.slot)
        self.index.free_slot(self.block, member.slot)
        self.by_slot[member.slot] = None
        self.fanout.close_member(
            user_id,
            close_code,
            "left the session" if reason == "left" else "removed from the session",
        )
        self._touch(trio.current_time())
        self.fanout.deliver(
            proto.encode("participant_left", {"user_id": member.id_str, "reason": reason})
        )

    async def leave(self, connection: Connection) -> None:
        """``leave`` over the socket: same as leaving over REST, then close 1000."""
        try:
            await self.host.leave(
                self.id, connection.member.id, reason="left", close_code=proto.CLOSE_NORMAL
            )
        except StorageError:
            connection.send_error("unavailable", "cannot leave right now; try again")

    # --- connections --------------------------------------------------------------------
    def _attach(self, event: Attach) -> None:
        member = self.members.get(event.user_id)
        if member is None and event.participant is not None:
            member = self._add_participant(event.participant)
        if member is None or self._ending or self._nursery is None:
            event.reply.answer(None)
            return
        now = trio.current_time()
        self._flush()  # everyone else gets pending updates first: state will include them
        was_viewer = member.id in self._viewers()
        connection = Connection.open(self, member, event.transport, now)
        old = self.fanout.attach(connection)
        self._viewers_cache = None
        if old is not None:
            old.close(proto.CLOSE_REPLACED, "replaced by a newer connection")
        elif not self.remote_online.get(member.id):
            self.fanout.deliver(
                proto.encode("presence", {"user_id": member.id_str, "online": True}),
                exclude=connection,
            )
        self._publish_presence(member.id, online=True, visible=True)
        member.last_seen = self.clock.now()
        self._touch(now)
        self.idle_since = None
        connection.put(self.state_frame(connection))
        self._nursery.start_soon(connection.run)
        self.host.connection_attached(connection)
        event.reply.answer(connection)
        if not was_viewer:
            self._viewer_appeared(member.id)
        self._refresh_intervals()  # the new map on screen may change everyone's interval

    def _detached(self, connection: Connection) -> None:
        """A connection's task ended (any reason)."""
        if connection not in self.fanout:
            return
        was_current = self.fanout.detach(connection)
        self._viewers_cache = None
        self.host.connection_closed(connection)
        member = self.members.get(connection.member.id)
        if was_current and member is not None:
            member.last_seen = self.clock.now()
            self._publish_presence(member.id, online=False, visible=False)
            if not self._ending and not self.remote_online.get(member.id):
                self.fanout.deliver(
                    proto.encode("presence", {"user_id": member.id_str, "online": False})
                )
            self._refresh_intervals()
        if not self.fanout:
            self.idle_since = trio.current_time()

    def _visibility(self, connection: Connection, visible: bool) -> None:
        """The client showed or hid its map."""
        if connection not in self.fanout or connection.visible == visible:
            return
        user_id = connection.member.id
        was_viewer = user_id in self._viewers()
        connection.set_visible(visible)
        self._viewers_cache = None
        if self.fanout.current(user_id) is connection:
            self._publish_presence(user_id, online=True, visible=visible)
        if visible and not was_viewer:
            self._viewer_appeared(user_id)
        self._refresh_intervals()

    def _publish_presence(self, user_id: uuid.UUID, *, online: bool, visible: bool) -> None:
        bus = self.host.bus
        if bus.distributed:
            bus.publish(self.id, Presence(bus.node_id, user_id, online, visible))

    def _remote_presence(self, event: Presence) -> None:
        if event.origin == self.host.bus.node_id or event.user_id not in self.members:
            return
        before = self.is_online(event.user_id)
        was_viewer = event.user_id in self._viewers()
        self._viewers_cache = None
        nodes = self.remote_online.setdefault(event.user_id, {})
        if event.online:
            nodes[event.origin] = event.visible
        else:
            nodes.pop(event.origin, None)
            if not nodes:
                del self.remote_online[event.user_id]
        after = self.is_online(event.user_id)
        if before != after:
            member = self.members[event.user_id]
            self.fanout.deliver(
                proto.encode("presence", {"user_id": member.id_str, "online": after})
            )
        if event.user_id in self._viewers() and not was_viewer:
            self._viewer_appeared(event.user_id)
        self._refresh_intervals()

    # --- update intervals (issue 15) -------------------------------------------------------
    def _viewers(self) -> set[uuid.UUID]:
        """Members with the map on screen, on any node (cached: a flush asks for it,
        and it changes only with attaches, departures, visibility and presence)."""
        if self._viewers_cache is None:
            viewers = {
                c.member.id for c in self.fanout if c.visible and c.member.id in self.members
            }
            for user_id, nodes in self.remote_online.items():
                if any(nodes.values()):
                    viewers.add(user_id)
            self._viewers_cache = viewers
        return self._viewers_cache

    def _refresh_intervals(self, only: set[uuid.UUID] | None = None) -> None:
        """Tell each member connected here the interval to send positions at, if it
        changed (``_rates.choose_interval``; ``only``: just these members, the common
        case: a flush looks at the members it has positions of, not at everyone)."""
        policy = self.settings.rates
        viewers = self._viewers()
        now = trio.current_time()
        if only is None:
            targets = [c for c in self.fanout if self.fanout.current(c.member.id) is c]
        else:
            targets = [c for u in only if (c := self.fanout.current(u)) is not None]
        for connection in targets:
            user_id = connection.member.id
            stillness = self.stillness.get(user_id)
            choice = choose_interval(
                policy,
                watched=len(viewers) > 1 or (bool(viewers) and user_id not in viewers),
                at_place=self.group.at_meeting_point(user_id),
                stationary=stillness is not None and stillness.stationary(now, policy),
            )
            if choice != connection.interval_sent:
                connection.interval_sent = choice
                seconds, reason = choice
                connection.put(
                    proto.encode("update_interval", {"seconds": seconds, "reason": reason})
                )

    def _viewer_appeared(self, viewer: uuid.UUID) -> None:
        """Someone started looking: ask everyone else here for a fix now (rate-limited;
        sent before the new intervals, so a client fixes at once, then keeps the pace)."""
        now = trio.current_time()
        if now - self._locate_now_at < LOCATE_NOW_MIN_INTERVAL_S:
            return
        self._locate_now_at = now
        frame = proto.encode("locate_now", {})
        for connection in self.fanout:
            if connection.member.id != viewer:
                connection.put(frame)

    def _expire_anchors(self, now: float) -> None:
        policy = self.settings.rates
        expired = {u for u, s in self.stillness.items() if s.expire(now, policy)}
        self._anchor_expiry = min(
            (s.expires_at(policy) for s in self.stillness.values()), default=math.inf
        )
        if expired:
            self._refresh_intervals(expired)

    # --- places, the route, statuses (issue 14) ---------------------------------------------
    def _place_added(self, record: PlaceRecord) -> None:
        message = self.group.add_place(record)
        if message is None:
            return
        self.fanout.deliver(proto.encode("place_added", message))
        self._hint_with_places()

    def _place_removed(self, place_id: uuid.UUID) -> None:
        members = self.group.remove_place(place_id)
        if members is None:
            return
        self.fanout.deliver(proto.encode("place_removed", {"place_id": str(place_id)}))
        self._hint_with_places()
        if members:
            self._refresh_intervals(members)

    def _place_tick(self, event: PlaceTick) -> None:
        """Arrivals and departures the geo tick found (ids as of the tick)."""
        changed: set[uuid.UUID] = set()
        for user_id, place_id in event.arrivals:
            if user_id in self.members and self.group.arrive(user_id, place_id):
                changed.add(user_id)
                self.fanout.deliver(
                    proto.encode("arrived", {"user_id": str(user_id), "place_id": str(place_id)})
                )
        for user_id, place_id, reason in event.departures:
            if self.group.depart(user_id, place_id):
                changed.add(user_id)
                self.fanout.deliver(
                    proto.encode(
                        "departed",
                        {"user_id": str(user_id), "place_id": str(place_id), "reason": reason},
                    )
                )
        if changed:
            self._refresh_intervals(changed)

    def _convoy_tick(self, event: ConvoyTick) -> None:
        group = self.group
        if group.route is None:
            return
        user_at = [None if m is None else m.id_str for m in self.by_slot]
        message = group.convoy_message(event.convoy, user_at)
        if message is None:
            return
        group.convoy_due = message
        now = trio.current_time()
        if now >= group.convoy_sent_at + CONVOY_MIN_INTERVAL_S:
            self._send_convoy(now)

    def _send_convoy(self, now: float) -> None:
        group = self.group
        message, group.convoy_due = group.convoy_due, None
        if message is None:
            return
        group.convoy = message
        group.convoy_sent_at = now
        self.fanout.deliver(proto.encode("convoy", message))

    async def _load_route(self, generation: int) -> None:
        """Read the changed route (a task in the actor's nursery; the result comes back
        as an event).  A storage outage is retried a few times, then logged."""
        pause = ROUTE_LOAD_RETRY_S
        for attempt in range(ROUTE_LOAD_ATTEMPTS):
            try:
                loaded = await self.host.load_route(self.id)
            except StorageError as exc:
                if attempt + 1 == ROUTE_LOAD_ATTEMPTS:
                    log.warning(
                        "could not read the session's new route: %s",
                        exc,
                        extra={"session_id": self.id_str},
                    )
                    return
                await trio.sleep(pause)
                pause *= 2
                continue
            record, route = (None, None) if loaded is None else loaded
            self.post(RouteLoaded(generation, record, route))
            return

    def _route_loaded(self, event: RouteLoaded) -> None:
        if event.generation != self.group.route_generation:
            return  # a newer change is being read
        outcome = self.group.set_route(event.record, event.route)
        if outcome == "route_set" and self.group.route is not None:
            self.fanout.deliver(proto.encode("route_set", self.group.route))
        elif outcome == "route_cleared":
            self.fanout.deliver(proto.encode("route_cleared", {}))

    def _status_set(self, event: StatusSet) -> None:
        if event.user_id not in self.members:
            return
        message = self.group.set_status(event.user_id, event.status, event.text, event.at)
        if event.status == "need_help":
            # Hidden maps get no positions; the alert must show where everyone is now.
            for connection in self.fanout:
                if not connection.visible:
                    connection.put_all(self.catch_up_frames(connection), even_hidden=True)
        self.fanout.deliver(proto.encode("status", message))

    def _hint_with_places(self) -> None:
        """The places changed: a fresh hint to the screens that fit them too."""
        now = trio.current_time()
        for connection in self.fanout:
            if connection.viewport[3]:
                hint = self.viewport_data(connection.viewport, now)
                if hint is not None:
                    connection.put(proto.encode("viewport", hint))
                    self.stats.hints_sent += 1

    # What a connection asks for (in its own task): storage first, then the bus.
    async def place_add(self, connection: Connection, place: Place) -> None:
        try:
            await self.host.add_place(self.id, place, connection.member.id)
        except ApiError as exc:
            code = "invalid_place" if exc.code == "too_many_places" else exc.code
            connection.send_error(code, exc.message)
        except StorageError:
            connection.send_error("unavailable", "cannot add the place right now; try again")

    async def place_remove(self, connection: Connection, place_id: uuid.UUID) -> None:
        try:
            await self.host.remove_place(self.id, place_id, connection.member.id)
        except ApiError as exc:
            code = "invalid_place" if exc.code == "not_found" else exc.code
            connection.send_error(code, exc.message)
        except StorageError:
            connection.send_error("unavailable", "cannot remove the place right now; try again")

    def set_status(self, connection: Connection, status: str | None, text: str | None) -> None:
        at = None if status is None else self.clock.now()
        self.host.bus.publish(self.id, StatusSet(connection.member.id, status, text, at))

    # --- other nodes ----------------------------------------------------------------------
    def _send_state(self, requester: str) -> None:
        """Another node starts hosting this session: send it what this node knows."""
        bus = self.host.bus
        if requester == bus.node_id:
            return
        self._flush()  # what waits in the inbox goes into the index (and to the others)
        located = self._fresh_located()
        online = []
        for connection in self.fanout:
            user_id = connection.member.id
            if user_id in self.members and self.fanout.current(user_id) is connection:
                online.append((user_id, bus.node_id, connection.visible))
        online += [
            (m, node, visible)
            for m, nodes in self.remote_online.items()
            for node, visible in nodes.items()
        ]
        statuses = tuple(StatusSet(*raw) for raw in self.group.raw_statuses())
        bus.publish(
            self.id,
            StateReply(bus.node_id, requester, located, tuple(online), statuses),
        )

    def _fresh_located(self) -> tuple[Located, ...]:
        """Every fresh position of the session, with the wall time it was received."""
        now = trio.current_time()
        wall = self.clock.now()
        located = []
        for member in self.members.values():
            location = self.index.get(self.block, member.slot, now)
            if location is None:
                continue
            located.append(
                Located(
                    user_id=member.id,
                    lat=location.lat,
                    lng=location.lng,
                    accuracy=location.accuracy,
                    heading=location.heading,
                    speed=location.speed,
                    client_ts=location.client_ts,
                    received_at=location.received_at,
                    received_wall=wall - (now - location.received_at),
                )
            )
        return tuple(located)

    def _met_peer(self, node: str) -> None:
        """Another node turned out to host this session: positions flushed before this
        node knew (they were not published, see ``_flush``) go to it now.  Its actor
        keeps only what is newer than what it has (``_current``)."""
        self.peers.add(node)
        located = self._fresh_located()
        if located:
            bus = self.host.bus
            bus.publish(self.id, LocatedBatch(bus.node_id, located))

    def _current(self, updates: tuple[Located, ...]) -> list[Located]:
        """Positions from another node that say something new: of a member, newer than
        the member's last one, and not older than the TTL (a link to Redis that comes
        back can deliver what a dead connection held for seconds)."""
        oldest = self.clock.now() - self.settings.location_ttl_s
        return [
            e
            for e in updates
            if (member := self.members.get(e.user_id)) is not None
            and (member.location_at is None or member.location_at < e.received_wall)
            and e.received_wall > oldest
        ]

    def _receive_state(self, event: StateReply) -> None:
        self._apply_located(self._current(event.located))
        if self.pending and self._flush_at is None:
            self._flush_at = next_flush_at(trio.current_time(), self.host.window_s, self._phase)
        for user_id, node, visible in event.online:
            if node != self.host.bus.node_id:
                self._remote_presence(Presence(node, user_id, True, visible))
        for status in event.statuses:
            if status.user_id not in self.group.statuses:
                self._status_set(status)
        self._state_received()

    def _state_received(self) -> None:
        """Admit the sockets that waited for the session's state."""
        self._state_until = None
        deferred, self._deferred = self._deferred, []
        for attach in deferred:
            self._attach(attach)

    def _node_gone(self, node: str) -> None:
        self.peers.discard(node)
        for user_id in [u for u, nodes in self.remote_online.items() if node in nodes]:
            self._remote_presence(Presence(node, user_id, False))

    def _resync(self) -> None:
        """The bus was cut off: tell the others who is online here, and ask for state."""
        bus = self.host.bus
        for connection in self.fanout:
            user_id = connection.member.id
            if user_id in self.members and self.fanout.current(user_id) is connection:
                bus.publish(self.id, Presence(bus.node_id, user_id, True, connection.visible))
        bus.publish(self.id, StateRequest(bus.node_id))

    # --- positions and fan-out ------------------------------------------------------------
    def _apply_located(self, updates: tuple[Located, ...] | list[Located]) -> None:
        index = self.index
        block = self.block
        policy = self.settings.rates
        located: set[uuid.UUID] = set()
        latest = -math.inf
        for event in updates:
            member = self.members.get(event.user_id)
            if member is None:
                continue
            index.update(
                block,
                member.slot,
                event.lat,
                event.lng,
                event.received_at,
                event.accuracy,
                event.heading,
                event.speed,
                event.client_ts,
            )
            member.location_at = member.last_seen = event.received_wall
            self.pending[member.id] = None
            latest = max(latest, event.received_at)
            stillness = self.stillness.get(member.id)
            if stillness is None:
                stillness = self.stillness[member.id] = Stillness()
            stillness.observe(event.lat, event.lng, event.received_at, policy, event.accuracy)
            located.add(member.id)
        if latest > -math.inf:
            self._touch(latest)
            self._anchor_expiry = min(
                (s.expires_at(policy) for s in self.stillness.values()), default=math.inf
            )
            self._refresh_intervals(located)

    def _flush(self) -> None:
        """Apply the window's positions, send them as one frame (with a due hint), and
        share them with the other nodes."""
        self._flush_at = None
        located = self.inbox.take_located()
        if located:
            self._apply_located(located)
            bus = self.host.bus
            if bus.distributed and self.peers:
                bus.publish(self.id, LocatedBatch(bus.node_id, tuple(located)))
        frame = self._take_flush()
        box, self._hint_due = self._hint_due, None
        if box is not None and self.fanout:
            self._send_hint(box, frame)
        elif frame is not None:
            self.fanout.deliver(frame)
        if frame is not None:
            # Fan-out of the direct writes: from encoding to the last recipient's socket.
            elapsed = trio.current_time() - frame.created_at
            self.stats.observe_flush(elapsed)
            self.stats.fanout_seconds.observe(elapsed)

    def _take_flush(self) -> proto.OutFrame | None:
        """The pending updates as one encoded frame (or ``None``); the batch is emptied."""
        if not self.pending:
            return None
        watching = self.fanout.watching()
        if not watching:
            self.pending.clear()
            return None  # nobody here has the map on screen: nothing to build or encode
        now = trio.current_time()
        updates = [
            entry for member_id in self.pending if (entry := self._location_entry(member_id, now))
        ]
        self.pending.clear()
        if not updates:
            return None
        frame = proto.encode("locations", {"updates": updates})
        frame.created_at = now
        self.stats.flushes += 1
        self.stats.deliveries += watching
        return frame

    def _location_entry(self, member_id: uuid.UUID, now: float) -> dict[str, Any] | None:
        member = self.members.get(member_id)
        if member is None:
            return None
        location = self.index.get(self.block, member.slot, now)
        if location is None:
            return None
        return {
            "user_id": member.id_str,
            "lat": location.lat,
            "lng": location.lng,
            "accuracy": location.accuracy,
            "heading": location.heading,
            "speed": location.speed,
            "timestamp": rfc3339(
                location.client_ts if location.client_ts is not None else member.location_at,
                micros=True,
            ),
        }

    def _evicted(self, slots: tuple[int, ...]) -> None:
        """The geo index forgot these slots' locations (retention)."""
        for slot in slots:
            member = self.by_slot[slot]
            if member is None:
                continue
            self.pending.pop(member.id, None)
            self.fanout.deliver(
                proto.encode(
                    "participant_stale",
                    {"user_id": member.id_str, "last_seen": rfc3339(member.location_at)},
                )
            )

    def _send_hint(self, box: BBox, locations: proto.OutFrame | None) -> None:
        """Hint every screen size (one frame per distinct size), after the locations."""
        ids = self._fresh_ids(trio.current_time())
        sent = self.fanout.deliver_per_viewport(
            lambda size: proto.encode(
                "viewport", self._fit(self._box_for(box, size) or box, size, ids)
            ),
            locations,
        )
        self.stats.hints_sent += sent

    def _box_for(self, box: BBox | None, size: Viewport) -> BBox | None:
        """The box to fit a screen to: the fresh positions', and the places' too when
        the client asked for them (``include_places``)."""
        if not size[3] or not self.group.places:
            return box
        return union_box(box, *self.group.outline())

    # --- reads (any task) -----------------------------------------------------------------
    def _fresh_ids(self, now: float) -> list[str]:
        ids = []
        for slot in self.index.fresh_slots(self.block, now).tolist():
            member = self.by_slot[slot]
            if member is not None:
                ids.append(member.id_str)
        return ids

    def _fit(self, box: BBox, size: Viewport, ids: list[str]) -> dict[str, Any]:
        width, height, padding, _places = size
        hint = fit(box, width, height, padding, self.settings.max_fit_zoom)
        return {
            "bbox": box.to_json(),
            "center": {"lat": hint.center_lat, "lng": hint.center_lng},
            "zoom": hint.zoom,
            "participants": ids,
        }

    def viewport_data(self, size: Viewport, now: float) -> dict[str, Any] | None:
        current = self.index.block_bbox(self.block, now)
        box = self._box_for(None if current is None else current[0], size)
        if box is None:
            return None
        return self._fit(box, size, self._fresh_ids(now))

    def catch_up_frames(self, connection: Connection) -> list[proto.OutFrame]:
        """For a connection whose location/viewport frames were coalesced: current state."""
        now = trio.current_time()
        frames = []
        updates = [
            entry
            for member_id in list(self.members)
            if (entry := self._location_entry(member_id, now))
        ]
        if updates:
            frames.append(proto.encode("locations", {"updates": updates}))
        hint = self.viewport_data(connection.viewport, now)
        if hint is not None:
            frames.append(proto.encode("viewport", hint))
        return frames

    def state_frame(self, connection: Connection) -> proto.OutFrame:
        now = trio.current_time()
        participants = []
        for member in self.members.values():
            entry = member.summary(self.is_online(member.id))
            location = self._location_entry(member.id, now)
            if location is not None:
                del location["user_id"]
            entry["last_seen"] = rfc3339(member.last_seen)
            entry["location"] = location
            entry["stale"] = location is None and member.location_at is not None
            entry["status"] = self.group.statuses.get(member.id)
            participants.append(entry)
        you = self.members.get(connection.member.id)
        return proto.encode(
            "session_state",
            {
                "session": {
                    "id": self.id_str,
                    "name": self.name,
                    "created_at": rfc3339(self.created_at),
                    "expires_at": rfc3339(self.expires_at),
                    "max_participants": self.max_participants,
                },
                "you": {
                    "user_id": connection.member.id_str,
                    "display_name": you.display_name if you else "",
                    "avatar_color": you.avatar_color if you else "",
                },
                "participants": participants,
                "viewport": self.viewport_data(connection.viewport, now),
                "limits": self.settings.limits,
                **self.group.state(),
            },
        )
