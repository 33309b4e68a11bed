"""Passing a connection to the worker that owns its session (``net/_handoff.py``).

Real sockets in one process: a TCP connection accepted here is handed, with the bytes
already read from it, over a Unix datagram socket to a second ``Handoff`` (as the other
worker would be), which then talks to the client on it.  The end-to-end test with two
worker processes is in tests/cluster/test_workers.py.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from locshare._config import parse_slot
from locshare.net._handoff import Handoff, socket_path
from locshare.runtime._stats import HubStats


@dataclass
class Owner:
    """Worker 1's side: what it was handed."""

    handed: list[tuple[trio.SocketStream, bytes, bool]] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    async def handler(self, stream: trio.SocketStream, received: bytes, proxied: bool) -> None:
        self.handed.append((stream, received, proxied))
        self.arrived.set()
        await trio.sleep_forever()  # the test talks on the stream


@dataclass
class Pair:
    sender: Handoff
    receiver: Handoff
    owner: Owner
    listener: trio.SocketListener
    nursery: trio.Nursery

    async def accepted(self) -> tuple[trio.SocketStream, trio.SocketStream]:
        """A fresh TCP connection: (client end, the end this worker accepted)."""
        port = self.listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        return client, await self.listener.accept()


@asynccontextmanager
async def open_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    """Worker 0 (sends) and worker 1 (receives, into ``Owner``), and a TCP listener."""
    directory = tmp_path / "workers"
    directory.mkdir(mode=0o700)
    sender = Handoff(directory, 0, 2, HubStats())
    receiver = Handoff(directory, 1, 2, HubStats())
    owner = Owner()
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.receive, owner.handler, nursery)
        yield Pair(sender, receiver, owner, listener, nursery)
        nursery.cancel_scope.cancel()
    sender.close()
    receiver.close()
    await listener.aclose()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with open_pair(tmp_path) as opened:
        yield opened


async def test_a_connection_handed_over_carries_its_bytes_and_stays_open(pair: Pair) -> None:
    client, accepted = await pair.accepted()
    await client.send_all(b"GET /ws?token=t HTTP/1.1\r\n\r\n")
    head = await accepted.receive_some(1024)
    assert await pair.sender.send(accepted, head, proxied=True, owner=1)
    await accepted.aclose()  # this worker's descriptor only: the connection stays open
    with trio.fail_after(5):
        await pair.owner.arrived.wait()
    stream, received, proxied = pair.owner.handed[0]
    assert (received, proxied) == (head, True)
    await client.send_all(b"later bytes")
    with trio.fail_after(5):
        assert await stream.receive_some(1024) == b"later bytes"
        await stream.send_all(b"from the owner")
        assert await client.receive_some(1024) == b"from the owner"
    assert pair.sender.stats.handoffs_sent == 1
    assert pair.receiver.stats.handoffs_received == 1
    await stream.aclose()
    with trio.fail_after(5):
        assert await client.receive_some(1024) == b""  # closed by its last holder
    await client.aclose()


async def test_nothing_is_sent_to_this_worker_itself(pair: Pair) -> None:
    client, accepted = await pair.accepted()
    assert not await pair.sender.send(accepted, b"", proxied=False, owner=0)
    assert pair.sender.stats.handoffs_sent == 0
    await client.aclose()
    await accepted.aclose()


async def test_with_no_worker_at_the_other_end_the_connection_stays_here(tmp_path: Path) -> None:
    """The owner restarting (its socket absent, or present with nobody bound): ``send``
    says no at once and the accepting worker serves the client itself."""
    directory = tmp_path / "workers"
    directory.mkdir(mode=0o700)
    sender = Handoff(directory, 0, 2, HubStats())
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    async with await trio.open_tcp_stream("127.0.0.1", port) as client:
        accepted = await listener.accept()
        assert not await sender.send(accepted, b"head", proxied=False, owner=1)  # no socket file
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stale.bind(str(socket_path(directory, 1)))
        stale.close()  # the file stays, nobody receives: ECONNREFUSED
        assert not await sender.send(accepted, b"head", proxied=False, owner=1)
        assert sender.stats.handoffs_failed == 2
        await accepted.send_all(b"served here")
        assert await client.receive_some(64) == b"served here"
        await accepted.aclose()
    sender.close()
    await listener.aclose()


