"""Settings, parsed once from the environment into immutable values.

Nothing else in the gateway reads the environment. Every parse error becomes a `ConfigError`
naming the variable, which the CLI prints as one line before exiting non-zero.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

from gateway.errors import ConfigError

MiB = 1024 * 1024
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
RedisMode = Literal["standalone", "sentinel", "cluster"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Secret:
    """A string whose repr and str never show the value (logs, tracebacks, check-config)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool = True
    ttl: float = 0.0
    max_object_bytes: int = 8 * MiB
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    ignore_query_params: frozenset[str] = frozenset()
    allow_cookies: bool = False
    force_ttl: bool = False
    lock_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    limits: str = ""
    key: str = "ip"
    strategy: str = "sliding"
    fail_mode: str = "open"
    cost: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({"*": 1}))
    exempt: tuple[str, ...] = ()
    shadow: bool = False
    policy: str = "default"
    legacy_headers: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    """A path prefix served by one upstream (or several, round-robin), with its own policies."""

    name: str
    prefix: str
    upstreams: tuple[str, ...]
    strip_prefix: bool = False
    cache: CacheSettings = field(default_factory=CacheSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: Secret | None = None  # may embed a password, so it is a secret as a whole
    host: str | None = None
    port: int = 6379
    username: str | None = None
    password: Secret | None = None
    db: int = 0
    tls: bool = False
    mode: RedisMode = "standalone"
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    pool_max: int = 20
    connect_timeout: float = 0.25
    command_timeout: float = 0.25
    breaker_threshold: int = 3
    breaker_cooldown: float = 2.0

    @property
    def configured(self) -> bool:
        return bool(self.url or self.host or self.sentinels)


@dataclass(frozen=True, slots=True)
class Settings:
    routes: tuple[Route, ...]
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    upstream_connect_timeout: float = 5.0
    upstream_timeout: float = 30.0
    upstream_max_connections: int = 100
    max_body_bytes: int = 100 * MiB
    admin_prefix: str = "/__gateway"
    admin_token: Secret | None = None
    trusted_proxies: tuple[Network, ...] = ()
    log_level: str = "info"
    access_log: bool = True
    http_parser: str = "httptools"
    cache: CacheSettings = field(default_factory=CacheSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    cache_memory_bytes: int = 64 * MiB
    redis: RedisSettings = field(default_factory=RedisSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        from gateway.config_env import settings_from_env

        return settings_from_env(environ)


# -- value parsers shared by the environment and the routes file --------------------------


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def parse_int(name: str, raw: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(name, f"must be {bound}, got {value}")
    return value


def parse_float(name: str, raw: str, *, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected a number of seconds, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(name, f"must be a finite number >= {minimum}, got {raw!r}")
    return value


def parse_upstream_url(name: str, raw: str) -> str:
    """An http(s) URL with a host, optionally a base path; returned without a trailing slash."""
    value = raw.strip()
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(name, f"malformed URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, "expected an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(name, "must not carry a query, fragment or credentials")
    del port
    return value.rstrip("/")


def parse_cidrs(name: str, raw: str) -> tuple[Network, ...]:
    networks: list[Network] = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(name, f"not an IP address or CIDR: {item!r}") from None
    return tuple(networks)


def parse_path_prefix(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.startswith("/") or any(c in value for c in "?# "):
        raise ConfigError(name, f"expected a path starting with '/', got {raw!r}")
    return value.rstrip("/") or "/"
