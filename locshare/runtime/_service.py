"""The operations behind the REST API: sessions, joins, departures, health.

Each method validates, checks authorization and limits, calls storage once (usually)
and tells the live runtime (the hub) what changed.  Results are JSON-ready dicts in
the shape of the REST contract; errors are :mod:`locshare.errors` exceptions, which
the HTTP edge maps to status codes.

Authorization rules (401 vs 403 vs 410):
    * missing, malformed, forged or expired token, or a participant who left -> 401
    * a valid token of *another* session, or the wrong role for the action  -> 403
    * the session has ended (even if the token has not expired)              -> 410
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from .._auth import Claims, TokenAuthority
from .._clock import WallClock, rfc3339
from .._version import __version__
from ..errors import (
    Forbidden,
    NotFound,
    RateLimited,
    SessionEnded,
    SessionFull,
    StorageUnavailable,
    Unauthorized,
    Unavailable,
)
from ..geo import OFF_ROUTE_DEFAULT_M
from ..proto import _messages as proto
from ..proto._places import off_route_body, off_route_request, place_request, route_upload
from ..proto._ratelimit import KeyedLimiter
from ..proto._validation import CreateSessionRequest, JoinRequest, default_color
from ..storage._model import JoinStatus, ParticipantRecord, SessionRecord, Storage
from ._group import place_message
from ._hub import Hub
from ._names import readable_name

# REST changes of places and of the route, per session (the WebSocket has its own
# per-member budget, ``_connection.GROUP_CHANGES_PER_S``).
PLACE_CHANGES_PER_SESSION_PER_MIN = 60
ROUTE_CHANGES_PER_SESSION_PER_MIN = 30  # a build: up to ~0.1 s of CPU


@dataclass(frozen=True, slots=True)
class PublicUrls:
    base: str
    websocket: str


def parse_session_id(text: str) -> uuid.UUID:
    """Path ids that are not UUIDs name no session: 404, not 422."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound("no such session") from None


