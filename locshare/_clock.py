"""Wall-clock time and RFC 3339 formatting.

Two clocks exist in locshare and are never mixed:

* *monotonic* time (``trio.current_time()``) drives everything that waits: location
  retention, flush timers, slow-client timeouts, session deadlines.  Tests replace it
  with trio's ``MockClock``/``autojump_clock``.
* *wall* time (this module) is what leaves the process: RFC 3339 timestamps in the
  API, ``expires_at`` and ``last_activity`` in the database.  :class:`WallClock` has an
  ``offset_s`` so integration tests can move "now" forward (expiry, inactivity)
  without sleeping.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime


class WallClock:
    """Seconds since the epoch, shiftable by tests."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = offset_s

    def now(self) -> float:
        return time.time() + self.offset_s

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


def rfc3339(ts: float | datetime | None, *, micros: bool = False) -> str | None:
    """Format epoch seconds or an aware datetime as RFC 3339 UTC.

    Millisecond precision, or microseconds with ``micros`` (location timestamps, so a
    client's own stamp comes back unchanged and latency can be measured from it).
    """
    if ts is None:
        return None
    if isinstance(ts, datetime):
        dt = ts.astimezone(UTC)
        seconds, micro = dt.strftime("%Y-%m-%dT%H:%M:%S."), dt.microsecond
    else:
        # datetime.fromtimestamp's rounding (half-even to the microsecond, carried into
        # the second), without building a datetime: every location entry of every flush
        # formats one stamp, and the seconds part repeats (cached per whole second).
        frac, whole = math.modf(ts)
        micro = round(frac * 1e6)
        if micro >= 1_000_000:
            whole += 1.0
            micro -= 1_000_000
        elif micro < 0:
            whole -= 1.0
            micro += 1_000_000
        seconds = _seconds_text(int(whole))
    fraction = f"{micro:06d}" if micros else f"{micro // 1000:03d}"
    return seconds + fraction + "Z"


_SECONDS_CACHE: dict[int, str] = {}
_SECONDS_CACHE_MAX = 256  # a few minutes of stamps; cleared whole when full


def _seconds_text(whole: int) -> str:
    text = _SECONDS_CACHE.get(whole)
    if text is None:
        if len(_SECONDS_CACHE) >= _SECONDS_CACHE_MAX:
            _SECONDS_CACHE.clear()
        text = _SECONDS_CACHE[whole] = datetime.fromtimestamp(whole, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S."
        )
    return text


# Rule (range): a timestamp locshare accepts lies in [1970-01-01, 9999-12-30) UTC, so
# that everything parsed here formats again with :func:`rfc3339`.  RFC 3339 allows any
# year 0000-9999 with an offset of up to a day, so a valid stamp such as
# "0001-01-01T00:00:00+14:00" lies before year 1 once its offset is applied, which
# ``datetime`` cannot represent; and near year 9999 float epoch seconds lose enough
# precision to round over into year 10000.  (Found by an attacker: such a stamp passed
# validation and crashed its session at the next flush.)
MIN_TIMESTAMP_S = 0.0
MAX_TIMESTAMP_S = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 timestamp to epoch seconds; raise ``ValueError`` if it is not one
    or lies outside the range above.

    A timezone is required (``Z`` or ``+hh:mm``): a naive timestamp is ambiguous.
    """
    if not isinstance(text, str) or not 10 < len(text) <= 40 or text[10] not in "Tt ":
        raise ValueError("not an RFC 3339 timestamp")
    candidate = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    dt = datetime.fromisoformat(candidate)
    if dt.tzinfo is None:
        raise ValueError("timestamp needs a timezone (Z or +hh:mm)")
    try:
        seconds = dt.timestamp()
    except (OverflowError, OSError) as exc:
        raise ValueError("timestamp out of range") from exc
    if not MIN_TIMESTAMP_S <= seconds < MAX_TIMESTAMP_S:
        raise ValueError("timestamp must lie between 1970 and 9999 (UTC)")
    return seconds
