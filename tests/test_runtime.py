"""The session runtime under trio's autojump clock.

The hub runs on the in-memory storage adapter (a database round trip would let the mock
clock jump; the adapter keeps the persistence paths: sessions are created and joined in
storage and loaded lazily by the first connection, departures and ends are persisted),
the server side is the real wsproto handshake and transport (:func:`serve_stream`), the
client is a real trio-websocket client, and the bytes travel over trio's in-memory
streams.  So 30-second retention and 6-hour expiry run in milliseconds,
deterministically.  Every test ends by checking that nothing is left behind: no task,
no connection, no slot.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from locshare._auth import TokenAuthority
from locshare._clock import WallClock
from locshare._config import Config
from locshare.net._wsserver import serve_stream
from locshare.proto._pacing import flush_phase, next_flush_at
from locshare.runtime import Hub, RuntimeSettings, open_hub
from locshare.storage import InMemoryStorage
from locshare.storage._model import JoinStatus, ParticipantRecord, SessionRecord

SECRET = "runtime-test-secret-" + "z" * 40
TTL = 30.0


@dataclass
class Client:
    ws: WebSocketConnection
    user_id: str
    stream: trio.abc.Stream

    async def send(self, kind: str, data: dict[str, Any] | None = None) -> None:
        await self.ws.send_message(orjson.dumps({"type": kind, "data": data or {}}).decode())

    async def location(self, lat: float, lng: float, **extra: Any) -> None:
        await self.send("location_update", {"lat": lat, "lng": lng, **extra})

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            return dict(orjson.loads(await self.ws.get_message()))

    async def next_of(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame of ``kind``, skipping others."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.next(timeout)
                if frame["type"] == kind:
                    return dict(frame["data"])

    async def closed_with(self, timeout: float = 10.0) -> int | None:
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code


@dataclass
class Harness:
    hub: Hub
    storage: InMemoryStorage
    tokens: TokenAuthority
    clock: WallClock
    nursery: trio.Nursery
    clients: list[Client] = field(default_factory=list)

    async def session(
        self, names: list[str], *, expires_in_s: float = 6 * 3600, max_participants: int = 50
    ) -> tuple[SessionRecord, list[ParticipantRecord]]:
        """A session with ``names`` joined, in storage (the first connection loads it)."""
        now = self.clock.now()
        record = await self.storage.create_session(
            session_id=uuid.uuid4(),
            name="Convoy",
            now=now,
            expires_at=now + expires_in_s,
            creator_secret_hash=b"",
            max_participants=max_participants,
        )
        people = [await self.join(record, name) for name in names]
        return record, people

    async def join(self, record: SessionRecord, name: str) -> ParticipantRecord:
        """A join as the REST handler does it: persisted, then published."""
        outcome = await self.storage.join(
            session_id=record.id,
            participant_id=uuid.uuid4(),
            display_name=name,
            avatar_color="#336699",
            now=self.clock.now(),
        )
        assert outcome.status is JoinStatus.JOINED and outcome.participant is not None
        self.hub.participant_joined(outcome.participant)
        return outcome.participant

    def stranger(self, record: SessionRecord, name: str) -> ParticipantRecord:
        """Someone who never joined."""
        now = self.clock.now()
        return ParticipantRecord(uuid.uuid4(), record.id, name, "#336699", now, now, True, None)

    def token(self, record: SessionRecord, participant: ParticipantRecord) -> str:
        return self.tokens.participant_token(
            record.id, participant.id, record.expires_at, self.clock.now()
        )

    async def connect(
        self,
        record: SessionRecord,
        participant: ParticipantRecord,
        *,
        lockstep: bool = False,
        first: bool = True,
        queue: int = 1024,
    ) -> Client:
        pair = (
            trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
        )
        client_stream, server_stream = pair
        self.nursery.start_soon(serve_stream, self.hub, server_stream, 16384)
        ws = await wrap_client_stream(
            self.nursery,
            client_stream,
            "localhost",
            f"/ws?token={self.token(record, participant)}",  # type: ignore[arg-type]
            message_queue_size=queue,
        )
        client = Client(ws, str(participant.id), client_stream)
        self.clients.append(client)
        if first:
            state = await client.next()
            assert state["type"] == "session_state"
        return client

    async def assert_nothing_left(self) -> None:
        with trio.fail_after(10):  # actors finish their close handshakes first
            while self.hub.sessions:
                await trio.sleep(0.05)
        stats = self.hub.index.statistics()
        assert stats.blocks_in_use == 0 and stats.slots_in_use == 0 and stats.fresh_locations == 0
        assert np.isnan(self.hub.index.raw_values()).all()
        assert self.hub._connections_by_address == {}
        assert self.hub.connection_count() == 0
        # Only the hub's own loop is left (plus client tasks of this harness, if any).
        names = [task.name for task in self.hub._nursery.child_tasks]
        assert not any("SessionActor" in name or "Connection" in name for name in names), names


def runtime_settings(**overrides: Any) -> RuntimeSettings:
    """Settings built the one way the server builds them: from a ``Config``."""
    fixed = {k: overrides.pop(k) for k in ("outbox_max_frames",) if k in overrides}
    values: dict[str, Any] = {
        "location_ttl_s": TTL,
        "flush_interval_min_ms": 100,  # a fixed window unless a test moves the bounds
        "flush_interval_max_ms": 100,
        "ws_connections_per_address": 100,
        "ws_connects_per_address_per_min": 100_000,
        "shutdown_grace_s": 2.0,
        **overrides,
    }
    return RuntimeSettings.from_config(Config.load(values, environ={}), **fixed)


@asynccontextmanager
async def running_hub(**overrides: Any) -> AsyncIterator[Harness]:
    settings = runtime_settings(**overrides)
    tokens = TokenAuthority(SECRET)
    clock = WallClock()
    storage = InMemoryStorage()
    async with (
        trio.open_nursery() as nursery,
        open_hub(settings=settings, tokens=tokens, storage=storage, clock=clock) as hub,
    ):
        harness = Harness(hub, storage, tokens, clock, nursery)
        yield harness
        for client in harness.clients:
            await client.ws.aclose()
        nursery.cancel_scope.cancel()


async def end_all(h: Harness) -> None:
    for session_id in list(h.hub.sessions):
        await h.hub.end_session(session_id, "ended")
    with trio.fail_after(30):
        while h.hub.sessions:
            await trio.sleep(0.05)


# --- state and fan-out ---------------------------------------------------------------
async def test_session_state_presence_and_locations(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b_pair = trio.testing.memory_stream_pair()
        h.nursery.start_soon(serve_stream, h.hub, b_pair[1], 16384)
        bws = await wrap_client_stream(
            h.nursery,
            b_pair[0],
            "localhost",
            f"/ws?token={h.token(record, bo)}",
            message_queue_size=1024,
        )  # type: ignore[arg-type]
        b = Client(bws, str(bo.id), b_pair[0])
        h.clients.append(b)
        state = (await b.next())["data"]
        assert state["you"]["user_id"] == str(bo.id)
        assert {p["user_id"]: p["online"] for p in state["participants"]} == {
            str(ann.id): True,
            str(bo.id): True,
        }
        assert state["viewport"] is None
        assert state["limits"]["location_ttl_s"] == TTL
        assert await a.next_of("presence") == {"user_id": str(bo.id), "online": True}

        start = trio.current_time()
        await a.location(52.5, 13.4, accuracy=5, timestamp="2026-11-20T12:00:00.123456Z")
        update = await b.next_of("locations")
        assert trio.current_time() - start <= 0.1 + 1e-6  # within one flush interval
        (entry,) = update["updates"]
        assert entry == {
            "user_id": str(ann.id),
            "lat": 52.5,
            "lng": 13.4,
            "accuracy": 5.0,
            "heading": None,
            "speed": None,
            "timestamp": "2026-11-20T12:00:00.123456Z",
        }
        hint = await b.next_of("viewport")
        assert hint["zoom"] == 17.0 and hint["participants"] == [str(ann.id)]
        await end_all(h)
        await h.assert_nothing_left()


async def test_updates_in_one_window_make_one_frame_latest_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.next_of("presence")
        for i in range(5):
            await a.location(10.0 + i, 20.0)
        await b.location(1.0, 2.0)
        frame = await b.next_of("locations")
        by_user = {u["user_id"]: u for u in frame["updates"]}
        assert len(frame["updates"]) == 2
        assert by_user[str(ann.id)]["lat"] == 14.0
        await end_all(h)
        await h.assert_nothing_left()


async def test_connecting_mid_window_misses_nothing_and_gets_nothing_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann, bo, cy) = await h.session(["Ann", "Bo", "Cy"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.location(1.0, 1.0)
        await trio.testing.wait_all_tasks_blocked()  # the update is pending, window open
        c = await h.connect(record, cy, first=False)
        state = (await c.next())["data"]
        assert state_location(state, ann.id) == {"lat": 1.0, "lng": 1.0}
        assert (await b.next_of("locations"))["updates"][0]["lat"] == 1.0  # the others got it
        await a.location(2.0, 2.0)
        frame = await c.next_of("locations")
        assert [u["lat"] for u in frame["updates"]] == [2.0]  # not 1.0 again
        await end_all(h)
        await h.assert_nothing_left()


def state_location(state: dict[str, Any], user_id: uuid.UUID) -> dict[str, float] | None:
    for person in state["participants"]:
        if person["user_id"] == str(user_id):
            loc = person["location"]
            return None if loc is None else {"lat": loc["lat"], "lng": loc["lng"]}
    raise AssertionError("no such participant")


async def test_flush_window_widens_under_load_and_narrows_when_it_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The sessions' flush timers use the pacer's window: widened by a busy core (fed
    here as the pacing loop would feed it), back to the configured interval once the
    pacing loop has measured an idle core (under autojump: no CPU per virtual second).
    An update leaves at the end of its cell of the session's flush grid."""
    async with running_hub(flush_interval_max_ms=250) as h:
        assert h.hub.pacer.adaptive
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.next_of("presence")
        for _ in range(30):
            h.hub.pacer.observe(cpu_s=0.95, wall_s=1.0)
        assert h.hub.pacer.window_s == 0.25
        phase = flush_phase(record.id.int)

        async def delivered_on_grid(lat: float, lng: float, window_s: float) -> None:
            start = trio.current_time()
            await a.location(lat, lng)
            await b.next_of("locations")
            due = next_flush_at(start, window_s, phase)
            assert trio.current_time() == pytest.approx(due, abs=1e-6)
            assert 0 < due - start <= window_s

        for delay in (0.0, 0.07, 0.13):  # different places within a cell
            await trio.sleep(delay)
            await delivered_on_grid(1.0, 2.0 + delay, 0.25)
        await trio.sleep(10)  # ten pacing rounds of an idle core
        assert h.hub.pacer.window_s == 0.1
        await delivered_on_grid(1.5, 2.5, 0.1)
        await end_all(h)
        await h.assert_nothing_left()


