"""WebSockets on plain trio streams: wsproto for the handshake and everything unusual,
:mod:`._frames` for the common client frames, shared pre-encoded bytes going out.

Why it exists: per frame, quart-trio on hypercorn costs about 150 us and
trio-websocket about 90 us on this machine; broadcasting one pre-encoded frame with
one ``send_all`` per recipient is much cheaper still (docs/design.md).  Here wsproto
parses the handshake and every unusual incoming frame, :mod:`._frames` the common ones
(complete, masked, unfragmented data frames, pings and pongs), and outgoing data frames
are the shared bytes of :attr:`OutFrame.wire`, written directly.

One admission path: :func:`serve_stream` is the only way a socket becomes a session
connection, for the dedicated port (:func:`serve_websockets`) and for ``/ws`` on the
REST port (whose front door, :mod:`._front`, hands it WebSocket upgrades).  wsproto is
never asked to negotiate an extension, so no compression exists on either port: a
message's size on the wire is its size in memory (the 16 KiB limit means 16 KiB).

Resource handling:
    :func:`serve_listeners` owns one accept loop per listener and one handler task per
    TCP connection, each run through :func:`contained`: whatever a connection's bytes
    make its code raise ends that connection (logged with a connection id, counted in
    ``locshare_connection_errors_total``), never the listener or the process.  A
    handshake is bounded by ``HANDSHAKE_TIMEOUT_S``.  A successful handshake hands the
    stream to the session runtime (:meth:`Hub.connect`), whose connection task owns and
    closes it from then on.  A refused handshake gets an HTTP error with a JSON body
    before the upgrade.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final
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
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from .._logging import request_id_var
from ..errors import (
    DEFAULT_RETRY_AFTER_S,
    ApiError,
    LocshareError,
    MessageTooBig,
    StorageUnavailable,
)
from ..proto._frames import OP_PING, OP_PONG, Control, FastFrames, Incoming
from ..proto._messages import (
    CLOSE_SESSION_ENDED,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    OutFrame,
    encode,
)
from ..runtime._transport import ConnectionClosed, Transport

if TYPE_CHECKING:
    from ..runtime import Hub
    from ..runtime._stats import HubStats
    from ._handoff import Handoff

log = logging.getLogger("locshare.ws")

HANDSHAKE_TIMEOUT_S: Final = 10.0
RECEIVE_CHUNK_BYTES: Final = 65536
LINGER_S: Final = 0.5
LINGER_MAX_BYTES: Final = 256 * 1024
WS_PATHS: Final = ("/ws", "/ws/")
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

# Close reasons are fixed, human text: never an exception's message (wsproto's reasons
# for 1007 carry Python codec text such as "'utf-8' codec can't decode byte 0xff").
CLOSE_REASONS: Final = {
    1002: "protocol error",
    1003: "unsupported data",
    1007: "invalid UTF-8 in a text message",
    1008: "policy violation",
    1009: "message too big",
    1011: "internal error; reconnect",
}


def close_reason(code: int) -> str:
    return CLOSE_REASONS.get(code, "")


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

    async def pong(self, payload: bytes) -> None:
        if self._ws.state is ConnectionState.OPEN:
            await self._write(self._ws.send(Pong(payload=payload)))

    async def receive(self) -> Incoming | Control:
        ws = self._ws
        while True:
            fast = self._fast
            if fast is not None:
                item = fast.next()
                if item is None:
                    fast.feed(await self._receive_chunk())
                    continue
                if isinstance(item, Incoming | Control):
                    return item
                self._fast = None  # something unusual: wsproto reads everything from here on
                ws.receive_data(item.data)
            for event in ws.events():
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
                    return Control(OP_PING, bytes(event.payload))
                elif isinstance(event, Pong):
                    return Control(OP_PONG, bytes(event.payload))
                elif isinstance(event, CloseConnection):
                    await self._answer_close(event)
                    raise ConnectionClosed(event.code, event.reason or "")
            if self._fast is None:
                ws.receive_data(await self._receive_chunk())

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
            # wsproto reports a protocol violation (1002, 1007...) as a CloseConnection:
            # tell the peer, with a fixed reason rather than wsproto's exception text.
            reply = ws.send(CloseConnection(code=event.code, reason=close_reason(event.code)))
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
                # Bounded: a peer that floods us gets the reset it asks for, not our CPU.
                discarded = 0
                while discarded < LINGER_MAX_BYTES:
                    chunk = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
                    if not chunk:
                        break
                    discarded += len(chunk)
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


def peer_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "local"
    try:
        peer = sock.getpeername()
    except OSError:
        return "unknown"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def forwarded_client(headers: Iterable[tuple[bytes, bytes]], trusted_hops: int, peer: str) -> str:
    """The client behind ``trusted_hops`` reverse proxies (``X-Forwarded-For``, each proxy
    appending the address it received from), else ``peer``.  The same rule as
    hypercorn's ``ProxyFixMiddleware`` in legacy mode, which REST requests go through."""
    if trusted_hops <= 0:
        return peer
    values: list[str] = []
    for name, value in headers:
        if name.lower() == b"x-forwarded-for":
            values.extend(part.decode("latin-1").strip() for part in value.split(b","))
    if len(values) >= trusted_hops and values[-trusted_hops]:
        return values[-trusted_hops]
    return peer


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
        (b"cache-control", b"no-store"),
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


