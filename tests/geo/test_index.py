"""The structure-of-arrays location index: slots, retention, eviction, hint hysteresis."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from locshare.geo import BBox, GeoIndex

TTL = 30.0
EPS = 1e-3


def test_blocks_and_slots_come_from_free_lists() -> None:
    index = GeoIndex(block_size=3, initial_blocks=1)
    a = index.allocate_block()
    b = index.allocate_block()  # grows
    assert index.capacity == 2 and a != b
    slots = [index.allocate_slot(a) for _ in range(3)]
    assert sorted(slots) == [0, 1, 2]
    with pytest.raises(IndexError):
        index.allocate_slot(a)
    index.free_slot(a, slots[1])
    assert index.allocate_slot(a) == slots[1]
    index.free_block(b)
    assert index.allocate_block() == b
    with pytest.raises(KeyError):
        index.allocate_slot(99)


def test_update_and_get() -> None:
    index = GeoIndex(ttl_s=TTL)
    block = index.allocate_block()
    slot = index.allocate_slot(block)
    assert index.get(block, slot, 0.0) is None
    index.update(block, slot, 52.5, 13.4, received_at=10.0, accuracy=5.0, client_ts=1.7e9)
    location = index.get(block, slot, 10.0)
    assert location is not None
    np.testing.assert_allclose([location.lat, location.lng, location.accuracy], [52.5, 13.4, 5.0])
    assert location.heading is None and location.speed is None
    assert location.client_ts == 1.7e9


def test_retention_boundary() -> None:
    """Present at TTL - eps, gone at TTL + eps: for reads, and physically after a tick."""
    index = GeoIndex(ttl_s=TTL)
    block = index.allocate_block()
    slot = index.allocate_slot(block)
    index.update(block, slot, 1.0, 2.0, received_at=100.0)
    assert index.get(block, slot, 100.0 + TTL - EPS) is not None
    result = index.tick(100.0 + TTL - EPS)
    assert result.evicted_slots.size == 0
    assert index.get(block, slot, 100.0 + TTL + EPS) is None
    assert index.next_expiry() == pytest.approx(100.0 + TTL)
    result = index.tick(100.0 + TTL + EPS)
    assert result.evicted_blocks.tolist() == [block]
    assert result.evicted_slots.tolist() == [slot]
    # Overwritten, not flagged: no copy of any field remains.
    assert np.isnan(index.raw_values()[:, block, slot]).all()
    assert index.next_expiry() == float("inf")


def test_release_overwrites_locations() -> None:
    index = GeoIndex()
    block = index.allocate_block()
    s1, s2 = index.allocate_slot(block), index.allocate_slot(block)
    index.update(block, s1, 1.0, 1.0, received_at=0.0)
    index.update(block, s2, 2.0, 2.0, received_at=0.0)
    index.free_slot(block, s1)
    assert np.isnan(index.raw_values()[:, block, s1]).all()
    assert not np.isnan(index.raw_values()[0, block, s2])
    index.free_block(block)
    assert np.isnan(index.raw_values()[:, block, :]).all()
    assert index.statistics().fresh_locations == 0


def test_growth_keeps_data() -> None:
    index = GeoIndex(block_size=2, initial_blocks=1)
    first = index.allocate_block()
    slot = index.allocate_slot(first)
    index.update(first, slot, 3.0, 4.0, received_at=1.0)
    for _ in range(10):
        index.allocate_block()
    assert index.capacity == 16
    assert index.get(first, slot, 1.0) is not None
    assert index.statistics().blocks_in_use == 11


def test_raw_values_are_read_only() -> None:
    index = GeoIndex()
    with pytest.raises(ValueError, match="read-only"):
        index.raw_values()[0, 0, 0] = 1.0


# --- hints ---------------------------------------------------------------------------
def setup_two(index: GeoIndex) -> tuple[int, int, int]:
    block = index.allocate_block()
    a, b = index.allocate_slot(block), index.allocate_slot(block)
    index.update(block, a, 10.0, 10.0, received_at=0.0)
    index.update(block, b, 11.0, 11.0, received_at=0.0)
    return block, a, b


def test_first_hint_then_quiet_until_something_changes() -> None:
    index = GeoIndex(ttl_s=TTL)
    block, a, _b = setup_two(index)
    hints = index.tick(0.0).hints
    assert [h.block for h in hints] == [block]
    assert hints[0].bbox == BBox(10.0, 10.0, 11.0, 11.0)
    assert hints[0].count == 2
    index.update(block, a, 10.1, 10.1, received_at=2.0)  # inside the box, spans shrink 10 %
    assert index.tick(2.0).hints == []


def test_growing_past_the_box_hints() -> None:
    index = GeoIndex(ttl_s=TTL)
    block, a, _b = setup_two(index)
    index.tick(0.0)
    index.update(block, a, 9.0, 10.0, received_at=2.0)
    hints = index.tick(2.0).hints
    assert len(hints) == 1 and hints[0].bbox.south == 9.0


def test_shrinking_more_than_20_percent_hints() -> None:
    index = GeoIndex(ttl_s=TTL)
    block, a, _b = setup_two(index)
    index.tick(0.0)
    index.update(block, a, 10.15, 10.15, received_at=2.0)  # spans shrink to 85 %: quiet
    assert index.tick(2.0).hints == []
    index.update(block, a, 10.3, 10.3, received_at=4.0)  # spans shrink to 70 %: hint
    assert len(index.tick(4.0).hints) == 1


def test_set_change_hints_and_rate_is_one_per_second() -> None:
    index = GeoIndex(ttl_s=TTL)
    block, _a, _b = setup_two(index)
    index.tick(0.0)
    c = index.allocate_slot(block)
    index.update(block, c, 10.5, 10.5, received_at=0.5)  # inside the box, but new member
    assert index.tick(0.5).hints == []  # less than a second since the last hint
    assert len(index.tick(1.0).hints) == 1


def test_eviction_changes_the_set_and_empty_blocks_get_no_hint() -> None:
    index = GeoIndex(ttl_s=TTL)
    block = index.allocate_block()
    a = index.allocate_slot(block)
    index.update(block, a, 1.0, 1.0, received_at=0.0)
    assert len(index.tick(0.0).hints) == 1
    result = index.tick(TTL + 1)
    assert result.evicted_slots.tolist() == [a]
    assert result.hints == []  # nobody fresh: no hint
    index.update(block, a, 1.0, 1.0, received_at=TTL + 2)  # back: hints again
    assert len(index.tick(TTL + 2).hints) == 1


@given(st.lists(st.tuples(st.floats(-89, 89), st.floats(-180, 180)), min_size=1, max_size=50))
def test_hinted_box_holds_every_fresh_point(points: list[tuple[float, float]]) -> None:
    index = GeoIndex(ttl_s=TTL)
    block = index.allocate_block()
    for lat, lng in points:
        index.update(block, index.allocate_slot(block), lat, lng, received_at=0.0)
    (hint,) = index.tick(0.0).hints
    assert hint.count == len(points)
    for lat, lng in points:
        assert hint.bbox.contains(lat, lng)


def test_tick_covers_many_sessions_in_one_call() -> None:
    rng = np.random.default_rng(0)
    index = GeoIndex(ttl_s=TTL, initial_blocks=8)
    blocks = [index.allocate_block() for _ in range(300)]
    for block in blocks:
        for _ in range(5):
            index.update(
                block,
                index.allocate_slot(block),
                *rng.uniform(-50, 50, 2),
                received_at=float(rng.uniform(0, 10)),
            )
    result = index.tick(10.0)
    assert sorted(h.block for h in result.hints) == sorted(blocks)
    result = index.tick(TTL + 5.0)
    assert 0 < result.evicted_slots.size < 1500
    result = index.tick(TTL + 10.0)
    assert index.statistics().fresh_locations == 0


def test_sans_io_cores_import_without_trio() -> None:
    """Every module of locshare.geo and locshare.proto imports with trio, quart,
    hypercorn and the database drivers made unimportable."""
    code = (
        "import importlib, pkgutil, sys\n"
        "for name in ('trio', 'quart', 'quart_trio', 'hypercorn', 'asyncpg', 'trio_asyncio'):\n"
        "    sys.modules[name] = None\n"
        "import locshare.geo, locshare.proto\n"
        "for package in (locshare.geo, locshare.proto):\n"
        "    for info in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "        print(info.name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert "locshare.proto._messages" in result.stdout.split()


def test_arrays_are_read_only_views_of_the_fields() -> None:
    index = GeoIndex(ttl_s=TTL, initial_blocks=1)
    block = index.allocate_block()
    slot = index.allocate_slot(block)
    arrays = index.arrays()
    index.update(block, slot, 1.0, 2.0, received_at=5.0, accuracy=3.0, speed=4.0)
    # Views: they see the update made after they were taken.
    assert (arrays.lat[block, slot], arrays.lng[block, slot]) == (1.0, 2.0)
    assert (arrays.accuracy[block, slot], arrays.speed[block, slot]) == (3.0, 4.0)
    assert arrays.received_at[block, slot] == 5.0 and arrays.ttl_s == TTL
    assert np.isnan(arrays.heading[block, slot])
    with pytest.raises(ValueError, match="read-only"):
        arrays.lat[block, slot] = 0.0
    index.allocate_block()  # grows: the arrays are replaced, take them again
    assert index.arrays().lat.shape == (2, index.block_size)
