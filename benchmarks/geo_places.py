"""Micro-benchmark of the places and convoy geo core (issue 14).

    python -m benchmarks.geo_places [--sessions 200] [--slots 50] [--places 20]
                                    [--route-points 2000] [--repeat 20]

Each session has ``--places`` places and a route of ``--route-points`` points
(a winding road, ~100 m between points), somewhere on the globe (a few sessions
across the antimeridian and above 80 degrees), and ``--slots`` riders driving along it
at ~25 m/s with GPS noise.  Every tick every rider has a new fix (the worst case: real
clients send every 1-2 s and the tick runs once a second).  Reported: median and p95
wall time of one tick of

* ``PlaceIndex.tick``: 20 circles (radius 200 m) per session spread along the route (a
  convoy is near one or two at a time), and the same as 500-vertex polygons; then the
  worst case: every rider gathered within 50 m, inside all 20 places at once (as
  circles, 64-gons, 500-gons);
* ``RouteIndex.tick``: steady state (every rider has history) and first fixes;
* the whole geo tick: ``GeoIndex.tick`` + places + convoy, at this size and at 10,000
  participants (``--sessions 200 --slots 50`` is 10,000);

and the alternatives measured to choose: circles through shapely instead of numpy,
the convoy through ``shapely.line_locate_point`` + ``shapely.distance`` per session.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import shapely

from locshare.geo import GeoIndex, LocalFrame, Place, PlaceIndex, Route, RouteIndex, unit_vectors

SPEED_M_S = 25.0
ROAD_STEP_M = 100.0


def timed(
    fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None
) -> tuple[float, float, float]:
    """Median and p95 wall ms of ``fn``, and its median CPU ms (this process: less
    sensitive to other work on a shared machine).  ``setup`` runs before each call,
    untimed."""
    wall, cpu = [], []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    wall.sort()
    return statistics.median(wall), wall[int(0.95 * (len(wall) - 1))], statistics.median(cpu)


def centres(sessions: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    out = [(float(rng.uniform(-60, 60)), float(rng.uniform(-180, 180))) for _ in range(sessions)]
    # A few on the awkward spots: across the antimeridian, near the pole.
    for i in range(0, sessions, 20):
        out[i] = (float(rng.uniform(-10, 10)), 179.9)
    for i in range(10, sessions, 20):
        out[i] = (float(rng.uniform(80, 84)), float(rng.uniform(-180, 180)))
    return out


def road(points: int, rng: np.random.Generator) -> np.ndarray:
    """A winding road in metres: steps of ~100 m, heading drifting."""
    heading = np.cumsum(rng.normal(0, 0.08, points))
    step = np.stack([np.cos(heading), np.sin(heading)], axis=1) * ROAD_STEP_M
    xy = np.vstack([[0.0, 0.0], np.cumsum(step[1:], axis=0)])
    return xy - xy.mean(axis=0)


class World:
    def __init__(self, args: argparse.Namespace, rng: np.random.Generator) -> None:
        self.args = args
        self.rng = rng
        self.index = GeoIndex(block_size=args.slots, initial_blocks=args.sessions)
        self.blocks = [self.index.allocate_block() for _ in range(args.sessions)]
        for block in self.blocks:
            for _ in range(args.slots):
                self.index.allocate_slot(block)
        self.frames: list[LocalFrame] = []
        self.roads: list[np.ndarray] = []
        self.routes: list[Route] = []
        build_ms = []
        for lat, lng in centres(args.sessions, rng):
            frame = LocalFrame.at(unit_vectors(lat, lng))
            xy = road(args.route_points, rng)
            rlat, rlng = frame.inverse(xy[:, 0], xy[:, 1])
            start = time.perf_counter()
            self.routes.append(Route.from_lat_lng(rlat, rlng))
            build_ms.append((time.perf_counter() - start) * 1000)
            self.frames.append(frame)
            self.roads.append(xy)
        self.route_build_ms = statistics.median(build_ms)
        # Riders: a convoy over ~5 km, starting a fifth of the way along.
        seg = np.hypot(*np.diff(self.roads[0], axis=0).T)
        self.road_along = [
            np.r_[0.0, np.cumsum(np.hypot(*np.diff(xy, axis=0).T))] for xy in self.roads
        ]
        total = float(seg.sum())
        self.position = np.sort(
            rng.uniform(0.2 * total, 0.2 * total + 5_000, (args.sessions, args.slots)), axis=1
        )
        self.now = 0.0

    def point_at(self, session: int, along: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xy = self.roads[session]
        cum = self.road_along[session]
        x = np.interp(along, cum, xy[:, 0])
        y = np.interp(along, cum, xy[:, 1])
        return x, y

    def gather(self) -> None:
        """Everyone within +-50 m of the convoy's middle (a meeting)."""
        middle = self.position.mean(axis=1, keepdims=True)
        self.position = middle + self.rng.uniform(-50, 50, self.position.shape)

    def circles(self, at_convoy: bool, radius: float = 200.0) -> list[list[Place]]:
        """20 places per session: spread along the route, or all within +-100 m of
        the convoy's middle (every rider near every place: the worst case)."""
        out = []
        for s in range(self.args.sessions):
            if at_convoy:
                along = np.full(self.args.places, float(self.position[s].mean()))
                along += np.linspace(-100, 100, self.args.places)
            else:
                along = np.linspace(0, self.road_along[s][-1], self.args.places)
            x, y = self.point_at(s, along)
            lat, lng = self.frames[s].inverse(x, y)
            out.append(
                [
                    Place.circle(f"p{i}", "poi", float(a), float(b), radius)
                    for i, (a, b) in enumerate(zip(lat, lng, strict=True))
                ]
            )
        return out

    def as_polygons(self, circles: list[list[Place]], vertices: int) -> list[list[Place]]:
        angle = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
        out = []
        for places in circles:
            session = []
            for p in places:
                assert p.radius_m is not None
                # A star-ish ring (so it is not a circle in disguise), closed.
                r = p.radius_m * (1.0 + 0.15 * np.sin(5 * angle))
                lat, lng = p.frame.inverse(r * np.cos(angle), r * np.sin(angle))
                ring = np.stack([lng, lat], axis=1)
                ring = np.vstack([ring, ring[:1]])
                session.append(Place.polygon(p.name, p.kind, [ring]))
            out.append(session)
        return out

    def move(self, speed_m_s: float = SPEED_M_S) -> None:
        """Everyone drives on for one second and sends a fix."""
        self.now += 1.0
        self.position += speed_m_s + self.rng.normal(0, 1.0, self.position.shape)
        data = self.index._data
        for s, block in enumerate(self.blocks):
            x, y = self.point_at(s, self.position[s])
            x = x + self.rng.normal(0, 5.0, x.shape)
            y = y + self.rng.normal(0, 5.0, y.shape)
            lat, lng = self.frames[s].inverse(x, y)
            data[0, block] = lat
            data[1, block] = lng
            data[2, block] = 8.0  # accuracy
            data[6, block] = self.now


