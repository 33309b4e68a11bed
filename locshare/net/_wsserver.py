"""The dedicated WebSocket listener (the fast path): wsproto on plain trio streams.

Why it exists: per frame, quart-trio on hypercorn costs about 150 us and
trio-websocket about 90 us on this machine; broadcasting one pre-encoded frame with
one ``send_all`` per recipient is much cheaper still (docs/design.md).  Here wsproto
parses the handshake and every unusual incoming frame, :mod:`._frames` the common ones
(complete, masked, unfragmented data frames), and outgoing data frames are the shared
bytes of :attr:`OutFrame.wire`, written directly.

Resource handling:
    :func:`serve_websockets` owns a nursery with one accept loop per listener and one
    short-lived handshake task per TCP connection (bounded by ``HANDSHAKE_TIMEOUT_S``).
    A successful handshake hands the stream to the session runtime
    (:meth:`Hub.connect`), whose connection task owns and closes it from then on.
    A refused handshake gets an HTTP error with a JSON body before the upgrade.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Sequence
from urllib.parse import parse_qs

import orjson
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from .._hub import Hub
from ..errors import (
    DEFAULT_RETRY_AFTER_S,
    ApiError,
    LocshareError,
    MessageTooBig,
    StorageUnavailable,
)
from ._frames import FastFrames
from ._protocol import OutFrame
from ._transport import ConnectionClosed, Incoming, refuse_after_upgrade

log = logging.getLogger("locshare.ws")

HANDSHAKE_TIMEOUT_S = 10.0
RECEIVE_CHUNK_BYTES = 65536
LINGER_S = 0.5
WS_PATHS = ("/ws", "/ws/")
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class WsprotoTransport:
    """:class:`~locshare.net._transport.Transport` over a trio stream and wsproto."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSConnection,
        remote_address: str,
        max_message_bytes: int,
        *,
        early: bytes = b"",
        fast_frames: bool = True,
    ) -> None:
        self._stream = stream
        self._ws = ws
        self.remote_address = remote_address
        self._max = max_message_bytes
        self._send_lock = trio.StrictFIFOLock()
        sock = getattr(stream, "socket", None)
        self._fd: int | None = sock.fileno() if sock is not None else None
        self._text: list[str] = []
        # The common frames are decoded by FastFrames until something unusual arrives
        # (``fast_frames=False``: wsproto alone, for comparison in the tests).
        self._fast = FastFrames(max_message_bytes) if fast_frames else None
        self._ws_fed = not fast_frames
        # ``early``: frames the client sent right behind its request, which wsproto's
        # server handshake would drop.
        if early:
            if self._fast is not None:
                self._fast.feed(early)
            else:
                ws.receive_data(early)
        self._bytes: list[bytes] = []
        self._size = 0
        self._closed = False

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(None) from exc

    async def send_bytes(self, data: bytes) -> None:
        await self._write(data)

    def send_nowait(self, data: bytes) -> int:
        """Write to the non-blocking socket directly (the fast path of fan-out)."""
        if self._fd is None or self._closed or self._send_lock.locked():
            return 0
        try:
            return os.write(self._fd, data)
        except OSError:  # would block, or broken: the writer's send() finds out properly
            return 0

    async def send(self, frames: Sequence[OutFrame]) -> None:
        if len(frames) == 1:
            await self._write(frames[0].wire)
        else:
            await self._write(b"".join([frame.wire for frame in frames]))

    async def receive(self) -> Incoming:
        ws = self._ws
        while True:
            # wsproto has events only if it was fed: always once the fast path is off,
            # and after a control frame passed through.
            for event in ws.events() if self._ws_fed or self._fast is None else ():
                if isinstance(event, TextMessage):
                    self._collect(len(event.data))
                    self._text.append(event.data)
                    if event.message_finished:
                        text, self._text, self._size = "".join(self._text), [], 0
                        return Incoming(text, True)
                elif isinstance(event, BytesMessage):
                    self._collect(len(event.data))
                    self._bytes.append(bytes(event.data))
                    if event.message_finished:
                        data, self._bytes, self._size = b"".join(self._bytes), [], 0
                        return Incoming(data, False)
                elif isinstance(event, Ping):
                    await self._write(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await self._answer_close(event)
                    raise ConnectionClosed(event.code, event.reason or "")
            fast = self._fast
            if fast is not None:
                item = fast.next()
                if isinstance(item, Incoming):
                    return item
                if item is not None:
                    if item.final:
                        self._fast = None  # wsproto reads everything from here on
                    ws.receive_data(item.data)
                    self._ws_fed = True
                    continue
            self._ws_fed = False
            chunk = await self._receive_chunk()
            if self._fast is not None:
                self._fast.feed(chunk)
            else:
                ws.receive_data(chunk)

    async def _receive_chunk(self) -> bytes:
        """The next bytes from the peer; :class:`ConnectionClosed` at its end.

        On a socket, wait for readability first and then read once: a participant's
        socket is idle between updates, so trying to read first would mostly fail.
        """
        fd = self._fd
        if fd is None:
            try:
                chunk = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(None) from exc
        else:
            while True:
                try:
                    await trio.lowlevel.wait_readable(fd)
                    chunk = os.read(fd, RECEIVE_CHUNK_BYTES)
                except BlockingIOError:
                    continue
                except (trio.ClosedResourceError, OSError) as exc:
                    raise ConnectionClosed(None) from exc
                break
        if not chunk:
            raise ConnectionClosed(None)
        return bytes(chunk)

    def _collect(self, size: int) -> None:
        self._size += size
        if self._size > self._max:
            self._text.clear()
            self._bytes.clear()
            raise MessageTooBig("message too big")

    async def _answer_close(self, event: CloseConnection) -> None:
        ws = self._ws
        if ws.state is ConnectionState.REMOTE_CLOSING:
            reply = ws.send(event.response())  # complete the peer's close handshake
        elif ws.state is ConnectionState.OPEN:
            # wsproto reports a protocol violation as a CloseConnection: tell the peer.
            reply = ws.send(CloseConnection(code=event.code, reason=(event.reason or "")[:100]))
        else:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._write(reply)

    async def close(self, code: int, reason: str = "") -> None:
        if self._ws.state is ConnectionState.OPEN:
            await self._write(self._ws.send(CloseConnection(code=code, reason=reason)))

    async def aclose(self) -> None:
        """Close gracefully enough that our close frame is read: send FIN, then discard
        what the peer still sends (briefly).  Closing a socket with unread input makes
        the kernel send RST, which can destroy the close frame before the peer reads it."""
        if self._closed:
            return
        self._closed = True
        try:
            with trio.move_on_after(LINGER_S):
                await self._stream.send_eof()  # type: ignore[attr-defined]
                while await self._stream.receive_some(RECEIVE_CHUNK_BYTES):
                    pass
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.BusyResourceError,
            AttributeError,
            OSError,
        ):
            pass
        finally:
            await trio.aclose_forcefully(self._stream)


