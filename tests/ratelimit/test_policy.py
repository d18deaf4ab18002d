"""Limit parsing, client keys and header values: the pure rules, fed plain values."""

from __future__ import annotations

import re
from dataclasses import replace
from types import MappingProxyType

import pytest

from gateway.config import RateLimitSettings
from gateway.errors import ConfigError
from gateway.ratelimit.policy import (
    Decision,
    Limit,
    LimitState,
    RatePolicy,
    compile_policy,
    parse_limits,
    rejection_headers,
    response_headers,
    violated,
)

VAR = "GATEWAY_RATE_LIMIT"


def policy(**changes: object) -> RatePolicy:
    settings = replace(RateLimitSettings(limits="10/second"), **changes)  # type: ignore[arg-type]
    compiled = compile_policy(settings, VAR)
    assert compiled is not None
    return compiled


# -- limits -------------------------------------------------------------------------------


def test_parses_the_usual_syntax_with_several_limits() -> None:
    parsed = parse_limits("10/second;1000/hour, 5 per 2 minutes", "sliding", VAR)
    assert [(lim.amount, lim.period) for lim in parsed] == [(10, 1), (1000, 3600), (5, 120)]
    assert all(lim.burst == lim.amount for lim in parsed)


def test_gcra_takes_a_burst_and_defaults_it_to_the_amount() -> None:
    burst, plain = parse_limits("100/minute burst 20; 5/second", "gcra", VAR)
    assert (burst.amount, burst.period, burst.burst) == (100, 60, 20)
    assert plain.burst == 5


@pytest.mark.parametrize(
    ("text", "strategy", "message"),
    [
        ("ten per second", "sliding", "not a rate limit"),
        ("10/fortnight", "sliding", "not a rate limit"),
        ("100/minute burst 20", "sliding", "gcra"),
        ("0/second", "fixed", "at least one"),
        ("10/second burst 0", "gcra", "at least one"),
    ],
)
def test_bad_limits_name_the_variable(text: str, strategy: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_limits(text, strategy, VAR)
    assert caught.value.variable == VAR


def test_empty_limits_mean_off() -> None:
    assert compile_policy(RateLimitSettings(limits=""), VAR) is None


def test_a_cost_that_can_never_fit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="POST"):
        policy(limits="5/second", cost=MappingProxyType({"*": 1, "POST": 6}))
    with pytest.raises(ConfigError, match="POST"):
        policy(limits="50/second burst 4", strategy="gcra", cost={"*": 1, "POST": 5})


def test_cost_per_method_with_a_default() -> None:
    p = policy(cost={"*": 2, "POST": 5, "GET": 0})
    assert (p.cost("POST"), p.cost("GET"), p.cost("DELETE")) == (5, 0, 2)


# -- keys ---------------------------------------------------------------------------------


def test_ip_key_groups_ipv6_by_its_64() -> None:
    p = policy(key="ip")
    a = p.identity("2001:db8:1:2:aaaa::1", [], "api")
    b = p.identity("2001:db8:1:2:ffff::9", [], "api")
    c = p.identity("2001:db8:1:3::1", [], "api")
    assert a == b != c
    assert p.identity("203.0.113.9", [], "api") != p.identity("203.0.113.10", [], "api")


def test_header_key_falls_back_to_the_client_address() -> None:
    p = policy(key="header:X-API-Key")
    with_key = p.identity("203.0.113.9", [(b"x-api-key", b"k-1")], "api")
    other_ip = p.identity("198.51.100.1", [(b"x-api-key", b"k-1")], "api")
    without = p.identity("203.0.113.9", [], "api")
    assert with_key == other_ip  # the key, not the address, is the client
    assert without == policy(key="ip").identity("203.0.113.9", [], "api")
    assert with_key is not None and "k-1" not in with_key  # secrets are not stored as is


def test_a_repeated_key_header_is_refused_400_so_a_random_first_copy_cannot_split_the_bucket() -> None:
    """`X-API-Key: <random>` then `X-API-Key: <leaked>`: counting the first copy while the
    upstream honours the last would give every request a fresh bucket."""
    from gateway.errors import BadRequest

    p = policy(key="header:X-API-Key")
    with pytest.raises(BadRequest, match="More than one"):
        p.identity("203.0.113.9", [(b"x-api-key", b"random-1"), (b"x-api-key", b"leaked")], "api")


def test_route_global_and_combinations() -> None:
    assert policy(key="route").identity("1.1.1.1", [], "a") == policy(key="route").identity(
        "2.2.2.2", [], "a"
    )
    assert policy(key="route").identity("1.1.1.1", [], "a") != policy(key="route").identity(
        "1.1.1.1", [], "b"
    )
    g = policy(key="global")
    assert g.identity("1.1.1.1", [], "a") == g.identity("2.2.2.2", [], "b")
    combo = policy(key="route+header:X-API-Key")
    hdr = [(b"x-api-key", b"k")]
    assert combo.identity("1.1.1.1", hdr, "a") == combo.identity("2.2.2.2", hdr, "a")
    assert combo.identity("1.1.1.1", hdr, "a") != combo.identity("1.1.1.1", hdr, "b")


