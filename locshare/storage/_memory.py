"""Storage in memory: the same contract as PostgreSQL, for the time-driven tests.

Why it exists: the runtime tests run under trio's mock clock, where a real database
round trip would let the clock jump; with this adapter the persistence paths (lazy
load, joins racing a load, departures, the sweeper, the purge) run in those tests too,
instead of a second "no storage" mode in the runtime.  locshare does not offer it as a
server option: sessions must survive a restart.

Every method checkpoints once (like a round trip, without time passing) and follows
:class:`~locshare.storage.Storage`'s rules: joins admit at most ``max_participants``,
a session past ``expires_at`` is over, departures and ends are idempotent (``False``
when nothing changed).  ``available`` can be set to ``False`` to simulate an outage:
every call then raises :class:`~locshare.errors.StorageUnavailable`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping

import trio

from ..errors import StorageUnavailable
from ._model import (
    JoinOutcome,
    JoinStatus,
    ParticipantRecord,
    PlaceRecord,
    RouteRecord,
    SessionRecord,
)


class InMemoryStorage:
    def __init__(self) -> None:
        self.sessions: dict[uuid.UUID, SessionRecord] = {}
        self.ended_at: dict[uuid.UUID, float] = {}
        self.participants: dict[uuid.UUID, ParticipantRecord] = {}
        self.places: dict[uuid.UUID, PlaceRecord] = {}
        self.routes: dict[uuid.UUID, RouteRecord] = {}
        self.available = True

    async def _call(self) -> None:
        await trio.lowlevel.checkpoint()
        if not self.available:
            raise StorageUnavailable("the in-memory storage is set unavailable")

    async def ping(self) -> None:
        await self._call()

    async def create_session(
        self,
        *,
        session_id: uuid.UUID,
        name: str,
        now: float,
        expires_at: float,
        creator_secret_hash: bytes,
        max_participants: int,
    ) -> SessionRecord:
        await self._call()
        record = SessionRecord(
            id=session_id,
            name=name,
            created_at=now,
            expires_at=expires_at,
            creator_secret_hash=creator_secret_hash,
            max_participants=max_participants,
            is_active=True,
            ended_reason=None,
            last_activity=now,
            participant_count=0,
        )
        self.sessions[session_id] = record
        return record

    async def get_session(self, session_id: uuid.UUID) -> SessionRecord | None:
        await self._call()
        return self.sessions.get(session_id)

    async def join(
        self,
        *,
        session_id: uuid.UUID,
        participant_id: uuid.UUID,
        display_name: str,
        avatar_color: str,
        now: float,
    ) -> JoinOutcome:
        await self._call()
        record = self.sessions.get(session_id)
        if record is None:
            return JoinOutcome(JoinStatus.NOT_FOUND)
        if not record.is_active or record.expires_at <= now:
            return JoinOutcome(JoinStatus.ENDED, record)
        if record.participant_count >= record.max_participants:
            return JoinOutcome(JoinStatus.FULL, record)
        record = dataclasses.replace(
            record, participant_count=record.participant_count + 1, last_activity=now
        )
        self.sessions[session_id] = record
        participant = ParticipantRecord(
            participant_id, session_id, display_name, avatar_color, now, now, True, None
        )
        self.participants[participant_id] = participant
        return JoinOutcome(JoinStatus.JOINED, record, participant)

    async def leave(
        self, *, session_id: uuid.UUID, participant_id: uuid.UUID, reason: str, now: float
    ) -> bool:
        await self._call()
        participant = self.participants.get(participant_id)
        if participant is None or participant.session_id != session_id:
            return False
        if not participant.is_active:
            return False
        self.participants[participant_id] = dataclasses.replace(
            participant, is_active=False, left_reason=reason, last_seen=now
        )
        record = self.sessions[session_id]
        self.sessions[session_id] = dataclasses.replace(
            record, participant_count=record.participant_count - 1, last_activity=now
        )
        return True

    async def end_session(self, *, session_id: uuid.UUID, reason: str, now: float) -> bool:
        await self._call()
        record = self.sessions.get(session_id)
        if record is None or not record.is_active:
            return False
        self.sessions[session_id] = dataclasses.replace(
            record, is_active=False, ended_reason=reason
        )
        self.ended_at[session_id] = now
        return True

    async def get_participant(
        self, session_id: uuid.UUID, participant_id: uuid.UUID
    ) -> ParticipantRecord | None:
        await self._call()
        found = self.participants.get(participant_id)
        return found if found is not None and found.session_id == session_id else None

    async def list_participants(self, session_id: uuid.UUID) -> list[ParticipantRecord]:
        await self._call()
        rows = [p for p in self.participants.values() if p.session_id == session_id]
        rows.sort(key=lambda p: (not p.is_active, p.joined_at, str(p.id)))
        return rows

    async def record_activity(
        self,
        sessions: Mapping[uuid.UUID, float],
        participants: Mapping[uuid.UUID, float],
    ) -> None:
        await self._call()
        for session_id, ts in sessions.items():
            record = self.sessions.get(session_id)
            if record is not None and record.is_active:
                self.sessions[session_id] = dataclasses.replace(
                    record, last_activity=max(record.last_activity, ts)
                )
        for participant_id, ts in participants.items():
            participant = self.participants.get(participant_id)
            if participant is not None:
                self.participants[participant_id] = dataclasses.replace(
                    participant, last_seen=max(participant.last_seen, ts)
                )

    async def sweep(self, *, now: float, inactive_before: float) -> list[tuple[uuid.UUID, str]]:
        await self._call()
        ended = []
        for session_id, record in list(self.sessions.items()):
            if not record.is_active:
                continue
            if record.expires_at <= now:
                reason = "expired"
            elif record.last_activity <= inactive_before:
                reason = "inactive"
            else:
                continue
            self.sessions[session_id] = dataclasses.replace(
                record, is_active=False, ended_reason=reason
            )
            self.ended_at[session_id] = now
            ended.append((session_id, reason))
        return ended

    async def purge_ended(self, *, ended_before: float) -> int:
        await self._call()
        gone = [sid for sid, at in self.ended_at.items() if at < ended_before]
        for session_id in gone:
            del self.sessions[session_id]
            del self.ended_at[session_id]
            for participant_id in [
                p.id for p in self.participants.values() if p.session_id == session_id
            ]:
                del self.participants[participant_id]
            for place_id in [p.id for p in self.places.values() if p.session_id == session_id]:
                del self.places[place_id]
            self.routes.pop(session_id, None)
        return len(gone)

    async def add_place(self, place: PlaceRecord, *, limit: int) -> bool:
        await self._call()
        held = sum(1 for p in self.places.values() if p.session_id == place.session_id)
        if held >= limit:
            return False
        self.places[place.id] = place
        return True

    async def list_places(self, session_id: uuid.UUID) -> list[PlaceRecord]:
        await self._call()
        rows = [p for p in self.places.values() if p.session_id == session_id]
        rows.sort(key=lambda p: (p.created_at, str(p.id)))
        return rows

    async def remove_place(self, session_id: uuid.UUID, place_id: uuid.UUID) -> PlaceRecord | None:
        await self._call()
        found = self.places.get(place_id)
        if found is None or found.session_id != session_id:
            return None
        del self.places[place_id]
        return found

    async def get_place(self, session_id: uuid.UUID, place_id: uuid.UUID) -> PlaceRecord | None:
        await self._call()
        found = self.places.get(place_id)
        return found if found is not None and found.session_id == session_id else None

    async def set_route(self, route: RouteRecord) -> None:
        await self._call()
        self.routes[route.session_id] = route

    async def clear_route(self, session_id: uuid.UUID) -> bool:
        await self._call()
        return self.routes.pop(session_id, None) is not None

    async def get_route(self, session_id: uuid.UUID) -> RouteRecord | None:
        await self._call()
        return self.routes.get(session_id)
