"""Hypothesis-driven WebSocket fuzzing against a live server.

Random and mutated frames (invalid JSON, wrong types, huge numbers, NaN, deep
nesting, binary frames, fragments, oversized frames, invalid UTF-8, protocol
violations) go to a live server from one participant.  After every frame a ``ping``
acts as a barrier: everything the server answered to the frame arrives before the
``pong``.  Checked for every example: the answer is the documented error code, or the
documented close code for the frames that must close; the server stays up; the other
participant of the session and a participant of another session are unaffected.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Running
from tests.net.rawws import BINARY, CONTINUATION, TEXT, Closed, RawWebSocket, frame

ERROR_CODES = {
    "malformed_message",
    "unknown_type",
    "invalid_location",
    "rate_limited",
    "invalid_place",
    "invalid_status",
    "forbidden",
}
# What a fuzzed message may legitimately cause (a valid place or status reaches everyone).
ANSWERS = {
    "locations",
    "viewport",
    "presence",
    "participant_stale",
    "pong",
    "update_interval",
    "locate_now",
    "place_added",
    "place_removed",
    "arrived",
    "departed",
    "status",
}
MAX = 16384


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    # The fuzzer sends a frame and a ping barrier per example: far above 10 msg/s.
    return {"max_messages_per_s": 10_000.0}


@dataclass(frozen=True)
class Fuzz:
    kind: str
    data: bytes  # complete wire bytes (one or more client frames)
    closes_with: int | None = None  # the documented close code, if this must close

    def __repr__(self) -> str:
        return f"Fuzz({self.kind!r}, {len(self.data)} bytes: {self.data[:60]!r}..., closes_with={self.closes_with})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' reports
        printer.text(repr(self))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
VALID = [
    {"type": "location_update", "data": {"lat": 12.5, "lng": -7.25, "accuracy": 3}},
    {"type": "viewport_size", "data": {"width": 400, "height": 800, "padding": 20}},
    {"type": "ping", "data": {}},
    {"type": "visibility", "data": {"visible": False}},
    {"type": "place_add", "data": {"name": "Camp", "kind": "meet", "lat": 12.5, "lng": -7.25}},
    {"type": "place_remove", "data": {"place_id": "00000000-0000-0000-0000-000000000000"}},
    {"type": "set_status", "data": {"status": "break", "text": "coffee"}},
]
NUMBER_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "123456789012345678901234567890",
    "-0",
    "1e-400",
    "0x10",
    "1_0",
]


def text(payload: str) -> bytes:
    return frame(TEXT, payload.encode())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    message = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    where = draw(st.sampled_from(["type", "data", "field", "extra"]))
    value = draw(json_values)
    if where == "type":
        message["type"] = value
    elif where == "data":
        message["data"] = value
    elif where == "field":
        message["data"][draw(st.sampled_from(sorted(message["data"]) or ["x"]))] = value
    else:
        message["data"][draw(st.text(max_size=8))] = value
    return text(json.dumps(message))


@st.composite
def fragments(draw: st.DrawFn) -> bytes:
    payload = json.dumps(draw(st.sampled_from(VALID))).encode()
    cuts = sorted(
        draw(st.lists(st.integers(1, len(payload) - 1), min_size=1, max_size=5, unique=True))
    )
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    out = frame(TEXT, pieces[0], fin=False)
    for piece in pieces[1:-1]:
        out += frame(CONTINUATION, piece, fin=False)
    return out + frame(CONTINUATION, pieces[-1], fin=True)


fuzz_inputs = st.one_of(
    json_values.map(lambda v: Fuzz("json", text(json.dumps(v)))),
    mutated().map(lambda d: Fuzz("mutated", d)),
    st.text(max_size=200).map(lambda t: Fuzz("raw_text", text(t))),
    st.sampled_from(NUMBER_TOKENS).map(
        lambda tok: Fuzz(
            "number", text(f'{{"type":"location_update","data":{{"lat":{tok},"lng":0}}}}')
        )
    ),
    st.integers(1, 5000).map(lambda depth: Fuzz("deep", text("[" * depth + "]" * depth))),
    st.binary(max_size=300).map(lambda b: Fuzz("binary", frame(BINARY, b))),
    fragments().map(lambda d: Fuzz("fragments", d)),
    st.integers(MAX + 1, MAX * 3).map(lambda n: Fuzz("oversized", text("x" * n), 1009)),
    st.integers(2, 6).map(
        lambda k: Fuzz(
            "oversized_fragments",
            frame(TEXT, b"y" * 8000, fin=False)
            + frame(CONTINUATION, b"y" * 8000, fin=False) * k
            + frame(CONTINUATION, b"y", fin=True),
            1009,
        )
    ),
    st.sampled_from([b"\xff", b"\xc3\x28", b'{"type":"ping"}\xed\xa0\x80']).map(
        lambda b: Fuzz("bad_utf8", frame(TEXT, b), 1007)
    ),
    st.sampled_from([0x3, 0x4, 0x5, 0xB, 0xF]).map(
        lambda op: Fuzz("reserved_opcode", frame(op, b"{}"), 1002)
    ),
    st.integers(1, 7).map(lambda rsv: Fuzz("rsv_bits", frame(TEXT, b"{}", rsv=rsv), 1002)),
    st.just(Fuzz("unmasked", frame(TEXT, b'{"type":"ping"}', mask=False), 1002)),
)


class Harness:
    def __init__(
        self,
        server: Running,
        fuzzer: dict[str, Any],
        observer: dict[str, Any],
        bystander: dict[str, Any],
    ) -> None:
        self.server = server
        self.joined = {"fuzzer": fuzzer, "observer": observer, "bystander": bystander}
        self.sockets: dict[str, RawWebSocket] = {}
        self.barriers = 0
        self.seen_codes: dict[str, set[int | str]] = {}

    async def connect(self, who: str) -> None:
        old = self.sockets.pop(who, None)
        if old is not None:
            await old.aclose()
        ws = await RawWebSocket.connect(
            self.server.info.ws_port, f"/ws?token={self.joined[who]['websocket_token']}"
        )
        _opcode, payload = await ws.receive()
        assert orjson.loads(payload)["type"] == "session_state"
        self.sockets[who] = ws

    async def barrier(self, who: str) -> list[dict[str, Any]]:
        """Ping with a fresh id; return every frame received before its pong (a fuzz
        frame may itself be a ping, hence the id)."""
        ws = self.sockets[who]
        self.barriers += 1
        barrier_id = f"barrier-{self.barriers}"
        await ws.send_text(orjson.dumps({"type": "ping", "data": {"id": barrier_id}}).decode())
        frames = []
        while True:
            opcode, payload = await ws.receive()
            assert opcode == TEXT, "the server only sends text frames"
            message = orjson.loads(payload)
            if message["type"] == "pong" and message["data"]["id"] == barrier_id:
                return frames
            frames.append(message)

    async def one(self, fuzz: Fuzz) -> None:
        ws = self.sockets["fuzzer"]
        record = self.seen_codes.setdefault(fuzz.kind, set())
        try:
            await ws.send_raw(fuzz.data)
            answers = await self.barrier("fuzzer")
        except Closed as closed:
            record.add(closed.code or 0)
            await self.connect("fuzzer")  # first, so one failure cannot cascade
            assert fuzz.closes_with is not None, f"{fuzz.kind}: closed with {closed.code}"
            assert closed.code == fuzz.closes_with, f"{fuzz.kind}: closed with {closed.code}"
            return
        assert fuzz.closes_with is None, (
            f"{fuzz.kind}: expected close {fuzz.closes_with}, got {answers}"
        )
        for answer in answers:
            if answer["type"] == "error":
                assert answer["data"]["code"] in ERROR_CODES, answer
                record.add(answer["data"]["code"])
            else:
                assert answer["type"] in ANSWERS, answer


async def run_fuzzer(server: Running, examples: int) -> Harness:
    a = await server.create_session(name="fuzzed")
    b = await server.create_session(name="elsewhere")
    harness = Harness(
        server,
        await server.join(a["session_id"], "fuzzer"),
        await server.join(a["session_id"], "observer"),
        await server.join(b["session_id"], "bystander"),
    )
    for who in ("observer", "bystander", "fuzzer"):
        await harness.connect(who)
    await harness.barrier("bystander")  # what follows its session_state (update_interval)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(fuzz_inputs)
    def check(fuzz: Fuzz) -> None:
        trio.from_thread.run(harness.one, fuzz)

    try:
        await trio.to_thread.run_sync(check)
        # Healthy afterwards: the fuzzer still shares, the observer still receives, the
        # other session never heard a thing.
        await harness.sockets["fuzzer"].send_text(
            '{"type":"location_update","data":{"lat":33.0,"lng":44.0}}'
        )
        while True:
            _, payload = await harness.sockets["observer"].receive()
            message = orjson.loads(payload)
            if message["type"] == "locations" and any(
                u["lat"] == 33.0 for u in message["data"]["updates"]
            ):
                break
        assert await harness.barrier("bystander") == []
        assert server.hub.stats.session_crashes == 0
        assert (await server.http.get("/health/ready")).status_code == 200
    finally:
        for ws in harness.sockets.values():
            await ws.aclose()
    return harness


async def test_ws_fuzzing(server: Running) -> None:
    with trio.fail_after(240):
        harness = await run_fuzzer(server, int(os.environ.get("LOCSHARE_FUZZ_EXAMPLES", "300")))
    seen = harness.seen_codes
    # The strategies really reached the interesting outcomes.
    assert "malformed_message" in seen.get("binary", set()) | seen.get("raw_text", set())
    assert 1009 in seen.get("oversized", set()) | seen.get("oversized_fragments", set())
    assert {1002, 1007} & set().union(*seen.values())


@pytest.mark.slow
async def test_ws_fuzzing_deep(server: Running) -> None:
    with trio.fail_after(1200):
        await run_fuzzer(server, 3000)
