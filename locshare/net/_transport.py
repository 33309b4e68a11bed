"""The seam between the session runtime and a WebSocket implementation.

One transport implements :class:`Transport`: wsproto on a trio stream
(``_wsserver.py``), for both the dedicated WebSocket port and ``/ws`` on the REST port
(whose front door, ``_front.py``, hands WebSocket upgrades to the same code).  The
session runtime only ever talks to this interface, so the protocol logic exists once.

Contract:
    * :meth:`Transport.send` writes every frame, in order, in as few writes as the
      implementation allows; it may block while the peer is not reading.
      :meth:`Transport.send_bytes` does the same for raw bytes of complete frames.
    * :meth:`Transport.send_nowait` writes what the socket accepts *now* and returns how
      many bytes that was (0: would block, or this transport cannot write
      synchronously).  Only called while no ``send`` is in progress.
    * :meth:`Transport.receive` returns the next *complete* message, or a
      :class:`Control` frame (ping or pong: the caller decides whether to answer a ping,
      with :meth:`Transport.pong`, so control frames count against the same message
      budget as data), or raises :class:`ConnectionClosed` (peer closed, network error)
      or :class:`~locshare.errors.MessageTooBig` (message over the size limit).
    * :meth:`Transport.close` sends a close frame (once); the peer's answer then shows
      up as :class:`ConnectionClosed` from :meth:`receive`.
    * :meth:`Transport.aclose` tears the connection down; idempotent, never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from ..errors import ApiError
from ._protocol import CLOSE_SESSION_ENDED, CLOSE_TRY_AGAIN, CLOSE_UNAUTHORIZED, OutFrame, encode


class ConnectionClosed(Exception):
    """The peer closed the connection (``code`` is ``None`` for a network failure)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Incoming:
    data: str | bytes
    is_text: bool


OP_PING: Final = 0x9
OP_PONG: Final = 0xA


@dataclass(frozen=True, slots=True)
class Control:
    """A ping or pong from the peer (``opcode`` is :data:`OP_PING` or :data:`OP_PONG`)."""

    opcode: int
    payload: bytes


class Transport(Protocol):
    remote_address: str

    async def send(self, frames: Sequence[OutFrame]) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    def send_nowait(self, data: bytes) -> int: ...

    async def receive(self) -> Incoming | Control: ...

    async def pong(self, payload: bytes) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...

    async def aclose(self) -> None: ...


async def refuse_after_upgrade(transport: Transport, exc: ApiError | None) -> None:
    """The upgrade already happened when admission failed (state changed meanwhile, or
    the database went away): say why with a frame and a close code instead of HTTP."""
    try:
        if exc is None:
            await transport.close(CLOSE_TRY_AGAIN, "try again later")
        elif exc.code == "session_ended":
            reason = exc.message.removeprefix("session ")
            await transport.send([encode("session_ended", {"reason": reason})])
            await transport.close(CLOSE_SESSION_ENDED, "session ended")
        elif exc.code == "unauthorized":
            await transport.close(CLOSE_UNAUTHORIZED, exc.message[:100])
        else:
            await transport.send([encode("error", {"code": exc.code, "message": exc.message})])
            await transport.close(CLOSE_TRY_AGAIN, "try again later")
    except ConnectionClosed:
        pass
