"""The realistic scenario's load worker (:mod:`benchmarks._realistic` describes the
workload): people who move, show or hide the map, join and leave, and clients that
follow the server's pace (the ``adaptive`` leg) or not (``fixed``).

It is :class:`benchmarks._load.Worker` with these differences:

* **Pacing.** Each connection has its own interval (the last ``update_interval`` it got,
  in the adaptive leg; 2 s in the fixed one) and its next due time, in a heap ordered
  by due time (a rescheduled connection leaves a stale entry behind, skipped when it
  comes up).  The scheduler sleeps until the earliest due time; a connection that
  becomes due sooner (a joiner) wakes it.  A change of interval moves the next fix to
  ``last fix + new interval``, at once if that is past; ``locate_now`` is answered
  with one fix on the spot (from the receive path: the counting receivers read every
  250 ms, well within the second the protocol allows), unless the last fix is younger
  than ``LOCATE_NOW_FRESH_S``: that one is fresh (and two fixes within one flush window
  would be merged by the server, the first one never delivered).  Nothing is sent outside
  ``[t0, t_stop)``.
* **Every** receiver looks at the text frames' first bytes for ``update_interval`` and
  ``locate_now`` (a prefix test; both are rare); timing receivers also keep their
  screen: the latest fix time and speed of every member.
* **The viewers' screens**: every ``AGE_SAMPLE_S`` the timing receivers with the map
  on screen sample the age of every other member's position whose latest fix was
  moving (``_realistic.age_samples_ms``), sent to the controller with each tick.
* **Joining and leaving**: a task per joiner (REST join, connect, share after a settle
  time) and per leaver (stop sharing a settle time before, then ``leave``), so that
  every steady receiver must get every update (the delivery ratio stays exact).
"""

from __future__ import annotations

import array
import heapq
import math
import random
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any, Final, cast

import orjson
import trio

from . import _load
from . import _realistic as r
from . import _wire as w

UPDATE_INTERVAL_PREFIX: Final = b'{"type":"update_interval"'
LOCATE_NOW_PREFIX: Final = b'{"type":"locate_now"'
VISIBILITY_HIDDEN: Final = orjson.dumps({"type": "visibility", "data": {"visible": False}})
LEAVE: Final = b'{"type":"leave"}'
NOISE_SEED_XOR: Final = 0x6E015E


class RealConn(_load.Conn):
    """A participant with a movement, a screen and its own pace."""

    __slots__ = (
        "due",
        "interval_s",
        "joined_at",
        "last_sent",
        "latest",
        "left_at",
        "mover",
        "reason",
        "reason_since",
    )

    def __init__(
        self, p: _load.Participant, rng: random.Random, mover: r.Mover, interval_s: float
    ) -> None:
        super().__init__(p, rng)
        self.mover = mover
        self.interval_s = interval_s
        self.due = math.inf  # the next fix (inf: none scheduled)
        self.last_sent: float | None = None
        self.joined_at: float | None = None  # joiners: when session_state arrived
        self.left_at: float | None = None
        # The screen: user id -> fix time of the latest position received.
        self.latest: dict[str, float] = {}
        self.reason: str | None = None  # the last update_interval's reason
        self.reason_since = 0.0


