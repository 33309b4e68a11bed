"""The bus's connections to Redis: a small RESP2 client, read in batches.

Why not coredis (measured; docs/design.md, "Cluster mode"): it hands every reply and
every pub/sub message through tasks and memory streams, one trio scheduling round per
hop, so a busy node takes in about one message per round of its event loop, and one
command costs several rounds.  With rounds of 5 ms, 320 pub/sub messages a second
waited 2.6 s (median) and the backlog only grew (``python -m benchmarks.bus_receive``);
with rounds of 20 ms one PUBLISH took 176 ms.  Under the 10,000-participant load the
bus's commands then ran into their timeouts and the bus reconnected again and again.
Here a command pipeline is one write and the reads it takes, and every reply or
message of a read (up to 256 KiB) is handled in the same round.

* :class:`RespReader` is sans-io: bytes in, replies out (RESP2, the protocol a
  connection speaks until it sends ``HELLO 3``).  An error reply is a value
  (:class:`ErrorReply`), not an exception: one refused command does not break the
  connection's parsing.
* :func:`connect` opens a connection from the URL forms of ``LOCSHARE_REDIS_URL``:
  ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, the system's
  trust store), ``unix://[[user]:password@]/path[?db=N&password=...]``, and
  authenticates (``AUTH``) and selects the database.
* :class:`RedisLink` sends commands: :meth:`RedisLink.execute` pipelines a batch and
  returns the replies in order.  One batch at a time per link (a lock); the bus keeps
  one link for commands and one subscribed connection (:func:`subscribe`).
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import trio

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A ``-ERR ...`` reply."""

    message: str


Reply = bytes | int | ErrorReply | list["Reply"] | None

READ_BYTES: Final = 256 * 1024
# A bulk string this long is not a bus message (they are tens of kilobytes): the
# connection is broken or not Redis.  Bounds the reader's buffer.
MAX_BULK_BYTES: Final = 64 * 1024 * 1024
MAX_DEPTH: Final = 4
MAX_ARRAY: Final = 100_000  # SMEMBERS of a hosts set, KEYS in the tests
MAX_LINE_BYTES: Final = 1024


class RespError(Exception):
    """The peer sent something that is not RESP2, or closed the connection."""


class RespReader:
    """Complete RESP2 replies from a byte stream (``feed`` then ``replies``)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data
        if len(self._buffer) - self._start > MAX_BULK_BYTES + MAX_LINE_BYTES:
            raise RespError("a reply larger than any bus message")

    def replies(self) -> list[Reply]:
        """Every complete reply buffered so far, in order."""
        out: list[Reply] = []
        while True:
            parsed = self._parse(self._start, 0)
            if parsed is None:
                break
            reply, self._start = parsed
            out.append(reply)
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        return out

    def _line(self, at: int) -> tuple[bytes, int] | None:
        end = self._buffer.find(b"\r\n", at)
        if end < 0:
            if len(self._buffer) - at > MAX_LINE_BYTES:
                raise RespError("a header line without its end")
            return None
        return bytes(self._buffer[at:end]), end + 2

    def _parse(self, at: int, depth: int) -> tuple[Reply, int] | None:
        if at >= len(self._buffer):
            return None
        line = self._line(at + 1)
        if line is None:
            return None
        text, after = line
        kind = self._buffer[at : at + 1]
        if kind == b"+":
            return text, after
        if kind == b"-":
            return ErrorReply(text.decode("utf-8", "replace")), after
        try:
            number = int(text)
        except ValueError:
            raise RespError("not a RESP2 length or integer") from None
        if kind == b":":
            return number, after
        if kind == b"$":
            if number < 0:
                return None, after
            if number > MAX_BULK_BYTES:
                raise RespError("a bulk string larger than any bus message")
            end = after + number
            if len(self._buffer) < end + 2:
                return None
            return bytes(self._buffer[after:end]), end + 2
        if kind == b"*":
            if number < 0:
                return None, after
            if depth >= MAX_DEPTH or number > MAX_ARRAY:
                raise RespError("an array nested too deep or too long")
            items: list[Reply] = []
            for _ in range(number):
                parsed = self._parse(after, depth + 1)
                if parsed is None:
                    return None
                item, after = parsed
                items.append(item)
            return items, after
        raise RespError(f"unknown RESP2 type {kind!r}")


def command(*parts: bytes) -> bytes:
    """A command in RESP2."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