def _peer_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "local"
    try:
        peer = sock.getpeername()
    except OSError:
        return "unknown"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


async def _reject(
    stream: trio.abc.Stream,
    ws: WSConnection,
    status: int,
    code: str,
    message: str,
    retry_after_s: int | None = None,
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    retry_after_s = retry_after_s or DEFAULT_RETRY_AFTER_S.get(status)
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    try:
        data = ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        data += ws.send(RejectData(data=body, body_finished=True))
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, LocshareError):
        pass


async def serve_stream(hub: Hub, stream: trio.abc.Stream, max_message_bytes: int) -> None:
    """Handshake on ``stream`` and hand it to its session (or refuse it with HTTP).

    Works on any trio stream (TCP here; in-memory streams in the time-driven tests).
    """
    handed_over = False
    try:
        ws = WSConnection(ConnectionType.SERVER)
        request: Request | None = None
        received = b""  # the handshake's bytes (h11 bounds their size)
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            while request is None:
                data = await stream.receive_some(RECEIVE_CHUNK_BYTES)
                if not data:
                    return
                received += data
                try:
                    ws.receive_data(bytes(data))
                except RemoteProtocolError as exc:
                    hint = exc.event_hint
                    if isinstance(hint, RejectConnection):
                        await _reject(
                            stream,
                            ws,
                            hint.status_code,
                            "invalid_request",
                            "expected a WebSocket upgrade",
                        )
                    return
                for event in ws.events():
                    if isinstance(event, Request):
                        request = event
                        break
            path, _, query = request.target.partition("?")
            if path not in WS_PATHS:
                await _reject(stream, ws, 404, "not_found", "WebSocket endpoint is /ws")
                return
            token = (parse_qs(query).get("token") or [""])[0]
            address = _peer_address(stream)
            try:
                claims = await hub.authorize(token, address)
            except ApiError as exc:
                await _reject(stream, ws, exc.http_status, exc.code, exc.message, exc.retry_after_s)
                return
            except StorageUnavailable:
                await _reject(
                    stream, ws, 503, "unavailable", "the database is unavailable; retry shortly"
                )
                return
            await stream.send_all(ws.send(AcceptConnection()))
        if request is None or ws.state is not ConnectionState.OPEN:
            return  # timed out
        # Frames right behind the request (a client that did not wait for our answer).
        early = received[received.find(b"\r\n\r\n") + 4 :]
        transport = WsprotoTransport(stream, ws, address, max_message_bytes, early=early)
        try:
            await hub.connect(claims, transport)
            handed_over = True
        except ApiError as exc:
            await refuse_after_upgrade(transport, exc)
        except StorageUnavailable:
            await refuse_after_upgrade(transport, None)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
        pass
    except Exception:
        # A bug must cost one connection, never the listener (and every other socket).
        log.exception("unexpected error while admitting a WebSocket connection")
    finally:
        if not handed_over:
            await trio.aclose_forcefully(stream)


async def _accept_loop(
    hub: Hub, listener: trio.SocketListener, nursery: trio.Nursery, max_message_bytes: int
) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.error(
                        "accept failed (%s); pausing 100 ms",
                        errno.errorcode.get(exc.errno or 0, "?"),
                    )
                    await trio.sleep(0.1)
                    continue
                raise
            nursery.start_soon(serve_stream, hub, stream, max_message_bytes)


async def serve_websockets(
    hub: Hub,
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` until cancelled; ``task_status.started(bound_port)``."""
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
    bound = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, hub, listener, nursery, max_message_bytes)
        task_status.started(bound)