async def test_a_stuck_owner_holds_a_hand_over_for_wait_s_at_most(tmp_path: Path) -> None:
    """An owner that does not read: once its queue is full, a hand-over waits
    ``wait_s`` for room, then fails and the connection is served where it landed."""
    directory = tmp_path / "workers"
    directory.mkdir(mode=0o700)
    sender = Handoff(directory, 0, 2, HubStats(), wait_s=0.2)
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stuck.bind(str(socket_path(directory, 1)))
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    async with await trio.open_tcp_stream("127.0.0.1", port):
        accepted = await listener.accept()
        with trio.fail_after(10):
            sent = 0
            while await sender.send(accepted, b"x" * 4096, proxied=False, owner=1):
                sent += 1
                assert sent < 100_000
            started = trio.current_time()
            assert not await sender.send(accepted, b"x", proxied=False, owner=1)
            assert 0.2 <= trio.current_time() - started < 5
        assert sender.stats.handoffs_failed == 2
        assert sent > 0
        await accepted.aclose()
    stuck.close()  # the queued descriptors are closed with it
    sender.close()
    await listener.aclose()


async def test_a_burst_waits_for_room_instead_of_failing(pair: Pair) -> None:
    """Far more hand-overs at once than the kernel queues (``max_dgram_qlen``, 10 by
    default): each waits for room, none fails (found by the cluster benchmark, where
    10,000 connections arriving together fell back to the worker they landed on)."""
    pairs = [await pair.accepted() for _ in range(60)]

    async def hand(accepted: trio.SocketStream) -> None:
        assert await pair.sender.send(accepted, b"head", proxied=False, owner=1)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for _, accepted in pairs:
                nursery.start_soon(hand, accepted)
        while len(pair.owner.handed) < len(pairs):
            await trio.sleep(0.01)
    assert pair.sender.stats.handoffs_failed == 0
    for client, accepted in pairs:
        await accepted.aclose()
        await client.aclose()
    for stream, _, _ in pair.owner.handed:
        await stream.aclose()


async def test_a_restarted_owner_is_reached_at_its_new_socket(tmp_path: Path) -> None:
    """The sender keeps a socket connected to each owner; after the owner restarted
    (a new process binds the same path) that socket refuses, and the sender connects
    again instead of failing."""
    directory = tmp_path / "workers"
    directory.mkdir(mode=0o700)
    sender = Handoff(directory, 0, 2, HubStats())
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    for generation in range(2):
        owner = Owner()
        receiver = Handoff(directory, 1, 2, HubStats())
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.receive, owner.handler, nursery)
            async with await trio.open_tcp_stream("127.0.0.1", port):
                accepted = await listener.accept()
                assert await sender.send(accepted, b"gen%d" % generation, proxied=False, owner=1)
                await accepted.aclose()
                with trio.fail_after(5):
                    await owner.arrived.wait()
                assert owner.handed[0][1] == b"gen%d" % generation
                await owner.handed[0][0].aclose()
            nursery.cancel_scope.cancel()  # the owner "dies"; its socket file goes
    assert sender.stats.handoffs_sent == 2
    assert sender.stats.handoffs_failed == 0
    sender.close()
    await listener.aclose()


async def test_a_handshake_too_big_for_one_datagram_is_served_here(pair: Pair) -> None:
    client, accepted = await pair.accepted()
    assert not await pair.sender.send(accepted, b"x" * (200 * 1024), proxied=False, owner=1)
    assert pair.sender.stats.handoffs_sent == 0
    await client.aclose()
    await accepted.aclose()


def test_sessions_spread_evenly_and_always_to_the_same_worker(tmp_path: Path) -> None:
    workers = [Handoff(tmp_path, i, 3, HubStats()) for i in range(3)]
    ids = [uuid.uuid4() for _ in range(3000)]
    owners = [workers[0].owner(sid) for sid in ids]
    assert owners == [workers[2].owner(sid) for sid in ids]  # every worker agrees
    counts = [owners.count(i) for i in range(3)]
    assert all(800 < n < 1200 for n in counts), counts
    for worker in workers:
        worker.close()


@pytest.mark.parametrize("slot", ["", "1", "2/2", "-1/2", "a/b", "3/1"])
def test_a_bad_worker_slot_is_refused(slot: str) -> None:
    with pytest.raises(ValueError, match="worker slot"):
        parse_slot(slot)
