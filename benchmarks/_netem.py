"""The ``lossy`` scenario: locshare through packet loss and added latency.

The server runs in its own network namespace, reachable from the load (in the root
namespace) over a private point-to-point link, 10.77.0.1 (clients) <-> 10.77.0.2
(server).  The link drops each packet with probability ``loss`` and delays it by
``delay_ms``, in *each* direction (so an update, which crosses it twice, gets twice
the delay), with periodic *bursts* of total loss.

Two ways to build the link, the first that works:

* ``tc netem`` on a veth pair (needs the kernel's ``sch_netem``).
* A userspace netem: two TUN devices, one moved into the server's namespace, and a
  relay process that copies IP packets between them, dropping and delaying them the
  same way (independent random loss per packet, fixed delay, order kept).  Both ends
  are the real kernel TCP stacks, so retransmission and back-off behave as on a real
  lossy link.  Used when the kernel has no netem (CONFIG_NET_SCH_NETEM unset here).

Needs root (``ip netns``).  Namespaces, links and the relay are removed at the end,
even on failure.  If neither link can be built, the scenario is reported as skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import multiprocessing
import os
import random
import select
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from . import _run
from ._scenarios import Scenario
from ._server import pin_self_to_load_cpus
from ._systems import LocshareSystem

CLIENT_IP = "10.77.0.1"
SERVER_IP = "10.77.0.2"
LOSS = 0.20
DELAY_MS = 100.0  # each direction: +200 ms from sender to receiver
BURST_EVERY_S = {True: 12.0, False: 60.0}  # quick, full
BURST_S = {True: 4.0, False: 5.0}
BURST_FIRST_S = {True: 8.0, False: 30.0}

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


def unavailable_reason() -> str | None:
    """Why the lossy link cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    probe = f"lsbprobe{os.getpid() % 10000}"
    made = _sh("ip", "netns", "add", probe, check=False)
    if made.returncode:
        return f"ip netns does not work: {made.stderr.strip()}"
    _sh("ip", "netns", "del", probe, check=False)
    if netem_reason() is None:
        return None
    if not os.path.exists("/dev/net/tun"):
        return f"no tc netem ({netem_reason()}) and no /dev/net/tun for the userspace link"
    return None


def netem_reason() -> str | None:
    """None if ``tc netem`` works, else why not."""
    if not shutil.which("tc"):
        return "tc is not installed"
    name = f"lsbn{os.getpid() % 10000}"
    made = _sh("ip", "link", "add", name, "type", "veth", "peer", "name", name + "p", check=False)
    if made.returncode:
        return f"cannot create a veth pair: {made.stderr.strip()}"
    try:
        tried = _sh("tc", "qdisc", "add", "dev", name, "root", "netem", "delay", "1ms", check=False)
        return None if tried.returncode == 0 else (tried.stderr.strip() or "tc netem failed")
    finally:
        _sh("ip", "link", "del", name, check=False)


# --- the userspace link ----------------------------------------------------------------
def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def relay_main(name_a: str, name_b: str, pipe: Connection, seed: int) -> None:
    """Copy packets between two TUN devices; ``(loss, delay_s)`` arrive on ``pipe``,
    ``None`` stops.  Reports ``(forwarded, dropped)`` when stopping."""
    fa, fb = _open_tun(name_a), _open_tun(name_b)
    pipe.send("ready")
    rng = random.Random(seed)
    loss, delay = 0.0, 0.0
    queue: list[tuple[float, int, int, bytes]] = []
    seq = forwarded = dropped = 0
    ep = select.epoll()
    ep.register(fa, select.EPOLLIN)
    ep.register(fb, select.EPOLLIN)
    ep.register(pipe.fileno(), select.EPOLLIN)
    peer = {fa: fb, fb: fa}
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else -1
        for fd, _ in ep.poll(timeout):
            if fd == pipe.fileno():
                message = pipe.recv()
                if message is None:
                    pipe.send((forwarded, dropped))
                    return
                loss, delay = message
                continue
            for _ in range(256):
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if loss and rng.random() < loss:
                    dropped += 1
                    continue
                seq += 1
                heapq.heappush(queue, (time.monotonic() + delay, seq, peer[fd], packet))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, fd, packet = heapq.heappop(queue)
            with contextlib.suppress(OSError):
                os.write(fd, packet)
                forwarded += 1


@dataclass
class Link:
    kind: str  # "tc netem" or "userspace (TUN relay)"
    netns: str
    dev_a: str
    dev_b: str
    pipe: Connection | None = None
    proc: Any = None
    state: tuple[float, float] = (0.0, 0.0)

    def set(self, loss: float, delay_ms: float) -> None:
        if (loss, delay_ms) == self.state:
            return
        self.state = (loss, delay_ms)
        if self.pipe is not None:
            self.pipe.send((loss, delay_ms / 1000))
            return
        args = ["netem", "delay", f"{delay_ms:g}ms", "loss", f"{loss * 100:g}%"]
        _sh("tc", "qdisc", "change", "dev", self.dev_a, "root", *args)
        _sh(
            "ip",
            "netns",
            "exec",
            self.netns,
            "tc",
            "qdisc",
            "change",
            "dev",
            self.dev_b,
            "root",
            *args,
        )

    def statistics(self) -> dict[str, int]:
        if self.pipe is None:
            return {}
        self.pipe.send(None)
        forwarded, dropped = self.pipe.recv() if self.pipe.poll(5) else (0, 0)
        self.pipe = None
        return {"packets_forwarded": forwarded, "packets_dropped": dropped}


