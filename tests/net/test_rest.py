"""The REST contract against a real server and a real PostgreSQL: success and error paths."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import Running, random_id

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- create ---------------------------------------------------------------------------
async def test_create_session_defaults(server: Running) -> None:
    response = await server.http.post("/api/sessions")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "session_id",
        "name",
        "join_link",
        "expires_at",
        "max_participants",
        "creator_token",
    }
    uuid.UUID(body["session_id"])
    assert body["name"]  # readable auto-generated name
    assert body["join_link"] == f"{server.base}/join/{body['session_id']}"
    assert RFC3339.match(body["expires_at"])
    assert body["max_participants"] == 50
    details = (await server.http.get(f"/api/sessions/{body['session_id']}")).json()
    assert details["name"] == body["name"]
    created = trio_datetime(details["created_at"])
    expires = trio_datetime(details["expires_at"])
    assert abs((expires - created) - 360 * 60) < 1


def trio_datetime(text: str) -> float:
    from locshare._clock import parse_rfc3339

    return parse_rfc3339(text)


async def test_create_session_with_fields(server: Running) -> None:
    body = await server.create_session(
        name="  Alps convoy  ", expires_in_minutes=60, max_participants=2
    )
    assert body["name"] == "Alps convoy"
    assert body["max_participants"] == 2


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"name": "\u2066Hike\u2069"}, "name"),
        ({"name": "\ufeff"}, "name"),
        ({"expires_in_minutes": 59}, "expires_in_minutes"),
        ({"expires_in_minutes": 1441}, "expires_in_minutes"),
        ({"expires_in_minutes": 90.5}, "expires_in_minutes"),
        ({"expires_in_minutes": True}, "expires_in_minutes"),
        ({"expires_in_minutes": "60"}, "expires_in_minutes"),
        ({"max_participants": 1}, "max_participants"),
        ({"max_participants": 51}, "max_participants"),
        ({"max_participants": 10**30}, "max_participants"),
        ({"max_participants": 10**400}, "max_participants"),
    ],
)
async def test_create_session_invalid_fields(
    server: Running, payload: dict[str, Any], field: str
) -> None:
    error = assert_error(
        await server.http.post("/api/sessions", json=payload), 422, "invalid_request"
    )
    assert error["field"] == field
    assert field in error["message"]


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"\xff\xfe\x00garbage", 400, "malformed_json"),
        (b"[1, 2]", 422, "invalid_request"),
        (b'"a string"', 422, "invalid_request"),
        (b"42", 422, "invalid_request"),
        (b"[" * 5000 + b"]" * 5000, 400, "malformed_json"),
    ],
)
async def test_create_session_malformed_bodies(
    server: Running, content: bytes, status: int, code: str
) -> None:
    response = await server.http.post(
        "/api/sessions", content=content, headers={"content-type": "application/json"}
    )
    assert_error(response, status, code)


async def test_oversized_body_is_413(server: Running) -> None:
    big = b'{"name": "' + b"a" * 20000 + b'"}'
    assert_error(await server.http.post("/api/sessions", content=big), 413, "payload_too_large")

    # No Content-Length: the limit applies while a chunked body streams in, too.
    stream = await trio.open_tcp_stream("127.0.0.1", server.info.port)
    async with stream:
        await stream.send_all(
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        with trio.fail_after(10):
            reply = b""
            try:
                for _ in range(40):
                    await stream.send_all(b"400\r\n" + b" " * 1024 + b"\r\n")
            except trio.BrokenResourceError:
                pass  # the server may stop reading once it has answered
            while b"payload_too_large" not in reply:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"payload_too_large" in reply


# --- get ------------------------------------------------------------------------------
async def test_get_session(server: Running) -> None:
    created = await server.create_session(name="Hike")
    response = await server.http.get(f"/api/sessions/{created['session_id']}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "created_at",
        "expires_at",
        "participant_count",
        "max_participants",
        "is_active",
        "ended_reason",
    }
    assert body["participant_count"] == 0
    assert body["is_active"] is True
    assert body["ended_reason"] is None
    assert RFC3339.match(body["created_at"])


@pytest.mark.parametrize("session_id", ["not-a-uuid", random_id(), "1" * 500])
async def test_get_unknown_session(server: Running, session_id: str) -> None:
    assert_error(await server.http.get(f"/api/sessions/{session_id}"), 404, "not_found")


# --- join -----------------------------------------------------------------------------
async def test_join(server: Running) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    joined = await server.join(sid, "  Zoë 🏍  ", avatar_color="#ff5733")
    assert set(joined) >= {
        "user_id",
        "session_id",
        "websocket_token",
        "websocket_url",
        "expires_at",
    }
    assert joined["session_id"] == sid
    assert joined["display_name"] == "Zoë 🏍"
    assert joined["avatar_color"] == "#FF5733"
    assert joined["websocket_url"] == server.info.websocket_url
    assert joined["expires_at"] == created["expires_at"]
    second = await server.join(sid, "Bo")
    assert re.fullmatch(r"#[0-9A-F]{6}", second["avatar_color"])
    details = (await server.http.get(f"/api/sessions/{sid}")).json()
    assert details["participant_count"] == 2


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "display_name"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 101}, "display_name"),
        ({"display_name": "tab\tname"}, "display_name"),
        ({"display_name": "line\u2028sep"}, "display_name"),
        ({"display_name": "\u202egpj.exe"}, "display_name"),
        ({"display_name": "\u200b\u200d"}, "display_name"),
        ({"display_name": "\u3164"}, "display_name"),
        ({"display_name": " \u2800 "}, "display_name"),
        ({"display_name": "\u0301"}, "display_name"),
        ({"display_name": ["Ann"]}, "display_name"),
        ({"display_name": "Ann", "avatar_color": "red"}, "avatar_color"),
        ({"display_name": "Ann", "avatar_color": "#12345"}, "avatar_color"),
        ({"display_name": "Ann", "avatar_color": "#123456\n"}, "avatar_color"),
        ({"display_name": "Ann", "avatar_color": 123456}, "avatar_color"),
    ],
)
async def test_join_invalid(server: Running, payload: dict[str, Any], field: str) -> None:
    created = await server.create_session()
    response = await server.http.post(f"/api/sessions/{created['session_id']}/join", json=payload)
    error = assert_error(response, 422, "invalid_request")
    assert error["field"] == field


async def test_join_empty_and_malformed_bodies(server: Running) -> None:
    created = await server.create_session()
    url = f"/api/sessions/{created['session_id']}/join"
    json_type = {"content-type": "application/json"}
    assert_error(await server.http.post(url), 422, "invalid_request")
    assert_error(
        await server.http.post(url, content=b"{", headers=json_type), 400, "malformed_json"
    )
    assert_error(
        await server.http.post(url, content=b"null", headers=json_type), 422, "invalid_request"
    )


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=UTF-8",
        "APPLICATION/JSON",
        "application/vnd.locshare+json",
    ],
)
async def test_json_media_type_variants_are_accepted(server: Running, content_type: str) -> None:
    created = await server.create_session()
    response = await server.http.post(
        f"/api/sessions/{created['session_id']}/join",
        content=b'{"display_name": "Ann"}',
        headers={"content-type": content_type},
    )
    assert response.status_code == 201, response.text
    response = await server.http.post(
        "/api/sessions", content=b'{"name": "Hike"}', headers={"content-type": content_type}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", b'{"display_name": "Ann"}'),
        ("application/x-www-form-urlencoded", b"display_name=Ann"),
        ("multipart/form-data; boundary=b", b"--b\r\n\r\nAnn\r\n--b--\r\n"),
        (None, b'{"display_name": "Ann"}'),
    ],
)
async def test_bodies_that_are_not_declared_json_are_415(
    server: Running, content_type: str | None, content: bytes
) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    headers = {} if content_type is None else {"content-type": content_type}
    for url in (f"/api/sessions/{sid}/join", "/api/sessions"):
        response = await server.http.post(url, content=content, headers=headers)
        assert_error(response, 415, "unsupported_media_type")
    assert (await server.http.get(f"/api/sessions/{sid}")).json()["participant_count"] == 0


async def test_out_of_range_numbers_are_422_or_ignored(server: Running) -> None:
    json_type = {"content-type": "application/json"}
    for raw, field in (
        (b'{"max_participants": 1e400}', "max_participants"),
        (b'{"expires_in_minutes": -' + b"9" * 5000 + b"}", "expires_in_minutes"),
    ):
        response = await server.http.post("/api/sessions", content=raw, headers=json_type)
        assert assert_error(response, 422, "invalid_request")["field"] == field
    response = await server.http.post(
        "/api/sessions", content=b'{"name": "Big", "x": 1e400}', headers=json_type
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Big"


async def test_join_unknown_full_and_ended(server: Running) -> None:
    assert_error(
        await server.http.post(f"/api/sessions/{random_id()}/join", json={"display_name": "A"}),
        404,
        "not_found",
    )
    assert_error(
        await server.http.post("/api/sessions/nope/join", json={"display_name": "A"}),
        404,
        "not_found",
    )
    created = await server.create_session(max_participants=2)
    sid = created["session_id"]
    await server.join(sid, "A")
    await server.join(sid, "B")
    assert_error(
        await server.http.post(f"/api/sessions/{sid}/join", json={"display_name": "C"}),
        409,
        "session_full",
    )
    response = await server.http.delete(
        f"/api/sessions/{sid}", headers=bearer(created["creator_token"])
    )
    assert response.status_code == 204
    assert_error(
        await server.http.post(f"/api/sessions/{sid}/join", json={"display_name": "D"}),
        410,
        "session_ended",
    )


async def test_concurrent_joins_take_exactly_the_free_places(server: Running) -> None:
    created = await server.create_session(max_participants=50)
    sid = created["session_id"]
    await server.join(sid, "first")  # 49 places left
    statuses: list[int] = []

    async def one(i: int) -> None:
        response = await server.http.post(
            f"/api/sessions/{sid}/join", json={"display_name": f"p{i}"}
        )
        statuses.append(response.status_code)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
    assert statuses.count(201) == 49
    assert statuses.count(409) == 1
    details = (await server.http.get(f"/api/sessions/{sid}")).json()
    assert details["participant_count"] == 50


# --- participants ---------------------------------------------------------------------
async def test_participants_list(server: Running) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    ann = await server.join(sid, "Ann")
    bo = await server.join(sid, "Bo")
    for token in (ann["websocket_token"], created["creator_token"]):
        response = await server.http.get(f"/api/sessions/{sid}/participants", headers=bearer(token))
        assert response.status_code == 200
        people = response.json()["participants"]
        assert [p["display_name"] for p in people] == ["Ann", "Bo"]
        assert set(people[0]) == {
            "user_id",
            "display_name",
            "avatar_color",
            "joined_at",
            "last_seen",
            "is_active",
        }
        assert all(p["is_active"] for p in people)
    # Bo leaves: still listed, inactive, after the active ones.
    response = await server.http.delete(
        f"/api/sessions/{sid}/participants/{bo['user_id']}", headers=bearer(bo["websocket_token"])
    )
    assert response.status_code == 204
    people = (
        await server.http.get(
            f"/api/sessions/{sid}/participants", headers=bearer(ann["websocket_token"])
        )
    ).json()["participants"]
    assert [(p["display_name"], p["is_active"]) for p in people] == [("Ann", True), ("Bo", False)]


async def test_participants_auth_errors(server: Running) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    other = await server.create_session()
    other_member = await server.join(other["session_id"], "X")
    url = f"/api/sessions/{sid}/participants"
    assert_error(await server.http.get(url), 401, "unauthorized")
    assert_error(
        await server.http.get(url, headers={"Authorization": "Basic abc"}), 401, "unauthorized"
    )
    assert_error(await server.http.get(url, headers=bearer("not.a.jwt")), 401, "unauthorized")
    assert_error(
        await server.http.get(url, headers=bearer(other_member["websocket_token"])),
        403,
        "forbidden",
    )
    assert_error(
        await server.http.get(url, headers=bearer(other["creator_token"])), 403, "forbidden"
    )
    assert_error(
        await server.http.get(
            f"/api/sessions/{random_id()}/participants", headers=bearer(other["creator_token"])
        ),
        403,
        "forbidden",
    )


# --- leave, remove, end ---------------------------------------------------------------
async def test_leave_and_token_refused_afterwards(server: Running) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    ann = await server.join(sid, "Ann")
    url = f"/api/sessions/{sid}/participants/{ann['user_id']}"
    assert (
        await server.http.delete(url, headers=bearer(ann["websocket_token"]))
    ).status_code == 204
    # The token has not expired, but its participant left: refused everywhere.
    assert_error(
        await server.http.get(
            f"/api/sessions/{sid}/participants", headers=bearer(ann["websocket_token"])
        ),
        401,
        "unauthorized",
    )
    assert_error(
        await server.http.delete(url, headers=bearer(ann["websocket_token"])), 401, "unauthorized"
    )
    details = (await server.http.get(f"/api/sessions/{sid}")).json()
    assert details["participant_count"] == 0
    # Leaving again with the creator token: already gone.
    assert_error(
        await server.http.delete(url, headers=bearer(created["creator_token"])), 404, "not_found"
    )


async def test_remove_rules(server: Running) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    ann = await server.join(sid, "Ann")
    bo = await server.join(sid, "Bo")
    url_bo = f"/api/sessions/{sid}/participants/{bo['user_id']}"
    assert_error(
        await server.http.delete(url_bo, headers=bearer(ann["websocket_token"])), 403, "forbidden"
    )
    assert_error(await server.http.delete(url_bo), 401, "unauthorized")
    assert_error(
        await server.http.delete(
            f"/api/sessions/{sid}/participants/not-a-uuid", headers=bearer(created["creator_token"])
        ),
        404,
        "not_found",
    )
    assert_error(
        await server.http.delete(
            f"/api/sessions/{sid}/participants/{random_id()}",
            headers=bearer(created["creator_token"]),
        ),
        404,
        "not_found",
    )
    assert (
        await server.http.delete(url_bo, headers=bearer(created["creator_token"]))
    ).status_code == 204
    assert_error(
        await server.http.get(
            f"/api/sessions/{sid}/participants", headers=bearer(bo["websocket_token"])
        ),
        401,
        "unauthorized",
    )


async def test_end_session(server: Running) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    ann = await server.join(sid, "Ann")
    assert_error(await server.http.delete(f"/api/sessions/{sid}"), 401, "unauthorized")
    assert_error(
        await server.http.delete(f"/api/sessions/{sid}", headers=bearer(ann["websocket_token"])),
        403,
        "forbidden",
    )
    other = await server.create_session()
    assert_error(
        await server.http.delete(f"/api/sessions/{sid}", headers=bearer(other["creator_token"])),
        403,
        "forbidden",
    )
    assert (
        await server.http.delete(f"/api/sessions/{sid}", headers=bearer(created["creator_token"]))
    ).status_code == 204
    details = (await server.http.get(f"/api/sessions/{sid}")).json()
    assert details["is_active"] is False
    assert details["ended_reason"] == "ended"
    # Tokens of an ended session are refused before they expire.
    assert_error(
        await server.http.get(
            f"/api/sessions/{sid}/participants", headers=bearer(ann["websocket_token"])
        ),
        410,
        "session_ended",
    )
    assert_error(
        await server.http.delete(f"/api/sessions/{sid}", headers=bearer(created["creator_token"])),
        410,
        "session_ended",
    )
    assert_error(
        await server.http.delete(
            f"/api/sessions/{random_id()}", headers=bearer(created["creator_token"])
        ),
        403,
        "forbidden",
    )


async def test_forged_creator_token_for_the_same_session(server: Running) -> None:
    """A creator token signed with the right key but another secret is refused."""
    created = await server.create_session()
    sid = uuid.UUID(created["session_id"])
    forged, _hash = server.hub.tokens.creator_token(
        sid, server.clock.now() + 3600, server.clock.now()
    )
    assert_error(
        await server.http.delete(f"/api/sessions/{sid}", headers=bearer(forged)),
        401,
        "unauthorized",
    )


# --- expiry and inactivity with a controllable clock ------------------------------------
async def test_expiry_with_controlled_clock(server: Running) -> None:
    created = await server.create_session(expires_in_minutes=60)
    sid = created["session_id"]
    ann = await server.join(sid, "Ann")
    server.clock.advance(59 * 60)
    await server.hub.housekeep()
    assert (await server.http.get(f"/api/sessions/{sid}")).json()["is_active"] is True
    server.clock.advance(2 * 60)
    # Reported as expired even before the sweeper marks it...
    details = (await server.http.get(f"/api/sessions/{sid}")).json()
    assert (details["is_active"], details["ended_reason"]) == (False, "expired")
    assert_error(
        await server.http.post(f"/api/sessions/{sid}/join", json={"display_name": "Late"}),
        410,
        "session_ended",
    )
    # ...and persisted by it.
    await server.hub.housekeep()
    record = await server.hub.storage.get_session(uuid.UUID(sid))
    assert (record.is_active, record.ended_reason) == (False, "expired")
    # The token's own exp has passed too now.
    assert_error(
        await server.http.get(
            f"/api/sessions/{sid}/participants", headers=bearer(ann["websocket_token"])
        ),
        401,
        "unauthorized",
    )


async def test_inactivity_with_controlled_clock(server: Running) -> None:
    created = await server.create_session(expires_in_minutes=1440)
    sid = created["session_id"]
    server.clock.advance(3599)
    await server.hub.housekeep()
    assert (await server.http.get(f"/api/sessions/{sid}")).json()["is_active"] is True
    await server.join(sid, "Ann")  # activity resets the clock
    server.clock.advance(3599)
    await server.hub.housekeep()
    assert (await server.http.get(f"/api/sessions/{sid}")).json()["is_active"] is True
    server.clock.advance(2)
    await server.hub.housekeep()
    details = (await server.http.get(f"/api/sessions/{sid}")).json()
    assert (details["is_active"], details["ended_reason"]) == (False, "inactive")


async def test_ended_sessions_are_purged_after_retention(server: Running) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    await server.join(sid, "Ann")
    await server.http.delete(f"/api/sessions/{sid}", headers=bearer(created["creator_token"]))
    await server.hub.housekeep()
    assert (await server.http.get(f"/api/sessions/{sid}")).status_code == 200
    server.clock.advance(86400 + 1)
    await server.hub.housekeep()
    assert_error(await server.http.get(f"/api/sessions/{sid}"), 404, "not_found")


# --- health, docs, routing --------------------------------------------------------------
async def test_health_endpoints(server: Running) -> None:
    assert (await server.http.get("/health/live")).json() == {"status": "ok"}
    assert (await server.http.get("/health/ready")).json() == {"status": "ready", "bus": "local"}
    body = (await server.http.get("/health")).json()
    assert (await server.http.get("/health/detailed")).json().keys() == body.keys()
    assert body["bus"]["kind"] == "local" and body["bus"]["state"] == "local"
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert isinstance(body["version"], str)
    assert body["uptime_s"] >= 0
    assert body["active_sessions"] >= 0


async def test_unknown_route_and_method(server: Running) -> None:
    assert_error(await server.http.get("/api/nothing"), 404, "not_found")
    response = await server.http.put("/api/sessions")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


async def test_nosniff_on_every_kind_of_response(server: Running) -> None:
    created = await server.create_session()
    responses = [
        await server.http.get("/health/live"),
        await server.http.get("/openapi.json"),
        await server.http.get(f"/api/sessions/{created['session_id']}"),
        await server.http.get("/api/nothing"),  # 404
        await server.http.put("/api/sessions"),  # 405
        await server.http.post(
            "/api/sessions", content=b"x", headers={"content-type": "text/plain"}
        ),
        await server.http.get("/"),
        await server.http.get(f"/join/{created['session_id']}"),
        await server.http.get("/join/nope"),  # the 404 page
        await server.http.get("/assets/app.css"),
        await server.http.get("/assets/nothing.js"),
        await server.http.get("/metrics"),
    ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url


async def test_request_id_and_cors(server: Running) -> None:
    response = await server.http.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = await server.http.post("/api/sessions")
    assert len(response.headers["x-request-id"]) == 16
    assert response.headers["access-control-allow-origin"] == "*"


async def test_openapi_document(server: Running) -> None:
    response = await server.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert "/api/sessions/{session_id}/join" in document["paths"]
