"""PostgreSQL storage: the only module that imports asyncpg or trio-asyncio.

Resource handling:
    :meth:`PostgresStorage.open` is an async context manager that opens a trio-asyncio
    loop, creates one asyncpg pool inside it and closes both on exit.  Every call is
    bridged with ``aio_as_trio(..., loop=self._loop)``: the loop is passed explicitly,
    so callers in any task (hypercorn's request tasks, session actors, pytest fixtures)
    reach it without depending on context variables.

Errors:
    Driver and network failures become :class:`StorageUnavailable` at this boundary;
    any other database error becomes :class:`StorageError`.  Nothing from asyncpg
    escapes.

Cost:
    Each bridged call costs about 250 us of CPU on this machine (trio-asyncio runs one
    asyncio callback per trio scheduling round), against about 60 us for the same query
    on a plain asyncio loop; see docs/design.md.  So every operation here is one
    statement and one bridge crossing, and the hot operations are batched: requests
    that arrive while a call is in flight share the next call (:class:`Batcher`).

Atomicity of join:
    Capacity is enforced by a single-row ``UPDATE sessions ... WHERE participant_count
    < max_participants`` before each ``INSERT`` (in ``locshare_join_many``, migration
    0002).  PostgreSQL re-evaluates the ``WHERE`` on the newest row version after
    waiting for a concurrent update of the same row, so N concurrent joins into k free
    places admit exactly k, whether they share a batch or not.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import asyncpg
import orjson
import trio
import trio_asyncio

from ..errors import StorageError, StorageUnavailable
from ._model import (
    JoinOutcome,
    JoinStatus,
    ParticipantRecord,
    PlaceRecord,
    RouteRecord,
    SessionRecord,
)

T = TypeVar("T")

_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_MIGRATION_LOCK_KEY = 0x10C5_4A2E

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.CannotConnectNowError,
    # A pooled connection whose server died while it was reading an error (state
    # ERROR_CONSUME) refuses every later operation this way: a dead connection too.
    asyncpg.InternalClientError,
)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (trio.TooSlowError, *_UNAVAILABLE_ERRORS)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _session(row: Mapping[str, Any]) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"].timestamp(),
        expires_at=row["expires_at"].timestamp(),
        creator_secret_hash=bytes(row["creator_secret_hash"]),
        max_participants=row["max_participants"],
        is_active=row["is_active"],
        ended_reason=row["ended_reason"],
        last_activity=row["last_activity"].timestamp(),
        participant_count=row["participant_count"],
    )


def _place(row: Mapping[str, Any]) -> PlaceRecord:
    return PlaceRecord(
        id=row["id"],
        session_id=row["session_id"],
        name=row["name"],
        kind=row["kind"],
        author=row["author"],
        geometry=orjson.loads(row["geometry"]),
        radius_m=row["radius_m"],
        created_at=row["created_at"].timestamp(),
    )


_PLACE_COLUMNS = "id, session_id, name, kind, author, geometry, radius_m, created_at"

# The count and the insert under the session row's lock, so that concurrent adds (on
# any node) never pass the limit.  Two statements: under READ COMMITTED a statement
# sees what was committed when it *started*, so the count must come after the lock
# (one statement with the lock in a CTE counts from before its wait: found by
# tests/net/test_places_rest.py, 24 concurrent adds all stored).
_LOCK_SESSION_SQL = "SELECT id FROM sessions WHERE id = $1 FOR UPDATE"
_ADD_PLACE_SQL = """
INSERT INTO places (id, session_id, name, kind, author, geometry, radius_m, created_at)
SELECT $1, $2, $3, $4, $5, $6::jsonb, $7, $8
 WHERE (SELECT count(*) FROM places WHERE session_id = $2) < $9
RETURNING id
"""


def _participant(row: Mapping[str, Any]) -> ParticipantRecord:
    return ParticipantRecord(
        id=row["id"],
        session_id=row["session_id"],
        display_name=row["display_name"],
        avatar_color=row["avatar_color"],
        joined_at=row["joined_at"].timestamp(),
        last_seen=row["last_seen"].timestamp(),
        is_active=row["is_active"],
        left_reason=row["left_reason"],
    )


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every packaged migration, in order."""
    found = []
    for entry in importlib.resources.files("locshare.storage.migrations").iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise StorageError(f"migration versions must be 1..n without gaps, found {versions}")
    return found


