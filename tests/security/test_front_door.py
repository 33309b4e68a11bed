"""Attacks on the REST port's connection handling (issue 12, findings 1 and 3, h2c).

Finding 1 (worked once): an upgrade request with a bad token and one byte behind it,
in one packet, made hypercorn send two responses on one connection; the h11 error
escaped its connection task and ``trio.run`` returned: REST, WebSockets and the
embedded PostgreSQL went down.  Finding 3 (worked once): hypercorn negotiated
permessage-deflate on ``/ws`` and wsproto inflated a compression bomb to gigabytes.
"""

from __future__ import annotations

import base64
import os
import zlib

import psutil
import pytest
import trio

from tests.conftest import Running
from tests.net.rawws import TEXT, frame
from tests.security.conftest import Honest, close_code
from tests.security.wire import exchange, port_of

UPGRADE = (
    b"GET /ws?token=x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

ports = pytest.mark.parametrize("which", ["rest", "ws"])


@ports
@pytest.mark.parametrize(
    "tail",
    [b"x", b"\x00" * 100, b"GET / HTTP/1.1\r\n\r\n", frame(TEXT, b"{}")],
    ids=["one-byte", "zeros", "second-request", "a-frame"],
)
async def test_an_unauthenticated_upgrade_with_bytes_behind_it_does_not_stop_the_server(
    honest: Honest, which: str, tail: bytes
) -> None:
    with trio.fail_after(30):
        for _ in range(3):
            answer = await exchange(port_of(honest.server, which), UPGRADE + tail)
            assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
            assert b'"unauthorized"' in answer
        await honest.assert_still_flowing()


async def test_an_upgrade_behind_kept_alive_requests_changes_hands_after_their_answers(
    honest: Honest,
) -> None:
    """A reverse proxy may reuse a kept-alive connection for an upgrade: the earlier
    requests are answered in order, then the same code as the dedicated port answers
    the upgrade (here: 101 with a valid token)."""
    token = honest.attacker["websocket_token"]
    key = base64.b64encode(os.urandom(16))
    upgrade = (
        b"GET /ws?token=" + token.encode() + b" HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: "
        + key
        + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    pipelined = (
        b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /health/ready HTTP/1.1\r\nHost: a\r\n\r\n" + upgrade
    )
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", honest.server.info.port)
        try:
            await stream.send_all(pipelined)
            answer = b""
            while b"session_state" not in answer:
                chunk = await stream.receive_some(65536)
                assert chunk, answer
                answer += chunk
        finally:
            await trio.aclose_forcefully(stream)
        first, rest = answer.split(b'{"status":"ok"}', 1)
        assert first.startswith(b"HTTP/1.1 200")
        second, rest = rest.split(b'{"status":"ready","bus":"local"}', 1)
        assert second.startswith(b"HTTP/1.1 200")
        assert rest.startswith(b"HTTP/1.1 101")
        assert b"sec-websocket-extensions" not in rest.lower()
        await honest.assert_still_flowing()


@pytest.mark.parametrize("which", ["rest", "ws"])
async def test_compression_is_never_negotiated_and_a_compressed_frame_is_refused(
    honest: Honest, which: str
) -> None:
    """The bomb: about 1 MB of deflate that inflates to gigabytes.  Without the
    extension, a frame with RSV1 set is a protocol error (1002), read no further, and
    the server's memory does not grow."""
    token = honest.attacker["websocket_token"]
    port = port_of(honest.server, which)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bomb.compress(bytes(64 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    process = psutil.Process()
    before = process.memory_info().rss
    with trio.fail_after(60):
        for _ in range(4):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                key = base64.b64encode(os.urandom(16))
                await stream.send_all(
                    b"GET /ws?token=" + token.encode() + b" HTTP/1.1\r\nHost: a\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                    + key
                    + b"\r\n"
                    b"Sec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
                )
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some(65536)
                assert head.startswith(b"HTTP/1.1 101"), head[:100]
                assert b"sec-websocket-extensions" not in head.lower()
                # rsv=4: RSV1, "this message is compressed".  Sent as several frames so
                # that about 1 MB crosses the wire per connection.
                for _ in range(16):
                    try:
                        await stream.send_all(frame(TEXT, chunk[: 64 * 1024], rsv=4))
                    except trio.BrokenResourceError:
                        break
                data = head.partition(b"\r\n\r\n")[2]
                with trio.move_on_after(5):
                    while b"\x88" not in data:  # a close frame (opcode 8, FIN)
                        more = await stream.receive_some(65536)
                        if not more:
                            break
                        data += more
                close_at = data.find(b"\x88")
                assert close_at >= 0, data[-200:]
                assert data[close_at + 2 : close_at + 4] == (1002).to_bytes(2, "big")
            finally:
                await trio.aclose_forcefully(stream)
        grown = process.memory_info().rss - before
        assert grown < 64 << 20, f"RSS grew by {grown / 2**20:.0f} MB"
        await honest.assert_still_flowing()


async def test_h2c_upgrade_is_ignored_and_answered_in_http1(server: Running) -> None:
    """An h2c upgrade would switch the connection to HTTP/2, past proxy rules written
    for HTTP/1.1 (e.g. one blocking /metrics)."""
    with trio.fail_after(20):
        answer = await exchange(
            server.info.port,
            b"GET /health/live HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            timeout=2.0,
        )
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        assert b"101" not in answer.split(b"\r\n", 1)[0]
        # Also on a later request of a kept-alive connection.
        answer = await exchange(
            server.info.port,
            b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            timeout=2.0,
        )
        assert answer.count(b"HTTP/1.1 200") == 2, answer[:300]
        assert b"HTTP/1.1 101" not in answer


async def test_http2_prior_knowledge_is_refused(server: Running) -> None:
    with trio.fail_after(20):
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        assert (await exchange(server.info.port, preface)).startswith(b"HTTP/1.1 505")
        after_one = await exchange(
            server.info.port, b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n" + preface
        )
        assert after_one.startswith(b"HTTP/1.1 200")
        assert b"HTTP/1.1 505" in after_one
        assert (await server.http.get("/health/ready")).status_code == 200


async def test_a_connection_that_never_finishes_its_head_is_dropped(honest: Honest) -> None:
    """Slowloris on the REST port: the front door gives a request head 10 s."""
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", honest.server.info.port)
        try:
            await stream.send_all(b"GET /health/live HTTP/1.1\r\nHost: a\r\n")
            await honest.assert_still_flowing()
            started = trio.current_time()
            with trio.move_on_after(20):
                while True:
                    await trio.sleep(1)
                    try:
                        await stream.send_all(b"X-a: b\r\n")
                    except trio.BrokenResourceError:
                        break
            assert trio.current_time() - started < 15
        finally:
            await trio.aclose_forcefully(stream)
        await honest.assert_still_flowing()


@ports
async def test_protocol_violations_close_with_1002_on_both_ports(
    honest: Honest, which: str
) -> None:
    from tests.net.rawws import RawWebSocket

    with trio.fail_after(30):
        for bad in (frame(0x3, b"{}"), frame(TEXT, b"{}", rsv=2), frame(TEXT, b"{}", mask=False)):
            ws = await RawWebSocket.connect(port_of(honest.server, which), honest.ws_resource())
            try:
                await ws.send_raw(bad)
                assert await close_code(ws) == 1002
            finally:
                await ws.aclose()
        await honest.assert_still_flowing()
