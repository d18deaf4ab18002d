"""Reading `Settings` from environment variables and the optional routes file."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import yaml

from gateway.config import (
    LOG_LEVELS,
    CacheSettings,
    RateLimitSettings,
    RedisSettings,
    Route,
    Secret,
    Settings,
    parse_bool,
    parse_cidrs,
    parse_float,
    parse_int,
    parse_path_prefix,
    parse_upstream_url,
)
from gateway.errors import ConfigError

T = TypeVar("T")
RATE_LIMIT_KEYS = ("ip", "route", "global")
STRATEGIES = ("sliding", "fixed", "gcra")
FAIL_MODES = ("open", "closed", "local")


class _Env:
    """Typed access to the environment; blank values count as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value if value is not None and value.strip() != "" else None

    def get(self, name: str, parse: Callable[[str, str], T], default: T) -> T:
        value = self.raw(name)
        return default if value is None else parse(name, value)


def _positive_int(name: str, raw: str) -> int:
    return parse_int(name, raw, minimum=1)


def _port(name: str, raw: str) -> int:
    return parse_int(name, raw, minimum=1, maximum=65535)


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ConfigError(name, f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _rate_limit_key(name: str, raw: str) -> str:
    parts = [p.strip() for p in raw.split("+")]
    for part in parts:
        if part in RATE_LIMIT_KEYS:
            continue
        if part.lower().startswith("header:") and len(part) > len("header:"):
            continue
        raise ConfigError(
            name, f"expected ip, route, global or header:<Name> joined by '+', got {raw!r}"
        )
    return "+".join(parts)


def _words(name: str, raw: str) -> frozenset[str]:
    return frozenset(p.strip() for p in raw.split(",") if p.strip())


def _redis(env: _Env) -> RedisSettings:
    url = env.raw("REDIS_URL")
    if url is not None:
        scheme = urlsplit(url.strip()).scheme
        if scheme not in ("redis", "rediss", "unix"):
            # The URL may carry a password: name the variable, never echo the value.
            raise ConfigError("REDIS_URL", "expected a redis://, rediss:// or unix:// URL")
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, (s.strip() for s in (env.raw("REDIS_SENTINELS") or "").split(","))):
        host, _, port = item.rpartition(":")
        if not host:
            raise ConfigError("REDIS_SENTINELS", f"expected host:port items, got {item!r}")
        sentinels.append((host.strip("[]"), _port("REDIS_SENTINELS", port)))
    password = env.raw("REDIS_PASSWORD")
    default_mode = "sentinel" if sentinels else "standalone"
    mode = env.get("REDIS_MODE", _choice(("standalone", "sentinel", "cluster")), default_mode)
    if mode == "sentinel" and not sentinels:
        raise ConfigError("REDIS_MODE", "sentinel mode needs REDIS_SENTINELS")
    return RedisSettings(
        url=Secret(url.strip()) if url else None,
        host=env.raw("REDIS_HOST"),
        port=env.get("REDIS_PORT", _port, 6379),
        username=env.raw("REDIS_USERNAME"),
        password=Secret(password) if password is not None else None,
        db=env.get("REDIS_DB", parse_int, 0),
        tls=env.get("REDIS_TLS", parse_bool, False),
        mode=cast(Any, mode),
        sentinels=tuple(sentinels),
        sentinel_master=env.raw("REDIS_SENTINEL_MASTER") or "mymaster",
        pool_max=env.get("REDIS_POOL_MAX", _positive_int, 20),
        connect_timeout=env.get("REDIS_CONNECT_TIMEOUT", parse_float, 0.25),
        command_timeout=env.get("REDIS_COMMAND_TIMEOUT", parse_float, 0.25),
        breaker_threshold=env.get("REDIS_BREAKER_THRESHOLD", _positive_int, 3),
        breaker_cooldown=env.get("REDIS_BREAKER_COOLDOWN", parse_float, 2.0),
    )


