"""The storage adapter against a real PostgreSQL: migrations, atomicity, privacy."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest
import trio

from locshare.errors import StorageError, StorageUnavailable
from locshare.storage._model import JoinStatus, PlaceRecord, RouteRecord
from locshare.storage._postgres import PostgresStorage, migrations
from tests import pgfiles


async def test_migrations_apply_once_and_are_recorded(fresh_database: str) -> None:
    async with PostgresStorage.open(fresh_database) as storage:
        first = await storage.migrate()
        second = await storage.migrate()
        assert first == [v for v, _, _ in migrations()] == [1, 2, 3]
        assert second == []
        assert await storage.applied_migrations() == [1, 2, 3]


async def test_concurrent_migrations_apply_once(fresh_database: str) -> None:
    results: list[list[int]] = []

    async def migrate() -> None:
        async with PostgresStorage.open(fresh_database) as storage:
            results.append(await storage.migrate())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(migrate)
    assert sorted(map(tuple, results)) == [(), (), (1, 2, 3)]


async def test_no_location_column_anywhere(storage: PostgresStorage) -> None:
    async def job(con):  # type: ignore[no-untyped-def]
        return await con.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        )

    columns = await storage._run(job)
    names = {row["column_name"] for row in columns}
    assert {
        "id",
        "name",
        "expires_at",
        "creator_secret_hash",
        "display_name",
        "avatar_color",
    } <= names
    for forbidden in (
        "lat",
        "lng",
        "latitude",
        "longitude",
        "location",
        "accuracy",
        "heading",
        "speed",
    ):
        assert not any(forbidden in name for name in names), forbidden


async def test_a_changed_migration_is_refused(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PostgresStorage.open(fresh_database) as storage:
        await storage.migrate()
        original = migrations()
        tampered = [(v, n, sql + "\n-- edited" if v == 1 else sql) for v, n, sql in original]
        monkeypatch.setattr("locshare.storage._postgres.migrations", lambda: tampered)
        with pytest.raises(StorageError, match="changed after it was applied"):
            await storage.migrate()


async def test_join_outcomes_and_exact_capacity(storage: PostgresStorage) -> None:
    now = time.time()
    sid = uuid.uuid4()
    await storage.create_session(
        session_id=sid,
        name="cap",
        now=now,
        expires_at=now + 3600,
        creator_secret_hash=b"x",
        max_participants=3,
    )
    outcomes = []

    async def join(i: int) -> None:
        outcomes.append(
            await storage.join(
                session_id=sid,
                participant_id=uuid.uuid4(),
                display_name=f"p{i}",
                avatar_color="#000000",
                now=now,
            )
        )

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(join, i)
    statuses = [o.status for o in outcomes]
    assert statuses.count(JoinStatus.JOINED) == 3
    assert statuses.count(JoinStatus.FULL) == 7
    record = await storage.get_session(sid)
    assert record is not None and record.participant_count == 3
    unknown = await storage.join(
        session_id=uuid.uuid4(),
        participant_id=uuid.uuid4(),
        display_name="x",
        avatar_color="#000000",
        now=now,
    )
    assert unknown.status is JoinStatus.NOT_FOUND
    await storage.end_session(session_id=sid, reason="ended", now=now)
    ended = await storage.join(
        session_id=sid,
        participant_id=uuid.uuid4(),
        display_name="x",
        avatar_color="#000000",
        now=now,
    )
    assert ended.status is JoinStatus.ENDED


async def test_leave_frees_a_place_exactly_once(storage: PostgresStorage) -> None:
    now = time.time()
    sid, pid = uuid.uuid4(), uuid.uuid4()
    await storage.create_session(
        session_id=sid,
        name="l",
        now=now,
        expires_at=now + 3600,
        creator_secret_hash=b"x",
        max_participants=2,
    )
    await storage.join(
        session_id=sid, participant_id=pid, display_name="a", avatar_color="#000000", now=now
    )
    results = []

    async def leave() -> None:
        results.append(
            await storage.leave(session_id=sid, participant_id=pid, reason="left", now=now)
        )

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(leave)
    assert results.count(True) == 1
    record = await storage.get_session(sid)
    assert record is not None and record.participant_count == 0


async def test_activity_is_persisted_in_batches_and_sweep_uses_it(storage: PostgresStorage) -> None:
    now = time.time()
    live, idle = uuid.uuid4(), uuid.uuid4()
    for sid in (live, idle):
        await storage.create_session(
            session_id=sid,
            name="s",
            now=now,
            expires_at=now + 86400,
            creator_secret_hash=b"x",
            max_participants=2,
        )
    await storage.record_activity({live: now + 7000}, {})
    ended = dict(await storage.sweep(now=now + 7200, inactive_before=now + 7200 - 3600))
    assert ended.get(idle) == "inactive"
    assert live not in ended


async def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StorageUnavailable, match="cannot connect"):
        async with PostgresStorage.open("postgresql://nobody@127.0.0.1:9/none", timeout_s=1.0):
            pass


async def test_purged_names_leave_the_table_files(storage: PostgresStorage) -> None:
    """After purge_ended, the names of the deleted rows are in no heap file of the
    tables: not in the files the tables have now, nor in the ones they had before."""
    with trio.fail_after(60):
        now = time.time()
        sid, pid = uuid.uuid4(), uuid.uuid4()
        session_name = f"purged-session-{secrets.token_hex(8)}"
        display_name = f"purged-person-{secrets.token_hex(8)}"
        kept_name = f"kept-person-{secrets.token_hex(8)}"
        kept_sid = uuid.uuid4()
        for session_id, name in ((sid, session_name), (kept_sid, "kept")):
            await storage.create_session(
                session_id=session_id,
                name=name,
                now=now - 10,
                expires_at=now + 3600,
                creator_secret_hash=b"x",
                max_participants=5,
            )
        for session_id, participant_id, name in (
            (sid, pid, display_name),
            (kept_sid, uuid.uuid4(), kept_name),
        ):
            await storage.join(
                session_id=session_id,
                participant_id=participant_id,
                display_name=name,
                avatar_color="#000000",
                now=now - 10,
            )
        await storage.end_session(session_id=sid, reason="ended", now=now - 5)
        before = await pgfiles.table_files(storage)
        await pgfiles.checkpoint(storage)
        # The check can see names: before the purge, both are on disk.
        for name in (session_name, display_name):
            assert pgfiles.files_containing(before, name.encode()), name
        assert await storage.purge_ended(ended_before=now) >= 1
        await pgfiles.checkpoint(storage)
        after = await pgfiles.table_files(storage)
        for name in (session_name, display_name):
            assert pgfiles.files_containing(before + after, name.encode()) == [], name
        # Live rows are untouched.
        assert pgfiles.files_containing(after, kept_name.encode())
        assert await storage.get_participant(sid, pid) is None
        assert [p.display_name for p in await storage.list_participants(kept_sid)] == [kept_name]


async def test_the_rewrite_runs_only_after_deletions_and_is_paced(database_url: str) -> None:
    """No rows deleted: no VACUUM FULL (the tables keep their files).  Rows deleted
    within the interval after a rewrite: they wait for the first purge after it."""
    with trio.fail_after(60):
        async with PostgresStorage.open(database_url, compact_interval_s=3600) as storage:

            async def file_ids(con):  # type: ignore[no-untyped-def]
                return [
                    await con.fetchval("SELECT pg_relation_filenode($1::regclass)", t)
                    for t in pgfiles.NAME_TABLES
                ]

            async def ended_session() -> uuid.UUID:
                now = time.time()
                sid = uuid.uuid4()
                await storage.create_session(
                    session_id=sid,
                    name="gone",
                    now=now - 10,
                    expires_at=now + 3600,
                    creator_secret_hash=b"x",
                    max_participants=2,
                )
                await storage.end_session(session_id=sid, reason="ended", now=now - 5)
                return sid

            await ended_session()
            first = await storage._run(file_ids)
            assert await storage.purge_ended(ended_before=time.time()) >= 1
            rewritten = await storage._run(file_ids)
            assert all(a != b for a, b in zip(first, rewritten, strict=True))
            assert await storage.purge_ended(ended_before=time.time()) == 0
            assert await storage._run(file_ids) == rewritten  # nothing deleted: no rewrite
            await ended_session()
            assert await storage.purge_ended(ended_before=time.time()) == 1
            assert await storage._run(file_ids) == rewritten  # within the interval: later
            storage._compact_interval_s = 0.0  # the interval has passed
            assert await storage.purge_ended(ended_before=time.time()) == 0
            assert await storage._run(file_ids) != rewritten  # the pending rewrite ran


async def test_places_and_the_route_are_session_data(storage: PostgresStorage) -> None:
    """Stored, limited, removed, and gone with their session (names and shapes leave
    the table files like participants' names)."""
    with trio.fail_after(60):
        now = float(int(time.time()))  # whole seconds: timestamptz keeps microseconds
        sid = uuid.uuid4()
        await storage.create_session(
            session_id=sid,
            name="with places",
            now=now - 10,
            expires_at=now + 3600,
            creator_secret_hash=b"x",
            max_participants=5,
        )
        secret_name = f"place-{secrets.token_hex(8)}"
        places = [
            PlaceRecord(
                uuid.uuid4(),
                sid,
                secret_name if i == 0 else f"P{i}",
                "meet",
                None,
                {"type": "Point", "coordinates": [7.0, 45.0]},
                50.0,
                now - i,
            )
            for i in range(3)
        ]
        for place in places:
            assert await storage.add_place(place, limit=2) is (place is not places[2])
        assert (
            await storage.add_place(
                PlaceRecord(uuid.uuid4(), uuid.uuid4(), "x", "poi", None, {}, None, now), limit=20
            )
            is False
        )  # no such session
        listed = await storage.list_places(sid)
        assert [p.name for p in listed] == ["P1", secret_name]  # oldest first
        assert listed[1] == places[0]
        assert await storage.get_place(sid, places[1].id) == places[1]
        assert await storage.get_place(uuid.uuid4(), places[1].id) is None
        assert await storage.remove_place(uuid.uuid4(), places[1].id) is None
        assert await storage.remove_place(sid, places[1].id) == places[1]
        assert await storage.remove_place(sid, places[1].id) is None
        line = {"type": "LineString", "coordinates": [[7.0, 45.0], [7.1, 45.1]]}
        await storage.set_route(RouteRecord(sid, line, 200.0, now))
        await storage.set_route(RouteRecord(sid, line, 350.0, now + 1))
        route = await storage.get_route(sid)
        assert route is not None and route.off_route_m == 350.0 and route.geometry == line
        assert abs(route.updated_at - (now + 1)) < 1e-3
        assert await storage.clear_route(sid) is True
        assert await storage.clear_route(sid) is False
        assert await storage.get_route(sid) is None
        await storage.set_route(RouteRecord(sid, line, 200.0, now))
        await storage.end_session(session_id=sid, reason="ended", now=now - 5)
        before = await pgfiles.table_files(storage)
        await pgfiles.checkpoint(storage)
        assert pgfiles.files_containing(before, secret_name.encode())
        assert await storage.purge_ended(ended_before=now) >= 1
        await pgfiles.checkpoint(storage)
        after = await pgfiles.table_files(storage)
        assert pgfiles.files_containing(before + after, secret_name.encode()) == []
        assert await storage.list_places(sid) == []
        assert await storage.get_route(sid) is None
