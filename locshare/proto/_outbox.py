"""A connection's bounded outbox (sans-io).

Policy (never awaits, never grows without bound):
    * Frames are queued with :meth:`Outbox.put` and taken all at once by the writer
      with :meth:`Outbox.take`, which then writes them with one ``send_all``.
    * *Coalescable* frames (``locations``, ``viewport``) describe current state.  When the
      queue is full they are dropped and replaced by a flag; the writer then sends one
      catch-up frame built from the state at that moment: latest position per
      participant wins, at most one entry each.  Until then, further coalescable
      frames are absorbed by the flag too.
    * If the queue is still full (only control frames: joins, leaves, presence...), the
      whole queue is dropped and replaced by a *resync* flag: the writer sends a fresh
      ``session_state`` instead, which supersedes everything dropped.
    * After :meth:`close` nothing more is queued; the writer sends what is queued, then
      the close frame.

So a client that never reads costs at most ``max_frames`` references to shared frames
plus three flags, whatever the session does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class _Frame(Protocol):
    kind: str


F = TypeVar("F", bound=_Frame)


COALESCABLE = frozenset({"locations", "viewport"})


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    queued: int
    peak: int
    coalesced: int
    resyncs: int
    sent: int


@dataclass(frozen=True, slots=True)
class Batch(Generic[F]):
    frames: list[F]
    catch_up: bool
    resync: bool
    close: tuple[int, str] | None


class Outbox(Generic[F]):
    def __init__(self, max_frames: int = 64) -> None:
        if max_frames < 2:
            raise ValueError("max_frames must be at least 2")
        self.max_frames = max_frames
        self._frames: deque[F] = deque()
        self._catch_up = False
        self._resync = False
        self._close: tuple[int, str] | None = None
        self._peak = 0
        self._coalesced = 0
        self._resyncs = 0
        self._sent = 0

    def put(self, frame: F) -> None:
        """Queue a frame; on overflow coalesce, then resync (see module docstring)."""
        if self._close is not None:
            return
        if self._resync and frame.kind not in COALESCABLE:
            return  # the coming session_state will include it
        if (self._resync or self._catch_up) and frame.kind in COALESCABLE:
            # Already lagging: the catch-up built at drain time supersedes this frame.
            self._catch_up = True
            self._coalesced += 1
            return
        frames = self._frames
        if len(frames) >= self.max_frames:
            before = len(frames)
            kept = [f for f in frames if f.kind not in COALESCABLE]
            dropped = before - len(kept)
            if dropped or frame.kind in COALESCABLE:
                frames.clear()
                frames.extend(kept)
                self._catch_up = True
                self._coalesced += dropped
            if frame.kind in COALESCABLE:
                self._coalesced += 1
                return
            if len(frames) >= self.max_frames:
                frames.clear()
                self._catch_up = False
                self._resync = True
                self._resyncs += 1
                return
        frames.append(frame)
        if len(frames) > self._peak:
            self._peak = len(frames)

    def close(self, code: int, reason: str = "", *, final: F | None = None) -> None:
        """Queue ``final`` (if any) and then the close frame; idempotent (first wins)."""
        if self._close is not None:
            return
        if final is not None:
            if self._resync or len(self._frames) >= self.max_frames:
                # Nothing queued matters any more; the final word does.
                self._frames.clear()
                self._resync = False
                self._catch_up = False
            self._frames.append(final)
        self._close = (code, reason)

    def catch_up(self) -> None:
        """Send the present at the next drain (a catch-up): for a client that was not
        sent coalescable frames for a while (its map was hidden)."""
        if self._close is None and not self._resync:
            self._catch_up = True

    def abandon(self) -> None:
        """Drop everything (connection is gone)."""
        self._frames.clear()
        self._catch_up = self._resync = False

    @property
    def closing(self) -> bool:
        return self._close is not None

    def __bool__(self) -> bool:
        return bool(self._frames) or self._catch_up or self._resync or self._close is not None

    def take(self) -> Batch[F]:
        batch = Batch(list(self._frames), self._catch_up, self._resync, self._close)
        self._sent += len(batch.frames)
        self._frames.clear()
        self._catch_up = self._resync = False
        return batch

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(
            queued=len(self._frames),
            peak=self._peak,
            coalesced=self._coalesced,
            resyncs=self._resyncs,
            sent=self._sent,
        )
