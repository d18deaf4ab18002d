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
        "REDIS_URL": redis_url, "GATEWAY_CACHE_ENABLED": "false",
        # A day-long window: the burst never straddles a window boundary.
        "GATEWAY_RATE_LIMIT": f"{LIMIT}/day", "GATEWAY_RATE_LIMIT_STRATEGY": strategy,
    }
    gateways = [gateway_factory(env) for _ in range(3)]
    limits = httpx.Limits(max_connections=100)
    clients = [httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=30) for gw in gateways]
    try:
        responses = await asyncio.gather(
            *(clients[i % 3].get(f"/echo/{i}") for i in range(600))
        )
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
    gw = gateway_factory({
        "REDIS_URL": redis_url, "GATEWAY_CACHE_ENABLED": "false",
        "GATEWAY_RATE_LIMIT": "2/minute",
    })
    statuses = []
    for i in range(4):
        spoofed = {
            "X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"198.51.100.{i}",
            "Forwarded": f"for=198.51.100.{i}",
        }
        statuses.append(httpx.get(f"{gw.url}/echo", headers=spoofed).status_code)
    assert statuses == [200, 200, 429, 429]


def test_without_redis_each_process_counts_in_memory(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"GATEWAY_CACHE_ENABLED": "false", "GATEWAY_RATE_LIMIT": "2/minute"})
    statuses = [httpx.get(f"{gw.url}/echo").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
