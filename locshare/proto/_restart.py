"""When to restart the embedded PostgreSQL after it died, and when to give up (sans-io).

Plain synchronous code: it never imports trio and never reads a clock; the caller
passes ``now`` (any monotonic seconds).  The supervisor in ``locshare._embedded`` does
the I/O and asks this policy what to do.

Rule 1 (backoff): the n-th attempt of an outage waits ``first_delay_s * 2**(n-1)``
seconds, capped at ``max_delay_s``: 0.5 s, 1 s, 2 s with the defaults.  The first
attempt waits too: the killed postmaster's backends need a moment to notice its death
and detach from the shared memory, or PostgreSQL refuses to start ("pre-existing shared
memory block is still in use").

Rule 2 (give up): an outage gives up when it would start attempt ``max_attempts + 1``,
or when the next attempt would start more than ``budget_s`` after the death.  Each
attempt is itself bounded (``pg_ctl`` is given 10 s by pgserver), so the last attempt
ends at most about ``budget_s + 11`` s after the death; with the defaults (3 attempts,
0.5 + 1 + 2 s of waiting) a restart that fails at once gives up after about 4 s.

Rule 3 (crash loop): a restart counts as a recovery for Rule 2 only once PostgreSQL has
stayed up ``stable_after_s``.  A postmaster that dies again sooner continues the same
count, so a crash loop gives up after ``max_attempts`` restarts instead of restarting
forever: the process then exits non-zero and its service manager (systemd, the
container runtime), which has its own rate limits, takes over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESTART_FIRST_DELAY_S = 0.5
RESTART_MAX_DELAY_S = 4.0
RESTART_MAX_ATTEMPTS = 3
RESTART_BUDGET_S = 30.0
RESTART_STABLE_AFTER_S = 60.0


@dataclass
class RestartPolicy:
    """Backoff and give-up rule for one supervised server (see the module docstring)."""

    first_delay_s: float = RESTART_FIRST_DELAY_S
    max_delay_s: float = RESTART_MAX_DELAY_S
    max_attempts: int = RESTART_MAX_ATTEMPTS
    budget_s: float = RESTART_BUDGET_S
    stable_after_s: float = RESTART_STABLE_AFTER_S
    attempts: int = field(default=0, init=False)
    down_since: float | None = field(default=None, init=False)
    _up_since: float | None = field(default=None, init=False)

    def died(self, now: float) -> None:
        """The server was seen dead at ``now``: an outage begins."""
        if self._up_since is None or now - self._up_since >= self.stable_after_s:
            self.attempts = 0  # it had recovered for good (or never died before)
        self.down_since = now
        self._up_since = None

    def next_attempt(self, now: float) -> float | None:
        """Count one more attempt and return how long to wait before it; ``None``:
        give up (Rule 2)."""
        if self.down_since is None:
            raise RuntimeError("next_attempt() without died()")
        delay = self.delay_before(self.attempts + 1)
        if self.attempts >= self.max_attempts or now + delay - self.down_since > self.budget_s:
            return None
        self.attempts += 1
        return delay

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based) of an outage."""
        doublings = min(max(attempt - 1, 0), 32)  # no float overflow however large
        return float(min(self.first_delay_s * 2**doublings, self.max_delay_s))

    def recovered(self, now: float) -> None:
        """The server answers again since ``now``."""
        self.down_since = None
        self._up_since = now
