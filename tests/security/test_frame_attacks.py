"""WebSocket frame attacks that held (issue 12), on both ports: invalid UTF-8, RSV bits,
reserved opcodes, unmasked and fragmented control frames, continuations out of place,
bad close frames, oversized messages and a frame announcing a 2^63-byte payload.

Documented outcome (docs/protocol.md, "Close codes"): the server answers with a close
frame carrying 1002 (protocol violation), 1007 (text that is not UTF-8) or 1009
(message over ``max_message_bytes``) and a fixed reason phrase, never Python error
text; the session goes on, and the honest pair in it keeps receiving.

The attacker is a participant of the session (a valid token): these frames reach the
code behind the handshake.  Each case gets a fresh socket; one test per family and
port runs the family's cases one after another.
"""

from __future__ import annotations

import struct

import pytest
import trio

from locshare.net._wsserver import CLOSE_REASONS
from tests.net.rawws import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Closed,
    RawWebSocket,
    frame,
)
from tests.security.conftest import Honest, close_code, first_of
from tests.security.wire import PORTS, port_of

MAX = 16 * 1024  # the default max_message_bytes


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def header_announcing(length: int) -> bytes:
    """A masked text frame header claiming ``length`` payload bytes (64-bit form)."""
    return bytes([0x80 | TEXT, 0x80 | 127]) + struct.pack("!Q", length) + b"\x00\x00\x00\x00"


FAMILIES: dict[str, dict[str, tuple[bytes, int]]] = {
    "invalid-utf8": {
        "one-frame": (frame(TEXT, b'{"type":"ping","data":{"id":"\xff"}}'), 1007),
        "overlong-slash": (frame(TEXT, b'"\xc0\xaf"'), 1007),
        "surrogate-half": (frame(TEXT, b'"\xed\xa0\x80"'), 1007),
        "beyond-u10ffff": (frame(TEXT, b'"\xf4\x90\x80\x80"'), 1007),
        "split-across-fragments": (
            frame(TEXT, b'{"a":"\xe2\x82', fin=False) + frame(CONTINUATION, b'\x28"}'),
            1007,
        ),
        "truncated-at-the-end": (frame(TEXT, b'"abc\xe2\x82'), 1007),
    },
    "rsv-bits": {
        "rsv1-text": (frame(TEXT, b"{}", rsv=4), 1002),
        "rsv2-binary": (frame(BINARY, b"{}", rsv=2), 1002),
        "rsv3-text": (frame(TEXT, b"{}", rsv=1), 1002),
        "all-rsv-ping": (frame(PING, b"p", rsv=7), 1002),
        "rsv-on-a-continuation": (
            frame(TEXT, b"{", fin=False) + frame(CONTINUATION, b"}", rsv=2),
            1002,
        ),
    },
    "reserved-opcodes": {
        **{f"data-{op:#x}": (frame(op, b"{}"), 1002) for op in range(0x3, 0x8)},
        **{f"control-{op:#x}": (frame(op, b"x"), 1002) for op in range(0xB, 0x10)},
    },
    "unmasked": {
        "text": (frame(TEXT, b'{"type":"ping","data":{}}', mask=False), 1002),
        "ping": (frame(PING, b"p", mask=False), 1002),
        "close": (frame(CLOSE, close_payload(1000), mask=False), 1002),
    },
    "fragmentation": {
        "fragmented-ping": (frame(PING, b"p", fin=False), 1002),
        "fragmented-pong": (frame(PONG, b"p", fin=False), 1002),
        "fragmented-close": (frame(CLOSE, close_payload(1000), fin=False), 1002),
        "ping-over-125-bytes": (frame(PING, b"p" * 126), 1002),
        "continuation-without-a-start": (frame(CONTINUATION, b"{}"), 1002),
        "final-continuation-without-a-start": (frame(CONTINUATION, b"}", fin=True), 1002),
        "new-message-inside-a-fragmented-one": (
            frame(TEXT, b"{", fin=False) + frame(TEXT, b"{}"),
            1002,
        ),
        "binary-inside-a-fragmented-text": (
            frame(TEXT, b"{", fin=False) + frame(BINARY, b"{}", fin=False),
            1002,
        ),
    },
    "close-frames": {
        **{
            f"code-{code}": (frame(CLOSE, close_payload(code)), 1002)
            for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
        },
        "one-byte-payload": (frame(CLOSE, b"\x03"), 1002),
        "reason-not-utf8": (frame(CLOSE, close_payload(1000, b"bye \xff\xfe")), 1007),
        "reason-over-123-bytes": (frame(CLOSE, close_payload(1000, b"r" * 124)), 1002),
    },
    "sizes": {
        "text-one-byte-over": (frame(TEXT, b"a" * (MAX + 1)), 1009),
        "binary-one-byte-over": (frame(BINARY, b"a" * (MAX + 1)), 1009),
        "fragments-adding-up-over": (
            b"".join(
                frame(TEXT if i == 0 else CONTINUATION, b"a" * 1024, fin=i == 16) for i in range(17)
            ),
            1009,
        ),
        # The payload never comes in full: the limit is checked on what arrives.
        "announcing-2^63-1": (header_announcing(2**63 - 1) + b"a" * (MAX + 1024), 1009),
        # RFC 6455 5.2: the most significant bit of a 64-bit length must be 0.
        "announcing-2^63": (header_announcing(2**63), 1002),
        "announcing-2^64-1": (header_announcing(2**64 - 1), 1002),
    },
}


async def closed_with(ws: RawWebSocket) -> Closed:
    """Read until the server closes (``Closed.code`` is ``None`` without a close frame)."""
    with trio.fail_after(10):
        try:
            while True:
                await ws.receive()
        except Closed as exc:
            return exc


@pytest.mark.parametrize("which", PORTS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_frame_attacks_close_with_the_documented_code(
    honest: Honest, family: str, which: str
) -> None:
    port = port_of(honest.server, which)
    with trio.fail_after(120):
        for case, (data, expected) in FAMILIES[family].items():
            ws = await RawWebSocket.connect(port, honest.ws_resource())
            try:
                await first_of(ws, "session_state")
                await ws.send_raw(data)
                closed = await closed_with(ws)
                code, reason = closed.code, closed.reason
                assert code == expected, (case, closed)
                assert reason.decode() == CLOSE_REASONS[expected], (case, reason)
            finally:
                await ws.aclose()
        await honest.assert_still_flowing()
    assert honest.server.hub.stats.session_crashes == 0


@pytest.mark.parametrize("which", PORTS)
async def test_a_message_exactly_at_the_limit_is_not_closed(honest: Honest, which: str) -> None:
    """The boundary of the size family: 16 KiB (of valid JSON-shaped text) is a
    message, answered ``malformed_message``, not a close."""
    with trio.fail_after(30):
        ws = await RawWebSocket.connect(port_of(honest.server, which), honest.ws_resource())
        try:
            await first_of(ws, "session_state")
            await ws.send_raw(frame(TEXT, b'"' + b"a" * (MAX - 2) + b'"'))
            assert (await first_of(ws, "error"))["code"] == "malformed_message"
            await ws.send_text('{"type":"ping","data":{"id":"after"}}')
            assert (await first_of(ws, "pong"))["id"] == "after"
            await ws.send_raw(frame(CLOSE, close_payload(1000)))
            assert await close_code(ws) == 1000
        finally:
            await ws.aclose()
        await honest.assert_still_flowing()
