"""Plain records shared by storage, the runtime and the HTTP edge, and the storage seam.

Timestamps are wall-clock epoch seconds (floats); only the edges format them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: uuid.UUID
    name: str
    created_at: float
    expires_at: float
    creator_secret_hash: bytes
    max_participants: int
    is_active: bool
    ended_reason: str | None
    last_activity: float
    participant_count: int

    def effective_end(self, now: float) -> str | None:
        """Why the session is over at ``now`` (``None`` while it is live).

        A session past ``expires_at`` is over even before the sweeper has marked it.
        """
        if not self.is_active:
            return self.ended_reason or "ended"
        if self.expires_at <= now:
            return "expired"
        return None


@dataclass(frozen=True, slots=True)
class ParticipantRecord:
    id: uuid.UUID
    session_id: uuid.UUID
    display_name: str
    avatar_color: str
    joined_at: float
    last_seen: float
    is_active: bool
    left_reason: str | None


@dataclass(frozen=True, slots=True)
class PlaceRecord:
    """A place of a session (issue 14): session data like a name, never a person's
    position.  ``geometry`` is GeoJSON (a Point with ``radius_m``, or a Polygon)."""

    id: uuid.UUID
    session_id: uuid.UUID
    name: str
    kind: str
    author: uuid.UUID | None  # None: the creator, over REST
    geometry: dict[str, Any]
    radius_m: float | None
    created_at: float


@dataclass(frozen=True, slots=True)
class RouteRecord:
    """A session's route: the full GeoJSON LineString as set, and its off-route limit."""

    session_id: uuid.UUID
    geometry: dict[str, Any]
    off_route_m: float
    updated_at: float


class JoinStatus(enum.Enum):
    JOINED = "joined"
    NOT_FOUND = "not_found"
    ENDED = "ended"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class JoinOutcome:
    status: JoinStatus
    session: SessionRecord | None = None
    participant: ParticipantRecord | None = None


class Storage(Protocol):
    """What the runtime needs from persistence.  One implementation: ``PostgresStorage``.

    Every method raises :class:`~locshare.errors.StorageUnavailable` when the database
    cannot be reached; nothing else from the driver escapes.
    """

    async def ping(self) -> None: ...

    async def create_session(
        self,
        *,
        session_id: uuid.UUID,
        name: str,
        now: float,
        expires_at: float,
        creator_secret_hash: bytes,
        max_participants: int,
    ) -> SessionRecord: ...

    async def get_session(self, session_id: uuid.UUID) -> SessionRecord | None: ...

    async def join(
        self,
        *,
        session_id: uuid.UUID,
        participant_id: uuid.UUID,
        display_name: str,
        avatar_color: str,
        now: float,
    ) -> JoinOutcome: ...

    async def leave(
        self, *, session_id: uuid.UUID, participant_id: uuid.UUID, reason: str, now: float
    ) -> bool: ...

    async def end_session(self, *, session_id: uuid.UUID, reason: str, now: float) -> bool: ...

    async def get_participant(
        self, session_id: uuid.UUID, participant_id: uuid.UUID
    ) -> ParticipantRecord | None: ...

    async def list_participants(self, session_id: uuid.UUID) -> list[ParticipantRecord]: ...

    async def record_activity(
        self,
        sessions: Mapping[uuid.UUID, float],
        participants: Mapping[uuid.UUID, float],
    ) -> None: ...

    async def sweep(self, *, now: float, inactive_before: float) -> list[tuple[uuid.UUID, str]]: ...

    async def purge_ended(self, *, ended_before: float) -> int: ...

    async def add_place(self, place: PlaceRecord, *, limit: int) -> bool:
        """Store a place unless the session holds ``limit`` already (``False``)."""
        ...

    async def list_places(self, session_id: uuid.UUID) -> list[PlaceRecord]: ...

    async def remove_place(
        self, session_id: uuid.UUID, place_id: uuid.UUID
    ) -> PlaceRecord | None: ...

    async def get_place(self, session_id: uuid.UUID, place_id: uuid.UUID) -> PlaceRecord | None: ...

    async def set_route(self, route: RouteRecord) -> None: ...

    async def clear_route(self, session_id: uuid.UUID) -> bool: ...

    async def get_route(self, session_id: uuid.UUID) -> RouteRecord | None: ...
