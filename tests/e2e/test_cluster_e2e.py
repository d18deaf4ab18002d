"""The gateway process on a real 3-primary Redis Cluster: ready, proxying, caching, limiting."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.e2e.conftest import GatewayFactory
from tests.support.redis_topologies import LocalCluster
from tests.support.upstream import RecordingUpstream


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3) as topology:
        yield topology


@pytest.fixture
def cluster_env(cluster: LocalCluster) -> dict[str, str]:
    cluster.flushall()
    return {"REDIS_MODE": "cluster", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(cluster.ports[0])}


def test_gateway_on_the_cluster_is_ready_and_proxies(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, cluster_env: dict[str, str]
) -> None:
    gw = gateway_factory(cluster_env)
    ready = httpx.get(f"{gw.url}/__gateway/ready", timeout=5)
    assert ready.status_code == 200, gw.logs()
    assert ready.json()["redis"] == "ok"

    response = httpx.get(f"{gw.url}/echo/hello?x=1", timeout=5)
    assert response.status_code == 200
    assert response.json()["method"] == "GET"


def test_a_cacheable_response_is_served_from_the_cluster(
    gateway_factory: GatewayFactory,
    upstream: RecordingUpstream,
    cluster: LocalCluster,
    cluster_env: dict[str, str],
) -> None:
    gw = gateway_factory(cluster_env)
    url = f"{gw.url}/cache/x?cc=max-age=60"

    first = httpx.get(url, timeout=5)
    second = httpx.get(url, timeout=5)

    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert upstream.hits["/cache/x"] == 1, gw.logs()
    stored = []
    for port in cluster.ports:  # the entry lives in the cluster, not in the process
        with redis.Redis(host="127.0.0.1", port=port) as node:
            stored += node.keys("gw:c2:*")
    assert stored


def test_rate_limits_are_shared_by_two_gateways_on_the_cluster(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, cluster_env: dict[str, str]
) -> None:
    env = {**cluster_env, "GATEWAY_RATE_LIMIT": "4/minute"}
    gateways = [gateway_factory(env), gateway_factory(env)]

    statuses = [httpx.get(f"{gateways[i % 2].url}/echo", timeout=5).status_code for i in range(6)]

    assert statuses == [200, 200, 200, 200, 429, 429]