@contextlib.contextmanager
def lossy_link() -> Iterator[Link]:
    tag = os.getpid() % 10000
    netns = f"locshare-bench-{tag}"
    dev_a, dev_b = f"lsb{tag}a", f"lsb{tag}b"
    _sh("ip", "netns", "del", netns, check=False)
    _sh("ip", "link", "del", dev_a, check=False)
    _sh("ip", "netns", "add", netns)
    link: Link | None = None
    try:
        if netem_reason() is None:
            _sh("ip", "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns", netns)
            link = Link("tc netem", netns, dev_a, dev_b)
            _sh("tc", "qdisc", "add", "dev", dev_a, "root", "netem", "delay", "0ms")
            _sh(
                "ip",
                "netns",
                "exec",
                netns,
                "tc",
                "qdisc",
                "add",
                "dev",
                dev_b,
                "root",
                "netem",
                "delay",
                "0ms",
            )
        else:
            link = _tun_relay(netns, dev_a, dev_b, tag)
        _address(netns, dev_a, CLIENT_IP, dev_b, SERVER_IP)
        yield link
    finally:
        _stop_relay(link)
        _sh("ip", "netns", "del", netns, check=False)
        _sh("ip", "link", "del", dev_a, check=False)


def _tun_relay(netns: str, dev_a: str, dev_b: str, seed: int) -> Link:
    """The userspace link: the relay opens both TUN devices here, then ``dev_b`` moves
    into ``netns``."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=relay_main, args=(dev_a, dev_b, child, seed), daemon=True)
    proc.start()
    child.close()
    link = Link("userspace (TUN relay)", netns, dev_a, dev_b, parent, proc)
    if not parent.poll(10) or parent.recv() != "ready":
        _stop_relay(link)
        raise RuntimeError("the userspace link relay did not start")
    _sh("ip", "link", "set", dev_b, "netns", netns)
    return link


def _address(netns: str, dev_a: str, ip_a: str, dev_b: str, ip_b: str) -> None:
    """Point-to-point addresses: ``ip_a`` on ``dev_a`` here, ``ip_b`` on ``dev_b`` in
    ``netns``; both up (and the namespace's loopback)."""
    _sh("ip", "addr", "add", ip_a, "peer", ip_b, "dev", dev_a)
    _sh("ip", "link", "set", dev_a, "up")
    inside = ["ip", "netns", "exec", netns]
    _sh(*inside, "ip", "addr", "add", ip_b, "peer", ip_a, "dev", dev_b)
    _sh(*inside, "ip", "link", "set", dev_b, "up")
    _sh(*inside, "ip", "link", "set", "lo", "up")


def _stop_relay(link: Link | None) -> None:
    if link is None or link.proc is None:
        return
    with contextlib.suppress(Exception):
        if link.pipe is not None:
            link.pipe.send(None)
    link.proc.join(timeout=5)
    if link.proc.is_alive():
        link.proc.kill()


# --- the partition run's links ---------------------------------------------------------
# Clients reach the namespaced node over a veth pair (kernel speed, never cut); its
# Redis traffic takes a second, userspace link through the relay, which the run cuts.
BUS_HERE_IP = "10.78.0.1"  # Redis listens here (and on 127.0.0.1 for the other node)
BUS_NODE_IP = "10.78.0.2"


@dataclass
class PartitionLink:
    netns: str
    bus: Link  # the cuttable link: bus.set(1.0, 0) cuts, bus.set(0.0, 0) heals
    client_ip: str = CLIENT_IP
    node_ip: str = SERVER_IP
    redis_ip: str = BUS_HERE_IP


def partition_unavailable_reason() -> str | None:
    """Why the partition's namespace and links cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun for the userspace link to Redis"
    probe = f"lsbprobe{os.getpid() % 10000}"
    made = _sh("ip", "netns", "add", probe, check=False)
    if made.returncode:
        return f"ip netns does not work: {made.stderr.strip()}"
    try:
        veth = _sh(
            "ip", "link", "add", probe + "a", "type", "veth", "peer", "name", probe + "b",
            "netns", probe, check=False,
        )  # fmt: skip
        if veth.returncode:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
    finally:
        _sh("ip", "link", "del", probe + "a", check=False)
        _sh("ip", "netns", "del", probe, check=False)
    return None


@contextlib.contextmanager
def partition_link() -> Iterator[PartitionLink]:
    """A namespace for one node: a veth pair for its clients (10.77.0.1 here <->
    10.77.0.2 there) and a TUN relay for its Redis link (10.78.0.1 <-> 10.78.0.2).
    Everything is removed at the end, also on failure."""
    tag = os.getpid() % 10000
    netns = f"locshare-part-{tag}"
    veth_a, veth_b = f"lsp{tag}a", f"lsp{tag}b"
    tun_a, tun_b = f"lsp{tag}c", f"lsp{tag}d"
    _sh("ip", "netns", "del", netns, check=False)
    for dev in (veth_a, tun_a):
        _sh("ip", "link", "del", dev, check=False)
    _sh("ip", "netns", "add", netns)
    bus: Link | None = None
    try:
        _sh("ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b, "netns", netns)
        _address(netns, veth_a, CLIENT_IP, veth_b, SERVER_IP)
        bus = _tun_relay(netns, tun_a, tun_b, tag)
        _address(netns, tun_a, BUS_HERE_IP, tun_b, BUS_NODE_IP)
        yield PartitionLink(netns, bus)
    finally:
        _stop_relay(bus)
        _sh("ip", "netns", "del", netns, check=False)
        for dev in (veth_a, tun_a):
            _sh("ip", "link", "del", dev, check=False)


# --- the scenario ---------------------------------------------------------------------
def skipped(sc: Scenario, reason: str) -> dict[str, Any]:
    return {
        "scenario": sc.name,
        "title": sc.title,
        "skipped": reason,
        "valid": False,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {
            "sessions": sc.sessions,
            "per_session": sc.per_session,
            "interval_s": sc.interval_s,
            "duration_s": sc.duration_s,
        },
        "machine": _run.machine(),
    }


def run_lossy(sc: Scenario, opts: _run.RunOptions, progress: _run.Progress) -> dict[str, Any]:
    from ._commands import delivery_by_second, run_locshare_with

    if opts.target:
        return skipped(
            sc, "lossy starts its own server in a network namespace; --target is not supported"
        )
    reason = unavailable_reason()
    if reason:
        progress.note(f"skipped: {reason}")
        return skipped(sc, reason)
    pin_self_to_load_cpus()
    quick = opts.quick
    every, length, first = BURST_EVERY_S[quick], BURST_S[quick], BURST_FIRST_S[quick]
    bursts: list[tuple[float, float]] = []
    with lossy_link() as link:
        progress.note(
            f"link: {link.kind}; loss {LOSS:.0%} and +{DELAY_MS:g} ms each way, bursts of {length:g} s every {every:g} s"
        )
        system = LocshareSystem(host=SERVER_IP, netns=link.netns)
        try:
            # Set-up (REST joins, connecting) on a clean link; loss and delay from t0 on.

            def on_sample(t: float) -> None:
                in_burst = t >= first and (t - first) % every < length and t < sc.duration_s
                if in_burst and link.state[0] < 1:
                    bursts.append((t, t))
                elif not in_burst and link.state[0] == 1:
                    bursts[-1] = (bursts[-1][0], t)
                link.set(1.0 if in_burst else LOSS, DELAY_MS)

            data, result = run_locshare_with(
                sc, system, opts, progress, on_sample=on_sample, buckets=True
            )
        finally:
            system.stop()
        link.set(0.0, 0.0)
        stats = link.statistics()
    result["lossy"] = lossy_figures(data, result, link, stats, bursts, delivery_by_second(data))
    return result


def lossy_figures(
    data: _run.RunData,
    result: dict[str, Any],
    link: Link,
    stats: dict[str, int],
    bursts: list[tuple[float, float]],
    timeline: list[tuple[float, float]],
) -> dict[str, Any]:
    """Delivery resuming after each burst, and whether the server's memory stayed flat."""
    rows = [r for r in data.timeline if r["phase"] in ("active", "drain")]
    received = (
        np.diff([r["entries"] for r in rows], prepend=rows[0]["entries"]) if rows else np.array([])
    )
    t = np.array([r["t"] for r in rows])
    resumed = []
    for start, end in bursts:
        before = received[(t < start) & (t >= start - 5)]
        normal = float(before.mean()) if before.size else 0.0
        after = [(tt, n) for tt, n in zip(t, received, strict=True) if tt >= end]
        back = next((tt for tt, n in after if normal and n >= 0.5 * normal), None)
        resumed.append(
            {
                "burst_s": [round(start, 1), round(end, 1)],
                "delivery_resumed_after_s": round(back - end, 1) if back is not None else None,
            }
        )
    rss = [(r["t"], r["server_rss_mb"]) for r in rows if r["server_rss_mb"]]
    slope = None
    if len(rss) >= 5:
        xs, ys = np.array(rss).T
        slope = round(float(np.polyfit(xs, ys, 1)[0]) * 60, 3)
    return {
        "link": link.kind,
        "loss_each_way": LOSS,
        "delay_ms_each_way": DELAY_MS,
        **stats,
        "bursts": resumed,
        "reconnects": rows[-1]["reconnects"] if rows else 0,
        "rss_mb_first_last": [rss[0][1], rss[-1][1]] if rss else None,
        "rss_slope_mb_per_min": slope,
        "timeline": timeline,
    }
