"""``--nodes N``: N separate ``locshare serve`` processes linked by one Redis, the shape
of a cluster of machines, on this one.

What the harness starts (shared placement: nothing pinned, see ``_server.py``):

* one PostgreSQL (pgserver, in the work directory) that every node uses
  (``LOCSHARE_DATABASE_URL``): a session created through one node is known to all;
* one ``redis-server`` on TCP (a free port on 127.0.0.1, persistence off), every
  node's ``LOCSHARE_REDIS_URL``, and one JWT secret for all;
* the nodes, each with its own data directory and node id (``bench-n<i>``), all on the
  *same two ports* with ``LOCSHARE_REUSE_PORT``: the kernel spreads new connections over
  them as a load balancer would, and a client whose node died reconnects to the same
  URL and lands on a survivor (``node-kill``).  They start one after the other (each
  migrates the shared database; the first does the work).

Where each participant connects (``placement``):

* ``shared`` (the default): the ports above; the kernel picks the node of each
  connection, so the 50 members of a session land on every node and every node needs
  the others' positions of it, through Redis (as behind a round-robin load balancer);
* ``sticky``: every node on ports of its own on 127.0.0.1, and every participant of a
  session connects to the one node :func:`sticky_node` picks from the session id (a
  rendezvous hash: stable, even, and adding a node moves only the sessions it takes,
  as the consistent hash of deploy/compose/nginx.conf's ``#sticky`` variant does), so
  no node needs another node's positions (the nodes still publish them: see
  benchmarks/README.md, "cluster");
* ``split``: ports or addresses of their own, member ``j`` of every session on node
  ``j % N``: every session spans every node, on purpose.  ``partition`` uses it (node
  1 runs in its own network namespace (``_netem.partition_link``) at its own address,
  so the nodes cannot share ports there).

``sticky`` and ``split`` rewrite the host and port of the WebSocket URL a join returned
(the token is valid on every node); REST (session creation and joins, before the
measurement) goes to node 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Final, Literal

import psutil

from . import _load, _server
from ._systems import System, SystemUnavailable, _wait_port

REDIS_START_TIMEOUT_S = 20.0

Placement = Literal["shared", "sticky", "split"]
PLACEMENTS: Final[tuple[Placement, ...]] = ("shared", "sticky", "split")


@dataclasses.dataclass
class NodeSpec:
    """Where one node runs: ``host`` (its address), ``netns`` (None: this namespace),
    ``redis_host`` (how it reaches Redis)."""

    host: str = "127.0.0.1"
    netns: str | None = None
    redis_host: str = "127.0.0.1"


class NodesSystem(System):
    """N nodes, one Redis, one database (see the module docstring).  ``specs``: one per
    node; by default all on 127.0.0.1.  ``placement``: where participants connect
    (module docstring); by default ``shared`` where every node is on one host, ``split``
    where they are not."""

    def __init__(
        self,
        nodes: int = 2,
        specs: list[NodeSpec] | None = None,
        placement: Placement | None = None,
    ) -> None:
        from locshare._version import __version__

        super().__init__(f"locshare, {nodes} nodes", "locshare", version=__version__)
        self.specs = specs or [NodeSpec() for _ in range(nodes)]
        self.count = len(self.specs)
        one_host = len({s.host for s in self.specs}) == 1
        self.placement: Placement = placement or ("shared" if one_host else "split")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}")
        if self.placement == "shared" and not one_host:
            raise ValueError("nodes at different addresses cannot share ports")
        self.shared_ports = self.placement == "shared"
        if self.placement == "sticky":
            self.name = f"locshare, {nodes} nodes (sticky)"
        self.workdir = Path(tempfile.mkdtemp(prefix="locshare-bench-nodes-"))
        self.servers: list[_server.ServerProcess | None] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port: int | None = None
        self.db_handle: Any = None
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        assert self.workdir is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            self.db_handle = pgserver.get_server(self.workdir / "pg", cleanup_mode="stop")
        database_url = str(self.db_handle.get_uri("postgres"))
        binds = sorted({"127.0.0.1", *(s.redis_host for s in self.specs)})
        self.redis_port = redis_port = _server._free_port()
        self.redis = start_redis(self.workdir / "redis", redis_port, binds)
        secret = secrets.token_urlsafe(48)
        # Shared: one pair of port numbers for all.  Otherwise each node its own pair on
        # one host; nodes at distinct addresses (partition) keep one pair of numbers.
        one_host = len({s.host for s in self.specs}) == 1
        pairs = [(_server._free_port(), _server._free_port())]
        if not self.shared_ports and one_host:
            pairs += [(_server._free_port(), _server._free_port()) for _ in self.specs[1:]]
        for index, spec in enumerate(self.specs):
            port, ws_port = pairs[index % len(pairs)]
            self.servers.append(
                _server.start_server(
                    data_dir=self.workdir / f"node{index}",
                    port=port,
                    ws_port=ws_port,
                    host=spec.host,
                    netns=spec.netns,
                    listeners=self.count if self.shared_ports else 1,
                    extra_env={
                        "LOCSHARE_DATABASE_URL": database_url,
                        "LOCSHARE_REDIS_URL": f"redis://{spec.redis_host}:{redis_port}",
                        "LOCSHARE_JWT_SECRET": secret,
                        "LOCSHARE_REUSE_PORT": "true" if self.shared_ports else "false",
                        "LOCSHARE_NODE_ID": f"bench-n{index}",
                    },
                )
            )
        first = self.servers[0]
        assert first is not None
        self.base_url = first.base_url
        self.host = first.host
        self.port = first.ws_port
        self.pid = first.proc.pid

    # --- what the controller samples ---------------------------------------------------
    def server_process(self) -> psutil.Process | None:
        for server in self.servers:
            if server is not None and server.proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    return psutil.Process(server.proc.pid)
        return None

    def server_processes(self) -> dict[str, psutil.Process]:
        out: dict[str, psutil.Process] = {}
        for index, server in enumerate(self.servers):
            if server is not None and server.proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    out[f"node {index}"] = psutil.Process(server.proc.pid)
        if self.redis is not None and self.redis.poll() is None:
            with contextlib.suppress(psutil.Error):
                out["redis"] = psutil.Process(self.redis.pid)
        return out

    def database_processes(self) -> list[psutil.Process]:
        return _server.database_processes(self.workdir) if self.workdir else []

    def shape(self) -> dict[str, object]:
        ports = {
            "shared": "shared by the nodes (SO_REUSEPORT)",
            "sticky": "one pair per node; every session on one node (sticky, hash of its id)",
            "split": "distinct addresses; member j of every session on node j % N",
        }
        return {
            "kind": "nodes",
            "nodes": self.count,
            "processes": self.count + 1,
            "redis": "redis-server started by the harness (TCP)",
            "database": "one PostgreSQL started by the harness, shared",
            "placement": self.placement,
            "ports": ports[self.placement],
            "netns": [s.netns for s in self.specs if s.netns],
        }

    def metrics_urls(self) -> dict[str, str]:
        if self.shared_ports:
            return {}
        return {
            f"node {i}": server.base_url
            for i, server in enumerate(self.servers)
            if server is not None and server.proc.poll() is None
        }

    def redis_address(self) -> tuple[str, int] | None:
        return ("127.0.0.1", self.redis_port) if self.redis_port else None

    def endpoints(self) -> list[str]:
        """Each node's WebSocket ``host:port``."""
        return [f"{s.host}:{s.ws_port}" for s in self.servers if s is not None]

    def assign(self, participants: list[_load.Participant]) -> list[_load.Participant]:
        """``sticky``: :func:`stick`; ``split``: :func:`spread`; ``shared``: as joined."""
        if self.placement == "sticky":
            return stick(participants, self.endpoints())
        if self.placement == "split":
            return spread(participants, self.endpoints())
        return participants

    def place_churn(self, slots: list[_load.ChurnSlot]) -> list[_load.ChurnSlot]:
        """``sticky``: every churner on its session's node too."""
        if self.placement != "sticky":
            return slots
        return stick_churn(slots, self.endpoints())

    # --- faults -----------------------------------------------------------------------
    def kill_node(self, index: int) -> None:
        """SIGKILL one node, as a crash would (its clients see their sockets reset)."""
        server = self.servers[index]
        assert server is not None
        _server.kill_server(server)

    def stop(self) -> None:
        for server in self.servers:
            if server is not None:
                _server.stop_server(server)
        self.servers = []
        if self.redis is not None:
            stop_process(self.redis)
            self.redis = None
        if self.db_handle is not None:
            with contextlib.suppress(Exception):
                self.db_handle.cleanup()
            self.db_handle = None
        if self.workdir is not None:
            _server.stop_database(self.workdir)
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def spread(participants: list[_load.Participant], endpoints: list[str]) -> list[_load.Participant]:
    """Member ``j`` of every session on node ``j % N`` (``endpoints[node]``, host:port,
    replaces the host and port of its WebSocket URL; path and token are kept): every
    session spans every node."""
    position: dict[int, int] = {}
    out = []
    for p in participants:
        j = position.get(p.session, 0)
        position[p.session] = j + 1
        node = j % len(endpoints)
        out.append(
            dataclasses.replace(p, url=_load.with_endpoint(p.url, endpoints[node]), node=node)
        )
    return out