def test_policies_do_not_share_counters() -> None:
    assert policy(policy="free").identity("1.1.1.1", [], "a") != policy(policy="paid").identity(
        "1.1.1.1", [], "a"
    )


def test_key_material_is_bounded_and_safe_for_a_hash_tag() -> None:
    p = policy(key="header:X-Tenant+route", policy="p")
    for value in (b"x" * 10_000, b"{evil}", b"\xff\xfe"):
        identity = p.identity("1.1.1.1", [(b"x-tenant", value)], "r" * 300)
        assert identity is not None and len(identity) <= 100
        assert re.fullmatch(r"[A-Za-z0-9._:/=&|#-]+", identity)


def test_exemptions_by_cidr_and_by_key_value() -> None:
    p = policy(key="header:X-API-Key", exempt=("10.0.0.0/8", "2001:db8::/32", "partner"))
    assert p.identity("10.1.2.3", [], "a") is None
    assert p.identity("2001:db8::5", [], "a") is None
    assert p.identity("1.1.1.1", [(b"x-api-key", b"partner")], "a") is None
    assert p.identity("1.1.1.1", [(b"x-api-key", b"other")], "a") is not None


# -- header values ------------------------------------------------------------------------


def decision(p: RatePolicy, *states: tuple[int, int, int]) -> Decision:
    full = tuple(LimitState(lim, *s) for lim, s in zip(p.limits, states, strict=True))
    return Decision(all(s.retry_ms == 0 for s in full), full)


def test_admitted_headers_follow_draft_10_and_the_legacy_trio() -> None:
    p = policy(limits="10/second;1000/hour")
    headers = dict(response_headers(p, decision(p, (7, 400, 0), (997, 2_500_001, 0))))
    assert headers[b"ratelimit-policy"] == (b'"default-1s";q=10;w=1, "default-3600s";q=1000;w=3600')
    assert headers[b"ratelimit"] == b'"default-1s";r=7;t=1, "default-3600s";r=997;t=2501'
    assert headers[b"x-ratelimit-limit"] == b"10"  # the tightest limit
    assert headers[b"x-ratelimit-remaining"] == b"7"
    assert headers[b"x-ratelimit-reset"] == b"1"


def test_single_limit_uses_the_policy_name_and_gcra_reports_its_burst() -> None:
    p = policy(limits="100/minute burst 20", strategy="gcra", policy="partner")
    headers = dict(response_headers(p, decision(p, (19, 600, 0))))
    assert headers[b"ratelimit-policy"] == b'"partner";q=100;w=60;gw-burst=20'
    assert headers[b"ratelimit"] == b'"partner";r=19;t=1'


def test_legacy_headers_can_be_turned_off() -> None:
    p = policy(legacy_headers=False)
    names = {k for k, _ in response_headers(p, decision(p, (9, 1000, 0)))}
    assert names == {b"ratelimit-policy", b"ratelimit"}


def test_rejection_lists_the_refusing_limits_and_retry_after_is_never_earlier() -> None:
    p = policy(limits="10/second;1000/hour")
    d = decision(p, (0, 900, 1_200), (500, 3_000_000, 0))
    headers = rejection_headers(p, d)
    found = dict(headers)
    assert found[b"ratelimit"] == b'"default-1s";r=0;t=2'
    assert found[b"retry-after"] == b"2"  # 1.2 s rounded up, never down
    assert found[b"x-ratelimit-remaining"] == b"0"
    assert found[b"x-ratelimit-reset"] == b"2"
    assert violated(p, d) == ["default-1s"]
    for item in found[b"ratelimit"].split(b","):
        t = int(item.rsplit(b"t=", 1)[1])
        assert int(found[b"retry-after"]) >= t


def test_retry_after_is_at_least_one_second() -> None:
    p = policy()
    assert dict(rejection_headers(p, decision(p, (0, 5, 5))))[b"retry-after"] == b"1"


def test_policy_names_are_valid_structured_field_strings() -> None:
    p = policy(policy='we"ird\\name')
    assert dict(response_headers(p, decision(p, (1, 1, 0))))[b"ratelimit-policy"].startswith(
        b'"we\\"ird\\\\name";'
    )


def test_the_pure_module_imports_no_framework_or_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gateway.ratelimit.policy; "
        "bad = [m for m in ('starlette', 'redis', 'httpx', 'aiohttp') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_limit_is_a_plain_value() -> None:
    assert Limit(1, 1, 1, "1/second") == parse_limits("1/second", "fixed", VAR)[0]
