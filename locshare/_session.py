"""One live session: its actor, its members and their connections.

Resource handling:
    A :class:`SessionActor` owns one nursery (started in the hub's nursery).  In it run
    the flush timer, the deadline timer and, for every connection, a task running
    :meth:`Connection.run` (which owns that connection's reader and writer).  Ending the
    session queues ``session_ended`` + close 4000 on every connection, gives them
    ``close_grace_s`` to go, then cancels the nursery; the ``finally`` clause releases
    the geo block (overwriting every location) and unregisters from the hub.  So when
    :meth:`SessionActor.run` returns, no task, socket or slot of the session is left.

Concurrency rules:
    * Publishing never awaits a recipient: frames go into each connection's bounded
      :class:`~locshare._outbox.Outbox` with a synchronous ``put``.  While the
      connection's writer is parked with nothing queued, ``put`` instead writes the
      shared frame bytes straight to the non-blocking socket (the transport's
      ``send_nowait``); only what would block is queued, and then the writer owns the
      socket until it has drained, so bytes never interleave.
    * Location updates are batched per session on a grid of flush windows
      (``_pacing.next_flush_at``): at the end of the window an update arrived in, one
      ``locations`` frame is encoded once, holding at most one (the latest) entry per
      participant.  Each session's grid has its own phase, so the sessions' flushes are
      spread evenly over time instead of falling due together.
    * A connection that attaches first flushes the pending batch to the others, then
      gets ``session_state``: nothing is missed and nothing is delivered twice.

Privacy: locations are read from the geo index at flush time; the actor keeps no copy.
Log lines carry ids only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from ._clock import WallClock, rfc3339
from ._model import ParticipantRecord, SessionRecord
from ._outbox import Outbox, OutboxStatistics
from ._pacing import flush_phase, next_flush_at
from ._ratelimit import TokenBucket
from .errors import MessageTooBig, ProtocolError, StorageError
from .geo import BBox, GeoIndex, fit_zooms
from .net import _protocol as proto
from .net._transport import OP_PING, ConnectionClosed, Control, Transport

if TYPE_CHECKING:
    from ._hub import Hub

log = logging.getLogger("locshare.session")

CLOSE_HANDSHAKE_TIMEOUT_S = 2.0
RATE_LIMIT_ERROR_INTERVAL_S = 1.0
# A member closes with 1008 once it has sent this many seconds' worth of the allowed
# rate in dropped messages (net of the rate: sending at twice the limit never closes).
FLOOD_TOLERANCE_S = 10.0


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """The slice of :class:`~locshare._config.Config` the runtime needs."""

    location_ttl_s: float = 30.0
    update_interval_s: float = 2.0
    flush_interval_s: float = 0.1
    # Widest flush window under CPU load (``_pacing``); ``None``: fixed at flush_interval_s.
    flush_interval_max_s: float | None = None
    inactivity_timeout_s: float = 3600.0
    idle_unload_s: float = 120.0
    max_fit_zoom: float = 17.0
    slow_client_timeout_s: float = 30.0
    max_message_bytes: int = 16384
    max_messages_per_s: float = 10.0
    outbox_max_frames: int = 64
    close_grace_s: float = 2.0
    block_size: int = 50

    @property
    def limits(self) -> dict[str, float | int]:
        return {
            "location_ttl_s": self.location_ttl_s,
            "update_interval_s": self.update_interval_s,
            "flush_interval_ms": round(self.flush_interval_s * 1000),
            "max_messages_per_s": self.max_messages_per_s,
            "max_message_bytes": self.max_message_bytes,
        }


@dataclass(eq=False)
class Member:
    """A participant who has not left.  ``slot`` is theirs in the session's geo block."""

    id: uuid.UUID
    id_str: str
    display_name: str
    avatar_color: str
    joined_at: float
    last_seen: float
    slot: int
    bucket: TokenBucket
    flood: TokenBucket  # dropped messages a member may send before being closed (1008)
    connection: Connection | None = None
    rate_error_at: float = -math.inf
    location_at: float | None = None  # wall time of the last location received
    activity_dirty: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "user_id": self.id_str,
            "display_name": self.display_name,
            "avatar_color": self.avatar_color,
            "joined_at": rfc3339(self.joined_at),
            "online": self.connection is not None,
        }


