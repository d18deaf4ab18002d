"""Pure rules that keep the shared cache from being poisoned or held hostage: which client
directives count, which error statuses may be stored, an injective cache key, the tee budget."""

from __future__ import annotations

import random
import string

import pytest

from gateway.cache import policy
from gateway.cache.keys import prefix_form, primary_key, target_form, url_of
from gateway.cache.tee import TeeBudget
from gateway.config import ERROR_STATUSES, parse_error_statuses
from gateway.errors import ConfigError
from gateway.http.cache_control import CacheControl, parse_cache_control

H = list[tuple[bytes, bytes]]

# -- client refresh directives ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"no-cache", {}),
        (b"max-age=0", {}),
        (b"min-fresh=600", {}),
        (b"no-cache, max-stale=30", {"max-stale": "30"}),
        (b"only-if-cached, max-age=0", {"only-if-cached": None}),
        (b"no-store, stale-if-error=60", {"no-store": None, "stale-if-error": "60"}),
    ],
)
def test_by_default_a_client_cannot_make_a_stored_answer_unusable(
    value: bytes, kept: dict[str, str | None]
) -> None:
    effective = policy.client_directives(parse_cache_control(value), b"no-cache", honor_refresh=False)
    assert dict(effective.directives) == kept


def test_an_invalid_client_max_age_is_ignored_with_the_rest() -> None:
    effective = policy.client_directives(parse_cache_control(b"max-age=soon"), None, honor_refresh=False)
    assert effective.directives == {} and effective.invalid == frozenset()


def test_a_route_that_honours_client_refreshes_gets_rfc_9111_and_pragma() -> None:
    cc = parse_cache_control(b"no-cache, max-age=0")
    assert policy.client_directives(cc, None, honor_refresh=True) is cc
    pragma_only = policy.client_directives(CacheControl(), b"no-cache", honor_refresh=True)
    assert "no-cache" in pragma_only
    ignored = policy.client_directives(parse_cache_control(b"max-stale"), b"no-cache", honor_refresh=True)
    assert "no-cache" not in ignored  # RFC 7234 §5.4: Pragma only without Cache-Control
    other = policy.client_directives(CacheControl(), b"x-foo", honor_refresh=True)
    assert "no-cache" not in other


def test_the_fresh_entry_is_reused_for_an_ignored_no_cache() -> None:
    fresh = policy.Freshness(60.0, 0.0, 0.0, 0.0, 0)
    attacker = policy.client_directives(
        parse_cache_control(b"no-cache, max-age=0, min-fresh=3600"),
        b"no-cache",
        honor_refresh=False,
    )
    assert policy.reuse(fresh, 10.0, attacker) is policy.Reuse.FRESH
    honoured = policy.client_directives(parse_cache_control(b"no-cache"), None, honor_refresh=True)
    assert policy.reuse(fresh, 10.0, honoured) is policy.Reuse.REVALIDATE


# -- error statuses ---------------------------------------------------------------------------

MAX_AGE: H = [(b"cache-control", b"max-age=60")]


def refusal(
    status: int,
    response: H,
    *,
    default_ttl: float = 0.0,
    cache_errors: frozenset[int] = frozenset(),
) -> str | None:
    return policy.refusal(
        "GET",
        status,
        CacheControl(),
        parse_cache_control([v for k, v in response if k == b"cache-control"]),
        [],
        response,
        default_ttl=default_ttl,
        cache_errors=cache_errors,
    )


@pytest.mark.parametrize(
    "status", [400, 401, 403, 408, 409, 418, 422, 451, 499, 500, 501, 502, 503, 504, 599]
)
def test_error_statuses_are_refused_even_with_max_age(status: int) -> None:
    assert refusal(status, MAX_AGE) == "error-status"
    assert refusal(status, [(b"cache-control", b"public, s-maxage=60")]) == "error-status"


@pytest.mark.parametrize("status", sorted(policy.STORABLE_ERROR_STATUSES))
def test_the_rfc_9110_cacheable_4xx_are_stored_with_explicit_freshness(status: int) -> None:
    assert refusal(status, MAX_AGE) is None


