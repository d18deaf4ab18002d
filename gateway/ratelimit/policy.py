"""Rate-limit policy: limits, client keys and header values (pure: values in, decisions out).

A `RatePolicy` is compiled once from `RateLimitSettings`; per request it answers who the client
is (`identity`), what the request costs (`cost`) and, given the limiter's `Decision`, which
header fields to send. Header values follow draft-ietf-httpapi-ratelimit-headers-10:
`RateLimit-Policy` lists each quota policy (§3: `"name";q=<quota>;w=<window seconds>`) and
`RateLimit` each service limit (§4: `"name";r=<remaining>;t=<seconds until more quota>`). §6 asks
that `Retry-After` never point earlier than `t`, so a 429 lists only the limits that refused it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal, cast

import limits

from gateway.config import RateLimitSettings, Settings
from gateway.errors import ConfigError
from gateway.http.headers import get
from gateway.http.identity import client_group
from gateway.http.identity import is_trusted as _in_networks  # a plain membership test

Strategy = Literal["sliding", "fixed", "gcra"]
FailMode = Literal["open", "closed", "local"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RawHeaders = list[tuple[bytes, bytes]]

STRATEGIES: Final[frozenset[str]] = frozenset({"sliding", "fixed", "gcra"})
FAIL_MODES: Final[frozenset[str]] = frozenset({"open", "closed", "local"})
_BURST = re.compile(r"\s+burst\s+(\d+)\s*$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[,;|]")
#: Key material made only of these and no longer than this is kept readable; anything else is
#: hashed, so a client cannot grow Redis keys (or break the `{hash tag}`) with long headers.
_PLAIN = re.compile(r"[A-Za-z0-9._:/=&|-]{1,96}")


@dataclass(frozen=True, slots=True)
class Limit:
    """One quota: `amount` units per `period` seconds; `burst` is the gcra bucket size."""

    amount: int
    period: int
    burst: int
    text: str


@dataclass(frozen=True, slots=True)
class LimitState:
    """Where a client stands against one limit after a decision (times in milliseconds)."""

    limit: Limit
    remaining: int
    reset_ms: int  # until more quota becomes available (0: the quota is full)
    retry_ms: int  # until this request's cost would fit (0: it fits now)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    states: tuple[LimitState, ...]

    @property
    def retry_after_ms(self) -> int:
        return max((s.retry_ms for s in self.states), default=0)


def parse_limits(text: str, strategy: str, variable: str) -> tuple[Limit, ...]:
    """`"10/second;1000/hour"` (the `limits` syntax); with gcra, `"100/minute burst 20"`."""
    parsed: list[Limit] = []
    for raw in filter(None, (p.strip() for p in _SEPARATORS.split(text))):
        match = _BURST.search(raw)
        spec = raw[: match.start()] if match else raw
        try:
            (item,) = limits.parse_many(spec)
        except ValueError:
            raise ConfigError(variable, f"not a rate limit: {raw!r}") from None
        if match and strategy != "gcra":
            raise ConfigError(variable, f"'burst' needs the gcra strategy: {raw!r}")
        amount, period = int(item.amount), int(item.get_expiry())
        burst = int(match.group(1)) if match else amount
        if amount < 1 or burst < 1:
            raise ConfigError(variable, f"a limit must allow at least one request: {raw!r}")
        parsed.append(Limit(amount, period, burst, raw))
    return tuple(parsed)


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """One route's compiled rate-limit settings."""

    name: str
    limits: tuple[Limit, ...]
    strategy: Strategy
    key: tuple[str, ...]  # "ip", "route", "global" or a lowercase header name
    costs: Mapping[str, int]
    exempt_networks: tuple[Network, ...]
    exempt_values: frozenset[str]
    shadow: bool
    fail_mode: FailMode
    legacy_headers: bool
    items: tuple[str, ...]  # RateLimit item name of each limit
    policy_header: bytes

    def cost(self, method: str) -> int:
        return self.costs.get(method, self.costs.get("*", 1))

    def identity(
        self, client_ip: str, headers: Sequence[tuple[bytes, bytes]], route: str
    ) -> str | None:
        """The client's bounded key material, or None when the request is exempt."""
        if self.exempt_networks and _in_networks(client_ip, self.exempt_networks):
            return None
        parts: list[str] = []
        for part in self.key:
            if part.startswith("header:"):
                value = (get(headers, part[7:].encode("latin-1")) or b"").decode("latin-1").strip()
                if value in self.exempt_values:
                    return None
                # A secret (an API key) is never stored in Redis as is.
                parts.append(f"{part[7:]}={_digest(value)}" if value else _ip_part(client_ip))
            elif part == "ip":
                parts.append(_ip_part(client_ip))
            elif part == "route":
                parts.append(f"route={route}")
            else:
                parts.append("global")
        material = f"{self.name}|{'&'.join(dict.fromkeys(parts))}"
        return material if _PLAIN.fullmatch(material) else f"#{_digest(material)}"


