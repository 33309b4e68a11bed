"""The benchmark load client: its framing and counting on frames the server really
writes (locshare's own encoder), the reference wire formats, and one tiny end-to-end
``python -m benchmarks run baseline`` (slow)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import numpy as np
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
    "machine",
    "server_shape",
    "placement",
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
        "--speed-repeats", "1",
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
    assert result["machine"]["speed_reference_s"] > 0
    assert result["server_shape"]["kind"] == "single"
    assert "server_processes" not in result  # one process: the classic figures only
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
    assert f"speed reference {result['machine']['speed_reference_s']:.2f} s" in text


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


# --- cluster shapes: the speed reference, sampling, spreading, figures, reports --------------
def test_speed_reference_times_the_module_level_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import _speed

    measured = _speed.measure(n=200_000, repeats=2)
    assert len(measured["speed_reference_runs_s"]) == 2
    assert measured["speed_reference_s"] == min(measured["speed_reference_runs_s"])
    assert measured["speed_reference_s"] > 0 and measured["speed_reference_cpu_s"] > 0
    assert "range(200_000)" in measured["speed_reference_loop"]
    # Once per command: the first call measures (0 runs: recorded as not measured),
    # every later one returns the same value, whatever it asks for.
    monkeypatch.setattr(_speed, "_measured", None)
    assert _speed.reference(0)["speed_reference_s"] is None
    assert _speed.reference(3)["speed_reference_s"] is None
    assert _speed.label({"speed_reference_s": 2.614}) == "speed reference 2.61 s"
    contended = {
        "speed_reference_s": 3.02,
        "speed_reference_cpu_s": 1.608,
        "speed_reference_contended": True,
    }
    assert _speed.label(contended) == "speed reference 3.02 s (contended; CPU 1.61 s)"


def test_spread_puts_every_session_on_every_node() -> None:
    from benchmarks._nodes import spread

    participants = [
        _load.Participant(i, i // 5, f"u{i}", f"ws://127.0.0.1:9000/ws?token=t{i}")
        for i in range(10)
    ]
    spread_out = spread(participants, ["127.0.0.1:9000", "10.77.0.2:9100"])
    for session in (0, 1):
        members = [p for p in spread_out if p.session == session]
        assert [p.node for p in members] == [0, 1, 0, 1, 0]
    for before, after in zip(participants, spread_out, strict=True):
        token = before.url.split("?")[1]
        host = "10.77.0.2:9100" if after.node else "127.0.0.1:9000"
        assert after.url == f"ws://{host}/ws?{token}"
        assert (after.user_id, after.session) == (before.user_id, before.session)


def _session_ids(count: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(count)]


def test_sticky_puts_every_session_on_one_node() -> None:
    from benchmarks._nodes import placement_figures, stick, sticky_node

    ids = _session_ids(6)
    participants = [
        _load.Participant(
            i, i // 5, f"u{i}", f"ws://127.0.0.1:9000/ws?token=t{i}", session_id=ids[i // 5]
        )
        for i in range(30)
    ]
    endpoints = ["127.0.0.1:9000", "127.0.0.1:9100"]
    placed = stick(participants, endpoints)
    for session, session_id in enumerate(ids):
        members = [p for p in placed if p.session == session]
        assert len(members) == 5
        assert {p.node for p in members} == {sticky_node(session_id, 2)}
    for before, after in zip(participants, placed, strict=True):
        assert after.url == f"ws://{endpoints[after.node]}/ws?token=t{before.index}"
        assert (after.user_id, after.session, after.session_id) == (
            before.user_id,
            before.session,
            before.session_id,
        )
    figures = placement_figures(placed, 2)
    assert figures["sessions_spanning_nodes"] == 0
    assert sum(figures["sessions_by_node"].values()) == 6
    assert sum(figures["participants_by_node"].values()) == 30
    # The split placement (the control) is the opposite: every session on both nodes.
    from benchmarks._nodes import spread

    split = placement_figures(spread(participants, endpoints), 2)
    assert split["sessions_spanning_nodes"] == 6
    assert split["sessions_by_node"] == {"node 0": 0, "node 1": 0}
    with pytest.raises(ValueError, match="session id"):
        stick([_load.Participant(0, 0, "u", "ws://127.0.0.1:9000/ws")], endpoints)


def test_sticky_node_is_stable_even_and_moves_few_sessions() -> None:
    from benchmarks._nodes import sticky_node

    ids = _session_ids(4000)
    for nodes in (2, 3):
        shares = Counter(sticky_node(i, nodes) for i in ids)
        assert set(shares) == set(range(nodes))
        for count in shares.values():
            assert abs(count / len(ids) - 1 / nodes) < 0.03, shares
    # A third node takes about a third of the sessions, each from whichever node had
    # it, and no session moves between the two old nodes.
    moved = [i for i in ids if sticky_node(i, 2) != sticky_node(i, 3)]
    assert all(sticky_node(i, 3) == 2 for i in moved)
    assert abs(len(moved) / len(ids) - 1 / 3) < 0.03
    # A hash of the bytes (not Python's salted hash()): the same node in every process.
    code = (
        "from benchmarks._nodes import sticky_node; "
        f"print([sticky_node(i, 3) for i in {ids[:20]!r}])"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert child.stdout.strip() == str([sticky_node(i, 3) for i in ids[:20]]), child.stderr
    assert sticky_node(ids[0], 1) == 0
    with pytest.raises(ValueError, match="nodes"):
        sticky_node(ids[0], 0)


def test_sticky_churners_join_their_sessions_node() -> None:
    """Churners (``multi``) join over REST and connect where their session lives."""
    from benchmarks._nodes import stick_churn, sticky_node

    ids = _session_ids(4)
    endpoints = ["127.0.0.1:9000", "127.0.0.1:9100"]
    slots = stick_churn([_load.ChurnSlot(i, sid) for i, sid in enumerate(ids)], endpoints)
    for slot, session_id in zip(slots, ids, strict=True):
        node = sticky_node(session_id, 2)
        assert (slot.session_id, slot.node, slot.ws_endpoint) == (session_id, node, endpoints[node])
    assert _load.with_endpoint("ws://127.0.0.1:1/ws?token=a.b", endpoints[1]) == (
        "ws://127.0.0.1:9100/ws?token=a.b"
    )


def test_redis_counters_count_what_the_bus_publishes(tmp_path: Path) -> None:
    """Read from a real redis-server (Unix socket; no TCP port): publishes counted."""
    import shutil
    import socket

    from benchmarks._systems import redis_counters

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    sock_path = tmp_path / "r.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock_path), "--save", "", "--appendonly",
         "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not sock_path.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "redis did not start"
            time.sleep(0.05)
        before = redis_counters(str(sock_path))
        assert before["commands"] >= 0 and before["net_input_bytes"] > 0
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(sock_path))
            for n in range(7):
                client.sendall(b"PUBLISH locshare:{b00}:events m%d\r\n" % n)
            received = b""
            while received.count(b"\r\n") < 7:
                received += client.recv(4096)
        after = redis_counters(str(sock_path))
        assert after["publishes"] - before.get("publishes", 0) == 7
        assert after["net_input_bytes"] > before["net_input_bytes"]
        assert redis_counters(str(tmp_path / "absent.sock")) == {}
    finally:
        proc.terminate()
        proc.wait(10)


def test_sampler_keeps_the_cpu_of_a_process_that_went() -> None:
    """Per-role CPU survives a killed node (its share stays in the totals) and the role
    of a replaced process continues from where the old one stopped."""
    import psutil

    from benchmarks import _run
    from benchmarks._systems import System

    burn = [sys.executable, "-c", "while True: pass"]
    procs = [subprocess.Popen(burn) for _ in range(3)]
    try:
        roles = {"node 0": procs[0], "node 1": procs[1]}

        class TwoNodes(System):
            def server_processes(self) -> dict[str, psutil.Process]:
                return {
                    role: psutil.Process(p.pid) for role, p in roles.items() if p.poll() is None
                }

        sampler = _run.Sampler(TwoNodes("two", "locshare"), [])
        first = sampler.sample()
        time.sleep(0.5)
        before_kill = sampler.sample()
        procs[1].kill()
        procs[1].wait()
        roles["node 0"] = procs[2]  # node 0 replaced by a fresh process
        time.sleep(0.5)
        after = sampler.sample()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert set(first.roles) == {"node 0", "node 1"}
    assert after.roles["node 1"][0] == before_kill.roles["node 1"][0] > 0
    assert after.roles["node 1"][1] is None  # no RSS for a process that is gone
    assert after.roles["node 0"][0] > before_kill.roles["node 0"][0]
    assert after.server_cpu_s == pytest.approx(sum(cpu for cpu, _ in after.roles.values()))


def _partition_run() -> tuple[object, dict[str, object]]:
    """A partition run's counters: 2 sessions x 4 (members 0, 2 on node 0; 1, 3 on node
    1), one update per participant per second for 30 s from t0 = 1000; the Redis link is
    cut at 10.3 s and healed at 20.3 s; cross-node entries sent from 10 s to 21 s are
    lost, and 50 of those sent in second 10 (delivered late)."""
    from benchmarks import _run
    from benchmarks._scenarios import FULL
    from benchmarks._systems import System

    t0 = 1000.0
    data = _run.RunData(FULL["partition"], System("nodes", "locshare"), [], workers=1, t0=t0)
    data.t_stop = t0 + 30
    data.events = {"cut": t0 + 10.3, "heal": t0 + 20.3}
    steady = {(s, n): 2 for s in (0, 1) for n in (0, 1)}
    sent: Counter[tuple[int, int, int]] = Counter()
    received: Counter[tuple[int, int, int, int]] = Counter()
    for second in range(1000, 1030):
        for (session, node), members in steady.items():
            sent[(session, second, node)] += members
            for receiver in (0, 1):
                n = members * steady[(session, receiver)]
                if node != receiver and 1010 <= second <= 1020:
                    n = 0
                received[(session, second, node, receiver)] += n
    received[(0, 1010, 1, 0)] += 4  # a late entry from the dead connection
    data.ready = [{"steady_open_nodes": list(steady.items())}]
    data.done = [
        {
            "sent_links": list(sent.items()),
            "recv_links": list(received.items()),
            "presence": [((1016, 0, False), 4), ((1021, 0, True), 4)],
        }
    ]
    data.latency = [np.array([50.0, 9000.0], dtype=np.float32)]
    data.server_metrics = {"node 1": {"locshare_bus_reconnects_total": 1.0, "other": 2.0}}
    return data, {"timeline": [{"reconnects": 0}]}


def test_partition_figures_split_same_node_and_cross_node() -> None:
    from benchmarks._partition import partition_figures

    data, result = _partition_run()
    f = partition_figures(data, result)  # type: ignore[arg-type]
    assert (f["cut_at_s"], f["healed_at_s"]) == (10.3, 20.3)
    assert f["same_node_delivery_during_cut"] == 1.0
    # Whole seconds inside the cut: 11..19; second 10 is partly before it.
    assert f["cross_node_delivery_during_cut"] == 0.0
    assert f["cross_node_delivery_during_cut_by_direction"] == {
        "node 0 -> node 1": 0.0,
        "node 1 -> node 0": 0.0,
    }
    assert f["cross_node_gap_s"] == [10.0, 21.0]  # second 10: 4 of 16 cross entries arrived
    assert f["recovered_after_heal_s"] == 0.7
    # Window 9..22: 11 seconds x 16 cross-node entries lost (2 sessions x 2 x 2 x 2), minus the late 4.
    assert f["window_s"] == [9.0, 22.0]
    assert f["missed_in_window"] == 11 * 16 - 4
    assert f["delivery_ratio_outside_window"] == 1.0
    assert f["presence"] == {"node 0": {"offline": 4, "online": 4, "first_offline_s": 16.0}}
    assert f["bus"] == {"node 1": {"locshare_bus_reconnects_total": 1.0}}
    assert f["late_entries"]["count"] == 1 and f["late_entries"]["max_s"] == 9.0
    timeline = {t: (same, cross) for t, same, cross in f["timeline"]}
    assert timeline[5.0] == (1.0, 1.0) and timeline[15.0] == (1.0, 0.0)


def _leg(
    label: str,
    total: float,
    roles: dict[str, float] | None,
    p95: float,
    *,
    shape: dict[str, object] | None = None,
    publishes_per_s: float | None = None,
    sessions_by_node: dict[str, int] | None = None,
) -> dict[str, object]:
    """A cluster leg's result as ``summarize`` writes it (the fields the tables read)."""
    server_processes = (
        {
            role: {"cpu_s": v, "cpu_pct": v, "cpu_s_per_million_deliveries": v, "rss_mb_peak": 1.0}
            for role, v in roles.items()
        }
        if roles
        else None
    )
    return {
        "leg": label,
        "leg_key": "single" if roles is None else "workers-2",
        "started_at": "2026-12-01T12:00:00Z",
        "machine": {
            "cpu_model": "AMD EPYC",
            "cores": 2,
            "memory_mb": 24105,
            "speed_reference_s": 2.614,
        },
        "versions": {},
        "placement": {"shared": True},
        "connections": {"opened": 10_000, "target": 10_000},
        "latency_ms": {"p50": 100.0, "p95": p95, "p99": p95 + 50},
        "delivery_ratio": 1.0,
        "delivery": {"lost": 0},
        "messages_delivered": 1_000_000,
        "server_cpu_pct": 90.0,
        "server_cpu_s_per_million_deliveries": total,
        "server_processes": server_processes,
        "redis_cpu_s_per_million_deliveries": (roles or {}).get("redis"),
        "redis_cpu_pct": (roles or {}).get("redis"),
        "load_client_cpu_core_pct": 30.0,
        "valid": True,
        "invalid_reason": None,
        **({"server_shape": shape} if shape else {}),
        **({"redis_bus": {"publishes_per_s": publishes_per_s}} if publishes_per_s else {}),
        **(
            {"node_placement": {"sessions_by_node": sessions_by_node, "sessions_spanning_nodes": 0}}
            if sessions_by_node
            else {}
        ),
    }


