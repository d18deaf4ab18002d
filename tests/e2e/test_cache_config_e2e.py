"""Cache settings and answers the cache must never store, each with its own gateway process."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import GatewayFactory
from tests.support.cache_e2e import entries, members, target
from tests.support.redis_server import free_port
from tests.support.upstream import RecordingUpstream


def test_the_rate_limiters_429_is_never_stored(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str
) -> None:
    gw = gateway_factory({"REDIS_URL": redis_url, "GATEWAY_RATE_LIMIT": "1/minute"})
    admitted, limited = target("rl-1", "max-age=60"), target("rl-2", "max-age=60")

    assert httpx.get(f"{gw.url}{admitted}").status_code == 200
    answer = httpx.get(f"{gw.url}{limited}")

    assert answer.status_code == 429 and answer.headers.get("x-cache") != "HIT"
    assert upstream.hits["/cache/rl-2"] == 0
    assert entries(redis_url, limited) == [] and len(entries(redis_url, admitted)) == 1


def test_the_gateways_502_and_504_are_never_stored(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str
) -> None:
    dead = gateway_factory(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_CACHE_TTL": "30",
            "GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}",
        }
    )
    slow = gateway_factory(
        {"REDIS_URL": redis_url, "GATEWAY_CACHE_TTL": "30", "GATEWAY_UPSTREAM_TIMEOUT": "0.3"}
    )
    refused, late = target("refused", "max-age=60"), target("late", "max-age=60", delay="1")

    for _ in range(2):
        bad_gateway = httpx.get(f"{dead.url}{refused}")
        timeout = httpx.get(f"{slow.url}{late}")
        assert bad_gateway.status_code == 502 and timeout.status_code == 504
        for answer in (bad_gateway, timeout):
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["x-cache"] == "MISS" and "stored" not in members(answer)
    assert entries(redis_url, refused) == entries(redis_url, late) == []
    assert upstream.hits["/cache/late"] == 2


def test_a_ttl_gives_heuristic_freshness_only_without_explicit_freshness(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str
) -> None:
    gw = gateway_factory({"REDIS_URL": redis_url, "GATEWAY_CACHE_TTL": "30"})
    heuristic, explicit = target("heur"), target("heur-explicit", "max-age=5")
    never = target("heur-no-store", "no-store")

    for url in (heuristic, explicit, never):
        assert httpx.get(f"{gw.url}{url}").headers["x-cache"] == "MISS"
    hits = {url: httpx.get(f"{gw.url}{url}") for url in (heuristic, explicit, never)}

    assert hits[heuristic].headers["x-cache"] == "HIT"
    assert 27 <= int(next(p for p in members(hits[heuristic]) if p.startswith("ttl="))[4:]) <= 30
    assert hits[explicit].headers["x-cache"] == "HIT"
    assert 2 <= int(next(p for p in members(hits[explicit]) if p.startswith("ttl="))[4:]) <= 5
    assert hits[never].headers["x-cache"] == "MISS"  # the origin's no-store still wins
    assert upstream.hits["/cache/heur"] == 1 and upstream.hits["/cache/heur-no-store"] == 2


def test_a_response_over_the_object_limit_streams_whole_and_is_not_stored(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str
) -> None:
    gw = gateway_factory({"REDIS_URL": redis_url, "GATEWAY_CACHE_MAX_OBJECT_BYTES": "1000"})
    declared = target("huge", "max-age=60", size="5000", length="1")  # Content-Length: 5000
    chunked = target("huge-chunked", "max-age=60", size="5000")  # no length: counted on the way
    small = target("small", "max-age=60", size="900")

    for url in (declared, chunked):
        answers = [httpx.get(f"{gw.url}{url}") for _ in range(2)]
        assert [len(a.content) for a in answers] == [5000, 5000]
        assert [a.headers["x-cache"] for a in answers] == ["MISS", "MISS"]
        assert answers[1].content.startswith(b"/cache/huge") and b"#2" in answers[1].content
        assert entries(redis_url, url) == []
    small_answers = [httpx.get(f"{gw.url}{small}") for _ in range(2)]
    assert [a.headers["x-cache"] for a in small_answers] == ["MISS", "HIT"]
    assert len(small_answers[1].content) == 900


def test_the_embedded_memory_store_caches_within_one_process(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory()  # no REDIS_*: the embedded in-process store
    url = target("mem", "max-age=60")

    first, second = httpx.get(f"{gw.url}{url}"), httpx.get(f"{gw.url}{url}")

    assert "embedded in-process store" in gw.logs()
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.content == first.content == b"/cache/mem #1"
    assert "age" in second.headers and upstream.hits["/cache/mem"] == 1
