"""A raw-socket fuzzer against both ports of a real ``locshare serve`` process (issue 12).

Each case is a fresh TCP connection to the REST port or the WebSocket port carrying
bytes hypothesis generated: random bytes; valid WebSocket upgrades (with a valid
participant token, a bad one or none) mutated and followed by random bytes; valid
upgrades followed by random and mutated frames (any opcode, RSV bits, masks, lying
lengths, mutated JSON messages); random HTTP request heads (methods, targets, versions,
framing headers, bare LF) with bodies, sometimes pipelined; mutated REST requests.  The
bytes go out in one to three writes; the answer is read for at most
``CASE_READ_S`` and the connection closed.

After every case: the server process is still running and ``/health/ready`` is 200.
At the end: the honest pair (Ann sends, Bo receives, on the WebSocket port since
before the first case) still flows, and no connection's code failed (the server logs
each such failure; none may happen).

Bound: ``FUZZ_EXAMPLES`` cases (600; ``LOCSHARE_RAW_FUZZ_EXAMPLES`` overrides), each
reading for at most ``CASE_READ_S``, all under ``trio.fail_after(FUZZ_TIME_LIMIT_S)``;
600 cases took 48 s on this 2-core machine (55 s with the server's start).  Derandomized (the same cases every run) unless
``LOCSHARE_FUZZ_RANDOM=1``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import JWT_SECRET
from tests.net.rawws import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, RawWebSocket, frame
from tests.security.conftest import first_of
from tests.security.wire import answers, upgrade_request
from tests.test_cli import Server

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES = int(os.environ.get("LOCSHARE_RAW_FUZZ_EXAMPLES", "600"))
FUZZ_TIME_LIMIT_S = 60 + FUZZ_EXAMPLES * 2.0
CASE_READ_S = 0.25
CONNECTION_FAILED = "a connection's code failed; closed that connection"

VALID_MESSAGES = [
    {"type": "location_update", "data": {"lat": 48.1, "lng": 11.5, "accuracy": 5}},
    {"type": "viewport_size", "data": {"width": 390, "height": 844, "padding": 24}},
    {"type": "ping", "data": {"id": "fuzz"}},
]


@dataclass(frozen=True)
class Case:
    kind: str
    port: str  # "rest" | "ws"
    data: bytes
    splits: tuple[int, ...]  # write boundaries

    def __repr__(self) -> str:
        return f"Case({self.kind!r}, {self.port}, {len(self.data)} bytes: {self.data[:120]!r})"


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat", "crlf"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n", b"\r", b"\x00"]))
    return bytes(data)


def message_bytes() -> st.SearchStrategy[bytes]:
    valid = st.sampled_from(VALID_MESSAGES).map(orjson.dumps)
    return st.one_of(valid, valid.flatmap(mutated), st.binary(max_size=300))


@st.composite
def ws_frames(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # a header whose length lies
        announced = draw(st.sampled_from([126, 65535, 2**31, 2**63 - 1, 2**63, 2**64 - 1]))
        head = bytes([0x80 | draw(st.integers(0, 15)), 0x80 | 127])
        return head + announced.to_bytes(8, "big") + draw(st.binary(max_size=64))
    opcode = draw(
        st.one_of(
            st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE]),
            st.integers(0, 15),
        )
    )
    if opcode == CLOSE and draw(st.booleans()):
        payload = draw(st.integers(0, 65535)).to_bytes(2, "big") + draw(st.binary(max_size=20))
    elif draw(st.integers(0, 19)) == 0:
        payload = b"a" * draw(st.integers(16_000, 17_000))  # around the 16 KiB limit
    else:
        payload = draw(message_bytes())
    return frame(
        opcode,
        payload,
        fin=draw(st.integers(0, 4)) > 0,
        rsv=draw(st.sampled_from([0, 0, 0, 1, 2, 4, 7])),
        mask=draw(st.integers(0, 9)) > 0,
    )


HEADER_NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Upgrade",
    b"Sec-WebSocket-Key",
    b"Sec-WebSocket-Version",
    b"Sec-WebSocket-Extensions",
    b"Expect",
    b"X-Forwarded-For",
    b"Authorization",
    b"Content-Type",
    b"HTTP2-Settings",
]
HEADER_VALUES = [
    b"a",
    b"0",
    b"5",
    b"-1",
    b"99999999999999999999",
    b"chunked",
    b"chunked, identity",
    b"websocket",
    b"Upgrade",
    b"h2c",
    b"keep-alive, Upgrade",
    b"dGhlIHNhbXBsZSBub25jZQ==",
    b"13",
    b"permessage-deflate",
    b"100-continue",
    b"application/json",
    b"Bearer x.y.z",
]


@st.composite
def http_requests(draw: st.DrawFn, session_id: str) -> bytes:
    method = draw(
        st.one_of(
            st.sampled_from([b"GET", b"POST", b"DELETE", b"HEAD", b"OPTIONS", b"PUT", b"PRI"]),
            st.binary(min_size=1, max_size=8),
        )
    )
    target = draw(
        st.one_of(
            st.sampled_from(
                [
                    b"/",
                    b"/ws",
                    b"/ws?token=",
                    b"/api/sessions",
                    f"/api/sessions/{session_id}/join".encode(),
                    f"/api/sessions/{session_id}/participants".encode(),
                    f"/join/{session_id}".encode(),
                    b"/health/ready",
                    b"/metrics",
                    b"/assets/app.css",
                    b"*",
                    b"http://127.0.0.1/ws",
                ]
            ),
            st.binary(max_size=40),
        )
    )
    version = draw(
        st.one_of(
            st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"]),
            st.binary(max_size=10),
        )
    )
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    names = st.one_of(st.sampled_from(HEADER_NAMES), st.binary(min_size=1, max_size=12))
    values = st.one_of(st.sampled_from(HEADER_VALUES), st.binary(max_size=30))
    headers = draw(st.lists(st.tuples(names, values), max_size=8))
    body = draw(st.one_of(st.just(b""), message_bytes(), st.binary(max_size=400)))
    head = method + b" " + target + b" " + version + eol
    head += b"".join(name + b": " + value + eol for name, value in headers)
    return head + eol + body


def cases(token: str, session_id: str) -> st.SearchStrategy[Case]:
    valid_upgrade = upgrade_request(f"/ws?token={token}")
    bad_upgrade = upgrade_request("/ws?token=not.a.token")
    join = (
        f"POST /api/sessions/{session_id}/join HTTP/1.1\r\nHost: a\r\n"
        "Content-Type: application/json\r\nContent-Length: 23\r\n\r\n"
        '{"display_name":"Fuzz"}'
    ).encode()
    tails = st.one_of(st.just(b""), st.binary(max_size=200))
    kinds = {
        "random-bytes": st.binary(max_size=4096),
        "mutated-upgrade": st.tuples(
            st.sampled_from([valid_upgrade, bad_upgrade]).flatmap(mutated), tails
        ).map(b"".join),
        "bad-token-upgrade-then-bytes": tails.map(lambda tail: bad_upgrade + tail),
        "upgrade-then-frames": st.tuples(
            st.lists(ws_frames(), min_size=1, max_size=8).map(b"".join), tails
        ).map(lambda parts: valid_upgrade + parts[0] + parts[1]),
        "http-requests": st.lists(http_requests(session_id), min_size=1, max_size=3).map(b"".join),
        "mutated-rest": mutated(join),
    }

    @st.composite
    def one(draw: st.DrawFn) -> Case:
        kind = draw(st.sampled_from(sorted(kinds)))
        data = draw(kinds[kind])
        cuts = draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=2, unique=True))
        return Case(kind, draw(st.sampled_from(["rest", "ws"])), data, tuple(sorted(cuts)))

    return one()


class Target:
    """The server process, an HTTP client for readiness, and the honest pair."""

    def __init__(self, server: Server, http: httpx.AsyncClient) -> None:
        self.server = server
        self.http = http
        self.outcomes: Counter[str] = Counter()
        self.lat = 10.0

    def port(self, which: str) -> int:
        return self.server.port if which == "rest" else self.server.ws_port

    async def open_pair(self) -> dict[str, Any]:
        created = (await self.http.post("/api/sessions", json={"name": "Target"})).json()
        sid = created["session_id"]
        joins = {}
        for name in ("Ann", "Bo", "Mallory"):
            response = await self.http.post(
                f"/api/sessions/{sid}/join", json={"display_name": name}
            )
            assert response.status_code == 201, response.text
            joins[name] = response.json()
        self.ann = await RawWebSocket.connect(
            self.server.ws_port, f"/ws?token={joins['Ann']['websocket_token']}"
        )
        self.bo = await RawWebSocket.connect(
            self.server.ws_port, f"/ws?token={joins['Bo']['websocket_token']}"
        )
        await first_of(self.ann, "session_state")
        await first_of(self.bo, "session_state")
        return {"session_id": sid, "token": joins["Mallory"]["websocket_token"]}

    async def assert_pair_still_flowing(self) -> None:
        self.lat += 0.001
        await self.ann.send_text(
            orjson.dumps(
                {"type": "location_update", "data": {"lat": self.lat, "lng": 5.0}}
            ).decode()
        )
        with trio.fail_after(10):
            while True:
                _opcode, payload = await self.bo.receive()
                message = orjson.loads(payload)
                if message["type"] == "locations" and any(
                    u["lat"] == self.lat for u in message["data"]["updates"]
                ):
                    return

    async def assert_alive_and_ready(self) -> None:
        assert self.server.proc.returncode is None, "the server process ended"
        ready = await self.http.get("/health/ready")
        assert ready.status_code == 200, ready.text

    async def one(self, case: Case) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", self.port(case.port))
        answer = b""
        try:
            start = 0
            for end in (*case.splits, len(case.data)):
                await stream.send_all(case.data[start:end])
                start = end
            with trio.move_on_after(CASE_READ_S):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server closed on us: fine, as long as it lives
        finally:
            await trio.aclose_forcefully(stream)
        found = answers(answer)
        self.outcomes[str(found[0].status) if found else ("closed" if answer else "silent")] += 1
        await self.assert_alive_and_ready()


async def test_raw_bytes_never_stop_the_server(database_url: str, tmp_path: Path) -> None:
    env = {
        "LOCSHARE_DATA_DIR": str(tmp_path / "data"),
        "LOCSHARE_DATABASE_URL": database_url,
        "LOCSHARE_PORT": "0",
        "LOCSHARE_WS_PORT": "0",
        "LOCSHARE_JWT_SECRET": JWT_SECRET,
        "LOCSHARE_GC_TUNING": "false",
        "LOCSHARE_SHUTDOWN_GRACE_S": "1",
        "LOCSHARE_SESSIONS_PER_ADDRESS_PER_MIN": "100000",
        "LOCSHARE_JOINS_PER_SESSION_PER_MIN": "100000",
        "LOCSHARE_WS_CONNECTIONS_PER_ADDRESS": "100000",
        "LOCSHARE_WS_CONNECTS_PER_ADDRESS_PER_MIN": "1000000",
    }
    started = trio.current_time()
    with trio.fail_after(FUZZ_TIME_LIMIT_S):
        async with trio.open_nursery() as nursery:
            server = Server(env)
            await server.start(nursery)
            try:
                base = f"http://127.0.0.1:{server.port}"
                async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                    target = Target(server, http)
                    attacker = await target.open_pair()
                    try:
                        await fuzz(target, attacker)
                        await target.assert_pair_still_flowing()
                        await target.assert_alive_and_ready()
                    finally:
                        await target.ann.aclose()
                        await target.bo.aclose()
            finally:
                server.proc.terminate()
                await server.proc.wait()
            nursery.cancel_scope.cancel()
    elapsed = trio.current_time() - started
    print(f"{FUZZ_EXAMPLES} cases in {elapsed:.0f} s; first answers: {dict(target.outcomes)}")
    failures = [entry for entry in server.log if entry.get("msg") == CONNECTION_FAILED]
    assert failures == [], failures[:3]
    # The strategies reached the admission (101), its refusals and the HTTP parsers.
    assert {"101", "400", "401"} <= set(target.outcomes), target.outcomes


async def fuzz(target: Target, attacker: dict[str, Any]) -> None:
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=os.environ.get("LOCSHARE_FUZZ_RANDOM") != "1",
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(cases(attacker["token"], attacker["session_id"]))
    def check(case: Case) -> None:
        trio.from_thread.run(target.one, case)

    await trio.to_thread.run_sync(check)