def test_cluster_summary_ratio_targets_and_readme() -> None:
    from benchmarks import _report
    from benchmarks._cluster import cluster_summary, cluster_summary_line
    from benchmarks._scenarios import cluster_workload

    legs = [
        _leg("1 process", 20.0, None, 639.0),
        _leg("2 workers", 26.0, {"supervisor": 0.1, "worker 0": 11.9, "worker 1": 12.0, "redis": 2.0}, 280.0),
    ]  # fmt: skip
    summary = cluster_summary(cluster_workload(quick=False), legs, quick=False)
    cluster = summary["legs"][1]
    assert cluster["cost_ratio"] == 1.3
    assert cluster["cpu_s_per_million_by_worker"] == {"worker 0": 11.9, "worker 1": 12.0}
    assert summary["targets"]["p95_met"] and summary["targets"]["delivery_met"]
    assert not summary["targets"]["cost_met"] and summary["targets"]["full_size"]
    assert "x1.3" in cluster_summary_line(summary)

    rest = {
        "scenario": "rest",
        "started_at": "2026-12-01T13:00:00Z",
        "machine": legs[0]["machine"],
        "params": {"sessions": 200, "per_session": 50, "mode": "closed loop", "quick": False},
        "legs": [
            {"leg": leg, "create_join": row, "rows": [row, row, row]}
            for leg, row in (
                ("1 process", {"req_per_s": 500.0, "p50_ms": 60, "p95_ms": 90, "p99_ms": 99, "errors": 0}),
                ("2 workers", {"req_per_s": 900.0, "p50_ms": 30, "p95_ms": 45, "p99_ms": 60, "errors": 0}),
            )
        ],
        "scaling_ratio": 1.8,
        "scaling_target": 1.7,
        "rust_reference": {"req_per_s": 2000.0, "p95_ms": 50.0},
    }  # fmt: skip
    text = _report.readme_table({"cluster": summary, "rest": rest})
    assert (
        "| 2 workers | 100.0 / 280.0 / 330.0 | 1.0 | 26.00 | 11.90 / 12.00 | 2.00 | 1.30 |" in text
    )
    assert "speed reference 2.61 s" in text
    assert "at most 1.25: not met." in text
    assert "1.80x the create + join requests/s (target 1.7x or more: met)" in text
    assert "2,000 requests/s at p95 under 50 ms" in text and "900 requests/s" in text


