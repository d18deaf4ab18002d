"""The decision script on its own, on a real server's clock (no pipeline in between)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.ratelimit.limiter import SCRIPT, counter_keys, emission_us
from gateway.ratelimit.policy import Strategy, parse_limits
from tests.support.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer, redis_url: str) -> AsyncIterator[Redis]:
    async with Redis(host=redis_server.host, port=redis_server.port) as redis:
        yield redis


async def run(client: Redis, strategy: Strategy, text: str, cost: int) -> list[int]:
    parsed = parse_limits(text, strategy, "test")
    args: list[str | int] = ["", 0]
    for lim in parsed:
        args += [strategy, cost, 1, lim.amount, lim.period * 1000, emission_us(lim), lim.burst]
    keys = counter_keys("c", parsed, strategy)
    return [int(v) for v in await client.eval(SCRIPT.source, len(keys), *keys, *args)]


@pytest.mark.parametrize("strategy", ["sliding", "fixed", "gcra"])
async def test_reply_carries_every_limit_on_server_time(client: Redis, strategy: Strategy) -> None:
    reply = await run(client, strategy, "3/minute;10/hour", 1)
    assert reply[0] == 1 and len(reply) == 1 + 2 * 3
    assert (reply[1], reply[4]) == (2, 9)  # remaining of each limit
    assert 0 < reply[2] <= 120_000 and reply[3] == 0  # reset in ms, no retry


@pytest.mark.parametrize("strategy", ["sliding", "fixed", "gcra"])
async def test_refused_and_free_requests_write_nothing(client: Redis, strategy: Strategy) -> None:
    assert (await run(client, strategy, "3/minute", 4))[0] == 0  # can never fit: refused
    assert (await run(client, strategy, "3/minute", 0))[:2] == [1, 3]  # a look, not a hit
    assert await client.keys("*") == []


@pytest.mark.parametrize("strategy", ["sliding", "fixed", "gcra"])
async def test_rejection_says_when_to_come_back(client: Redis, strategy: Strategy) -> None:
    for _ in range(2):
        assert (await run(client, strategy, "2/minute", 1))[0] == 1
    allowed, remaining, _reset, retry = await run(client, strategy, "2/minute", 1)
    assert (allowed, remaining) == (0, 0)
    assert 0 < retry <= 120_000
