"""Micro-benchmark of the geo core: one tick over many sessions.

    python -m benchmarks.geo_tick [--sessions 10000] [--slots 50] [--repeat 20]

A tick evicts expired locations and computes the fresh bounding box (antimeridian-
aware) and hint decision of every session, vectorized.  Reported: median and p95 wall
time of one tick, for (a) every slot fresh and moving (a new hint for each session),
(b) every slot fresh and still (hysteresis: no hints), (c) half the slots expiring.
Also the cost of one update (the per-message path).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from locshare.geo import GeoIndex


def build(sessions: int, slots: int, rng: np.random.Generator) -> tuple[GeoIndex, list[int]]:
    index = GeoIndex(block_size=slots, ttl_s=30.0, initial_blocks=sessions)
    blocks = [index.allocate_block() for _ in range(sessions)]
    centers = rng.uniform([-60, -180], [60, 180], (sessions, 2))
    for block, (lat, lng) in zip(blocks, centers, strict=True):
        for _ in range(slots):
            slot = index.allocate_slot(block)
            index.update(
                block, slot, lat + rng.normal(0, 0.05), lng + rng.normal(0, 0.05), received_at=0.0
            )
    return index, blocks


def timed(fn, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.geo_tick")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    index, blocks = build(args.sessions, args.slots, rng)
    data = index._data
    now = [1.0]

    def moving() -> None:
        now[0] += 1.0
        data[0] += rng.normal(0, 0.02, data[0].shape)  # everyone moved: boxes change
        data[6][:] = now[0]
        index._moved[:] = True
        index.tick(now[0])

    def still() -> None:
        now[0] += 1.0
        data[6][:] = now[0]
        index._moved[:] = True
        index.tick(now[0])

    rows = [("moving (hint per session)", *timed(moving, args.repeat))]
    index.tick(now[0] + 1)
    rows.append(("updated, boxes unchanged", *timed(still, args.repeat)))

    def idle() -> None:
        now[0] += 1.0
        data[6][:] = now[0]
        index.tick(now[0])

    rows.append(("nobody moved", *timed(idle, args.repeat)))

    def half_expiring() -> None:
        now[0] += 31.0
        data[6][:, ::2] = now[0]  # half the slots refreshed, half expire now
        index.tick(now[0])
        data[:, :, 1::2] = np.where(
            np.isnan(data[:, :, 1::2]), 1.0, data[:, :, 1::2]
        )  # refill for the next round

    rows.append(("half the slots expiring", *timed(half_expiring, max(3, args.repeat // 4))))
    block, slot = blocks[0], 0

    def one_update() -> None:
        for i in range(10_000):
            index.update(block, slot, 1.0, 2.0, received_at=now[0] + i * 1e-6, accuracy=5.0)

    update_ms, _ = timed(one_update, 5)
    print(
        f"geo tick, {args.sessions} sessions x {args.slots} slots ({args.sessions * args.slots:,} slots)"
    )
    print(f"{'case':<28} {'median ms':>10} {'p95 ms':>8}")
    for name, median, p95 in rows:
        print(f"{name:<28} {median:>10.1f} {p95:>8.1f}")
    print(f"one update: {update_ms / 10_000 * 1000:.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
