"""A deliberately minimal WebSocket client that can send what real clients never do:
fragments, invalid UTF-8 in text frames, reserved opcodes, lying lengths."""

from __future__ import annotations

import base64
import os
import struct

import trio

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    flag = 0x80 if mask else 0
    if n < 126:
        head += bytes([flag | n])
    elif n < 65536:
        head += bytes([flag | 126]) + struct.pack("!H", n)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


class Closed(Exception):
    """The server closed: its close code and raw reason bytes (``code`` ``None``: the
    connection ended without a close frame)."""

    def __init__(self, code: int | None, reason: bytes = b"") -> None:
        super().__init__(code)
        self.code = code
        self.reason = reason


class RawWebSocket:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.send_failed = False

    @classmethod
    async def connect(cls, port: int, resource: str, *, early: bytes = b"") -> RawWebSocket:
        """``early``: frames sent in the same write as the request, before the answer."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                f"GET {resource} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            + early
        )
        ws = cls(stream)
        while b"\r\n\r\n" not in ws.buffer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise Closed(None)
            ws.buffer += chunk
        head, _, ws.buffer = ws.buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            await stream.aclose()
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        return ws

    async def send_raw(self, data: bytes) -> None:
        """Send; if the server already closed, stay quiet: :meth:`receive` will report
        its close frame (still in our receive buffer) or the broken connection."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.send_failed = True

    async def send_text(self, text: str) -> None:
        await self.send_raw(frame(TEXT, text.encode()))

    async def _need(self, n: int) -> bytes:
        while len(self.buffer) < n:
            try:
                chunk = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise Closed(None) from exc
            if not chunk:
                raise Closed(None)
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def receive(self) -> tuple[int, bytes]:
        """The next complete message from the server (server frames are unmasked).

        Raises :class:`Closed` with the server's close code."""
        parts: list[bytes] = []
        first_opcode = None
        while True:
            b0, b1 = await self._need(2)
            opcode, fin = b0 & 0x0F, bool(b0 & 0x80)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self._need(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self._need(8))
            payload = await self._need(n)
            if opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                await self.send_raw(frame(CLOSE, payload[:2]))
                raise Closed(code, payload[2:])
            if opcode == PING:
                await self.send_raw(frame(PONG, payload))
                continue
            if opcode == PONG:
                continue
            first_opcode = opcode if first_opcode is None else first_opcode
            parts.append(payload)
            if fin:
                return first_opcode, b"".join(parts)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
