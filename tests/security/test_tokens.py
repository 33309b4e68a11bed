"""Token attacks that held (issue 12): unsigned, forged, confused, tampered, expired and
other sessions' tokens, against this session's REST endpoints and both WebSocket ports.

Documented outcomes (docs/protocol.md "Connecting", the ``locshare._service`` docstring):
    * a missing, malformed, forged or expired token: 401 ``unauthorized``, on REST and
      before the WebSocket upgrade;
    * a valid token of *another* session: 403 ``forbidden`` on this session's REST
      endpoints; a WebSocket URL names no session, so over WebSocket such a token opens
      its own session and nothing else;
    * a creator token cannot open a WebSocket: 401.
Every test also checks that nothing changed in the target session (nobody removed, not
ended) and that the honest pair kept receiving.

Forgeries impersonate Ann (an honest participant): with a signature the server
accepted, the attacker could remove her or read the session as her.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import pytest
import trio

from tests.conftest import JWT_SECRET
from tests.net.rawws import RawWebSocket
from tests.security.conftest import Honest, first_of
from tests.security.wire import PORTS, answers, exchange, port_of, upgrade_request

ATTACKER_KEY = b"the-attackers-own-key-" + b"k" * 42


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A JWS built by hand (pyjwt refuses to sign some of these), HMAC-SHA256 signed."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def as_ann(mallory: str, ann_id: str) -> dict[str, Any]:
    """Mallory's own (genuine) claims with Ann as the subject."""
    return {**claims_of(mallory), "sub": ann_id}


