"""Settings from the environment: defaults, every variable's parsing, and clear errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.config import Secret, Settings
from gateway.environment import settings_from_env
from gateway.errors import ConfigError

BASE = {"GATEWAY_UPSTREAM_URL": "http://backend:3000"}


def settings(**env: str) -> Settings:
    return settings_from_env({**BASE, **env})


def test_defaults() -> None:
    s = settings()
    assert (s.host, s.port, s.workers, s.admin_prefix) == ("0.0.0.0", 8080, 1, "/__gateway")
    assert s.routes[0].upstreams == ("http://backend:3000",) and s.routes[0].prefix == "/"
    assert not s.redis.configured
    assert s.redis.connect_timeout <= 0.25 and s.redis.command_timeout <= 0.25
    assert s.redis.pool_max == 20
    assert s.cache.enabled and s.cache.ttl == 0
    assert s.rate_limit.limits == "" and s.rate_limit.strategy == "sliding"


def test_redis_variables_as_operators_name_them() -> None:
    s = settings(
        REDIS_HOST="cache.internal",
        REDIS_PORT="6380",
        REDIS_PASSWORD="pw",
        REDIS_DB="2",
        REDIS_TLS="true",
        REDIS_USERNAME="gateway",
    )
    r = s.redis
    assert (r.host, r.port, r.db, r.tls, r.username) == ("cache.internal", 6380, 2, True, "gateway")
    assert r.password == Secret("pw") and r.configured
    assert "pw" not in repr(s)


def test_sentinel_and_cluster_modes() -> None:
    s = settings(REDIS_SENTINELS="10.0.0.1:26379,[::1]:26380", REDIS_SENTINEL_MASTER="main")
    assert s.redis.mode == "sentinel" and s.redis.sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert settings(REDIS_HOST="n1", REDIS_MODE="cluster").redis.mode == "cluster"
    with pytest.raises(ConfigError, match="REDIS_MODE"):
        settings(REDIS_MODE="sentinel")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GATEWAY_PORT", "http", "whole number"),
        ("GATEWAY_PORT", "0", "between 1 and 65535"),
        ("GATEWAY_WORKERS", "0", ">= 1"),
        ("GATEWAY_ACCESS_LOG", "yep", "true or false"),
        ("GATEWAY_UPSTREAM_URL", "backend:3000", "http:// or https://"),
        ("GATEWAY_UPSTREAM_URL", "http://backend:99999", "malformed"),
        ("GATEWAY_UPSTREAM_URL", "http://backend/?q=1", "query"),
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip", "not an IP"),
        ("GATEWAY_UPSTREAM_TIMEOUT", "-1", ">= 0"),
        ("GATEWAY_ADMIN_PREFIX", "admin", "starting with '/'"),
        ("GATEWAY_LOG_LEVEL", "loud", "one of"),
        ("GATEWAY_RATE_LIMIT_KEY", "cookie:x", "header:<Name>"),
        ("GATEWAY_RATE_LIMIT_STRATEGY", "leaky", "one of"),
        ("REDIS_URL", "http://x", "redis://"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        settings(**{name: value})
    assert info.value.variable == name
    assert str(info.value).startswith(name)


def test_missing_upstream() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env({})
    assert info.value.variable == "GATEWAY_UPSTREAM_URL"


def test_blank_values_count_as_unset() -> None:
    assert settings(GATEWAY_PORT="  ", REDIS_HOST="").port == 8080


def test_trusted_proxies_parse_as_networks() -> None:
    s = settings(GATEWAY_TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.7 ,::1")
    assert ipaddress.ip_address("10.2.3.4") in s.trusted_proxies[0]
    assert len(s.trusted_proxies) == 3


def test_routes_file_yaml(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("""
routes:
  - prefix: /api/
    upstream: [http://a:1, "http://b:2/base/"]
    strip_prefix: true
    cache: {ttl: 30, stale_if_error: 60, ignore_query_params: [utm_source, fbclid]}
    rate_limit: {limits: "5/second", key: "route+header:X-API-Key", cost: {POST: 5}}
  - name: static
    prefix: /static
    upstream: http://s:3
    cache: false
""")
    s = settings(GATEWAY_ROUTES_FILE=str(path), GATEWAY_CACHE_TTL="7")
    by_prefix = {r.prefix: r for r in s.routes}
    api = by_prefix["/api"]
    assert api.upstreams == ("http://a:1", "http://b:2/base") and api.strip_prefix
    assert api.cache.ttl == 30 and api.cache.stale_if_error == 60
    assert api.cache.ignore_query_params == {"utm_source", "fbclid"}
    assert api.rate_limit.limits == "5/second" and api.rate_limit.cost["POST"] == 5
    assert api.rate_limit.cost["*"] == 1
    assert not by_prefix["/static"].cache.enabled and by_prefix["/static"].name == "static"
    assert by_prefix["/"].cache.ttl == 7  # the global default route keeps the global settings
    assert [r.prefix for r in s.routes][-1] == "/"  # longest prefix first


def test_routes_file_json_without_upstream_url(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text('{"routes": [{"prefix": "/", "upstream": "https://origin"}]}')
    s = settings_from_env({"GATEWAY_ROUTES_FILE": str(path)})
    assert s.routes[0].upstreams == ("https://origin",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: 3", "'routes' list"),
        ("routes: [{prefix: /a, upstream: 'ftp://x'}]", "routes\\[0\\].upstream"),
        ("routes: [{prefix: /a, upstream: 'http://x', cache: {ttl: soon}}]", "routes\\[0\\].cache.ttl"),
        ("routes: [{prefix: /a, upstream: 'http://x', cache: {colour: red}}]", "unknown setting"),
        ("routes: [{prefix: a, upstream: 'http://x'}]", "prefix"),
        (
            "routes: [{prefix: /a, upstream: 'http://x'}, {prefix: /a/, upstream: 'http://y'}]",
            "share a prefix",
        ),
        ("routes: [", "not valid YAML"),
    ],
)
def test_routes_file_errors_name_the_place(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        settings_from_env({"GATEWAY_ROUTES_FILE": str(path)})


def test_unreadable_routes_file() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ROUTES_FILE"):
        settings_from_env({"GATEWAY_ROUTES_FILE": "/nonexistent/routes.yaml"})


def test_secret_hides_its_value() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert secret.get_secret_value() == "hunter2"


# -- configuration hardening: a typo or a wrong value never switches a protection off ------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("GATEWAY_RATE_LIMITS", "GATEWAY_RATE_LIMIT"),
        ("GATEWAY_CACHE_ENABLE", "GATEWAY_CACHE_ENABLED"),
        ("REDIS_PASWORD", "REDIS_PASSWORD"),
        ("GATEWAY_TRUSTED_PROXY", "GATEWAY_TRUSTED_PROXIES"),
    ],
)
def test_misspelt_variable_stops_start_up_with_did_you_mean(name: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**{name: "1"})
    assert info.value.variable == name
    assert f"did you mean {suggestion}?" in str(info.value)


def test_unknown_variable_without_a_close_match_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="is not a setting") as info:
        settings(GATEWAY_ZZZ="1")
    assert info.value.variable == "GATEWAY_ZZZ"


def test_kubernetes_service_link_variables_are_not_taken_for_typos() -> None:
    s = settings(
        REDIS_SERVICE_HOST="10.0.0.9",
        REDIS_SERVICE_PORT="6379",
        REDIS_PORT_6379_TCP_ADDR="10.0.0.9",
        GATEWAY_SERVICE_PORT_HTTP="80",
    )
    assert not s.redis.configured


def test_kubernetes_service_link_port_is_refused_not_guessed() -> None:
    with pytest.raises(ConfigError, match="service link") as info:
        settings(REDIS_HOST="r", REDIS_PORT="tcp://10.0.0.9:6379")
    assert info.value.variable == "REDIS_PORT"


@pytest.mark.parametrize(
    "name",
    [
        "GATEWAY_UPSTREAM_TIMEOUT",
        "GATEWAY_UPSTREAM_CONNECT_TIMEOUT",
        "REDIS_CONNECT_TIMEOUT",
        "REDIS_COMMAND_TIMEOUT",
        "REDIS_BREAKER_COOLDOWN",
    ],
)
@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_zero_or_negative_timeouts_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**{name: value})
    assert info.value.variable == name


def test_bad_port_inside_redis_url_is_refused_without_echoing_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        settings(REDIS_URL="redis://:hunter2@cache:99999/0")
    assert info.value.variable == "REDIS_URL"
    assert "hunter2" not in str(info.value)


def test_redis_tls_with_a_plaintext_url_is_a_configuration_error_not_a_downgrade() -> None:
    with pytest.raises(ConfigError, match="rediss://") as info:
        settings(REDIS_URL="redis://:hunter2@cache:6379/0", REDIS_TLS="true")
    assert info.value.variable == "REDIS_TLS" and "hunter2" not in str(info.value)
    assert settings(REDIS_URL="rediss://cache:6379/0", REDIS_TLS="true").redis.tls


def test_credentials_inside_redis_sentinels_are_refused_and_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        settings(REDIS_SENTINELS="user:hunter2@10.0.0.1:26379")
    assert info.value.variable == "REDIS_SENTINELS" and "hunter2" not in str(info.value)


def test_cluster_with_a_database_other_than_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match="database 0") as info:
        settings(REDIS_HOST="n1", REDIS_MODE="cluster", REDIS_DB="1")
    assert info.value.variable == "REDIS_DB"


@pytest.mark.parametrize("value", ["/", "/a/../b", "/a//b", "/%61dmin"])
def test_admin_prefix_that_would_shadow_routes_or_be_ambiguous_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(GATEWAY_ADMIN_PREFIX=value)
    assert info.value.variable == "GATEWAY_ADMIN_PREFIX"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: [{prefix: /a, upstream: 'http://x', timeout: 5}]", r"routes\[0\]\.timeout.*unknown key"),
        ("routes: [{prefix: /a, upstream: 'http://x', rate_limt: {limits: 1/second}}]", "rate_limt"),
        (
            "routes: [{prefix: /a, upstream: 'http://x', rate_limit: {limit: 1/second}}]",
            r"rate_limit\.limit.*unknown setting",
        ),
        ("routes: [{prefix: /a, upstream: 'http://x'}]\nroute: []", "unknown key"),
        ("routes: [{prefix: /__gateway/x, upstream: 'http://x'}]", "admin prefix"),
        ("routes: [{prefix: /__gateway, upstream: 'http://x'}]", "admin prefix"),
    ],
)
def test_routes_file_typos_and_admin_routes_stop_start_up(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        settings_from_env({"GATEWAY_ROUTES_FILE": str(path)})


def test_every_variable_default_is_the_dataclass_default() -> None:
    """Defaults are written once: an empty environment gives exactly the dataclass defaults."""
    from gateway.config import CacheSettings, RateLimitSettings, RedisSettings

    s = settings()
    assert s.cache == CacheSettings() and s.rate_limit == RateLimitSettings()
    assert s.redis == RedisSettings()


def test_two_routes_with_one_name_are_refused(tmp_path: Path) -> None:
    """Route names key per-route state: a duplicate could send one route's traffic to the
    other's upstream."""
    path = tmp_path / "routes.yaml"
    path.write_text(
        "routes: [{name: api, prefix: /a, upstream: 'http://x'},"
        " {name: api, prefix: /b, upstream: 'http://y'}]"
    )
    with pytest.raises(ConfigError, match="already used") as info:
        settings_from_env({"GATEWAY_ROUTES_FILE": str(path)})
    assert info.value.variable == "GATEWAY_ROUTES_FILE routes[1].name"


def test_cluster_mode_without_a_node_is_refused_not_run_on_the_embedded_store() -> None:
    with pytest.raises(ConfigError, match="REDIS_HOST or REDIS_URL") as info:
        settings(REDIS_MODE="cluster")
    assert info.value.variable == "REDIS_MODE"


@pytest.mark.parametrize("token", ["two words", "tab\there", "caf\u00e9"])
def test_admin_token_that_could_never_match_is_refused(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(GATEWAY_ADMIN_TOKEN=token)
    assert info.value.variable == "GATEWAY_ADMIN_TOKEN" and token not in str(info.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::1]", "127.0.0.1", "gateway.internal", "localhost"])
def test_listen_host_accepts_addresses_and_names(host: str) -> None:
    assert settings(GATEWAY_HOST=host).host == host.strip("[]")


@pytest.mark.parametrize("host", ["0.0.0.0:8080", "http://x", "bad host", "-x-.example"])
def test_listen_host_typo_is_refused(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(GATEWAY_HOST=host)
    assert info.value.variable == "GATEWAY_HOST"


def test_edge_path_settings_default_to_merging_slashes_and_rejecting_escaped_ones() -> None:
    settings = settings_from_env({"GATEWAY_UPSTREAM_URL": "http://u:1"})
    assert settings.merge_slashes is True and settings.path_escaped_slashes == "reject"
    changed = settings_from_env(
        {
            "GATEWAY_UPSTREAM_URL": "http://u:1",
            "GATEWAY_MERGE_SLASHES": "false",
            "GATEWAY_PATH_ESCAPED_SLASHES": "keep",
        }
    )
    assert changed.merge_slashes is False and changed.path_escaped_slashes == "keep"
    with pytest.raises(ConfigError, match="GATEWAY_PATH_ESCAPED_SLASHES"):
        settings_from_env({"GATEWAY_UPSTREAM_URL": "http://u:1", "GATEWAY_PATH_ESCAPED_SLASHES": "decode"})


def test_routes_file_forward_headers_and_allow_trace(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "routes:\n  - prefix: /a\n    upstream: http://u:1\n"
        "    forward_headers: [X-Forwarded-Prefix, X_Legacy_Key]\n"
        "    allow_trace: true\n  - prefix: /b\n    upstream: http://u:1\n"
    )
    a, b = settings_from_env({"GATEWAY_ROUTES_FILE": str(path)}).routes
    assert a.forward_headers == frozenset({"x-forwarded-prefix", "x_legacy_key"})
    assert a.allow_trace is True
    assert b.forward_headers == frozenset() and b.allow_trace is False


@pytest.mark.parametrize(
    "names", ["[Host]", "[X-Forwarded-For]", "[Connection]", "[Content-Length]", "['bad name']", "[Via]"]
)
def test_forward_headers_cannot_name_fields_the_gateway_sets_or_hop_by_hop_ones(
    tmp_path: Path, names: str
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(f"routes:\n  - prefix: /a\n    upstream: http://u:1\n    forward_headers: {names}\n")
    with pytest.raises(ConfigError, match=r"routes\[0\]\.forward_headers"):
        settings_from_env({"GATEWAY_ROUTES_FILE": str(path)})
