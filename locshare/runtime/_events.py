"""What happens to a session, as plain values: the events its actor applies.

Two kinds:
    * **Session events** (:data:`SessionEvent`) travel on the session bus
      (:mod:`._bus`): REST handlers, the sweeper and other nodes publish them, and
      every node hosting the session applies them.  They carry ids and values only
      (no sockets, no tasks), so a bus can serialise them.
    * **Local events** come from this process only: the geo tick's evictions and hints,
      shutdown (here), and a handshake attaching a socket or a connection that ended
      (:class:`~._connection.Attach`, :class:`~._connection.Detached`).  They go
      straight into the actor's inbox.

Rule: only the session's actor changes the session's state, by applying these in the
order they arrived.  Whoever wants something changed posts an event and, if it needs
an answer (attach), waits on the event's reply.

Privacy: :class:`Located` holds a position; it lives in memory only (an inbox, a bus
message) and is never logged: its ``repr`` shows no coordinate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ..geo import BBox, Convoy, Route
from ..storage._model import ParticipantRecord, PlaceRecord, RouteRecord


# --- session events (bus) -----------------------------------------------------------
@dataclass(frozen=True, slots=True, repr=False)
class Located:
    """A participant's position as received by a node.

    ``received_at`` is this process's monotonic time of receipt (a bus converts the
    sender's wall time on the way in); retention counts from it.
    """

    user_id: uuid.UUID
    lat: float
    lng: float
    accuracy: float | None
    heading: float | None
    speed: float | None
    client_ts: float | None
    received_at: float
    received_wall: float  # wall-clock seconds of receipt (what crosses processes)

    def __repr__(self) -> str:  # never show a position
        return f"Located({self.user_id})"


@dataclass(frozen=True, slots=True)
class LocatedBatch:
    """The positions one node received for a session within one flush window."""

    origin: str
    updates: tuple[Located, ...]

    def __repr__(self) -> str:
        return f"LocatedBatch({self.origin}, {len(self.updates)} updates)"


@dataclass(frozen=True, slots=True)
class Joined:
    participant: ParticipantRecord


@dataclass(frozen=True, slots=True)
class Left:
    user_id: uuid.UUID
    reason: str  # "left" | "removed"
    close_code: int


@dataclass(frozen=True, slots=True)
class Ended:
    reason: str  # "ended" | "expired" | "inactive"


@dataclass(frozen=True, slots=True)
class Presence:
    """A member's socket opened or closed on node ``origin``, or its map was shown or
    hidden (``visible``: the client's last ``visibility``)."""

    origin: str
    user_id: uuid.UUID
    online: bool
    visible: bool = True


# --- local events (inbox only) ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Evicted:
    slots: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class HintDue:
    box: BBox


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The server is stopping: close every socket with 1001 (the session goes on)."""


# --- places, the route, statuses (issue 14; bus) ---------------------------------------
@dataclass(frozen=True, slots=True)
class PlaceAdded:
    place: PlaceRecord


@dataclass(frozen=True, slots=True)
class PlaceRemoved:
    place_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class RouteChanged:
    """The route was set or cleared: every node reads it again from storage (a route of
    20,000 points is too big for a bus message)."""


@dataclass(frozen=True, slots=True)
class StatusSet:
    """A participant's status (in memory only): ``status`` None clears it."""

    user_id: uuid.UUID
    status: str | None
    text: str | None
    at: float | None  # wall time


# --- places, the route (local) -----------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class RouteLoaded:
    """The route as read from storage and parsed (``None``: no route), for the
    actor's ``generation``-th :class:`RouteChanged` (an older load is ignored)."""

    generation: int
    record: RouteRecord | None
    route: Route | None


@dataclass(frozen=True, slots=True, eq=False)
class PlaceTick:
    """The geo tick's arrivals and departures in this session as ``(member, place)``
    ids, read from the actor when the tick ran (a slot or a place index reused since
    then cannot be confused).  A departure carries why: ``"left"`` (outside the grown
    place) or ``"expired"`` (the location expired: the server no longer knows)."""

    arrivals: tuple[tuple[uuid.UUID, uuid.UUID], ...]
    departures: tuple[tuple[uuid.UUID, uuid.UUID, str], ...]


@dataclass(frozen=True, slots=True, eq=False)
class ConvoyTick:
    convoy: Convoy


# --- cluster events (bus) -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StateRequest:
    """Node ``origin`` starts hosting the session: who knows its state, send it."""

    origin: str


@dataclass(frozen=True, slots=True)
class StateReply:
    """What node ``origin`` knows of the session, for node ``to``: the fresh positions
    (with the wall time each was received) and who is online where (``(member, node,
    map visible)``: its own sockets and what the other nodes told it), and the
    statuses it holds."""

    origin: str
    to: str
    located: tuple[Located, ...]
    online: tuple[tuple[uuid.UUID, str, bool], ...]
    statuses: tuple[StatusSet, ...] = ()  # issue 14: they live in memory only

    def __repr__(self) -> str:
        return f"StateReply({self.origin} -> {self.to}, {len(self.located)} positions)"


@dataclass(frozen=True, slots=True)
class Unhosted:
    """Node ``origin`` stopped hosting the session (its last socket there left and it
    unloaded it): the others stop sending it positions.  If it hosts the session again
    it asks for the state first (:class:`StateRequest`), which makes it a peer again."""

    origin: str


@dataclass(frozen=True, slots=True)
class NodeGone:
    """Local, from the bus: node ``node`` stopped answering (its members are offline)."""

    node: str


@dataclass(frozen=True, slots=True)
class BusReconnected:
    """Local, from the bus: it was cut off and is back; resynchronise."""


SessionEvent = (
    LocatedBatch
    | Joined
    | Left
    | Ended
    | Presence
    | StateRequest
    | StateReply
    | Unhosted
    | PlaceAdded
    | PlaceRemoved
    | RouteChanged
    | StatusSet
)
