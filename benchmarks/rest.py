"""REST throughput and latency: session creation and joins.

    python -m benchmarks.rest [--target URL] [--sessions 200] [--concurrency 32] [--rate N]

Without ``--target`` a server is started (embedded database, pinned to one CPU) and
stopped afterwards.  Two phases: create ``--sessions`` sessions, then fill each with
``--per-session`` joins.  Closed loop by default (``--concurrency`` requests in flight:
the maximum throughput); with ``--rate`` an open loop at that many requests per second
(latency at a given load).  The client is a minimal HTTP/1.1 keep-alive client on trio
sockets, a few tens of microseconds per request, so the server is what is measured.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass, field

import orjson
import trio

from ._server import pin_self_to_load_cpus, running_server


class HttpConnection:
    """Just enough HTTP/1.1 for JSON request/response with Content-Length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        await self.stream.send_all(head + body)
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        header, _, rest = self.buffer.partition(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += await self._receive()
        self.buffer = rest[length:]
        return status, rest[:length]

    async def _fill(self) -> None:
        self.buffer += await self._receive()

    async def _receive(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        return bytes(data)


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def record(self, status: int, expected: int, ms: float) -> None:
        if status == expected:
            self.latencies_ms.append(ms)
        else:
            self.errors[status] = self.errors.get(status, 0) + 1

    def row(self) -> dict[str, float | str | int]:
        import numpy as np

        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([float("nan")])
        seconds = self.ended - self.started
        return {
            "phase": self.name,
            "requests": len(self.latencies_ms),
            "errors": sum(self.errors.values()),
            "req_per_s": round(len(self.latencies_ms) / seconds, 1) if seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(lat.max()), 2),
        }


async def run_phase(
    phase: Phase,
    host: str,
    port: int,
    jobs: list[tuple[str, str, bytes, int]],
    concurrency: int,
    rate: float | None,
) -> list[bytes]:
    results: list[bytes] = [b""] * len(jobs)
    next_job = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal next_job
        connection = HttpConnection(await trio.open_tcp_stream(host, port))
        try:
            while next_job < len(jobs):
                index = next_job
                next_job += 1
                if rate:
                    # Open loop: request i is due at start + i / rate, whether or not
                    # earlier ones have answered; latency counts from the due time.
                    due = start + index / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await trio.sleep(delay)
                    t0 = due
                else:
                    t0 = time.perf_counter()
                method, path, body, expected = jobs[index]
                status, payload = await connection.request(method, path, body)
                phase.record(status, expected, (time.perf_counter() - t0) * 1000)
                results[index] = payload
        finally:
            await connection.stream.aclose()

    phase.started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    phase.ended = time.perf_counter()
    return results


async def benchmark(
    base: str, sessions: int, per_session: int, concurrency: int, rate: float | None
) -> list[dict[str, float | str | int]]:
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    create = Phase("create session")
    bodies = [orjson.dumps({"name": f"bench {i}", "max_participants": 50}) for i in range(sessions)]
    created = await run_phase(
        create, host, port, [("POST", "/api/sessions", b, 201) for b in bodies], concurrency, rate
    )
    ids = [orjson.loads(c)["session_id"] for c in created if c.startswith(b'{"session_id')]
    jobs = [
        ("POST", f"/api/sessions/{sid}/join", orjson.dumps({"display_name": f"rider {n}"}), 201)
        for n in range(per_session)
        for sid in ids
    ]
    join = Phase("join")
    await run_phase(join, host, port, jobs, concurrency, rate)
    return [create.row(), join.row()]


def print_table(rows: list[dict[str, float | str | int]]) -> None:
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(row[h]).ljust(w) for h, w in zip(headers, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--target", help="base URL of a running server (default: start one)")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--per-session", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=None, help="open-loop requests per second")
    parser.add_argument(
        "--separate-db",
        action="store_true",
        help="PostgreSQL on the load CPUs, not sharing the server's core",
    )
    args = parser.parse_args(argv)
    pin_self_to_load_cpus()
    with running_server(args.target, separate_db=args.separate_db) as base:
        before = resource.getrusage(resource.RUSAGE_SELF)
        rows = trio.run(
            benchmark, base, args.sessions, args.per_session, args.concurrency, args.rate
        )
        after = resource.getrusage(resource.RUSAGE_SELF)
    mode = (
        f"open loop at {args.rate:g}/s"
        if args.rate
        else f"closed loop, {args.concurrency} in flight"
    )
    mode += (
        ", PostgreSQL on the load CPUs"
        if args.separate_db
        else ", embedded PostgreSQL on the server's core"
    )
    print(f"\nREST benchmark against {base} ({mode})")
    print_table(rows)
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"load client CPU: {client_cpu:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
