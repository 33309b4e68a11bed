"""The embedded PostgreSQL's restart policy (sans-io: plain numbers for ``now``) and the
small pieces of its supervisor that run without a server: death detection on real
processes, stale lock files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import trio

from locshare.proto._restart import (
    RESTART_BUDGET_S,
    RESTART_FIRST_DELAY_S,
    RESTART_MAX_ATTEMPTS,
    RESTART_STABLE_AFTER_S,
    RestartPolicy,
)
from locshare.storage._embedded import _remove_stale_lock_files, wait_for_exit


def attempts_until_give_up(policy: RestartPolicy, now: float) -> list[float]:
    """Delays of every attempt the policy allows, each attempt failing at once."""
    delays = []
    while (delay := policy.next_attempt(now)) is not None:
        delays.append(delay)
        now += delay
    return delays


def test_backoff_doubles_from_half_a_second_and_is_capped() -> None:
    policy = RestartPolicy(max_attempts=10, budget_s=1e9)
    assert [policy.delay_before(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.delay_before(10_000) == 4.0  # no overflow
    policy.died(100.0)
    assert attempts_until_give_up(policy, 100.0) == [
        0.5,
        1.0,
        2.0,
        4.0,
        4.0,
        4.0,
        4.0,
        4.0,
        4.0,
        4.0,
    ]


def test_default_gives_up_after_three_failed_attempts() -> None:
    policy = RestartPolicy()
    policy.died(0.0)
    delays = attempts_until_give_up(policy, 0.0)
    assert delays == [RESTART_FIRST_DELAY_S * 2**n for n in range(RESTART_MAX_ATTEMPTS)]
    assert policy.attempts == RESTART_MAX_ATTEMPTS
    assert policy.next_attempt(1000.0) is None  # and stays given up


def test_gives_up_when_the_next_attempt_would_start_after_the_budget() -> None:
    eps = 1e-6
    policy = RestartPolicy(max_attempts=100)
    policy.died(0.0)
    # Slow attempts (pg_ctl may take up to 10 s each) use the budget up.
    assert policy.next_attempt(RESTART_BUDGET_S - 0.5) == 0.5  # starts at the budget: allowed
    assert policy.next_attempt(RESTART_BUDGET_S - 1.0 + eps) is None  # 1 s later: past it
    assert policy.attempts == 1


def test_a_recovery_that_lasts_resets_the_count() -> None:
    policy = RestartPolicy()
    for outage in range(5):  # five deaths, each long after the last recovery: never gives up
        start = outage * 1000.0
        policy.died(start)
        assert policy.next_attempt(start) == RESTART_FIRST_DELAY_S
        policy.recovered(start + 1.0)
    assert policy.attempts == 1


def test_a_crash_loop_gives_up_after_the_same_number_of_restarts() -> None:
    """Rule 3: a postmaster that dies again before it stayed up 60 s continues the count."""
    policy = RestartPolicy()
    now = 0.0
    delays = []
    for _ in range(RESTART_MAX_ATTEMPTS):
        policy.died(now)
        delay = policy.next_attempt(now)
        assert delay is not None
        delays.append(delay)
        now += delay
        policy.recovered(now)  # the restart works...
        now += RESTART_STABLE_AFTER_S - 1.0  # ...but it dies again within a minute
    assert delays == [0.5, 1.0, 2.0]  # the backoff carried on across the deaths
    policy.died(now)
    assert policy.next_attempt(now) is None


def test_stable_uptime_boundary() -> None:
    eps = 1e-6
    for uptime, expected_delay in (
        (RESTART_STABLE_AFTER_S - eps, 1.0),
        (RESTART_STABLE_AFTER_S, 0.5),
    ):
        policy = RestartPolicy()
        policy.died(0.0)
        assert policy.next_attempt(0.0) == 0.5
        policy.recovered(1.0)
        policy.died(1.0 + uptime)
        assert policy.next_attempt(1.0 + uptime) == expected_delay


def test_next_attempt_needs_a_death() -> None:
    with pytest.raises(RuntimeError):
        RestartPolicy().next_attempt(0.0)


def test_policy_imports_without_trio() -> None:
    code = (
        "import sys\n"
        "for name in ('trio', 'asyncpg', 'trio_asyncio', 'psutil', 'pgserver'):\n"
        "    sys.modules[name] = None\n"
        "import locshare.proto._restart\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- death detection on real processes ------------------------------------------------
@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
async def test_wait_for_exit_sees_a_killed_process_even_unreaped(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The postmaster is not our child: nobody reaps it here at once (this sandbox's
    init never does), so a zombie must count as dead.  ``polling`` is the path for
    systems without pidfd_open(2)."""
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    child = await trio.lowlevel.open_process([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        process = psutil.Process(child.pid)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                exited = trio.Event()

                async def watch() -> None:
                    await wait_for_exit(process)
                    exited.set()

                nursery.start_soon(watch)
                await trio.sleep(0.2)
                assert not exited.is_set()
                os.kill(child.pid, signal.SIGKILL)
                await exited.wait()
        assert process.status() == psutil.STATUS_ZOMBIE  # not reaped, yet seen dead
    finally:
        child.kill()
        await child.wait()
    with trio.fail_after(5):
        await wait_for_exit(process)  # already gone: returns at once


# --- stale lock files -------------------------------------------------------------------
def write_pid_file(pgdata: Path, pid: int | str) -> Path:
    pgdata.mkdir(exist_ok=True)
    lines = [str(pid), str(pgdata), "1700000000", "5432", str(pgdata), "", "1 2", "ready"]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    socket_lock = pgdata / ".s.PGSQL.5432.lock"
    socket_lock.write_text(f"{pid}\n{pgdata}\n")
    return socket_lock


def test_stale_lock_files_of_the_dead_postmaster_are_removed(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that existed and is gone
    socket_lock = write_pid_file(pgdata, child.pid)
    _remove_stale_lock_files(pgdata, child.pid)
    assert not (pgdata / "postmaster.pid").exists()
    assert not socket_lock.exists()


def test_a_reused_pid_does_not_keep_a_stale_lock_file(tmp_path: Path) -> None:
    """The pid now belongs to a live process that is no postgres (here: this test)."""
    pgdata = tmp_path / "pg"
    socket_lock = write_pid_file(pgdata, os.getpid())
    _remove_stale_lock_files(pgdata, dead_pid=1)
    assert not (pgdata / "postmaster.pid").exists()
    assert not socket_lock.exists()


def test_a_torn_pid_file_is_removed_and_a_missing_one_is_fine(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text("")
    _remove_stale_lock_files(pgdata, dead_pid=1)
    assert not (pgdata / "postmaster.pid").exists()
    _remove_stale_lock_files(pgdata, dead_pid=1)