async def _no_reset(_connection: asyncpg.Connection) -> None:
    # The default reset runs "RESET ALL; UNLISTEN *; ..." on every release: one more
    # round trip per call.  locshare never leaves session state behind (no LISTEN or
    # session-level advisory locks; the one SET, in _compact, resets itself), so there
    # is nothing to reset.
    return None


_SESSION_COLUMNS = (
    "id, name, created_at, expires_at, creator_secret_hash, max_participants, is_active, "
    "ended_reason, last_activity, participant_count"
)
_PARTICIPANT_COLUMNS = (
    "id, session_id, display_name, avatar_color, joined_at, last_seen, is_active, left_reason"
)

_LEAVE_SQL = """
WITH gone AS (
    UPDATE participants SET is_active = false, left_reason = $3, last_seen = $4
     WHERE id = $2 AND session_id = $1 AND is_active
 RETURNING session_id
)
UPDATE sessions SET participant_count = participant_count - 1, last_activity = $4
  FROM gone WHERE sessions.id = gone.session_id
RETURNING sessions.id
"""

_SWEEP_SQL = """
UPDATE sessions
   SET is_active = false, ended_at = $1,
       ended_reason = CASE WHEN expires_at <= $1 THEN 'expired' ELSE 'inactive' END
 WHERE is_active AND (expires_at <= $1 OR last_activity <= $2)
RETURNING id, ended_reason
"""

_PURGE_SQL = "DELETE FROM sessions WHERE NOT is_active AND ended_at < $1"
# Every table that holds a name or a place (deleted by the cascade).  See purge_ended.
_COMPACT_SQL = "VACUUM FULL sessions, participants, places, routes"
# VACUUM FULL takes an ACCESS EXCLUSIVE lock: never queue behind a long-held lock (and
# so make every query behind us wait too); give up and retry at the next purge instead.
COMPACT_LOCK_TIMEOUT_S = 2.0
# The rewrite itself: 0.3 s for 10,000 sessions and 100,000 participants (docs/design.md),
# growing with the tables; longer than an ordinary statement may take.
COMPACT_TIMEOUT_S = 60.0
# At most one rewrite per this long: it locks both tables for its duration.
COMPACT_INTERVAL_S = 300.0


Req = TypeVar("Req")
Res = TypeVar("Res")


