"""One WebSocket of one member: its bounded outbox, its reader and its writer.

Resource handling:
    :meth:`Connection.run` runs in the session actor's nursery and owns two tasks: the
    reader (messages in) and the writer (the outbox out).  It ends when the peer closes,
    a close frame went out and was answered (or ``CLOSE_HANDSHAKE_TIMEOUT_S`` passed),
    the client stopped reading for ``slow_client_timeout_s``, or the actor cancels it;
    in ``finally`` it tells the actor (:class:`~._events.Detached`) and closes the
    transport.  A connection cancelled from outside sends 1011 first ("reconnect").

Concurrency rules:
    * Publishing never awaits a recipient: frames go into the bounded
      :class:`~locshare.proto.Outbox` with a synchronous ``put``.  While the writer is
      parked with nothing queued, ``put`` instead writes the shared frame bytes straight
      to the non-blocking socket (the transport's ``send_nowait``); only what would
      block is queued, and then the writer owns the socket until it has drained, so
      bytes never interleave.
    * The reader changes no session state: a position goes into the actor's inbox
      (coalesced, applied at the next flush), a ``leave`` goes through the host; a
      ``viewport_size`` changes only this connection's screen size; a ``ping`` is
      answered here.
    * A connection whose client said its map is hidden (``visibility``) is not sent
      ``locations`` and ``viewport`` frames (they describe the present, which nobody
      looks at); everything else still goes.  When the map is shown again, the writer
      sends one catch-up built from the session's current state, as after an overflow.
      A hidden app or tab then costs neither the server a write per flush nor the
      phone its data and radio time.  A call for help (``need_help``) sends hidden
      maps the present just before it, so the alert can show where everyone is.

Rule (budget): every message counts against the connection's budget of
``max_messages_per_s``, control frames too (a ping costs a pong write).  What exceeds it
is dropped; a peer that keeps exceeding it (``FLOOD_TOLERANCE_S`` worth of dropped
messages, net of the allowed rate) is closed with 1008 and not read any further.

Rule (containment): an unexpected error while handling one message costs that message
only: its sender gets ``error internal_error``; the connection and the session go on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

from .._clock import WallClock, rfc3339
from ..errors import MessageTooBig, ProtocolError
from ..geo import Place
from ..proto import _messages as proto
from ..proto._frames import OP_PING, Control
from ..proto._outbox import COALESCABLE, Outbox, OutboxStatistics
from ..proto._ratelimit import TokenBucket
from ..storage._model import ParticipantRecord
from ._events import Located
from ._transport import ConnectionClosed, Transport

if TYPE_CHECKING:
    from ._settings import RuntimeSettings
    from ._stats import HubStats

log = logging.getLogger("locshare.session")

CLOSE_HANDSHAKE_TIMEOUT_S: Final = 2.0
RATE_LIMIT_ERROR_INTERVAL_S: Final = 1.0
# A connection closes with 1008 once it has sent this many seconds' worth of the allowed
# rate in dropped messages (net of the rate: sending at twice the limit never closes).
FLOOD_TOLERANCE_S: Final = 10.0

# Width, height, padding (pixels) and whether the fit includes the session's places.
Viewport = tuple[int, int, int, bool]
# Place and status changes (issue 14) reach everyone and may write to the database:
# each member may make this many per second, in bursts of GROUP_CHANGES_BURST.
GROUP_CHANGES_PER_S: Final = 0.5
GROUP_CHANGES_BURST: Final = 10


@dataclass(eq=False)
class AttachReply:
    """Filled in by the actor: the new connection, or ``None`` (member gone, ending)."""

    done: trio.Event = field(default_factory=trio.Event)
    connection: Connection | None = None

    def answer(self, connection: Connection | None) -> None:
        self.connection = connection
        self.done.set()


@dataclass(frozen=True, slots=True, eq=False)
class Attach:
    """Local event: give ``transport`` to a member's new connection.  ``participant``:
    the member's record when the handshake had to look it up (joined after the session
    loaded)."""

    user_id: uuid.UUID
    transport: Transport
    reply: AttachReply
    participant: ParticipantRecord | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Detached:
    """Local event: a connection's task ended (any reason)."""

    connection: Connection


@dataclass(frozen=True, slots=True, eq=False)
class VisibilityChanged:
    """Local event: the client says whether it shows the map (``visibility``)."""

    connection: Connection
    visible: bool


class MemberView(Protocol):
    """What a connection knows of its member (the actor owns the member)."""

    id: Any
    id_str: str


class ConnectionHost(Protocol):
    """The narrow view of its session that a connection needs."""

    id_str: str
    settings: RuntimeSettings
    stats: HubStats
    clock: WallClock

    def post(self, event: object) -> bool: ...

    def locate(self, event: Located) -> None: ...

    def state_frame(self, connection: Connection) -> proto.OutFrame: ...

    def catch_up_frames(self, connection: Connection) -> list[proto.OutFrame]: ...

    def viewport_data(self, size: Viewport, now: float) -> dict[str, Any] | None: ...

    async def leave(self, connection: Connection) -> None: ...

    async def place_add(self, connection: Connection, place: Place) -> None: ...

    async def place_remove(self, connection: Connection, place_id: uuid.UUID) -> None: ...

    def set_status(self, connection: Connection, status: str | None, text: str | None) -> None: ...