def test_cluster_table_with_the_sticky_leg() -> None:
    """Three legs in one table: the targets stay the workers' leg's; what the sticky leg
    saves is stated against the workers (round robin) and against the split nodes."""
    from benchmarks import _report
    from benchmarks._cluster import cluster_summary, cluster_table, sticky_text, targets_text
    from benchmarks._scenarios import cluster_workload

    nodes = {"kind": "nodes", "nodes": 2}
    legs = [
        _leg("1 process", 20.0, None, 100.0),
        _leg("2 workers", 26.0, {"supervisor": 0.1, "worker 0": 11.9, "worker 1": 12.0, "redis": 2.0}, 280.0,
             shape={"kind": "workers", "workers": 2}, publishes_per_s=640.0),
        _leg("2 nodes (sticky)", 21.0, {"node 0": 10.0, "node 1": 9.0, "redis": 2.0}, 120.0,
             shape={**nodes, "placement": "sticky"}, publishes_per_s=630.0,
             sessions_by_node={"node 0": 21, "node 1": 19}),
        _leg("2 nodes (split)", 28.0, {"node 0": 13.0, "node 1": 12.5, "redis": 2.5}, 300.0,
             shape={**nodes, "placement": "split"}, publishes_per_s=650.0),
    ]  # fmt: skip
    summary = cluster_summary(cluster_workload(quick=True), legs, quick=True)
    assert [r["leg"] for r in summary["legs"]] == [leg["leg"] for leg in legs]
    assert summary["title"] == (
        "2,000 participants: 1 process against 2 workers, 2 nodes (sticky) and 2 nodes (split)"
    )
    # The targets are the workers' (issue 13), whatever follows them.
    assert summary["targets"]["leg"] == "2 workers" and summary["targets"]["cost_ratio"] == 1.3
    assert "Against the targets (2 workers): p95 280.0 ms" in targets_text(summary)
    sticky_row = summary["legs"][2]
    assert sticky_row["cost_ratio"] == 1.05
    assert sticky_row["cpu_s_per_million_by_worker"] == {"node 0": 10.0, "node 1": 9.0}
    sticky = summary["sticky"]
    assert sticky["sessions_by_node"] == {"node 0": 21, "node 1": 19}
    workers = sticky["against"]["2 workers"]
    assert workers["cost_ratio"] == pytest.approx(21 / 26, abs=0.001)
    assert workers["saved_pct"] == 19.2
    assert workers["redis_publishes_per_s"] == [640.0, 630.0]
    assert workers["p95_ms"] == [280.0, 120.0]
    assert sticky["against"]["2 nodes (split)"]["saved_pct"] == 25.0
    table = cluster_table(summary)
    assert table.count("\n") == 2 + 4
    assert (
        "| 2 nodes (sticky) | 100.0 / 120.0 / 170.0 | 1.0 | 21.00 | 10.00 / 9.00 | 2.00 | 1.05 | "
        "90.0 % | 2.0 % | 630 | 30.0 % |" in table
    )
    assert (
        "| 1 process | 100.0 / 100.0 / 150.0 | 1.0 | 20.00 | - | - | 1.0 | 90.0 % | - | - |"
        in table
    )
    text = sticky_text(summary)
    assert text.startswith("2 nodes (sticky): sessions per node 21 / 19, none spanning two nodes.")
    assert "Against 2 workers: 0.81 x its CPU per million deliveries (19.2 % less)" in text
    assert "630 against 640 messages published a second, p95 120.0 against 280.0 ms." in text
    assert "Against 2 nodes (split): 0.75 x its CPU per million deliveries (25.0 % less)" in text
    readme = _report.readme_table({"cluster": summary})
    assert "against 2 workers, 2 nodes (sticky) and 2 nodes (split) in one run" in readme
    assert text in readme and table in readme
    # A summary without a sticky leg (as saved before it existed) has no such sentence.
    two = cluster_summary(cluster_workload(quick=True), legs[:2], quick=True)
    assert two["sticky"] is None and sticky_text(two) == ""


