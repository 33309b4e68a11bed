"""The load client: one worker process, one trio event loop, a shard of connections.

The controller (:mod:`benchmarks._run`) starts one worker per load CPU (or
``--workers``) with :func:`worker_main` and a :class:`WorkerPlan`, and talks to it over
a pipe (see *Pipe protocol*).

Why it stays cheap (so the server, not the client, is measured):

* Raw non-blocking sockets and the hand-rolled framing of :mod:`benchmarks._wire`; no
  per-connection task after the handshake.
* *Counting receivers* (most connections) sit in a private ``epoll`` set that is polled
  every ``sweep_s`` (250 ms): one ``recv`` per socket that has data, then each frame
  costs a header parse plus ``bytes.count(b'"user_id"')`` over its payload; nothing is
  decoded.  The kernel buffers what arrives between sweeps.
* *Timing receivers* (a sample, ``decode`` in :class:`Participant`) sit in a second
  ``epoll`` set whose fd trio waits on, so they read as soon as data arrives; they
  decode every message with orjson and take one latency sample per location entry:
  receipt time minus the sender's stamp (``time.time()`` on both sides, one host).
* Senders are driven by one scheduler task per process (a heap of due times, 5 ms
  granularity); the sender stamps the update right before writing it.

Accounting (per connection, summed by the controller):

* ``sent``: updates handed to the kernel on an open socket.  While a connection is
  down nothing is sent or queued (docs/protocol.md: send the latest position once
  connected).
* ``entries``: location entries received in update messages, ``echoes``: the ones
  carrying the receiver's own user id (the server's confirmation of its own update).
* Delivery ratio (computed by the controller): entries received by *steady*
  receivers divided by the sum over updates of the number of steady receivers in the
  update's session (the sender's echo included).  See benchmarks/README.md.

Pipe protocol (tuples ``(name, payload)``):
    worker -> controller: ``("tick", Tick)`` every second from the start,
    ``("ready", dict)`` once every connection was attempted, ``("done", dict)`` after
    the drain, ``("closed", dict)`` after the graceful close.
    controller -> worker: ``("start", (t0, t_stop, t_end))`` wall-clock times,
    ``("close", None)``.
"""

from __future__ import annotations

import array
import contextlib
import errno
import heapq
import math
import os
import random
import select
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import orjson
import trio

from . import _wire as w

if TYPE_CHECKING:
    from ._realistic import RealisticPlan

RECV_BYTES: Final = 262144
SEND_TICK_S: Final = 0.005
TICK_S: Final = 1.0
HANDSHAKE_TIMEOUT_S: Final = 15.0
CLOSE_TIMEOUT_S: Final = 5.0
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
CONNECT_ATTEMPTS: Final = 4
# docs/protocol.md: do not reconnect after these close codes.
FINAL_CLOSE_CODES: Final = frozenset({1000, 4000, 4001, 4401, 4403})
PROTOCOLS: Final = ("locshare", "ws", "mqtt", "redis")


@dataclass(frozen=True, slots=True)
class Participant:
    index: int
    session: int  # session index in the run
    user_id: str
    url: str  # locshare: websocket_url + "?token=..."; references: host:port
    decode: bool = False  # a timing receiver
    steady: bool = True  # connected for the whole measurement: counts in the ratio
    sends: bool = True
    node: int = 0  # which server node its URL points at (distinct addresses or ports)
    session_id: str = ""  # the server's id of its session (sticky placement hashes it)


@dataclass(frozen=True, slots=True)
class ChurnSlot:
    """A place in a session taken by a succession of short-lived participants: join
    over REST, connect, share for ``dwell_s``, leave, pause, and again."""

    session: int
    session_id: str
    # Sticky placement: the node its session lives on, and that node's WebSocket
    # host:port (replaces the one in the URL the join returns).  None: that URL as is.
    node: int = 0
    ws_endpoint: str | None = None


