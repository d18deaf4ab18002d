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
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Final, Literal, cast

import limits

from gateway.config import RateLimitSettings, Route, Settings
from gateway.errors import BadRequest, ConfigError
from gateway.http.fields import header_values
from gateway.http.identity import client_group
from gateway.http.identity import is_trusted as _in_networks  # a plain membership test
from gateway.types import RawHeaders

Strategy = Literal["sliding", "fixed", "gcra"]
FailMode = Literal["open", "closed", "local"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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
class Check:
    """One limit set applied to one request: whose counters, which limits, at what cost."""

    identity: str
    limits: tuple[Limit, ...]
    strategy: Strategy
    cost: int
    enforce: bool = True  # False: a shadow set, counted but never refusing


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

    def identity(self, client_ip: str, headers: Sequence[tuple[bytes, bytes]], route: str) -> str | None:
        """The client's bounded key material, or None when the request is exempt."""
        if self.exempt_networks and _in_networks(client_ip, self.exempt_networks):
            return None
        parts: list[str] = []
        for part in self.key:
            if part.startswith("header:"):
                values = header_values(headers, part[7:].encode("latin-1"))
                if len(values) > 1:
                    # The limiter would count one copy while the upstream may honour another
                    # (the last, or a joined list): a fresh bucket per request for a real key.
                    raise BadRequest(f"More than one {part[7:]} field: a rate-limit key is one value.")
                value = values[0].decode("latin-1").strip() if values else ""
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
        f"header:{p[7:].lower()}" if p.lower().startswith("header:") else p for p in settings.key.split("+")
    )
    items = _item_names(name, parsed)
    policy_items = [
        f"{_sf_string(item)};q={lim.amount};w={lim.period}"
        + (f";gw-burst={lim.burst}" if settings.strategy == "gcra" else "")
        for item, lim in zip(items, parsed, strict=True)
    ]
    return RatePolicy(
        name=name,
        limits=parsed,
        strategy=cast(Strategy, settings.strategy),
        key=key,
        costs=settings.cost,
        exempt_networks=tuple(networks),
        exempt_values=frozenset(values),
        shadow=settings.shadow,
        fail_mode=cast(FailMode, settings.fail_mode),
        legacy_headers=settings.legacy_headers,
        items=items,
        policy_header=", ".join(policy_items).encode(),
    )


CEILING_NAME = "ip-ceiling"
CEILING_VARIABLE = "GATEWAY_RATE_LIMIT_IP_CEILING"
_FAIL_ORDER: Final[dict[str, int]] = {"open": 0, "local": 1, "closed": 2}


@dataclass(frozen=True, slots=True)
class RouteLimits:
    """A route's limit sets, decided together in one atomic step.

    With one set its keys carry the client's own hash tag (clients spread over a Cluster).
    With several, every key carries `tag` (derived from the route): one script may only
    touch one Cluster slot, so a route's multi-set counters live on one shard.
    """

    sets: tuple[RatePolicy, ...]
    tag: str
    fail_mode: FailMode  # the strictest of the sets': a protection is never weakened
    legacy_headers: bool

    @property
    def single(self) -> RatePolicy | None:
        return self.sets[0] if len(self.sets) == 1 else None


def compile_route(route: Route, settings: Settings) -> RouteLimits | None:
    """A route's sets: its own (`rate_limit`, more from a routes-file list) and the IP ceiling
    (GATEWAY_RATE_LIMIT_IP_CEILING), which every route gets in addition."""
    sets: list[RatePolicy] = []
    own = route.rate_limit_sets
    for i, rl in enumerate(own):
        if len(own) == 1:
            variable = (
                "GATEWAY_RATE_LIMIT" if rl == settings.rate_limit else f"routes[{route.name}].rate_limit"
            )
        else:
            variable = f"routes[{route.name}].rate_limit[{i}]"
        compiled = compile_policy(rl, variable)
        if compiled is not None:
            sets.append(compiled)
    if settings.rate_limit_ip_ceiling:
        sets.append(_ceiling(route, settings))
    if not sets:
        return None
    names = [item for s in sets for item in s.items]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"routes[{route.name}].rate_limit", "every limit set of a route needs its own policy name"
        )
    fail_mode = max((s.fail_mode for s in sets), key=_FAIL_ORDER.__getitem__)
    tag = f"route={route.name}"
    return RouteLimits(
        sets=tuple(sets),
        tag=tag if _PLAIN.fullmatch(tag) else f"#{_digest(tag)}",
        fail_mode=fail_mode,
        legacy_headers=any(s.legacy_headers for s in sets),
    )


