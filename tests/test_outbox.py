"""The bounded, coalescing outbox (sans-io)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from locshare.proto._outbox import Outbox


@dataclass
class F:
    kind: str
    n: int = 0


def test_fifo_and_take() -> None:
    box: Outbox[F] = Outbox(4)
    assert not box
    box.put(F("presence", 1))
    box.put(F("locations", 2))
    assert box
    batch = box.take()
    assert [f.n for f in batch.frames] == [1, 2]
    assert not batch.catch_up and not batch.resync and batch.close is None
    assert not box
    assert box.statistics().sent == 2


def test_overflow_coalesces_location_frames_first() -> None:
    box: Outbox[F] = Outbox(4)
    box.put(F("presence", 1))
    for i in range(3):
        box.put(F("locations", 10 + i))
    box.put(F("participant_joined", 2))  # full: location frames go, a catch-up flag stays
    box.put(F("locations", 99))
    stats = box.statistics()
    assert stats.queued == 2 and stats.peak == 4
    assert stats.coalesced == 4  # three dropped from the queue, one never queued
    batch = box.take()
    assert [f.kind for f in batch.frames] == ["presence", "participant_joined"]
    assert batch.catch_up and not batch.resync


def test_overflow_of_control_frames_becomes_a_resync() -> None:
    box: Outbox[F] = Outbox(3)
    for i in range(3):
        box.put(F("presence", i))
    box.put(F("presence", 3))
    assert box.statistics().resyncs == 1
    box.put(F("participant_left", 4))  # absorbed by the coming session_state
    box.put(F("locations", 5))  # noted as catch-up
    batch = box.take()
    assert batch.frames == [] and batch.resync
    assert box.statistics().queued == 0


def test_memory_stays_bounded_for_a_client_that_never_reads() -> None:
    box: Outbox[F] = Outbox(8)
    for i in range(100_000):
        box.put(F("locations" if i % 10 else "presence", i))
        assert box.statistics().queued <= 8
    assert box.statistics().peak == 8


def test_close_sends_the_final_frame_then_nothing_more() -> None:
    box: Outbox[F] = Outbox(2)
    box.put(F("presence", 1))
    box.put(F("presence", 2))
    box.close(4000, "session ended", final=F("session_ended", 3))  # queue full: final word wins
    box.put(F("presence", 4))
    box.close(1001, "ignored")
    batch = box.take()
    assert [f.n for f in batch.frames] == [3]
    assert batch.close == (4000, "session ended")
    assert box.closing


def test_close_keeps_queued_frames_when_there_is_room() -> None:
    box: Outbox[F] = Outbox(4)
    box.put(F("presence", 1))
    box.close(4000, final=F("session_ended", 2))
    assert [f.n for f in box.take().frames] == [1, 2]


def test_too_small() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        Outbox(1)


def test_a_requested_catch_up_goes_with_the_next_batch_unless_closing_or_resyncing() -> None:
    box: Outbox[F] = Outbox(4)
    box.catch_up()
    assert box
    batch = box.take()
    assert batch.catch_up and batch.frames == []
    assert not box.take().catch_up  # once
    box.close(1000)
    box.catch_up()
    assert not box.take().catch_up  # nothing more after a close
    full: Outbox[F] = Outbox(2)
    for i in range(3):
        full.put(F("presence", i))  # control frames overflow: a resync
    full.catch_up()
    batch = full.take()
    assert batch.resync and not batch.catch_up  # the session_state supersedes it
