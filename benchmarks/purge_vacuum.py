"""Do purged names leave PostgreSQL's heap files, and what does it cost?

    python -m benchmarks.purge_vacuum [--sessions 10000] [--per-session 10] [--purge 0.1]

Against an embedded PostgreSQL (pgserver) in a temporary directory: ``--sessions``
sessions with ``--per-session`` participants each, joined in random order (so the
participants of one session are spread over the table, as when sessions overlap in
time) and each join updating its session's row (as ``locshare_join_many`` does).  A
fraction ``--purge`` of the sessions is ended long ago and purged with the statement
of ``PostgresStorage.purge_ended``; then the heap files of ``sessions`` and
``participants`` are read from disk (after a ``CHECKPOINT``) and searched for the
purged names, after (a) the ``DELETE`` alone, (b) a plain ``VACUUM`` (skipped with
``--full-only``), (c) ``VACUUM FULL`` (what ``purge_ended`` runs).  Reported: how many
purged names are still in the files at each step, the wall time of each statement, and
how long a point read on another connection waited during the ``VACUUM FULL`` (its
ACCESS EXCLUSIVE lock).
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

from locshare.storage._postgres import _COMPACT_SQL, _PURGE_SQL, PostgresStorage, ensure_database


def heap_bytes(data_dir: Path, relative: str) -> bytes:
    """The main fork's segments of one relation (``16384``, ``16384.1``, ...)."""
    path = data_dir / relative
    segments = [path, *sorted(path.parent.glob(path.name + ".*"))]
    return b"".join(p.read_bytes() for p in segments)


async def remaining(storage: PostgresStorage, names: dict[str, list[bytes]]) -> dict[str, int]:
    async def job(con: Any) -> tuple[str, dict[str, str]]:
        await con.execute("CHECKPOINT")  # the vacuumed pages reach the files
        paths = {
            t: await con.fetchval("SELECT pg_relation_filepath($1::regclass)", t)
            for t in ("sessions", "participants")
        }
        return await con.fetchval("SHOW data_directory"), paths

    data_dir, paths = await storage._run(job)
    found: dict[str, int] = {}
    for table, relative in paths.items():
        blob = heap_bytes(Path(data_dir), relative)
        present = set(re.findall(rb"GONE-S[0-9]+-[0-9A-F]+-p[0-9]+|gone-s[0-9]+-[0-9a-f]+", blob))
        found[table] = len(present.intersection(names[table]))
    return found


async def timed(storage: PostgresStorage, sql: str) -> float:
    async def job(con: Any) -> float:
        start = time.perf_counter()
        await con.execute(sql)
        return time.perf_counter() - start

    return await storage._run(job)


