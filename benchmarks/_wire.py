"""Wire formats of the load client, sans-io: WebSocket (client side), MQTT 3.1.1 and
RESP3, just enough of each for a load test.

Nothing here does I/O or reads a clock.  The load client (:mod:`benchmarks._load`)
reads sockets and hands the bytes to a *scanner*, which finds complete messages in a
buffer and returns their spans without copying or decoding them:

    scan(buf) -> (messages, consumed)   messages: list of (kind, start, end)

``kind`` is one of the ``K_*`` constants.  ``buf[start:end]`` is the payload (the JSON
text).  ``consumed`` is where the first incomplete message starts; the caller keeps
``buf[consumed:]`` for the next read.

Counting a delivery costs a ``bytes.count`` over the payload span: every location entry
the server sends carries exactly one ``"user_id"`` key (:data:`USER_ID_KEY`), in the
``locations`` frames of locshare and in the single-entry messages of the reference
systems, so the number of updates in a message is ``buf.count(USER_ID_KEY, start, end)``.
Receivers that measure latency decode the payload with orjson instead.

Why hand-rolled and not wsproto: ``python -m benchmarks wire`` (:mod:`benchmarks._wire_bench`)
measures both on the server's own frames.  On the development machine, counting a
``locations`` frame costs 1.2 us here and 18 us through wsproto's events (an event object
per frame, UTF-8 validation, the payload copied into a ``str``); framing an update costs
1.8 us here and 7.6 us with wsproto.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import time
from typing import Final

import orjson

# --- message kinds returned by the scanners -------------------------------------------
K_UPDATES: Final = (
    1  # a payload holding location entries (locshare `locations`, a reference message)
)
K_TEXT: Final = 2  # any other JSON text (session_state, presence, ...)
K_CLOSE: Final = 3  # WebSocket close frame: payload is the code and reason
K_PING: Final = 4  # WebSocket ping: answer with a pong carrying the payload
K_OTHER: Final = 5  # anything else (pong, binary, MQTT acks, RESP replies)

USER_ID_KEY: Final = b'"user_id"'
LOCATIONS_PREFIX: Final = b'{"type":"locations"'

WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

Span = tuple[int, int, int]


class WireError(Exception):
    """The peer sent something this minimal client cannot handle."""


# --- WebSocket ------------------------------------------------------------------------
def ws_handshake_request(host: str, port: int, target: str, key: bytes) -> bytes:
    """The HTTP/1.1 upgrade request (``key``: 16 random bytes, base64-encoded here)."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(key).decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def ws_accept_value(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(base64.b64encode(key) + WS_GUID).digest())


def ws_parse_handshake_response(head: bytes, key: bytes) -> int:
    """Status code of the response head (without the blank line); for a 101, also
    check ``Sec-WebSocket-Accept`` and raise :class:`WireError` if it is wrong."""
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise WireError(f"not an HTTP response: {lines[0][:80]!r}") from exc
    if status == 101:
        expected = ws_accept_value(key)
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept":
                if value.strip() != expected:
                    raise WireError("wrong Sec-WebSocket-Accept")
                break
        else:
            raise WireError("101 without Sec-WebSocket-Accept")
    return status