async def serve_stream(
    hub: Hub,
    stream: trio.abc.Stream,
    max_message_bytes: int,
    *,
    received: bytes = b"",
    trusted_proxy_hops: int = 0,
    handoff: Handoff | None = None,
) -> None:
    """Handshake on ``stream`` and hand it to its session (or refuse it with HTTP).

    ``received``: bytes already read from the stream (the REST port's front door read
    the request head to route it here).  ``trusted_proxy_hops``: read the client's
    address from ``X-Forwarded-For`` (the REST port behind a reverse proxy).
    ``handoff``: with ``--workers N``, pass a connection whose session another worker
    serves to that worker, before anything is answered (``_handoff.py``).  Works on
    any trio stream (TCP here; in-memory streams in the time-driven tests).
    """
    handed_over = False
    try:
        ws = WSConnection(ConnectionType.SERVER)
        request: Request | None = None
        buffered = received  # the handshake's bytes (h11 bounds their size)
        pending = received
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            while request is None:
                if not pending:
                    pending = bytes(await stream.receive_some(RECEIVE_CHUNK_BYTES))
                    if not pending:
                        return
                    buffered += pending
                try:
                    ws.receive_data(bytes(pending))
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
                pending = b""
                for event in ws.events():
                    if isinstance(event, Request):
                        request = event
                        break
            path, _, query = request.target.partition("?")
            if path not in WS_PATHS:
                await _reject(stream, ws, 404, "not_found", "WebSocket endpoint is /ws")
                return
            token = (parse_qs(query).get("token") or [""])[0]
            if (
                handoff is not None
                and isinstance(stream, trio.SocketStream)
                and await _hand_over(hub, handoff, stream, token, buffered, trusted_proxy_hops > 0)
            ):
                return  # the owner has the socket; closing ours leaves the connection open
            address = forwarded_client(
                request.extra_headers, trusted_proxy_hops, peer_address(stream)
            )
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
        early = buffered[buffered.find(b"\r\n\r\n") + 4 :]
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
    finally:
        if not handed_over:
            await trio.aclose_forcefully(stream)


async def _hand_over(
    hub: Hub,
    handoff: Handoff,
    stream: trio.SocketStream,
    token: str,
    received: bytes,
    proxied: bool,
) -> bool:
    """Pass the connection to the worker that owns its session, if that is another one.

    A token that does not verify stays here, where the admission refuses it properly."""
    try:
        claims = hub.tokens.verify(token, hub.clock.now())
    except LocshareError:
        return False
    owner = handoff.owner(claims.session_id)
    return await handoff.send(stream, received, proxied=proxied, owner=owner)


async def contained(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    stream: trio.SocketStream,
    *,
    stats: HubStats,
    listener: str,
) -> None:
    """Run one connection's ``handler``; whatever it raises ends that connection only.

    Rule: no input from a connection can end the process.  An exception escaping a
    connection's code (a bug, or a library refusing what a peer sent in a way nobody
    foresaw) is logged once with the connection's id, counted, and the connection is
    closed; the listener and every other connection go on.  Cancellation passes.
    """
    connection_id = "c-" + secrets.token_hex(6)
    request_id_var.set(connection_id)  # every log line of this task carries it
    try:
        await handler(stream)
    except* Exception as group:
        stats.connection_errors += 1
        log.error(
            "a connection's code failed; closed that connection",
            extra={"connection_id": connection_id, "listener": listener},
            exc_info=group,
        )
        await trio.aclose_forcefully(stream)


async def serve_listeners(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    listeners: list[trio.SocketListener],
    *,
    stats: HubStats,
    name: str,
    connections: trio.Nursery,
) -> None:
    """Accept on every listener until cancelled; each connection runs ``handler`` (contained)
    in the ``connections`` nursery."""

    async def accept_loop(listener: trio.SocketListener) -> None:
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
                connections.start_soon(
                    partial(contained, stats=stats, listener=name), handler, stream
                )

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_loop, listener)


async def open_listeners(
    host: str, port: int, *, backlog: int, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Listening sockets on every address of ``host`` (as ``trio.open_tcp_listeners``).

    ``reuse_port``: set ``SO_REUSEPORT`` so that the worker processes of ``--workers N``
    listen on the same port and the kernel spreads the connections over them.
    """
    if not reuse_port:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    else:
        listeners = []
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _name, address in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(backlog)
            except OSError:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    for listener in listeners:
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return listeners


async def serve_websockets(
    hub: Hub,
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    reuse_port: bool = False,
    handoff: Handoff | None = None,
    trusted_proxy_hops: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` until cancelled; ``task_status.started(bound_port)``.

    With ``handoff``, also take the connections other workers hand to this one (from
    either port: ``trusted_proxy_hops`` applies to those that came through the REST
    port, as there)."""
    listeners = await open_listeners(host, port, backlog=4096, reuse_port=reuse_port)
    bound = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        await serve_stream(hub, stream, max_message_bytes, handoff=handoff)

    async def handed_over(stream: trio.SocketStream, received: bytes, proxied: bool) -> None:
        async def admit(stream: trio.SocketStream) -> None:
            hops = trusted_proxy_hops if proxied else 0
            await serve_stream(
                hub, stream, max_message_bytes, received=received, trusted_proxy_hops=hops
            )

        await contained(admit, stream, stats=hub.stats, listener="handoff")

    async with trio.open_nursery() as nursery:
        if handoff is not None:
            await nursery.start(handoff.receive, handed_over, nursery)
        task_status.started(bound)
        await serve_listeners(
            handler, listeners, stats=hub.stats, name="websocket", connections=nursery
        )
