"""What can arrive on a worker's hand-over socket (``net/_handoff.py``, rule 3).

Only processes of the server's own user can reach the socket (mode 0600 in a 0700
directory), but what arrives is still checked like client input: a datagram without
the magic, without a descriptor or with several, with a descriptor that is not a TCP
socket, or too big for the buffer is closed and counted, every descriptor it carried
is closed, and the worker goes on taking real hand-overs.
"""

from __future__ import annotations

import array
import os
import socket
import stat
from pathlib import Path

import trio

from locshare.net._handoff import MAGIC, MAX_PAYLOAD_BYTES, socket_path
from tests.net.test_handoff import Pair, open_pair


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def send_raw(directory: Path, data: bytes, fds: list[int]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_PAYLOAD_BYTES)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        raw.sendmsg([data], ancillary, 0, str(socket_path(directory, 1)))


async def refused(pair: Pair, count: int) -> None:
    with trio.fail_after(5):
        while pair.receiver.stats.handoffs_refused < count:
            await trio.sleep(0.01)


async def still_takes_hand_overs(pair: Pair) -> None:
    client, accepted = await pair.accepted()
    assert await pair.sender.send(accepted, b"head", proxied=False, owner=1)
    await accepted.aclose()
    with trio.fail_after(5):
        await pair.owner.arrived.wait()
    stream, received, _ = pair.owner.handed[-1]
    assert received == b"head"
    await client.send_all(b"ping")
    with trio.fail_after(5):
        assert await stream.receive_some(16) == b"ping"
    await stream.aclose()
    await client.aclose()


async def test_malformed_hand_overs_are_closed_and_counted(tmp_path: Path) -> None:
    async with open_pair(tmp_path) as pair:
        directory = tmp_path / "workers"
        path = socket_path(directory, 1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        client, accepted = await pair.accepted()
        tcp = accepted.socket.fileno()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unix_a, unix_b = socket.socketpair()
        regular = os.open(tmp_path / "file", os.O_CREAT | os.O_RDWR)
        baseline = open_fds()
        attacks: list[tuple[bytes, list[int]]] = [
            (MAGIC + b"\0head", []),  # no descriptor
            (b"XXXX\0head", [tcp]),  # not the magic
            (b"", [tcp]),  # empty
            (MAGIC, [tcp]),  # no flag byte
            (MAGIC + b"\0head", [tcp, tcp]),  # two descriptors
            (MAGIC + b"\0head", [regular]),  # a file
            (MAGIC + b"\0head", [udp.fileno()]),  # a datagram socket
            (MAGIC + b"\0head", [unix_a.fileno()]),  # not TCP
            (MAGIC + b"\0" + b"x" * (MAX_PAYLOAD_BYTES + 1000), [tcp]),  # truncated
        ]
        for number, (data, fds) in enumerate(attacks, start=1):
            send_raw(directory, data, fds)
            await refused(pair, number)
        assert pair.owner.handed == []
        assert pair.receiver.stats.handoffs_received == 0
        # Every descriptor the datagrams carried was closed by the receiver.
        with trio.fail_after(5):
            while open_fds() > baseline:
                await trio.sleep(0.01)
        # The connection the attacks carried copies of is untouched here.
        await client.send_all(b"still mine")
        assert await accepted.receive_some(64) == b"still mine"
        await still_takes_hand_overs(pair)
        for closing in (udp, unix_a, unix_b):
            closing.close()
        os.close(regular)
        await accepted.aclose()
        await client.aclose()


async def test_a_flood_of_garbage_leaves_the_receiver_working(tmp_path: Path) -> None:
    """Thousands of datagrams as fast as one sender can: the kernel's queue bounds what
    waits (the sender meets EAGAIN, never the receiver's memory), and afterwards a real
    hand-over still goes through."""
    async with open_pair(tmp_path) as pair:
        directory = tmp_path / "workers"
        garbage = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        garbage.setblocking(False)
        sent = 0
        with trio.fail_after(30):
            for _ in range(5000):
                try:
                    garbage.sendto(b"junk" * 100, str(socket_path(directory, 1)))
                    sent += 1
                except BlockingIOError:
                    await trio.lowlevel.checkpoint()  # let the receiver drain
        garbage.close()
        await refused(pair, sent)
        assert pair.owner.handed == []
        await still_takes_hand_overs(pair)
