"""Session-affine workers: a WebSocket goes to the worker that serves its session.

With ``--workers N`` the kernel spreads connections over the workers (SO_REUSEPORT), so
without more every session has members on every worker: each worker applies and
flushes every session, and every position crosses Redis.  Measured (``benchmarks
cluster``, 2026-12-01): that split cost 1.49-1.92 x the CPU per delivery of one process
and p95 337-608 ms, where nodes that kept each session whole measured 135-195 ms.

So a worker that accepts a WebSocket reads its handshake, and if the token names a
session that another worker owns (the session id modulo N), it passes the socket
itself to that worker: the file descriptor and the bytes read so far, in one datagram
on the owner's Unix socket (``SCM_RIGHTS``).  The owner runs the same admission on them
as if it had accepted the connection (:func:`._wsserver.serve_stream`); the client sees
nothing of it.  Nothing is answered before the hand-over, so no state is split.
Measured with it (2026-12-02, 10,000 participants, window fixed at 100 ms): p95 247 ms
against 1,108 ms without, in one run; Redis relays 2 messages a second instead of 114.

Rules:
    1. The hand-over is an optimisation, never a condition: when the owner's socket is
       missing (the worker is restarting), full, or anything else fails, the accepting
       worker serves the connection itself, and the Redis bus keeps that session
       correct across workers, as it does for separate nodes.
    2. A connection is handed over at most once (the owner never passes it on).
    3. What arrives on a worker's socket is checked like any client input: one datagram
       with the magic, a flag byte and at most ``MAX_PAYLOAD_BYTES``, carrying exactly
       one descriptor of a stream socket; anything else is closed and counted.  The
       sockets live in a directory of mode 0700 and are mode 0600: only processes of
       the server's own user can send to them.
    4. A hand-over waits at most ``SEND_WAIT_S`` for room in the owner's queue; a
       stuck owner never holds up more than the connections it should serve.
"""

from __future__ import annotations

import array
import contextlib
import errno
import logging
import os
import socket
import stat
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from ..runtime._stats import HubStats

log = logging.getLogger("locshare.handoff")

MAGIC: Final = b"LSH1"
FLAG_PROXIED: Final = 1  # accepted on the REST port: X-Forwarded-For applies
# The handshake bytes read before the hand-over (a request head, which h11 bounds at
# 16 KiB, plus what followed it in the same reads); a bigger one is served locally.
MAX_PAYLOAD_BYTES: Final = 96 * 1024
_DATAGRAM_BYTES: Final = len(MAGIC) + 1 + MAX_PAYLOAD_BYTES
_MAX_FDS: Final = 4  # room to receive (and close) a few more than the one allowed
# How long a hand-over waits for room in the owner's queue before the connection is
# served where it landed (the owner is stuck, or far behind).
SEND_WAIT_S: Final = 1.0
RECEIVE_BATCH: Final = 256  # datagrams taken per wake-up before yielding
# The owner not running (yet): expected during a restart, not worth a log line.
_QUIET_ERRNOS: Final = frozenset({errno.ENOENT, errno.ECONNREFUSED})

Handler = Callable[[trio.SocketStream, bytes, bool], Awaitable[None]]


def socket_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"w{index}.sock"


