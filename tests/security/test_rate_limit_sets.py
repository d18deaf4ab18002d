"""Several limit sets on one route, decided in one atomic step: attacks and defences.

The attack: a limit keyed on a header alone (an API key) is keyed on something the client
chooses. A client that sends a fresh invented key with every request opens a fresh bucket
every time and is never held. The defence: a second set keyed on what the client cannot choose
(its address, GATEWAY_RATE_LIMIT_IP_CEILING) decided together with the first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.autopipeline import AutoPipeline
from gateway.config import RateLimitSettings, Route, Settings
from gateway.environment import settings_from_env
from gateway.errors import ConfigError
from gateway.ratelimit.limiter import MemoryLimiter, RedisLimiter, counter_keys
from gateway.ratelimit.policy import (
    Check,
    compile_policies,
    parse_limits,
)
from tests.e2e.conftest import GatewayFactory
from tests.support.redis_server import RedisServer
from tests.support.upstream import RecordingUpstream


def routes_file(tmp_path: Path, upstream: RecordingUpstream, rate_limit: str) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(f"""
routes:
  - name: api
    prefix: /api
    upstream: {upstream.url}
    cache: false
    rate_limit: {rate_limit}
  - name: open
    prefix: /open
    upstream: {upstream.url}
    cache: false