def compile_policy(settings: RateLimitSettings, variable: str) -> RatePolicy | None:
    """Validate and compile; None when no limit is configured. `variable` names the setting
    in errors (`GATEWAY_RATE_LIMIT` or the route's place in the routes file)."""
    if settings.strategy not in STRATEGIES:
        raise ConfigError(variable, f"unknown strategy {settings.strategy!r}")
    if settings.fail_mode not in FAIL_MODES:
        raise ConfigError(variable, f"unknown fail mode {settings.fail_mode!r}")
    parsed = parse_limits(settings.limits, settings.strategy, variable)
    if not parsed:
        return None
    name = settings.policy or "default"
    capacity = min(lim.burst if settings.strategy == "gcra" else lim.amount for lim in parsed)
    for method, cost in settings.cost.items():
        if cost > capacity:
            raise ConfigError(variable, f"cost {cost} for {method} can never fit the limits")
    networks: list[Network] = []
    values: set[str] = set()
    for entry in settings.exempt:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            values.add(entry)
    key = tuple(
        f"header:{p[7:].lower()}" if p.lower().startswith("header:") else p
        for p in settings.key.split("+")
    )
    items = _item_names(name, parsed)
    policy_items = [
        f"{_sf_string(item)};q={lim.amount};w={lim.period}"
        + (f";gw-burst={lim.burst}" if settings.strategy == "gcra" else "")
        for item, lim in zip(items, parsed, strict=True)
    ]
    return RatePolicy(
        name=name, limits=parsed, strategy=cast(Strategy, settings.strategy),
        key=key, costs=settings.cost, exempt_networks=tuple(networks),
        exempt_values=frozenset(values), shadow=settings.shadow,
        fail_mode=cast(FailMode, settings.fail_mode),
        legacy_headers=settings.legacy_headers, items=items,
        policy_header=", ".join(policy_items).encode(),
    )


def compile_policies(settings: Settings) -> dict[str, RatePolicy | None]:
    """Every route's policy by route name; raises ConfigError naming the setting at fault.
    Call it at start-up (and in check-config) so a bad limit never waits for a request."""
    return {
        route.name: compile_policy(
            route.rate_limit,
            "GATEWAY_RATE_LIMIT" if route.rate_limit == settings.rate_limit
            else f"routes[{route.name}].rate_limit",
        )
        for route in settings.routes
    }


def response_headers(policy: RatePolicy, decision: Decision) -> RawHeaders:
    """Fields for an admitted request: every limit, the tightest one in the legacy trio."""
    states = decision.states
    if len(states) == 1:  # the common case, without the general path's per-call overhead
        tightest = states[0]
        ratelimit = f"{_sf_string(policy.items[0])};r={tightest.remaining};t={_seconds(tightest.reset_ms)}"
    else:
        ratelimit = ", ".join(
            f"{_sf_string(item)};r={s.remaining};t={_seconds(s.reset_ms)}"
            for item, s in zip(policy.items, states, strict=True)
        )
        tightest = min(states, key=lambda s: (s.remaining, -s.reset_ms))
    headers = [(b"ratelimit-policy", policy.policy_header), (b"ratelimit", ratelimit.encode())]
    if policy.legacy_headers:
        headers += _legacy(tightest, tightest.reset_ms)
    return headers


def rejection_headers(policy: RatePolicy, decision: Decision) -> RawHeaders:
    """Fields for a 429: only the refusing limits, each `t` no later than `Retry-After`."""
    refused = [(i, s) for i, s in zip(policy.items, decision.states, strict=True) if s.retry_ms]
    ratelimit = ", ".join(
        f"{_sf_string(item)};r={s.remaining};t={_seconds(s.retry_ms)}" for item, s in refused
    )
    retry_after = max(1, _seconds(decision.retry_after_ms))
    headers = [
        (b"ratelimit-policy", policy.policy_header),
        (b"ratelimit", ratelimit.encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    if policy.legacy_headers:
        binding = max((s for _, s in refused), key=lambda s: s.retry_ms)
        headers += _legacy(binding, binding.retry_ms)
    return headers


def violated(policy: RatePolicy, decision: Decision) -> list[str]:
    """Names of the limits that refused the request (the problem type's violated-policies)."""
    return [i for i, s in zip(policy.items, decision.states, strict=True) if s.retry_ms]


def _legacy(state: LimitState, reset_ms: int) -> RawHeaders:
    return [
        (b"x-ratelimit-limit", str(state.limit.amount).encode()),
        (b"x-ratelimit-remaining", str(state.remaining).encode()),
        (b"x-ratelimit-reset", str(_seconds(reset_ms)).encode()),
    ]


def _seconds(ms: int) -> int:
    """Whole seconds, rounded up: a client waiting this long never comes back too early."""
    return max(0, -(-ms // 1000))


def _item_names(policy: str, parsed: tuple[Limit, ...]) -> tuple[str, ...]:
    if len(parsed) == 1:
        return (policy,)
    names: list[str] = []
    for i, lim in enumerate(parsed):
        name = f"{policy}-{lim.period}s"
        names.append(name if name not in names else f"{name}-{i}")
    return tuple(names)


@lru_cache(maxsize=1024)  # item names are few and fixed; this runs for every response
def _sf_string(value: str) -> str:
    """An RFC 8941 sf-string (printable ASCII; quote and backslash escaped)."""
    clean = "".join(c for c in value if " " <= c <= "~")
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _ip_part(client_ip: str) -> str:
    return f"ip={client_group(client_ip)}"
