"""The benchmark load client: its framing and counting on frames the server really
writes (locshare's own encoder), the reference wire formats, and one tiny end-to-end
``python -m benchmarks run baseline`` (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from multiprocessing import Pipe
from pathlib import Path

import orjson
import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from benchmarks import _load
from benchmarks import _wire as w
from locshare._clock import parse_rfc3339, rfc3339
from locshare.proto import _messages as proto

ROOT = Path(__file__).resolve().parent.parent
ME = str(uuid.UUID(int=1))
OTHERS = [str(uuid.UUID(int=i)) for i in range(2, 5)]


def _entry(user_id: str, t: float) -> dict[str, object]:
    return {
        "user_id": user_id,
        "lat": 45.1,
        "lng": 6.2,
        "accuracy": 8.5,
        "heading": None,
        "speed": 13.9,
        "timestamp": rfc3339(t, micros=True),
    }


def _locations(user_ids: list[str], t: float) -> bytes:
    """A ``locations`` frame exactly as the server puts it on the wire."""
    return proto.encode("locations", {"updates": [_entry(u, t) for u in user_ids]}).wire


def _stream(t: float) -> bytes:
    state = proto.encode(
        "session_state",
        {"participants": [{"user_id": u, "display_name": "x" * 200} for u in [ME, *OTHERS]]},
    ).wire
    presence = proto.encode("presence", {"user_id": OTHERS[0], "online": True}).wire
    return (
        state
        + _locations([ME, OTHERS[0]], t)
        + presence
        + _locations(OTHERS, t)
        + _locations([ME], t)
        + proto.close_frame_bytes(1001, "server shutting down")
    )


# --- WebSocket framing -----------------------------------------------------------------
def test_scan_ws_classifies_real_server_frames() -> None:
    stream = _stream(time.time())
    messages, used = w.scan_ws(stream)
    assert used == len(stream)
    kinds = [kind for kind, _, _ in messages]
    assert kinds == [w.K_TEXT, w.K_UPDATES, w.K_TEXT, w.K_UPDATES, w.K_UPDATES, w.K_CLOSE]
    assert [stream.count(w.USER_ID_KEY, s, e) for k, s, e in messages if k == w.K_UPDATES] == [
        2,
        3,
        1,
    ]
    state = orjson.loads(stream[messages[0][1] : messages[0][2]])
    assert state["type"] == "session_state"  # > 125 bytes: the 16-bit length form
    _, start, end = messages[-1]
    assert w.ws_close_code(stream[start:end]) == 1001


@pytest.mark.parametrize("size", [10, 200, 70_000])
def test_scan_ws_length_forms(size: int) -> None:
    frame = proto.encode("error", {"code": "x", "message": "m" * size}).wire
    messages, used = w.scan_ws(frame)
    assert used == len(frame)
    assert orjson.loads(frame[messages[0][1] : messages[0][2]])["data"]["message"] == "m" * size


def test_scan_ws_resumes_after_any_split() -> None:
    """Bytes arrive in arbitrary pieces: every split point gives the same messages."""
    stream = _stream(time.time())
    whole = w.scan_ws(stream)[0]
    expected = [stream[s:e] for _, s, e in whole]
    for cut in range(len(stream) + 1):
        first, used = w.scan_ws(stream[:cut])
        rest = stream[used:]
        second, used2 = w.scan_ws(rest)
        assert used2 == len(rest)
        got = [stream[s:e] for _, s, e in first] + [rest[s:e] for _, s, e in second]
        assert got == expected


def test_client_frames_are_masked_and_decode_on_the_server_side() -> None:
    payload = w.locshare_update(45.1, 6.2, time.time())
    for data, mask in (
        (payload, b"\x01\x02\x03\x04"),
        (b"x" * 300, b"\xff\x00\xaa\x55"),
        (b"", b"abcd"),
    ):
        server = FrameProtocol(client=False, extensions=[])
        server.receive_bytes(w.ws_frame(data, mask))
        frames = list(server.received_frames())
        assert len(frames) == 1
        assert frames[0].opcode is Opcode.TEXT
        assert frames[0].payload == data.decode()
        assert (
            proto.parse_client_message(frames[0].payload, is_text=True) if data == payload else True
        )


def test_handshake_accept_is_checked() -> None:
    key = os.urandom(16)
    request = w.ws_handshake_request("127.0.0.1", 8081, "/ws?token=t", key)
    assert request.startswith(b"GET /ws?token=t HTTP/1.1\r\n")
    good = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + w.ws_accept_value(key)
    assert w.ws_parse_handshake_response(good, key) == 101
    with pytest.raises(w.WireError):
        w.ws_parse_handshake_response(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope", key)
    assert w.ws_parse_handshake_response(b"HTTP/1.1 401 Unauthorized\r\n", key) == 401


def test_stamps_round_trip_through_the_servers_clock_functions() -> None:
    t = 1_795_000_000.123456
    text = w.stamp(t)
    assert text == rfc3339(t, micros=True) or abs(parse_rfc3339(text) - t) < 2e-6
    assert abs(w.parse_stamp(text) - t) < 2e-6
    assert abs(w.parse_stamp(rfc3339(t, micros=True)) - t) < 2e-6
    assert w.parse_stamp("2026-11-20T12:00:00.5Z") == parse_rfc3339("2026-11-20T12:00:00.5Z")


# --- the receivers' counting ---------------------------------------------------------------
def _worker(decode: bool) -> tuple[_load.Worker, _load.Conn]:
    me = _load.Participant(0, 0, ME, "ws://127.0.0.1:1/ws?token=t", decode=decode)
    plan = _load.WorkerPlan(
        0, "locshare", [me], {0: [ME, *OTHERS]}, interval_s=2.0, isolation_every=1
    )
    worker = _load.Worker(plan, Pipe()[0])
    return worker, worker.conns[0]


@pytest.mark.parametrize("decode", [False, True])
def test_counting_on_real_frames(decode: bool) -> None:
    """Counting and timing receivers agree: entries, own echoes, frames; a timing
    receiver takes one latency sample per entry; a close frame ends the connection."""
    worker, conn = _worker(decode)
    conn.sock = None  # no socket: _consume only parses
    sent = time.time() - 0.25
    stream = _stream(sent)
    worker._lost = lambda c, code, now: setattr(c, "stop", code)  # type: ignore[method-assign]
    for i in range(0, len(stream), 97):  # arbitrary read sizes
        worker._consume(conn, stream[i : i + 97], time.time())
    assert (conn.frames, conn.entries, conn.echoes) == (3, 6, 2)
    assert conn.stop == 1001
    assert not worker.foreign  # everyone belongs to the session
    if decode:
        assert len(worker.latency) == 6
        assert all(200 < ms < 2000 for ms in worker.latency)
    else:
        assert len(worker.latency) == 0


def test_foreign_user_ids_are_reported() -> None:
    worker, conn = _worker(False)  # a counting receiver, checking every frame here
    stranger = str(uuid.uuid4())
    worker._consume(conn, _locations([OTHERS[0], stranger], time.time()), time.time())
    assert worker.foreign == {0: {stranger}}


# --- the reference systems' wire formats ----------------------------------------------------
def test_mqtt_scan() -> None:
    payload = w.reference_update(ME, 45.1, 6.2, time.time())
    stream = (
        b"\x20\x02\x00\x00" + b"\x90\x03\x00\x01\x00" + w.mqtt_publish(b"locshare/s0", payload) * 2
    )
    messages, used = w.scan_mqtt(stream)
    assert used == len(stream)
    assert [(k, s) for k, s, _ in messages[:2]] == [
        (w.K_OTHER, w.MQTT_CONNACK),
        (w.K_OTHER, w.MQTT_SUBACK),
    ]
    for _, start, end in messages[2:]:
        assert stream[start:end] == payload
    assert w.scan_mqtt(stream[:-1])[1] < len(stream)  # an incomplete PUBLISH waits
    big = w.mqtt_publish(b"t", b"x" * 20_000)  # a two-byte remaining length
    assert w.scan_mqtt(big)[0][0][2] - w.scan_mqtt(big)[0][0][1] == 20_000


def test_resp_scan() -> None:
    payload = w.reference_update(ME, 45.1, 6.2, time.time())
    hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
    subscribed = b">3\r\n$9\r\nsubscribe\r\n$2\r\ns0\r\n:1\r\n"
    message = b">3\r\n$7\r\nmessage\r\n$2\r\ns0\r\n$%d\r\n%s\r\n" % (len(payload), payload)
    stream = hello + subscribed + b":2\r\n" + message
    messages, used = w.scan_resp(stream)
    assert used == len(stream)
    assert [k for k, _, _ in messages] == [w.K_OTHER, w.K_OTHER, w.K_OTHER, w.K_UPDATES]
    assert stream[messages[-1][1] : messages[-1][2]] == payload
    assert w.scan_resp(stream[:-3])[1] == len(stream) - len(message)
    assert (
        w.resp_command(b"PUBLISH", b"s0", b"x") == b"*3\r\n$7\r\nPUBLISH\r\n$2\r\ns0\r\n$1\r\nx\r\n"
    )


# --- end to end ----------------------------------------------------------------------
RESULT_FIELDS = (
    "scenario",
    "params",
    "connections",
    "connect_ms",
    "latency_ms",
    "delivery_ratio",
    "updates_sent",
    "messages_delivered",
    "server_cpu_s",
    "server_cpu_pct",
    "server_rss_mb_peak",
    "rss_kb_per_connection",
    "load_client_cpu_pct",
    "duration_s",
    "valid",
    "versions",
)


@pytest.mark.slow
def test_run_baseline_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "baseline"
    command = [
        sys.executable, "-m", "benchmarks", "run", "baseline", "--sessions", "1",
        "--per-session", "6", "--duration", "5", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "results.json").read_text())
    for name in RESULT_FIELDS:
        assert name in result, name
    assert result["connections"]["opened"] == 6
    assert result["updates_sent"] > 0
    assert result["delivery_ratio"] == 1.0
    assert result["messages_delivered"] == result["updates_sent"] * 6
    assert result["latency_ms"]["p50"] is not None
    for name in (
        "report.md",
        "latency_over_time.png",
        "latency_cdf.png",
        "server_resources.png",
        "connections.png",
    ):
        assert (out / name).stat().st_size > 0, name

    # The README table is regenerated from this run's results.json.
    from benchmarks._report import README_END, README_START

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nstale\n{README_END}\noutro\n")
    command = [
        sys.executable, "-m", "benchmarks", "report", "--results", str(tmp_path),
        "--update-readme", str(readme),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    row = next(line for line in text.splitlines() if line.startswith("| baseline |"))
    assert "6 (1 x 6)" in row and "6/6" in row
    assert f"{result['latency_ms']['p95']:,.1f}" in row
    assert result["started_at"][:10] in text


def test_report_summarises_compare_and_k6_results() -> None:
    """``python -m benchmarks report`` lists every saved result, including the two kinds
    that hold one result per system instead of one scenario's figures."""
    from benchmarks.__main__ import summary_line

    compare = {
        "scenario": "compare",
        "systems": [
            {"system": "locshare", "latency_ms": {"p95": 103.1}, "delivery_ratio": 1.0},
            {"system": "Redis pub/sub", "latency_ms": {"p95": 5.5}, "delivery_ratio": 0.99},
        ],
    }
    assert summary_line(compare) == (
        "locshare: p95 103.1 ms, delivery 1.0; Redis pub/sub: p95 5.5 ms, delivery 0.99"
    )
    k6 = {
        "scenario": "k6",
        "k6": {"tool": "k6 v1.1.0", "latency_ms": {"p95": 106}, "delivery_ratio": 1.0},
        "ours": {"tool": "this suite", "latency_ms": {"p95": 102.5}, "delivery_ratio": 1.0},
    }
    assert summary_line(k6) == (
        "k6 v1.1.0: p95 106 ms, delivery 1.0; this suite: p95 102.5 ms, delivery 1.0"
    )
