"""Raw-socket tools for the attack tests: bytes out exactly as written, answers parsed
without a client library that would normalise, retry or refuse them."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import trio

from tests.conftest import Running

PORTS = ("rest", "ws")


def port_of(server: Running, which: str) -> int:
    """``rest``: the REST port (front door, ``/ws`` too); ``ws``: the dedicated port."""
    return server.info.port if which == "rest" else server.info.ws_port


def upgrade_request(resource: str, *, extra_headers: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET " + resource.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + extra_headers + b"\r\n"
    )


async def exchange(
    port: int, data: bytes, *, timeout: float = 5.0, until: int | None = None
) -> bytes:
    """Send ``data`` in one write; everything the server answers until it closes,
    ``timeout`` passes or (``until``) that many complete responses are in.

    ``until`` matters on the REST port: it keeps a connection open for 30 s after its
    last answer, even when the client asked it to close (docs/reliability.md)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    answer = b""
    try:
        await stream.send_all(data)
        with trio.move_on_after(timeout):
            while until is None or len(answers(answer)) < until:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                answer += chunk
    except trio.BrokenResourceError:
        pass  # a reset after the answer (we were still sending): keep what arrived
    finally:
        await trio.aclose_forcefully(stream)
    return answer


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def answers(data: bytes) -> list[Answer]:
    """The complete HTTP responses in a byte stream, in order (bodies by Content-Length).
    A 101 ends the list: what follows it is WebSocket frames."""
    found: list[Answer] = []
    while data.startswith(b"HTTP/1."):
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            break
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        if len(data) < size:
            break  # not complete yet
        found.append(Answer(status, headers, data[:size]))
        if status == 101:
            break
        data = data[size:]
    return found


def statuses(data: bytes) -> list[int]:
    return [answer.status for answer in answers(data)]
