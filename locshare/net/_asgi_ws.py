"""``/ws`` on the REST port, for single-port deployments (behind one reverse proxy).

It is ASGI middleware in front of the Quart app (Quart's documented ``app.asgi_app``
wrapping): the ASGI ``receive``/``send`` callables are plain objects that the session
runtime's reader and writer tasks can use from their own tasks, which Quart's
context-bound ``websocket`` global cannot.  The protocol logic is the same code as the
fast path; only :class:`AsgiTransport` differs.

Resource handling: the ASGI task stays alive for as long as the connection lives
(hypercorn closes the socket when it returns) and, in ``finally``, aborts the session
connection.  Hypercorn cancels this task when the client disconnects, which is how a
vanished client is noticed here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import orjson

from .._hub import Hub
from ..errors import DEFAULT_RETRY_AFTER_S, ApiError, MessageTooBig, StorageUnavailable
from ._protocol import CLOSE_UNAUTHORIZED, OutFrame
from ._transport import ConnectionClosed, Incoming, refuse_after_upgrade

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WS_PATHS = ("/ws", "/ws/")


class AsgiTransport:
    def __init__(
        self, receive: Receive, send: Send, remote_address: str, max_message_bytes: int
    ) -> None:
        self._receive = receive
        self._send = send
        self.remote_address = remote_address
        self._max = max_message_bytes
        self._close_sent = False
        self._peer_gone = False

    async def send(self, frames: Sequence[OutFrame]) -> None:
        if self._peer_gone:
            raise ConnectionClosed(None)
        try:
            for frame in frames:
                await self._send({"type": "websocket.send", "text": frame.text})
        except OSError as exc:  # hypercorn reports a vanished peer as a closed connection
            raise ConnectionClosed(None) from exc

    async def send_bytes(self, data: bytes) -> None:
        raise NotImplementedError("the ASGI transport never hands out raw bytes")

    def send_nowait(self, data: bytes) -> int:
        return 0  # ASGI offers no synchronous send: every frame goes through the writer

    async def receive(self) -> Incoming:
        if self._peer_gone:
            raise ConnectionClosed(None)
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            self._peer_gone = True
            raise ConnectionClosed(message.get("code"), message.get("reason") or "")
        text = message.get("text")
        if text is not None:
            if len(text) > self._max or len(text.encode()) > self._max:
                raise MessageTooBig("message too big")
            return Incoming(text, True)
        data = message.get("bytes") or b""
        if len(data) > self._max:
            raise MessageTooBig("message too big")
        return Incoming(data, False)

    async def close(self, code: int, reason: str = "") -> None:
        if self._close_sent or self._peer_gone:
            return
        self._close_sent = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except OSError as exc:
            raise ConnectionClosed(None) from exc

    async def aclose(self) -> None:
        if not self._close_sent and not self._peer_gone:
            self._close_sent = True
            with contextlib.suppress(Exception):
                await self._send({"type": "websocket.close", "code": 1000, "reason": ""})


class WebSocketMiddleware:
    """Serve ``/ws`` WebSockets from the hub; pass everything else to ``app``."""

    def __init__(
        self, app: ASGIApp, hub_getter: Callable[[], Hub | None], max_message_bytes: int
    ) -> None:
        self.app = app
        self._hub_getter = hub_getter
        self._max = max_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope.get("path") in WS_PATHS:
            await self._serve(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub = self._hub_getter()
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        if hub is None:
            await _refuse(scope, send, 503, "unavailable", "the server is starting")
            return
        query = scope.get("query_string", b"").decode("latin-1")
        token = (parse_qs(query).get("token") or [""])[0]
        client = scope.get("client") or ("unknown", 0)
        address = str(client[0])
        try:
            claims = await hub.authorize(token, address)
        except ApiError as exc:
            await _refuse(scope, send, exc.http_status, exc.code, exc.message, exc.retry_after_s)
            return
        except StorageUnavailable:
            await _refuse(
                scope, send, 503, "unavailable", "the database is unavailable; retry shortly"
            )
            return
        await send({"type": "websocket.accept"})
        transport = AsgiTransport(receive, send, address, self._max)
        try:
            connection = await hub.connect(claims, transport)
        except ApiError as exc:
            await refuse_after_upgrade(transport, exc)
            return
        except StorageUnavailable:
            await refuse_after_upgrade(transport, None)
            return
        try:
            await connection.closed.wait()
        finally:
            connection.abort()


async def _refuse(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    retry_after_s: int | None = None,
) -> None:
    """Refuse before the upgrade: an HTTP response if the server supports it, else close."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = orjson.dumps({"error": {"code": code, "message": message}})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        retry_after_s = retry_after_s or DEFAULT_RETRY_AFTER_S.get(status)
        if retry_after_s is not None:
            headers.append((b"retry-after", str(retry_after_s).encode()))
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send(
            {"type": "websocket.close", "code": CLOSE_UNAUTHORIZED if status == 401 else 1008}
        )