def test_fixed_window_reaches_the_servers_settings_and_the_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``cluster --fixed-window``: the servers' flush window pinned at its interval
    (what they are started with is recorded), labelled in the summary; off again after."""
    from benchmarks import _server
    from benchmarks._cluster import flush_window_label

    for name in _server.RECORDED_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert _server.server_settings() == {}
    assert flush_window_label({}) == "adaptive, 15-250 ms"  # the defaults of Config
    try:
        _server.fix_flush_window()
        fixed = _server.server_settings()
        assert fixed == {
            "LOCSHARE_FLUSH_INTERVAL_MIN_MS": "100",
            "LOCSHARE_FLUSH_INTERVAL_MAX_MS": "100",
        }
        assert flush_window_label(fixed) == "fixed at 100 ms"
        monkeypatch.setenv("LOCSHARE_FLUSH_INTERVAL_MS", "50")
        _server.fix_flush_window()
        assert flush_window_label(_server.server_settings()) == "fixed at 50 ms"
    finally:
        _server.fix_flush_window(False)
    assert _server.server_settings() == {"LOCSHARE_FLUSH_INTERVAL_MS": "50"}
    assert flush_window_label(_server.server_settings()) == "adaptive, 15-250 ms"


def _bench(*args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS``; commands that measure get one run of the speed reference."""
    measures = args[0] == "benchmarks.rest" or args[1] != "report"
    command = [sys.executable, "-m", *args, *(["--speed-repeats", "1"] if measures else [])]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cluster_end_to_end(tmp_path: Path) -> None:
    """``cluster --quick --sticky --unaffine`` at a tiny size: one process, 2 workers
    (session affinity), the same without it, then 2 nodes with sticky placement, in one
    invocation; each worker, node and Redis measured apart, what Redis relayed counted;
    the README renders the table."""
    out = tmp_path / "cluster"
    done = _bench(
        "benchmarks", "cluster", "--quick", "--sticky", "--unaffine", "--sessions", "6",
        "--per-session", "5", "--duration", "4", "--out", str(out), "--no-progress",
        timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "results.json").read_text())
    assert [leg["leg"] for leg in summary["legs"]] == [
        "1 process", "2 workers", "2 workers (no affinity)", "2 nodes (sticky)",
    ]  # fmt: skip
    single, cluster, unaffine, sticky = summary["legs"]
    # With affinity every session lives in one worker: Redis carries heartbeats and
    # presence, not positions; without it every flush of every session crosses it.
    assert unaffine["delivery_ratio"] == 1.0
    assert unaffine["redis_bus"]["publishes_per_s"] > 3 * cluster["redis_bus"]["publishes_per_s"]
    assert single["delivery_ratio"] == cluster["delivery_ratio"] == sticky["delivery_ratio"] == 1.0
    assert set(cluster["cpu_s_per_million_by_worker"]) == {"worker 0", "worker 1"}
    assert set(sticky["cpu_s_per_million_by_worker"]) == {"node 0", "node 1"}
    for leg in (cluster, sticky):
        assert leg["redis_cpu_s_per_million"] is not None
        assert leg["redis_bus"]["publishes_per_s"] > 0  # heartbeats at least
        assert leg["cost_ratio"] == pytest.approx(
            leg["cpu_s_per_million_deliveries"] / single["cpu_s_per_million_deliveries"], rel=0.01
        )
    assert single["redis_bus"] is None
    assert summary["machine"]["speed_reference_s"] > 0
    assert not summary["targets"]["full_size"] and summary["targets"]["leg"] == "2 workers"
    assert summary["sticky"]["sessions_spanning_nodes"] == 0
    assert sum(summary["sticky"]["sessions_by_node"].values()) == 6
    assert "2 workers" in summary["sticky"]["against"]
    assert "2 nodes (sticky): sessions per node" in done.stdout
    leg = json.loads((out / "workers-2" / "results.json").read_text())
    assert leg["server_shape"]["kind"] == "workers" and leg["placement"]["shared"]
    assert set(leg["server_processes"]) == {"supervisor", "worker 0", "worker 1", "redis"}
    assert leg["connections"]["opened"] == 30
    leg = json.loads((out / "sticky-2" / "results.json").read_text())
    assert leg["server_shape"]["placement"] == "sticky" and leg["placement"]["shared"]
    assert set(leg["server_processes"]) == {"node 0", "node 1", "redis"}
    assert leg["connections"]["opened"] == 30
    # Each node's own /metrics (distinct ports): both on the bus, each hearing the other.
    for node in ("node 0", "node 1"):
        assert leg["server_metrics"][node]["locshare_bus_nodes"] == 1
    readme = tmp_path / "README.md"
    from benchmarks._report import README_END, README_START

    readme.write_text(f"{README_START}\n{README_END}\n")
    done = _bench(
        "benchmarks", "report", "--results", str(tmp_path), "--update-readme", str(readme)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = readme.read_text()
    assert "| 2 workers" in text and "| 2 nodes (sticky)" in text
    assert "Against the targets (2 workers)" in text and "Against 2 workers:" in text


@pytest.mark.slow
def test_node_kill_end_to_end(tmp_path: Path) -> None:
    """Two nodes on one port pair; the second SIGKILLed: its clients reconnect to the
    same URL and land on the survivor; outside the fault window nothing is lost."""
    out = tmp_path / "node-kill"
    done = _bench(
        "benchmarks", "run", "node-kill", "--sessions", "2", "--per-session", "8",
        "--duration", "12", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "results.json").read_text())
    kill = result["node_kill"]
    assert kill["killed_node"] == "node 1"
    assert kill["connections_dropped"] > 0  # 16 sockets spread by the kernel over both
    assert kill["not_back_at_end"] == 0 and kill["recovery_s"] is not None
    assert result["delivery_ratio"] == kill["delivery_ratio_outside_fault"] == 1.0
    assert set(result["server_processes"]) == {"node 0", "node 1", "redis"}
    assert result["server_shape"] == {**result["server_shape"], "kind": "nodes", "nodes": 2}
    assert "node 1 killed" in done.stdout


