"""The live location index: one numpy structure-of-arrays for every session in memory.

Layout:
    ``data[field, block, slot]`` (float64), where a *block* of ``block_size`` slots
    belongs to one session and a *slot* to one participant.  Fields are ``lat, lng,
    accuracy, heading, speed, client_ts, received_at``.  An empty or evicted slot is
    NaN in every field.  Blocks and slots come from free lists, so allocation, update
    and release are O(1); capacity doubles when blocks run out.

Rule 1 (retention): a location is *fresh* while ``received_at > now - ttl_s``.  Every
read filters on freshness, so an expired location is never returned even before the
next :meth:`GeoIndex.tick`; the tick then overwrites it with NaN, after which no copy
exists in the index.  Releasing a slot or a block overwrites it the same way.

Rule 2 (vectorization): :meth:`GeoIndex.tick` does eviction, and the bounding boxes of
every block that may need a hint (updated since it was last evaluated, or its set of
fresh points changed), in one pass of array operations whatever the number of sessions.

Rule 3 (hints): a block gets a new viewport hint only when its fresh box grows outside
the last hinted box, shrinks by more than ``shrink_ratio`` of its span on either axis,
or its set of fresh participants changed; never more often than ``min_hint_interval_s``.
A block with no fresh point gets no hint.

Sans-io: ``now`` is always an argument (monotonic seconds); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._viewport import BBox, bboxes

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

FIELDS = ("lat", "lng", "accuracy", "heading", "speed", "client_ts", "received_at")
LAT, LNG, ACCURACY, HEADING, SPEED, CLIENT_TS, RECEIVED_AT = range(len(FIELDS))


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lng: float
    accuracy: float | None
    heading: float | None
    speed: float | None
    client_ts: float | None
    received_at: float


@dataclass(frozen=True, slots=True)
class Hint:
    """A block whose viewport hint should be (re)sent, with its fresh box."""

    block: int
    bbox: BBox
    count: int


@dataclass(frozen=True, slots=True)
class TickResult:
    """What a tick found, as arrays (building Python objects for thousands of
    sessions would cost more than the tick itself; callers pick what they need)."""

    evicted_blocks: IntArray
    evicted_slots: IntArray
    evicted_received_at: FloatArray
    hint_blocks: IntArray
    hint_boxes: FloatArray  # (n, 4): west, south, east, north
    hint_counts: IntArray

    @property
    def hints(self) -> list[Hint]:
        return [
            Hint(b, BBox(*box), c)
            for b, box, c in zip(
                self.hint_blocks.tolist(),
                self.hint_boxes.tolist(),
                self.hint_counts.tolist(),
                strict=True,
            )
        ]


@dataclass(frozen=True, slots=True)
class IndexArrays:
    """Read-only views of the index's fields, each ``(capacity_blocks, block_size)``,
    for the other per-tick computations (places, the convoy).

    Views: they see later updates, and they are stale once the index grows (its
    arrays are replaced), so take them afresh each tick.  NaN where a slot is empty.
    """

    lat: FloatArray
    lng: FloatArray
    accuracy: FloatArray
    heading: FloatArray
    speed: FloatArray
    received_at: FloatArray
    ttl_s: float


@dataclass(frozen=True, slots=True)
class IndexStatistics:
    capacity_blocks: int
    blocks_in_use: int
    slots_in_use: int
    fresh_locations: int


_NO_HINTS: tuple[IntArray, FloatArray, IntArray] = (
    np.zeros(0, dtype=np.intp),
    np.zeros((0, 4)),
    np.zeros(0, dtype=np.intp),
)


def _none_if_nan(value: float) -> float | None:
    return None if value != value else value


class GeoIndex:
    """See the module docstring.  Not thread-safe; owned by one hub."""

    def __init__(
        self,
        *,
        block_size: int = 50,
        ttl_s: float = 30.0,
        initial_blocks: int = 64,
        shrink_ratio: float = 0.2,
        min_hint_interval_s: float = 1.0,
    ) -> None:
        if block_size < 1 or initial_blocks < 1:
            raise ValueError("block_size and initial_blocks must be positive")
        self.block_size = block_size
        self.ttl_s = ttl_s
        self.shrink_ratio = shrink_ratio
        self.min_hint_interval_s = min_hint_interval_s
        self._data = np.full((len(FIELDS), initial_blocks, block_size), np.nan)
        self._allocated = np.zeros(initial_blocks, dtype=bool)
        self._free_blocks: list[int] = list(range(initial_blocks - 1, -1, -1))
        self._free_slots: dict[int, list[int]] = {}
        # Per-block hint state (Rule 3).
        self._set_version = np.zeros(initial_blocks, dtype=np.int64)
        self._hinted_version = np.full(initial_blocks, -1, dtype=np.int64)
        self._hinted_box = np.full((initial_blocks, 4), np.nan)
        self._hinted_at = np.full(initial_blocks, -np.inf)
        self._moved = np.zeros(initial_blocks, dtype=bool)  # updated since last evaluated

    # --- capacity ---------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return int(self._allocated.size)

    def _grow(self) -> None:
        old = self.capacity
        new = old * 2
        data = np.full((len(FIELDS), new, self.block_size), np.nan)
        data[:, :old] = self._data
        self._data = data
        self._allocated = np.concatenate([self._allocated, np.zeros(old, dtype=bool)])
        self._set_version = np.concatenate([self._set_version, np.zeros(old, dtype=np.int64)])
        self._hinted_version = np.concatenate(
            [self._hinted_version, np.full(old, -1, dtype=np.int64)]
        )
        self._hinted_box = np.concatenate([self._hinted_box, np.full((old, 4), np.nan)])
        self._hinted_at = np.concatenate([self._hinted_at, np.full(old, -np.inf)])
        self._moved = np.concatenate([self._moved, np.zeros(old, dtype=bool)])
        self._free_blocks.extend(range(new - 1, old - 1, -1))

    # --- blocks and slots -------------------------------------------------------------
    def allocate_block(self) -> int:
        if not self._free_blocks:
            self._grow()
        block = self._free_blocks.pop()
        self._allocated[block] = True
        self._free_slots[block] = list(range(self.block_size - 1, -1, -1))
        self._set_version[block] += 1
        self._hinted_version[block] = -1
        self._hinted_box[block] = np.nan
        self._hinted_at[block] = -np.inf
        self._moved[block] = False
        return block

    def free_block(self, block: int) -> None:
        """Release a session's block; every location in it is overwritten."""
        self._check_block(block)
        self._data[:, block, :] = np.nan
        self._allocated[block] = False
        del self._free_slots[block]
        self._free_blocks.append(block)

    def allocate_slot(self, block: int) -> int:
        self._check_block(block)
        free = self._free_slots[block]
        if not free:
            raise IndexError(f"block {block} is full")
        return free.pop()

    def free_slot(self, block: int, slot: int) -> None:
        """Release a participant's slot; its location is overwritten."""
        self._check_block(block)
        if not np.isnan(self._data[RECEIVED_AT, block, slot]):
            self._set_version[block] += 1
        self._data[:, block, slot] = np.nan
        self._free_slots[block].append(slot)

    def _check_block(self, block: int) -> None:
        if not (0 <= block < self.capacity and self._allocated[block]):
            raise KeyError(f"block {block} is not allocated")

    # --- updates and reads --------------------------------------------------------------
    def update(
        self,
        block: int,
        slot: int,
        lat: float,
        lng: float,
        received_at: float,
        accuracy: float | None = None,
        heading: float | None = None,
        speed: float | None = None,
        client_ts: float | None = None,
    ) -> None:
        """Store the latest location of one participant (O(1))."""
        nan = np.nan
        data = self._data
        if not data[RECEIVED_AT, block, slot] > received_at - self.ttl_s:
            self._set_version[block] += 1  # the slot becomes fresh: the set changed
        data[LAT, block, slot] = lat
        data[LNG, block, slot] = lng
        data[ACCURACY, block, slot] = nan if accuracy is None else accuracy
        data[HEADING, block, slot] = nan if heading is None else heading
        data[SPEED, block, slot] = nan if speed is None else speed
        data[CLIENT_TS, block, slot] = nan if client_ts is None else client_ts
        data[RECEIVED_AT, block, slot] = received_at
        self._moved[block] = True

    def get(self, block: int, slot: int, now: float) -> Location | None:
        """The fresh location in a slot, or ``None``."""
        values = self._data[:, block, slot].tolist()
        received_at = values[RECEIVED_AT]
        if not received_at > now - self.ttl_s:
            return None
        return Location(
            lat=values[LAT],
            lng=values[LNG],
            accuracy=_none_if_nan(values[ACCURACY]),
            heading=_none_if_nan(values[HEADING]),
            speed=_none_if_nan(values[SPEED]),
            client_ts=_none_if_nan(values[CLIENT_TS]),
            received_at=received_at,
        )

    def fresh_slots(self, block: int, now: float) -> IntArray:
        return np.flatnonzero(self._data[RECEIVED_AT, block] > now - self.ttl_s)

    def block_bbox(self, block: int, now: float) -> tuple[BBox, int] | None:
        """The current fresh box of one block (for a connecting client), or ``None``."""
        fresh = self._data[RECEIVED_AT, block] > now - self.ttl_s
        if not fresh.any():
            return None
        lat = np.where(fresh, self._data[LAT, block], np.nan)[None, :]
        lng = np.where(fresh, self._data[LNG, block], np.nan)[None, :]
        w, s, e, n, count = bboxes(lat, lng)
        return BBox(float(w[0]), float(s[0]), float(e[0]), float(n[0])), int(count[0])

    def next_expiry(self) -> float:
        """Monotonic time at which the oldest stored location expires (inf if none)."""
        received = self._data[RECEIVED_AT]
        if np.isnan(received).all():
            return float("inf")
        return float(np.nanmin(received)) + self.ttl_s

    # --- the tick -----------------------------------------------------------------------
    def tick(self, now: float) -> TickResult:
        """Evict expired locations and compute hints for every block (Rules 1-3)."""
        data = self._data
        received = data[RECEIVED_AT]
        with np.errstate(invalid="ignore"):
            expired = received <= now - self.ttl_s  # NaN compares False: empty slots stay
        ev_blocks, ev_slots = np.nonzero(expired)
        ev_received = received[ev_blocks, ev_slots].copy()
        if ev_blocks.size:
            data[:, ev_blocks, ev_slots] = np.nan
            np.add.at(self._set_version, ev_blocks, 1)
        return TickResult(ev_blocks, ev_slots, ev_received, *self._hints(now))

    def _hints(self, now: float) -> tuple[IntArray, FloatArray, IntArray]:
        # Only blocks that may need a hint: due (rate limit), and moved or changed set.
        due = self._allocated & (self._hinted_at <= now - self.min_hint_interval_s)
        blocks = np.flatnonzero(due & (self._moved | (self._set_version != self._hinted_version)))
        if blocks.size == 0:
            return _NO_HINTS
        self._moved[blocks] = False
        west, south, east, north, count = bboxes(self._data[LAT, blocks], self._data[LNG, blocks])
        has = count > 0
        last = self._hinted_box[blocks]
        lw, ls, le, ln = last[:, 0], last[:, 1], last[:, 2], last[:, 3]
        never = np.isnan(lw)
        new_lng_span = np.where(has, np.mod(east - west, 360.0), 0.0)
        old_lng_span = np.where(never, 0.0, np.mod(le - lw, 360.0))
        with np.errstate(invalid="ignore"):
            # Grew: the new box is not inside the last hinted one.
            lng_inside = np.mod(west - lw, 360.0) + new_lng_span <= old_lng_span + 1e-12
            lat_inside = (south >= ls) & (north <= ln)
            grew = ~(lng_inside & lat_inside)
            keep = 1.0 - self.shrink_ratio
            shrank = (new_lng_span < keep * old_lng_span) | ((north - south) < keep * (ln - ls))
        set_changed = self._set_version[blocks] != self._hinted_version[blocks]
        send = has & (never | grew | shrank | set_changed)
        # A block that lost all its points forgets its last hint, so the next point hints.
        emptied = ~has & ~never
        if emptied.any():
            gone = blocks[emptied]
            self._hinted_box[gone] = np.nan
            self._hinted_version[gone] = self._set_version[gone]
        chosen = np.flatnonzero(send)
        if chosen.size == 0:
            return _NO_HINTS
        sent_blocks = blocks[chosen]
        self._hinted_box[sent_blocks, 0] = west[chosen]
        self._hinted_box[sent_blocks, 1] = south[chosen]
        self._hinted_box[sent_blocks, 2] = east[chosen]
        self._hinted_box[sent_blocks, 3] = north[chosen]
        self._hinted_version[sent_blocks] = self._set_version[sent_blocks]
        self._hinted_at[sent_blocks] = now
        boxes = np.stack([west[chosen], south[chosen], east[chosen], north[chosen]], axis=1)
        return sent_blocks, boxes, count[chosen]

    def last_hint(self, block: int) -> BBox | None:
        box = self._hinted_box[block]
        if np.isnan(box[0]):
            return None
        return BBox(*(float(v) for v in box))

    def statistics(self) -> IndexStatistics:
        in_use = int(self._allocated.sum())
        slots = sum(self.block_size - len(free) for free in self._free_slots.values())
        return IndexStatistics(
            capacity_blocks=self.capacity,
            blocks_in_use=in_use,
            slots_in_use=slots,
            fresh_locations=int((~np.isnan(self._data[RECEIVED_AT])).sum()),
        )

    def arrays(self) -> IndexArrays:
        """Read-only views of the fields (see :class:`IndexArrays`)."""
        view = self._data.view()
        view.flags.writeable = False
        return IndexArrays(
            lat=view[LAT],
            lng=view[LNG],
            accuracy=view[ACCURACY],
            heading=view[HEADING],
            speed=view[SPEED],
            received_at=view[RECEIVED_AT],
            ttl_s=self.ttl_s,
        )

    def raw_values(self) -> FloatArray:
        """A read-only view of the whole store (for tests proving eviction overwrote)."""
        view = self._data.view()
        view.flags.writeable = False
        return view
