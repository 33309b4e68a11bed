"""The embedded PostgreSQL: a real server started by ``pgserver`` in the data directory.

``pgserver`` ships PostgreSQL binaries as a wheel and starts ``postgres`` listening on
a Unix socket only (no TCP port), so nothing is exposed on the network.  Start-up is
blocking (``pg_ctl -w``), so it runs in a worker thread.

Lifecycle: the server is stopped by ``pgserver``'s exit hook when the locshare process
exits normally.  After a SIGKILL of locshare the postmaster keeps running; the next
start finds it through ``postmaster.pid`` and reuses it, which is what crash recovery
wants.

Supervision (:class:`EmbeddedSupervisor`): when the postmaster dies while locshare
runs, it is restarted in the same process, on the same data directory and Unix socket
(so the storage pool's URL stays valid), with the backoff and give-up rule of
:mod:`locshare._restart`.  If it cannot be brought back, the server shuts down
gracefully and :class:`~locshare.errors.EmbeddedDatabaseLost` makes the process exit
with status 1, so that systemd or the container runtime restarts the whole thing.

WAL (:data:`EMBEDDED_WAL_SETTINGS`, :meth:`EmbeddedSupervisor.rotate_wal_periodically`):
rows deleted by the retention purge also live in the write-ahead log.  Old segments
are deleted rather than recycled (a recycled segment keeps its old bytes under a new
name), and every ``WAL_ROTATE_INTERVAL_S`` the current segment is closed and a
checkpoint deletes the older ones, if any row changed since the last rotation.
Measured in docs/reliability.md ("Where deleted names can linger").
"""

from __future__ import annotations

import json
import logging
import os
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import psutil
import trio

from ..errors import EmbeddedDatabaseLost, StorageError, StorageUnavailable
from ..proto._restart import RestartPolicy
from ._postgres import configure_server, ensure_database

log = logging.getLogger("locshare.embedded")

DATABASE_NAME = "locshare"
POSTMASTER_STOP_TIMEOUT_S = 30
# Only where pidfd_open(2) is missing (not Linux): how often the postmaster's pid is polled.
POSTMASTER_POLL_INTERVAL_S = 0.5
# After a restart, pings that let the storage pool replace its dead connections at once.
READY_PING_INTERVAL_S = 0.2
READY_PINGS_BUDGET_S = 5.0
# How much of the end of the server log is searched for the reason a start failed.
LOG_TAIL_BYTES = 65_536
FAILURE_DETAIL_MAX_CHARS = 300

# Applied with ALTER SYSTEM + pg_reload_conf() at every embedded start (each setting's
# context allows a reload; configure_server checks it).  Why each value:
#   wal_recycle = off     an old segment is deleted, not renamed for reuse with its old
#                         bytes (which deleted names are part of) still inside;
#   min/max_wal_size      32 MB (two 16 MB segments, the minimum) / 64 MB: little WAL
#                         kept on disk, and a checkpoint once 64 MB were written;
#   checkpoint_timeout    the default 5 min, stated: the rotation below checkpoints on
#                         its own; a shorter timeout would multiply full-page images.
EMBEDDED_WAL_SETTINGS: dict[str, str] = {
    "wal_recycle": "off",
    "min_wal_size": "32MB",
    "max_wal_size": "64MB",
    "checkpoint_timeout": "300s",
}
# Bound on how long a deleted row lingers in the WAL once deleted (plus a checkpoint's
# duration).  Each rotation that finds changes starts a new 16 MB segment.
WAL_ROTATE_INTERVAL_S = 900.0

EmbeddedState = Literal["running", "restarting", "lost"]


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

        log_offset = _log_size(pgdata)
        try:
            _stop_postmaster_of_another_install(pgdata, Path(POSTGRES_BIN_PATH))
            return pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        except Exception as exc:
            raise StorageUnavailable(
                f"could not start the embedded PostgreSQL in {pgdata} ({type(exc).__name__}: {exc})"
                f"{_failure_detail(pgdata, log_offset)}; see {pgdata / 'log'}"
            ) from exc


async def start_embedded(data_dir: str | Path) -> tuple[str, Any]:
    """Start (or reuse) the embedded server; return ``(database_url, handle)``.

    Keep ``handle`` alive for as long as the database is in use, and give it to an
    :class:`EmbeddedSupervisor`.
    """
    server = await trio.to_thread.run_sync(_start_blocking, data_dir)
    await ensure_database(server.get_uri(), DATABASE_NAME)
    await configure_server(server.get_uri(), EMBEDDED_WAL_SETTINGS)
    return server.get_uri(DATABASE_NAME), server


# --- supervision ----------------------------------------------------------------------
def _log_size(pgdata: Path) -> int:
    try:
        return (pgdata / "log").stat().st_size
    except OSError:
        return 0