def _cache(env: _Env) -> CacheSettings:
    return CacheSettings(
        enabled=env.get("GATEWAY_CACHE_ENABLED", parse_bool, True),
        ttl=env.get("GATEWAY_CACHE_TTL", parse_float, 0.0),
        max_object_bytes=env.get("GATEWAY_CACHE_MAX_OBJECT_BYTES", parse_int, 8 * 1024 * 1024),
        stale_while_revalidate=env.get("GATEWAY_CACHE_STALE_WHILE_REVALIDATE", parse_float, 0.0),
        stale_if_error=env.get("GATEWAY_CACHE_STALE_IF_ERROR", parse_float, 0.0),
        ignore_query_params=env.get("GATEWAY_CACHE_IGNORE_QUERY_PARAMS", _words, frozenset()),
        allow_cookies=env.get("GATEWAY_CACHE_ALLOW_COOKIES", parse_bool, False),
        lock_timeout=env.get("GATEWAY_CACHE_LOCK_TIMEOUT", parse_float, 5.0),
    )


def _rate_limit(env: _Env) -> RateLimitSettings:
    return RateLimitSettings(
        limits=(env.raw("GATEWAY_RATE_LIMIT") or "").strip(),
        key=env.get("GATEWAY_RATE_LIMIT_KEY", _rate_limit_key, "ip"),
        strategy=env.get("GATEWAY_RATE_LIMIT_STRATEGY", _choice(STRATEGIES), "sliding"),
        fail_mode=env.get("GATEWAY_RATE_LIMIT_FAIL_MODE", _choice(FAIL_MODES), "open"),
        legacy_headers=env.get("GATEWAY_RATE_LIMIT_LEGACY_HEADERS", parse_bool, True),
    )


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    env = _Env(environ)
    cache = _cache(env)
    rate_limit = _rate_limit(env)
    routes: list[Route] = []
    routes_file = env.raw("GATEWAY_ROUTES_FILE")
    if routes_file is not None:
        routes.extend(load_routes_file(routes_file, cache, rate_limit))
    upstream = env.raw("GATEWAY_UPSTREAM_URL")
    if upstream is not None:
        url = parse_upstream_url("GATEWAY_UPSTREAM_URL", upstream)
        if not any(r.prefix == "/" for r in routes):
            routes.append(Route("default", "/", (url,), False, cache, rate_limit))
    if not routes:
        raise ConfigError(
            "GATEWAY_UPSTREAM_URL", "is required (or GATEWAY_ROUTES_FILE with at least one route)"
        )
    token = env.raw("GATEWAY_ADMIN_TOKEN")
    return Settings(
        routes=tuple(sorted(routes, key=lambda r: len(r.prefix), reverse=True)),
        host=env.raw("GATEWAY_HOST") or "0.0.0.0",
        port=env.get("GATEWAY_PORT", _port, 8080),
        workers=env.get("GATEWAY_WORKERS", _positive_int, 1),
        upstream_connect_timeout=env.get("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", parse_float, 5.0),
        upstream_timeout=env.get("GATEWAY_UPSTREAM_TIMEOUT", parse_float, 30.0),
        upstream_max_connections=env.get("GATEWAY_UPSTREAM_MAX_CONNECTIONS", _positive_int, 100),
        max_body_bytes=env.get("GATEWAY_MAX_BODY_BYTES", parse_int, 100 * 1024 * 1024),
        admin_prefix=env.get("GATEWAY_ADMIN_PREFIX", parse_path_prefix, "/__gateway"),
        admin_token=Secret(token) if token is not None else None,
        trusted_proxies=env.get("GATEWAY_TRUSTED_PROXIES", parse_cidrs, ()),
        log_level=env.get("GATEWAY_LOG_LEVEL", _choice(LOG_LEVELS), "info"),
        access_log=env.get("GATEWAY_ACCESS_LOG", parse_bool, True),
        http_parser=env.get("GATEWAY_HTTP_PARSER", _choice(("httptools", "h11")), "httptools"),
        cache=cache,
        rate_limit=rate_limit,
        cache_memory_bytes=env.get("GATEWAY_CACHE_MEMORY_BYTES", _positive_int, 64 * 1024 * 1024),
        redis=_redis(env),
    )