class _Slot(Generic[Res]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Res | None = None
        self.error: BaseException | None = None


class Batcher(Generic[Req, Res]):
    """Group commit: requests that arrive while a batch is in flight share the next one.

    At low load a request goes out alone at once (no added delay); under load, one
    bridge crossing and one round trip serve up to ``max_batch`` requests.  The queue
    is a bounded memory channel, so a database slower than the load applies
    backpressure to the callers instead of growing a buffer.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Req]], Awaitable[list[Res]]],
        *,
        max_batch: int = 64,
        capacity: int = 1024,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[tuple[Req, _Slot[Res]]](capacity)

    async def submit(self, request: Req) -> Res:
        slot: _Slot[Res] = _Slot()
        await self._send.send((request, slot))
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        batch: list[tuple[Req, _Slot[Res]]] = []
        try:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                try:
                    results = await self._run_batch([request for request, _ in batch])
                except Exception as exc:
                    for _, slot in batch:
                        slot.error = exc
                else:
                    for (_, slot), result in zip(batch, results, strict=True):
                        slot.result = result
                for _, slot in batch:
                    slot.done.set()
                batch = []
        finally:
            # Closing down: nobody may wait forever.
            while True:
                try:
                    batch.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            for _, slot in batch:
                if not slot.done.is_set():
                    slot.error = StorageUnavailable("storage is closing")
                    slot.done.set()


@dataclass(frozen=True, slots=True)
class _JoinRequest:
    session_id: uuid.UUID
    participant_id: uuid.UUID
    display_name: str
    avatar_color: str
    now: float


@dataclass(frozen=True, slots=True)
class _CreateRequest:
    session_id: uuid.UUID
    name: str
    now: float
    expires_at: float
    creator_secret_hash: bytes
    max_participants: int


class PostgresStorage:
    """asyncpg pool behind trio-asyncio.  Implements :class:`locshare._model.Storage`.

    Hot operations (create, join, and the two single-row reads used by every REST
    request) go through :class:`Batcher`; see the module docstring for why.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        loop: Any,
        timeout_s: float,
        compact_interval_s: float = COMPACT_INTERVAL_S,
    ) -> None:
        self._pool = pool
        self._loop = loop
        self._timeout_s = timeout_s
        self._joins = Batcher(self._join_batch)
        self._creates = Batcher(self._create_batch)
        self._session_reads = Batcher(self._get_sessions)
        self._participant_reads = Batcher(self._get_participants)
        self._compact_interval_s = compact_interval_s
        self._compact_pending = False  # rows were purged since the last VACUUM FULL
        self._compacted_at: float | None = None  # trio.current_time() of that rewrite

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        timeout_s: float = 5.0,
        compact_interval_s: float = COMPACT_INTERVAL_S,
    ) -> AsyncIterator[PostgresStorage]:
        """Connect (raising :class:`StorageUnavailable` if the server cannot be reached).

        The failure to connect is raised *after* the trio-asyncio loop has closed, so
        callers get the plain exception rather than one wrapped in the loop's nursery's
        exception groups.
        """
        failure: StorageUnavailable | None = None
        async with trio_asyncio.open_loop() as loop:
            try:
                with trio.fail_after(timeout_s * 2):
                    pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool, loop=loop)(
                        url,
                        min_size=1,
                        max_size=pool_size,
                        reset=_no_reset,
                        timeout=timeout_s,
                        command_timeout=timeout_s,
                    )
            except _CONNECT_ERRORS as exc:
                failure = StorageUnavailable(
                    f"cannot connect to the database: {type(exc).__name__}"
                )
                failure.__cause__ = exc
            except asyncpg.PostgresError as exc:
                failure = StorageUnavailable(f"the database refused the connection: {exc}")
                failure.__cause__ = exc
            if failure is None:
                async with cls._serve(pool, loop, timeout_s, compact_interval_s) as storage:
                    yield storage
        if failure is not None:
            raise failure

    @classmethod
    @asynccontextmanager
    async def _serve(
        cls, pool: asyncpg.Pool, loop: Any, timeout_s: float, compact_interval_s: float
    ) -> AsyncIterator[PostgresStorage]:
        try:
            storage = cls(pool, loop, timeout_s, compact_interval_s)
            async with trio.open_nursery() as nursery:
                for batcher in (
                    storage._joins,
                    storage._creates,
                    storage._session_reads,
                    storage._participant_reads,
                ):
                    await nursery.start(batcher.run)
                try:
                    yield storage
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(timeout_s) as scope:
                scope.shield = True
                try:
                    await trio_asyncio.aio_as_trio(pool.close, loop=loop)()
                except Exception:
                    pool.terminate()
            if scope.cancelled_caught:
                pool.terminate()

    # --- plumbing ---------------------------------------------------------------------
    async def _run(
        self, job: Callable[..., Awaitable[T]], *args: Any, deadline_s: float | None = None
    ) -> T:
        """Run an asyncio-flavoured ``job(connection, *args)`` with one pooled connection.

        The whole call is bounded by ``deadline_s`` (default: twice the storage's
        timeout, which also bounds the wait for a connection).
        """
        timeout_s = self._timeout_s

        async def with_connection() -> T:
            try:
                async with self._pool.acquire(timeout=timeout_s) as connection:
                    return await job(connection, *args)
            except _UNAVAILABLE_ERRORS:
                # The pooled connections are probably all dead (the server restarted):
                # replace them on next use instead of failing once per connection.
                await self._pool.expire_connections()
                raise

        try:
            with trio.fail_after(deadline_s or timeout_s * 2):
                result: T = await trio_asyncio.aio_as_trio(with_connection, loop=self._loop)()
                return result
        except trio.TooSlowError as exc:
            raise StorageUnavailable("the database did not answer in time") from exc
        except _UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(f"database error {exc.sqlstate}: {type(exc).__name__}") from exc

    # --- schema -----------------------------------------------------------------------
    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied now (idempotent)."""
        pending = migrations()

        async def job(con: asyncpg.Connection) -> list[int]:
            applied_now: list[int] = []
            async with con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
                await con.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {
                    r["version"]: r["checksum"]
                    for r in await con.fetch("SELECT version, checksum FROM schema_migrations")
                }
                for version, name, sql in pending:
                    checksum = hashlib.sha256(sql.encode()).hexdigest()
                    if version in done:
                        if done[version] != checksum:
                            raise StorageError(
                                f"migration {version:04d}_{name} changed after it was applied"
                            )
                        continue
                    await con.execute(sql)
                    await con.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        version,
                        name,
                        checksum,
                    )
                    applied_now.append(version)
            return applied_now

        return await self._run(job)

    async def applied_migrations(self) -> list[int]:
        async def job(con: asyncpg.Connection) -> list[int]:
            return [
                r["version"]
                for r in await con.fetch("SELECT version FROM schema_migrations ORDER BY version")
            ]

        return await self._run(job)

    async def ping(self) -> None:
        async def job(con: asyncpg.Connection) -> None:
            await con.fetchval("SELECT 1")

        await self._run(job)

    # --- sessions ---------------------------------------------------------------------
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
        return await self._creates.submit(
            _CreateRequest(session_id, name, now, expires_at, creator_secret_hash, max_participants)
        )

    async def _create_batch(self, requests: list[_CreateRequest]) -> list[SessionRecord]:
        async def job(con: asyncpg.Connection) -> list[SessionRecord]:
            rows = await con.fetch(
                f"INSERT INTO sessions (id, name, created_at, expires_at, creator_secret_hash,"
                f" max_participants, is_active, last_activity)"
                f" SELECT id, name, created, expires, secret, maxp, true, created"
                f" FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[],"
                f" $5::bytea[], $6::smallint[]) AS t(id, name, created, expires, secret, maxp)"
                f" RETURNING {_SESSION_COLUMNS}",
                [r.session_id for r in requests],
                [r.name for r in requests],
                [_dt(r.now) for r in requests],
                [_dt(r.expires_at) for r in requests],
                [r.creator_secret_hash for r in requests],
                [r.max_participants for r in requests],
            )
            by_id = {row["id"]: _session(row) for row in rows}
            return [by_id[r.session_id] for r in requests]

        return await self._run(job)

    async def get_session(self, session_id: uuid.UUID) -> SessionRecord | None:
        return await self._session_reads.submit(session_id)

    async def _get_sessions(self, ids: list[uuid.UUID]) -> list[SessionRecord | None]:
        async def job(con: asyncpg.Connection) -> list[SessionRecord | None]:
            rows = await con.fetch(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ANY($1::uuid[])", ids
            )
            by_id = {row["id"]: _session(row) for row in rows}
            return [by_id.get(i) for i in ids]

        return await self._run(job)

    async def join(
        self,
        *,
        session_id: uuid.UUID,
        participant_id: uuid.UUID,
        display_name: str,
        avatar_color: str,
        now: float,
    ) -> JoinOutcome:
        return await self._joins.submit(
            _JoinRequest(session_id, participant_id, display_name, avatar_color, now)
        )

    async def _join_batch(self, requests: list[_JoinRequest]) -> list[JoinOutcome]:
        """One call of ``locshare_join_many`` (migration 0002) for the whole batch."""
        now = max(r.now for r in requests)

        async def job(con: asyncpg.Connection) -> list[JoinOutcome]:
            rows = await con.fetch(
                "SELECT o_ord, o_status, o_session FROM locshare_join_many($1, $2, $3, $4, $5)",
                [r.participant_id for r in requests],
                [r.session_id for r in requests],
                [r.display_name for r in requests],
                [r.avatar_color for r in requests],
                _dt(now),
            )
            outcomes: list[JoinOutcome] = [JoinOutcome(JoinStatus.NOT_FOUND)] * len(requests)
            for row in rows:
                index = row["o_ord"] - 1
                status = JoinStatus(row["o_status"])
                record = None if status is JoinStatus.NOT_FOUND else _session(row["o_session"])
                participant = None
                if status is JoinStatus.JOINED:
                    request = requests[index]
                    participant = ParticipantRecord(
                        id=request.participant_id,
                        session_id=request.session_id,
                        display_name=request.display_name,
                        avatar_color=request.avatar_color,
                        joined_at=now,
                        last_seen=now,
                        is_active=True,
                        left_reason=None,
                    )
                outcomes[index] = JoinOutcome(status, record, participant)
            return outcomes

        return await self._run(job)

    async def leave(
        self, *, session_id: uuid.UUID, participant_id: uuid.UUID, reason: str, now: float
    ) -> bool:
        async def job(con: asyncpg.Connection) -> bool:
            return (
                await con.fetchval(_LEAVE_SQL, session_id, participant_id, reason, _dt(now))
                is not None
            )

        return await self._run(job)

    async def end_session(self, *, session_id: uuid.UUID, reason: str, now: float) -> bool:
        async def job(con: asyncpg.Connection) -> bool:
            ended = await con.fetchval(
                "UPDATE sessions SET is_active = false, ended_reason = $2, ended_at = $3"
                " WHERE id = $1 AND is_active RETURNING id",
                session_id,
                reason,
                _dt(now),
            )
            return ended is not None

        return await self._run(job)

    # --- participants -----------------------------------------------------------------
    async def get_participant(
        self, session_id: uuid.UUID, participant_id: uuid.UUID
    ) -> ParticipantRecord | None:
        found = await self._participant_reads.submit(participant_id)
        return found if found is not None and found.session_id == session_id else None

    async def _get_participants(self, ids: list[uuid.UUID]) -> list[ParticipantRecord | None]:
        async def job(con: asyncpg.Connection) -> list[ParticipantRecord | None]:
            rows = await con.fetch(
                f"SELECT {_PARTICIPANT_COLUMNS} FROM participants WHERE id = ANY($1::uuid[])", ids
            )
            by_id = {row["id"]: _participant(row) for row in rows}
            return [by_id.get(i) for i in ids]

        return await self._run(job)

    async def list_participants(self, session_id: uuid.UUID) -> list[ParticipantRecord]:
        async def job(con: asyncpg.Connection) -> list[ParticipantRecord]:
            rows = await con.fetch(
                f"SELECT {_PARTICIPANT_COLUMNS} FROM participants WHERE session_id = $1"
                " ORDER BY is_active DESC, joined_at, id",
                session_id,
            )
            return [_participant(r) for r in rows]

        return await self._run(job)

    # --- housekeeping -----------------------------------------------------------------
    async def record_activity(
        self,
        sessions: Mapping[uuid.UUID, float],
        participants: Mapping[uuid.UUID, float],
    ) -> None:
        """Persist last-activity / last-seen times in two batched statements."""
        if not sessions and not participants:
            return

        async def job(con: asyncpg.Connection) -> None:
            if sessions:
                await con.execute(
                    "UPDATE sessions s SET last_activity = GREATEST(s.last_activity, v.ts)"
                    " FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, ts)"
                    " WHERE s.id = v.id AND s.is_active",
                    list(sessions),
                    [_dt(t) for t in sessions.values()],
                )
            if participants:
                await con.execute(
                    "UPDATE participants p SET last_seen = GREATEST(p.last_seen, v.ts)"
                    " FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, ts)"
                    " WHERE p.id = v.id",
                    list(participants),
                    [_dt(t) for t in participants.values()],
                )

        await self._run(job)

    async def sweep(self, *, now: float, inactive_before: float) -> list[tuple[uuid.UUID, str]]:
        """End sessions past ``expires_at`` or idle since ``inactive_before``."""

        async def job(con: asyncpg.Connection) -> list[tuple[uuid.UUID, str]]:
            rows = await con.fetch(_SWEEP_SQL, _dt(now), _dt(inactive_before))
            return [(r["id"], r["ended_reason"]) for r in rows]

        return await self._run(job)

    async def purge_ended(self, *, ended_before: float) -> int:
        """Delete sessions (and, by cascade, their participants) that ended long ago,
        then rewrite both tables so that the deleted names leave the heap files.

        Policy: a ``DELETE`` only marks rows dead, and a plain ``VACUUM`` frees their
        space without erasing it (measured: every purged session name and an eighth of
        the participant names were still in the files after it; docs/design.md), so the
        tables are rewritten with ``VACUUM FULL`` (:meth:`_compact`).  It runs only when
        rows were deleted since the last rewrite, and at most once per
        ``compact_interval_s``: rows purged sooner after a rewrite wait for the first
        purge after the interval.  If the rewrite cannot take its lock within
        ``COMPACT_LOCK_TIMEOUT_S`` this raises :class:`StorageError` and a later purge
        tries again.
        """

        async def delete(con: asyncpg.Connection) -> int:
            status = await con.execute(_PURGE_SQL, _dt(ended_before))
            return int(status.split()[-1])

        deleted = await self._run(delete)
        if deleted:
            self._compact_pending = True
        now = trio.current_time()
        due = self._compacted_at is None or now - self._compacted_at >= self._compact_interval_s
        if self._compact_pending and due:
            await self._run(self._compact, deadline_s=COMPACT_TIMEOUT_S + self._timeout_s)
            self._compact_pending = False
            self._compacted_at = now
        return deleted

    # --- places and the route (issue 14) -------------------------------------------------
    async def add_place(self, place: PlaceRecord, *, limit: int) -> bool:
        async def job(con: asyncpg.Connection) -> bool:
            async with con.transaction():
                if await con.fetchval(_LOCK_SESSION_SQL, place.session_id) is None:
                    return False
                added = await con.fetchval(
                    _ADD_PLACE_SQL,
                    place.id,
                    place.session_id,
                    place.name,
                    place.kind,
                    place.author,
                    orjson.dumps(place.geometry).decode(),
                    place.radius_m,
                    _dt(place.created_at),
                    limit,
                )
            return added is not None

        return await self._run(job)

    async def list_places(self, session_id: uuid.UUID) -> list[PlaceRecord]:
        async def job(con: asyncpg.Connection) -> list[PlaceRecord]:
            rows = await con.fetch(
                f"SELECT {_PLACE_COLUMNS} FROM places WHERE session_id = $1"
                " ORDER BY created_at, id",
                session_id,
            )
            return [_place(r) for r in rows]

        return await self._run(job)

    async def remove_place(self, session_id: uuid.UUID, place_id: uuid.UUID) -> PlaceRecord | None:
        async def job(con: asyncpg.Connection) -> PlaceRecord | None:
            row = await con.fetchrow(
                f"DELETE FROM places WHERE id = $1 AND session_id = $2 RETURNING {_PLACE_COLUMNS}",
                place_id,
                session_id,
            )
            return None if row is None else _place(row)

        return await self._run(job)

    async def get_place(self, session_id: uuid.UUID, place_id: uuid.UUID) -> PlaceRecord | None:
        async def job(con: asyncpg.Connection) -> PlaceRecord | None:
            row = await con.fetchrow(
                f"SELECT {_PLACE_COLUMNS} FROM places WHERE id = $1 AND session_id = $2",
                place_id,
                session_id,
            )
            return None if row is None else _place(row)

        return await self._run(job)

    async def set_route(self, route: RouteRecord) -> None:
        async def job(con: asyncpg.Connection) -> None:
            await con.execute(
                "INSERT INTO routes (session_id, geometry, off_route_m, updated_at)"
                " VALUES ($1, $2::jsonb, $3, $4) ON CONFLICT (session_id) DO UPDATE"
                " SET geometry = EXCLUDED.geometry, off_route_m = EXCLUDED.off_route_m,"
                " updated_at = EXCLUDED.updated_at",
                route.session_id,
                orjson.dumps(route.geometry).decode(),
                route.off_route_m,
                _dt(route.updated_at),
            )

        await self._run(job)

    async def clear_route(self, session_id: uuid.UUID) -> bool:
        async def job(con: asyncpg.Connection) -> bool:
            status = await con.execute("DELETE FROM routes WHERE session_id = $1", session_id)
            return bool(int(status.split()[-1]))

        return await self._run(job)

    async def get_route(self, session_id: uuid.UUID) -> RouteRecord | None:
        async def job(con: asyncpg.Connection) -> RouteRecord | None:
            row = await con.fetchrow(
                "SELECT session_id, geometry, off_route_m, updated_at FROM routes"
                " WHERE session_id = $1",
                session_id,
            )
            if row is None:
                return None
            return RouteRecord(
                row["session_id"],
                orjson.loads(row["geometry"]),
                row["off_route_m"],
                row["updated_at"].timestamp(),
            )

        return await self._run(job)

    @staticmethod
    async def _compact(con: asyncpg.Connection) -> None:
        # A session setting (VACUUM cannot run inside a transaction, so not SET LOCAL):
        # reset before the connection goes back to the pool, or the connection is
        # closed so that no other statement inherits the short lock timeout.
        await con.execute(f"SET lock_timeout = {int(COMPACT_LOCK_TIMEOUT_S * 1000)}")
        try:
            await con.execute(_COMPACT_SQL, timeout=COMPACT_TIMEOUT_S)
        finally:
            try:
                await con.execute("RESET lock_timeout")
            except BaseException:
                con.terminate()
                raise

    # --- the embedded server's WAL ------------------------------------------------------
    async def rotate_wal(self, *, unless_changes: int | None = None) -> int:
        """Close the current WAL segment and checkpoint, so that every earlier segment
        (and what deleted rows left in it) is removed now, given ``wal_recycle = off``
        (see ``locshare._embedded``); return this database's count of row changes.

        Nothing is done when the count is still ``unless_changes``: no row was written
        since the last rotation, so an idle server writes no new segment.  Needs a
        superuser (``CHECKPOINT``): only for the embedded server.
        """

        async def changes(con: asyncpg.Connection) -> int:
            return int(
                await con.fetchval(
                    "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
                    " WHERE datname = current_database()"
                )
                or 0
            )

        async def job(con: asyncpg.Connection) -> int:
            count = await changes(con)
            if count != unless_changes:
                await con.execute("SELECT pg_switch_wal()")
                await con.execute("CHECKPOINT")
            return count

        return await self._run(job)


async def configure_server(
    url: str, settings: Mapping[str, str], *, timeout_s: float = 10.0
) -> None:
    """``ALTER SYSTEM SET`` each of ``settings`` and reload the configuration (embedded
    start-up; needs a superuser).  Every setting must take effect on reload: one that
    needs a restart raises :class:`StorageError` instead of silently waiting for one."""

    async def job() -> None:
        con = await asyncpg.connect(url, timeout=timeout_s)
        try:
            contexts = dict(
                await con.fetch(
                    "SELECT name, context FROM pg_settings WHERE name = any($1::text[])",
                    list(settings),
                )
            )
            for name, value in settings.items():
                if contexts.get(name) not in ("sighup", "superuser", "user"):
                    raise StorageError(f"{name} cannot be changed by a reload")
                literal = value.replace("'", "''")
                await con.execute(f"ALTER SYSTEM SET {name} = '{literal}'")
            await con.execute("SELECT pg_reload_conf()")
        finally:
            await con.close()

    async with trio_asyncio.open_loop() as loop:
        try:
            await trio_asyncio.aio_as_trio(job, loop=loop)()
        except _UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable(
                f"cannot reach the database server ({type(exc).__name__})"
            ) from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(f"database error {exc.sqlstate}: {type(exc).__name__}") from exc


async def _admin(
    url: str, name: str, action: Callable[[Any], Awaitable[None]], *, timeout_s: float
) -> None:
    """Run ``action`` (about database ``name``) on a connection of its own."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise StorageError(f"invalid database name {name!r}")

    async def job() -> None:
        con = await asyncpg.connect(url, timeout=timeout_s)
        try:
            await action(con)
        finally:
            await con.close()

    async with trio_asyncio.open_loop() as loop:
        try:
            await trio_asyncio.aio_as_trio(job, loop=loop)()
        except _UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable(
                f"cannot reach the database server ({type(exc).__name__})"
            ) from exc


async def ensure_database(url: str, name: str, *, timeout_s: float = 10.0) -> None:
    """Create database ``name`` on the server at ``url`` unless it exists (embedded start-up)."""

    async def create(con: Any) -> None:
        # Checked first: CREATE DATABASE needs a privilege a user of an existing one may lack.
        if await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        with suppress(asyncpg.exceptions.DuplicateDatabaseError):
            await con.execute(f'CREATE DATABASE "{name}"')  # another process may win: fine

    await _admin(url, name, create, timeout_s=timeout_s)


async def drop_database(url: str, name: str, *, timeout_s: float = 10.0) -> None:
    """Drop database ``name`` (test runs against an external server clean up with it)."""

    async def drop(con: Any) -> None:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    await _admin(url, name, drop, timeout_s=timeout_s)
