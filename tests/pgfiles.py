"""Reading PostgreSQL's table files from disk: do deleted names really leave them?

Works when the database server runs on this machine with a data directory this process
may read, and the test user may ``CHECKPOINT`` (the embedded test server); otherwise
:func:`table_files` skips the test with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from locshare.storage._postgres import PostgresStorage

NAME_TABLES = ("sessions", "participants", "places", "routes")


async def checkpoint(storage: PostgresStorage) -> None:
    """Write every dirty page to the files, so that the files show the current state."""

    async def job(con: Any) -> None:
        await con.execute("CHECKPOINT")

    await storage._run(job)


async def table_files(storage: PostgresStorage) -> list[Path]:
    """The heap files (every segment of the main fork) of the tables holding names."""

    async def job(con: Any) -> tuple[str, list[str], bool]:
        directory = await con.fetchval("SHOW data_directory")
        paths = [
            await con.fetchval("SELECT pg_relation_filepath($1::regclass)", table)
            for table in NAME_TABLES
        ]
        may_checkpoint = await con.fetchval(
            "SELECT rolsuper OR EXISTS (SELECT 1 FROM pg_auth_members m"
            " JOIN pg_roles g ON g.oid = m.roleid"
            " WHERE g.rolname = 'pg_checkpoint' AND m.member = r.oid)"
            " FROM pg_roles r WHERE r.rolname = current_user"
        )
        return directory, paths, bool(may_checkpoint)

    directory, relative, may_checkpoint = await storage._run(job)
    data_dir = Path(directory)
    if not (data_dir.is_dir() and os.access(data_dir, os.R_OK | os.X_OK)):
        pytest.skip(f"the database's data directory {directory} is not readable here (external?)")
    if not may_checkpoint:
        pytest.skip("the test user may not CHECKPOINT, so the files may lag behind")
    files: list[Path] = []
    for rel in relative:
        main = data_dir / rel
        files += [main, *main.parent.glob(main.name + ".[0-9]*")]
    return files


def files_containing(files: list[Path], needle: bytes) -> list[Path]:
    """The files (that still exist) whose bytes contain ``needle``."""
    found = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # a rewritten table's old file, already removed
        if needle in data:
            found.append(path)
    return found