def ws_frame(payload: bytes, mask: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final client frame, masked with the 4-byte ``mask`` (clients must mask)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    if not n:
        return header + mask
    # XOR as one big integer: a few microseconds for a location update.
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


def ws_close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def ws_close_code(payload: bytes) -> int | None:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


def scan_ws(buf: bytes, updates_prefix: bytes | None = LOCATIONS_PREFIX) -> tuple[list[Span], int]:
    """Complete server frames in ``buf`` (servers do not mask).

    A text frame whose payload starts with ``updates_prefix`` is ``K_UPDATES`` (with
    ``None``, every text frame is).  Fragmented messages are not supported: neither
    locshare nor the reference server fragments frames this small.
    """
    out: list[Span] = []
    n = len(buf)
    i = 0
    while n - i >= 2:
        b0 = buf[i]
        length = buf[i + 1]
        if length & 0x80:
            raise WireError("the server masked a frame")
        start = i + 2
        if length == 126:
            if n - i < 4:
                break
            length = int.from_bytes(buf[i + 2 : i + 4], "big")
            start = i + 4
        elif length == 127:
            if n - i < 10:
                break
            length = int.from_bytes(buf[i + 2 : i + 10], "big")
            start = i + 10
        end = start + length
        if end > n:
            break
        opcode = b0 & 0x0F
        if not b0 & 0x80 or opcode == OP_CONT:
            raise WireError("fragmented message")
        if opcode == OP_TEXT:
            if updates_prefix is None or buf.startswith(updates_prefix, start):
                out.append((K_UPDATES, start, end))
            else:
                out.append((K_TEXT, start, end))
        elif opcode == OP_CLOSE:
            out.append((K_CLOSE, start, end))
        elif opcode == OP_PING:
            out.append((K_PING, start, end))
        else:
            out.append((K_OTHER, start, end))
        i = end
    return out, i


# --- MQTT 3.1.1 (QoS 0 only) ----------------------------------------------------------
def _mqtt_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def mqtt_connect(client_id: bytes, keepalive_s: int = 0) -> bytes:
    """CONNECT with a clean session, no credentials; ``keepalive_s`` 0 disables the
    broker's keep-alive check (the load test sends no PINGREQ)."""
    variable = _mqtt_str(b"MQTT") + bytes((4, 0x02)) + keepalive_s.to_bytes(2, "big")
    body = variable + _mqtt_str(client_id)
    return b"\x10" + _mqtt_length(len(body)) + body


def mqtt_subscribe(topic: bytes, packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + _mqtt_str(topic) + b"\x00"
    return b"\x82" + _mqtt_length(len(body)) + body


def mqtt_publish(topic: bytes, payload: bytes) -> bytes:
    body = _mqtt_str(topic) + payload
    return b"\x30" + _mqtt_length(len(body)) + body


MQTT_DISCONNECT: Final = b"\xe0\x00"
MQTT_CONNACK: Final = 2
MQTT_SUBACK: Final = 9


def scan_mqtt(buf: bytes) -> tuple[list[Span], int]:
    """Complete broker packets: a QoS 0 PUBLISH is ``K_UPDATES`` (span: its payload);
    others are ``K_OTHER`` with ``start`` holding the packet type (CONNACK = 2,
    SUBACK = 9) and the span the variable header."""
    out: list[Span] = []
    n = len(buf)
    i = 0
    while n - i >= 2:
        ptype = buf[i] >> 4
        length = 0
        shift = 0
        j = i + 1
        while True:
            if j >= n:
                return out, i
            byte = buf[j]
            length |= (byte & 0x7F) << shift
            j += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise WireError("bad MQTT remaining length")
        end = j + length
        if end > n:
            break
        if ptype == 3:
            if buf[i] & 0x06:
                raise WireError("PUBLISH with QoS > 0")
            topic_len = int.from_bytes(buf[j : j + 2], "big")
            out.append((K_UPDATES, j + 2 + topic_len, end))
        else:
            out.append((K_OTHER, ptype, end))
        i = end
    return out, i


# --- RESP3 (Redis) ------------------------------------------------------------------
def resp_command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _resp_value(buf: bytes, i: int) -> tuple[int, int, int] | None:
    """Skip one RESP3 value at ``i``: ``(end, payload_start, payload_end)`` of its last
    bulk string (for a pub/sub push, the message), or None if incomplete."""
    line_end = buf.find(b"\r\n", i)
    if line_end < 0:
        return None
    kind = buf[i]
    if kind in b"$=!":  # bulk, verbatim, bulk error
        length = int(buf[i + 1 : line_end])
        if length < 0:
            return line_end + 2, line_end + 2, line_end + 2
        end = line_end + 2 + length + 2
        return (end, line_end + 2, end - 2) if end <= len(buf) else None
    if kind in b"*>~%|":  # array, push, set, map, attribute
        count = int(buf[i + 1 : line_end])
        if kind in b"%|":
            count *= 2
        j = line_end + 2
        last = (j, j, j)
        for _ in range(max(count, 0)):
            value = _resp_value(buf, j)
            if value is None:
                return None
            last = value
            j = value[0]
        return j, last[1], last[2]
    return line_end + 2, i + 1, line_end  # simple string, error, integer, null, ...


def scan_resp(buf: bytes) -> tuple[list[Span], int]:
    """Complete RESP3 values: a ``>3 message <channel> <payload>`` push is
    ``K_UPDATES`` (span: the payload); everything else ``K_OTHER``."""
    out: list[Span] = []
    n = len(buf)
    i = 0
    while i < n:
        value = _resp_value(buf, i)
        if value is None:
            break
        end, start, stop = value
        if buf.startswith(b">3\r\n$7\r\nmessage\r\n", i):
            out.append((K_UPDATES, start, stop))
        else:
            out.append((K_OTHER, start, stop))
        i = end
    return out, i


# --- location payloads ---------------------------------------------------------------
_STAMP_CACHE: dict[int, str] = {}
_PARSE_CACHE: dict[str, int] = {}


def stamp(t: float) -> str:
    """RFC 3339 UTC with microseconds, as locshare echoes it (``...T12:00:00.123456Z``)."""
    second = int(t)
    micros = round((t - second) * 1_000_000)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    prefix = _STAMP_CACHE.get(second)
    if prefix is None:
        if len(_STAMP_CACHE) > 4096:
            _STAMP_CACHE.clear()
        prefix = _STAMP_CACHE[second] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
    return f"{prefix}{micros:06d}Z"


def parse_stamp(text: str) -> float:
    """Inverse of :func:`stamp` (and of locshare's microsecond timestamps)."""
    head = text[:19]
    second = _PARSE_CACHE.get(head)
    if second is None:
        if len(_PARSE_CACHE) > 4096:
            _PARSE_CACHE.clear()
        second = _PARSE_CACHE[head] = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    fraction = text[20:-1]
    return second + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def location_fields(
    lat: float,
    lng: float,
    t: float,
    *,
    accuracy: float = 8.5,
    heading: float | None = 87.0,
    speed: float = 13.9,
) -> dict[str, float | str | None]:
    """The fields of one update: what a phone sends (accuracy, heading, speed, fix time)."""
    return {
        "lat": round(lat, 6),
        "lng": round(lng, 6),
        "accuracy": accuracy,
        "heading": heading,
        "speed": speed,
        "timestamp": stamp(t),
    }


def locshare_update(
    lat: float,
    lng: float,
    t: float,
    *,
    accuracy: float = 8.5,
    heading: float | None = 87.0,
    speed: float = 13.9,
) -> bytes:
    fields = location_fields(lat, lng, t, accuracy=accuracy, heading=heading, speed=speed)
    return orjson.dumps({"type": "location_update", "data": fields})


def reference_update(user_id: str, lat: float, lng: float, t: float) -> bytes:
    """What the reference systems carry: the entry locshare would deliver (user id
    first, then the same fields), so payload sizes match."""
    return orjson.dumps({"user_id": user_id, **location_fields(lat, lng, t)})


def decode_entries(payload: bytes | memoryview, reference: bool) -> list[dict[str, object]]:
    """The location entries of one update payload."""
    message = orjson.loads(payload)
    if reference:
        return [message]
    updates: list[dict[str, object]] = message["data"]["updates"]
    return updates