@pytest.mark.slow
def test_partition_end_to_end(tmp_path: Path) -> None:
    """Node 1's link to Redis cut: its clients and node 0's keep receiving from their
    own node, not across; cross-node delivery comes back after the heal."""
    from benchmarks._netem import partition_unavailable_reason

    reason = partition_unavailable_reason()
    if reason:
        pytest.skip(f"partition: {reason}")
    out = tmp_path / "partition"
    done = _bench(
        "benchmarks", "run", "partition", "--sessions", "2", "--per-session", "4",
        "--duration", "27", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    f = json.loads((out / "results.json").read_text())["partition"]
    assert f["nodes"] == {"node 0": 4, "node 1": 4}
    assert f["same_node_delivery_during_cut"] == 1.0
    assert f["cross_node_delivery_during_cut"] < 0.5
    assert f["recovered_at_s"] is not None
    assert f["bus"]["node 1"]["locshare_bus_reconnects_total"] >= 1
    assert f["bus_link"]["packets_dropped"] > 0


@pytest.mark.slow
def test_rest_compare_workers_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "rest"
    done = _bench(
        "benchmarks.rest", "--compare-workers", "2", "--sessions", "3", "--per-session", "4",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "results.json").read_text())
    assert [leg["leg"] for leg in summary["legs"]] == ["1 process", "2 workers"]
    for leg in summary["legs"]:
        create, join, both = leg["rows"]
        assert (create["requests"], join["requests"], both["requests"]) == (3, 12, 15)
        assert both["errors"] == 0 and both["server_cpu_s"] > 0
    assert summary["scaling_ratio"] is not None
    assert "2,000 requests/s" in done.stdout


# --- realistic: the workload's generators, the measurements, the clients' pacing ------------
def test_group_sizes_follow_the_power_law() -> None:
    import random

    from benchmarks import _realistic as r

    weights = r.size_weights(2.0, 2, 50)
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] / weights[2] == pytest.approx(4.0)  # P(2) / P(4) = (4 / 2) ** 2
    for total in (0, 1, 2, 3, 51, 997, 10_000):
        sizes = r.group_sizes(total, random.Random(total))
        assert sum(sizes) == total
        if total >= r.GROUP_SIZE_MIN:
            assert all(r.GROUP_SIZE_MIN <= s <= r.GROUP_SIZE_MAX for s in sizes), sizes
    assert r.group_sizes(1, random.Random(0)) == [1]  # below the minimum: one small group
    sizes = r.group_sizes(300_000, random.Random(0))
    pairs = sizes.count(2) / len(sizes)
    assert pairs == pytest.approx(weights[0], abs=0.01)  # 41 % of the groups are pairs
    mean = sum(k * w for k, w in zip(range(2, 51), weights, strict=True))
    assert np.mean(sizes) == pytest.approx(mean, rel=0.03)  # 5.6


def test_movers_walk_drive_stop_and_stay() -> None:
    from benchmarks import _realistic as r
    from locshare.proto._rates import distance_m

    walker = r.Mover(r.WALKER, 45.0, 6.0, heading_deg=0.0, speed_m_s=5 / 3.6, stop_after_s=120)
    lat, lng, speed = r.position(walker, 60.0)
    assert distance_m(45.0, 6.0, lat, lng) == pytest.approx(5_000 / 60, rel=1e-4)  # 83.3 m
    assert lat > 45.0 and lng == pytest.approx(6.0) and speed == walker.speed_m_s
    stopped = r.position(walker, 120.0)
    assert stopped[2] == 0.0 and r.position(walker, 500.0) == stopped
    assert distance_m(45.0, 6.0, *stopped[:2]) == pytest.approx(5_000 / 30, rel=1e-4)
    assert r.position(walker, -5.0)[:2] == (45.0, 6.0)  # before t0: where it starts
    driver = r.Mover(r.DRIVER, -33.9, 151.2, heading_deg=90.0, speed_m_s=30 / 3.6)
    lat, lng, speed = r.position(driver, 60.0)
    assert distance_m(-33.9, 151.2, lat, lng) == pytest.approx(500.0, rel=1e-4)
    assert lat == pytest.approx(-33.9, abs=1e-6) and lng > 151.2 and speed == 30 / 3.6
    still = r.Mover(r.STATIONARY, 35.0, 139.0)
    assert r.position(still, 300.0) == (35.0, 139.0, 0.0)


