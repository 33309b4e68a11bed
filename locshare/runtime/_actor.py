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

import numpy as np
import trio

from .._clock import WallClock, rfc3339
from ..errors import StorageError
from ..geo import BBox, GeoIndex, fit_zooms
from ..proto import _messages as proto
from ..proto._pacing import flush_phase, next_flush_at
from ..storage._model import ParticipantRecord, SessionRecord
from ._bus import SessionBus
from ._connection import Attach, Connection, Detached, Viewport
from ._events import (
    BusReconnected,
    Ended,
    Evicted,
    HintDue,
    Joined,
    Left,
    Located,
    LocatedBatch,
    NodeGone,
    Presence,
    Shutdown,
    StateReply,
    StateRequest,
)
from ._fanout import LocalFanout
from ._inbox import Inbox

if TYPE_CHECKING:
    from ._settings import RuntimeSettings
    from ._stats import HubStats

log = logging.getLogger("locshare.session")

# A node that starts hosting a session other nodes host already waits this long at most
# for one of them to send the session's state before admitting its first socket.
STATE_WAIT_S = 0.5


class SessionHost(Protocol):
    """What a session actor needs from the process hosting it (the hub)."""

    settings: RuntimeSettings
    stats: HubStats
    index: GeoIndex
    clock: WallClock
    bus: SessionBus

    @property
    def window_s(self) -> float: ...

    def connection_attached(self, connection: Connection) -> None: ...

    def connection_closed(self, connection: Connection) -> None: ...

    def session_timed_out(self, session_id: uuid.UUID, reason: str) -> None: ...

    def actor_finished(self, actor: SessionActor) -> None: ...

    async def leave(
        self, session_id: uuid.UUID, user_id: uuid.UUID, *, reason: str, close_code: int
    ) -> bool: ...


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
        hosted_elsewhere: bool = False,
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
        self.remote_online: dict[uuid.UUID, set[str]] = {}
        self.pending: dict[uuid.UUID, None] = {}
        self.end_reason: str | None = None
        self._ending = False
        self._hint_due: BBox | None = None
        self._flush_at: float | None = None
        self._phase = flush_phase(record.id.int)
        self._nursery: trio.Nursery | None = None
        # Cluster: attaches wait (deferred) until another node sent the state, or until
        # STATE_WAIT_S passed (``None``: no wait).
        self._hosted_elsewhere = hosted_elsewhere
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
            self.index.free_block(self.block)
            self.host.actor_finished(self)
            self.finished.set()

    async def _loop(self) -> None:
        while True:
            if self._flush_at is None and (self.inbox.has_located or self._hint_due is not None):
                self._flush_at = next_flush_at(trio.current_time(), self.host.window_s, self._phase)
            with trio.move_on_at(self._wake_at()):
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
        return wake

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
        if isinstance(event, Attach):
            if self._state_until is not None:
                self._deferred.append(event)
            else:
                self._attach(event)
        elif isinstance(event, Detached):
            self._detached(event.connection)
        elif isinstance(event, LocatedBatch):
            if event.origin != self.host.bus.node_id:
                self._apply_located(event.updates)
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
        self.pending.pop(user_id, None)
        self.inbox.drop_located(user_id)
        self.remote_online.pop(user_id, None)
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
        connection = Connection.open(self, member, event.transport, now)
        old = self.fanout.attach(connection)
        if old is not None:
            old.close(proto.CLOSE_REPLACED, "replaced by a newer connection")
        elif not self.remote_online.get(member.id):
            self.fanout.deliver(
                proto.encode("presence", {"user_id": member.id_str, "online": True}),
                exclude=connection,
            )
        if old is None and self.host.bus.distributed:
            self.host.bus.publish(self.id, Presence(self.host.bus.node_id, member.id, True))
        member.last_seen = self.clock.now()
        self._touch(now)
        self.idle_since = None
        connection.put(self.state_frame(connection))
        self._nursery.start_soon(connection.run)
        self.host.connection_attached(connection)
        event.reply.answer(connection)

    def _detached(self, connection: Connection) -> None:
        """A connection's task ended (any reason)."""
        if connection not in self.fanout:
            return
        was_current = self.fanout.detach(connection)
        self.host.connection_closed(connection)
        member = self.members.get(connection.member.id)
        if was_current and member is not None:
            member.last_seen = self.clock.now()
            if self.host.bus.distributed:
                self.host.bus.publish(self.id, Presence(self.host.bus.node_id, member.id, False))
            if not self._ending and not self.remote_online.get(member.id):
                self.fanout.deliver(
                    proto.encode("presence", {"user_id": member.id_str, "online": False})
                )
        if not self.fanout:
            self.idle_since = trio.current_time()

    def _remote_presence(self, event: Presence) -> None:
        if event.origin == self.host.bus.node_id or event.user_id not in self.members:
            return
        before = self.is_online(event.user_id)
        nodes = self.remote_online.setdefault(event.user_id, set())
        if event.online:
            nodes.add(event.origin)
        else:
            nodes.discard(event.origin)
            if not nodes:
                del self.remote_online[event.user_id]
        after = self.is_online(event.user_id)
        if before != after:
            member = self.members[event.user_id]
            self.fanout.deliver(
                proto.encode("presence", {"user_id": member.id_str, "online": after})
            )

    # --- other nodes ----------------------------------------------------------------------
    def _send_state(self, requester: str) -> None:
        """Another node starts hosting this session: send it what this node knows."""
        bus = self.host.bus
        if requester == bus.node_id:
            return
        self._flush()  # what waits in the inbox goes into the index (and to the others)
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
        online = [(m, bus.node_id) for m in self.members if self.fanout.is_online(m)]
        online += [(m, node) for m, nodes in self.remote_online.items() for node in nodes]
        bus.publish(self.id, StateReply(bus.node_id, requester, tuple(located), tuple(online)))

    def _receive_state(self, event: StateReply) -> None:
        fresh = [
            e
            for e in event.located
            if (member := self.members.get(e.user_id)) is not None
            and (member.location_at is None or member.location_at < e.received_wall)
        ]
        self._apply_located(fresh)
        if self.pending and self._flush_at is None:
            self._flush_at = next_flush_at(trio.current_time(), self.host.window_s, self._phase)
        for user_id, node in event.online:
            if node != self.host.bus.node_id:
                self._remote_presence(Presence(node, user_id, True))
        self._state_received()

    def _state_received(self) -> None:
        """Admit the sockets that waited for the session's state."""
        self._state_until = None
        deferred, self._deferred = self._deferred, []
        for attach in deferred:
            self._attach(attach)

    def _node_gone(self, node: str) -> None:
        for user_id in [u for u, nodes in self.remote_online.items() if node in nodes]:
            self._remote_presence(Presence(node, user_id, False))

    def _resync(self) -> None:
        """The bus was cut off: tell the others who is online here, and ask for state."""
        bus = self.host.bus
        for user_id in self.members:
            if self.fanout.is_online(user_id):
                bus.publish(self.id, Presence(bus.node_id, user_id, True))
        bus.publish(self.id, StateRequest(bus.node_id))

    # --- positions and fan-out ------------------------------------------------------------
    def _apply_located(self, updates: tuple[Located, ...] | list[Located]) -> None:
        index = self.index
        block = self.block
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
        if latest > -math.inf:
            self._touch(latest)

    def _flush(self) -> None:
        """Apply the window's positions, send them as one frame (with a due hint), and
        share them with the other nodes."""
        self._flush_at = None
        located = self.inbox.take_located()
        if located:
            self._apply_located(located)
            bus = self.host.bus
            if bus.distributed:
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
        now = trio.current_time()
        updates = [
            entry for member_id in self.pending if (entry := self._location_entry(member_id, now))
        ]
        self.pending.clear()
        if not updates or not self.fanout:
            return None
        frame = proto.encode("locations", {"updates": updates})
        frame.created_at = now
        self.stats.flushes += 1
        self.stats.deliveries += len(self.fanout)
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
            lambda size: proto.encode("viewport", self._fit(box, size, ids)), locations
        )
        self.stats.hints_sent += sent

    # --- reads (any task) -----------------------------------------------------------------
    def _fresh_ids(self, now: float) -> list[str]:
        ids = []
        for slot in self.index.fresh_slots(self.block, now).tolist():
            member = self.by_slot[slot]
            if member is not None:
                ids.append(member.id_str)
        return ids

    def _fit(self, box: BBox, size: Viewport, ids: list[str]) -> dict[str, Any]:
        width, height, padding = size
        lat, lng, zoom = fit_zooms(
            np.array([box.west]),
            np.array([box.south]),
            np.array([box.east]),
            np.array([box.north]),
            width,
            height,
            padding,
            self.settings.max_fit_zoom,
        )
        return {
            "bbox": box.to_json(),
            "center": {"lat": float(lat[0]), "lng": float(lng[0])},
            "zoom": float(zoom[0]),
            "participants": ids,
        }

    def viewport_data(self, size: Viewport, now: float) -> dict[str, Any] | None:
        current = self.index.block_bbox(self.block, now)
        if current is None:
            return None
        return self._fit(current[0], size, self._fresh_ids(now))

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
            },
        )