async def _read(stream: trio.abc.Stream, reader: RespReader, count: int) -> list[Reply]:
    """At least ``count`` replies (all that the reads brought)."""
    replies: list[Reply] = []
    while len(replies) < count:
        data = await stream.receive_some(READ_BYTES)
        if not data:
            raise RespError("Redis closed the connection")
        reader.feed(data)
        replies += reader.replies()
    return replies


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str
    host: str
    port: int
    path: str
    username: str | None
    password: str | None
    db: int


def parse_url(url: str) -> Address:
    """``LOCSHARE_REDIS_URL`` (:class:`~locshare.errors.ConfigError` if unusable)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"LOCSHARE_REDIS_URL: scheme {parts.scheme!r} is not redis://, rediss:// or unix://"
        )
    query = dict(urllib.parse.parse_qsl(parts.query))
    password = parts.password if parts.password is not None else query.get("password")
    username = parts.username or query.get("username")
    db_text = query.get("db", "0")
    if parts.scheme != "unix" and parts.path.strip("/"):
        db_text = parts.path.strip("/")
    try:
        db = int(db_text)
        port = parts.port or 6379
    except ValueError:
        raise ConfigError(f"LOCSHARE_REDIS_URL: bad port or database in {url!r}") from None
    return Address(
        parts.scheme,
        parts.hostname or "127.0.0.1",
        port,
        parts.path,
        None if username is None else urllib.parse.unquote(username),
        None if password is None else urllib.parse.unquote(password),
        db,
    )


async def connect(url: str) -> tuple[trio.abc.Stream, RespReader]:
    """A connection, authenticated, on the URL's database.  The caller closes it."""
    address = parse_url(url)
    stream: trio.abc.Stream
    if address.scheme == "unix":
        stream = await trio.open_unix_socket(address.path)
    else:
        stream = await trio.open_tcp_stream(address.host, address.port)
        if address.scheme == "rediss":
            tls = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=address.host)
            await tls.do_handshake()
            stream = tls
    try:
        reader = RespReader()
        setup: list[bytes] = []
        if address.password is not None:
            credentials = [address.password.encode()]
            if address.username:
                credentials.insert(0, address.username.encode())
            setup.append(command(b"AUTH", *credentials))
        if address.db:
            setup.append(command(b"SELECT", str(address.db).encode()))
        if setup:
            await stream.send_all(b"".join(setup))
            for reply in await _read(stream, reader, len(setup)):
                if isinstance(reply, ErrorReply):
                    raise RespError(f"Redis refused the connection: {reply.message}")
        return stream, reader
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


class RedisLink(trio.abc.AsyncResource):
    """A connection for commands (see the module docstring)."""

    def __init__(self, stream: trio.abc.Stream, reader: RespReader) -> None:
        self.stream = stream
        self._reader = reader
        self._lock = trio.Lock()

    @classmethod
    async def open(cls, url: str) -> RedisLink:
        return cls(*await connect(url))

    async def execute(self, *commands: Sequence[bytes]) -> list[Reply]:
        """Send ``commands`` in one write; their replies, in order."""
        if not commands:
            return []
        async with self._lock:
            await self.stream.send_all(b"".join(command(*c) for c in commands))
            replies = await _read(self.stream, self._reader, len(commands))
            if len(replies) != len(commands):
                raise RespError("more replies than commands")
            return replies

    async def aclose(self) -> None:
        await self.stream.aclose()


async def subscribe(
    url: str, channels: Sequence[bytes]
) -> tuple[trio.abc.Stream, RespReader, list[Reply]]:
    """A connection subscribed to ``channels``: the stream, its reader, and any
    replies that arrived behind the confirmations (messages already)."""
    stream, reader = await connect(url)
    try:
        await stream.send_all(command(b"SUBSCRIBE", *channels))
        early: list[Reply] = []
        confirmed = 0
        while confirmed < len(channels):
            for reply in await _read(stream, reader, 1):
                if isinstance(reply, ErrorReply):
                    raise RespError(f"SUBSCRIBE was refused: {reply.message}")
                if isinstance(reply, list) and reply[:1] == [b"subscribe"]:
                    confirmed += 1
                else:
                    early.append(reply)
        return stream, reader, early
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