def test_the_workload_has_its_documented_shares() -> None:
    """Shares within sampling error; walkers bound for a meeting point end inside it by
    the server's own arrival rule; the same seed draws the same people."""
    from benchmarks import _realistic as r
    from locshare.geo._places import ACCURACY_DEPTH_FRACTION, Place

    groups = r.build_groups(20_000, 600.0)
    members = [m for g in groups for m in g.members]
    assert len(members) == 20_000
    kinds = Counter(m.mover.kind for m in members)
    assert kinds[r.STATIONARY] / 20_000 == pytest.approx(r.SHARE_STATIONARY, abs=0.02)
    assert kinds[r.DRIVER] / 20_000 == pytest.approx(r.SHARE_DRIVERS, abs=0.02)
    assert sum(m.mover.hidden for m in members) / 20_000 == pytest.approx(r.SHARE_HIDDEN, abs=0.02)
    leavers = [m.leave_at_s for m in members if m.leave_at_s is not None]
    assert len(leavers) / 20_000 == pytest.approx(r.SHARE_LEAVING, abs=0.01)
    assert all(0.5 * 600 <= t <= 0.95 * 600 for t in leavers)
    # Joiners: never a group's first member (it adds the meeting point).
    assert all(g.members[0].join_at_s is None for g in groups)
    joiners = [m.join_at_s for g in groups for m in g.members[1:] if m.join_at_s is not None]
    share_not_first = (20_000 - len(groups)) / 20_000
    assert len(joiners) / 20_000 == pytest.approx(r.SHARE_JOINING * share_not_first, abs=0.01)
    assert all(0.05 * 600 <= t <= 0.5 * 600 for t in joiners)
    speeds = {
        kind: np.array([m.mover.speed_m_s for m in members if m.mover.kind == kind]) * 3.6
        for kind in (r.WALKER, r.DRIVER)
    }
    assert speeds[r.WALKER].mean() == pytest.approx(5.0, rel=0.02)
    assert speeds[r.DRIVER].mean() == pytest.approx(30.0, rel=0.02)
    assert speeds[r.DRIVER].min() >= 30 * 0.8 and speeds[r.DRIVER].max() <= 30 * 1.2
    with_meet = [g for g in groups if g.meet is not None]
    eligible = [g for g in groups if len(g.members) >= r.MEET_MIN_GROUP_SIZE]
    assert len(with_meet) / len(eligible) == pytest.approx(r.SHARE_GROUPS_WITH_MEET, abs=0.04)
    bound = 0
    for g in with_meet:
        assert g.meet is not None
        place = Place.circle("meet", "meet", *g.meet, r.MEET_RADIUS_M)
        for m in g.members:
            if m.mover.stop_after_s == np.inf:
                continue
            bound += 1
            assert m.mover.kind == r.WALKER
            start, end = r.position(m.mover, 0.0), r.position(m.mover, m.mover.stop_after_s)
            # Outside at the start, inside at the end by more than the arrival rule
            # asks (half the accuracy) plus twice the GPS noise.
            assert place.signed_distance_m(*start[:2]) < 0
            inside = float(place.signed_distance_m(*end[:2]))
            need = ACCURACY_DEPTH_FRACTION * r.FIX_ACCURACY_M
            assert inside == pytest.approx(r.MEET_RADIUS_M - r.MEET_STOP_FROM_CENTRE_M, abs=0.05)
            assert inside > need + 1.5 * r.GPS_NOISE_M
    assert bound > 0
    assert r.build_groups(500, 60.0) == r.build_groups(500, 60.0)


def test_position_age_and_rates() -> None:
    from benchmarks import _realistic as r

    now = 1_000.0
    latest = {"me": 999.9, "walker": 998.5, "stopped": 990.0, "still": 999.0, "joiner": 999.5}
    moving = {"me": np.inf, "walker": np.inf, "stopped": 30.0, "joiner": 60.0}
    # At 40 s after t0: the walker and the joiner move; "stopped" reached its meeting
    # point at 30 s, "still" never moves, and a viewer's own position is not counted.
    ages = r.age_samples_ms(latest, now, "me", moving, 40.0)
    assert sorted(ages) == pytest.approx([500.0, 1_500.0])
    assert r.age_samples_ms(latest, now, "me", moving, 29.0) == pytest.approx(
        [1_500.0, 10_000.0, 500.0]
    )
    assert r.age_samples_ms({}, now, "me", moving, 1.0) == []

    hist = r.bin_ages(np.arange(0, 1000, dtype=np.float32) * 2.0)  # 0, 2, ..., 1998 ms
    assert int(hist.sum()) == 1000 and hist[0] == 5  # 0..8 ms in the first 10 ms bin
    assert r.hist_percentile(hist, 50) == 1.0  # the 500th sample, 998 ms, in 990-1000 ms
    assert r.hist_percentile(hist, 95) == 1.9  # the 950th, 1898 ms, in 1890-1900 ms
    assert r.hist_percentile(hist, 100) == 2.0
    hist = r.bin_ages([5_000.0, -3.0, 10 * r.AGE_MAX_MS], hist)  # accumulates; clipped
    assert int(hist.sum()) == 1003 and hist[0] == 6 and hist[-1] == 1
    assert r.hist_percentile(hist, 100) == pytest.approx(r.AGE_MAX_MS / 1000 + 0.01)
    assert r.hist_percentile(r.bin_ages([]), 95) is None
    assert r.hist_percentile(None, 95) is None

    assert r.overlap_s(5.0, 20.0, 10.0, 30.0) == 10.0
    assert r.overlap_s(0.0, 5.0, 10.0, 30.0) == 0.0
    assert r.overlap_s(12.0, 50.0, 10.0, 30.0) == 18.0
    assert r.overlap_s(0.0, np.inf, 10.0, 30.0) == 20.0
    assert r.per_participant_minute(300, 600.0) == 30.0  # 10 participant-minutes
    assert r.per_participant_minute(10, 0.0) is None
    assert r.reduction(12.0, 30.0) == 0.6
    assert r.reduction(None, 30.0) is None and r.reduction(12.0, None) is None


