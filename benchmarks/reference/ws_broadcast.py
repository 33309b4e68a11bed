"""A plain room broadcast with the asyncio ``websockets`` library: what a typical
Python developer writes for "share my position with the group".

    python benchmarks/reference/ws_broadcast.py --port 8765

Rooms are chosen by the ``room`` query parameter; every text message is sent as-is to
everyone in the room, the sender included.  No authentication, no validation, no
batching, no state: the reference point for ``python -m benchmarks compare``.
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: dict[str, set[ServerConnection]] = {}


async def handler(websocket: ServerConnection) -> None:
    query = urlsplit(websocket.request.path if websocket.request else "/").query
    room = (parse_qs(query).get("room") or [""])[0]
    members = rooms.setdefault(room, set())
    members.add(websocket)
    try:
        async for message in websocket:
            broadcast(members, message)
    except websockets.ConnectionClosed:
        pass
    finally:
        members.discard(websocket)
        if not members:
            rooms.pop(room, None)


async def main(host: str, port: int) -> None:
    async with serve(handler, host, port) as server:  # library defaults
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
