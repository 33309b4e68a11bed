"""``python -m benchmarks wire``: what the load client's framing costs, hand-rolled
(:mod:`benchmarks._wire`) versus wsproto, on real server frames.

The frames are locshare's own: ``locations`` frames with three entries, encoded and
framed by the server's protocol module (``OutFrame.wire``), concatenated as they
arrive on a socket.  Per frame, in microseconds on this machine:

* ``count``: find the frame, test the type prefix, ``bytes.count`` the entries (what
  a counting receiver does);
* ``decode``: the same plus ``orjson.loads`` and a timestamp parse per entry (what a
  timing receiver does);
* ``wsproto``: ``WSConnection.receive_data`` + iterating ``events()`` (an event object
  per frame, UTF-8 validation, payload copied into a ``str``), with no counting;
* ``send``: one masked client frame of a location update, ours versus wsproto's.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any

from . import _wire as w

FRAMES = 2000


def _server_stream() -> bytes:
    from locshare.proto import _messages as proto

    entries = [
        {
            "user_id": f"00000000-0000-4000-8000-{i:012d}",
            "lat": 45.1 + i / 1000,
            "lng": 6.2,
            "accuracy": 8.5,
            "heading": 87.0,
            "speed": 13.9,
            "timestamp": w.stamp(time.time()),
        }
        for i in range(3)
    ]
    frame = proto.encode("locations", {"updates": entries}).wire
    return frame * FRAMES


def _per_frame_us(fn: Callable[[], Any], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return round(best / FRAMES * 1e6, 3)


def main() -> dict[str, Any]:
    stream = _server_stream()
    own = b'"user_id":"00000000-0000-4000-8000-000000000001"'

    def count() -> None:
        messages, _ = w.scan_ws(stream)
        n = 0
        for kind, start, end in messages:
            if kind == w.K_UPDATES:
                n += stream.count(w.USER_ID_KEY, start, end)
                stream.find(own, start, end)
        assert n == 3 * FRAMES

    def decode() -> None:
        messages, _ = w.scan_ws(stream)
        for _, start, end in messages:
            for entry in w.decode_entries(stream[start:end], reference=False):
                w.parse_stamp(entry["timestamp"])  # type: ignore[arg-type]

    def wsproto_events() -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request, TextMessage

        ws = WSConnection(ConnectionType.CLIENT)
        request = ws.send(Request(host="bench", target="/ws"))
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + w.WS_GUID).digest())
        ws.receive_data(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        list(ws.events())
        ws.receive_data(stream)
        n = sum(1 for event in ws.events() if isinstance(event, TextMessage))
        assert n == FRAMES

    update = w.locshare_update(45.1, 6.2, time.time())

    def send_ours() -> None:
        for _ in range(FRAMES):
            w.ws_frame(update, b"\x12\x34\x56\x78")

    def send_wsproto() -> None:
        from wsproto.frame_protocol import FrameProtocol

        protocol = FrameProtocol(client=True, extensions=[])
        text = update.decode()
        for _ in range(FRAMES):
            protocol.send_data(text, fin=True)

    results = {
        "frame_bytes": len(stream) // FRAMES,
        "count_us_per_frame": _per_frame_us(count),
        "decode_us_per_frame": _per_frame_us(decode),
        "wsproto_us_per_frame": _per_frame_us(wsproto_events),
        "send_ours_us_per_frame": _per_frame_us(send_ours),
        "send_wsproto_us_per_frame": _per_frame_us(send_wsproto),
    }
    results["wsproto_over_count"] = round(
        results["wsproto_us_per_frame"] / results["count_us_per_frame"], 1
    )
    return results