class RealisticWorker(_load.Worker):
    def __init__(self, plan: _load.WorkerPlan, pipe: Connection) -> None:
        assert plan.realistic is not None
        self.spec = plan.realistic
        super().__init__(plan, pipe)
        self.heap: list[tuple[float, int, RealConn]] = []
        self.seq = 0
        self.sleeping_until = math.inf
        self.pace_sleep = trio.CancelScope()
        self.ages = array.array("f")
        self.counts: Counter[str] = Counter()
        self.intervals: Counter[str] = Counter()
        self.reason_s: Counter[str] = Counter()  # participant-seconds at each reason
        self.sent_by_reason: Counter[str] = Counter()  # fixes sent at each reason
        self.noise = random.Random(plan.seed ^ NOISE_SEED_XOR)
        self.places_sent: set[int] = set()
        self.moving_until = dict(self.spec.moving_until)  # joiners added as they appear
        self.viewers = [c for c in self._real() if c.p.decode and not c.mover.hidden]

    def new_conn(self, p: _load.Participant) -> _load.Conn:
        return RealConn(p, self.rng, self.spec.movers[p.index], self.plan.interval_s)

    def _real(self) -> list[RealConn]:
        return cast(list[RealConn], self.conns)

    def _frame(self, payload: bytes) -> bytes:
        return w.ws_frame(payload, self.codec._mask())

    def _tick(self) -> _load.Tick:
        tick = super()._tick()
        ages, self.ages = self.ages, array.array("f")
        tick.age_ms = ages.tobytes()
        return tick

    # --- connecting: the map hidden, the meeting point ---------------------------------
    async def _open(self, c: _load.Conn) -> None:
        await super()._open(c)
        self._greet(cast(RealConn, c))

    def _greet(self, c: RealConn) -> None:
        """Right after connecting: the map hidden, and the meeting point (its group's
        first member, once)."""
        if c.mover.hidden and self.spec.obey:  # the fixed leg's clients know no visibility
            self._write(c, self._frame(VISIBILITY_HIDDEN))
        centre = self.spec.places.get(c.p.index)
        if centre is not None and c.p.index not in self.places_sent:
            self.places_sent.add(c.p.index)
            place = {
                "name": f"meet {c.p.session}",
                "kind": "meet",
                "lat": round(centre[0], 7),
                "lng": round(centre[1], 7),
                "radius_m": r.MEET_RADIUS_M,
            }
            if self._write(c, self._frame(orjson.dumps({"type": "place_add", "data": place}))):
                self.counts["places_added"] += 1

    # --- what the server says -----------------------------------------------------------
    def _text(self, c: _load.Conn, buf: bytes, start: int, end: int) -> None:
        if buf.startswith(UPDATE_INTERVAL_PREFIX, start):
            data = orjson.loads(buf[start:end])["data"]
            self._update_interval(
                cast(RealConn, c), float(data["seconds"]), str(data["reason"]), time.time()
            )
        elif buf.startswith(LOCATE_NOW_PREFIX, start):
            self._locate_now(cast(RealConn, c), time.time())
        elif c.p.decode:
            payload = buf[start:end]
            self._screen(cast(RealConn, c), payload)
            self._check_text(c, payload)

    def _update_interval(self, c: RealConn, seconds: float, reason: str, now: float) -> None:
        self.intervals[reason] += 1
        self._end_reason(c, now)
        c.reason, c.reason_since = reason, now
        if not self.spec.obey:
            return
        c.interval_s = seconds
        if c.due == math.inf:  # not sending (yet): the new interval applies from the start
            return
        due = min(c.due, now + seconds) if c.last_sent is None else c.last_sent + seconds
        if due <= now:
            self._fix(c, now)
        else:
            self._schedule(c, due)

    def _locate_now(self, c: RealConn, now: float) -> None:
        self.counts["locate_now"] += 1
        if not (self.spec.obey and c.due != math.inf and self.t0 <= now < self.t_stop):
            return
        if c.last_sent is not None and now - c.last_sent < r.LOCATE_NOW_FRESH_S:
            self.counts["locate_now_fresh"] += 1  # the fix just sent is the fresh one
            return
        self.counts["locate_now_answered"] += 1
        self._fix(c, now)

    def _screen(self, c: RealConn, payload: bytes) -> None:
        """Keep a timing receiver's screen: session_state's positions, departures; learn
        the joiners' user ids (who moves)."""
        try:
            message = orjson.loads(payload)
            kind, data = message.get("type"), message.get("data") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return
        if kind == "participant_left":
            c.latest.pop(str(data.get("user_id")), None)
        elif kind == "participant_joined":
            self._joiner(data)
        elif kind == "session_state":
            for entry in data.get("participants", []):
                self._joiner(entry)
                location = entry.get("location")
                if location and location.get("timestamp"):
                    c.latest[entry["user_id"]] = w.parse_stamp(location["timestamp"])

    def _joiner(self, participant: dict[str, Any]) -> None:
        until = self.spec.joiner_moving_until.get(str(participant.get("display_name")))
        if until is not None:
            self.moving_until[str(participant["user_id"])] = until

    def _decode_updates(self, c: _load.Conn, payload: bytes, now: float) -> None:
        entries = w.decode_entries(payload, False)
        c.entries += len(entries)
        own = c.user_id
        latest = cast(RealConn, c).latest
        samples = self.latency
        for entry in entries:
            taken = w.parse_stamp(entry["timestamp"])  # type: ignore[arg-type]
            samples.append((now - taken) * 1000.0)
            user_id = cast(str, entry["user_id"])
            if user_id == own:
                c.echoes += 1
            latest[user_id] = taken
        self._check_ids(c, entries)

    # --- sending ----------------------------------------------------------------------
    def _schedule(self, c: RealConn, due: float) -> None:
        c.due = due
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, c))
        if due < self.sleeping_until:
            self.pace_sleep.cancel()

    def _fix(self, c: RealConn, now: float) -> None:
        """Send one fresh fix (where the mover is now, with GPS noise) and schedule the
        next one an interval later."""
        if not (c.sending and c.up and self.t0 <= now < self.t_stop):
            c.due = math.inf
            return
        lat, lng, speed = r.position(c.mover, now - self.t0)
        east = self.noise.gauss(0.0, r.GPS_NOISE_M)
        north = self.noise.gauss(0.0, r.GPS_NOISE_M)
        lat += math.degrees(north / r.EARTH_RADIUS_M)
        lng += math.degrees(east / (r.EARTH_RADIUS_M * math.cos(math.radians(lat))))
        t = time.time()
        update = w.locshare_update(
            lat,
            lng,
            t,
            accuracy=r.FIX_ACCURACY_M,
            heading=round(c.mover.heading_deg, 1) if speed else None,
            speed=round(speed, 2),
        )
        if self._write(c, self._frame(update)):
            c.sent += 1
            c.last_sent = t
            self.sent_by_reason[c.reason or "none"] += 1
        self._schedule(c, t + c.interval_s)

    async def _sender(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pace)
            nursery.start_soon(self._look)
            for c in self._real():
                leave_at = self.spec.leave_at_s.get(c.p.index)
                if leave_at is not None:
                    nursery.start_soon(self._leave, c, leave_at)
            for slot in self.spec.joins:
                nursery.start_soon(self._join, slot)

    async def _pace(self) -> None:
        rng = self.rng
        for c in self._real():
            if c.sending and c.up:  # each at its own phase within its current interval
                self._schedule(c, self.t0 + rng.random() * c.interval_s)
        heap = self.heap
        while True:
            now = time.time()
            if now >= self.t_stop:
                return
            while heap and heap[0][0] <= now:
                due, _, c = heapq.heappop(heap)
                if due == c.due:  # else superseded by a later schedule
                    self._fix(c, now)
            self.sleeping_until = min(heap[0][0] if heap else math.inf, self.t_stop)
            with trio.CancelScope() as self.pace_sleep:
                await trio.sleep(max(_load.SEND_TICK_S, self.sleeping_until - time.time()))

    async def _look(self) -> None:
        """The viewers look at their screens every AGE_SAMPLE_S during the active phase."""
        at = self.t0
        while True:
            at += r.AGE_SAMPLE_S
            if at >= self.t_stop:
                return
            await trio.sleep(max(0.0, at - time.time()))
            now = time.time()
            t_s = now - self.t0
            for c in self.viewers:
                if c.up and not c.closing:
                    self.ages.extend(
                        r.age_samples_ms(c.latest, now, c.user_id, self.moving_until, t_s)
                    )

    # --- joining and leaving --------------------------------------------------------------
    async def _leave(self, c: RealConn, leave_at_s: float) -> None:
        settle = self.plan.settle_s
        await trio.sleep(max(0.0, self.t0 + leave_at_s - settle - time.time()))
        c.sending = False  # a settle time before leaving: every receiver gets the last fix
        c.due = math.inf
        await trio.sleep(settle)
        if not c.up:
            return
        now = time.time()
        self._end_reason(c, now)
        c.reason = None
        c.left_at = now
        c.closing = True
        if self._write(c, self._frame(LEAVE)):
            self.counts["leaves"] += 1
        with trio.move_on_after(_load.CLOSE_TIMEOUT_S):
            while c.sock is not None:
                await trio.sleep(0.05)
        self._detach(c)

    async def _join(self, slot: r.JoinSlot) -> None:
        from .rest import HttpConnection

        settle = self.plan.settle_s
        await trio.sleep(max(0.0, self.t0 + slot.join_at_s - time.time()))
        if time.time() + 2 * settle >= self.t_stop:
            return
        host, port = _load._host_port(self.plan.base_url)
        try:
            stream = await trio.open_tcp_stream(host, port)
            try:
                status, answer = await HttpConnection(stream).request(
                    "POST",
                    f"/api/sessions/{slot.session_id}/join",
                    orjson.dumps({"display_name": slot.name}),
                )
            finally:
                await stream.aclose()
        except OSError as exc:
            self.connect_errors[f"join {_load._describe(exc)}"] += 1
            self.counts["join_failures"] += 1
            return
        if status != 201:
            self.connect_errors[f"join HTTP {status}"] += 1
            self.counts["join_failures"] += 1
            return
        joined = orjson.loads(answer)
        user_id = joined["user_id"]
        self.churn_ids.setdefault(slot.session, []).append(user_id)
        self.rosters.setdefault(slot.session, set()).add(user_id)
        p = _load.Participant(
            index=-1,
            session=slot.session,
            user_id=user_id,
            url=f"{joined['websocket_url']}?token={joined['websocket_token']}",
            decode=slot.decode,
            steady=False,
            sends=True,
        )
        c = RealConn(p, self.rng, slot.mover, self.plan.interval_s)
        c.sending = False
        self.conns.append(c)
        t = time.perf_counter()
        try:
            with trio.fail_after(_load.HANDSHAKE_TIMEOUT_S):
                await self._open(c)
        except (OSError, w.WireError, _load.HandshakeRefused, trio.TooSlowError) as exc:
            c.failed = True
            self.connect_errors[_load._describe(exc)] += 1
            self.counts["join_failures"] += 1
            return
        self.connect_ms.append((time.perf_counter() - t) * 1000)
        c.joined_at = c.opened_at = time.time()
        self.counts["joins"] += 1
        if c.p.decode and not c.mover.hidden:
            self.viewers.append(c)
        # Share only once every steady receiver is sure to get it (benchmarks/README.md).
        await trio.sleep(settle)
        c.sending = True
        self._fix(c, time.time())

    # --- the end ------------------------------------------------------------------------
    def _end_reason(self, c: RealConn, now: float) -> None:
        if c.reason is not None:
            self.reason_s[c.reason] += r.overlap_s(c.reason_since, now, self.t0, self.t_stop)

    def _final(self) -> dict[str, Any]:
        out = super()._final()
        now = time.time()
        participant_s = 0.0
        for c in self._real():
            if c.failed or c.opened_at is None:
                continue
            end = c.left_at or (c.outages[0].down_at if c.outages else now)
            participant_s += r.overlap_s(c.joined_at or c.opened_at, end, self.t0, self.t_stop)
            self._end_reason(c, end)
            c.reason = None
        out["realistic"] = {
            "participant_s": participant_s,
            "reason_s": dict(self.reason_s),
            "sent_by_reason": dict(self.sent_by_reason),
            "intervals": dict(self.intervals),
            "viewers": len(self.viewers),
            **{
                name: self.counts[name]
                for name in (
                    "joins",
                    "join_failures",
                    "leaves",
                    "places_added",
                    "locate_now",
                    "locate_now_answered",
                    "locate_now_fresh",
                )
            },
        }
        return out
