"""The cache when Redis fails: stopped mid-run, or accepting connections and never answering.
Every request is still answered by the upstream, fast, and caching comes back by itself."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import GatewayFactory
from tests.support.blackhole import Blackhole
from tests.support.cache_e2e import TOKEN, poll, purge, target
from tests.support.redis_server import RedisServer
from tests.support.upstream import RecordingUpstream


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own: it gets stopped and started again."""
    with RedisServer() as server:
        yield server


def timed_get(client: httpx.Client, url: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = client.get(url)
    return response, time.perf_counter() - started


def test_redis_stopped_mid_run_bypasses_then_caching_resumes_by_itself(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, own_redis: RedisServer
) -> None:
    gw = gateway_factory({"REDIS_URL": own_redis.url, "GATEWAY_ADMIN_TOKEN": TOKEN})
    url = f"{gw.url}{target('down', 'max-age=60')}"
    with httpx.Client(timeout=5) as client:
        assert [client.get(url).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]

        own_redis.stop()
        during = [timed_get(client, url) for _ in range(6)]
        assert [r.status_code for r, _ in during] == [200] * 6
        assert [r.headers["x-cache"] for r, _ in during] == ["BYPASS"] * 6
        assert [r.content for r, _ in during] == [b"/cache/down #%d" % i for i in range(2, 8)]
        assert max(elapsed for _, elapsed in during) < 0.5
        assert purge(gw.url, {"url": "/cache/down"}).status_code == 503

        own_redis.start()  # same port, empty
        resumed = poll(
            lambda: ((r := client.get(url)).headers["x-cache"] != "BYPASS" and r) or None,
            timeout=6,
            interval=0.1,
        )
        assert resumed.headers["x-cache"] in ("MISS", "HIT")
        assert client.get(url).headers["x-cache"] == "HIT"


def test_a_blackholed_redis_costs_little_and_then_nothing(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    with Blackhole() as hole:
        gw = gateway_factory({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(hole.port)})
        url = f"{gw.url}{target('hole', 'max-age=60')}"
        with httpx.Client(timeout=5) as client:
            first = [timed_get(client, url) for _ in range(4)]
            later = [timed_get(client, url) for _ in range(20)]

    for response, elapsed in first + later:
        assert response.status_code == 200 and response.headers["x-cache"] == "BYPASS"
        assert elapsed < 0.5, elapsed
    assert statistics.median(elapsed for _, elapsed in later) < 0.05
    assert upstream.hits["/cache/hole"] == 24