@pytest.mark.parametrize("status", [404, 410, 503, 500])
def test_the_default_ttl_never_stores_an_error(status: int) -> None:
    opted = frozenset({500, 503})
    assert refusal(status, [], default_ttl=300, cache_errors=opted) == "not-cacheable"
    assert (
        refusal(status, [(b"cache-control", b"public")], default_ttl=300, cache_errors=opted)
        == "not-cacheable"
    )
    assert policy.freshness_lifetime(status, CacheControl(), [], 0.0, default_ttl=300) == 0
    forced = policy.freshness_lifetime(
        status, parse_cache_control(b"max-age=5"), [], 0.0, default_ttl=300, force_ttl=True
    )
    assert forced == 5  # the origin's own freshness, never the forced TTL
    assert policy.freshness_lifetime(200, CacheControl(), [], 0.0, default_ttl=300) == 300


def test_a_route_may_opt_in_to_storing_listed_error_statuses() -> None:
    assert refusal(503, MAX_AGE, cache_errors=frozenset({503})) is None
    assert refusal(500, MAX_AGE, cache_errors=frozenset({503})) == "error-status"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("false", frozenset()),
        ("", frozenset()),
        ("true", ERROR_STATUSES),
        ("500, 503", frozenset({500, 503})),
        ("429", frozenset({429})),
    ],
)
def test_cache_errors_setting_parses(raw: str, expected: frozenset[int]) -> None:
    assert parse_error_statuses("GATEWAY_CACHE_ERRORS", raw) == expected


@pytest.mark.parametrize("raw", ["200", "5xx", "yes-please", "399", "600", "-500"])
def test_cache_errors_setting_refuses_anything_else_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_CACHE_ERRORS"):
        parse_error_statuses("GATEWAY_CACHE_ERRORS", raw)


def test_stale_if_error_still_covers_origin_errors() -> None:
    good = policy.Freshness(10.0, 0.0, 0.0, 60.0, 0)
    assert policy.serve_stale_on_error(good, 30.0, CacheControl())
    assert all(policy.is_error_for_stale(s) for s in (500, 502, 503, 504))


# -- the key ----------------------------------------------------------------------------------

#: Rich in everything the key's encoding must survive: separators, escapes, Redis hash tags,
#: the query mark, and characters beyond ASCII (raw bytes are keyed as latin-1).
ALPHABET = "|%?{}:/ab7" + "\\*[]" + "\u00e9"


def old_key(scheme: str, host: str, route: str, path: bytes, query: bytes) -> str:
    """The format before: fields joined by an unescaped "|" (kept here to show the attack)."""
    target = path + b"?" + query if query else path
    return f"{target.decode('latin-1')}|{scheme.lower()}://{host.lower()}|{route}"


COLLIDING_BEFORE = [
    # a "|" in the path forges the host and route fields of another request
    (
        ("http", "victim.example", "api", b"/x|http://victim.example|api", b""),
        ("http", "victim.example|api|http://victim.example", "api", b"/x", b""),
    ),
    # a "|" in the Host moves the boundary between host and route
    (("http", "h|x", "r", b"/a", b""), ("http", "h", "x|r", b"/a", b"")),
    # route names with the separator
    (("http", "h", "a|b", b"/p", b""), ("http", "h|a", "b", b"/p", b"")),
    # a "?" in the path (decoded %3F) against the same text as a query
    (("http", "h", "r", b"/a?b=1", b""), ("http", "h", "r", b"/a", b"b=1")),
]


@pytest.mark.parametrize(("one", "two"), COLLIDING_BEFORE)
def test_requests_that_shared_a_key_before_now_get_different_keys(
    one: tuple[str, str, str, bytes, bytes], two: tuple[str, str, str, bytes, bytes]
) -> None:
    assert old_key(*one) == old_key(*two)  # the attack worked on the old format
    assert primary_key(*one) != primary_key(*two)