async def run(args: argparse.Namespace, url: str) -> None:
    async with PostgresStorage.open(url, timeout_s=300) as storage:
        await storage.migrate()
        n_purged = int(args.sessions * args.purge)
        tag = secrets.token_hex(3)

        async def populate(con: Any) -> None:
            await con.execute(
                """
                INSERT INTO sessions (id, name, created_at, expires_at, creator_secret_hash,
                                      max_participants, last_activity)
                SELECT gen_random_uuid(), format('%s-s%s-%s', CASE WHEN g <= $2 THEN 'gone'
                       ELSE 'kept' END, g, $3::text), now() - interval '3 days', now() + interval '1 day',
                       '\\x00', 50, now() - interval '3 days'
                  FROM generate_series(1, $1) g
                """,
                args.sessions,
                n_purged,
                tag,
            )
            # One join at a time in random order: each one updates its session's row.
            per_session = int(args.per_session)
            await con.execute(
                f"""
                DO $$
                DECLARE r record;
                BEGIN
                  FOR r IN SELECT s.id, s.name, k FROM sessions s,
                           generate_series(1, {per_session}) k ORDER BY random()
                  LOOP
                    UPDATE sessions SET participant_count = participant_count + 1
                     WHERE id = r.id;
                    INSERT INTO participants (id, session_id, display_name, avatar_color,
                                              joined_at, last_seen)
                    VALUES (gen_random_uuid(), r.id, upper(r.name) || '-p' || r.k, '#E6194B',
                            now(), now());
                  END LOOP;
                END $$
                """
            )
            await con.execute("VACUUM ANALYZE sessions, participants")  # as autovacuum would
            await con.execute(
                "UPDATE sessions SET is_active = false, ended_reason = 'ended',"
                " ended_at = now() - interval '2 days' WHERE name LIKE 'gone-%'"
            )

        start = time.perf_counter()
        await storage._run(populate)
        print(f"populated in {time.perf_counter() - start:.1f} s")

        async def gone_names(con: Any) -> dict[str, list[bytes]]:
            sessions = await con.fetch("SELECT name FROM sessions WHERE name LIKE 'gone-%'")
            participants = await con.fetch(
                "SELECT display_name FROM participants WHERE display_name LIKE 'GONE-%'"
            )
            return {
                "sessions": [r[0].encode() for r in sessions],
                "participants": [r[0].encode() for r in participants],
            }

        names = await storage._run(gone_names)

        async def sizes(con: Any) -> str:
            row = await con.fetchrow(
                "SELECT pg_relation_size('sessions') s, pg_relation_size('participants') p"
            )
            return f"sessions {row['s'] / 2**20:.1f} MiB, participants {row['p'] / 2**20:.1f} MiB"

        print(
            f"{args.sessions} sessions, {args.sessions * args.per_session} participants;"
            f" {await storage._run(sizes)}; {sum(map(len, names.values()))} names to purge"
        )
        print(f"before purge: names in the files {await remaining(storage, names)}")

        async def delete(con: Any) -> tuple[str, float]:
            start = time.perf_counter()
            status = await con.execute(_PURGE_SQL, datetime.now(UTC) - timedelta(days=1))
            return status, time.perf_counter() - start

        status, took = await storage._run(delete)
        print(
            f"{status} (the purge statement): {took:.3f} s;"
            f" names in the files {await remaining(storage, names)}"
        )
        if not args.full_only:
            took = await timed(storage, "VACUUM sessions, participants")
            print(
                f"VACUUM: {took:.3f} s; names in the files {await remaining(storage, names)}"
                f"; {await storage._run(sizes)}"
            )
        took, waited = await with_reader(storage, _COMPACT_SQL)
        print(
            f"VACUUM FULL: {took:.3f} s (a concurrent point read waited up to {waited:.3f} s);"
            f" names in the files {await remaining(storage, names)}; {await storage._run(sizes)}"
        )
        took, waited = await with_reader(storage, _COMPACT_SQL)
        print(f"VACUUM FULL again (nothing to remove): {took:.3f} s (reads waited {waited:.3f} s)")


async def with_reader(storage: PostgresStorage, sql: str) -> tuple[float, float]:
    """Time ``sql`` while another connection reads one participant every 5 ms."""

    async def read(con: Any) -> float:
        start = time.perf_counter()
        await con.fetchval("SELECT display_name FROM participants LIMIT 1")
        return time.perf_counter() - start

    longest = 0.0
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            nonlocal longest
            while True:
                longest = max(longest, await storage._run(read))
                await trio.sleep(0.005)

        nursery.start_soon(reader)
        await trio.sleep(0.05)
        took = await timed(storage, sql)
        nursery.cancel_scope.cancel()
    return took, longest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.purge_vacuum")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--per-session", type=int, default=10)
    parser.add_argument("--purge", type=float, default=0.1, help="fraction of sessions purged")
    parser.add_argument(
        "--full-only", action="store_true", help="VACUUM FULL right after the purge"
    )
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="locshare-vacuum-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        handle = pgserver.get_server(directory / "pg", cleanup_mode="stop")
    try:
        trio.run(ensure_database, handle.get_uri("postgres"), "vacuum_bench")
        url = handle.get_uri("vacuum_bench")
        trio.run(run, args, url)
    finally:
        handle.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
