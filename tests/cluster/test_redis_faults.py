"""Redis itself: restarted mid-session, persisting to disk, and what it keeps (issue 13)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import trio

from locshare.cluster._resp import RedisLink
from locshare.errors import BusUnavailable, ConfigError
from tests.cluster.conftest import RedisServer, _spawn, cluster, redis_required, wait_until
from tests.cluster.test_nodes import location_reaches, next_location_of
from tests.conftest import running, server_config
from tests.net.test_websocket import connect


async def test_redis_restarted_mid_session(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Each node keeps serving its own sockets while Redis is away; cross-node delivery
    resumes within 5 s after it returns; the bus state shows in /health/detailed."""
    if redis_server.process is None:
        pytest.skip("needs the private redis-server (it is stopped and started here)")
    async with cluster(database_url, tmp_path, redis_server.url) as (a, b):
        sid = (await a.create_session())["session_id"]
        ann, bo, al = (
            await a.join(sid, "Ann"),
            await b.join(sid, "Bo"),
            await a.join(sid, "Al"),
        )
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                pb = await connect(b, nursery, bo, False)
                pal = await connect(a, nursery, al, False)
                await pa.send("location_update", {"lat": 1.0, "lng": 1.0})
                assert await next_location_of(pb, ann["user_id"]) == 1.0
                redis_server.stop()
                await wait_until(lambda: a.hub.bus.statistics().state == "down", timeout=15)
                detailed = (await a.http.get("/health/detailed")).json()
                assert detailed["bus"]["state"] == "down"
                # Same node: still served.
                await pa.send("location_update", {"lat": 2.0, "lng": 2.0})
                await location_reaches(pal, ann["user_id"], 2.0)
                redis_server.start()
                back = trio.current_time()
                await wait_until(
                    lambda: (
                        a.hub.bus.statistics().state == "up"
                        and b.hub.bus.statistics().state == "up"
                    ),
                    timeout=10,
                )
                # Across nodes again, within 5 s of Redis being back.
                lat = 3.0
                while True:
                    await pa.send("location_update", {"lat": lat, "lng": 3.0})
                    try:
                        if await next_location_of(pb, ann["user_id"], timeout=0.5) == lat:
                            break
                    except trio.TooSlowError:
                        lat += 0.001
                assert trio.current_time() - back < 5.0
                assert a.hub.bus.statistics().reconnects >= 1
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("persist", [["--save", "60 1"], ["--appendonly", "yes"]])
async def test_a_redis_that_persists_is_refused_unless_allowed(
    database_url: str, tmp_path: Path, persist: list[str]
) -> None:
    redis_required()
    directory = Path(tempfile.mkdtemp(prefix="locshare-redis-persist-"))
    sock = directory / "redis.sock"
    process = _spawn(directory, sock, *persist)
    try:
        url = f"unix://{sock}"
        with pytest.raises(BaseException) as info:  # noqa: PT011 - an ExceptionGroup
            async with running(server_config(database_url, tmp_path / "a", redis_url=url)):
                pass
        leaves = _leaves(info.value)
        assert any(isinstance(e, ConfigError) and "persists to disk" in str(e) for e in leaves)
        config = server_config(
            database_url, tmp_path / "b", redis_url=url, redis_allow_persistence=True
        )
        async with running(config) as server:
            detailed = (await server.http.get("/health/detailed")).json()
            assert detailed["bus"]["persistence"] == "allowed"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def test_an_unreachable_redis_stops_the_start(database_url: str, tmp_path: Path) -> None:
    config = server_config(database_url, tmp_path, redis_url=f"unix://{tmp_path / 'no-such.sock'}")
    with trio.fail_after(60), pytest.raises(BaseException) as info:  # noqa: PT011
        async with running(config):
            pass
    assert any(isinstance(e, BusUnavailable) for e in _leaves(info.value))


async def test_no_key_holds_a_coordinate_after_the_ttl(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Channel names and keys carry ids only; after TTL + 1 s, no coordinate remains
    anywhere in Redis (every key scanned, every value read)."""
    ttl = 2.0
    async with cluster(database_url, tmp_path, redis_server.url, location_ttl_s=ttl) as (a, b):
        sid = (await a.create_session(name="Lat 48.137"))["session_id"]
        ann, bo = await a.join(sid, "Ann"), await b.join(sid, "Bo")
        marks = ["48.1371234", "11.5754321", "48.137123", "11.575432"]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                pa = await connect(a, nursery, ann, False)
                pb = await connect(b, nursery, bo, False)
                await pa.send("location_update", {"lat": 48.1371234, "lng": 11.5754321})
                await next_location_of(pb, ann["user_id"])
                await trio.sleep(ttl + 1.0)
                async with await RedisLink.open(redis_server.url) as link:
                    (keys,) = await link.execute((b"KEYS", b"*"))
                    assert isinstance(keys, list) and keys, "the cluster keeps its hosts sets"
                    for key in keys:
                        assert isinstance(key, bytes)
                        assert b"48.13" not in key and b"Ann" not in key
                        (kind,) = await link.execute((b"TYPE", key))
                        if kind == b"set":
                            (members,) = await link.execute((b"SMEMBERS", key))
                            assert isinstance(members, list)
                            values = [m for m in members if isinstance(m, bytes)]
                        else:
                            (dumped,) = await link.execute((b"DUMP", key))
                            values = [dumped if isinstance(dumped, bytes) else b""]
                        for value in values:
                            for mark in marks:
                                assert mark.encode() not in value, (key, value)
                nursery.cancel_scope.cancel()


def test_redis_server_is_on_path_under_ci() -> None:
    """CI installs Debian's redis-server (.ci/run): the cluster tests must not skip there."""
    redis_required()
    binary = shutil.which("redis-server")
    if binary is not None:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
        assert "Redis server" in version.stdout or "Valkey" in version.stdout


async def test_a_redis_with_a_password(database_url: str, tmp_path: Path) -> None:
    """The password in the URL opens both connections (commands and the
    subscription); a wrong one stops the start like an unreachable Redis."""
    redis_required()
    if shutil.which("redis-server") is None:
        pytest.skip("needs a private redis-server")
    directory = Path(tempfile.mkdtemp(prefix="locshare-redis-"))
    sock = directory / "redis.sock"
    process = _spawn(directory, sock, "--requirepass", "s3cret")
    try:
        url = f"unix://{sock}?password=s3cret"
        async with cluster(database_url, tmp_path, url) as (a, b):
            sid = (await a.create_session())["session_id"]
            ann, bo = await a.join(sid, "Ann"), await b.join(sid, "Bo")
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    pa = await connect(a, nursery, ann, False)
                    pb = await connect(b, nursery, bo, False)
                    await pa.send("location_update", {"lat": 1.5, "lng": 2.5})
                    await location_reaches(pb, ann["user_id"], 1.5)
                    nursery.cancel_scope.cancel()
        config = server_config(
            database_url, tmp_path / "wrong", redis_url=f"unix://{sock}?password=nope"
        )
        with trio.fail_after(60), pytest.raises(BaseException) as info:  # noqa: PT011
            async with running(config):
                pass
        assert any(isinstance(e, BusUnavailable) for e in _leaves(info.value))
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
