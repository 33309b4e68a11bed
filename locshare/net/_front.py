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
    6. Every connection has a bounded life, which hypercorn under quart-trio does not
       give it (its closing steps run in the request's task, which quart-trio cancels
       once the response is out): a request must arrive whole within
       ``REQUEST_TIMEOUT_S``; an answered connection waits ``keep_alive_timeout`` (5 s)
       for the next request; ``Connection: close``, HTTP/1.0 and hypercorn's own wish to
       close end it after the answer; a body over ``max_body_bytes`` is not read past
       the limit (the 413 goes out, then the connection closes).

Resource handling: :func:`serve_http` owns the accept loops and one nursery of
connection tasks; on shutdown it stops accepting, lets idle keep-alive connections go,
and gives in-flight requests ``graceful_timeout`` (hypercorn's own shutdown sequence).
:meth:`FrontDoor.serve` closes its socket however it ends (cancelled too), unless the
WebSocket admission took it.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Updated
from hypercorn.statsd import StatsdLogger
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from ..proto._places import body_limit
from ._wsserver import (
    LINGER_MAX_BYTES,
    LINGER_S,
    RECEIVE_CHUNK_BYTES,
    serve_listeners,
    serve_stream,
)

if TYPE_CHECKING:
    from ..runtime import Hub
    from ..runtime._stats import HubStats
    from ._handoff import Handoff

log = logging.getLogger("locshare.http")

FIRST_HEAD_TIMEOUT_S: Final = 10.0
# A whole request (head and body) must arrive within this: a body trickled byte by byte
# within hypercorn's per-read timeout would otherwise hold its connection for days.
REQUEST_TIMEOUT_S: Final = 30.0
# After an oversized body is cut off, hypercorn has this long to write its 413.
OVERFLOW_GRACE_S: Final = 1.0


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


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


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

    def __init__(self, max_body_bytes: int | None = None) -> None:
        self._max_body = max_body_bytes
        self._limit = max_body_bytes  # the current request's (a route upload's is larger)
        self._body = 0  # body bytes of the current request
        self.completed = 0  # requests received whole
        self.client_closing = False  # the client asked to close after its request
        self.overflow = False  # a body went over max_body_bytes: the rest is dropped
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

    @property
    def in_request(self) -> bool:
        """Bytes of a request for hypercorn that has not arrived whole yet were received
        (a held request is not hypercorn's; passthrough and overflow are not tracked)."""
        if self.held is not None or self.passthrough or self.overflow:
            return False
        return self._fed > self._request_start

    def feed(self, data: bytes) -> bytes:
        if self.overflow:
            return b""  # dropped: never buffered
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
                self._body = 0
                if self._max_body is not None:
                    target = event.target.decode("latin-1").partition("?")[0]
                    self._limit = body_limit(event.method.decode("latin-1"), target, self._max_body)
                if kind is Kind.H2C:
                    out += self._take(self._request_start)
                    self._skip(self._consumed())
                    out += _without_upgrade(event)
                if self._over_limit(_content_length(event)):
                    return out + self._cut()
            elif isinstance(event, h11.Data):
                self._body += len(event.data)
                if self._over_limit(self._body):
                    return out + self._cut()
            elif isinstance(event, h11.EndOfMessage):
                self.completed += 1
                try:
                    self._h11.send(
                        h11.Response(status_code=400, headers=[(b"content-length", b"0")])
                    )
                    self._h11.send(h11.EndOfMessage())
                    self._h11.start_next_cycle()
                except h11.LocalProtocolError:
                    # The client asked to close after this request: the connection ends
                    # after the answer; whatever follows is never parsed by anyone.
                    self.client_closing = True
                    self.passthrough = True
                    return out + self._take(self._consumed())
                self._request_start = self._consumed()
            elif isinstance(event, h11.ConnectionClosed):
                break
        return out + self._take(self._consumed())

    def _over_limit(self, size: int | None) -> bool:
        return self._limit is not None and size is not None and size > self._limit

    def _cut(self) -> bytes:
        """Pass on what was parsed (hypercorn then answers 413); drop everything else."""
        out = self._take(self._consumed())
        self._input.clear()
        self.overflow = True
        return out

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

    It also keeps what the connection's guard needs (Rule 6): when the current request
    began, whether hypercorn wants to close, and an event for every change.  In
    takeover, hypercorn's attempts to close are ignored (the socket changes hands).
    """

    stream: trio.SocketStream
    mirror: Mirror
    ready: bytearray
    held: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)
    takeover: bool = False
    request_started_at: float | None = None
    overflow_at: float | None = None
    close_wanted: bool = False

    def __post_init__(self) -> None:
        self._note()

    def _note(self) -> None:
        """After the mirror parsed more: note a request's start and end, an overflow."""
        mirror = self.mirror
        now = trio.current_time()
        started = self.request_started_at
        if mirror.in_request and started is None:
            self.request_started_at = now
            self.changed.set()
        elif not mirror.in_request and started is not None:
            self.request_started_at = None
            self.changed.set()
        if mirror.overflow and self.overflow_at is None:
            self.overflow_at = now
            self.changed.set()

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self.ready:
            if self.mirror.held is not None or self.mirror.overflow:
                self.held.set()
                self.changed.set()
                await trio.sleep_forever()  # the guard takes the socket, or closes it
            data = await self.stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not data:
                return b""
            self.ready += self.mirror.feed(data)
            self._note()
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
    """Hypercorn's connection handler, telling us each time it has answered a request,
    and when it wants to close."""

    def __init__(
        self, *args: Any, on_idle: Callable[[], None], on_close: Callable[[], None]
    ) -> None:
        super().__init__(*args)
        self._on_idle = on_idle
        self._on_close = on_close

    async def protocol_send(self, event: Any) -> None:
        # Before hypercorn's own handling: it re-arms its keep-alive timer or closes here,
        # in the task that reports the end of a response, which quart-trio may already
        # have cancelled (so hypercorn's own steps would not run).
        if isinstance(event, Updated) and event.idle:
            self._on_idle()
        elif isinstance(event, Closed):
            self._on_close()
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
    max_body_bytes: int | None = None
    handoff: Handoff | None = None

    async def serve(self, stream: trio.SocketStream) -> None:
        owned = True  # until the WebSocket admission takes the socket
        try:
            mirror = Mirror(self.max_body_bytes)
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
                await _linger_close(stream)

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
            handoff=self.handoff,
        )

    async def _hypercorn(
        self, stream: trio.SocketStream, mirror: Mirror, ready: bytearray
    ) -> bytes | None:
        """Serve HTTP until the connection ends (``None``) or a request must change
        hands; then return its bytes, with the socket still open."""
        side = _HypercornSide(stream, mirror, ready)
        answered = 0
        idle_since = trio.current_time()

        def on_idle() -> None:
            nonlocal answered, idle_since
            answered += 1
            idle_since = trio.current_time()
            side.changed.set()

        def on_close() -> None:
            side.close_wanted = True
            side.changed.set()

        server = _WatchedTCPServer(
            self.app,
            self.config,
            self.context,
            ConnectionState(self.lifespan_state.copy()),
            side,
            on_idle=on_idle,
            on_close=on_close,
        )
        keep_alive_s = float(self.config.keep_alive_timeout)

        async with trio.open_nursery() as nursery:

            async def run_server() -> None:
                await server.run()
                nursery.cancel_scope.cancel()

            async def guard() -> None:
                """Rule 6, and the hand-over of Rule 2."""
                while True:
                    deadline = math.inf
                    if side.close_wanted:
                        break
                    if mirror.overflow:
                        assert side.overflow_at is not None
                        deadline = side.overflow_at + OVERFLOW_GRACE_S
                    elif side.request_started_at is not None:
                        deadline = side.request_started_at + REQUEST_TIMEOUT_S
                    elif answered >= mirror.requests:  # every request answered: idle
                        if mirror.client_closing:
                            break
                        if side.held.is_set():
                            side.takeover = True
                            break
                        deadline = idle_since + keep_alive_s
                    with trio.move_on_at(deadline) as timer:
                        await side.changed.wait()
                    side.changed = trio.Event()
                    if timer.cancelled_caught:
                        break
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_server)
            nursery.start_soon(guard)
        return mirror.held if side.takeover else None


async def _linger_close(stream: trio.SocketStream) -> None:
    """Close so that our last answer is read: FIN first, then discard what the client
    still sends (bounded in time and bytes), then close.  Closing with unread input would
    make the kernel send a reset, which can destroy an answer not yet read (a 413 while
    the client is still sending its body)."""
    with trio.move_on_after(LINGER_S) as scope:
        scope.shield = True  # also when the connection was cancelled at shutdown
        try:
            await stream.send_eof()
            discarded = 0
            while discarded < LINGER_MAX_BYTES:
                chunk = await stream.receive_some(RECEIVE_CHUNK_BYTES)
                if not chunk:
                    break
                discarded += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
    await trio.aclose_forcefully(stream)


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
    max_body_bytes: int | None = None,
    handoff: Handoff | None = None,
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
        max_body_bytes,
        handoff,
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