def place_index(world: World, places: list[list[Place]]) -> PlaceIndex:
    index = PlaceIndex(block_size=world.args.slots, initial_rows=world.args.sessions)
    for block, session in zip(world.blocks, places, strict=True):
        for place in session:
            index.add_place(block, place)
    return index


def route_index(world: World) -> RouteIndex:
    index = RouteIndex(block_size=world.args.slots, initial_rows=world.args.sessions)
    for block, route in zip(world.blocks, world.routes, strict=True):
        index.set_route(block, route)
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.geo_places")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--slots", type=int, default=50)
    parser.add_argument("--places", type=int, default=20)
    parser.add_argument("--route-points", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    world = World(args, rng)
    world.move()
    rows: list[tuple[str, float, float, float]] = []

    def places_case(name: str, places: list[list[Place]], moving: bool) -> PlaceIndex:
        index = place_index(world, places)
        start = world.position.copy()
        world.move(SPEED_M_S if moving else 0.0)
        index.tick(world.index.arrays(), world.now)

        def one() -> None:
            index.tick(world.index.arrays(), world.now)

        def step() -> None:
            world.move(SPEED_M_S if moving else 0.0)

        rows.append((name, *timed(one, args.repeat, step)))
        world.position = start
        return index

    spread = world.circles(at_convoy=False)
    driving = world.position.copy()
    world.gather()
    crowded = world.circles(at_convoy=True)
    places_case("places: circles along the route", spread, moving=True)
    places_case("places: 500-gons along the route", world.as_polygons(spread, 500), True)
    places_case("places: circles, all riders in all", crowded, moving=False)
    places_case("places: 64-gons, all riders in all", world.as_polygons(crowded, 64), False)
    places_case("places: 500-gons, all riders in all", world.as_polygons(crowded, 500), False)
    world.position = driving

    routes = route_index(world)
    routes.tick(world.index.arrays(), world.now)

    def convoy() -> None:
        routes.tick(world.index.arrays(), world.now)

    rows.append(("convoy: steady (history)", *timed(convoy, args.repeat, world.move)))

    def forget() -> None:
        world.move()
        for block in world.blocks:
            routes.clear_route(block)
        for block, route in zip(world.blocks, world.routes, strict=True):
            routes.set_route(block, route)

    first = timed(convoy, max(3, args.repeat // 4), forget)
    rows.append(("convoy: first fixes (no history)", *first))

    places = place_index(world, spread)
    places.tick(world.index.arrays(), world.now)
    routes.tick(world.index.arrays(), world.now)

    def moved() -> None:
        world.move()
        world.index._moved[:] = True

    def whole() -> None:
        world.index.tick(world.now)
        arrays = world.index.arrays()
        places.tick(arrays, world.now)
        routes.tick(arrays, world.now)

    rows.append(("whole geo tick (index+places+convoy)", *timed(whole, args.repeat, moved)))

    # --- the alternatives ------------------------------------------------------------------
    # Circles through shapely (a 64-gon per circle, contains + boundary distance per pair)
    # against numpy's great-circle distance, over the same dense pairs.
    fixes = world.args.sessions * world.args.slots
    pairs = fixes * args.places
    arrays = world.index.arrays()
    lat = arrays.lat[world.blocks].ravel()
    lng = arrays.lng[world.blocks].ravel()
    centres_u = np.array([[p.frame.centre for p in s] for s in crowded])  # (sessions, P, 3)

    def circles_numpy() -> None:
        u = unit_vectors(lat, lng).reshape(args.sessions, args.slots, 1, 3)
        d = u - centres_u[:, None, :, :]
        chord = np.sqrt((d * d).sum(axis=-1))
        _ = 200.0 - 2 * 6_371_008.8 * np.arcsin(np.minimum(chord / 2, 1.0))

    polys = world.as_polygons(crowded, 64)
    shapes = np.array([[p.shape for p in s] for s in polys], dtype=object)
    bounds = np.array([[p.boundary for p in s] for s in polys], dtype=object)

    def circles_shapely() -> None:
        sx = np.empty((args.sessions, args.slots, args.places))
        sy = np.empty_like(sx)
        for s in range(args.sessions):
            for i, p in enumerate(polys[s]):
                x, y = p.frame.forward(
                    lat[s * args.slots : (s + 1) * args.slots],
                    lng[s * args.slots : (s + 1) * args.slots],
                )
                sx[s, :, i], sy[s, :, i] = x, y
        g = np.broadcast_to(shapes[:, None, :], sx.shape)
        b = np.broadcast_to(bounds[:, None, :], sx.shape)
        inside = shapely.contains_xy(g, sx, sy)
        _ = np.where(inside, 1, -1) * shapely.distance(b, shapely.points(sx, sy))

    numpy_ms = timed(circles_numpy, 5)[2]
    shapely_ms = timed(circles_shapely, 2)[2]

    # The convoy through shapely's own functions, per session.
    lines = [shapely.linestrings(*r.frame.forward(r.lat, r.lng)) for r in world.routes]

    def convoy_shapely() -> None:
        for s, block in enumerate(world.blocks):
            x, y = world.routes[s].frame.forward(arrays.lat[block], arrays.lng[block])
            pts = shapely.points(x, y)
            shapely.line_locate_point(lines[s], pts)
            shapely.distance(lines[s], pts)

    sample = max(1, args.sessions // 20)
    start = time.perf_counter()
    for s in range(sample):
        x, y = world.routes[s].frame.forward(
            arrays.lat[world.blocks[s]], arrays.lng[world.blocks[s]]
        )
        pts = shapely.points(x, y)
        shapely.line_locate_point(lines[s], pts)
        shapely.distance(lines[s], pts)
    naive_ms = (time.perf_counter() - start) * 1000 * args.sessions / sample

    big = World(argparse.Namespace(**{**vars(args), "sessions": 1, "route_points": 20_000}), rng)

    print(
        f"geo places/convoy: {args.sessions} sessions x {args.slots} riders"
        f" ({fixes:,} fresh fixes per tick), {args.places} places each,"
        f" routes of {args.route_points:,} points"
    )
    print(f"{'case':<40} {'median ms':>10} {'p95 ms':>8} {'cpu ms':>8}")
    for name, median, p95, cpu in rows:
        print(f"{name:<40} {median:>10.1f} {p95:>8.1f} {cpu:>8.1f}")
    print(f"alternatives, every pair ({pairs:,} fix x place pairs, all near; cpu ms):")
    print(f"  circles, numpy great-circle distance      {numpy_ms:>8.1f} ms")
    print(f"  circles as 64-gons, shapely contains+dist {shapely_ms:>8.1f} ms")
    print(
        f"  convoy, shapely line_locate_point+distance per session (extrapolated) {naive_ms:.0f} ms"
    )
    print(
        f"building a route: {world.route_build_ms:.1f} ms at {args.route_points:,} points,"
        f" {big.route_build_ms:.1f} ms at 20,000"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