@dataclass(eq=False)
class Connection:
    """One WebSocket of one member.  Owns a reader and a writer task (see :meth:`run`)."""

    session: SessionActor
    member: Member
    transport: Transport
    outbox: Outbox[proto.OutFrame]
    viewport: tuple[int, int, int] = proto.DEFAULT_VIEWPORT
    closed: trio.Event = field(default_factory=trio.Event)
    _writer_parked: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    _scope: trio.CancelScope | None = None
    _finished: bool = False  # a close frame went out, the peer closed, or we gave up on it
    _idle: bool = False  # the writer is parked with nothing queued: direct writes allowed
    _partial: bytes = b""  # unsent tail of a direct write; the writer sends it first

    # --- queueing (sync, never blocks) --------------------------------------------------
    def put(self, frame: proto.OutFrame) -> None:
        """Queue a frame, or write it at once if the socket takes it (Rule: fast path)."""
        if self._idle and not self.outbox and self._write_now(frame.wire, frame.payload):
            return
        self.outbox.put(frame)
        self._wake_writer()

    def put_all(self, frames: list[proto.OutFrame]) -> None:
        """Like :meth:`put` for several frames, written with one system call if possible."""
        if self._idle and not self.outbox:
            data = b"".join([f.wire for f in frames])
            if self._write_now(data, None, len(frames), sum(len(f.payload) for f in frames)):
                return
        for frame in frames:
            self.outbox.put(frame)
        self._wake_writer()

    def _write_now(self, data: bytes, payload: bytes | None, count: int = 1, size: int = 0) -> bool:
        """Fast path: while the writer is idle, the sender writes the shared bytes to the
        non-blocking socket itself, with no task switch.  ``False`` if nothing was
        written (would block, or the transport cannot write synchronously); a partial
        write leaves its tail to the writer, which sends it before anything else."""
        sent = self.transport.send_nowait(data)
        if sent == 0:
            return False
        stats = self.session.hub.stats
        stats.frames_sent += count
        stats.bytes_sent += len(payload) if payload is not None else size
        if sent < len(data):
            self._partial = data[sent:]
            self._wake_writer()
        return True

    def _wake_writer(self) -> None:
        self._idle = False  # no direct write until the writer has drained and parked again
        self._writer_parked.unpark_all()

    def send_error(self, code: str, message: str) -> None:
        self.session.hub.stats.count_error(code)
        self.put(proto.error_frame(code, message))

    def close(self, code: int, reason: str = "", *, final: proto.OutFrame | None = None) -> None:
        """Send ``final`` (if any), then close with ``code``; the tasks then end."""
        self.outbox.close(code, reason, final=final)
        self._wake_writer()

    def abort(self) -> None:
        """End now, without a close handshake."""
        self._finished = True
        self.outbox.abandon()
        if self._scope is not None:
            self._scope.cancel()

    def statistics(self) -> OutboxStatistics:
        return self.outbox.statistics()

    # --- tasks --------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader)
                    task_status.started()
                    finished_cleanly = await self._writer()
                    self._finished = True
                    # Close frame sent: wait briefly for the peer's answer, then go.
                    grace = CLOSE_HANDSHAKE_TIMEOUT_S if finished_cleanly else 0.0
                    scope.deadline = min(scope.deadline, trio.current_time() + grace)
        finally:
            self.session.detach(self)
            with trio.move_on_after(1.0) as cleanup:
                cleanup.shield = True
                if not self._finished:
                    # Cancelled from outside (the session crashed, or a deadline hit):
                    # tell the client to come back rather than just dropping it.
                    with contextlib.suppress(ConnectionClosed), trio.move_on_after(0.5):
                        await self.transport.close(
                            proto.CLOSE_INTERNAL_ERROR, "internal error; reconnect"
                        )
                await self.transport.aclose()
            self.closed.set()

    async def _writer(self) -> bool:
        """Drain the outbox into the transport; ``True`` when it ended with a close frame.

        One cancel scope guards every write: its deadline is moved to now +
        ``slow_client_timeout_s`` before a write and back to infinity after, so a client
        that stops reading is caught without creating a timer per write.
        """
        with trio.CancelScope() as timer:
            ended_with_close = await self._drain(timer)
        if timer.cancelled_caught:
            self.session.hub.stats.slow_disconnects += 1
            log.info(
                "disconnecting a client that stopped reading",
                extra={"session_id": self.session.id_str},
            )
            return False
        return ended_with_close

    async def _drain(self, timer: trio.CancelScope) -> bool:
        slow_s = self.session.settings.slow_client_timeout_s
        while True:
            if self._partial:
                data, self._partial = self._partial, b""
                timer.deadline = trio.current_time() + slow_s
                try:
                    await self.transport.send_bytes(data)
                except ConnectionClosed:
                    return False
                timer.deadline = math.inf
                del data
            if not self.outbox:
                # Park holding no frame: an idle connection keeps no bytes alive.
                self._idle = True
                await self._writer_parked.park()
                continue
            outcome = await self._send_batch(timer, slow_s)
            if outcome is not None:
                return outcome

    async def _send_batch(self, timer: trio.CancelScope, slow_s: float) -> bool | None:
        """Send what is queued; ``True``/``False`` when the connection is done."""
        session = self.session
        stats = session.hub.stats
        batch = self.outbox.take()
        frames = batch.frames
        if batch.resync:
            frames = [session.state_frame(self)]
        elif batch.catch_up:
            frames.extend(session.catch_up_frames(self))
        if frames:
            timer.deadline = trio.current_time() + slow_s
            try:
                await self.transport.send(frames)
            except ConnectionClosed:
                return False
            timer.deadline = math.inf
            stats.frames_sent += len(frames)
            stats.bytes_sent += sum(len(f.payload) for f in frames)
            for frame in frames:
                if frame.created_at:
                    stats.fanout_seconds.observe(trio.current_time() - frame.created_at)
                    break
        if batch.close is not None:
            code, reason = batch.close
            with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT_S):
                try:
                    await self.transport.close(code, reason)
                except ConnectionClosed:
                    return False
            return True
        return None

    async def _reader(self) -> None:
        """Read the peer's messages and hand each to the session.

        Rule (budget): every message counts against the member's budget of
        ``max_messages_per_s``, control frames too (a ping costs a pong write).  What
        exceeds it is dropped; one who keeps exceeding it (``FLOOD_TOLERANCE_S`` worth of
        dropped messages, net of the allowed rate) is closed with 1008 and not read any
        further.  Rule (containment): an unexpected error while handling one message
        costs that message only: its sender gets ``error internal_error``.
        """
        session = self.session
        member = self.member
        transport = self.transport
        stats = session.hub.stats
        while True:
            try:
                incoming = await transport.receive()
            except ConnectionClosed:
                # Peer closed (the transport answered the close handshake) or vanished.
                self._finished = True
                if self._scope is not None:
                    self._scope.cancel()
                return
            except MessageTooBig as exc:
                if not self.outbox.closing:
                    stats.count_error(exc.code)
                    self.close(proto.CLOSE_MESSAGE_TOO_BIG, "message too big")
                continue  # keep reading (and discarding) until the peer answers the close
            if self.outbox.closing:
                continue  # closing: the peer's remaining messages are ignored
            now = trio.current_time()
            if not member.bucket.take(now):
                stats.rate_limited += 1
                if not member.flood.take(now):
                    stats.flood_disconnects += 1
                    self.close(proto.CLOSE_POLICY, "too many messages")
                    return  # not a byte more is parsed; the writer closes the connection
                if now - member.rate_error_at >= RATE_LIMIT_ERROR_INTERVAL_S:
                    member.rate_error_at = now
                    self.send_error("rate_limited", "too many messages; excess dropped")
                continue
            if isinstance(incoming, Control):
                if incoming.opcode == OP_PING:
                    with contextlib.suppress(ConnectionClosed):  # the next receive finds out
                        await transport.pong(incoming.payload)
                continue
            try:
                message = proto.parse_client_message(incoming.data, is_text=incoming.is_text)
            except ProtocolError as exc:
                self.send_error(exc.code, exc.message)
                continue
            try:
                if isinstance(message, proto.Leave):
                    await session.leave_from(self)
                else:
                    session.handle(self, message, now)
            except Exception:
                stats.message_errors += 1
                log.exception(
                    "handling a client message failed; the sender was told",
                    extra={"session_id": session.id_str},
                )
                self.send_error("internal_error", "the server could not handle this message")


