"""CacheMiddleware on the Redis store and a real server: sharing between processes, collapsing
across them, and Redis going away mid-run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.autopipeline import AutoPipeline
from gateway.cache.redis_store import RedisCacheStore
from gateway.config import RedisSettings, Secret
from gateway.redis_client import create_redis
from tests.cache.harness import Gateway, Reply
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.asyncio

Factory = Callable[[], Gateway]


@pytest.fixture
async def gateways(redis_url: str) -> AsyncIterator[Factory]:
    """Build gateways that each have their own Redis client, like separate processes."""
    opened: list[tuple[AutoPipeline, object]] = []

    def build() -> Gateway:
        client = create_redis(RedisSettings(url=Secret(redis_url)))
        pipeline = AutoPipeline(client, timeout=0.25)
        opened.append((pipeline, client))
        gw = Gateway(RedisCacheStore(client, pipeline))
        gw.clock.now = time.time()  # Redis expiry runs on real time
        return gw

    yield build
    for pipeline, client in opened:
        await pipeline.aclose()
        await client.aclose()  # type: ignore[attr-defined]


async def test_entry_stored_by_one_process_is_a_hit_in_another(gateways: Factory) -> None:
    one, two = gateways(), gateways()
    first = await one.request(prefetch=True)
    assert first.x_cache == "MISS"
    hit = await two.request(prefetch=True)
    assert (hit.status, hit.body, hit.x_cache) == (200, b"hello", "HIT")
    head = await two.request("HEAD")
    assert (head.body, head.x_cache) == (b"", "HIT")
    assert one.upstream.calls == 1
    assert two.upstream.calls == 0


async def test_invalidation_reaches_every_process(gateways: Factory) -> None:
    one, two = gateways(), gateways()
    await one.request()
    assert (await two.request()).x_cache == "HIT"
    await one.request("POST", "/a")
    assert (await two.request()).x_cache == "MISS"


async def test_collapsing_across_processes(gateways: Factory) -> None:
    one, two = gateways(), gateways()
    two.app.app = one.upstream
    one.upstream.reply = Reply(body=b"shared", delay=0.1)
    responses = await asyncio.gather(*(gw.request() for gw in (one, two) * 4))
    assert one.upstream.calls == 1
    assert {r.body for r in responses} == {b"shared"}


async def test_soft_purge_marks_stale_across_processes(gateways: Factory) -> None:
    one, two = gateways(), gateways()
    one.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=60"), (b"etag", b'"1"')])
    await one.request()
    assert await two.store.purge(prefix="/a", soft=True) == 1
    two.clock.now = time.time() + 1
    two.upstream.reply = Reply(status=304, headers=[(b"etag", b'"1"')], body=b"")
    response = await two.request()
    assert (response.body, response.x_cache) == (b"hello", "EXPIRED")


async def test_redis_stopped_mid_run_bypasses_and_recovers(
    gateways: Factory, redis_server: RedisServer
) -> None:
    gw = gateways()
    await gw.request()
    assert (await gw.request()).x_cache == "HIT"
    redis_server.stop()
    try:
        started = time.monotonic()
        down = await gw.request(prefetch=True)
        assert (down.status, down.body, down.x_cache) == (200, b"hello", "BYPASS")
        assert time.monotonic() - started < 2.0  # generous bound on the added latency
        post = await gw.request("POST", "/a")
        assert post.status == 200
    finally:
        redis_server.start()
    for _ in range(50):  # the breaker lets calls through again after its cool-down
        response = await gw.request()
        if response.x_cache in ("MISS", "HIT"):
            break
        await asyncio.sleep(0.1)
    assert response.x_cache in ("MISS", "HIT")