""")
    return str(path)


PER_KEY = '{key: "header:X-Api-Key", limits: "5/minute", policy: per-key}'


def test_inventing_a_new_api_key_per_request_escapes_a_header_keyed_limit_alone(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str, tmp_path: Path
) -> None:
    """The attack, shown so the defence below is not taken on faith: with only a header-keyed
    limit, 20 requests from one address with 20 invented keys all reach the upstream."""
    gw = gateway_factory(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_UPSTREAM_URL": "",
            "GATEWAY_ROUTES_FILE": routes_file(tmp_path, upstream, PER_KEY),
        }
    )
    statuses = [
        httpx.get(f"{gw.url}/api/x", headers={"X-Api-Key": f"invented-{i}"}).status_code for i in range(20)
    ]
    assert statuses == [200] * 20
    assert len(upstream.requests) == 20


def test_a_random_first_copy_of_the_key_header_before_a_leaked_key_is_refused_400_upstream_sees_nothing(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str, tmp_path: Path
) -> None:
    """`X-Api-Key: <random>` then `X-Api-Key: <leaked>`: the limiter would count the first copy
    while an upstream may honour the last; a repeated key header is refused instead."""
    gw = gateway_factory(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_UPSTREAM_URL": "",
            "GATEWAY_ROUTES_FILE": routes_file(tmp_path, upstream, PER_KEY),
        }
    )
    answers = [
        httpx.get(f"{gw.url}/api/x", headers=[("X-Api-Key", f"random-{i}"), ("X-Api-Key", "leaked")])
        for i in range(3)
    ]
    assert [a.status_code for a in answers] == [400] * 3
    assert answers[0].headers["content-type"] == "application/problem+json"
    assert upstream.requests == []


def test_inventing_a_new_api_key_per_request_is_held_by_the_ip_ceiling_with_429(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str, tmp_path: Path
) -> None:
    gw = gateway_factory(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_UPSTREAM_URL": "",
            "GATEWAY_ROUTES_FILE": routes_file(tmp_path, upstream, PER_KEY),
            "GATEWAY_RATE_LIMIT_IP_CEILING": "8/minute",
        }
    )
    responses = [httpx.get(f"{gw.url}/api/x", headers={"X-Api-Key": f"invented-{i}"}) for i in range(20)]
    assert [r.status_code for r in responses] == [200] * 8 + [429] * 12
    assert len(upstream.requests) == 8  # the upstream never saw the rest
    refused = responses[-1]
    problem = refused.json()
    assert problem["violated-policies"] == ["ip-ceiling"] and problem["policy"] == "ip-ceiling"
    assert int(refused.headers["retry-after"]) >= 1
    # Headers list every set (draft-10): both policies, and on a 429 only the refusing limit.
    assert responses[0].headers["ratelimit-policy"] == ('"per-key";q=5;w=60, "ip-ceiling";q=8;w=60')
    assert responses[0].headers["ratelimit"].startswith('"per-key";r=4;t=')
    assert '"ip-ceiling";r=7;t=' in responses[0].headers["ratelimit"]
    assert refused.headers["ratelimit"].startswith('"ip-ceiling";r=0;t=')
    # One honest key is still held by its own quota first.
    honest = [httpx.get(f"{gw.url}/open/x").status_code for _ in range(9)]
    assert honest == [200] * 8 + [429]  # the ceiling applies to every route, per route


def test_one_api_key_shared_by_many_addresses_is_held_by_its_own_quota(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, redis_url: str, tmp_path: Path
) -> None:
    """The other direction: a leaked key used from several addresses (spoofed through a
    trusted proxy here) is held by the per-key set although no address reaches its ceiling."""
    gw = gateway_factory(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_UPSTREAM_URL": "",
            "GATEWAY_ROUTES_FILE": routes_file(tmp_path, upstream, PER_KEY),
            "GATEWAY_RATE_LIMIT_IP_CEILING": "100/minute",
            "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32",
        }
    )
    statuses = [
        httpx.get(
            f"{gw.url}/api/x", headers={"X-Api-Key": "leaked", "X-Forwarded-For": f"198.51.100.{i}"}
        ).status_code
        for i in range(7)
    ]
    assert statuses == [200] * 5 + [429] * 2
    assert len(upstream.requests) == 5


async def test_concurrent_requests_charge_both_sets_exactly_and_refused_ones_charge_neither(
    redis_server: RedisServer, redis_url: str
) -> None:
    """300 simultaneous requests over four independent pipelines (four gateway workers):
    exactly the ceiling is admitted, and the per-key counter holds exactly the admitted
    requests: a read-then-write or set-by-set limiter would charge the key for requests the
    ceiling refused, or admit more than the ceiling under the race."""
    clients = [Redis(host=redis_server.host, port=redis_server.port) for _ in range(4)]
    try:
        limiters = [RedisLimiter(AutoPipeline(c, timeout=5.0)) for c in clients]
        ceiling = parse_limits("40/day", "fixed", "t")
        quota = parse_limits("1000/day", "fixed", "t")
        checks = [
            Check("ip-ceiling|ip=203.0.113.9", ceiling, "fixed", 1),
            Check("per-key|key=k", quota, "fixed", 1),
        ]
        decisions = await asyncio.gather(*(limiters[i % 4].hit_all(checks, "route=api") for i in range(300)))
        assert sum(d.allowed for d in decisions) == 40
        key = counter_keys("per-key|key=k", quota, "fixed", "route=api")[0]
        assert int(await clients[0].hget(key, "c") or 0) == 40
        assert sum(p.flushes for p in (lim.pipeline for lim in limiters)) <= 300
    finally:
        for client in clients:
            await client.aclose()


async def test_several_sets_cost_one_script_call_per_request(
    redis_server: RedisServer, redis_url: str
) -> None:
    async with Redis(host=redis_server.host, port=redis_server.port) as client:
        pipeline = AutoPipeline(client, timeout=5.0)
        limiter = RedisLimiter(pipeline)
        checks = [
            Check("a", parse_limits("5/minute;100/hour", "sliding", "t"), "sliding", 1),
            Check("b", parse_limits("7/minute burst 3", "gcra", "t"), "gcra", 2),
        ]
        before = pipeline.commands
        decision = await limiter.hit_all(checks, "route=r")
        assert pipeline.commands - before == 1  # one EVALSHA for both sets and three limits
        assert decision.allowed and [s.remaining for s in decision.states] == [4, 99, 1]


def test_every_key_of_a_multi_set_decision_shares_one_cluster_slot() -> None:
    """A script on Redis Cluster may only touch one slot: the route is the shared hash tag."""
    limits = parse_limits("5/minute;100/hour", "sliding", "t")
    for identities in (["ip-ceiling|ip=203.0.113.9&route=api", "per-key|x=ab12"], ["a", "#" + "f" * 32]):
        keys = [k for ident in identities for k in counter_keys(ident, limits, "sliding", "route=api")]
        assert len({key_slot(k.encode()) for k in keys}) == 1
        assert all("{route=api}" in k for k in keys)


async def test_a_shadow_set_never_refuses_and_is_not_charged_when_it_has_no_room() -> None:
    limiter = MemoryLimiter()
    enforced = Check("ceiling", parse_limits("10/minute", "fixed", "t"), "fixed", 1)
    shadow = Check("trial", parse_limits("1/minute", "fixed", "t"), "fixed", 1, enforce=False)
    decisions = [await limiter.hit_all([enforced, shadow], "r") for _ in range(3)]
    assert all(d.allowed for d in decisions)
    assert [d.states[1].remaining for d in decisions] == [0, 0, 0]
    assert [d.states[0].remaining for d in decisions] == [9, 8, 7]


def test_routes_file_list_of_sets_needs_names_and_limits_and_rejects_duplicates(
    tmp_path: Path,
) -> None:
    def load(rate_limit: str) -> Settings:
        path = tmp_path / "r.yaml"
        path.write_text(f"routes:\n  - prefix: /a\n    upstream: http://u:1\n    rate_limit: {rate_limit}\n")
        return settings_from_env({"GATEWAY_ROUTES_FILE": str(path)})

    good = load(
        '[{limits: "5/minute", policy: a, key: "header:X-Key"}, '
        '{limits: "1/second", policy: b, strategy: gcra}]'
    )
    sets = good.routes[0].rate_limit_sets
    assert [(s.policy, s.strategy) for s in sets] == [("a", "sliding"), ("b", "gcra")]
    for bad, where in (
        ('[{limits: "5/minute"}]', "rate_limit[0].policy"),
        ("[{policy: a}]", "rate_limit[0].limits"),
        ('[{limits: "5/minute", policy: a}, {limits: "6/minute", policy: a}]', "share a policy name"),
        ("[]", "empty list"),
    ):
        with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
            load(bad)


def test_ip_ceiling_applies_to_every_route_and_a_bad_value_names_its_variable() -> None:
    routes = (
        Route("a", "/a", ("http://u:1",)),
        Route("b", "/b", ("http://u:1",), rate_limit=RateLimitSettings(limits="5/second")),
    )
    compiled = compile_policies(Settings(routes=routes, rate_limit_ip_ceiling="100/minute"))
    a, b = compiled["a"], compiled["b"]
    assert a is not None and [s.name for s in a.sets] == ["ip-ceiling"]
    assert b is not None and [s.name for s in b.sets] == ["default", "ip-ceiling"]
    with pytest.raises(ConfigError, match="GATEWAY_RATE_LIMIT_IP_CEILING"):
        compile_policies(Settings(routes=routes, rate_limit_ip_ceiling="lots"))


def test_the_strictest_fail_mode_of_a_routes_sets_applies() -> None:
    route = Route(
        "a", "/a", ("http://u:1",), rate_limit=RateLimitSettings(limits="5/second", fail_mode="closed")
    )
    rules = compile_policies(Settings(routes=(route,), rate_limit_ip_ceiling="9/second"))["a"]
    assert rules is not None and rules.fail_mode == "closed"