class SessionActor:
    """The live state of one session.  See the module docstring."""

    def __init__(
        self,
        hub: Hub,
        record: SessionRecord,
        participants: list[ParticipantRecord],
        *,
        settings: RuntimeSettings,
        index: GeoIndex,
        clock: WallClock,
    ) -> None:
        self.hub = hub
        self.id = record.id
        self.id_str = str(record.id)
        self.name = record.name
        self.created_at = record.created_at
        self.expires_at = record.expires_at
        self.max_participants = record.max_participants
        self.settings = settings
        self.index = index
        self.clock = clock
        self.block = index.allocate_block()
        self.members: dict[uuid.UUID, Member] = {}
        self.by_slot: list[Member | None] = [None] * index.block_size
        self.connections: set[Connection] = set()
        self.pending: dict[uuid.UUID, None] = {}
        self.end_reason: str | None = None
        self.activity_dirty = False
        self._pending_event = trio.Event()
        self._hint_due: BBox | None = None  # sent with the next flush
        self._ending = trio.Event()
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._timer = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self.started = trio.Event()  # set once the nursery runs: attach() may be called
        now = trio.current_time()
        self.expiry_deadline = now + (record.expires_at - clock.now())
        self.last_activity = now - max(0.0, clock.now() - record.last_activity)
        self.idle_since: float | None = now
        for participant in participants:
            if participant.is_active:
                self._add_member(participant)

    # --- lifecycle ----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._flush_loop)
                    nursery.start_soon(self._deadline_loop)
                    self.started.set()
                    task_status.started()
                    await self._ending.wait()
                    # Connections were told to close; give them a moment, then cancel.
                    nursery.cancel_scope.deadline = (
                        trio.current_time() + self.settings.close_grace_s
                    )
                    await self._no_connections.wait()
                    nursery.cancel_scope.cancel()
            except* Exception as group:
                # A bug inside this session: it must not take others down.  Its tasks
                # are gone; clients see their socket drop and reconnect to a fresh actor.
                self.hub.stats.session_crashes += 1
                log.error(
                    "session actor crashed; its clients will reconnect",
                    extra={"session_id": self.id_str},
                    exc_info=group,
                )
        finally:
            self.started.set()  # never leave a waiter behind, even if start-up failed
            for connection in list(self.connections):
                connection.abort()
            self.connections.clear()
            self.pending.clear()
            self.index.free_block(self.block)
            self.hub._actor_finished(self)

    def end(self, reason: str) -> None:
        """End the session: ``session_ended`` then close 4000 on every socket."""
        if self._ending.is_set():
            return
        self.end_reason = reason
        frame = proto.encode("session_ended", {"reason": reason})
        for connection in list(self.connections):
            connection.close(proto.CLOSE_SESSION_ENDED, "session ended", final=frame)
        self._ending.set()
        log.info("session ended", extra={"session_id": self.id_str, "reason": reason})

    def shutdown(self) -> None:
        """Server shutdown: close every socket with 1001 (the session itself goes on)."""
        if self._ending.is_set():
            return
        self._flush()
        for connection in list(self.connections):
            connection.close(proto.CLOSE_GOING_AWAY, "server shutting down")
        self._ending.set()

    def _unload(self) -> None:
        """No socket for ``idle_unload_s``: leave memory (the session itself goes on)."""
        self._ending.set()

    @property
    def ending(self) -> bool:
        """True once the session is ending, unloading, or failing (its nursery was
        cancelled because a task crashed): it accepts no new connection then."""
        if self._ending.is_set():
            return True
        return self._nursery is not None and self._nursery.cancel_scope.cancel_called

    async def _deadline_loop(self) -> None:
        settings = self.settings
        while True:
            self._timer = trio.CancelScope(deadline=self._next_deadline())
            with self._timer:
                await trio.sleep_forever()
            now = trio.current_time()
            if now >= self.expiry_deadline:
                self.hub.session_timed_out(self, "expired")
                return
            if now >= self.last_activity + settings.inactivity_timeout_s:
                self.hub.session_timed_out(self, "inactive")
                return
            if self.idle_since is not None and now >= self.idle_since + settings.idle_unload_s:
                self._unload()
                return

    def _next_deadline(self) -> float:
        deadline = min(
            self.expiry_deadline, self.last_activity + self.settings.inactivity_timeout_s
        )
        if self.idle_since is not None:
            deadline = min(deadline, self.idle_since + self.settings.idle_unload_s)
        return deadline

    def touch(self, now: float) -> None:
        """Record activity (pushes the inactivity deadline later; no timer restart)."""
        self.last_activity = now
        self.activity_dirty = True

    # --- members ------------------------------------------------------------------------
    def _add_member(self, participant: ParticipantRecord) -> Member:
        slot = self.index.allocate_slot(self.block)
        settings = self.settings
        member = Member(
            id=participant.id,
            id_str=str(participant.id),
            display_name=participant.display_name,
            avatar_color=participant.avatar_color,
            joined_at=participant.joined_at,
            last_seen=participant.last_seen,
            slot=slot,
            bucket=TokenBucket(
                settings.max_messages_per_s, settings.max_messages_per_s, trio.current_time()
            ),
            flood=TokenBucket(
                settings.max_messages_per_s,
                settings.max_messages_per_s * FLOOD_TOLERANCE_S,
                trio.current_time(),
            ),
        )
        self.members[participant.id] = member
        self.by_slot[slot] = member
        return member

    def add_participant(self, participant: ParticipantRecord) -> Member:
        """A participant joined (or was found in the database): tell everyone."""
        existing = self.members.get(participant.id)
        if existing is not None:
            return existing
        member = self._add_member(participant)
        self.touch(trio.current_time())
        self.broadcast(proto.encode("participant_joined", member.summary()))
        return member

    def remove_participant(self, user_id: uuid.UUID, reason: str, close_code: int) -> bool:
        """A participant left or was removed: free their slot, close their socket."""
        member = self.members.pop(user_id, None)
        if member is None:
            return False
        self.pending.pop(user_id, None)
        self.index.free_slot(self.block, member.slot)
        self.by_slot[member.slot] = None
        connection = member.connection
        member.connection = None
        if connection is not None:
            connection.close(
                close_code, "left the session" if reason == "left" else "removed from the session"
            )
        self.touch(trio.current_time())
        self.broadcast(
            proto.encode("participant_left", {"user_id": member.id_str, "reason": reason})
        )
        return True

    async def leave_from(self, connection: Connection) -> None:
        """``leave`` over the socket: same as leaving over REST, then close 1000."""
        try:
            await self.hub.leave(
                self.id, connection.member.id, reason="left", close_code=proto.CLOSE_NORMAL
            )
        except StorageError:
            connection.send_error("unavailable", "cannot leave right now; try again")

    # --- connections --------------------------------------------------------------------
    def attach(self, member_id: uuid.UUID, transport: Transport) -> Connection | None:
        """Give ``transport`` to the member's new connection; ``None`` if they are gone."""
        member = self.members.get(member_id)
        if member is None or self.ending:
            return None
        assert self._nursery is not None
        now = trio.current_time()
        self._flush()  # everyone else gets pending updates first: state will include them
        connection = Connection(
            session=self,
            member=member,
            transport=transport,
            outbox=Outbox(self.settings.outbox_max_frames),
        )
        old = member.connection
        member.connection = connection
        if old is not None:
            old.close(proto.CLOSE_REPLACED, "replaced by a newer connection")
        else:
            self.broadcast(proto.encode("presence", {"user_id": member.id_str, "online": True}))
        member.last_seen = self.clock.now()
        member.activity_dirty = True
        self.touch(now)
        self.connections.add(connection)
        self._no_connections = trio.Event()
        self.idle_since = None
        connection.put(self.state_frame(connection))
        self._nursery.start_soon(connection.run)
        return connection

    def detach(self, connection: Connection) -> None:
        """Called by the connection's task as it ends (any reason)."""
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        self.hub._connection_closed(connection)
        member = connection.member
        if member.connection is connection:
            member.connection = None
            member.last_seen = self.clock.now()
            member.activity_dirty = True
            if member.id in self.members and not self.ending:
                self.broadcast(
                    proto.encode("presence", {"user_id": member.id_str, "online": False})
                )
        if not self.connections:
            self._no_connections.set()
            self.idle_since = trio.current_time()
            self._timer.deadline = self._next_deadline()

    def broadcast(self, frame: proto.OutFrame, *, exclude: Connection | None = None) -> None:
        for connection in self.connections:
            if connection is not exclude:
                connection.put(frame)

    # --- messages -----------------------------------------------------------------------
    def handle(self, connection: Connection, message: proto.ClientMessage, now: float) -> None:
        if isinstance(message, proto.LocationUpdate):
            member = connection.member
            if member.id not in self.members:
                return
            self.index.update(
                self.block,
                member.slot,
                message.lat,
                message.lng,
                now,
                message.accuracy,
                message.heading,
                message.speed,
                message.timestamp,
            )
            member.location_at = member.last_seen = self.clock.now()
            member.activity_dirty = True
            self.last_activity = now
            self.activity_dirty = True
            self.hub.stats.updates_received += 1
            if not self.pending:
                self._pending_event.set()
            self.pending[member.id] = None
        elif isinstance(message, proto.ViewportSize):
            connection.viewport = (message.width, message.height, message.padding)
            hint = self.viewport_data(connection.viewport, trio.current_time())
            if hint is not None:
                connection.put(proto.encode("viewport", hint))
        elif isinstance(message, proto.Ping):
            connection.put(
                proto.encode("pong", {"server_time": rfc3339(self.clock.now()), "id": message.id})
            )

    # --- fan-out ------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        # Rule (flush grid): this session flushes only on its own grid of window-wide
        # cells, offset by its phase; an update waits for the end of its cell.
        phase = flush_phase(self.id.int)
        while True:
            await self._pending_event.wait()
            self._pending_event = trio.Event()
            await trio.sleep_until(
                next_flush_at(trio.current_time(), self.hub.pacer.window_s, phase)
            )
            self._flush()

    def _take_flush(self) -> proto.OutFrame | None:
        """The pending updates as one encoded frame (or ``None``); the batch is emptied."""
        if not self.pending:
            return None
        now = trio.current_time()
        updates = [
            entry for member_id in self.pending if (entry := self._location_entry(member_id, now))
        ]
        self.pending.clear()
        if not updates or not self.connections:
            return None
        frame = proto.encode("locations", {"updates": updates})
        frame.created_at = now
        stats = self.hub.stats
        stats.flushes += 1
        stats.deliveries += len(self.connections)
        return frame

    def _flush(self) -> None:
        """Send the batched locations, and a due viewport hint with them.

        A hint rides with the locations of the same flush: one write per recipient
        carries both, the hint never names points the client has not received, and the
        hints of all sessions are spread over their flush timers instead of leaving in
        one burst at the geo tick.
        """
        frame = self._take_flush()
        box, self._hint_due = self._hint_due, None
        if box is not None and self.connections:
            self._send_hint(box, frame)
        elif frame is not None:
            for connection in self.connections:
                connection.put(frame)
        if frame is not None:
            # Fan-out of the direct writes: from encoding to the last recipient's socket.
            elapsed = trio.current_time() - frame.created_at
            self.hub.stats.observe_flush(elapsed)
            self.hub.stats.fanout_seconds.observe(elapsed)

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

    def on_evicted(self, slot: int) -> None:
        """The geo index forgot this slot's location (retention)."""
        member = self.by_slot[slot]
        if member is None:
            return
        self.pending.pop(member.id, None)
        self.broadcast(
            proto.encode(
                "participant_stale",
                {"user_id": member.id_str, "last_seen": rfc3339(member.location_at)},
            )
        )

    def on_hint(self, box: BBox) -> None:
        """The fresh box changed enough (hysteresis in the index): due with the next flush."""
        if not self.connections:
            return
        self._hint_due = box
        self._pending_event.set()

    def _send_hint(self, box: BBox, locations: proto.OutFrame | None) -> None:
        """Hint every screen size (one frame per distinct size), after the locations."""
        ids = self._fresh_ids(trio.current_time())
        groups: dict[tuple[int, int, int], list[Connection]] = {}
        for connection in self.connections:
            groups.setdefault(connection.viewport, []).append(connection)
        for size, members in groups.items():
            hint = proto.encode("viewport", self._fit(box, size, ids))
            frames = [hint] if locations is None else [locations, hint]
            for connection in members:
                connection.put_all(frames)
        self.hub.stats.hints_sent += len(self.connections)

    def _fresh_ids(self, now: float) -> list[str]:
        ids = []
        for slot in self.index.fresh_slots(self.block, now).tolist():
            member = self.by_slot[slot]
            if member is not None:
                ids.append(member.id_str)
        return ids

    def _fit(self, box: BBox, size: tuple[int, int, int], ids: list[str]) -> dict[str, Any]:
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

    def viewport_data(self, size: tuple[int, int, int], now: float) -> dict[str, Any] | None:
        current = self.index.block_bbox(self.block, now)
        if current is None:
            return None
        return self._fit(current[0], size, self._fresh_ids(now))

    def state_frame(self, connection: Connection) -> proto.OutFrame:
        now = trio.current_time()
        participants = []
        for member in self.members.values():
            entry = member.summary()
            location = self._location_entry(member.id, now)
            if location is not None:
                del location["user_id"]
            entry["last_seen"] = rfc3339(member.last_seen)
            entry["location"] = location
            entry["stale"] = location is None and member.location_at is not None
            participants.append(entry)
        you = connection.member
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
                    "user_id": you.id_str,
                    "display_name": you.display_name,
                    "avatar_color": you.avatar_color,
                },
                "participants": participants,
                "viewport": self.viewport_data(connection.viewport, now),
                "limits": self.settings.limits,
            },
        )

    # --- housekeeping -------------------------------------------------------------------
    def take_activity(self) -> tuple[float | None, dict[uuid.UUID, float]]:
        """Activity since the last call, for persisting (session wall time, member times)."""
        seen = {}
        for member in self.members.values():
            if member.activity_dirty:
                member.activity_dirty = False
                seen[member.id] = member.last_seen
        session_time = None
        if self.activity_dirty:
            self.activity_dirty = False
            session_time = self.clock.now() - max(0.0, trio.current_time() - self.last_activity)
        return session_time, seen

    def member_for(self, user_id: uuid.UUID) -> Member | None:
        return self.members.get(user_id)

    def statistics(self) -> dict[str, int]:
        return {
            "members": len(self.members),
            "connections": len(self.connections),
            "pending": len(self.pending),
        }