@dataclass(frozen=True)
class WorkerPlan:
    worker: int
    protocol: str
    participants: list[Participant]
    rosters: dict[int, list[str]]  # session index -> user ids known at the start
    interval_s: float
    connect_rate_per_s: float | None = None  # None: as fast as the concurrency allows
    connect_concurrency: int = 64
    reconnect: bool = False
    sweep_s: float = 0.25
    isolation_every: int = 20  # counting receivers decode 1 update message in N
    churn: list[ChurnSlot] = field(default_factory=list)
    churn_dwell_s: tuple[float, float] = (5.0, 15.0)
    churn_pause_s: tuple[float, float] = (1.0, 3.0)
    base_url: str = ""
    buckets: bool = False  # per-send-second accounting (fault, lossy)
    settle_s: float = 1.0
    seed: int = 0
    # user id -> node, for the sessions of this worker (partition): with ``buckets``,
    # entries are also counted per (sender's node, receiver's node), presence per node.
    node_of: dict[str, int] = field(default_factory=dict)
    # The realistic scenario (movement, visibility, joins and leaves, obeying the
    # server's update_interval): run by benchmarks._realistic_load's worker instead.
    realistic: RealisticPlan | None = None


@dataclass
class Outage:
    down_at: float
    reconnected_at: float | None = None
    back_at: float | None = None  # first update message after reconnecting


class Conn:
    """One participant's connection (and its successive sockets, if it reconnects)."""

    __slots__ = (
        "closed_at",
        "closing",
        "down",
        "echoes",
        "entries",
        "failed",
        "frames",
        "lat",
        "lng",
        "opened_at",
        "outages",
        "own",
        "p",
        "reconnects",
        "rest",
        "sending",
        "sent",
        "sock",
        "stop",
        "user_id",
        "wbuf",
    )

    def __init__(self, p: Participant, rng: random.Random) -> None:
        self.p = p
        self.user_id = p.user_id
        self.own = b'"user_id":"' + p.user_id.encode() + b'"'
        self.sock: socket.socket | None = None
        self.rest = b""
        self.wbuf = b""
        self.sent = 0
        self.entries = 0
        self.echoes = 0
        self.frames = 0
        self.reconnects = 0
        self.failed = False
        self.sending = p.sends
        self.closing = False
        self.stop = False  # a final close code: never reconnect
        self.down = False
        self.opened_at: float | None = None
        self.closed_at: float | None = None
        self.outages: list[Outage] = []
        # Spread sessions over the map: each session around its own city.
        self.lat = 45.0 + (p.session % 40) * 0.5 + rng.uniform(-0.01, 0.01)
        self.lng = 6.0 + (p.session // 40) * 0.5 + rng.uniform(-0.01, 0.01)

    @property
    def up(self) -> bool:
        return self.sock is not None and not self.down


@dataclass
class Tick:
    t: float
    connected: int
    opened: int
    failed: int
    sent: int
    entries: int
    frames: int
    reconnects: int
    latency_ms: bytes  # array('f') of the samples since the last tick
    age_ms: bytes = b""  # realistic: array('f') of position-age samples since the last tick


class HandshakeRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


# --- socket helpers (stdlib sockets, trio only waits) -----------------------------------
async def _connect(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
        await trio.lowlevel.wait_writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    return sock


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


async def _recv(sock: socket.socket) -> bytes:
    while True:
        try:
            data = sock.recv(RECV_BYTES)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not data:
            raise ConnectionResetError("closed by the server")
        return data


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "tcp://" + url)
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "localhost" else host), parts.port or 80


