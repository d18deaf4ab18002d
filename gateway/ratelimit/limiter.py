"""Limiter adapters: one decision per request over all of a client's limits.

`RedisLimiter` sends the decision script through the worker's `AutoPipeline`: one EVALSHA per
request, batched with whatever else the same tick sends (the cache lookup). `MemoryLimiter` is
the same state machine in-process, for a gateway without Redis and for the `local` fail mode.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from gateway.autopipeline import AutoPipeline
from gateway.errors import StoreUnavailable
from gateway.lua import load_script
from gateway.ratelimit.policy import Check, Decision, Limit, LimitState, Strategy
from gateway.types import Clock

log = logging.getLogger("gateway.ratelimit")
SCRIPT = load_script("gateway.ratelimit", "decide.lua")
KEY_PREFIX = "gw:rl1:"


class Limiter(Protocol):
    def hit(
        self, identity: str, limits: Sequence[Limit], strategy: Strategy, cost: int
    ) -> Awaitable[Decision]:
        """Admit when every limit has room for `cost`, charging all of them; a refused request
        is not charged. Raises `StoreUnavailable` when the store cannot decide. Implementations
        start the work before returning, so the caller can batch other commands behind it."""
        ...

    def hit_all(self, checks: Sequence[Check], tag: str) -> Awaitable[Decision]:
        """Several limit sets of one request in one atomic decision: admitted when every
        enforced set has room, and then every set with room is charged. `tag` is the hash tag
        all their keys share (one Cluster slot). The decision's states are the checks' limits
        in order."""
        ...

    @property
    def degraded(self) -> str:
        """Empty while the store decides; otherwise what is wrong (for the readiness check)."""
        ...


@lru_cache(maxsize=8192)  # busy clients come back: build their key strings once
def counter_keys(
    identity: str, limits: tuple[Limit, ...], strategy: Strategy, tag: str | None = None
) -> tuple[str, ...]:
    """One key per limit. Alone, a set's keys carry the `{identity}` hash tag (a client's keys
    in one slot, clients spread over the Cluster); decided with other sets, they carry the
    shared `tag` instead, since one script may only touch one slot."""
    head = f"{KEY_PREFIX}{{{identity}}}" if tag is None else f"{KEY_PREFIX}{{{tag}}}:{identity}"
    return tuple(f"{head}:{strategy}:{lim.amount}:{lim.period}:{lim.burst}" for lim in limits)


@lru_cache(maxsize=1024)
def _check_args(
    limits: tuple[Limit, ...], strategy: Strategy, cost: int, enforce: bool
) -> tuple[str | int, ...]:
    """The script's per-limit arguments, fixed for a policy, a cost and a mode."""
    args: list[str | int] = []
    for lim in limits:
        args += [strategy, cost, int(enforce), lim.amount, lim.period * 1000, emission_us(lim), lim.burst]
    return tuple(args)


def emission_us(lim: Limit) -> int:
    """gcra's interval between requests, rounded up to a µs (never faster than the limit)."""
    return math.ceil(lim.period * 1_000_000 / lim.amount)


def _decision(reply: Sequence[int], limits: Sequence[Limit]) -> Decision:
    if len(limits) == 1:  # the common case, without a generator per request
        return Decision(bool(reply[0]), (LimitState(limits[0], int(reply[1]), int(reply[2]), int(reply[3])),))
    states = tuple(
        LimitState(lim, int(reply[1 + 3 * i]), int(reply[2 + 3 * i]), int(reply[3 + 3 * i]))
        for i, lim in enumerate(limits)
    )
    return Decision(bool(reply[0]), states)


class RedisLimiter:
    """Decides on the shared Redis; exact across every gateway process using it."""

    def __init__(
        self, pipeline: AutoPipeline, *, charge_rejected: bool = False, clock: Clock | None = None
    ) -> None:
        self.pipeline = pipeline
        self.charge_rejected = charge_rejected
        self._clock = clock  # tests only: production uses Redis TIME
        self._down_since: float | None = None
        self._error = ""

    def hit(
        self, identity: str, limits: Sequence[Limit], strategy: Strategy, cost: int
    ) -> Awaitable[Decision]:
        now = "" if self._clock is None else str(round(self._clock() * 1_000_000))
        limits = tuple(limits)
        args: tuple[str | int, ...] = (
            now,
            int(self.charge_rejected),
            *_check_args(limits, strategy, cost, True),
        )
        reply = self.pipeline.evalsha(SCRIPT, counter_keys(identity, limits, strategy), args)
        return self._decide(reply, limits)

    def hit_all(self, checks: Sequence[Check], tag: str) -> Awaitable[Decision]:
        now = "" if self._clock is None else str(round(self._clock() * 1_000_000))
        keys: list[str] = []
        args: list[str | int] = [now, int(self.charge_rejected)]
        limits: list[Limit] = []
        for c in checks:
            keys += counter_keys(c.identity, c.limits, c.strategy, tag)
            args += _check_args(c.limits, c.strategy, c.cost, c.enforce)
            limits += c.limits
        return self._decide(self.pipeline.evalsha(SCRIPT, keys, args), limits)

    async def _decide(self, reply: Awaitable[Any], limits: Sequence[Limit]) -> Decision:
        try:
            result = await reply
        except StoreUnavailable as exc:
            if self._down_since is None:
                self._down_since = time.time()
                log.warning(
                    "rate-limit store unavailable (%s): each route's fail mode "
                    "applies until it answers again",
                    exc,
                )
            self._error = str(exc)
            raise
        if self._down_since is not None:
            log.warning(
                "rate-limit store answering again after %.1fs: counting resumed",
                time.time() - self._down_since,
            )
            self._down_since, self._error = None, ""
        return _decision(result, limits)

    @property
    def degraded(self) -> str:
        if self._down_since is None:
            return ""
        return f"store unavailable for {time.time() - self._down_since:.0f}s: {self._error}"


