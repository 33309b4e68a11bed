"""The REST port's front door: every connection passes here before hypercorn sees a byte.

Why: hypercorn's own WebSocket and HTTP/2 paths gave a client ways to hurt everyone.  An
upgrade request with a bad token and one byte behind it made hypercorn's WebSocket
stream send a second response on the connection; the h11 error escaped its connection
task and ended the whole process.  It negotiates permessage-deflate, and wsproto inflated
a compression bomb to gigabytes before any size check.  And an ``Upgrade: h2c`` request
switched the connection to HTTP/2, past proxy rules written for HTTP/1.1.

Rules:
    1. Hypercorn serves HTTP/1.1 requests only, and never a WebSocket.  Each request
       head is read here first (an h11 parser that mirrors hypercorn's, :class:`Mirror`),
       and hypercorn gets a connection's bytes only up to the end of what the mirror has
       vetted.
    2. A WebSocket upgrade, as the first request of a connection or a later one (a
       reverse proxy may reuse a kept-alive connection), goes to the same wsproto code
       and the same admission as the dedicated port (:func:`._wsserver.serve_stream`):
       no compression, one set of close codes and reasons, one hot path.  On a later
       request the bytes are held until hypercorn has answered every earlier request;
       then hypercorn is stopped without closing the socket and the socket changes hands.
    3. HTTP/2 is refused: an ``Upgrade: h2c`` offer is removed from its request (RFC 9110
       lets a server ignore it; the client gets its answer in HTTP/1.1), and the prior-
       knowledge preface ``PRI * HTTP/2.0`` is answered 505.
    4. Nothing a connection sends can end the process: every connection runs through
       :func:`._wsserver.contained`, and the ASGI app refuses a WebSocket scope should
       one ever reach it (:class:`NoWebSockets`).
    5. A request with both ``Content-Length`` and ``Transfer-Encoding`` is answered 400
       and the connection closed (RFC 9112 section 6.3 allows either that or framing by
       Transfer-Encoding and closing after the answer; h11 frames by Transfer-Encoding
       and keeps the connection).  Otherwise a proxy framing by Content-Length would
       pass a second request hidden in the body (a WebSocket upgrade, ``GET /metrics``)
       that the server then executes: request smuggling.

Resource handling: :func:`serve_http` owns the accept loops and one nursery of
connection tasks; on shutdown it stops accepting, lets idle keep-alive connections go,
and gives in-flight requests ``graceful_timeout`` (hypercorn's own shutdown sequence).
:meth:`FrontDoor.serve` closes its socket however it ends (cancelled too), unless the
WebSocket admission took it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Updated
from hypercorn.statsd import StatsdLogger
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from ._wsserver import RECEIVE_CHUNK_BYTES, serve_listeners, serve_stream

if TYPE_CHECKING:
    from ..runtime import Hub
    from ..runtime._stats import HubStats

log = logging.getLogger("locshare.http")

FIRST_HEAD_TIMEOUT_S: Final = 10.0
MAX_HEAD_BYTES: Final = 16 * 1024  # h11's default, which hypercorn uses too


def _refusal(status_line: bytes, message: str) -> bytes:
    """A complete ``invalid_request`` answer that closes the connection."""
    body = b'{"error":{"code":"invalid_request","message":"%s"}}\n' % message.encode()
    return (
        b"HTTP/1.1 " + status_line + b"\r\ncontent-type: application/json\r\n"
        b"x-content-type-options: nosniff\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )


_HTTP2_REFUSED: Final = _refusal(
    b"505 HTTP Version Not Supported", "HTTP/2 is not served on this port"
)
_AMBIGUOUS_REFUSED: Final = _refusal(
    b"400 Bad Request", "Content-Length and Transfer-Encoding must not both be sent"
)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class Kind(enum.Enum):
    HTTP = "http"
    H2C = "h2c"  # HTTP/1.1 with an Upgrade: h2c offer, which is removed
    WEBSOCKET = "websocket"
    HTTP2 = "http2"  # the prior-knowledge preface
    AMBIGUOUS = "ambiguous"  # Content-Length and Transfer-Encoding both (Rule 5)


def classify(request: h11.Request) -> Kind:
    """What a request head asks for (h11 has already normalised the header names)."""
    if request.method == b"PRI" and request.http_version == b"2.0":
        return Kind.HTTP2
    names = {name for name, _value in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        return Kind.AMBIGUOUS
    upgrade = b",".join(value for name, value in request.headers if name == b"upgrade")
    tokens = {token.strip().lower() for token in upgrade.split(b",")}
    if b"websocket" in tokens:
        return Kind.WEBSOCKET
    if upgrade:
        return Kind.H2C  # any other upgrade: hypercorn would only act on h2c; drop them all
    return Kind.HTTP


def _without_upgrade(request: h11.Request) -> bytes:
    """The request head re-serialised without its upgrade offer."""
    dropped = {b"upgrade", b"http2-settings"}
    lines = [b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)]
    for name, value in request.headers.raw_items():
        if name.lower() not in dropped:
            lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Mirror:
    """Follows a connection's requests as hypercorn's h11 parser will see them (sans-io).

    :meth:`feed` takes the bytes read from the client and returns those hypercorn may
    have now: everything up to the end of what has been parsed, each request head
    vetted (Rules 1-3 and 5 of the module).  A request hypercorn must not see stops the flow:
    :attr:`held` then keeps every byte from its first on, for the front door.

    h11 (server role) is driven through a fake exchange: after each request the mirror
    "answers" it with an empty 400 (no status can switch protocols or imply a tunnel)
    and starts the next cycle, so it parses pipelined and kept-alive requests in order.
    If the mirror's parser refuses something, hypercorn's (the same h11) will refuse the
    same bytes with a 400 and close: the mirror then just passes everything on.
    """

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER)
        self._input = bytearray()  # bytes read but not yet passed on (or held)
        self._input_start = 0  # stream offset of _input[0]
        self._fed = 0
        self._request_start = 0  # stream offset where the current request began
        self.requests = 0  # request heads passed on to hypercorn
        self.first: Kind | None = None
        self.held: bytes | None = None
        self.held_kind: Kind | None = None  # what the held request asks for
        self.passthrough = False

    def _consumed(self) -> int:
        return self._fed - len(self._h11.trailing_data[0])

    def feed(self, data: bytes) -> bytes:
        if self.held is not None:
            self.held += data
            return b""
        self._input += data
        self._fed += len(data)
        if self.passthrough:
            return self._take(self._fed)
        self._h11.receive_data(data)
        out = b""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError:
                self.passthrough = True  # hypercorn's parser will answer 400 and close
                return out + self._take(self._fed)
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:  # not expected (every request is answered at once)
                self.passthrough = True
                return out + self._take(self._fed)
            if isinstance(event, h11.Request):
                kind = classify(event)
                if self.first is None:
                    self.first = kind
                if kind in (Kind.WEBSOCKET, Kind.HTTP2, Kind.AMBIGUOUS):
                    out += self._take(self._request_start)
                    self.held_kind = kind
                    self.held = bytes(self._input)
                    self._input.clear()
                    return out
                self.requests += 1
                if kind is Kind.H2C:
                    out += self._take(self._request_start)
                    self._skip(self._consumed())
                    out += _without_upgrade(event)
            elif isinstance(event, h11.EndOfMessage):
                try:
                    self._h11.send(
                        h11.Response(status_code=400, headers=[(b"content-length", b"0")])
                    )
                    self._h11.send(h11.EndOfMessage())
                    self._h11.start_next_cycle()
                except h11.LocalProtocolError:
                    # The client asked to close after this request: hypercorn will close
                    # after answering; whatever follows is never parsed by anyone.
                    self.passthrough = True
                    return out + self._take(self._fed)
                self._request_start = self._consumed()
            elif isinstance(event, h11.ConnectionClosed):
                break
        return out + self._take(self._consumed())

    def _take(self, until: int) -> bytes:
        """Pass on the input up to stream offset ``until``."""
        count = until - self._input_start
        if count <= 0:
            return b""
        out = bytes(self._input[:count])
        del self._input[:count]
        self._input_start = until
        return out

    def _skip(self, until: int) -> None:
        count = until - self._input_start
        del self._input[:count]
        self._input_start = until


@dataclass
class _HypercornSide:
    """The stream hypercorn reads and writes: the socket, seen through the mirror.

    In takeover, hypercorn's attempts to close are ignored (the socket changes hands).
    """

    stream: trio.SocketStream
    mirror: Mirror
    ready: bytearray
    held: trio.Event = field(default_factory=trio.Event)
    takeover: bool = False

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self.ready:
            if self.mirror.held is not None:
                self.held.set()
                await trio.sleep_forever()  # the front door takes the socket once idle
            data = await self.stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not data:
                return b""
            self.ready += self.mirror.feed(data)
        size = len(self.ready) if max_bytes is None else min(max_bytes, len(self.ready))
        out = bytes(self.ready[:size])
        del self.ready[:size]
        return out

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if not self.takeover:
            await self.stream.send_eof()

    async def aclose(self) -> None:
        if not self.takeover:
            await self.stream.aclose()


class _WatchedTCPServer(TCPServer):
    """Hypercorn's connection handler, telling us each time it has answered a request."""

    def __init__(self, *args: Any, on_idle: Callable[[], None]) -> None:
        super().__init__(*args)
        self._on_idle = on_idle

    async def protocol_send(self, event: Any) -> None:
        # Before hypercorn's own handling: it re-arms its keep-alive timer here, and the
        # task that reports the end of a response may already be cancelled by then.
        if isinstance(event, Updated) and event.idle:
            self._on_idle()
        await super().protocol_send(event)