def with_endpoint(url: str, endpoint: str) -> str:
    """``url`` with its host and port replaced by ``endpoint`` (``host:port``); path,
    query (the token) and fragment kept."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, endpoint, parts.path, parts.query, parts.fragment))


# --- protocols ------------------------------------------------------------------------
class Codec:
    """How one system is spoken: handshake, scanning, the update payload."""

    reference = True

    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.mask_rng = random.Random(plan.seed ^ 0x5EED)

    async def handshake(self, sock: socket.socket, p: Participant) -> bytes:
        raise NotImplementedError

    def scan(self, buf: bytes) -> tuple[list[w.Span], int]:
        raise NotImplementedError

    def update(self, c: Conn, t: float) -> bytes:
        raise NotImplementedError

    def goodbye(self) -> bytes:
        return b""

    def pong(self, payload: bytes) -> bytes:
        return b""

    def close_reply(self, payload: bytes) -> bytes:
        return b""

    def _mask(self) -> bytes:
        return self.mask_rng.randbytes(4)


class LocshareCodec(Codec):
    reference = False

    async def handshake(self, sock: socket.socket, p: Participant) -> bytes:
        host, port = _host_port(p.url)
        parts = urlsplit(p.url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        return await _ws_handshake(sock, host, port, target, wait_first_frame=True)

    def scan(self, buf: bytes) -> tuple[list[w.Span], int]:
        return w.scan_ws(buf, w.LOCATIONS_PREFIX)

    def update(self, c: Conn, t: float) -> bytes:
        return w.ws_frame(w.locshare_update(c.lat, c.lng, t), self._mask())

    def goodbye(self) -> bytes:
        return w.ws_frame(w.ws_close_payload(1000), self._mask(), w.OP_CLOSE)

    def pong(self, payload: bytes) -> bytes:
        return w.ws_frame(payload, self._mask(), w.OP_PONG)

    def close_reply(self, payload: bytes) -> bytes:
        return w.ws_frame(payload[:2], self._mask(), w.OP_CLOSE)


class WsRoomCodec(LocshareCodec):
    """benchmarks/reference/ws_broadcast.py: rooms by query parameter."""

    reference = True

    async def handshake(self, sock: socket.socket, p: Participant) -> bytes:
        host, port = _host_port(p.url)
        return await _ws_handshake(sock, host, port, f"/?room=s{p.session}", wait_first_frame=False)

    def scan(self, buf: bytes) -> tuple[list[w.Span], int]:
        return w.scan_ws(buf, None)

    def update(self, c: Conn, t: float) -> bytes:
        return w.ws_frame(w.reference_update(c.user_id, c.lat, c.lng, t), self._mask())


class MqttCodec(Codec):
    async def handshake(self, sock: socket.socket, p: Participant) -> bytes:
        topic = f"locshare/s{p.session}".encode()
        await _send_all(sock, w.mqtt_connect(p.user_id.encode()) + w.mqtt_subscribe(topic))
        buf = b""
        seen: set[int] = set()
        while not {w.MQTT_CONNACK, w.MQTT_SUBACK} <= seen:
            buf += await _recv(sock)
            messages, used = w.scan_mqtt(buf)
            buf = buf[used:]
            for kind, ptype, _ in messages:
                if kind == w.K_OTHER:
                    seen.add(ptype)
        return buf

    def scan(self, buf: bytes) -> tuple[list[w.Span], int]:
        return w.scan_mqtt(buf)

    def update(self, c: Conn, t: float) -> bytes:
        topic = f"locshare/s{c.p.session}".encode()
        return w.mqtt_publish(topic, w.reference_update(c.user_id, c.lat, c.lng, t))

    def goodbye(self) -> bytes:
        return w.MQTT_DISCONNECT


class RedisCodec(Codec):
    """RESP3 (``HELLO 3``): one connection both subscribes and publishes."""

    async def handshake(self, sock: socket.socket, p: Participant) -> bytes:
        channel = f"s{p.session}".encode()
        await _send_all(
            sock, w.resp_command(b"HELLO", b"3") + w.resp_command(b"SUBSCRIBE", channel)
        )
        buf = b""
        values = 0
        while values < 2:  # the HELLO map, then the subscribe confirmation
            buf += await _recv(sock)
            messages, used = w.scan_resp(buf)
            buf = buf[used:]
            values += len(messages)
        return buf

    def scan(self, buf: bytes) -> tuple[list[w.Span], int]:
        return w.scan_resp(buf)

    def update(self, c: Conn, t: float) -> bytes:
        channel = f"s{c.p.session}".encode()
        return w.resp_command(b"PUBLISH", channel, w.reference_update(c.user_id, c.lat, c.lng, t))

    def goodbye(self) -> bytes:
        return w.resp_command(b"QUIT")


CODECS: Final[dict[str, type[Codec]]] = {
    "locshare": LocshareCodec,
    "ws": WsRoomCodec,
    "mqtt": MqttCodec,
    "redis": RedisCodec,
}


async def _ws_handshake(
    sock: socket.socket, host: str, port: int, target: str, *, wait_first_frame: bool
) -> bytes:
    key = os.urandom(16)
    await _send_all(sock, w.ws_handshake_request(host, port, target, key))
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += await _recv(sock)
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = w.ws_parse_handshake_response(head, key)
    if status != 101:
        with contextlib.suppress(OSError):
            rest += sock.recv(RECV_BYTES)
        raise HandshakeRefused(status, rest)
    if wait_first_frame:
        # locshare: connected means session_state received (always the first frame).
        while not w.scan_ws(rest, None)[0]:
            rest += await _recv(sock)
        first = w.scan_ws(rest, None)[0][0]
        if first[0] == w.K_CLOSE:
            raise HandshakeRefused(101, rest[first[1] : first[2]])
    return rest


# --- the worker -----------------------------------------------------------------------
class Worker:
    def __init__(self, plan: WorkerPlan, pipe: Connection) -> None:
        self.plan = plan
        self.pipe = pipe
        self.codec = CODECS[plan.protocol](plan)
        self.rng = random.Random(plan.seed)
        self.conns = [self.new_conn(p) for p in plan.participants]
        self.by_fd: dict[int, Conn] = {}
        self.ep_prompt = select.epoll()
        self.ep_count = select.epoll()
        self.rosters = {s: set(ids) for s, ids in plan.rosters.items()}
        self.foreign: dict[int, set[str]] = {}
        self.churn_ids: dict[int, list[str]] = {}
        self.latency = array.array("f")
        self.connect_ms: list[float] = []
        self.connect_errors: Counter[str] = Counter()
        self.close_ms: list[float] = []
        self.close_failures = 0
        self.iso_counter = 0
        self.iso_checked = 0
        self.sent_buckets: Counter[tuple[int, int]] = Counter()
        self.recv_buckets: Counter[tuple[int, int]] = Counter()
        # (session, send second, sender node) and (..., sender node, receiver node)
        self.sent_links: Counter[tuple[int, int, int]] = Counter()
        self.recv_links: Counter[tuple[int, int, int, int]] = Counter()
        # (second, receiver node, online): presence notices timing receivers got
        self.presence: Counter[tuple[int, int, bool]] = Counter()
        self.send_errors = 0
        self.t0 = math.inf
        self.t_stop = math.inf
        self.t_end = math.inf
        self.closing_all = False
        self.sweep_sleep = trio.CancelScope()
        self.nursery: trio.Nursery | None = None
        self.start_event = trio.Event()
        self.close_event = trio.Event()
        self.initial_connects = 0

    def new_conn(self, p: Participant) -> Conn:
        """A participant's connection state (a subclass may carry more)."""
        return Conn(p, self.rng)

    # --- pipe ---------------------------------------------------------------------------
    def post(self, name: str, payload: Any) -> None:
        self.pipe.send((name, payload))

    async def _pipe_reader(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.pipe.fileno())
            name, payload = self.pipe.recv()
            if name == "start":
                self.t0, self.t_stop, self.t_end = payload
                self.start_event.set()
            elif name == "close":
                self.close_event.set()

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(TICK_S)
            self.post("tick", self._tick())

    def _tick(self) -> Tick:
        conns = self.conns
        sent = sum(c.sent for c in conns)
        entries = sum(c.entries for c in conns)
        frames = sum(c.frames for c in conns)
        reconnects = sum(c.reconnects for c in conns)
        samples, self.latency = self.latency, array.array("f")
        return Tick(
            t=time.time(),
            connected=sum(1 for c in conns if c.up),
            opened=len(self.connect_ms),
            failed=sum(1 for c in conns if c.failed),
            sent=sent,
            entries=entries,
            frames=frames,
            reconnects=reconnects,
            latency_ms=samples.tobytes(),
        )

    # --- main ---------------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._pipe_reader)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._prompt_loop)
            nursery.start_soon(self._sweep_loop)
            await self._open_all()
            steady_open: Counter[int] = Counter(
                c.p.session for c in self.conns if c.p.steady and c.up
            )
            steady_nodes: Counter[tuple[int, int]] = Counter(
                (c.p.session, c.p.node) for c in self.conns if c.p.steady and c.up
            )
            self.post(
                "ready",
                {
                    "connect_ms": list(self.connect_ms),
                    "errors": dict(self.connect_errors),
                    "steady_open": dict(steady_open),
                    "steady_open_nodes": list(steady_nodes.items()),
                    "failed": sum(1 for c in self.conns if c.failed),
                },
            )
            self.initial_connects = len(self.connect_ms)
            await self.start_event.wait()
            async with trio.open_nursery() as active:
                active.start_soon(self._sender)
                for slot in self.plan.churn:
                    active.start_soon(self._churn, slot)
            await trio.sleep(max(0.0, self.t_end - time.time()))
            self.post("done", self._final())
            await self.close_event.wait()
            await self._close_all()
            self.post("closed", {"close_ms": self.close_ms, "failures": self.close_failures})
            nursery.cancel_scope.cancel()

    async def _open_all(self) -> None:
        plan = self.plan
        limiter = trio.CapacityLimiter(plan.connect_concurrency)
        start = time.perf_counter()
        initial = [c for c in self.conns if c.p.steady or c.p.sends]
        async with trio.open_nursery() as nursery:
            for i, c in enumerate(initial):
                if plan.connect_rate_per_s:
                    due = start + i / plan.connect_rate_per_s
                    await trio.sleep(max(0.0, due - time.perf_counter()))
                await limiter.acquire_on_behalf_of(c)
                nursery.start_soon(self._open_first, c, limiter)

    async def _open_first(self, c: Conn, limiter: trio.CapacityLimiter) -> None:
        """Connect like a client would: a failed attempt is retried with backoff (every
        failed attempt is counted in ``connect_errors``); ``connect_ms`` runs from the
        first attempt to ``session_state``."""
        try:
            t = time.perf_counter()
            for attempt in range(CONNECT_ATTEMPTS):
                try:
                    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                        await self._open(c)
                    break
                except (OSError, w.WireError, HandshakeRefused, trio.TooSlowError) as exc:
                    self.connect_errors[_describe(exc)] += 1
                    if attempt == CONNECT_ATTEMPTS - 1 or (
                        isinstance(exc, HandshakeRefused) and exc.status in (401, 410)
                    ):
                        c.failed = True
                        return
                await trio.sleep(_backoff(attempt, self.rng))
            self.connect_ms.append((time.perf_counter() - t) * 1000)
            c.opened_at = time.time()
        finally:
            limiter.release_on_behalf_of(c)

    async def _open(self, c: Conn) -> None:
        host, port = _host_port(c.p.url)
        sock = await _connect(host, port)
        try:
            rest = await self.codec.handshake(sock, c.p)
        except BaseException:
            trio.lowlevel.notify_closing(sock)
            sock.close()
            raise
        c.sock = sock
        c.down = False
        c.rest = b""
        c.wbuf = b""
        self.by_fd[sock.fileno()] = c
        mask = select.EPOLLIN | select.EPOLLRDHUP
        (self.ep_prompt if c.p.decode else self.ep_count).register(sock.fileno(), mask)
        if rest:
            self._consume(c, rest, time.time())

    # --- receiving ----------------------------------------------------------------------
    async def _prompt_loop(self) -> None:
        ep = self.ep_prompt
        while True:
            await trio.lowlevel.wait_readable(ep.fileno())
            for fd, _ in ep.poll(0, max(len(self.by_fd), 1)):
                c = self.by_fd.get(fd)
                if c is not None:
                    self._read(c)

    async def _sweep_loop(self) -> None:
        ep = self.ep_count
        while True:
            if self.closing_all:
                await trio.lowlevel.wait_readable(ep.fileno())
            else:
                with trio.CancelScope() as self.sweep_sleep:
                    await trio.sleep(self.plan.sweep_s)
            for fd, _ in ep.poll(0, max(len(self.by_fd), 1)):
                c = self.by_fd.get(fd)
                if c is not None:
                    self._read(c)

    def _read(self, c: Conn) -> None:
        sock = c.sock
        assert sock is not None
        try:
            data = sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        now = time.time()
        if not data:
            self._lost(c, None, now)
            return
        self._consume(c, data, now)

    def _consume(self, c: Conn, data: bytes, now: float) -> None:
        buf = c.rest + data if c.rest else data
        try:
            messages, used = self.codec.scan(buf)
        except (w.WireError, ValueError):
            self._lost(c, None, now)
            return
        c.rest = buf[used:] if used < len(buf) else b""
        for kind, start, end in messages:
            if kind == w.K_UPDATES:
                c.frames += 1
                if c.p.decode:
                    self._decode_updates(c, buf[start:end], now)
                else:
                    c.entries += buf.count(w.USER_ID_KEY, start, end)
                    if buf.find(c.own, start, end) >= 0:
                        c.echoes += 1
                    self.iso_counter += 1
                    if self.iso_counter % self.plan.isolation_every == 0:
                        self._check_ids(c, w.decode_entries(buf[start:end], self.codec.reference))
                if c.outages and c.outages[-1].back_at is None:
                    c.outages[-1].back_at = now
            elif kind == w.K_TEXT:
                self._text(c, buf, start, end)
            elif kind == w.K_CLOSE:
                code = w.ws_close_code(buf[start:end])
                if not c.closing:
                    self._write(c, self.codec.close_reply(buf[start:end]))
                self._lost(c, code, now)
                return
            elif kind == w.K_PING:
                self._write(c, self.codec.pong(buf[start:end]))

    def _text(self, c: Conn, buf: bytes, start: int, end: int) -> None:
        """A text frame other than ``locations``: timing receivers check its ids."""
        if c.p.decode:
            self._check_text(c, buf[start:end])

    def _decode_updates(self, c: Conn, payload: bytes, now: float) -> None:
        entries = w.decode_entries(payload, self.codec.reference)
        c.entries += len(entries)
        own = c.user_id
        samples = self.latency
        buckets = self.plan.buckets and c.p.steady
        node_of = self.plan.node_of
        for entry in entries:
            sent_at = w.parse_stamp(entry["timestamp"])  # type: ignore[arg-type]
            samples.append((now - sent_at) * 1000.0)
            if entry["user_id"] == own:
                c.echoes += 1
            if buckets:
                self.recv_buckets[(c.p.session, int(sent_at))] += 1
                if node_of:
                    sender = node_of.get(str(entry["user_id"]), -1)
                    self.recv_links[(c.p.session, int(sent_at), sender, c.p.node)] += 1
        self._check_ids(c, entries)

    def _check_ids(self, c: Conn, entries: list[dict[str, Any]]) -> None:
        """Isolation: every user id must belong to the receiver's session.  Ids this
        worker does not know (churners joined by other workers) are collected and
        checked by the controller against all the run's rosters."""
        self.iso_checked += 1
        roster = self.rosters.get(c.p.session, set())
        for entry in entries:
            uid = entry.get("user_id")
            if isinstance(uid, str) and uid not in roster:
                self.foreign.setdefault(c.p.session, set()).add(uid)

    def _check_text(self, c: Conn, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            data = message.get("data") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return
        if message.get("type") in ("participant_joined", "participant_left", "presence"):
            self._check_ids(c, [data])
            if message["type"] == "presence" and self.plan.node_of:
                self.presence[(int(time.time()), c.p.node, bool(data.get("online")))] += 1
        elif message.get("type") == "session_state":
            self._check_ids(c, data.get("participants", []))

    # --- sending ------------------------------------------------------------------------
    def _write(self, c: Conn, data: bytes) -> bool:
        """Non-blocking write; a rare partial write is finished by a task."""
        sock = c.sock
        if sock is None or not data:
            return False
        if c.wbuf:
            c.wbuf += data
            return True
        try:
            n = sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.send_errors += 1
            return False
        if n < len(data):
            c.wbuf = data[n:]
            assert self.nursery is not None
            self.nursery.start_soon(self._flush, c, sock)
        return True

    async def _flush(self, c: Conn, sock: socket.socket) -> None:
        while c.wbuf and c.sock is sock:
            await trio.lowlevel.wait_writable(sock)
            if c.sock is not sock:
                return
            try:
                n = sock.send(c.wbuf)
            except BlockingIOError:
                continue
            except OSError:
                return
            c.wbuf = c.wbuf[n:]

    async def _sender(self) -> None:
        plan = self.plan
        rng = self.rng
        interval = plan.interval_s
        heap = [
            (self.t0 + rng.random() * interval, i) for i, c in enumerate(self.conns) if c.p.sends
        ]
        heapq.heapify(heap)
        send_buckets = plan.buckets
        while heap:
            now = time.time()
            if now >= self.t_stop:
                return
            while heap and heap[0][0] <= now:
                due, i = heapq.heappop(heap)
                heapq.heappush(heap, (due + interval, i))
                c = self.conns[i]
                if not (c.sending and c.up):
                    continue
                c.lat += rng.uniform(-0.0002, 0.0002)
                c.lng += rng.uniform(-0.0002, 0.0002)
                t = time.time()
                if self._write(c, self.codec.update(c, t)):
                    c.sent += 1
                    if send_buckets:
                        self.sent_buckets[(c.p.session, int(t))] += 1
                        if plan.node_of:
                            self.sent_links[(c.p.session, int(t), c.p.node)] += 1
            if heap:
                await trio.sleep(max(SEND_TICK_S, min(heap[0][0], self.t_stop) - time.time()))

    # --- connection loss and reconnection -----------------------------------------------
    def _detach(self, c: Conn) -> None:
        sock = c.sock
        if sock is None:
            return
        fd = sock.fileno()
        self.by_fd.pop(fd, None)
        for ep in (self.ep_prompt, self.ep_count):
            with contextlib.suppress(OSError):
                ep.unregister(fd)
        trio.lowlevel.notify_closing(sock)
        sock.close()
        c.sock = None
        c.rest = b""
        c.wbuf = b""

    def _lost(self, c: Conn, code: int | None, now: float) -> None:
        self._detach(c)
        if c.closing:
            c.closed_at = now
            return
        c.down = True
        if code in FINAL_CLOSE_CODES:
            c.stop = True
            return
        if not c.outages or c.outages[-1].reconnected_at is not None:
            c.outages.append(Outage(down_at=now))
        if self.plan.reconnect and self.nursery is not None:
            self.nursery.start_soon(self._reconnect, c)

    async def _reconnect(self, c: Conn) -> None:
        attempt = 0
        while not self.closing_all:
            await trio.sleep(_backoff(attempt, self.rng))
            attempt += 1
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                    await self._open(c)
            except HandshakeRefused as exc:
                if exc.status == 401:
                    c.stop = True
                    return
                continue
            except (OSError, w.WireError, trio.TooSlowError):
                continue
            c.reconnects += 1
            if c.outages:
                c.outages[-1].reconnected_at = time.time()
            return

    # --- churn (multi) ------------------------------------------------------------------
    async def _churn(self, slot: ChurnSlot) -> None:
        from .rest import HttpConnection

        plan = self.plan
        rng = self.rng
        host, port = _host_port(plan.base_url)
        ids = self.churn_ids.setdefault(slot.session, [])
        n = 0
        while time.time() + plan.churn_dwell_s[0] + 2 * plan.settle_s < self.t_stop:
            stream = await trio.open_tcp_stream(host, port)
            try:
                http = HttpConnection(stream)
                body = orjson.dumps({"display_name": f"churn {slot.session}.{n}"})
                status, answer = await http.request(
                    "POST", f"/api/sessions/{slot.session_id}/join", body
                )
            finally:
                await stream.aclose()
            n += 1
            if status != 201:
                self.connect_errors[f"churn join HTTP {status}"] += 1
                await trio.sleep(rng.uniform(*plan.churn_pause_s))
                continue
            joined = orjson.loads(answer)
            ids.append(joined["user_id"])
            self.rosters.setdefault(slot.session, set()).add(joined["user_id"])
            url = f"{joined['websocket_url']}?token={joined['websocket_token']}"
            p = Participant(
                index=-1,
                session=slot.session,
                user_id=joined["user_id"],
                url=with_endpoint(url, slot.ws_endpoint) if slot.ws_endpoint else url,
                decode=True,
                steady=False,
                sends=True,
                node=slot.node,
                session_id=slot.session_id,
            )
            c = Conn(p, rng)
            c.sending = False
            self.conns.append(c)
            t = time.perf_counter()
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                    await self._open(c)
            except (OSError, w.WireError, HandshakeRefused, trio.TooSlowError) as exc:
                c.failed = True
                self.connect_errors[_describe(exc)] += 1
                continue
            self.connect_ms.append((time.perf_counter() - t) * 1000)
            # Share only while every steady receiver is sure to get it: after a settle
            # time, and until a settle time before leaving.
            await trio.sleep(plan.settle_s)
            c.sending = True
            dwell = min(rng.uniform(*plan.churn_dwell_s), self.t_stop - time.time() - plan.settle_s)
            await trio.sleep(max(0.0, dwell))
            c.sending = False
            await trio.sleep(plan.settle_s)
            if c.up:
                c.closing = True
                self._write(c, w.ws_frame(b'{"type":"leave"}', self.codec._mask()))
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    while c.sock is not None:
                        await trio.sleep(0.05)
                self._detach(c)
            await trio.sleep(rng.uniform(*plan.churn_pause_s))

    # --- the end ------------------------------------------------------------------------
    def _final(self) -> dict[str, Any]:
        steady = [c for c in self.conns if c.p.steady]
        return {
            "tick": self._tick(),
            "sent_by_session": _sum_by_session(self.conns, "sent"),
            "steady_entries": sum(c.entries for c in steady),
            "steady_echoes": sum(c.echoes for c in steady if c.p.sends),
            "sent_by_steady": sum(c.sent for c in steady if c.p.sends),
            "entries_all": sum(c.entries for c in self.conns),
            "frames_all": sum(c.frames for c in self.conns),
            "unconfirmed": sum(max(0, c.sent - c.echoes) for c in self.conns if c.p.steady),
            "unconfirmed_by_session": _unconfirmed_by_session(self.conns),
            "foreign": {s: sorted(ids) for s, ids in self.foreign.items()},
            "churn_ids": self.churn_ids,
            "churn_connections": sum(1 for c in self.conns if not c.p.steady),
            "iso_checked": self.iso_checked,
            "outages": [
                (c.p.index, o.down_at, o.reconnected_at, o.back_at)
                for c in self.conns
                for o in c.outages
            ],
            "down_at_end": sum(1 for c in self.conns if c.p.steady and not c.up),
            "gave_up": sum(1 for c in self.conns if c.stop and not c.closing),
            "sent_buckets": list(self.sent_buckets.items()),
            "recv_buckets": list(self.recv_buckets.items()),
            "sent_links": list(self.sent_links.items()),
            "recv_links": list(self.recv_links.items()),
            "presence": list(self.presence.items()),
            "send_errors": self.send_errors,
            "connect_errors": dict(self.connect_errors),
            "churn_connect_ms": self.connect_ms[self.initial_connects :],
        }

    async def _close_all(self) -> None:
        """Graceful close of every open connection; ``close_ms`` is from our goodbye
        (close frame, MQTT DISCONNECT, QUIT) to the server's answer or EOF."""
        self.closing_all = True
        self.sweep_sleep.cancel()  # from now on the sweep loop waits on readiness
        goodbye = self.codec.goodbye()
        started: dict[int, float] = {}
        for c in self.conns:
            if c.up:
                c.closing = True
                started[id(c)] = time.time()
                if not self._write(c, goodbye):
                    self._detach(c)
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            while any(c.sock is not None for c in self.conns):
                await trio.sleep(0.01)
        for c in self.conns:
            if id(c) not in started:
                continue
            if c.sock is not None:
                self.close_failures += 1
                self._detach(c)
            elif c.closed_at is not None:
                self.close_ms.append((c.closed_at - started[id(c)]) * 1000)


def _sum_by_session(conns: list[Conn], attr: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for c in conns:
        out[c.p.session] = out.get(c.p.session, 0) + getattr(c, attr)
    return out


def _unconfirmed_by_session(conns: list[Conn]) -> dict[int, int]:
    out: dict[int, int] = {}
    for c in conns:
        if c.p.steady and c.sent > c.echoes:
            out[c.p.session] = out.get(c.p.session, 0) + c.sent - c.echoes
    return out


def _backoff(attempt: int, rng: random.Random) -> float:
    """docs/protocol.md: 0.5 s doubling to 30 s, each wait randomised by +-50 %."""
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)) * rng.uniform(0.5, 1.5)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, HandshakeRefused):
        return f"HTTP {exc.status}"
    if isinstance(exc, trio.TooSlowError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def worker_main(plan: WorkerPlan, pipe: Connection) -> None:
    """Entry point of a worker process."""
    worker_type: type[Worker] = Worker
    if plan.realistic is not None:
        from ._realistic_load import RealisticWorker

        worker_type = RealisticWorker
    try:
        trio.run(worker_type(plan, pipe).run)
    except KeyboardInterrupt:
        pass
    finally:
        pipe.close()
