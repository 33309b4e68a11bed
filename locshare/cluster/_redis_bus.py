"""The session bus over Redis (or Valkey) pub/sub: one session, many processes and machines.

Cost rule: never a Redis round trip per location update.  :meth:`RedisBus.publish` only
encodes the event and appends it to this bus tick's queue; every ``tick_s`` one task
sends the queue as one message per channel bucket, in one pipeline (the bus's own
RESP2 connections, :mod:`._resp`: one write per pipeline, every reply and message of a
read handled in one scheduling round).  So a node sends a few dozen messages a second
whatever its load, and the positions of one flush of one session travel as one entry
of one of them.

Channels and keys carry ids only: ``locshare:{bNN}:events`` (``NN`` the session's
bucket; the braces make each bucket one Redis Cluster hash slot), ``locshare:nodes``
(heartbeats), ``locshare:{bNN}:hosts:<session id>`` (the nodes hosting a session: a set
of node ids, expiring unless refreshed).  Positions and names travel only inside
pub/sub messages, which Redis does not keep.

Resource handling: :meth:`RedisBus.run` owns two connections (commands, and the
subscription) and four tasks (send,
receive, heartbeat and liveness, host refresh), and reconnects with backoff whenever
Redis goes away; while it is away every node goes on serving its own sockets, the
queue keeps control events (bounded) and drops positions (they are ephemeral and the
resynchronisation after the reconnect replaces them).  After a reconnect every local
actor gets :class:`~locshare.runtime._events.BusReconnected` and republishes its
presence and asks for the session's state.

Node liveness: every node publishes a heartbeat every ``HEARTBEAT_S``; a node not heard
from for ``NODE_TIMEOUT_S`` is gone: its members show offline.  A node that does not
receive its *own* heartbeat for ``WATCHDOG_S`` considers its subscription dead and
reconnects (a dead connection is not noticed by reading alone).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import orjson
import trio

from .._clock import WallClock
from ..errors import BusUnavailable, ConfigError
from ..runtime._bus import BusStatistics, Deliver
from ..runtime._events import BusReconnected, LocatedBatch, NodeGone, SessionEvent
from ..runtime._stats import Histogram
from ._codec import MalformedBusMessage, decode_message, encode_event, encode_message
from ._resp import READ_BYTES, ErrorReply, RedisLink, Reply, RespError, RespReader, subscribe

log = logging.getLogger("locshare.bus")

DEFAULT_BUCKETS: Final = 16
BUS_TICK_S: Final = 0.05
HEARTBEAT_S: Final = 1.0
# Liveness tolerates a saturated event loop: a heartbeat that is seconds late under
# load must not make a node look dead (its members flap offline) or make a node
# reconnect (dropping what it queued).  Still within the 10 s of the contract: the
# check runs once per heartbeat period, so a death is noticed between NODE_TIMEOUT_S - 1
# and NODE_TIMEOUT_S + 1 s after it (9 s, measured 9.1 s on a quiet machine, reached
# 10 s under CI's load; 8 s leaves a second for delivery).
NODE_TIMEOUT_S: Final = 8.0
WATCHDOG_S: Final = 6.0
HOST_TTL_S: Final = 60.0  # a hosts set lives this long unless its nodes refresh it
HOST_REFRESH_S: Final = 20.0
COMMAND_TIMEOUT_S: Final = 6.0
STARTUP_TIMEOUT_S: Final = 15.0
BACKOFF_MIN_S: Final = 0.25
BACKOFF_MAX_S: Final = 2.0
MAX_QUEUED_EVENTS: Final = 20_000  # control events kept while Redis is away
NODES_CHANNEL: Final = b"locshare:nodes"


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class RedisBus:
    """:class:`~locshare.runtime.SessionBus` over Redis pub/sub.  See the module docstring."""

    distributed = True

    def __init__(
        self,
        url: str,
        *,
        clock: WallClock,
        node_id: str | None = None,
        buckets: int = DEFAULT_BUCKETS,
        allow_persistence: bool = False,
        tick_s: float = BUS_TICK_S,
    ) -> None:
        self.url = url
        self.clock = clock
        self.node_id = node_id or default_node_id()
        self.buckets = buckets
        self.allow_persistence = allow_persistence
        self.tick_s = tick_s
        self._subscribers: dict[uuid.UUID, Deliver] = {}
        self._hosted: set[uuid.UUID] = set()
        self._unhosted: set[uuid.UUID] = set()
        self._outgoing: dict[int, list[list[Any]]] = {}
        self._queued = 0
        self._held: deque[tuple[int, list[Any]]] = deque()  # control events kept while down
        self._link: RedisLink | None = None
        self._nodes: dict[str, float] = {}  # other node -> monotonic time last heard
        self._own_heartbeat_at = 0.0
        self._was_down = False
        self.state = "connecting"
        self.persistence = "unchecked"
        self.publish_seconds = Histogram()
        self.messages_out = 0
        self.messages_in = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.events_dropped = 0
        self.reconnects = 0
        self.errors = 0

    # --- names ------------------------------------------------------------------------
    def bucket_of(self, session_id: uuid.UUID) -> int:
        return session_id.int % self.buckets

    def channel(self, bucket: int) -> bytes:
        return b"locshare:{b%02d}:events" % bucket

    def hosts_key(self, session_id: uuid.UUID) -> bytes:
        return b"locshare:{b%02d}:hosts:%s" % (self.bucket_of(session_id), str(session_id).encode())

    def _to_monotonic(self, wall: float) -> float:
        return trio.current_time() - max(0.0, self.clock.now() - wall)

    # --- the seam (SessionBus) ------------------------------------------------------------
    def publish(self, session_id: uuid.UUID, event: SessionEvent) -> None:
        if getattr(event, "origin", None) != self.node_id:
            deliver = self._subscribers.get(session_id)
            if deliver is not None:
                deliver(event)
        if self.state != "up" and isinstance(event, LocatedBatch):
            self.events_dropped += 1  # ephemeral; the resync after the reconnect replaces it
            return
        if self._queued >= MAX_QUEUED_EVENTS:
            self.events_dropped += 1
            return
        self._outgoing.setdefault(self.bucket_of(session_id), []).append(
            encode_event(session_id, event)
        )
        self._queued += 1

    def subscribe(self, session_id: uuid.UUID, deliver: Deliver) -> Callable[[], None]:
        self._subscribers[session_id] = deliver

        def unsubscribe() -> None:
            if self._subscribers.get(session_id) is deliver:
                del self._subscribers[session_id]

        return unsubscribe

    async def host(self, session_id: uuid.UUID) -> frozenset[str]:
        """Register this node as a host of the session; the other live hosts."""
        self._hosted.add(session_id)
        self._unhosted.discard(session_id)
        link = self._link
        if link is None:
            return frozenset()
        key = self.hosts_key(session_id)
        try:
            with trio.fail_after(COMMAND_TIMEOUT_S):
                members, _added, _expiry = await link.execute(
                    (b"SMEMBERS", key),
                    (b"SADD", key, self.node_id.encode()),
                    (b"PEXPIRE", key, str(int(HOST_TTL_S * 1000)).encode()),
                )
        except (RespError, OSError, trio.BrokenResourceError, trio.TooSlowError):
            self.errors += 1
            return frozenset()
        if not isinstance(members, list):
            self.errors += 1
            return frozenset()
        hosts = {m.decode() for m in members if isinstance(m, bytes)}
        return frozenset(h for h in hosts if h in self._nodes)

    def unhost(self, session_id: uuid.UUID) -> None:
        self._hosted.discard(session_id)
        self._unhosted.add(session_id)

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            kind="redis",
            state=self.state,
            persistence=self.persistence,
            nodes=len(self._nodes),
            messages_out=self.messages_out,
            messages_in=self.messages_in,
            bytes_out=self.bytes_out,
            bytes_in=self.bytes_in,
            events_dropped=self.events_dropped,
            reconnects=self.reconnects,
            errors=self.errors,
            publish_seconds=self.publish_seconds,
        )

    # --- tasks ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect (start-up fails with :class:`BusUnavailable` if Redis cannot be reached
        within ``STARTUP_TIMEOUT_S``, :class:`ConfigError` if it persists to disk and that
        is not allowed), then serve until cancelled, reconnecting as needed."""
        started = False
        backoff = BACKOFF_MIN_S
        deadline = trio.current_time() + STARTUP_TIMEOUT_S
        while True:
            try:
                with trio.fail_after(COMMAND_TIMEOUT_S):
                    link = await RedisLink.open(self.url)
                async with link:
                    with trio.fail_after(COMMAND_TIMEOUT_S):
                        (pong,) = await link.execute((b"PING",))
                        if isinstance(pong, ErrorReply):
                            raise RespError(f"PING: {pong.message}")
                        await self._check_persistence(link)
                    self._link = link
                    self.state = "up"
                    self._own_heartbeat_at = trio.current_time()
                    if self._was_down:
                        self.reconnects += 1
                        log.info("the session bus is back", extra={"node_id": self.node_id})
                        self._resend_held()
                        for deliver in list(self._subscribers.values()):
                            deliver(BusReconnected())
                    if not started:
                        started = True
                        log.info("the session bus is up", extra={"node_id": self.node_id})
                        task_status.started()
                    backoff = BACKOFF_MIN_S
                    await self._serve(link)
            except* ConfigError:
                if not started:
                    raise
                self.state = "down"  # someone switched persistence on: stay off the bus
                log.error("Redis persists to disk; the session bus stays down")
            except* Exception as group:
                # Containment: whatever failed (Redis went away, a timeout, a reply
                # that is not RESP2), reconnect.  A cancellation that came with such
                # errors is re-raised by except* itself (not logged).
                cause = _first_leaf(group)
                if trio.current_effective_deadline() != -math.inf:
                    self.errors += 1
                    if not started and trio.current_time() >= deadline:
                        raise BusUnavailable(
                            f"cannot reach Redis at start-up ({type(cause).__name__})"
                        ) from group
                    if started:
                        log.warning(
                            "the session bus lost Redis (%s); reconnecting",
                            type(cause).__name__,
                            extra={"node_id": self.node_id},
                        )
            self._link = None
            if self.state == "up":
                self.state = "down"
            self._was_down = started
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _check_persistence(self, link: RedisLink) -> None:
        save, appendonly = await link.execute(
            (b"CONFIG", b"GET", b"save"), (b"CONFIG", b"GET", b"appendonly")
        )
        if isinstance(save, ErrorReply) or isinstance(appendonly, ErrorReply):
            if self.persistence != "unknown":
                self.persistence = "unknown"
                log.warning(
                    "cannot check whether Redis persists to disk (CONFIG is disabled); "
                    "make sure it does not (save '' and appendonly no)"
                )
            return
        saves = _config_value(save) not in (b"", None)
        appends = _config_value(appendonly) == b"yes"
        if (saves or appends) and not self.allow_persistence:
            raise ConfigError(
                "Redis persists to disk (save or appendonly is on): positions would be "
                "written to disk. Turn persistence off (save '' and appendonly no), or set "
                "LOCSHARE_REDIS_ALLOW_PERSISTENCE (--redis-allow-persistence) to accept it."
            )
        self.persistence = "allowed" if saves or appends else "off"

    async def _serve(self, link: RedisLink) -> None:
        channels = [self.channel(b) for b in range(self.buckets)] + [NODES_CHANNEL]
        with trio.fail_after(COMMAND_TIMEOUT_S):
            stream, reader, early = await subscribe(self.url, channels)
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(self._receive_loop, stream, reader, early)
            nursery.start_soon(self._send_loop, link)
            nursery.start_soon(self._heartbeat_loop, link)
            nursery.start_soon(self._refresh_hosts_loop, link)

    async def _receive_loop(
        self, stream: trio.abc.Stream, reader: RespReader, early: list[Reply]
    ) -> None:
        """Every message of a read is handled in the same scheduling round (see
        ``_subscriber``: one round per message is what a busy node cannot afford)."""
        self._on_replies(early)
        while True:
            data = await stream.receive_some(READ_BYTES)
            if not data:
                raise ConnectionError("Redis closed the subscriber connection")
            reader.feed(data)
            self._on_replies(reader.replies())

    def _on_replies(self, replies: list[Reply]) -> None:
        now = trio.current_time()
        for reply in replies:
            if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"):
                continue
            channel, data = reply[1], reply[2]
            if not isinstance(data, bytes):
                continue
            self._on_message(channel, data, now)

    def _on_message(self, channel: object, data: bytes, now: float) -> None:
        self.messages_in += 1
        self.bytes_in += len(data)
        if channel == NODES_CHANNEL:
            try:
                origin = orjson.loads(data)["o"]
            except (ValueError, KeyError, TypeError):
                self.errors += 1
                return
            if origin == self.node_id:
                self._own_heartbeat_at = now
            elif isinstance(origin, str):
                self._nodes[origin] = now
            return
        try:
            origin, events = decode_message(data, self._to_monotonic)
        except MalformedBusMessage:
            self.errors += 1
            return
        if origin == self.node_id:
            return
        self._nodes[origin] = now
        for session_id, event in events:
            deliver = self._subscribers.get(session_id)
            if deliver is not None:
                deliver(event)

    async def _send_loop(self, link: RedisLink) -> None:
        while True:
            await trio.sleep(self.tick_s)
            if not self._outgoing and not self._unhosted:
                continue
            outgoing, self._outgoing, self._queued = self._outgoing, {}, 0
            unhosted, self._unhosted = self._unhosted, set()
            started = trio.current_time()
            sizes = 0
            commands: list[tuple[bytes, ...]] = []
            for bucket, entries in outgoing.items():
                data = encode_message(self.node_id, entries)
                sizes += len(data)
                commands.append((b"PUBLISH", self.channel(bucket), data))
            for session_id in unhosted:
                commands.append((b"SREM", self.hosts_key(session_id), self.node_id.encode()))
            try:
                with trio.fail_after(COMMAND_TIMEOUT_S):
                    replies = await link.execute(*commands)
            except BaseException:
                self._hold(outgoing)
                raise
            self.errors += sum(isinstance(r, ErrorReply) for r in replies)
            self.messages_out += len(outgoing)
            self.bytes_out += sizes
            self.publish_seconds.observe(trio.current_time() - started)

    def _hold(self, outgoing: dict[int, list[list[Any]]]) -> None:
        """Keep the control events of a send that failed (positions are let go)."""
        for bucket, entries in outgoing.items():
            for entry in entries:
                if entry[1] == "L" or len(self._held) >= MAX_QUEUED_EVENTS:
                    self.events_dropped += 1
                else:
                    self._held.append((bucket, entry))

    def _resend_held(self) -> None:
        while self._held:
            bucket, entry = self._held.popleft()
            self._outgoing.setdefault(bucket, []).append(entry)
            self._queued += 1

    async def _heartbeat_loop(self, link: RedisLink) -> None:
        beat = orjson.dumps({"o": self.node_id})
        while True:
            with trio.fail_after(COMMAND_TIMEOUT_S):
                await link.execute((b"PUBLISH", NODES_CHANNEL, beat))
            self.messages_out += 1
            await trio.sleep(HEARTBEAT_S)
            now = trio.current_time()
            if now - self._own_heartbeat_at > WATCHDOG_S:
                raise BusConnectionLost("no heartbeat of our own came back")
            for node, heard in list(self._nodes.items()):
                if now - heard > NODE_TIMEOUT_S:
                    del self._nodes[node]
                    log.warning("node gone: no heartbeat", extra={"node": node})
                    for deliver in list(self._subscribers.values()):
                        deliver(NodeGone(node))

    async def _refresh_hosts_loop(self, link: RedisLink) -> None:
        ttl_ms = str(int(HOST_TTL_S * 1000)).encode()
        while True:
            hosted = list(self._hosted)
            if hosted:
                commands: list[tuple[bytes, ...]] = []
                for session_id in hosted:
                    key = self.hosts_key(session_id)
                    commands += [(b"SADD", key, self.node_id.encode()), (b"PEXPIRE", key, ttl_ms)]
                with trio.fail_after(COMMAND_TIMEOUT_S * 2):
                    await link.execute(*commands)
            await trio.sleep(HOST_REFRESH_S)


def _config_value(reply: Reply) -> bytes | None:
    """``CONFIG GET name`` answers ``[name, value]`` (empty when there is no such
    setting)."""
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], bytes):
        return reply[1]
    return None


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class BusConnectionLost(Exception):
    """Our own heartbeats stopped arriving: the subscription is dead."""
