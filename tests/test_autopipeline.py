"""Auto-pipelining against a real Redis: batching, scripts, error replies, deadline, breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.autopipeline import AutoPipeline
from gateway.breaker import CircuitBreaker
from gateway.errors import StoreUnavailable
from gateway.lua import LuaScript
from tests.support.blackhole import Blackhole
from tests.support.redis_server import RedisServer


@pytest.fixture
async def pipeline(redis_url: str) -> AsyncIterator[AutoPipeline]:
    client = Redis.from_url(redis_url)
    pipe = AutoPipeline(client, timeout=0.5)
    yield pipe
    await pipe.aclose()
    await client.aclose()


async def test_commands_of_one_tick_share_one_round_trip(pipeline: AutoPipeline) -> None:
    results = await asyncio.gather(*(pipeline.execute("SET", f"gw:k{i}", i) for i in range(50)))
    assert results == [True] * 50
    assert (pipeline.flushes, pipeline.commands) == (1, 50)
    values = await asyncio.gather(*(pipeline.execute("GET", f"gw:k{i}") for i in range(50)))
    assert values == [str(i).encode() for i in range(50)]
    assert pipeline.flushes == 2


async def test_concurrent_tasks_are_batched(pipeline: AutoPipeline) -> None:
    async def request(i: int) -> bytes:
        await asyncio.sleep(0)
        await pipeline.execute("INCR", "gw:counter")
        return await pipeline.execute("GET", "gw:counter")  # type: ignore[no-any-return]

    await asyncio.gather(*(request(i) for i in range(100)))
    assert pipeline.commands == 200 and pipeline.flushes <= 4


async def test_scripts_load_on_first_use(pipeline: AutoPipeline, redis_url: str) -> None:
    script = LuaScript("return {KEYS[1], ARGV[1]}")
    assert await pipeline.evalsha(script, ["gw:a"], ["x"]) == [b"gw:a", b"x"]
    client = Redis.from_url(redis_url)
    assert (await client.script_exists(script.sha)) == [True]
    await client.aclose()
    assert await pipeline.evalsha(script, ["gw:b"], [1]) == [b"gw:b", b"1"]


async def test_an_error_reply_fails_only_its_own_command(pipeline: AutoPipeline) -> None:
    await pipeline.execute("SET", "gw:str", "x")
    results = await asyncio.gather(
        pipeline.execute("HGET", "gw:str", "f"), pipeline.execute("GET", "gw:str"), return_exceptions=True
    )
    bad, good = results
    assert isinstance(bad, StoreUnavailable) and good == b"x"


async def test_stopped_redis_fails_fast_and_opens_the_breaker() -> None:
    server = RedisServer().start()
    client = Redis(host=server.host, port=server.port, socket_connect_timeout=0.2)
    pipe = AutoPipeline(client, timeout=0.3, breaker=CircuitBreaker(threshold=2, cooldown=0.3))
    try:
        assert await pipe.execute("PING") is True
        server.stop()
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                await pipe.execute("GET", "gw:x")
        assert pipe.breaker.is_open
        started = time.perf_counter()
        with pytest.raises(StoreUnavailable, match="circuit open"):
            await pipe.execute("GET", "gw:x")
        assert time.perf_counter() - started < 0.01  # no network wait while open
        server.start()
        await asyncio.sleep(0.35)
        assert await pipe.execute("PING") is True  # the half-open probe succeeds
        assert not pipe.breaker.is_open
    finally:
        await pipe.aclose()
        await client.aclose()
        server.close()


async def test_a_hung_redis_costs_at_most_the_deadline() -> None:
    with Blackhole() as hole:
        client = Redis(host="127.0.0.1", port=hole.port, socket_connect_timeout=0.2)
        pipe = AutoPipeline(client, timeout=0.15, breaker=CircuitBreaker(threshold=2, cooldown=5))
        try:
            for _ in range(2):
                started = time.perf_counter()
                with pytest.raises(StoreUnavailable):
                    await pipe.execute("GET", "gw:x")
                assert time.perf_counter() - started < 0.3
            started = time.perf_counter()
            with pytest.raises(StoreUnavailable):
                await pipe.execute("GET", "gw:x")
            assert time.perf_counter() - started < 0.01  # breaker open: nothing to wait for
        finally:
            await pipe.aclose()
            await client.aclose()
