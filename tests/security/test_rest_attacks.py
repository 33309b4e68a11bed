"""REST attacks found by the security review (locshare issue 12), kept as regression
tests against a real server and a real PostgreSQL.

1. Names that lie about themselves: bidi overrides ("\\u202egpj.exe" reads "exe.jpg"),
   names made only of invisible characters -> 422 naming the field, nothing stored.
2. Cross-site "simple" requests: a text/plain or form body to a JSON endpoint -> 415,
   nothing created.
3. 429 (and 503) without Retry-After: clients retried blindly.
4. Responses without ``X-Content-Type-Options: nosniff``.
5. Valid JSON called invalid: a number beyond a double -> 422 for a known field,
   ignored in an unknown one (REST and WebSocket).
6. Purged names still readable in PostgreSQL's heap files.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, wrap_client_stream

from tests import pgfiles
from tests.conftest import Running
from tests.net.test_websocket import connect

JSON = {"content-type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def count_rows(server: Running, table: str) -> int:
    async def job(con: Any) -> int:
        return int(await con.fetchval(f"SELECT count(*) FROM {table}"))  # table: a fixed name

    return await server.hub.storage._run(job)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return dict(error)


# --- 1. names ---------------------------------------------------------------------------
LYING_NAMES = [
    "\u202egpj.exe",  # RIGHT-TO-LEFT OVERRIDE
    "Ann\u2066\u202e",  # an isolate and an override at the end
    "\u200f\u200e",
    "\u200b",  # ZERO WIDTH SPACE
    "\u200b\u200c\u200d\u2060\ufeff",
    "\u3164",  # HANGUL FILLER
    "\u115f\u1160\uffa0",
    "\u2800",  # BRAILLE PATTERN BLANK
    "\u0301\u0301",  # combining marks with no base
    "\u200bAnn",  # a look-alike of "Ann"
]


@pytest.mark.parametrize("name", LYING_NAMES)
async def test_lying_display_names_are_refused(server: Running, name: str) -> None:
    with trio.fail_after(20):
        created = await server.create_session()
        sid = created["session_id"]
        honest = await server.join(sid, "Ann")
        response = await server.http.post(f"/api/sessions/{sid}/join", json={"display_name": name})
        assert assert_error(response, 422, "invalid_request")["field"] == "display_name"
        people = (
            await server.http.get(
                f"/api/sessions/{sid}/participants", headers=bearer(honest["websocket_token"])
            )
        ).json()["participants"]
        assert [p["display_name"] for p in people] == ["Ann"]


@pytest.mark.parametrize("name", LYING_NAMES)
async def test_lying_session_names_are_refused(server: Running, name: str) -> None:
    with trio.fail_after(20):
        before = await count_rows(server, "sessions")
        response = await server.http.post("/api/sessions", json={"name": name})
        assert assert_error(response, 422, "invalid_request")["field"] == "name"
        assert await count_rows(server, "sessions") == before


# --- 2. bodies that are not JSON ----------------------------------------------------------
SIMPLE_REQUEST_BODIES = [
    ("text/plain", b'{"display_name": "Mallory"}'),
    ("text/plain;charset=UTF-8", b'{"name": "Mallory"}'),
    ("application/x-www-form-urlencoded", b"display_name=Mallory&name=Mallory"),
    (
        "multipart/form-data; boundary=xx",
        b'--xx\r\nContent-Disposition: form-data; name="a"\r\n\r\nMallory\r\n--xx--\r\n',
    ),
]


@pytest.mark.parametrize(("content_type", "content"), SIMPLE_REQUEST_BODIES)
async def test_cross_site_simple_requests_are_415_and_create_nothing(
    server: Running, content_type: str, content: bytes
) -> None:
    with trio.fail_after(20):
        created = await server.create_session()
        sid = created["session_id"]
        sessions, participants = (
            await count_rows(server, "sessions"),
            await count_rows(server, "participants"),
        )
        for url in ("/api/sessions", f"/api/sessions/{sid}/join"):
            response = await server.http.post(
                url,
                content=content,
                headers={"content-type": content_type, "origin": "https://evil.example"},
            )
            assert_error(response, 415, "unsupported_media_type")
        assert await count_rows(server, "sessions") == sessions
        assert await count_rows(server, "participants") == participants
        # A JSON client is unaffected, and a bodiless create still works.
        assert (await server.http.post("/api/sessions")).status_code == 201
        await server.join(sid, "Ann")


# --- 3. Retry-After -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "server_overrides",
    [{"sessions_per_address_per_min": 2, "joins_per_session_per_min": 2}],
)
async def test_every_429_carries_retry_after(server: Running) -> None:
    with trio.fail_after(20):
        statuses = [(await server.http.post("/api/sessions")).status_code for _ in range(3)]
        assert statuses == [201, 201, 429]
        refused = await server.http.post("/api/sessions")
        assert 1 <= int(refused.headers["retry-after"]) <= 30  # 2 per minute: one per 30 s
        async with httpx.AsyncClient(
            base_url=server.base,
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
            timeout=10,
        ) as other:
            sid = (await other.post("/api/sessions")).json()["session_id"]
        for name in ("A", "B"):
            await server.join(sid, name)
        refused = await server.http.post(f"/api/sessions/{sid}/join", json={"display_name": "C"})
        assert_error(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 30


@pytest.mark.parametrize("server_overrides", [{"ws_connections_per_address": 1}])
@pytest.mark.parametrize("single_port", [False, True], ids=["ws-port", "rest-port"])
async def test_websocket_429_carries_retry_after(server: Running, single_port: bool) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    ann, bo = await server.join(sid, "Ann"), await server.join(sid, "Bo")
    port = server.info.port if single_port else server.info.ws_port
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await connect(server, nursery, ann, single_port)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            refusals: list[ConnectionRejected] = []
            try:
                async with trio.open_nursery() as inner:
                    await wrap_client_stream(
                        inner, stream, "127.0.0.1", f"/ws?token={bo['websocket_token']}"
                    )
            except* ConnectionRejected as group:
                refusals.extend(e for e in group.exceptions if isinstance(e, ConnectionRejected))
            finally:
                await stream.aclose()
            assert refusals and refusals[0].status_code == 429
            headers = {k.lower(): v for k, v in refusals[0].headers}
            assert int(headers[b"retry-after"]) >= 1
            assert headers[b"x-content-type-options"] == b"nosniff"
            nursery.cancel_scope.cancel()


# --- 4. nosniff -------------------------------------------------------------------------------
async def test_nosniff_on_responses_and_errors(server: Running) -> None:
    with trio.fail_after(20):
        created = await server.create_session()
        sid = created["session_id"]
        for response in (
            await server.http.post("/api/sessions"),
            await server.http.get(f"/api/sessions/{sid}"),
            await server.http.get("/api/sessions/not-a-uuid"),  # 404
            await server.http.post(f"/api/sessions/{sid}/join", json={"display_name": ""}),  # 422
            await server.http.post(f"/api/sessions/{sid}/join", content=b"{", headers=JSON),  # 400
            await server.http.delete(f"/api/sessions/{sid}"),  # 401
            await server.http.post("/api/sessions", content=b"x" * 20000, headers=JSON),  # 413
            await server.http.patch("/api/sessions"),  # 405
            await server.http.get("/nowhere"),  # 404 outside the API
            await server.http.get(f"/join/{sid}"),  # a page
            await server.http.get("/assets/common.js"),  # an asset
            await server.http.get("/metrics"),
        ):
            assert response.headers.get("x-content-type-options") == "nosniff", (
                response.request.method,
                response.url,
                response.status_code,
            )


# --- 5. numbers beyond a double ---------------------------------------------------------------
async def test_huge_numbers_are_422_for_known_fields_and_ignored_otherwise(
    server: Running,
) -> None:
    with trio.fail_after(20):
        huge = b"9" * 400  # valid JSON; beyond a double (orjson refuses it)
        for body, field in (
            (b'{"max_participants": ' + huge + b"}", "max_participants"),
            (b'{"expires_in_minutes": -1e999}', "expires_in_minutes"),
            (b'{"max_participants": ' + b"1" * 5000 + b"}", "max_participants"),
        ):
            response = await server.http.post("/api/sessions", content=body, headers=JSON)
            assert assert_error(response, 422, "invalid_request")["field"] == field
        response = await server.http.post(
            "/api/sessions", content=b'{"name": "Trip", "extra": ' + huge + b"}", headers=JSON
        )
        assert response.status_code == 201, response.text
        sid = response.json()["session_id"]
        response = await server.http.post(
            f"/api/sessions/{sid}/join",
            content=b'{"display_name": "Ann", "x": [1e400, -1e400]}',
            headers=JSON,
        )
        assert response.status_code == 201, response.text


@pytest.mark.parametrize("single_port", [False, True], ids=["ws-port", "rest-port"])
async def test_huge_numbers_over_websocket_are_invalid_location(
    server: Running, single_port: bool
) -> None:
    created = await server.create_session()
    sid = created["session_id"]
    mallory, ann = await server.join(sid, "Mallory"), await server.join(sid, "Ann")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            attacker = await connect(server, nursery, mallory, single_port)
            honest = await connect(server, nursery, ann, single_port)
            for raw in (
                '{"type":"location_update","data":{"lat":1e400,"lng":0}}',
                '{"type":"location_update","data":{"lat":0,"lng":-' + "9" * 5000 + "}}",
            ):
                await attacker.ws.send_message(raw)
                error = await attacker.next_of("error")
                assert error["code"] == "invalid_location", error
            # An unknown field with a huge number is ignored: the update goes through.
            await attacker.ws.send_message(
                '{"type":"location_update","data":{"lat":1.5,"lng":2.5,"x":1e400}}'
            )
            updates = (await honest.next_of("locations"))["updates"]
            assert [(u["user_id"], u["lat"]) for u in updates] == [(mallory["user_id"], 1.5)]
            # The honest client kept receiving and sharing.
            await honest.send("location_update", {"lat": 3.0, "lng": 4.0})
            while True:
                updates = (await attacker.next_of("locations"))["updates"]
                mine = [u for u in updates if u["user_id"] == ann["user_id"]]
                if mine:
                    assert mine[0]["lat"] == 3.0
                    break
            nursery.cancel_scope.cancel()


# --- 6. purged names on disk ----------------------------------------------------------------
@pytest.mark.parametrize("server_overrides", [{"ended_retention_s": 0}])
async def test_purged_names_are_not_left_in_the_heap_files(server: Running) -> None:
    with trio.fail_after(60):
        session_name = f"secret-trip-{secrets.token_hex(8)}"
        display_name = f"secret-person-{secrets.token_hex(8)}"
        created = await server.create_session(name=session_name)
        sid = created["session_id"]
        await server.join(sid, display_name)
        storage = server.hub.storage
        before = await pgfiles.table_files(storage)
        await pgfiles.checkpoint(storage)
        for name in (session_name, display_name):
            assert pgfiles.files_containing(before, name.encode()), "the check cannot see names"
        response = await server.http.delete(
            f"/api/sessions/{sid}", headers=bearer(created["creator_token"])
        )
        assert response.status_code == 204
        await server.hub.housekeep()  # retention 0: purged now
        assert (await server.http.get(f"/api/sessions/{sid}")).status_code == 404
        await pgfiles.checkpoint(storage)
        after = await pgfiles.table_files(storage)
        for name in (session_name, display_name):
            assert pgfiles.files_containing(before + after, name.encode()) == [], name
        assert (await server.http.get("/health/ready")).status_code == 200
