"""RateLimitMiddleware as a client sees it, behind the real context layer, over a real Redis.

The inner app counts what reaches it and streams its answer in two chunks, so headers on
streamed responses are covered too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from gateway.autopipeline import AutoPipeline
from gateway.breaker import CircuitBreaker
from gateway.config import RateLimitSettings, RedisSettings, Route, Settings
from gateway.context import RequestContextMiddleware
from gateway.ratelimit.limiter import MemoryLimiter, RedisLimiter
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.redis_client import create_redis
from gateway.runtime import Runtime
from tests.support.redis_server import RedisServer


class CountingApp:
    """The inner app: answers 200 in two chunks; with `prefetch`, issues a GET like the cache."""

    def __init__(self, runtime: Runtime, prefetching: bool = False) -> None:
        self.runtime = runtime
        self.calls = 0
        self.prefetched = 0

    def prefetch(self, scope: Any) -> None:
        assert self.runtime.pipeline is not None
        self.prefetched += 1
        scope["gateway.cache_lookup"] = self.runtime.pipeline.execute("GET", "cached")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        if "gateway.cache_lookup" in scope:
            await scope.pop("gateway.cache_lookup")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"he", "more_body": True})
        await send({"type": "http.response.body", "body": b"llo"})


Build = Callable[..., Awaitable[tuple[httpx.AsyncClient, CountingApp, Runtime]]]


@pytest.fixture
async def build(redis_server: RedisServer) -> AsyncIterator[Build]:
    """Stack: context -> rate limit -> counting app; store is `redis`, `memory` or a server."""
    opened: list[tuple[httpx.AsyncClient, Runtime]] = []

    async def make(
        store: str | RedisServer | tuple[str, int] = "redis",
        *,
        client_ip: str = "203.0.113.7",
        prefetching: bool = False,
        breaker: CircuitBreaker | None = None,
        **limit: Any,
    ) -> tuple[httpx.AsyncClient, CountingApp, Runtime]:
        rate_limit = replace(RateLimitSettings(limits="3/minute"), **limit)
        routes = (
            Route("api", "/api", ("http://upstream.test",), rate_limit=rate_limit),
            Route("free", "/free", ("http://upstream.test",)),
        )
        runtime = Runtime(Settings(routes=routes, access_log=False))
        if store == "memory":
            runtime.limiter = MemoryLimiter()
        else:
            if isinstance(store, tuple):
                host, port = store
            else:
                server = redis_server if store == "redis" else store
                assert isinstance(server, RedisServer)
                host, port = server.host, server.port
            runtime.redis = create_redis(RedisSettings(host=host, port=port))
            runtime.pipeline = AutoPipeline(
                runtime.redis, timeout=0.1, breaker=breaker or CircuitBreaker(3, 0.3)
            )
            runtime.limiter = RedisLimiter(runtime.pipeline)
        inner = CountingApp(runtime, prefetching)
        prefetch = inner.prefetch if prefetching else None
        app = RequestContextMiddleware(RateLimitMiddleware(inner, runtime, prefetch), runtime)
        transport = httpx.ASGITransport(app=app, client=(client_ip, 4321))
        client = httpx.AsyncClient(transport=transport, base_url="http://gw.test")
        opened.append((client, runtime))
        return client, inner, runtime

    yield make
    for client, runtime in opened:
        await client.aclose()
        if runtime.redis is not None:
            await runtime.redis.aclose()


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_url")  # a flushed database
    return str(request.param)


async def test_admitted_answers_carry_the_ratelimit_fields(build: Build, store: str) -> None:
    client, inner, _ = await build(store)
    response = await client.get("/api/x")
    assert response.status_code == 200 and response.text == "hello"  # streamed, untouched
    assert response.headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert response.headers["ratelimit"].startswith('"default";r=2;t=')
    assert response.headers["x-ratelimit-limit"] == "3"
    assert response.headers["x-ratelimit-remaining"] == "2"
    assert 0 < int(response.headers["x-ratelimit-reset"]) <= 60
    assert inner.calls == 1


async def test_over_the_limit_is_a_429_problem_that_names_the_policy(build: Build, store: str) -> None:
    client, inner, runtime = await build(store, policy="partner")
    for _ in range(3):
        assert (await client.get("/api/x")).status_code == 200
    response = await client.get("/api/x")
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    body = json.loads(response.content)
    assert body["status"] == 429 and body["policy"] == "partner"
    assert body["violated-policies"] == ["partner"]
    assert body["type"].endswith("#quota-exceeded")
    retry_after = int(response.headers["retry-after"])
    t = int(response.headers["ratelimit"].rsplit("t=", 1)[1])
    assert 1 <= t <= retry_after <= 60
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert inner.calls == 3  # the refused request never reached the inner app
    assert runtime.metrics.ratelimit["limited"] == 1


async def test_routes_without_limits_and_admin_paths_are_untouched(build: Build) -> None:
    client, inner, _ = await build("memory", limits="1/minute")
    for path in ("/free/x", "/free/x", "/__gateway/anything"):
        response = await client.get(path)
        assert "ratelimit" not in response.headers
    assert inner.calls == 3


async def test_legacy_headers_can_be_turned_off(build: Build) -> None:
    client, _, _ = await build("memory", legacy_headers=False)
    response = await client.get("/api/x")
    assert "ratelimit" in response.headers and "x-ratelimit-limit" not in response.headers


async def test_cost_per_method(build: Build, store: str) -> None:
    client, _, _ = await build(store, limits="5/minute", cost={"*": 1, "POST": 3})
    assert (await client.post("/api/x")).headers["ratelimit"].startswith('"default";r=2;')
    assert (await client.post("/api/x")).status_code == 429  # 3 more do not fit in 2
    assert (await client.get("/api/x")).status_code == 200  # 1 does: the POST was not charged
    assert (await client.get("/api/x")).status_code == 200
    assert (await client.get("/api/x")).status_code == 429


@pytest.mark.parametrize(
    ("client_ip", "headers", "exempt"),
    [
        ("10.9.8.7", {}, True),
        ("2001:db8::1", {}, True),
        ("203.0.113.7", {"x-api-key": "internal"}, True),
        ("203.0.113.7", {"x-api-key": "customer"}, False),
    ],
)
async def test_exemptions(build: Build, client_ip: str, headers: dict[str, str], exempt: bool) -> None:
    client, _, _ = await build(
        "memory",
        client_ip=client_ip,
        limits="1/minute",
        key="header:X-API-Key",
        exempt=("10.0.0.0/8", "2001:db8::/48", "internal"),
    )
    statuses = [(await client.get("/api/x", headers=headers)).status_code for _ in range(3)]
    assert statuses == ([200, 200, 200] if exempt else [200, 429, 429])
    if exempt:
        assert "ratelimit" not in (await client.get("/api/x", headers=headers)).headers


async def test_shadow_mode_reports_but_never_refuses(
    build: Build, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, inner, runtime = await build(store, limits="2/minute", shadow=True)
    with caplog.at_level(logging.INFO, logger="gateway.ratelimit"):
        responses = [await client.get("/api/x") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert inner.calls == 4
    assert [r.headers.get("x-ratelimit-shadow") for r in responses] == [None, None, "default", "default"]
    assert all("ratelimit" not in r.headers for r in responses)
    assert len([r for r in caplog.records if "shadow" in r.getMessage()]) == 2
    assert runtime.metrics.ratelimit["shadow"] == 2


async def test_the_cache_lookup_shares_the_decisions_round_trip(build: Build, redis_url: str) -> None:
    client, inner, runtime = await build("redis", prefetching=True, limits="100/minute")
    assert runtime.pipeline is not None
    await client.get("/api/x")  # the first use loads the script (NOSCRIPT, then EVAL)
    before = runtime.pipeline.flushes
    for _ in range(5):
        assert (await client.get("/api/x")).status_code == 200
    assert inner.prefetched == 6
    assert runtime.pipeline.flushes - before == 5  # script + GET: one flush per request


# -- failure modes ------------------------------------------------------------------------


@pytest.fixture
def stopped_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    server.stop()
    yield server
    server.close()


@pytest.fixture
async def blackhole() -> AsyncIterator[tuple[str, int]]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield "127.0.0.1", server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()


@pytest.fixture(params=["stopped", "blackholed"])
def broken(
    request: pytest.FixtureRequest, stopped_redis: RedisServer, blackhole: tuple[str, int]
) -> RedisServer | tuple[str, int]:
    return stopped_redis if request.param == "stopped" else blackhole


async def timed(client: httpx.AsyncClient, n: int) -> list[tuple[int, float, httpx.Response]]:
    results = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.get("/api/x")
        results.append((response.status_code, time.perf_counter() - started, response))
    return results


async def test_fail_open_admits_quickly_and_logs_once(
    build: Build, broken: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, inner, runtime = await build(broken, fail_mode="open", limits="1/minute")
    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        results = await timed(client, 10)
    assert [status for status, _, _ in results] == [200] * 10
    assert max(elapsed for _, elapsed, _ in results) < 1.0
    assert sum(elapsed for _, elapsed, _ in results) < 2.0  # the breaker stops paying timeouts
    assert all("ratelimit" not in r.headers for _, _, r in results)
    assert len([r for r in caplog.records if r.name == "gateway.ratelimit"]) == 1
    assert runtime.limiter is not None and runtime.limiter.degraded
    assert inner.calls == 10


async def test_fail_closed_answers_503_with_retry_after(build: Build, broken: Any) -> None:
    client, inner, _ = await build(broken, fail_mode="closed")
    results = await timed(client, 5)
    for status, elapsed, response in results:
        assert status == 503 and elapsed < 1.0
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["cache-control"] == "no-store"
    assert inner.calls == 0


async def test_fail_local_counts_in_process(build: Build, broken: Any) -> None:
    client, _, _ = await build(broken, fail_mode="local", limits="3/minute")
    results = await timed(client, 5)
    assert [status for status, _, _ in results] == [200, 200, 200, 429, 429]
    assert max(elapsed for _, elapsed, _ in results) < 1.0
    assert results[0][2].headers["ratelimit"].startswith('"default";r=2;')


async def test_shadow_mode_never_fails_closed(build: Build, stopped_redis: RedisServer) -> None:
    client, _, _ = await build(stopped_redis, fail_mode="closed", shadow=True)
    assert (await client.get("/api/x")).status_code == 200


async def test_counting_resumes_by_itself_when_redis_returns(
    build: Build, stopped_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client, _, runtime = await build(stopped_redis, fail_mode="open", breaker=CircuitBreaker(2, 0.2))
    await timed(client, 3)
    assert runtime.limiter is not None and runtime.limiter.degraded
    stopped_redis.start()
    deadline = time.monotonic() + 5
    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        while "ratelimit" not in (await client.get("/api/x")).headers:
            assert time.monotonic() < deadline, "counting did not resume"
            await asyncio.sleep(0.05)
    assert runtime.limiter is not None and runtime.limiter.degraded == ""
    assert any("again" in r.getMessage() for r in caplog.records)