def _ceiling(route: Route, settings: Settings) -> RatePolicy:
    """The per-IP ceiling on `route`: counted per client address (IPv6 by /64) and route, one
    unit per request whatever the route's costs, exempting only the route's exempt networks
    (an exempt header value must not lift a ceiling meant for clients that invent keys)."""
    base = settings.rate_limit
    ceiling = RateLimitSettings(
        limits=settings.rate_limit_ip_ceiling,
        key="ip+route",
        strategy=base.strategy,
        fail_mode=base.fail_mode,
        exempt=route.rate_limit.exempt,
        policy=CEILING_NAME,
        legacy_headers=base.legacy_headers,
    )
    compiled = compile_policy(ceiling, CEILING_VARIABLE)
    assert compiled is not None  # the variable is non-empty here
    return replace(compiled, exempt_values=frozenset())


def compile_policies(settings: Settings) -> dict[str, RouteLimits | None]:
    """Every route's limit sets by route name; raises ConfigError naming the setting at fault.
    Call it at start-up (and in check-config) so a bad limit never waits for a request."""
    if settings.rate_limit_ip_ceiling and not parse_limits(
        settings.rate_limit_ip_ceiling, settings.rate_limit.strategy, CEILING_VARIABLE
    ):
        raise ConfigError(CEILING_VARIABLE, "expected a rate limit such as 1000/minute")
    return {route.name: compile_route(route, settings) for route in settings.routes}


def several_response_headers(sets: Sequence[RatePolicy], decision: Decision) -> RawHeaders:
    """Fields for an admitted request decided over several sets: every enforced set's limits
    in RateLimit-Policy and RateLimit, the tightest of them in the legacy trio."""
    pairs = _enforced(sets, decision)
    if not pairs:
        return []
    policy = ", ".join(s.policy_header.decode() for s in sets if not s.shadow)
    ratelimit = ", ".join(
        f"{_sf_string(item)};r={st.remaining};t={_seconds(st.reset_ms)}" for item, st in pairs
    )
    headers = [(b"ratelimit-policy", policy.encode()), (b"ratelimit", ratelimit.encode())]
    if any(s.legacy_headers for s in sets):
        tightest = min((st for _, st in pairs), key=lambda st: (st.remaining, -st.reset_ms))
        headers += _legacy(tightest, tightest.reset_ms)
    return headers


def several_rejection_headers(sets: Sequence[RatePolicy], decision: Decision) -> RawHeaders:
    """Fields for a 429 decided over several sets: only the refusing (enforced) limits in
    RateLimit, each `t` no later than `Retry-After`; every enforced set in RateLimit-Policy."""
    refused = [(item, st) for item, st in _enforced(sets, decision) if st.retry_ms]
    policy = ", ".join(s.policy_header.decode() for s in sets if not s.shadow)
    ratelimit = ", ".join(
        f"{_sf_string(item)};r={st.remaining};t={_seconds(st.retry_ms)}" for item, st in refused
    )
    retry_ms = max((st.retry_ms for _, st in refused), default=0)
    headers = [
        (b"ratelimit-policy", policy.encode()),
        (b"ratelimit", ratelimit.encode()),
        (b"retry-after", str(max(1, _seconds(retry_ms))).encode()),
    ]
    if refused and any(s.legacy_headers for s in sets):
        binding = max((st for _, st in refused), key=lambda st: st.retry_ms)
        headers += _legacy(binding, binding.retry_ms)
    return headers


def several_violated(sets: Sequence[RatePolicy], decision: Decision, *, shadow: bool) -> list[str]:
    """Names of the limits (of enforced sets, or of shadow sets) that had no room."""
    names: list[str] = []
    i = 0
    for s in sets:
        for item in s.items:
            if s.shadow == shadow and decision.states[i].retry_ms:
                names.append(item)
            i += 1
    return names


def _enforced(sets: Sequence[RatePolicy], decision: Decision) -> list[tuple[str, LimitState]]:
    pairs: list[tuple[str, LimitState]] = []
    i = 0
    for s in sets:
        for item in s.items:
            if not s.shadow:
                pairs.append((item, decision.states[i]))
            i += 1
    return pairs


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