def sticky_node(session_id: str, nodes: int) -> int:
    """The node (``0..nodes-1``) a session lives on: rendezvous (highest random weight)
    hashing of its id.  Stable across processes and runs (BLAKE2b, not ``hash()``);
    each node is as likely as any other; with one node more, only the sessions the new
    node wins move (about 1/N of them), as with the consistent hash of the nginx
    ``#sticky`` variant (which hashes differently: a client need not agree with it)."""
    if nodes < 1:
        raise ValueError("nodes must be 1 or more")
    key = session_id.encode()

    def weight(node: int) -> bytes:
        return hashlib.blake2b(key, digest_size=8, salt=node.to_bytes(8, "big")).digest()

    return max(range(nodes), key=weight)


def stick(participants: list[_load.Participant], endpoints: list[str]) -> list[_load.Participant]:
    """Every participant of a session on the node :func:`sticky_node` picks for it
    (``endpoints[node]`` replaces the host and port of its WebSocket URL)."""
    out = []
    for p in participants:
        if not p.session_id:
            raise ValueError("sticky placement needs each participant's session id")
        node = sticky_node(p.session_id, len(endpoints))
        out.append(
            dataclasses.replace(p, url=_load.with_endpoint(p.url, endpoints[node]), node=node)
        )
    return out


