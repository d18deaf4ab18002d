"""Rate limiting across real gateway processes sharing one real Redis."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.conftest import GatewayFactory
from tests.support.upstream import RecordingUpstream

LIMIT = 100


@pytest.mark.parametrize("strategy", ["sliding", "fixed", "gcra"])
async def test_three_processes_admit_exactly_the_limit(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str, strategy: str
) -> None:
    """600 concurrent requests spread over three gateways: exactly LIMIT pass, never one
    more (no read-then-increment race) and never one less (no per-node splitting)."""
    env = {
        "REDIS_URL": redis_url,
        "GATEWAY_CACHE_ENABLED": "false",
        # A day-long window: the burst never straddles a window boundary.
        "GATEWAY_RATE_LIMIT": f"{LIMIT}/day",
        "GATEWAY_RATE_LIMIT_STRATEGY": strategy,
        # This tests counting, not deadlines: a 2-core machine serving 200 requests at once per
        # process can miss the default 150 ms one, and fail-open would then admit uncounted.
        # Closed makes any such miss a visible 503 instead of a silent extra 200.
        "REDIS_COMMAND_TIMEOUT": "5",
        "GATEWAY_RATE_LIMIT_FAIL_MODE": "closed",
    }
    gateways = [gateway_factory(env) for _ in range(3)]
    limits = httpx.Limits(max_connections=100)
    clients = [httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=30) for gw in gateways]
    try:
        responses = await asyncio.gather(*(clients[i % 3].get(f"/echo/{i}") for i in range(600)))
    finally:
        for client in clients:
            await client.aclose()
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == 600 - LIMIT
    assert len(upstream.requests) == LIMIT
    for response in responses:
        assert response.headers["ratelimit-policy"].startswith('"default";q=100;w=86400')
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["content-type"] == "application/problem+json"


def test_spoofed_forwarding_headers_never_open_a_new_bucket(
    gateway_factory: GatewayFactory, redis_url: str
) -> None:
    gw = gateway_factory(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_CACHE_ENABLED": "false",
            "GATEWAY_RATE_LIMIT": "2/minute",
        }
    )
    statuses = []
    for i in range(4):
        spoofed = {
            "X-Forwarded-For": f"198.51.100.{i}",
            "X-Real-IP": f"198.51.100.{i}",
            "Forwarded": f"for=198.51.100.{i}",
        }
        statuses.append(httpx.get(f"{gw.url}/echo", headers=spoofed).status_code)
    assert statuses == [200, 200, 429, 429]


def test_without_redis_each_process_counts_in_memory(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"GATEWAY_CACHE_ENABLED": "false", "GATEWAY_RATE_LIMIT": "2/minute"})
    statuses = [httpx.get(f"{gw.url}/echo").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def metric(gw_url: str, name: str) -> int:
    text = httpx.get(f"{gw_url}/__gateway/metrics").text
    return int(next(line for line in text.splitlines() if line.startswith(name)).split()[-1])


def test_a_cached_answer_on_a_limited_route_costs_one_round_trip(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str
) -> None:
    """The decision script and the cache lookup leave in one pipeline flush; the HIT carries
    the RateLimit fields and still costs quota (the limit sits in front of the cache)."""
    gw = gateway_factory({"REDIS_URL": redis_url, "GATEWAY_RATE_LIMIT": "7/minute"})
    url = f"{gw.url}/cache/limited?cc=max-age%3D60"
    assert httpx.get(url).status_code == 200  # MISS: stored
    httpx.get(url)  # a HIT (and the first use of the script on this connection is behind us)
    trips = metric(gw.url, "gateway_redis_roundtrips_total")
    commands = metric(gw.url, "gateway_redis_commands_total")
    hits = [httpx.get(url) for _ in range(3)]
    assert all(r.status_code == 200 and "ratelimit" in r.headers for r in hits)
    assert [r.headers["x-ratelimit-remaining"] for r in hits] == ["4", "3", "2"]
    assert len(upstream.requests) == 1
    # Each metrics read is a request too, but not a limited or cached one: no Redis use.
    assert metric(gw.url, "gateway_redis_roundtrips_total") - trips == 3
    assert metric(gw.url, "gateway_redis_commands_total") - commands == 6