def with_signature_of(mallory: str, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """New header and claims, Mallory's genuine signature kept (a tampered token)."""
    return f"{segment(header)}.{segment(claims)}.{mallory.rsplit('.', 1)[1]}"


HS256 = {"alg": "HS256", "typ": "JWT"}

# name -> (Mallory's genuine participant token, Ann's user id) -> the forged token
FORGERIES: dict[str, Callable[[str, str], str]] = {
    "alg-none": lambda m, a: f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(as_ann(m, a))}.",
    "alg-None-capitalised": lambda m, a: (
        f"{segment({'alg': 'None', 'typ': 'JWT'})}.{segment(as_ann(m, a))}."
    ),
    "alg-none-with-a-signature": lambda m, a: with_signature_of(
        m, {"alg": "none", "typ": "JWT"}, as_ann(m, a)
    ),
    "hs256-forged-key": lambda m, a: jwt.encode(as_ann(m, a), ATTACKER_KEY, algorithm="HS256"),
    "hs512-forged-key": lambda m, a: jwt.encode(as_ann(m, a), ATTACKER_KEY, algorithm="HS512"),
    "hs256-empty-key": lambda m, a: hmac_signed(HS256, as_ann(m, a), b""),
    # RS/HS confusion: a server that takes the algorithm from the header and verifies
    # "RS256" tokens with a public value as an HMAC key accepts this one.
    "rs256-header-hmac-signed": lambda m, a: hmac_signed(
        {"alg": "RS256", "typ": "JWT"}, as_ann(m, a), b"http://127.0.0.1"
    ),
    "jwk-header-injection": lambda m, a: hmac_signed(
        {**HS256, "jwk": {"kty": "oct", "k": b64(ATTACKER_KEY)}}, as_ann(m, a), ATTACKER_KEY
    ),
    "kid-path-traversal": lambda m, a: hmac_signed(
        {**HS256, "kid": "../../../../../../../dev/null"}, as_ann(m, a), b""
    ),
    "tampered-subject": lambda m, a: with_signature_of(m, HS256, as_ann(m, a)),
    "tampered-role-creator": lambda m, a: with_signature_of(
        m, HS256, {**claims_of(m), "role": "creator", "cs": "guessed"}
    ),
    "tampered-expiry": lambda m, a: with_signature_of(
        m, HS256, {**claims_of(m), "exp": claims_of(m)["exp"] + 86400 * 365}
    ),
    "truncated-signature": lambda m, a: m[:-6],
    # The right key (this test knows the server's secret), but expired a minute ago.
    "expired": lambda m, a: jwt.encode(
        {**as_ann(m, a), "exp": int(time.time()) - 60, "iat": int(time.time()) - 3600},
        JWT_SECRET,
        algorithm="HS256",
    ),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def participants(honest: Honest) -> dict[str, dict[str, Any]]:
    """This session's participants by name, read with the creator's token."""
    response = await honest.server.http.get(
        f"/api/sessions/{honest.session_id}/participants",
        headers=bearer(honest.created["creator_token"]),
    )
    assert response.status_code == 200, response.text
    return {p["display_name"]: p for p in response.json()["participants"]}


async def assert_session_intact(honest: Honest) -> None:
    session = (await honest.server.http.get(f"/api/sessions/{honest.session_id}")).json()
    assert session["is_active"], session
    people = await participants(honest)
    assert {name for name, p in people.items() if p["is_active"]} == {"Ann", "Bo", "Mallory"}


async def assert_rest_refused(
    honest: Honest, token: str, status: int, code: str, *, target: str
) -> None:
    """Read the participants, remove Ann, end the session: each refused with
    ``status``/``code``."""
    sid = honest.session_id
    http = honest.server.http
    for method, path in (
        ("GET", f"/api/sessions/{sid}/participants"),
        ("DELETE", f"/api/sessions/{sid}/participants/{target}"),
        ("DELETE", f"/api/sessions/{sid}"),
    ):
        response = await http.request(method, path, headers=bearer(token))
        assert response.status_code == status, (method, path, response.text)
        assert response.json()["error"]["code"] == code


async def assert_upgrade_refused(honest: Honest, token: str, status: int, code: str) -> None:
    for which in PORTS:
        raw = await exchange(
            port_of(honest.server, which), upgrade_request(f"/ws?token={token}"), timeout=5
        )
        found = answers(raw)
        assert [a.status for a in found] == [status], (which, raw[:200])
        assert orjson.loads(found[0].body)["error"]["code"] == code


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_forged_and_tampered_tokens_get_401_everywhere(honest: Honest, forgery: str) -> None:
    with trio.fail_after(60):
        ann_id = (await participants(honest))["Ann"]["user_id"]
        token = FORGERIES[forgery](honest.attacker["websocket_token"], ann_id)
        await assert_rest_refused(honest, token, 401, "unauthorized", target=ann_id)
        await assert_upgrade_refused(honest, token, 401, "unauthorized")
        await assert_session_intact(honest)
        await honest.assert_still_flowing()


async def test_a_creator_token_cannot_open_a_websocket(honest: Honest) -> None:
    """401 on both ports: a creator must join like everyone else."""
    with trio.fail_after(30):
        await assert_upgrade_refused(honest, honest.created["creator_token"], 401, "unauthorized")
        await assert_session_intact(honest)
        await honest.assert_still_flowing()


async def test_another_sessions_tokens_get_403_and_change_nothing(honest: Honest) -> None:
    """Session B's participant and B's creator against session A: read, remove Ann,
    end: 403 each time; A is untouched."""
    with trio.fail_after(30):
        server = honest.server
        other = await server.create_session(name="Elsewhere")
        eve = await server.join(other["session_id"], "Eve")
        ann_id = (await participants(honest))["Ann"]["user_id"]
        for token in (eve["websocket_token"], other["creator_token"]):
            await assert_rest_refused(honest, token, 403, "forbidden", target=ann_id)
        # Eve's user id in A's path changes nothing either (she is not A's participant).
        response = await server.http.delete(
            f"/api/sessions/{honest.session_id}/participants/{eve['user_id']}",
            headers=bearer(eve["websocket_token"]),
        )
        assert response.status_code == 403
        await assert_session_intact(honest)
        await honest.assert_still_flowing()


@pytest.mark.parametrize("which", PORTS)
async def test_another_sessions_token_opens_only_its_own_session(
    honest: Honest, which: str
) -> None:
    """A WebSocket URL names no session: Eve's token, even with A's id added to the URL,
    opens session B.  While Ann shares in A, Eve hears nothing of A."""
    with trio.fail_after(30):
        server = honest.server
        other = await server.create_session(name="Elsewhere")
        eve = await server.join(other["session_id"], "Eve")
        ann_id = (await participants(honest))["Ann"]["user_id"]
        resource = (
            f"/ws?session_id={honest.session_id}&token={eve['websocket_token']}"
            f"&sid={honest.session_id}"
        )
        ws = await RawWebSocket.connect(port_of(server, which), resource)
        try:
            state = await first_of(ws, "session_state")
            assert state["session"]["id"] == other["session_id"]
            assert [p["display_name"] for p in state["participants"]] == ["Eve"]
            await honest.assert_still_flowing()
            await honest.assert_still_flowing()
            heard = b""
            with trio.move_on_after(1.0):
                while True:
                    heard += (await ws.receive())[1]
            for secret in (honest.session_id, ann_id, "Ann", "Target"):
                assert secret.encode() not in heard, secret
        finally:
            await ws.aclose()
