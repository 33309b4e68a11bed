"""Where a deleted name lingers in the embedded PostgreSQL's WAL, and until when.

    python -m benchmarks.wal_linger [--defaults] [--max-filler-mb 256]

Starts an embedded PostgreSQL in a temporary directory, with locshare's WAL settings
(``locshare.storage._embedded.EMBEDDED_WAL_SETTINGS``) or, with ``--defaults``, PostgreSQL's.
Through the storage adapter it creates a session with one participant whose name is
unique, ends the session, purges it (the retention purge's statement) and runs VACUUM;
then it reports which files under ``pg_wal`` contain the name:

1. right after the purge and VACUUM;
2. after a checkpoint (what ``checkpoint_timeout`` brings);
3. after one rotation (``pg_switch_wal()`` + ``CHECKPOINT``, what locshare's embedded
   supervisor runs every ``WAL_ROTATE_INTERVAL_S``), and after a second one.

Then, with a second unique name and no rotation, how much WAL has to be written (1 MB
filler messages, a checkpoint after every 16 MB as timed checkpoints would do) before
the name leaves ``pg_wal`` on its own.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import trio

from locshare.storage._embedded import DATABASE_NAME, EMBEDDED_WAL_SETTINGS, _start_blocking
from locshare.storage._postgres import PostgresStorage, configure_server, ensure_database

SEGMENT_MB = 16
FILLER_MB = 1


def files_containing(pg_wal: Path, needle: bytes) -> list[str]:
    return sorted(f.name for f in pg_wal.iterdir() if f.is_file() and needle in f.read_bytes())


def segments(pg_wal: Path) -> list[str]:
    return sorted(f.name for f in pg_wal.iterdir() if f.is_file() and len(f.name) == 24)


async def sql(storage: PostgresStorage, statement: str) -> Any:
    async def job(con: Any) -> Any:
        return await con.fetchval(statement)

    return await storage._run(job)


async def delete_a_participant(storage: PostgresStorage, name: str) -> None:
    """A participant named ``name`` joins, the session ends and is purged, VACUUM."""
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
    await sql(storage, "CHECKPOINT")  # the deletes below write full-page images, as in life
    await storage.end_session(session_id=session_id, reason="ended", now=now)
    assert await storage.purge_ended(ended_before=now + 1) == 1
    await sql(storage, "VACUUM participants")
    await sql(storage, "VACUUM sessions")


async def measure(defaults: bool, max_filler_mb: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="locshare-wal-"))
    try:
        server = await trio.to_thread.run_sync(_start_blocking, directory)
        await ensure_database(server.get_uri(), DATABASE_NAME)
        if not defaults:
            await configure_server(server.get_uri(), EMBEDDED_WAL_SETTINGS)
        pg_wal = Path(server.pgdata) / "pg_wal"
        async with PostgresStorage.open(server.get_uri(DATABASE_NAME)) as storage:
            await storage.migrate()
            shown = {
                n: await sql(storage, f"SELECT current_setting('{n}')")
                for n in EMBEDDED_WAL_SETTINGS
            }
            print("settings:", "PostgreSQL defaults" if defaults else "locshare's", shown)

            name = f"Zelda-{uuid.uuid4().hex}"
            needle = name.encode()
            await delete_a_participant(storage, name)
            print(
                f"1. after purge + VACUUM:   in {files_containing(pg_wal, needle)} of {segments(pg_wal)}"
            )
            await sql(storage, "CHECKPOINT")
            print(
                f"2. after a checkpoint:     in {files_containing(pg_wal, needle)} of {segments(pg_wal)}"
            )
            for n in (1, 2):
                started = time.perf_counter()
                await storage.rotate_wal()
                took_ms = (time.perf_counter() - started) * 1000
                print(
                    f"3. after rotation {n} ({took_ms:.0f} ms): in {files_containing(pg_wal, needle)}"
                    f" of {segments(pg_wal)}"
                )

            name = f"Zelda-{uuid.uuid4().hex}"
            needle = name.encode()
            await delete_a_participant(storage, name)
            start_lsn = await sql(storage, "SELECT pg_current_wal_insert_lsn()::text")
            written = 0
            filler = "x" * (FILLER_MB * 1024 * 1024)
            while files_containing(pg_wal, needle) and written < max_filler_mb:
                await sql(
                    storage, f"SELECT pg_logical_emit_message(false, 'filler', '{filler}')::text"
                )
                written += FILLER_MB
                if written % SEGMENT_MB == 0:
                    await sql(storage, "CHECKPOINT")
            wal_mb = await sql(
                storage,
                f"SELECT round((pg_current_wal_insert_lsn() - '{start_lsn}'::pg_lsn) / 1048576.0, 1)::text",
            )
            still = files_containing(pg_wal, needle)
            verdict = f"still in {still}" if still else "gone"
            print(
                f"4. without rotation: {verdict} after {wal_mb} MB of WAL"
                f" (a checkpoint every {SEGMENT_MB} MB)"
            )
        server.cleanup()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--defaults", action="store_true", help="PostgreSQL's WAL settings")
    parser.add_argument("--max-filler-mb", type=int, default=256)
    args = parser.parse_args()
    trio.run(measure, args.defaults, args.max_filler_mb)


if __name__ == "__main__":
    main()
