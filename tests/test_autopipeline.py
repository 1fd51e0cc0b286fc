"""The auto-pipelining transport against a real Redis: batching, order, NOSCRIPT, reconnects."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_sync
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from quota_gateway.autopipeline import AutoPipeline
from quota_gateway.embedded import RedisServer
from quota_gateway.scripts import LuaScript

VALIDATE = LuaScript("apilicense_validate")


@pytest.mark.parametrize("flush_at, expected_writes", [(1000, 1), (4, 125)], ids=["one-write-per-tick", "every-4"])
async def test_calls_in_one_tick_share_writes_and_keep_order(redis_server, flush_at, expected_writes):
    pipe = AutoPipeline(redis_server.url, flush_at=flush_at)
    await pipe.execute("PING")
    writes = pipe.writes
    replies = await asyncio.gather(*(pipe.execute("ECHO", str(i)) for i in range(500)))
    assert replies == [str(i).encode() for i in range(500)]
    assert pipe.writes - writes == expected_writes
    await pipe.aclose()


async def test_errors_reach_only_their_caller(redis_server):
    pipe = AutoPipeline(redis_server.url)
    ok, bad, ok2 = await asyncio.gather(pipe.execute("SET", "ap:k", "1"), pipe.execute("INCR", "ap:k", "x"),
                                        pipe.execute("GET", "ap:k"), return_exceptions=True)
    assert ok == b"OK" and isinstance(bad, ResponseError) and ok2 == b"1"
    await pipe.aclose()


async def test_noscript_after_script_flush_reloads(redis_server):
    pipe = AutoPipeline(redis_server.url)
    redis_sync.Redis.from_url(redis_server.url).script_flush()
    reply = await pipe.run(VALIDATE, ["qg:{b1}:k:x", "qg:{b1}:pending", "qg:{b1}:"],
                           ["t", 0, 1, 1, "20260101", 0, 60, 0, 3600, 0, 86400, 0, 2678400, ""])
    assert reply[0] == b"miss"
    await pipe.aclose()


async def test_redis_restart_fails_in_flight_calls_then_recovers(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    pipe = AutoPipeline(server.url)
    try:
        assert await pipe.execute("PING") == b"PONG"
        blocked = asyncio.ensure_future(pipe.execute("BLPOP", "never", "5"))
        await asyncio.sleep(0.1)
        server.kill()
        with pytest.raises(RedisConnectionError):
            await blocked
        with pytest.raises((RedisConnectionError, OSError)):
            await pipe.execute("PING")  # server down: a clear connection error
        server.start()
        assert await pipe.execute("PING") == b"PONG"
    finally:
        await pipe.aclose()
        server.stop()


async def test_hot_path_survives_redis_restart(tmp_path, migrated_db, clean_state, clock):
    from conftest import TEST_MASTER_KEY, make_api_key, make_product, make_tenant, running_app
    from quota_gateway.config import Settings

    server = RedisServer(tmp_path / "r").start()
    try:
        settings = Settings(redis_url=server.url, database_url=migrated_db, master_key=TEST_MASTER_KEY)
        tenant = await make_tenant(migrated_db, "restart")
        async with running_app(settings, clock) as (_, client):
            product = await make_product(client, tenant.headers)
            key = await make_api_key(client, tenant.headers, product)
            v = "/api/apilicense/validate"
            assert (await client.post(v, json={"apiKey": key}, headers=tenant.headers)).status_code == 200
            server.kill()
            r = await client.post(v, json={"apiKey": key}, headers=tenant.headers)
            assert r.status_code == 503 and r.json()["error"] == "unavailable" and r.headers["retry-after"] == "1"
            server.start()
            r = await client.post(v, json={"apiKey": key}, headers=tenant.headers)
            assert r.status_code == 200  # scripts reloaded, metadata and counter rebuilt
    finally:
        server.stop()


ECHO_KEYS = LuaScript("apilicense_flush_done")  # any script: the done script answers 1 and sets KEYS[2]


async def test_run_many_is_one_write_in_order_and_reloads_unknown_scripts(redis_server):
    pipe = AutoPipeline(redis_server.url)
    redis_sync.Redis.from_url(redis_server.url).script_flush()
    calls = [(["qg:{b7}:flushing", f"qg:{{b7}}:applied{i}"], ["e", i]) for i in range(300)]
    assert await pipe.run_many(ECHO_KEYS, calls) == [1] * 300  # NOSCRIPT for each: loaded, then retried
    writes = pipe.writes
    ordered = await asyncio.gather(pipe.execute("SET", "ap:first", "1"), pipe.run_many(ECHO_KEYS, calls[:5]),
                                   pipe.execute("GET", "qg:{b7}:applied4"))
    assert ordered == [b"OK", [1] * 5, b"e:4"]
    assert pipe.writes - writes <= 2  # the batch, with what this tick queued before it, then the GET
    await pipe.aclose()


async def test_run_many_raises_the_first_error_after_all_answered(redis_server):
    pipe = AutoPipeline(redis_server.url)
    await pipe.execute("SET", "qg:{b8}:flushing", "a string, not a hash")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await pipe.run_many(ECHO_KEYS, [(["qg:{b9}:flushing", "qg:{b9}:applied"], ["e", 1]),
                                        (["qg:{b8}:flushing", "qg:{b8}:applied"], ["e", 1])])
    assert await pipe.execute("GET", "qg:{b9}:applied") == b"e:1"  # the others ran
    assert await pipe.execute("PING") == b"PONG"  # and the connection stays in step
    await pipe.aclose()
