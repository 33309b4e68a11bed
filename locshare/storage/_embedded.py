"""The embedded PostgreSQL: a real server started by ``pgserver`` in the data directory.

``pgserver`` ships PostgreSQL binaries as a wheel and starts ``postgres`` listening on
a Unix socket only (no TCP port), so nothing is exposed on the network.  Start-up is
blocking (``pg_ctl -w``), so it runs in a worker thread.

Lifecycle: the server is stopped by ``pgserver``'s exit hook when the locshare process
exits normally.  After a SIGKILL the postmaster keeps running; the next start finds it
through ``postmaster.pid`` and reuses it, which is what crash recovery wants.
"""

from __future__ import annotations

import json
import logging
import signal
import warnings
from pathlib import Path
from typing import Any

import psutil
import trio

from ..errors import StorageUnavailable
from ._postgres import ensure_database

log = logging.getLogger("locshare.embedded")

DATABASE_NAME = "locshare"
POSTMASTER_STOP_TIMEOUT_S = 30


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops PostgreSQL when the *last* process holding a handle exits, and
    keeps those processes' pids in ``.handle_pids.json``.  A locshare killed with
    SIGKILL never removes its pid, so without this the server would never be stopped
    again after a crash.  Dead pids are dropped before we take our handle."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(pids, list):
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))


def _stop_postmaster_of_another_install(pgdata: Path, bin_path: Path) -> None:
    """A postmaster left running by a killed locshare is normally reused (crash
    recovery).  But the one-file binary unpacks PostgreSQL afresh at every start and
    deletes the copy at exit, so a server started by an earlier run of it runs from
    deleted files and cannot load ``$libdir/plpgsql``: stop such a server (fast
    shutdown) so that a fresh one starts from this installation."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        if process.name() != "postgres" or str(pgdata) not in process.cmdline():
            return  # the pid was reused by something else
        program = Path(process.exe())  # psutil drops a " (deleted)" suffix
    except (OSError, ValueError, psutil.Error):
        return
    if program == bin_path / "postgres" and program.exists():
        return
    log.warning(
        "stopping a PostgreSQL left running by an earlier locshare", extra={"program": str(program)}
    )
    process.send_signal(signal.SIGINT)
    process.wait(timeout=POSTMASTER_STOP_TIMEOUT_S)


def _start_blocking(data_dir: str | Path) -> Any:
    pgdata = Path(data_dir).expanduser().resolve() / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    log.info("starting embedded PostgreSQL", extra={"pgdata": str(pgdata)})
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver._commands import POSTGRES_BIN_PATH

        try:
            _stop_postmaster_of_another_install(pgdata, Path(POSTGRES_BIN_PATH))
            return pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        except Exception as exc:
            raise StorageUnavailable(
                f"could not start the embedded PostgreSQL in {pgdata} ({type(exc).__name__}: {exc}); "
                f"see {pgdata / 'log'}"
            ) from exc


async def start_embedded(data_dir: str | Path) -> tuple[str, Any]:
    """Start (or reuse) the embedded server; return ``(database_url, handle)``.

    Keep ``handle`` alive for as long as the database is in use.
    """
    server = await trio.to_thread.run_sync(_start_blocking, data_dir)
    await ensure_database(server.get_uri(), DATABASE_NAME)
    return server.get_uri(DATABASE_NAME), server