def _realistic_worker(obey: bool) -> tuple[Any, Any, socket.socket]:
    """A realistic worker with one participant (a timing receiver) on a socket pair, the
    other end playing the server; the active phase started a second ago."""
    from benchmarks import _realistic as r
    from benchmarks._realistic_load import RealisticWorker

    me = _load.Participant(0, 0, ME, "ws://127.0.0.1:1/ws?token=t", decode=True)
    spec = r.RealisticPlan(
        obey=obey,
        movers={0: r.Mover(r.WALKER, 45.0, 6.0, heading_deg=45.0, speed_m_s=1.4, hidden=True)},
        places={0: (45.001, 6.001)},
        moving_until={OTHERS[0]: np.inf},
        joiner_moving_until={"walker 0.0": 120.0},
    )
    plan = _load.WorkerPlan(0, "locshare", [me], {0: [ME, *OTHERS]}, interval_s=2.0, realistic=spec)
    worker = RealisticWorker(plan, Pipe()[0])
    conn = worker.conns[0]
    ours, server = socket.socketpair()
    ours.setblocking(False)
    server.setblocking(False)
    conn.sock = ours
    worker.t0, worker.t_stop = time.time() - 1.0, time.time() + 100.0
    return worker, conn, server


def _client_messages(server: socket.socket) -> list[Any]:
    """What the client wrote, through the server's own frame and message parsers."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := server.recv(65536):
            data += chunk
    frames = FrameProtocol(client=False, extensions=[])
    frames.receive_bytes(data)
    return [proto.parse_client_message(f.payload, is_text=True) for f in frames.received_frames()]


def _told(kind: str, **data: object) -> bytes:
    return proto.encode(kind, data).wire


def test_realistic_client_follows_update_interval_and_locate_now() -> None:
    """The adaptive client reschedules on update_interval (slower: an interval after its
    last fix; faster: at once if that is past) and answers locate_now with one fix
    unless its last one is fresh; what it writes passes the server's parsers."""
    from benchmarks import _realistic as r

    worker, conn, server = _realistic_worker(obey=True)
    with conn.sock, server:
        worker._greet(conn)  # right after connecting: the map hidden, the meeting point
        now = time.time()
        worker._fix(conn, now)
        assert conn.sent == 1 and conn.due == pytest.approx(conn.last_sent + 2.0)
        worker._consume(conn, _told("update_interval", seconds=30.0, reason="nobody_watching"), now)
        assert conn.interval_s == 30.0 and conn.due == pytest.approx(conn.last_sent + 30.0)
        worker._consume(conn, _told("locate_now"), now)  # its last fix is the fresh one
        assert conn.sent == 1 and worker.counts["locate_now_fresh"] == 1
        conn.last_sent -= 5.0  # five seconds later
        worker._consume(conn, _told("locate_now"), time.time())
        assert conn.sent == 2 and worker.counts["locate_now_answered"] == 1
        assert conn.due == pytest.approx(conn.last_sent + 30.0)  # then on at its interval
        conn.last_sent -= 5.0
        worker._consume(conn, _told("update_interval", seconds=2.0, reason="watched"), time.time())
        assert conn.sent == 3  # 5 s since the last fix, more than 2 s: a fix at once
        assert worker.intervals == {"nobody_watching": 1, "watched": 1}
        assert worker.sent_by_reason == {"none": 1, "nobody_watching": 1, "watched": 1}
        worker._greet(conn)  # (a reconnect: the map again, the place only once)
        visibility, place, *updates, again = _client_messages(server)
    assert visibility == again == proto.Visibility(visible=False)
    assert place.place.kind == "meet" and place.place.radius_m == r.MEET_RADIUS_M
    assert (place.place.lat, place.place.lng) == (45.001, 6.001)
    assert len(updates) == 3
    for update in updates:
        assert update.speed == pytest.approx(1.4) and update.heading == 45.0
        assert update.accuracy == r.FIX_ACCURACY_M
        assert update.lat > 45.0 - 1e-3 and update.lng > 6.0 - 1e-3


def test_fixed_client_ignores_the_pace_but_records_it() -> None:
    worker, conn, server = _realistic_worker(obey=False)
    with conn.sock, server:
        worker._fix(conn, time.time())
        due = conn.due
        worker._consume(
            conn, _told("update_interval", seconds=30.0, reason="nobody_watching"), time.time()
        )
        conn.last_sent -= 5.0
        worker._consume(conn, _told("locate_now"), time.time())
        assert (conn.interval_s, conn.due, conn.sent) == (2.0, due, 1)
        assert conn.reason == "nobody_watching" and worker.counts["locate_now"] == 1
        assert worker.counts["locate_now_answered"] == 0


def test_realistic_viewer_keeps_its_screen() -> None:
    """A timing receiver's screen: session_state's locations, every locations entry,
    joiners learnt from participant_joined, departures removed."""
    worker, conn, server = _realistic_worker(obey=True)
    joiner = str(uuid.UUID(int=99))
    t = time.time() - 3.0
    with conn.sock, server:
        state = {
            "participants": [
                {"user_id": ME, "display_name": "rider 0", "location": None},
                {"user_id": OTHERS[0], "display_name": "rider 1", "location": _entry(OTHERS[0], t)},
            ]
        }
        worker._consume(conn, _told("session_state", **state), time.time())
        assert conn.latest == {OTHERS[0]: pytest.approx(t, abs=1e-5)}
        worker._consume(
            conn,
            _told("participant_joined", user_id=joiner, display_name="walker 0.0"),
            time.time(),
        )
        assert worker.moving_until[joiner] == 120.0
        worker._consume(conn, _locations([ME, joiner], t + 2), time.time())
        assert set(conn.latest) == {ME, OTHERS[0], joiner}
        ages = worker_ages(worker, conn, t + 3.0)
        assert sorted(ages) == pytest.approx([1_000.0, 3_000.0])  # not its own position
        worker._consume(
            conn, _told("participant_left", user_id=OTHERS[0], reason="left"), time.time()
        )
        assert set(conn.latest) == {ME, joiner}


