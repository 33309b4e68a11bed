"""The embedded PostgreSQL in process: its WAL (a purged name does not linger in
``pg_wal``) and its supervisor's give-up path.  The kill-and-restart path through the
command line is in tests/security/test_embedded_db_killed.py.

How long it lingers without the rotation is measured by ``python -m benchmarks.wal_linger``
(docs/reliability.md, "Where deleted names can linger").
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from locshare.errors import EmbeddedDatabaseLost
from locshare.proto._restart import RestartPolicy
from locshare.runtime._stats import HubStats
from locshare.storage._embedded import EMBEDDED_WAL_SETTINGS, EmbeddedSupervisor, start_embedded
from locshare.storage._postgres import PostgresStorage


@pytest.fixture
def directory() -> Iterator[Path]:
    """Not pytest's ``tmp_path``: PostgreSQL runs as another user under root, and a
    pytest starting meanwhile (another run) makes its temp root private again."""
    path = Path(tempfile.mkdtemp(prefix="locshare-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wal_files(pg_wal: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in pg_wal.iterdir() if f.is_file()}


def holding(pg_wal: Path, needle: bytes) -> list[str]:
    return [name for name, data in wal_files(pg_wal).items() if needle in data]


async def test_a_purged_name_leaves_the_wal_at_the_next_rotation(directory: Path) -> None:
    with trio.fail_after(120):
        url, server = await start_embedded(directory)
        try:
            pg_wal = Path(server.pgdata) / "pg_wal"
            async with PostgresStorage.open(url) as storage:

                async def fetch(statement: str, *args: Any) -> Any:
                    async def job(con: Any) -> Any:
                        return await con.fetch(statement, *args)

                    return await storage._run(job)

                # The settings took effect on reload: nothing waits for a restart.
                rows = await fetch(
                    "SELECT name, current_setting(name) AS value, pending_restart"
                    " FROM pg_settings WHERE name = any($1::text[])",
                    list(EMBEDDED_WAL_SETTINGS),
                )
                shown = {r["name"]: (r["value"], r["pending_restart"]) for r in rows}
                assert shown == {
                    "wal_recycle": ("off", False),
                    "min_wal_size": ("32MB", False),
                    "max_wal_size": ("64MB", False),
                    "checkpoint_timeout": ("5min", False),
                }

                await storage.migrate()
                name = f"Zelda-{uuid.uuid4().hex}"
                session_id, now = uuid.uuid4(), time.time()
                await storage.create_session(
                    session_id=session_id,
                    name="Convoy",
                    now=now,
                    expires_at=now + 3600,
                    creator_secret_hash=hashlib.sha256(b"x").digest(),
                    max_participants=10,
                )
                await storage.join(
                    session_id=session_id,
                    participant_id=uuid.uuid4(),
                    display_name=name,
                    avatar_color="#112233",
                    now=now,
                )
                await storage.end_session(session_id=session_id, reason="ended", now=now)
                assert await storage.purge_ended(ended_before=now + 1) == 1
                await fetch("VACUUM participants")
                # A checkpoint alone does not remove the current segment: the test can fail.
                await fetch("CHECKPOINT")
                assert holding(pg_wal, name.encode())

                changes = await storage.rotate_wal()
                assert holding(pg_wal, name.encode()) == []

                # With no row changed since, a rotation writes no new segment.  (Row
                # counts reach the statistics within seconds, so it may take a few.)
                for _ in range(30):
                    before = sorted(wal_files(pg_wal))
                    last, changes = changes, await storage.rotate_wal(unless_changes=changes)
                    if changes == last:
                        assert sorted(wal_files(pg_wal)) == before
                        break
                    await trio.sleep(1.0)
                else:
                    raise AssertionError("the row count never settled")
        finally:
            await trio.to_thread.run_sync(server.cleanup)


async def test_a_postmaster_that_keeps_dying_ends_supervision(directory: Path) -> None:
    """In process, with a real server: one restart allowed; the restarted postmaster
    dies again at once (Rule 3: no stable uptime), so the supervisor gives up, asks for
    the shutdown and leaves pgserver nothing dead to stop at exit."""
    with trio.fail_after(120):
        url, server = await start_embedded(directory)
        try:
            async with PostgresStorage.open(url, timeout_s=1.0) as storage:
                stats = HubStats()
                lost = trio.Event()
                supervisor = EmbeddedSupervisor(
                    server,
                    storage,
                    on_lost=lost.set,
                    on_restart=stats.count_db_restart,
                    policy=RestartPolicy(max_attempts=1),
                )
                async with trio.open_nursery() as nursery:
                    await nursery.start(supervisor.run)
                    first = server.get_pid()
                    os.kill(first, signal.SIGKILL)
                    while stats.embedded_db_restarts == 0:
                        await trio.sleep(0.05)
                    assert supervisor.state == "running"
                    second = server.get_pid()
                    assert second != first
                    await storage.ping()  # the pool works against the new server
                    os.kill(second, signal.SIGKILL)
                    await lost.wait()
                assert supervisor.state == "lost"
                with pytest.raises(
                    EmbeddedDatabaseLost, match="died within 60 s of each of 1 restarts"
                ):
                    supervisor.raise_if_lost()
                assert server._postmaster_info is None  # nothing for the exit hook to stop
        finally:
            await trio.to_thread.run_sync(server.cleanup)
