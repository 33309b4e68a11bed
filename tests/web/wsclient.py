"""A participant's WebSocket for the browser tests: wsproto over a plain TCP socket, with
a reader thread that answers pings and keeps every text frame with its arrival time.

The browser tests are synchronous (Playwright's sync API), so this client is too; the
thread stamps frames as they arrive (``time.monotonic()``), independent of when the
test looks at them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsproto import ConnectionState, ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

CONNECT_TIMEOUT_S = 10.0
WAIT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Frame:
    at: float  # time.monotonic() when it arrived
    type: str
    data: dict[str, Any]


class WsClient:
    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S)
        self.sock.settimeout(None)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.lock = threading.Lock()  # wsproto is not thread-safe: one user at a time
        self.changed = threading.Condition()
        self.frames: list[Frame] = []
        self.accepted = False
        self.closed: int | None = None  # the close code, once closed
        self._text: list[str] = []
        self._stopping = threading.Event()
        self._sender: threading.Thread | None = None
        self.position: dict[str, Any] = {}
        self._send_raw(self.ws.send(Request(host=f"127.0.0.1:{port}", target=f"/ws?token={token}")))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        with self.changed:
            if not self.changed.wait_for(
                lambda: self.accepted or self.closed is not None, CONNECT_TIMEOUT_S
            ):
                raise TimeoutError("no answer to the WebSocket upgrade")
        if not self.accepted:
            raise ConnectionError(f"upgrade refused ({self.closed})")

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_raw(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)

    def send(self, type_: str, data: dict[str, Any] | None = None) -> None:
        frame = {"type": type_} if data is None else {"type": type_, "data": data}
        with self.lock:
            self._send_raw(self.ws.send(TextMessage(json.dumps(frame))))

    def _read(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(65536)
                with self.lock:
                    self.ws.receive_data(chunk or None)
                    for event in self.ws.events():
                        self._handle(event)
                if not chunk or self.closed is not None:
                    break
        except OSError:
            pass
        finally:
            with self.changed:
                if self.closed is None:
                    self.closed = 1006
                self.changed.notify_all()

    def _handle(self, event: object) -> None:
        if isinstance(event, AcceptConnection):
            with self.changed:
                self.accepted = True
                self.changed.notify_all()
        elif isinstance(event, RejectConnection):
            with self.changed:
                self.closed = event.status_code
                self.changed.notify_all()
        elif isinstance(event, TextMessage):
            self._text.append(event.data)
            if event.message_finished:
                frame = json.loads("".join(self._text))
                self._text.clear()
                with self.changed:
                    self.frames.append(
                        Frame(time.monotonic(), frame["type"], frame.get("data") or {})
                    )
                    self.changed.notify_all()
        elif isinstance(event, Message):
            pass  # binary: the server sends none
        elif isinstance(event, Ping):
            self._send_raw(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self.ws.state is ConnectionState.REMOTE_CLOSING:  # not an answer to ours
                self._send_raw(self.ws.send(event.response()))
            with self.changed:
                self.closed = event.code
                self.changed.notify_all()

    # --- for the tests ---------------------------------------------------------------------
    def mark(self) -> int:
        """A position in the frames received so far: wait_for(after=mark) looks past it."""
        with self.changed:
            return len(self.frames)

    def wait_for(
        self,
        type_: str,
        match: Callable[[dict[str, Any]], bool] = lambda _data: True,
        *,
        after: int = 0,
        timeout: float = WAIT_TIMEOUT_S,
    ) -> Frame:
        """The first frame of this type (from `after` on) whose data matches."""

        def found() -> Frame | None:
            return next((f for f in self.frames[after:] if f.type == type_ and match(f.data)), None)

        with self.changed:
            if not self.changed.wait_for(lambda: found() is not None or self.closed, timeout):
                seen = [f.type for f in self.frames[after:]][-20:]
                raise AssertionError(f"no {type_} frame within {timeout} s; last frames: {seen}")
            frame = found()
            if frame is None:
                raise AssertionError(f"closed with {self.closed} before a {type_} frame")
            return frame

    def of_type(self, type_: str, *, after: int = 0) -> list[Frame]:
        with self.changed:
            return [f for f in self.frames[after:] if f.type == type_]

    def keep_sending(self, position: dict[str, Any], every_s: float = 1.0) -> None:
        """Like a phone: sends ``self.position`` (set to `position`; change it at will)
        now and then every `every_s` seconds, until closed."""
        self.position = position

        def run() -> None:
            while self.closed is None:
                with contextlib.suppress(LocalProtocolError, OSError):
                    self.send("location_update", self.position)
                if self._stopping.wait(every_s):
                    return

        if self._sender is None:
            self._sender = threading.Thread(target=run, daemon=True)
            self._sender.start()

    def close(self) -> None:
        self._stopping.set()
        if self._sender is not None:
            self._sender.join(timeout=5)
        # Already closing (LocalProtocolError) or gone (OSError): nothing left to say.
        with self.lock, contextlib.suppress(LocalProtocolError, OSError):
            if self.closed is None and self.accepted:
                self._send_raw(self.ws.send(CloseConnection(code=1000)))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.reader.join(timeout=5)