class Service:
    def __init__(
        self,
        *,
        storage: Storage,
        hub: Hub,
        tokens: TokenAuthority,
        clock: WallClock,
        urls: PublicUrls,
        sessions_per_address_per_min: int,
        joins_per_session_per_min: int,
    ) -> None:
        self.storage = storage
        self.hub = hub
        self.tokens = tokens
        self.clock = clock
        self.urls = urls
        self._create_limiter = KeyedLimiter(sessions_per_address_per_min, 60.0)
        self._join_limiter = KeyedLimiter(joins_per_session_per_min, 60.0)
        self._place_limiter = KeyedLimiter(PLACE_CHANGES_PER_SESSION_PER_MIN, 60.0)
        self._route_limiter = KeyedLimiter(ROUTE_CHANGES_PER_SESSION_PER_MIN, 60.0)
        self.started_monotonic = time.monotonic()
        # Set by the metrics module: (method, route, status, seconds) per request.
        self.observe_request: Callable[[str, str, int, float], None] | None = None
        # The embedded PostgreSQL's supervisor state, shown by /health (None: external).
        self.embedded_database: Callable[[], str] | None = None
        # With --workers: this worker's slot and its hand-overs (``_server.py``).
        self.worker_state: Callable[[], dict[str, Any]] | None = None

    # --- helpers ------------------------------------------------------------------------
    def _authenticate(self, authorization: str | None) -> Claims:
        if not authorization:
            raise Unauthorized("missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("expected Authorization: Bearer <token>")
        return self.tokens.verify(token.strip(), self.clock.now())

    async def _live_session(self, session_id: uuid.UUID) -> SessionRecord:
        record = await self.storage.get_session(session_id)
        if record is None:
            raise NotFound("no such session")
        ended = record.effective_end(self.clock.now())
        if ended is not None:
            raise SessionEnded(f"the session has ended ({ended})")
        return record

    async def _authorize(
        self, session_id: uuid.UUID, authorization: str | None
    ) -> tuple[Claims, SessionRecord, ParticipantRecord | None]:
        """Check a token against a session; returns the caller's participant if any."""
        claims = self._authenticate(authorization)
        if claims.session_id != session_id:
            raise Forbidden("this token belongs to another session")
        record = await self._live_session(session_id)
        if claims.role == "creator":
            if not self.tokens.creator_matches(claims, record.creator_secret_hash):
                raise Unauthorized("invalid creator token")
            return claims, record, None
        participant = await self.storage.get_participant(session_id, claims.subject)
        if participant is None or not participant.is_active:
            raise Unauthorized("this participant has left the session")
        return claims, record, participant

    def _rate(self, limiter: KeyedLimiter, key: object, what: str) -> None:
        now = time.monotonic()
        if not limiter.hit(key, now):
            self.hub.stats.rate_limited += 1
            wait_s = limiter.retry_after_s(key, now)
            raise RateLimited(f"too many {what}; try again in {wait_s} s", retry_after_s=wait_s)

    # --- operations ---------------------------------------------------------------------
    async def create_session(self, request: CreateSessionRequest, address: str) -> dict[str, Any]:
        self._rate(self._create_limiter, address, "sessions created from this address")
        now = self.clock.now()
        session_id = uuid.uuid4()
        expires_at = now + request.expires_in_minutes * 60
        creator_token, secret_hash = self.tokens.creator_token(session_id, expires_at, now)
        record = await self.storage.create_session(
            session_id=session_id,
            name=request.name or readable_name(),
            now=now,
            expires_at=expires_at,
            creator_secret_hash=secret_hash,
            max_participants=request.max_participants,
        )
        return {
            "session_id": str(record.id),
            "name": record.name,
            "join_link": f"{self.urls.base}/join/{record.id}",
            "expires_at": rfc3339(record.expires_at),
            "max_participants": record.max_participants,
            "creator_token": creator_token,
        }

    async def get_session(self, session_id: uuid.UUID) -> dict[str, Any]:
        record = await self.storage.get_session(session_id)
        if record is None:
            raise NotFound("no such session")
        return session_view(record, self.clock.now())

    async def join(self, session_id: uuid.UUID, request: JoinRequest) -> dict[str, Any]:
        self._rate(self._join_limiter, session_id, "joins for this session")
        now = self.clock.now()
        participant_id = uuid.uuid4()
        outcome = await self.storage.join(
            session_id=session_id,
            participant_id=participant_id,
            display_name=request.display_name,
            avatar_color=request.avatar_color or default_color(participant_id.bytes),
            now=now,
        )
        if outcome.status is JoinStatus.NOT_FOUND:
            raise NotFound("no such session")
        if outcome.status is JoinStatus.ENDED:
            assert outcome.session is not None
            raise SessionEnded(f"the session has ended ({outcome.session.effective_end(now)})")
        if outcome.status is JoinStatus.FULL:
            raise SessionFull("the session is full")
        assert outcome.session is not None
        assert outcome.participant is not None
        self.hub.participant_joined(outcome.participant)
        token = self.tokens.participant_token(
            session_id, participant_id, outcome.session.expires_at, now
        )
        return {
            "user_id": str(participant_id),
            "session_id": str(session_id),
            "display_name": outcome.participant.display_name,
            "avatar_color": outcome.participant.avatar_color,
            "websocket_token": token,
            "websocket_url": self.urls.websocket,
            "expires_at": rfc3339(outcome.session.expires_at),
        }

    async def participants(
        self, session_id: uuid.UUID, authorization: str | None
    ) -> dict[str, Any]:
        await self._authorize(session_id, authorization)
        rows = await self.storage.list_participants(session_id)
        return {"participants": [participant_view(p) for p in rows]}

    async def remove_participant(
        self, session_id: uuid.UUID, user_id_text: str, authorization: str | None
    ) -> None:
        claims, _record, _caller = await self._authorize(session_id, authorization)
        try:
            user_id = uuid.UUID(user_id_text)
        except ValueError:
            raise NotFound("no such participant") from None
        if claims.role == "participant" and claims.subject != user_id:
            raise Forbidden("a participant may only remove themselves")
        reason = "left" if claims.role == "participant" else "removed"
        changed = await self.hub.leave(
            session_id, user_id, reason=reason, close_code=proto.CLOSE_LEFT
        )
        if not changed:
            raise NotFound("no such participant, or they already left")

    async def end_session(self, session_id: uuid.UUID, authorization: str | None) -> None:
        claims, _record, _caller = await self._authorize(session_id, authorization)
        if claims.role != "creator":
            raise Forbidden("only the creator token can end the session")
        await self.hub.end_session(session_id, "ended")

    # --- places and the route (issue 14) ------------------------------------------------
    async def add_place(
        self, session_id: uuid.UUID, authorization: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Any participant (or the creator) adds a place: 201 with the place."""
        claims, _record, _caller = await self._authorize(session_id, authorization)
        place = place_request(body)
        self._rate(self._place_limiter, session_id, "place changes for this session")
        author = claims.subject if claims.role == "participant" else None
        record = await self.hub.add_place(session_id, place, author)
        return place_message(record)

    async def list_places(self, session_id: uuid.UUID, authorization: str | None) -> dict[str, Any]:
        await self._authorize(session_id, authorization)
        return {"places": [place_message(p) for p in await self.storage.list_places(session_id)]}

    async def remove_place(
        self, session_id: uuid.UUID, place_id_text: str, authorization: str | None
    ) -> None:
        """The place's author or the creator removes it."""
        claims, _record, _caller = await self._authorize(session_id, authorization)
        try:
            place_id = uuid.UUID(place_id_text)
        except ValueError:
            raise NotFound("no such place in this session") from None
        self._rate(self._place_limiter, session_id, "place changes for this session")
        by = claims.subject if claims.role == "participant" else None
        await self.hub.remove_place(session_id, place_id, by)

    async def _creator(self, session_id: uuid.UUID, authorization: str | None) -> None:
        claims, _record, _caller = await self._authorize(session_id, authorization)
        if claims.role != "creator":
            raise Forbidden("only the creator token can change the route")

    async def set_route(
        self,
        session_id: uuid.UUID,
        authorization: str | None,
        raw: bytes,
        content_type: str | None,
        off_route_m: str | None,
    ) -> dict[str, Any]:
        """The creator sets the route (GeoJSON or GPX); built in a worker thread."""
        await self._creator(session_id, authorization)
        threshold = off_route_request(off_route_m, OFF_ROUTE_DEFAULT_M)
        parse, data = route_upload(raw, content_type)
        self._rate(self._route_limiter, session_id, "route changes for this session")
        route = await self.hub.build_route(parse, data)
        await self.hub.set_route(session_id, route, threshold)
        return {
            "points": route.points,
            "simplified_points": route.simplified_points,
            "tolerance_m": round(route.simplify_tolerance_m, 2),
            "length_m": round(route.length_m, 1),
            "off_route_m": threshold,
        }

    async def update_route(
        self, session_id: uuid.UUID, authorization: str | None, raw: bytes, content_type: str | None
    ) -> dict[str, Any]:
        """The creator changes the off-route threshold without uploading the route again."""
        await self._creator(session_id, authorization)
        threshold = off_route_body(raw, content_type)
        self._rate(self._route_limiter, session_id, "route changes for this session")
        record = await self.hub.set_off_route(session_id, threshold)
        return {"off_route_m": record.off_route_m}

    async def clear_route(self, session_id: uuid.UUID, authorization: str | None) -> None:
        await self._creator(session_id, authorization)
        self._rate(self._route_limiter, session_id, "route changes for this session")
        if not await self.hub.clear_route(session_id):
            raise NotFound("this session has no route")

    # --- health -------------------------------------------------------------------------
    async def ready(self) -> None:
        try:
            with trio.fail_after(2.0):
                await self.storage.ping()
        except (StorageUnavailable, trio.TooSlowError) as exc:
            raise Unavailable("the database is not answering") from exc

    async def health(self) -> dict[str, Any]:
        try:
            await self.ready()
            database = "ok"
        except Unavailable:
            database = "unavailable"
        bus = self.hub.bus.statistics()
        healthy = database == "ok" and bus.state in ("local", "up")
        health: dict[str, Any] = {
            "status": "ok" if healthy else "degraded",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 1),
            "database": database,
            "active_sessions": len(self.hub.sessions),
            "connections": self.hub.connection_count(),
            "bus": {
                "kind": bus.kind,
                "state": bus.state,
                "persistence": bus.persistence,
                "node_id": self.hub.bus.node_id,
                "other_nodes": bus.nodes,
            },
        }
        if self.embedded_database is not None:
            health["embedded_database"] = self.embedded_database()
        if self.worker_state is not None:
            health["worker"] = self.worker_state()
        return health

    def bus_state(self) -> str:
        return self.hub.bus.statistics().state


def session_view(record: SessionRecord, now: float) -> dict[str, Any]:
    ended = record.effective_end(now)
    return {
        "id": str(record.id),
        "name": record.name,
        "created_at": rfc3339(record.created_at),
        "expires_at": rfc3339(record.expires_at),
        "participant_count": record.participant_count,
        "max_participants": record.max_participants,
        "is_active": ended is None,
        "ended_reason": ended,
    }


def participant_view(p: ParticipantRecord) -> dict[str, Any]:
    return {
        "user_id": str(p.id),
        "display_name": p.display_name,
        "avatar_color": p.avatar_color,
        "joined_at": rfc3339(p.joined_at),
        "last_seen": rfc3339(p.last_seen),
        "is_active": p.is_active,
    }
