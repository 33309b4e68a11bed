"""The seam between the session runtime and a WebSocket implementation.

The runtime defines the seam and the network edge implements it: one transport,
wsproto on a trio stream (``locshare/net/_wsserver.py``), for both the dedicated WebSocket port and ``/ws`` on the REST port
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
from typing import Protocol

from ..proto._frames import Control, Incoming
from ..proto._messages import OutFrame


class ConnectionClosed(Exception):
    """The peer closed the connection (``code`` is ``None`` for a network failure)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Transport(Protocol):
    remote_address: str

    async def send(self, frames: Sequence[OutFrame]) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    def send_nowait(self, data: bytes) -> int: ...

    async def receive(self) -> Incoming | Control: ...

    async def pong(self, payload: bytes) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...

    async def aclose(self) -> None: ...
