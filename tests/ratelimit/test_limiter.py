"""The decision, held to `limits` as the reference, on a real Redis and in memory.

The same contract runs against both limiters. Time is pinned (a clock the test moves) so a
sequence of hits is replayed identically by the reference; the pinned instants are multiples of
1/8 s, exact in binary floating point, so `limits`' float arithmetic and ours agree to the last
unit. Concurrency and key expiry run on Redis's own clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from fractions import Fraction

import limits
import limits.storage.memory
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.autopipeline import AutoPipeline
from gateway.ratelimit.limiter import Limiter, MemoryLimiter, RedisLimiter, counter_keys
from gateway.ratelimit.policy import Decision, Limit, Strategy, parse_limits
from tests.support.redis_server import RedisServer


class Clock:
    """A pinned clock kept in whole microseconds, so moving it never accumulates float error."""

    def __init__(self) -> None:
        self.us = int(time.time()) // 3600 * 3_600_000_000  # aligned to every window used

    @property
    def now(self) -> float:
        return self.us / 1_000_000

    @now.setter
    def now(self, value: float) -> None:
        self.us = round(value * 1_000_000)

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:  # stands in for the `time` module inside limits' memory storage
        return self.now


Factory = Callable[..., Limiter]


@pytest.fixture(params=["redis", "memory"])
async def make_limiter(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[Factory]:
    """Builds limiters of one backend; Redis ones share the flushed test server."""
    clients: list[Redis] = []
    if request.param == "memory":
        yield lambda **kw: MemoryLimiter(**kw)
        return
    request.getfixturevalue("redis_url")  # flush

    def build(**kw: object) -> Limiter:
        client = Redis(host=redis_server.host, port=redis_server.port)
        clients.append(client)
        return RedisLimiter(AutoPipeline(client, timeout=2.0), **kw)  # type: ignore[arg-type]

    yield build
    for client in clients:
        await client.aclose()


class LimitsReference:
    """`limits` deciding several limits together: admit only if every `test()` passes, then
    `hit()` them all (so a refused request is not charged, as in our limiter)."""

    def __init__(self, strategy: str, text: str, clock: Clock, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setattr(limits.storage.memory, "time", clock)
        self.storage = limits.storage.MemoryStorage()
        kind = {
            "sliding": limits.strategies.SlidingWindowCounterRateLimiter,
            "fixed": limits.strategies.FixedWindowRateLimiter,
        }[strategy]
        self.limiter = kind(self.storage)
        self.items = limits.parse_many(text)

    def hit(self, cost: int) -> tuple[bool, list[int]]:
        ok = all(self.limiter.test(item, "k", cost=cost) for item in self.items)
        if ok:
            assert all(self.limiter.hit(item, "k", cost=cost) for item in self.items)
        return ok, [self.remaining(item) for item in self.items]

    def remaining(self, item: limits.RateLimitItem) -> int:
        if isinstance(self.limiter, limits.strategies.FixedWindowRateLimiter):
            return max(0, item.amount - self.storage.get(item.key_for("k")))
        return int(self.limiter.get_window_stats(item, "k").remaining)


class GcraReference:
    """The textbook GCRA (virtual scheduling) in exact arithmetic, for every limit together."""

    def __init__(self, parsed: Sequence[Limit]) -> None:
        self.limits = parsed
        self.tat = [Fraction(0)] * len(parsed)

    def hit(self, now: Fraction, cost: int) -> tuple[bool, list[int]]:
        emission = [Fraction(lim.period, lim.amount) for lim in self.limits]
        tats = [max(tat, now) for tat in self.tat]
        ok = all(
            tat + cost * t - lim.burst * t <= now
            for tat, t, lim in zip(tats, emission, self.limits, strict=True)
        )
        if ok:
            self.tat = [tat + cost * t for tat, t in zip(tats, emission, strict=True)]
        remaining = [
            min(lim.burst, int((now + lim.burst * t - max(tat, now)) // t))
            for tat, t, lim in zip(self.tat, emission, self.limits, strict=True)
        ]
        return ok, remaining


def remainings(decision: Decision) -> list[int]:
    return [s.remaining for s in decision.states]


@pytest.mark.parametrize(
    ("strategy", "text"),
    [
        ("sliding", "5/second"),
        ("sliding", "7/2 seconds;12/4 seconds"),
        ("fixed", "5/second"),
        ("fixed", "7/2 seconds;12/5 seconds"),
        ("gcra", "4/second burst 3"),
        ("gcra", "8/2 seconds burst 5;20/10 seconds"),
    ],
)
async def test_each_strategy_matches_the_reference_over_a_sequence_of_hits(
    make_limiter: Factory, monkeypatch: pytest.MonkeyPatch, strategy: Strategy, text: str
) -> None:
    clock = Clock()
    limiter = make_limiter(clock=clock)
    parsed = parse_limits(text, strategy, "test")
    reference: LimitsReference | GcraReference = (
        GcraReference(parsed) if strategy == "gcra" else LimitsReference(strategy, text, clock, monkeypatch)
    )
    rng = random.Random(f"{strategy}{text}")
    admitted = refused = 0
    for step in range(400):
        clock.now += rng.choice([0, 0, 0.125, 0.125, 0.25, 0.5, 1.0, 2.5])
        cost = rng.choice([1, 1, 1, 2, 3])
        got = await limiter.hit("k", parsed, strategy, cost)
        if isinstance(reference, GcraReference):
            expected = reference.hit(Fraction(clock.now), cost)
        else:
            expected = reference.hit(cost)
        assert (got.allowed, remainings(got)) == expected, f"hit {step} at +{clock.now % 100}"
        admitted += got.allowed
        refused += not got.allowed
    assert admitted > 50 and refused > 50  # the sequence exercised both outcomes


@pytest.mark.parametrize("strategy", ["sliding", "fixed", "gcra"])
async def test_several_limits_are_decided_together(make_limiter: Factory, strategy: Strategy) -> None:
    clock = Clock()
    limiter = make_limiter(clock=clock)
    parsed = parse_limits("3/second;4/minute", strategy, "test")
    results = []
    for _ in range(3):
        results.append((await limiter.hit("k", parsed, strategy, 1)).allowed)
        clock.now += 1.5  # the per-second limit always has room again
    refused = await limiter.hit("k", parsed, strategy, 2)  # the minute has room for 1, not 2
    assert results == [True, True, True]
    assert not refused.allowed
    assert [s.retry_ms > 0 for s in refused.states] == [False, True]
    # Refused as a whole, so neither limit was charged: the per-second one still shows 3.
    assert refused.states[0].remaining == 3
    assert (await limiter.hit("k", parsed, strategy, 1)).allowed
    assert not (await limiter.hit("k", parsed, strategy, 1)).allowed


@pytest.mark.parametrize("strategy", ["sliding", "fixed", "gcra"])
async def test_costs_and_no_charge_on_reject(make_limiter: Factory, strategy: Strategy) -> None:
    clock = Clock()
    limiter = make_limiter(clock=clock)
    parsed = parse_limits("10/minute", strategy, "test")
    assert remainings(await limiter.hit("k", parsed, strategy, 4)) == [6]
    assert remainings(await limiter.hit("k", parsed, strategy, 4)) == [2]
    for _ in range(5):  # a busy client hammering with an expensive request...
        assert not (await limiter.hit("k", parsed, strategy, 3)).allowed
    assert remainings(await limiter.hit("k", parsed, strategy, 2)) == [0]  # ...is not charged


@pytest.mark.parametrize("strategy", ["sliding", "fixed", "gcra"])
async def test_charging_rejected_requests_is_an_option(make_limiter: Factory, strategy: Strategy) -> None:
    clock = Clock()
    limiter = make_limiter(clock=clock, charge_rejected=True)
    parsed = parse_limits("10/minute", strategy, "test")
    await limiter.hit("k", parsed, strategy, 8)
    assert not (await limiter.hit("k", parsed, strategy, 3)).allowed
    assert not (await limiter.hit("k", parsed, strategy, 1)).allowed


@pytest.mark.parametrize(
    ("strategy", "text"),
    [("sliding", "10/2 seconds"), ("fixed", "10/2 seconds"), ("gcra", "3/second burst 5")],
)
async def test_retry_and_reset_times_are_exact(make_limiter: Factory, strategy: Strategy, text: str) -> None:
    """Waiting `retry_ms` is always enough and one ms less never is; `reset_ms` is when more
    quota appears. (Cost-0 hits look without charging.)"""
    clock = Clock()
    limiter = make_limiter(clock=clock)
    parsed = parse_limits(text, strategy, "test")
    rng = random.Random(strategy)
    checked = 0
    for _ in range(200):
        clock.now += rng.choice([0, 0, 0, 0.125, 0.375])
        cost = rng.choice([1, 2, 3])
        decision = await limiter.hit("k", parsed, strategy, cost)
        state = decision.states[0]
        if not decision.allowed:
            checked += 1
            start = clock.now
            clock.now = start + (state.retry_ms - 1) / 1000
            assert not (await limiter.hit("k", parsed, strategy, cost)).allowed
            clock.now = start + state.retry_ms / 1000
            assert (await limiter.hit("k", parsed, strategy, cost)).allowed
        elif state.reset_ms > 0 and rng.random() < 0.1:
            start = clock.now
            clock.now = start + (state.reset_ms - 1) / 1000
            assert remainings(await limiter.hit("k", parsed, strategy, 0)) == [state.remaining]
            clock.now = start + state.reset_ms / 1000
            assert remainings(await limiter.hit("k", parsed, strategy, 0))[0] > state.remaining
    assert checked > 10


async def test_clients_do_not_share_counters(make_limiter: Factory) -> None:
    limiter = make_limiter()
    parsed = parse_limits("1/minute", "sliding", "test")
    assert (await limiter.hit("a", parsed, "sliding", 1)).allowed
    assert (await limiter.hit("b", parsed, "sliding", 1)).allowed
    assert not (await limiter.hit("a", parsed, "sliding", 1)).allowed


# -- Redis only: its clock, its expiry, its concurrency ------------------------------------


def test_all_keys_of_one_client_share_a_cluster_slot() -> None:
    parsed = parse_limits("1/second;2/minute;3/hour", "gcra", "test")
    for identity in ("default|ip=203.0.113.9", "#" + "f" * 32):
        slots = {key_slot(key.encode()) for key in counter_keys(identity, parsed, "gcra")}
        assert len(slots) == 1


@pytest.mark.parametrize(
    ("strategy", "text", "bound_ms"),
    [("sliding", "5/10 seconds", 20_000), ("fixed", "5/10 seconds", 10_000), ("gcra", "5/10 seconds", 2_000)],
)
async def test_every_key_expires(
    redis_server: RedisServer, redis_url: str, strategy: Strategy, text: str, bound_ms: int
) -> None:
    client = Redis(host=redis_server.host, port=redis_server.port)
    try:
        limiter = RedisLimiter(AutoPipeline(client, timeout=2.0))
        parsed = parse_limits(text + ";100/hour", strategy, "test")
        assert (await limiter.hit("ttl", parsed, strategy, 1)).allowed
        keys = await client.keys("*")
        assert len(keys) == 2
        ttls = {key: await client.pttl(key) for key in keys}
        assert all(ttl > 0 for ttl in ttls.values()), ttls
        short = next(k for k in keys if b":5:10:" in k)
        assert ttls[short] <= bound_ms
    finally:
        await client.aclose()


@pytest.mark.parametrize("strategy", ["sliding", "fixed", "gcra"])
async def test_concurrent_decisions_never_over_admit(
    redis_server: RedisServer, redis_url: str, strategy: Strategy
) -> None:
    """600 simultaneous requests through four separate clients, each with its own pipeline
    and connections: exactly the limit is admitted, never one more, never one less."""
    clients = [Redis(host=redis_server.host, port=redis_server.port) for _ in range(4)]
    try:
        limiters = [RedisLimiter(AutoPipeline(c, timeout=5.0)) for c in clients]
        parsed = parse_limits("100/day", strategy, "test")
        decisions = await asyncio.gather(
            *(limiters[i % 4].hit("hot", parsed, strategy, 1) for i in range(600))
        )
        assert sum(d.allowed for d in decisions) == 100
        assert min(s.remaining for d in decisions for s in d.states) == 0
    finally:
        for client in clients:
            await client.aclose()