@dataclass
class Handoff:
    """This worker's side: whom a session belongs to, sending, and receiving."""

    directory: Path
    index: int
    count: int
    stats: HubStats
    wait_s: float = SEND_WAIT_S
    _peers: dict[int, tuple[socket.socket, trio.Lock]] = field(init=False, default_factory=dict)

    def owner(self, session_id: uuid.UUID) -> int:
        """The worker that serves ``session_id`` (the id's low bits are random)."""
        return session_id.int % self.count

    async def send(
        self, stream: trio.SocketStream, received: bytes, *, proxied: bool, owner: int
    ) -> bool:
        """Pass ``stream`` (and the bytes read from it) to worker ``owner``; ``True`` if
        it went, and then this worker must close its own descriptor and nothing else.

        Waits at most ``wait_s`` for room in the owner's queue (the kernel queues only
        ``net.unix.max_dgram_qlen`` datagrams, 10 by default: a burst of connections
        fills it at once), then gives up: the caller serves the connection."""
        if owner == self.index or not 0 <= owner < self.count:
            return False
        if len(received) > MAX_PAYLOAD_BYTES:
            self.stats.handoffs_failed += 1
            return False
        message = [MAGIC + bytes([FLAG_PROXIED if proxied else 0]), received]
        ancillary = [
            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [stream.socket.fileno()]))
        ]
        failure: OSError | None = None
        with trio.move_on_after(self.wait_s):
            for _attempt in range(2):
                try:
                    sock, lock = self._peer(owner)
                except OSError as exc:  # the owner is not there (yet): no socket to reach
                    failure = exc
                    break
                try:
                    async with lock:  # one waiter per descriptor, as trio requires
                        while True:
                            try:
                                sock.sendmsg(message, ancillary)
                            except BlockingIOError:
                                await trio.lowlevel.wait_writable(sock)
                                continue
                            self.stats.handoffs_sent += 1
                            return True
                except (OSError, trio.ClosedResourceError) as exc:
                    # The owner restarted: the socket connected to its old endpoint
                    # refuses (or another sender closed it for that). Once more, anew.
                    self._forget(owner, sock)
                    failure = exc if isinstance(exc, OSError) else None
        self.stats.handoffs_failed += 1
        if failure is not None and failure.errno not in _QUIET_ERRNOS:
            log.warning("hand-over to worker %d failed (%s); serving here", owner, failure)
        return False

    def _peer(self, owner: int) -> tuple[socket.socket, trio.Lock]:
        """A datagram socket connected to ``owner``'s (connected: so that waiting for
        room works, through the kernel's peer wake-up)."""
        peer = self._peers.get(owner)
        if peer is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * _DATAGRAM_BYTES)
                sock.connect(str(socket_path(self.directory, owner)))
            except OSError:
                sock.close()
                raise
            peer = self._peers[owner] = (sock, trio.Lock())
        return peer

    def _forget(self, owner: int, sock: socket.socket) -> None:
        if owner in self._peers and self._peers[owner][0] is sock:
            del self._peers[owner]
        if sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def receive(
        self,
        handler: Handler,
        connections: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind this worker's socket and start ``handler(stream, received, proxied)`` in
        ``connections`` for each connection handed over, until cancelled."""
        path = socket_path(self.directory, self.index)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this slot's previous worker
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(str(path))
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * _DATAGRAM_BYTES)
            task_status.started()
            ancillary = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
            while True:
                await trio.lowlevel.wait_readable(sock)
                # Everything queued, in one go (a burst of connections fills the queue).
                for _ in range(RECEIVE_BATCH):
                    try:
                        data, ancdata, flags, _ = sock.recvmsg(_DATAGRAM_BYTES, ancillary)
                    except BlockingIOError:
                        break
                    stream = self._accept(data, ancdata, flags)
                    if stream is not None:
                        self.stats.handoffs_received += 1
                        proxied = bool(data[len(MAGIC)] & FLAG_PROXIED)
                        connections.start_soon(handler, stream, data[len(MAGIC) + 1 :], proxied)
                await trio.lowlevel.checkpoint()
        finally:
            trio.lowlevel.notify_closing(sock)
            sock.close()
            with contextlib.suppress(OSError):
                path.unlink()

    def _accept(
        self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int
    ) -> trio.SocketStream | None:
        fds = array.array("i")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % fds.itemsize
                fds.frombytes(payload[:usable])
        valid = (
            len(fds) == 1
            and not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
            and len(data) > len(MAGIC)
            and data.startswith(MAGIC)
        )
        sock: socket.socket | None = None
        if valid:
            try:
                sock = socket.socket(fileno=fds[0])
            except OSError:
                sock = None  # not a socket
            else:
                if sock.type != socket.SOCK_STREAM or sock.family not in (
                    socket.AF_INET,
                    socket.AF_INET6,
                ):
                    sock.detach()
                    sock = None
        if sock is None:
            self.stats.handoffs_refused += 1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            refused = self.stats.handoffs_refused
            if refused & (refused - 1) == 0:  # the 1st, 2nd, 4th...: a flood cannot flood the log
                log.warning(
                    "refused a malformed hand-over datagram (%d descriptors; %d so far)",
                    len(fds),
                    refused,
                )
            return None
        try:
            return trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        except Exception:  # a socket trio cannot use: close it, count it, go on
            sock.close()
            self.stats.handoffs_refused += 1
            return None

    def close(self) -> None:
        for owner, (sock, _) in list(self._peers.items()):
            self._forget(owner, sock)