def _failure_detail(pgdata: Path, offset: int) -> str:
    """The last FATAL/PANIC line the server logged since ``offset`` (PostgreSQL says why
    it would not start there; pgserver's own error records, which paste the whole log,
    are silenced in ``_logging``)."""
    try:
        with (pgdata / "log").open("rb") as file:
            file.seek(max(offset, file.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            lines = file.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        for marker in ("FATAL:", "PANIC:"):
            if marker in line:
                reason = " ".join(line[line.index(marker) :].split())
                return f"; the server log says: {reason[:FAILURE_DETAIL_MAX_CHARS]}"
    return ""


def _is_running(process: psutil.Process) -> bool:
    """True while ``process`` (the very process, not a later one with its pid) has not
    exited.  A zombie has exited: its parent (init, tini), not locshare, reaps it."""
    try:
        return bool(process.is_running()) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_live_postmaster(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.name() == "postgres" and _is_running(process)
    except psutil.Error:
        return False


def _remove_stale_lock_files(pgdata: Path, dead_pid: int) -> None:
    """Remove ``postmaster.pid`` (and the socket's lock file) left by a dead postmaster.

    PostgreSQL removes a stale lock file itself when its pid is gone, but not when the
    pid is a zombie (``kill(pid, 0)`` succeeds) or was reused by another process.  A
    file naming ``dead_pid`` (we saw it exit) or no live postgres is stale; a live
    postmaster's file is left alone (pgserver then adopts that server).  Removing the
    file is safe: the shared-memory interlock, keyed by the data directory's inode,
    still stops a new postmaster while backends of the dead one are attached.
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        pid = None  # torn file of a postmaster that died while starting
    if pid is not None and pid != dead_pid and _is_live_postmaster(pid):
        return
    pid_file.unlink(missing_ok=True)
    if pid is not None and len(lines) > 4 and lines[3].strip() and lines[4].strip():
        socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        try:
            if socket_lock.read_text().split("\n", 1)[0].strip() == str(pid):
                socket_lock.unlink()
        except OSError:
            pass


def _restart_blocking(server: Any, dead_pid: int) -> psutil.Process:
    """Start a new postmaster on ``server``'s data directory (worker thread).

    pgserver caches one instance per data directory and only starts a server when
    ``postmaster.pid`` names no running one, so the stale file goes first; then the
    cached instance does what its first start did: under root, make the data
    directory's parents traversable again for the ``pgserver`` user that PostgreSQL runs
    as (something may have tightened them since: pytest does, for its temp root), and
    start the new server with the same socket directory, updating its record of the
    postmaster (its exit hook then stops the new one).  A data directory without
    ``PG_VERSION`` is not re-initialised: an empty database would lose every session.
    """
    pgdata = Path(server.pgdata)
    if not (pgdata / "PG_VERSION").exists():
        raise StorageUnavailable(f"{pgdata} is no longer a PostgreSQL data directory")
    log_offset = _log_size(pgdata)
    try:
        # pgserver's inter-process lock, which it holds itself while starting a server.
        with type(server)._lock:
            _remove_stale_lock_files(pgdata, dead_pid)
            server.ensure_pgdata_inited()  # PG_VERSION exists: permissions only, no initdb
            server.ensure_postgres_running()
            process = server.get_postmaster_info().process
    except Exception as exc:
        raise StorageUnavailable(
            f"{type(exc).__name__}{_failure_detail(pgdata, log_offset)}"
        ) from exc
    if process is None or not _is_running(process):
        raise StorageUnavailable("the new postmaster is not running")
    return process


def _forget_dead_postmaster(server: Any) -> None:
    """pgserver's exit hook stops the postmaster it last knew; if that one is dead, it
    would wait for it (``pg_ctl stop`` on a zombie) and then fail noisily at exit."""
    info = getattr(server, "_postmaster_info", None)
    if info is not None and (info.process is None or not _is_running(info.process)):
        server._postmaster_info = None


async def wait_for_exit(process: psutil.Process) -> None:
    """Return once ``process`` has exited.

    On Linux a pidfd becomes readable the moment the process exits (zombie or not), so
    this costs no wake-ups while PostgreSQL runs and a pid reused later cannot be
    mistaken for it.  Elsewhere (or if pidfds are refused) the pid is polled every
    ``POSTMASTER_POLL_INTERVAL_S``.
    """
    try:
        pidfd: int | None = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            if _is_running(process):  # the pidfd refers to this very process
                await trio.lowlevel.wait_readable(pidfd)
        finally:
            trio.lowlevel.notify_closing(pidfd)
            os.close(pidfd)
        return
    while True:  # polling: there is nothing to wait on
        if not _is_running(process):
            return
        await trio.sleep(POSTMASTER_POLL_INTERVAL_S)


class SupervisedStorage(Protocol):
    """What the supervisor needs of the storage."""

    async def ping(self) -> None: ...

    async def rotate_wal(self, *, unless_changes: int | None = None) -> int: ...


class EmbeddedSupervisor:
    """Restarts the embedded PostgreSQL when its postmaster dies; rotates its WAL.

    Resource handling: :meth:`run` is one long-lived task owned by ``run_server``'s
    nursery, only when the database is embedded; cancelling it is safe at any point (a
    restart in progress runs to its end in its worker thread, bounded by pg_ctl's
    timeout).  On give-up it sets :attr:`lost`, calls ``on_lost`` (``run_server`` sets
    its shutdown event) and returns; after the graceful shutdown ``run_server`` calls
    :meth:`raise_if_lost`.

    Log records carry the postmaster's pid, attempt numbers and durations only.
    """

    def __init__(
        self,
        server: Any,
        storage: SupervisedStorage,
        *,
        on_lost: Callable[[], None],
        on_restart: Callable[[], object] | None = None,
        policy: RestartPolicy | None = None,
        wal_rotate_interval_s: float = WAL_ROTATE_INTERVAL_S,
    ) -> None:
        self._server = server
        self._storage = storage
        self._on_lost = on_lost
        self._on_restart = on_restart
        self._policy = policy or RestartPolicy()
        self._wal_rotate_interval_s = wal_rotate_interval_s
        self.state: EmbeddedState = "running"
        self.lost: EmbeddedDatabaseLost | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.rotate_wal_periodically)
                task_status.started()
                await self._supervise()
                nursery.cancel_scope.cancel()
        finally:
            _forget_dead_postmaster(self._server)

    def raise_if_lost(self) -> None:
        if self.lost is not None:
            raise self.lost

    async def _supervise(self) -> None:
        process: psutil.Process = self._server.get_postmaster_info().process
        while True:
            await wait_for_exit(process)
            self.state = "restarting"
            self._policy.died(trio.current_time())
            log.warning(
                "the embedded PostgreSQL stopped unexpectedly: restarting it",
                extra={"pid": process.pid},
            )
            restarted = await self._restart(process.pid)
            if restarted is None:
                return
            process = restarted

    async def _restart(self, dead_pid: int) -> psutil.Process | None:
        last_error: StorageUnavailable | None = None
        while (delay := self._policy.next_attempt(trio.current_time())) is not None:
            await trio.sleep(delay)
            try:
                process = await trio.to_thread.run_sync(_restart_blocking, self._server, dead_pid)
            except StorageUnavailable as exc:
                last_error = exc
                log.warning(
                    "restarting the embedded PostgreSQL failed",
                    extra={"attempt": self._policy.attempts, "error": str(exc)},
                )
                continue
            down_since = self._policy.down_since or trio.current_time()
            self._policy.recovered(trio.current_time())
            if self._on_restart is not None:
                self._on_restart()
            self.state = "running"
            await self._refresh_pool()
            log.warning(
                "the embedded PostgreSQL was restarted",
                extra={
                    "pid": process.pid,
                    "attempt": self._policy.attempts,
                    "down_s": round(trio.current_time() - down_since, 2),
                },
            )
            return process
        self.state = "lost"
        down_s = trio.current_time() - (self._policy.down_since or trio.current_time())
        if last_error is not None:
            why = f"{self._policy.attempts} attempts, down {down_s:.1f} s; last error: {last_error}"
        else:  # Rule 3: it kept dying soon after each restart
            why = (
                f"it died within {self._policy.stable_after_s:.0f} s of each of "
                f"{self._policy.attempts} restarts"
            )
        self.lost = EmbeddedDatabaseLost(
            f"the embedded PostgreSQL died and could not be restarted ({why}); "
            f"see {Path(self._server.pgdata) / 'log'}"
        )
        log.warning("the embedded PostgreSQL could not be restarted: shutting down")
        self._on_lost()
        return None

    async def _refresh_pool(self) -> None:
        # The pool's connections died with the old server; the first failure makes it
        # replace them all, so the next caller (a REST request) gets a fresh one.
        # Best effort: whatever a ping raises, supervision must go on.
        with trio.move_on_after(READY_PINGS_BUDGET_S):
            while True:
                try:
                    await self._storage.ping()
                    return
                except Exception as exc:  # Cancelled is a BaseException: not caught
                    if not isinstance(exc, StorageError):
                        log.warning(
                            "ping after a restart failed", extra={"error": type(exc).__name__}
                        )
                    await trio.sleep(READY_PING_INTERVAL_S)

    async def rotate_wal_periodically(self) -> None:
        """Every ``wal_rotate_interval_s``: close the WAL segment and checkpoint, unless
        no row changed since the last time (see the module docstring)."""
        changes: int | None = None
        while True:
            await trio.sleep(self._wal_rotate_interval_s)
            if self.state != "running":
                continue
            try:
                changes = await self._storage.rotate_wal(unless_changes=changes)
            except StorageError as exc:
                log.warning("could not rotate the WAL", extra={"error": type(exc).__name__})
