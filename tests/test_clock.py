"""RFC 3339 formatting (``_clock.rfc3339``): the fast path for epoch seconds must give
exactly what formatting a ``datetime`` gives, rounding and carries included."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from locshare._clock import MAX_TIMESTAMP_S, rfc3339


def by_datetime(ts: float, micros: bool) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    fraction = f"{dt.microsecond:06d}" if micros else f"{dt.microsecond // 1000:03d}"
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + fraction + "Z"


@given(st.floats(0.0, MAX_TIMESTAMP_S - 1), st.booleans())
@example(1_800_000_000.9999995, True)  # rounds up into the next second
@example(1_800_000_000.9999995, False)
@example(1_800_000_000.0000005, True)  # half-even: stays
@example(0.0, True)
@example(59.9999999, False)
def test_epoch_seconds_format_as_datetime_formats_them(ts: float, micros: bool) -> None:
    assert rfc3339(ts, micros=micros) == by_datetime(ts, micros)


def test_datetimes_and_none() -> None:
    dt = datetime(2026, 12, 1, 21, 30, 5, 123456, tzinfo=UTC)
    assert rfc3339(dt) == "2026-12-01T21:30:05.123Z"
    assert rfc3339(dt, micros=True) == "2026-12-01T21:30:05.123456Z"
    assert rfc3339(None) is None