@dataclass(frozen=True, slots=True)
class FrontDoor:
    """One REST port: hypercorn for HTTP, the shared WebSocket admission for ``/ws``."""

    app: Any  # hypercorn's wrapped ASGI app
    config: HypercornConfig
    context: WorkerContext
    lifespan_state: dict[str, Any]
    hub_getter: Callable[[], Hub | None]
    max_message_bytes: int
    trusted_proxy_hops: int

    async def serve(self, stream: trio.SocketStream) -> None:
        owned = True  # until the WebSocket admission takes the socket
        try:
            mirror = Mirror()
            ready = bytearray()
            with trio.move_on_after(FIRST_HEAD_TIMEOUT_S) as timer:
                while mirror.first is None and mirror.held is None and not mirror.passthrough:
                    data = await stream.receive_some(RECEIVE_CHUNK_BYTES)
                    if not data:
                        break
                    ready += mirror.feed(data)
            if timer.cancelled_caught or (not ready and mirror.held is None):
                return  # nothing usable arrived in time: slowloris or a probe
            held = mirror.held
            if ready or mirror.requests:
                # HTTP first (requests pipelined ahead of an upgrade are answered first).
                held = await self._hypercorn(stream, mirror, ready)
                if held is None:
                    return  # hypercorn served the connection to its end
            assert held is not None
            # ``held`` starts with a request hypercorn must not see (Rules 2, 3 and 5).
            if mirror.held_kind is Kind.HTTP2:
                await stream.send_all(_HTTP2_REFUSED)
                return
            if mirror.held_kind is Kind.AMBIGUOUS:
                await stream.send_all(_AMBIGUOUS_REFUSED)
                return
            owned = False
            await self._websocket(stream, held)
        finally:
            if owned:
                # Also when cancelled (shutdown) in the middle of a request: hypercorn's
                # own close is an await that a cancellation skips.
                await trio.aclose_forcefully(stream)

    async def _websocket(self, stream: trio.SocketStream, received: bytes) -> None:
        hub = self.hub_getter()
        if hub is None:
            await stream.aclose()
            return
        await serve_stream(
            hub,
            stream,
            self.max_message_bytes,
            received=received,
            trusted_proxy_hops=self.trusted_proxy_hops,
        )

    async def _hypercorn(
        self, stream: trio.SocketStream, mirror: Mirror, ready: bytearray
    ) -> bytes | None:
        """Serve HTTP until the connection ends (``None``) or a request must change
        hands; then return its bytes, with the socket still open."""
        side = _HypercornSide(stream, mirror, ready)
        answered = 0
        done = trio.Event()

        def on_idle() -> None:
            nonlocal answered
            answered += 1
            if side.held.is_set() and answered >= mirror.requests:
                done.set()

        server = _WatchedTCPServer(
            self.app,
            self.config,
            self.context,
            ConnectionState(self.lifespan_state.copy()),
            side,
            on_idle=on_idle,
        )
        async with trio.open_nursery() as nursery:

            async def run_server() -> None:
                await server.run()
                nursery.cancel_scope.cancel()

            async def watch_takeover() -> None:
                await side.held.wait()
                if answered < mirror.requests:
                    await done.wait()
                side.takeover = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_server)
            nursery.start_soon(watch_takeover)
        return mirror.held if side.takeover else None


class NoWebSockets:
    """ASGI middleware: a WebSocket scope never reaches the app (the front door routes
    every upgrade to the WebSocket admission); should one arrive, it is refused before
    any acceptance, so no extension is ever negotiated."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


async def serve_http(
    app: Any,
    config: HypercornConfig,
    *,
    listeners: list[trio.SocketListener],
    hub_getter: Callable[[], Hub | None],
    stats: HubStats,
    max_message_bytes: int,
    trusted_proxy_hops: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST port on ``listeners`` until ``shutdown_trigger`` returns.

    The same sequence as hypercorn's own ``serve``: lifespan start-up, accept, and on
    shutdown stop accepting, close idle keep-alive connections, give in-flight requests
    ``config.graceful_timeout``, lifespan shut-down.
    """
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    door = FrontDoor(
        wrapped,
        config,
        context,
        lifespan_state,
        hub_getter,
        max_message_bytes,
        trusted_proxy_hops,
    )
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(
                    lambda: serve_listeners(
                        door.serve, listeners, stats=stats, name="http", connections=connections
                    )
                )
                task_status.started()
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