async def test_a_fixed_flush_window_runs_no_pacing_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        assert not h.hub.pacer.adaptive
        names = [task.name for task in h.hub._nursery.child_tasks]
        assert not any("_pace_loop" in name for name in names), names
        assert any("_tick_loop" in name for name in names), names


# --- retention ----------------------------------------------------------------------
async def test_location_is_present_before_ttl_and_gone_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    eps = 0.05
    async with running_hub() as h:
        record, (ann, bo, cy) = await h.session(["Ann", "Bo", "Cy"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        received_at = trio.current_time()  # autojump: no time passes until all wait
        await a.location(48.0, 2.0)
        await b.next_of("locations")
        await trio.sleep_until(received_at + TTL - eps)
        c = await h.connect(record, cy, first=False)
        state = (await c.next())["data"]
        assert state_location(state, ann.id) == {"lat": 48.0, "lng": 2.0}
        stale = await b.next_of("participant_stale")
        assert stale["user_id"] == str(ann.id)
        assert trio.current_time() <= received_at + TTL + eps
        assert np.isnan(h.hub.index.raw_values()).all()  # overwritten, no copy left
        await c.ws.aclose()
        c2 = await h.connect(record, cy, first=False)
        state = (await c2.next())["data"]
        person = next(p for p in state["participants"] if p["user_id"] == str(ann.id))
        assert person["location"] is None and person["stale"] is True
        await end_all(h)
        await h.assert_nothing_left()


# --- session end and deadlines ------------------------------------------------------
async def test_ending_a_session_closes_every_socket_with_4000(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, people = await h.session([f"p{i}" for i in range(5)])
        clients = [await h.connect(record, p) for p in people]
        other_record, (other,) = await h.session(["Other"])
        survivor = await h.connect(other_record, other)
        await h.hub.end_session(record.id, "ended")
        for client in clients:
            assert (await client.next_of("session_ended")) == {"reason": "ended"}
            assert await client.closed_with() == 4000
        with trio.fail_after(5):
            while record.id in h.hub.sessions:
                await trio.sleep(0.01)
        await survivor.send("ping")
        assert "server_time" in await survivor.next_of("pong")  # other sessions unaffected
        await end_all(h)
        await h.assert_nothing_left()


async def test_session_expires_at_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann,) = await h.session(["Ann"], expires_in_s=6 * 3600)
        a = await h.connect(record, ann)
        start = trio.current_time()
        for _ in range(int(6 * 3600 / 60)):  # stay active: one update per minute
            await a.location(1.0, 1.0)
            await trio.sleep(60)
            if not h.hub.sessions:
                break
        assert (await a.next_of("session_ended")) == {"reason": "expired"}
        assert await a.closed_with() == 4000
        assert trio.current_time() - start == pytest.approx(6 * 3600, abs=61)
        await h.assert_nothing_left()


async def test_session_ends_after_inactivity(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub(inactivity_timeout_s=3600.0) as h:
        record, (ann,) = await h.session(["Ann"])
        a = await h.connect(record, ann)
        start = trio.current_time()
        assert (await a.next_of("session_ended", timeout=4000)) == {"reason": "inactive"}
        assert trio.current_time() - start == pytest.approx(3600, abs=1)
        await h.assert_nothing_left()


async def test_idle_session_unloads_from_memory(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub(idle_unload_s=120.0) as h:
        record, (ann,) = await h.session(["Ann"])
        a = await h.connect(record, ann)
        await a.location(5.0, 5.0)
        await a.next_of("locations")
        await a.ws.aclose()
        with trio.fail_after(200):
            while h.hub.sessions:
                await trio.sleep(1)
        await h.assert_nothing_left()


# --- connections --------------------------------------------------------------------
async def test_reconnect_replaces_the_old_socket_with_4001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        b = await h.connect(record, bo)
        old = await h.connect(record, ann)
        await b.next_of("presence")
        new = await h.connect(record, ann)
        assert await old.closed_with() == 4001
        await new.location(3.0, 3.0)
        assert (await b.next_of("locations"))["updates"][0]["lat"] == 3.0
        actor = h.hub.sessions[record.id]
        assert len(actor.fanout) == 2
        await end_all(h)
        await h.assert_nothing_left()


async def test_a_vanished_client_is_cleaned_up(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.next_of("presence")
        # Half a frame (header of a 4 KiB masked text frame), then the stream dies.
        await b.stream.send_all(b"\x81\xfe\x10\x00\x01\x02")
        await b.stream.aclose()
        assert await a.next_of("presence") == {"user_id": str(bo.id), "online": False}
        actor = h.hub.sessions[record.id]
        assert [actor.members[c.member.id].display_name for c in actor.fanout] == ["Ann"]
        await end_all(h)
        await h.assert_nothing_left()


async def test_a_client_that_never_reads(autojump_clock: trio.testing.MockClock) -> None:
    """It delays nobody by more than one flush interval, its queue stays bounded,
    and it is disconnected after the slow-client timeout."""
    async with running_hub(slow_client_timeout_s=30.0, outbox_max_frames=16) as h:
        record, people = await h.session([f"p{i}" for i in range(4)])
        sleeper_person, sender_person, *watchers = people
        # Lockstep stream (no buffer) and a one-message client queue: once one frame
        # sits unread in its queue, the client stops reading the stream altogether.
        sleeper = await h.connect(record, sleeper_person, lockstep=True, queue=1)
        sender = await h.connect(record, sender_person)
        readers = [await h.connect(record, p) for p in watchers]
        actor = h.hub.sessions[record.id]
        sleeper_conn = sleeper_person_connection(actor, sleeper_person.id)
        del sleeper  # never read again
        delays = []
        for i in range(60):
            sent = trio.current_time()
            await sender.location(10.0 + i * 0.01, 10.0)
            for reader in readers:
                await reader.next_of("locations")
            delays.append(trio.current_time() - sent)
            await trio.sleep(0.4)
            stats = sleeper_conn.statistics()
            assert stats.queued <= 16
        assert max(delays) <= 0.1 + 1e-6
        assert sleeper_conn.statistics().coalesced > 0
        with trio.fail_after(60):
            while sleeper_conn in actor.fanout:
                await trio.sleep(1)
        assert h.hub.stats.slow_disconnects == 1
        await end_all(h)
        await h.assert_nothing_left()


def sleeper_person_connection(actor: Any, user_id: uuid.UUID) -> Any:
    connection = actor.fanout.current(user_id)
    assert connection is not None
    return connection


# --- bad input ----------------------------------------------------------------------
async def test_bad_messages_get_errors_and_the_connection_survives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.next_of("presence")
        cases = [
            ("{", "malformed_message"),
            ('{"type": "teleport"}', "unknown_type"),
            ('{"type": "location_update", "data": {"lat": 91, "lng": 0}}', "invalid_location"),
            ('{"type": "location_update", "data": {"lat": "x", "lng": 0}}', "invalid_location"),
            ('{"type": "viewport_size", "data": {"width": 1}}', "malformed_message"),
        ]
        for raw, code in cases:
            await b.ws.send_message(raw)
            error = await b.next_of("error")
            assert error["code"] == code
            await trio.sleep(0.2)  # stay under the message rate limit
        await b.ws.send_message(b"\x00binary")
        assert (await b.next_of("error"))["code"] == "malformed_message"
        await b.location(7.0, 7.0)  # still healthy
        assert (await a.next_of("locations"))["updates"][0]["lat"] == 7.0
        await end_all(h)
        await h.assert_nothing_left()


async def test_oversized_message_closes_with_1009(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.next_of("presence")
        await b.ws.send_message("x" * 20000)
        assert await b.closed_with() == 1009
        assert await a.next_of("presence") == {"user_id": str(bo.id), "online": False}
        await a.send("ping")
        await a.next_of("pong")
        await end_all(h)
        await h.assert_nothing_left()


async def test_rate_limit(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.next_of("presence")
        for i in range(30):  # all at one instant: 10 allowed
            await b.location(float(i), 0.0)
        assert (await b.next_of("error"))["code"] == "rate_limited"
        frame = await a.next_of("locations")
        assert frame["updates"][0]["lat"] == 9.0  # the 11th and later were dropped
        assert h.hub.stats.rate_limited == 20
        await trio.sleep(1.0)
        await b.location(50.0, 0.0)  # refilled
        assert (await a.next_of("locations"))["updates"][0]["lat"] == 50.0
        await end_all(h)
        await h.assert_nothing_left()


async def rejected(h: Harness, token: str) -> ConnectionRejected:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    h.nursery.start_soon(serve_stream, h.hub, server_stream, 16384)
    refusals: list[ConnectionRejected] = []
    try:
        async with trio.open_nursery() as nursery:
            await wrap_client_stream(nursery, client_stream, "localhost", f"/ws?token={token}")  # type: ignore[arg-type]
    except* ConnectionRejected as group:
        refusals.extend(e for e in group.exceptions if isinstance(e, ConnectionRejected))
    assert refusals, "the connection was accepted"
    return refusals[0]


async def test_refused_tokens(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (_ann,) = await h.session(["Ann"])
        stranger = h.stranger(record, "Stranger")  # never joined
        creator, _ = h.tokens.creator_token(record.id, record.expires_at, h.clock.now())
        for token in ("", "garbage", h.token(record, stranger), creator):
            refusal = await rejected(h, token)
            assert refusal.status_code == 401
            assert orjson.loads(refusal.body or b"{}")["error"]["code"] == "unauthorized"
        await end_all(h)
        await h.assert_nothing_left()


# --- membership changes -------------------------------------------------------------
async def test_leave_over_the_socket(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.next_of("presence")
        await b.location(1.0, 1.0)
        await a.next_of("locations")
        await b.send("leave")
        assert await b.closed_with() == 1000
        assert await a.next_of("participant_left") == {"user_id": str(bo.id), "reason": "left"}
        actor = h.hub.sessions[record.id]
        assert str(bo.id) not in {m.id_str for m in actor.members.values()}
        assert h.hub.index.statistics().slots_in_use == 1
        await end_all(h)
        await h.assert_nothing_left()


async def test_concurrent_joins_leaves_and_updates_stay_consistent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, founders = await h.session(["A", "B"])
        watcher = await h.connect(record, founders[0])
        actor = h.hub.sessions[record.id]

        async def churn(i: int) -> None:
            person = await h.join(record, f"c{i}")
            client = await h.connect(record, person)
            for j in range(5):
                await client.location(float(i), float(j))
                await trio.sleep(0.15)
            if i % 2:
                await h.hub.leave(record.id, person.id, reason="removed", close_code=4403)
                assert await client.closed_with() == 4403

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(churn, i)
        assert len(actor.members) == 2 + 15
        assert h.hub.index.statistics().slots_in_use == len(actor.members)
        assert {m.slot for m in actor.members.values()} == {
            s for s, m in enumerate(actor.by_slot) if m is not None
        }
        for slot, member in enumerate(actor.by_slot):
            assert member is None or member.slot == slot
        del watcher
        await end_all(h)
        await h.assert_nothing_left()


async def test_viewport_size_refits_hints(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await a.location(52.50, 13.40)
        await b.location(52.52, 13.45)
        phone = await a.next_of("viewport")
        assert set(phone["participants"]) == {str(ann.id), str(bo.id)}
        await a.send("viewport_size", {"width": 2560, "height": 1440, "padding": 20})
        desktop = await a.next_of("viewport")
        assert desktop["bbox"] == phone["bbox"]
        assert desktop["zoom"] > phone["zoom"]
        await end_all(h)
        await h.assert_nothing_left()


async def test_shutdown_sends_1001(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        clients = [await h.connect(record, ann), await h.connect(record, bo)]
        await h.hub.shutdown(5.0)
        for client in clients:
            assert await client.closed_with() == 1001
        await h.assert_nothing_left()


# --- update intervals (issue 15) ------------------------------------------------------
async def test_intervals_follow_who_is_watching(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        # Alone: nobody else has the map on screen.
        assert await a.next_of("update_interval") == {"seconds": 30.0, "reason": "nobody_watching"}
        b = await h.connect(record, bo)
        # Bo's map is on screen: Ann is watched, and asked for a fix at once.
        assert await a.next_of("update_interval") == {"seconds": 2.0, "reason": "watched"}
        assert await b.next_of("update_interval") == {"seconds": 2.0, "reason": "watched"}
        # Bo hides his map: Ann slows down (Bo stays watched: Ann's map is visible).
        await b.send("visibility", {"visible": False})
        assert await a.next_of("update_interval") == {"seconds": 30.0, "reason": "nobody_watching"}
        await trio.sleep(10)  # past the locate_now rate limit
        shown = trio.current_time()
        await b.send("visibility", {"visible": True})
        assert await a.next_of("locate_now") == {}
        assert await a.next_of("update_interval") == {"seconds": 2.0, "reason": "watched"}
        assert trio.current_time() - shown < 1.0  # a speed-up reaches them within 1 s
        await end_all(h)
        await h.assert_nothing_left()


async def test_a_still_participant_is_asked_less_often_until_they_move(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        await h.connect(record, bo)
        assert (await a.next_of("update_interval"))["reason"] == "nobody_watching"
        assert (await a.next_of("update_interval"))["reason"] == "watched"
        start = trio.current_time()
        for i in range(40):  # every 2 s, within 5 m
            await a.location(48.0 + (i % 2) * 0.00004, 11.0)
            await trio.sleep(2.0)
            actor = h.hub.sessions[record.id]
            if actor.fanout.current(ann.id).interval_sent[1] == "stationary":  # type: ignore[union-attr]
                break
        assert await a.next_of("update_interval") == {"seconds": 10.0, "reason": "stationary"}
        assert 60.0 <= trio.current_time() - start <= 64.0
        # No anchor is older than the location TTL, ever.
        anchor = actor.stillness[ann.id]
        assert anchor.anchor_at is not None and trio.current_time() - anchor.anchor_at < TTL
        await a.location(48.001, 11.0)  # 110 m away: moving again, at once
        assert await a.next_of("update_interval") == {"seconds": 2.0, "reason": "watched"}
        await end_all(h)
        await h.assert_nothing_left()


async def test_locate_now_is_rate_limited_per_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await trio.sleep(6)
        for _ in range(20):  # toggling as fast as the message budget allows
            await b.send("visibility", {"visible": False})
            await b.send("visibility", {"visible": True})
            await trio.sleep(0.25)
        await a.send("ping", {"id": "barrier"})
        frames = []
        while True:
            frame = await a.next()
            if frame["type"] == "pong":
                break
            frames.append(frame["type"])
        assert 1 <= frames.count("locate_now") <= 2  # 5 s of toggling: at most one per 5 s
        await end_all(h)
        await h.assert_nothing_left()


async def test_a_hidden_map_gets_no_positions_then_the_present_when_shown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While Bo's map is hidden he is sent no ``locations`` and no ``viewport`` (nobody
    looks at them: no write per flush, no data for the phone) but every other event;
    shown again, he gets one catch-up with the fresh positions at once."""
    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        a = await h.connect(record, ann)
        b = await h.connect(record, bo)
        await b.send("visibility", {"visible": False})
        await trio.sleep(0.5)
        for i in range(3):
            await a.location(48.0 + i * 0.001, 11.0)
            await trio.sleep(2.0)
            assert (await a.next_of("locations"))["updates"][0]["lat"] == 48.0 + i * 0.001
        await a.send("set_status", {"status": "break"})
        assert (await a.next_of("status"))["status"] == "break"
        await b.send("ping", {"id": "barrier"})
        seen = []
        while (frame := await b.next())["type"] != "pong":
            seen.append(frame["type"])
        assert "status" in seen
        assert "locations" not in seen and "viewport" not in seen, seen
        # A call for help: the hidden map gets the present first, for the alert.
        await a.send("set_status", {"status": "need_help", "text": "flat tyre"})
        present = await b.next()  # first the positions (and a hint), then the alert
        assert present["type"] == "locations"
        assert [u["lat"] for u in present["data"]["updates"]] == [48.002]
        assert (await b.next())["type"] == "viewport"
        assert (await b.next())["type"] == "status"
        await a.location(48.003, 11.0)  # and then nothing more while hidden
        await trio.sleep(2.0)
        await b.send("ping", {"id": "barrier 2"})
        seen = []
        while (frame := await b.next())["type"] != "pong":
            seen.append(frame["type"])
        assert "locations" not in seen, seen
        shown = trio.current_time()
        await b.send("visibility", {"visible": True})
        caught_up = await b.next_of("locations")
        assert trio.current_time() - shown < 0.1
        assert [(u["user_id"], u["lat"]) for u in caught_up["updates"]] == [(str(ann.id), 48.003)]
        # Visible again: positions flow as before.
        await a.location(48.01, 11.0)
        assert (await b.next_of("locations"))["updates"][0]["lat"] == 48.01
        await end_all(h)
        await h.assert_nothing_left()


async def test_bad_visibility_messages(autojump_clock: trio.testing.MockClock) -> None:
    async with running_hub() as h:
        record, (ann,) = await h.session(["Ann"])
        a = await h.connect(record, ann)
        for bad in ("yes", 1, None, [True]):
            await a.send("visibility", {"visible": bad})
            assert (await a.next_of("error"))["code"] == "malformed_message"
            await trio.sleep(0.2)
        await a.send("visibility", {"visible": False, "extra": "ignored"})  # Rule 3
        await a.send("ping", {"id": 1})
        assert (await a.next_of("pong"))["id"] == 1
        await end_all(h)
        await h.assert_nothing_left()


async def test_positions_from_other_nodes_that_are_old_or_stale_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A link to Redis that comes back can deliver what a dead connection held: a
    position older than the member's last one, or older than the TTL, changes nothing
    (found by the partition benchmark: entries up to 15 s old after the heal)."""
    from locshare.runtime._events import Located, LocatedBatch

    async with running_hub() as h:
        record, (ann, bo) = await h.session(["Ann", "Bo"])
        b = await h.connect(record, bo)
        actor = h.hub.sessions[record.id]

        def remote(lat: float, age_s: float) -> LocatedBatch:
            wall = h.clock.now() - age_s
            now = trio.current_time() - age_s
            return LocatedBatch(
                "other-node", (Located(ann.id, lat, 7.0, None, None, None, None, now, wall),)
            )

        actor.post(remote(45.0, 1.0))
        assert (await b.next_of("locations"))["updates"][0]["lat"] == 45.0

        async def frames_after(event: LocatedBatch) -> list[str]:
            actor.post(event)
            await trio.sleep(1.0)
            await b.send("ping", {"id": "x"})
            frames = []
            while (frame := await b.next())["type"] != "pong":
                frames.append(frame["type"])
            return frames

        # Older than the one applied; older than the TTL: neither is news.
        assert "locations" not in await frames_after(remote(46.0, 2.0))
        assert "locations" not in await frames_after(remote(47.0, TTL + 1))
        assert actor.members[ann.id].location_at is not None
        assert h.clock.now() - actor.members[ann.id].location_at < 3.0
        actor.post(remote(48.0, 0.0))
        assert (await b.next_of("locations"))["updates"][0]["lat"] == 48.0
        await end_all(h)
        await h.assert_nothing_left()