def stick_churn(slots: list[_load.ChurnSlot], endpoints: list[str]) -> list[_load.ChurnSlot]:
    """Every churn slot on its session's node (:func:`sticky_node`): its churners join
    over REST as usual and connect to ``endpoints[node]``."""
    out = []
    for slot in slots:
        node = sticky_node(slot.session_id, len(endpoints))
        out.append(dataclasses.replace(slot, node=node, ws_endpoint=endpoints[node]))
    return out


def placement_figures(participants: list[_load.Participant], nodes: int) -> dict[str, Any]:
    """Where the participants were: sessions wholly on each of the ``nodes`` nodes,
    participants per node, and the sessions that span more than one node (their nodes
    need each other's positions)."""
    nodes_of: dict[int, set[int]] = {}
    members: Counter[int] = Counter()
    for p in participants:
        nodes_of.setdefault(p.session, set()).add(p.node)
        members[p.node] += 1
    whole: Counter[int] = Counter(next(iter(on)) for on in nodes_of.values() if len(on) == 1)
    return {
        "sessions_by_node": {f"node {k}": whole[k] for k in range(nodes)},
        "participants_by_node": {f"node {k}": members[k] for k in range(nodes)},
        "sessions_spanning_nodes": sum(1 for on in nodes_of.values() if len(on) > 1),
    }


def start_redis(directory: Path, port: int, binds: list[str]) -> subprocess.Popen[bytes]:
    """A redis-server for the nodes: TCP on ``binds``, persistence off (locshare refuses
    a Redis that writes positions to disk)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemUnavailable("--nodes needs redis-server on PATH (apt install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            *binds,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--maxclients",
            "10000",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_port(port, proc, REDIS_START_TIMEOUT_S)
    except SystemUnavailable:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