def _text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, size)))


def _fields(rng: random.Random) -> tuple[str, str, str, bytes, bytes]:
    scheme = rng.choice(["http", "https", "http|x"])
    path = ("/" + _text(rng, 8)).encode("latin-1")
    query = _text(rng, 6).encode("latin-1")
    return scheme, _text(rng, 6).lower(), _text(rng, 5), path, query


def test_the_key_is_injective_over_many_generated_requests() -> None:
    """Property: distinct (scheme, host, route, path, query) never share a key. Inputs are
    drawn from a tiny alphabet full of separators so that near-collisions are common."""
    rng = random.Random(20261107)
    seen: dict[str, tuple[str, str, str, bytes, bytes]] = {}
    old_collisions = 0
    old_seen: dict[str, tuple[str, str, str, bytes, bytes]] = {}
    for _ in range(60_000):
        fields = _fields(rng)  # host already lowercase: the key lowercases it
        key = primary_key(*fields)
        assert seen.setdefault(key, fields) == fields, (key, seen[key], fields)
        old = old_key(*fields)
        if old_seen.setdefault(old, fields) != fields:
            old_collisions += 1
    assert len(seen) > 30_000
    assert old_collisions > 0  # the generator does find the collisions of the old format


def test_the_key_fields_never_leak_a_separator_or_a_hash_tag_brace() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        scheme, host, route, path, query = _fields(rng)
        key = primary_key(scheme, host, route, path, query)
        assert key.count("|") == 3
        assert "{" not in key and "}" not in key
        assert url_of(key) == target_form(path, query)


def test_purge_forms_match_exactly_the_raw_prefixes_and_urls_over_generated_targets() -> None:
    """Property: purging by prefix ``p`` affects a key iff ``p`` is a prefix of the request's
    raw target; purging by url ``u`` iff ``u`` is the raw target. (A raw target's path has no
    "?": its first "?" starts the query.)"""
    rng = random.Random(11)
    for _ in range(20_000):
        path = ("/" + _text(rng, 8).replace("?", "")).encode("latin-1")
        query = _text(rng, 6).encode("latin-1")
        raw_target = path + b"?" + query if query else path
        key = primary_key("http", "h", "r", path, query)
        cut = rng.randint(1, len(raw_target))
        candidates = [
            raw_target[:cut],
            raw_target[:cut] + _text(rng, 2).encode("latin-1"),
            ("/" + _text(rng, 4)).encode("latin-1"),
        ]
        for raw in candidates:
            assert key.startswith(prefix_form(raw)) == raw_target.startswith(raw), (raw_target, raw)
            assert (url_of(key) == prefix_form(raw)) == (raw_target == raw), (raw_target, raw)


def test_prefix_form_of_a_path_does_not_match_a_longer_sibling_as_a_url() -> None:
    assert url_of(primary_key("http", "h", "r", b"/items", b"page=1")) == "/items?page=1"
    assert url_of(primary_key("http", "h", "r", b"/items%7C", b"")) == "/items%257C"
    assert url_of(primary_key("http", "h", "r", b"/items|", b"")) == "/items%7C"
    assert prefix_form(b"/a?") == "/a?"


# -- tee budget -------------------------------------------------------------------------------


def test_the_tee_budget_never_hands_out_more_than_its_limit() -> None:
    budget = TeeBudget(100)
    assert budget.try_reserve(60)
    assert not budget.try_reserve(41)
    assert budget.used == 60
    assert budget.try_reserve(40) and budget.exhausted
    budget.release(60)
    assert not budget.exhausted and budget.used == 40


def test_every_letter_of_the_alphabet_is_exercised() -> None:
    """Guards the generator: the key encoding is tested against each special character."""
    rng = random.Random(3)
    drawn = "".join(_text(rng, 8) for _ in range(2_000))
    assert set(ALPHABET) <= set(drawn)
    assert set("|%?{}") <= set(ALPHABET) and not set(string.whitespace) & set(ALPHABET)