# -- routes file ----------------------------------------------------------------------------


def load_routes_file(
    path: str, cache: CacheSettings, rate_limit: RateLimitSettings
) -> list[Route]:
    name = "GATEWAY_ROUTES_FILE"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, f"cannot read {path!r} ({exc.strerror})") from None
    try:
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(name, f"{path!r} is not valid YAML/JSON ({exc})") from None
    items = doc.get("routes") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigError(name, "expected a top-level 'routes' list")
    routes = [_route(f"{name} routes[{i}]", item, cache, rate_limit) for i, item in enumerate(items)]
    prefixes = [r.prefix for r in routes]
    if len(set(prefixes)) != len(prefixes):
        raise ConfigError(name, "two routes share a prefix")
    return routes


def _route(where: str, item: Any, cache: CacheSettings, rate_limit: RateLimitSettings) -> Route:
    if not isinstance(item, dict):
        raise ConfigError(where, "expected a mapping")
    prefix = parse_path_prefix(f"{where}.prefix", str(item.get("prefix", "")))
    upstream = item.get("upstream")
    urls: list[Any] = upstream if isinstance(upstream, list) else [upstream]
    if not urls or any(not isinstance(u, str) for u in urls):
        raise ConfigError(f"{where}.upstream", "expected a URL or a list of URLs")
    return Route(
        name=str(item.get("name") or prefix),
        prefix=prefix,
        upstreams=tuple(parse_upstream_url(f"{where}.upstream", u) for u in urls),
        strip_prefix=_value(f"{where}.strip_prefix", item.get("strip_prefix", False), parse_bool),
        cache=_overlay(f"{where}.cache", cache, item.get("cache")),
        rate_limit=_overlay(f"{where}.rate_limit", rate_limit, item.get("rate_limit")),
    )


def _value(where: str, value: Any, parse: Callable[[str, str], T]) -> T:
    if isinstance(value, bool):
        value = str(value).lower()
    return parse(where, str(value))


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "enabled": parse_bool, "ttl": parse_float, "max_object_bytes": parse_int,
    "stale_while_revalidate": parse_float, "stale_if_error": parse_float,
    "allow_cookies": parse_bool, "force_ttl": parse_bool, "lock_timeout": parse_float,
    "ignore_query_params": _words, "limits": lambda _n, v: v.strip(),
    "key": _rate_limit_key, "strategy": _choice(STRATEGIES), "fail_mode": _choice(FAIL_MODES),
    "shadow": parse_bool, "policy": lambda _n, v: v.strip(), "legacy_headers": parse_bool,
    "exempt": lambda _n, v: tuple(p.strip() for p in v.split(",") if p.strip()),
}

S = TypeVar("S", CacheSettings, RateLimitSettings)


def _overlay(where: str, base: S, section: Any) -> S:
    """Per-route settings: the route's keys over the global defaults."""
    if section is None:
        return base
    if isinstance(section, bool) and isinstance(base, CacheSettings):
        section = {"enabled": section}
    if not isinstance(section, dict):
        raise ConfigError(where, "expected a mapping")
    known = {f.name for f in fields(base)}
    changes: dict[str, Any] = {}
    for key, value in section.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}", "unknown setting")
        if key == "cost":
            changes[key] = _cost(f"{where}.cost", value)
        elif isinstance(value, list):
            changes[key] = _value(f"{where}.{key}", ",".join(map(str, value)), _PARSERS[key])
        else:
            changes[key] = _value(f"{where}.{key}", value, _PARSERS[key])
    return replace(base, **changes)


def _cost(where: str, value: Any) -> Mapping[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"*": value}
    if not isinstance(value, dict):
        raise ConfigError(where, "expected a number or a mapping of method to number")
    costs = {"*": 1}
    for method, cost in value.items():
        costs[str(method).upper() if method != "*" else "*"] = parse_int(
            f"{where}.{method}", str(cost), minimum=0
        )
    return MappingProxyType(costs)
