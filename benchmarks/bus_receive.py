"""How long a bus message waits on a busy node: coredis's pub/sub against the bus's own
client (``locshare/cluster/_resp.py``).

    python -m benchmarks.bus_receive [--rate 320] [--channels 16] [--busy-ms 5 20]
                                     [--seconds 10]

Starts a private ``redis-server`` (PATH, Unix socket, no persistence) and, for each
receiver and each ``--busy-ms``: one publisher process sending ``--rate`` messages a
second over ``--channels`` channels (as one other node does: 16 bucket channels x 20 bus
ticks), each stamped with its wall time, and one receiver process whose trio loop is
kept busy by 50 tasks that spin ``--busy-ms`` in total per scheduling round (a node
with many sockets).  Reported: messages received and the median, p95 and largest wait
(publish to handling) in milliseconds, with the machine's speed reference.  Traffic
stays on the Unix socket; every process ends by itself after ``--seconds``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import trio
import trio.lowlevel

from benchmarks._speed import label, reference

BUSY_TASKS = 50


async def _busy(busy_ms: float) -> None:
    share = busy_ms / 1000 / BUSY_TASKS
    while True:
        end = time.perf_counter() + share
        while time.perf_counter() < end:
            pass
        await trio.lowlevel.checkpoint()


def _summary(waits: list[float]) -> dict[str, float]:
    waits.sort()
    if not waits:
        return {"received": 0}

    def at(p: float) -> float:
        return round(waits[int(p * (len(waits) - 1))] * 1000, 1)

    return {"received": len(waits), "p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": at(1.0)}


async def receive(url: str, channels: int, busy_ms: float, seconds: float, how: str) -> None:
    names = [f"c{i}".encode() for i in range(channels)]
    waits: list[float] = []

    def stamp(data: bytes) -> None:
        waits.append(time.time() - orjson.loads(data)["t"])

    if how == "own":
        from locshare.cluster._resp import READ_BYTES, subscribe

        stream, reader, _early = await subscribe(url, names)
        print("ready", flush=True)
        async with stream:
            with trio.move_on_after(seconds):
                async with trio.open_nursery() as nursery:
                    for _ in range(BUSY_TASKS):
                        nursery.start_soon(_busy, busy_ms)
                    while True:
                        reader.feed(await stream.receive_some(READ_BYTES))
                        for reply in reader.replies():
                            if isinstance(reply, list) and reply[0] == b"message":
                                stamp(reply[2])  # type: ignore[arg-type]
    else:
        import coredis

        client = coredis.Redis.from_url(url, decode_responses=False)
        async with client, client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(*names)
            print("ready", flush=True)
            with trio.move_on_after(seconds):
                async with trio.open_nursery() as nursery:
                    for _ in range(BUSY_TASKS):
                        nursery.start_soon(_busy, busy_ms)
                    async for message in pubsub:
                        if message.get("type") == "message":
                            stamp(message["data"])
    print(orjson.dumps(_summary(waits)).decode(), flush=True)


async def publish(url: str, channels: int, rate: float, seconds: float) -> None:
    import coredis

    per_tick = rate / 20
    pad = "x" * max(0, int(80_000 / per_tick))  # ~80 KB per tick, like 10,000 riders
    client = coredis.Redis.from_url(url, decode_responses=False)
    sent = 0
    async with client:
        start = trio.current_time()
        tick = 0
        while trio.current_time() - start < seconds:
            tick += 1
            async with client.pipeline(transaction=False) as pipe:
                while sent < int(tick * per_tick):
                    body = orjson.dumps({"t": time.time(), "pad": pad})
                    pipe.publish(f"c{sent % channels}", body)
                    sent += 1
            await trio.sleep_until(start + tick / 20)


def _run_pair(url: str, args: argparse.Namespace, how: str, busy_ms: float) -> dict[str, float]:
    me = [sys.executable, "-m", "benchmarks.bus_receive"]
    receiver = subprocess.Popen(
        [
            *me,
            "--role",
            "receive",
            "--how",
            how,
            "--url",
            url,
            "--busy-ms",
            str(busy_ms),
            "--channels",
            str(args.channels),
            "--seconds",
            str(args.seconds + 3),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    assert receiver.stdout.readline().strip() == "ready"
    subprocess.run(
        [
            *me,
            "--role",
            "publish",
            "--url",
            url,
            "--rate",
            str(args.rate),
            "--channels",
            str(args.channels),
            "--seconds",
            str(args.seconds),
        ],
        check=True,
        timeout=args.seconds + 30,
    )
    out, _ = receiver.communicate(timeout=args.seconds + 60)
    return dict(orjson.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bus_receive")
    parser.add_argument("--rate", type=float, default=320.0)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--busy-ms", type=float, nargs="+", default=[5.0, 20.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--role", choices=["main", "receive", "publish"], default="main")
    parser.add_argument("--how", choices=["coredis", "own"], default="own")
    parser.add_argument("--url", default="")
    args = parser.parse_args(argv)
    if args.role == "receive":
        trio.run(receive, args.url, args.channels, args.busy_ms[0], args.seconds, args.how)
        return 0
    if args.role == "publish":
        trio.run(publish, args.url, args.channels, args.rate, args.seconds)
        return 0
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not on PATH", file=sys.stderr)
        return 2
    machine = reference()
    with tempfile.TemporaryDirectory(prefix="locshare-bus-bench-") as directory:
        sock = Path(directory) / "redis.sock"
        redis = subprocess.Popen(
            [
                binary,
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            while not sock.exists():
                time.sleep(0.02)
            url = f"unix://{sock}"
            print(
                f"{label(machine)}; {args.rate:g} messages/s over"
                f" {args.channels} channels, {args.seconds:g} s each"
            )
            print("| receiver | busy per round | received | p50 ms | p95 ms | max ms |")
            print("| --- | --- | --- | --- | --- | --- |")
            for busy_ms in args.busy_ms:
                for how in ("coredis", "own"):
                    r = _run_pair(url, args, how, busy_ms)
                    print(
                        f"| {how} | {busy_ms:g} ms | {r.get('received', 0)} |"
                        f" {r.get('p50_ms', '-')} | {r.get('p95_ms', '-')} | {r.get('max_ms', '-')} |",
                        flush=True,
                    )
        finally:
            redis.terminate()
            redis.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