def worker_ages(worker: Any, conn: Any, now: float) -> list[float]:
    from benchmarks import _realistic as r

    return r.age_samples_ms(conn.latest, now, conn.user_id, worker.moving_until, now - worker.t0)


def _realistic_leg(
    key: str, per_minute: float, cpu_pct: float, age_p95: float | None
) -> dict[str, Any]:
    """A realistic leg's result as ``run_leg`` writes it (the fields the summary reads)."""
    from benchmarks._realistic import LEGS, REASONS

    shares = dict.fromkeys(REASONS, 0.25)
    return {
        **_leg(LEGS[key], 10.0, None, 100.0),
        "leg_key": key,
        "server_cpu_s": cpu_pct * 6,
        "server_cpu_pct": cpu_pct,
        "realistic": {
            "obey": key == "adaptive",
            "participants": 10_000,
            "groups": 1_650,
            "joined": 860,
            "left": 997,
            "updates_per_participant_minute": per_minute,
            "updates_received": int(per_minute * 1000),
            "participant_minutes": 1000.0,
            "position_age_s": {"p50": 1.0, "p95": age_p95, "p99": 2.4, "samples": 5},
            "interval_share": shares,
        },
    }


def test_realistic_summary_targets_and_readme() -> None:
    from benchmarks import _report
    from benchmarks._realistic import realistic_summary, summary_line
    from benchmarks._scenarios import scenario

    full = scenario("realistic")
    legs = [_realistic_leg("adaptive", 13.5, 52.0, 2.31), _realistic_leg("fixed", 29.8, 80.0, 1.95)]
    summary = realistic_summary(full, legs, quick=False)
    t = summary["targets"]
    assert t["full_size"] and summary["valid"]
    assert t["updates_reduction"] == 0.547 and t["updates_met"]
    assert t["cpu_reduction"] == 0.35 and t["cpu_met"]
    assert t["age_p95_s"] == 2.31 and t["age_met"]
    text = _report.readme_table({"realistic": summary})
    assert (
        "| adaptive (clients follow update_interval) | 10,000 (1,650; +860 / -997) | 13.5 |" in text
    )
    assert "| fixed 2 s (clients before issue 15) |" in text
    assert "updates 55% fewer than the fixed 2 s clients, at least 50% wanted: met;" in text
    assert "server CPU 35% lower, at least 35% wanted: met;" in text
    assert "1.00 / 2.31" in text and "speed reference 2.61 s" in text
    assert "updates 55% fewer, server CPU 35% lower" in summary_line(summary)

    # One leg, quick: the ratios are not measured, the age target is "not full size".
    quick = scenario("realistic", quick=True)
    assert quick.participants == 1_000 and quick.duration_s <= 40
    summary = realistic_summary(quick, [_realistic_leg("adaptive", 20.0, 9.0, 2.6)], quick=True)
    t = summary["targets"]
    assert t["updates_met"] is None and t["cpu_met"] is None and not t["age_met"]
    text = _report.readme_table({"realistic": summary})
    assert "not measured (run with --compare-fixed)" in text
    assert "2.60 s, at most 2.5 s: not met (not full size)." in text


@pytest.mark.slow
def test_realistic_end_to_end(tmp_path: Path) -> None:
    """``realistic --quick`` at a tiny size, both legs: the clients obey the server (at
    ``nobody_watching`` they send far less often than the fixed clients), the figures
    users feel are in every output, and the README renders the table."""
    out = tmp_path / "realistic"
    done = _bench(
        "benchmarks", "run", "realistic", "--quick", "--participants", "80", "--duration", "15",
        "--compare-fixed", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "results.json").read_text())
    assert [leg["key"] for leg in summary["legs"]] == ["adaptive", "fixed"]
    assert not summary["targets"]["full_size"]
    assert summary["targets"]["updates_reduction"] is not None
    assert summary["machine"]["speed_reference_s"] > 0
    legs = {}
    for key in ("adaptive", "fixed"):
        leg = json.loads((out / key / "results.json").read_text())
        legs[key] = f = leg["realistic"]
        assert leg["scenario"] == "realistic" and leg["valid"]
        assert leg["delivery"]["lost"] <= leg["delivery"]["missing_explained_by_coalescing_at_most"]
        assert leg["isolation"]["violations"] == 0
        assert f["participants"] == 80 and f["joined"] > 0 and f["left"] > 0
        assert f["updates_per_participant_minute"] > 0
        assert f["position_age_s"]["samples"] > 0 and f["position_age_s"]["p95"] is not None
        assert f["update_interval_received"]["nobody_watching"] > 0
        assert leg["server_cpu_s"] > 0 and leg["server_cpu_pct"] is not None
        assert "## What users feel" in (out / key / "report.md").read_text()
        assert (out / key / "position_age_over_time.png").stat().st_size > 0
    adaptive, fixed = legs["adaptive"], legs["fixed"]
    assert fixed["sent_per_participant_minute_by_reason"]["nobody_watching"] > 20  # every 2 s
    assert adaptive["sent_per_participant_minute_by_reason"]["nobody_watching"] < 10
    assert adaptive["locate_now_answered"] > 0 and fixed["locate_now_answered"] == 0
    assert "Against the targets" in (out / "report.md").read_text()
    readme = tmp_path / "README.md"
    from benchmarks._report import README_END, README_START

    readme.write_text(f"{README_START}\n{README_END}\n")
    done = _bench(
        "benchmarks", "report", "--results", str(tmp_path), "--update-readme", str(readme)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = readme.read_text()
    assert "| adaptive (clients follow update_interval)" in text
    assert "p95 age of a watched, moving person's position" in text