class MemoryLimiter:
    """The script's state machine in-process: the same decisions within one process."""

    SWEEP_EVERY = 4096

    def __init__(self, *, charge_rejected: bool = False, clock: Clock = time.time) -> None:
        self.charge_rejected = charge_rejected
        self._clock = clock
        self._store: dict[str, tuple[int, tuple[int, ...]]] = {}  # key -> (expires µs, state)
        self._hits = 0

    async def hit(self, identity: str, limits: Sequence[Limit], strategy: Strategy, cost: int) -> Decision:
        return self.decide(identity, limits, strategy, cost)

    async def hit_all(self, checks: Sequence[Check], tag: str) -> Decision:
        return self.decide_all(checks, tag)

    def decide(self, identity: str, limits: Sequence[Limit], strategy: Strategy, cost: int) -> Decision:
        return self.decide_all((Check(identity, tuple(limits), strategy, cost),), None)

    def decide_all(self, checks: Sequence[Check], tag: str | None) -> Decision:
        now_us = round(self._clock() * 1_000_000)
        self._sweep(now_us)
        planned: list[tuple[str, Limit, _Step, int, bool]] = []
        for c in checks:
            step = _STEPS[c.strategy]
            for key, lim in zip(counter_keys(c.identity, c.limits, c.strategy, tag), c.limits, strict=True):
                found = self._store.get(key)
                planned.append(
                    (key, lim, step(lim, found[1] if found else None, now_us, c.cost), c.cost, c.enforce)
                )
        allowed = all(s.fits for _, _, s, _, enforce in planned if enforce)
        states = []
        for key, lim, s, cost, _ in planned:
            charge = cost > 0 and ((allowed and s.fits) or self.charge_rejected)
            if charge:
                self._store[key] = (s.expires_us, s.charged)
            states.append(LimitState(lim, *s.result(charge)))
        return Decision(allowed, tuple(states))

    def _sweep(self, now_us: int) -> None:
        self._hits += 1
        if self._hits % self.SWEEP_EVERY == 0:
            self._store = {k: v for k, v in self._store.items() if v[0] > now_us}

    @property
    def degraded(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class _Step:
    fits: bool
    charged: tuple[int, ...]  # the state to store when the request is charged
    expires_us: int
    result: Callable[[bool], tuple[int, int, int]]  # charged -> remaining, reset, retry


def _sliding_wait(p: int, c: int, r: int, w: int, room: int) -> int:
    if room < 0:
        return w
    a = room - c
    if a >= 0:
        if a >= p:
            return 0
        first = w - -(-(a + 1) * w // p) + 1
        return max(0, first - r)
    first = w - -(-(room + 1) * w // c) + 1 if room < c else 0
    return w - r + first


def _sliding(lim: Limit, state: tuple[int, ...] | None, now_us: int, cost: int) -> _Step:
    w, now = lim.period * 1000, now_us // 1000
    idx, p, c = now // w, 0, 0
    if state is not None:
        if state[0] >= idx:
            p, c = state[1], state[2]
        elif state[0] == idx - 1:
            p = state[2]
    r = now - idx * w

    def result(charged: bool) -> tuple[int, int, int]:
        cur = c + cost if charged else c
        used = p * (w - r) // w + cur
        reset = _sliding_wait(p, cur, r, w, used - 1) if used > 0 else 0
        retry = 0 if fits else _sliding_wait(p, cur, r, w, lim.amount - cost)
        return max(0, lim.amount - used), reset, retry

    fits = p * (w - r) // w + c + cost <= lim.amount
    return _Step(fits, (idx, p, c + cost), ((idx + 2) * w) * 1000, result)


def _fixed(lim: Limit, state: tuple[int, ...] | None, now_us: int, cost: int) -> _Step:
    w, now = lim.period * 1000, now_us // 1000
    start, c = state if state is not None and now < state[0] + w else (now, 0)

    def result(charged: bool) -> tuple[int, int, int]:
        cur = c + cost if charged else c
        left = start + w - now
        return max(0, lim.amount - cur), left if cur > 0 else 0, 0 if fits else left

    fits = c + cost <= lim.amount
    return _Step(fits, (start, c + cost), (start + w) * 1000, result)


def _gcra(lim: Limit, state: tuple[int, ...] | None, now_us: int, cost: int) -> _Step:
    t, b = emission_us(lim), lim.burst
    tau = t * b
    tat = max(state[0], now_us) if state is not None else now_us

    def result(charged: bool) -> tuple[int, int, int]:
        cur = tat + cost * t if charged else tat
        remaining = max(0, (now_us + tau - cur) // t)
        if remaining >= b:
            remaining, reset = b, 0
        else:
            reset = _ceil_ms(cur - tau + (remaining + 1) * t - now_us)
        return remaining, reset, 0 if fits else _ceil_ms(cur + cost * t - tau - now_us)

    fits = tat + cost * t - tau <= now_us
    return _Step(fits, (tat + cost * t,), tat + cost * t, result)


def _ceil_ms(us: int) -> int:
    return -(-us // 1000)


_STEPS: dict[str, Callable[[Limit, tuple[int, ...] | None, int, int], _Step]] = {
    "sliding": _sliding,
    "fixed": _fixed,
    "gcra": _gcra,
}