@dataclass(eq=False)
class Connection:
    """One WebSocket of one member.  Owns a reader and a writer task (see :meth:`run`)."""

    host: ConnectionHost
    member: MemberView
    transport: Transport
    outbox: Outbox[proto.OutFrame]
    budget: TokenBucket
    flood: TokenBucket  # dropped messages allowed before a close with 1008
    changes: TokenBucket  # place and status changes (GROUP_CHANGES_PER_S)
    viewport: Viewport = (*proto.DEFAULT_VIEWPORT, False)
    visible: bool = True  # what the client last said (the actor sets it: set_visible)
    interval_sent: tuple[float, str] | None = None  # the last update_interval sent
    closed: trio.Event = field(default_factory=trio.Event)
    rate_error_at: float = -math.inf
    _writer_parked: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    _scope: trio.CancelScope | None = None
    _finished: bool = False  # a close frame went out, the peer closed, or we gave up on it
    _idle: bool = False  # the writer is parked with nothing queued: direct writes allowed
    _partial: bytes = b""  # unsent tail of a direct write; the writer sends it first

    @classmethod
    def open(
        cls, host: ConnectionHost, member: MemberView, transport: Transport, now: float
    ) -> Connection:
        settings = host.settings
        rate = settings.max_messages_per_s
        return cls(
            host=host,
            member=member,
            transport=transport,
            outbox=Outbox(settings.outbox_max_frames),
            budget=TokenBucket(rate, rate, now),
            flood=TokenBucket(rate, rate * FLOOD_TOLERANCE_S, now),
            changes=TokenBucket(GROUP_CHANGES_PER_S, GROUP_CHANGES_BURST, now),
        )

    # --- queueing (sync, never blocks) --------------------------------------------------
    def put(self, frame: proto.OutFrame) -> None:
        """Queue a frame, or write it at once if the socket takes it (Rule: fast path)."""
        if not self.visible and frame.kind in COALESCABLE:
            return
        if self._idle and not self.outbox and self._write_now(frame.wire, frame.payload):
            return
        self.outbox.put(frame)
        self._wake_writer()

    def put_all(self, frames: list[proto.OutFrame], *, even_hidden: bool = False) -> None:
        """Like :meth:`put` for several frames, written with one system call if possible
        (``even_hidden``: positions to a hidden map too, the present before an alert)."""
        if not (self.visible or even_hidden):
            frames = [f for f in frames if f.kind not in COALESCABLE]
            if not frames:
                return
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
        stats = self.host.stats
        stats.frames_sent += count
        stats.bytes_sent += len(payload) if payload is not None else size
        if sent < len(data):
            self._partial = data[sent:]
            self._wake_writer()
        return True

    def set_visible(self, visible: bool) -> None:
        """The client showed or hid its map; shown again, it gets the present (one
        catch-up, built by the writer from the session)."""
        shown = visible and not self.visible
        self.visible = visible
        if shown:
            self.outbox.catch_up()
            self._wake_writer()

    def _wake_writer(self) -> None:
        self._idle = False  # no direct write until the writer has drained and parked again
        self._writer_parked.unpark_all()

    def send_error(self, code: str, message: str) -> None:
        self.host.stats.count_error(code)
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
            self.host.post(Detached(self))
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
            self.host.stats.slow_disconnects += 1
            log.info(
                "disconnecting a client that stopped reading",
                extra={"session_id": self.host.id_str},
            )
            return False
        return ended_with_close

    async def _drain(self, timer: trio.CancelScope) -> bool:
        slow_s = self.host.settings.slow_client_timeout_s
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
        host = self.host
        stats = host.stats
        batch = self.outbox.take()
        frames = batch.frames
        if batch.resync:
            frames = [host.state_frame(self)]
        elif batch.catch_up:
            frames.extend(host.catch_up_frames(self))
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
        transport = self.transport
        stats = self.host.stats
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
            if not self.budget.take(now):
                stats.rate_limited += 1
                if not self.flood.take(now):
                    stats.flood_disconnects += 1
                    self.close(proto.CLOSE_POLICY, "too many messages")
                    return  # not a byte more is parsed; the writer closes the connection
                if now - self.rate_error_at >= RATE_LIMIT_ERROR_INTERVAL_S:
                    self.rate_error_at = now
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
                await self._handle(message, now)
            except Exception:
                stats.message_errors += 1
                log.exception(
                    "handling a client message failed; the sender was told",
                    extra={"session_id": self.host.id_str},
                )
                self.send_error("internal_error", "the server could not handle this message")

    async def _handle(self, message: proto.ClientMessage, now: float) -> None:
        host = self.host
        if isinstance(message, proto.LocationUpdate):
            host.stats.updates_received += 1
            host.locate(
                Located(
                    user_id=self.member.id,
                    lat=message.lat,
                    lng=message.lng,
                    accuracy=message.accuracy,
                    heading=message.heading,
                    speed=message.speed,
                    client_ts=message.timestamp,
                    received_at=now,
                    received_wall=host.clock.now(),
                )
            )
        elif isinstance(message, proto.ViewportSize):
            self.viewport = (
                message.width,
                message.height,
                message.padding,
                message.include_places,
            )
            hint = host.viewport_data(self.viewport, now)
            if hint is not None:
                self.put(proto.encode("viewport", hint))
        elif isinstance(message, proto.Ping):
            self.put(
                proto.encode("pong", {"server_time": rfc3339(host.clock.now()), "id": message.id})
            )
        elif isinstance(message, proto.Leave):
            await host.leave(self)
        elif isinstance(message, proto.Visibility):
            if not host.post(VisibilityChanged(self, message.visible)):
                self.send_error("unavailable", "the session is busy; try again")
        elif not self.changes.take(now):
            host.stats.rate_limited += 1
            self.send_error("rate_limited", "too many place or status changes; slow down")
        elif isinstance(message, proto.PlaceAdd):
            await host.place_add(self, message.place)
        elif isinstance(message, proto.PlaceRemove):
            await host.place_remove(self, message.place_id)
        elif isinstance(message, proto.SetStatus):
            host.set_status(self, message.status, message.text)
