"""Settings: immutable values, each with its default and its environment variable written once.

A field declared with `env(...)` is read from that variable by `gateway.environment` (the only
module that reads the environment); its default lives here and nowhere else. Value parsers are
here too, shared by the environment and the routes file. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from gateway.errors import ConfigError

T = TypeVar("T")
Parser = Callable[[str, str], Any]
MiB = 1024 * 1024
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
RATE_LIMIT_KEYS = ("ip", "route", "global")
STRATEGIES = ("sliding", "fixed", "gcra")
FAIL_MODES = ("open", "closed", "local")
RedisMode = Literal["standalone", "sentinel", "cluster"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ERROR_STATUSES = frozenset(range(400, 600))


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


def parse_positive_int(name: str, raw: str) -> int:
    return parse_int(name, raw, minimum=1)


def parse_port(name: str, raw: str) -> int:
    if raw.strip().lower().startswith("tcp://"):
        # Kubernetes service links set <SERVICE>_PORT=tcp://ip:port for a Service named like
        # the variable's prefix; taking its port silently would be a guess.
        raise ConfigError(
            name,
            "looks like a Kubernetes service link (tcp://...); set the port "
            "explicitly or disable enableServiceLinks",
        )
    return parse_int(name, raw, minimum=1, maximum=65535)


def parse_timeout(name: str, raw: str) -> float:
    """A duration that must be positive: a zero timeout would fail every call at once."""
    value = parse_float(name, raw)
    if value <= 0:
        raise ConfigError(name, f"must be a number of seconds > 0, got {raw!r}")
    return value


def parse_text(name: str, raw: str) -> str:
    return raw.strip()


def parse_words(name: str, raw: str) -> frozenset[str]:
    return frozenset(p.strip() for p in raw.split(",") if p.strip())


def parse_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ConfigError(name, f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def parse_http_parser(name: str, raw: str) -> str:
    """Only httptools (llhttp) remains: the front end accepts any method token with it, and
    one strict parser is simpler to keep safe than two (docs/security/front-end.md)."""
    value = raw.strip().lower()
    if value == "h11":
        raise ConfigError(
            name,
            "h11 is no longer supported: every method token is accepted with "
            "httptools now; unset this variable",
        )
    if value != "httptools":
        raise ConfigError(name, f"expected httptools, got {raw!r}")
    return value


def parse_secret(name: str, raw: str) -> Secret:
    return Secret(raw)


def parse_token(name: str, raw: str) -> Secret:
    """A bearer token (RFC 6750 b64token): one that could never match is a silent lock-out."""
    value = raw.strip()
    if not all(c.isascii() and (c.isalnum() or c in "-._~+/=") for c in value):
        raise ConfigError(name, "expected a token of letters, digits and -._~+/= (no spaces)")
    return Secret(value)


def parse_listen_host(name: str, raw: str) -> str:
    """An IP address or a host name to bind (checked here so a typo fails before serving)."""
    value = raw.strip()
    try:
        ipaddress.ip_address(value.strip("[]"))
        return value.strip("[]")
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if (
        not value
        or len(value) > 253
        or not all(
            0 < len(label) <= 63
            and label.replace("-", "").isalnum()
            and label.isascii()
            and not label.startswith("-")
            and not label.endswith("-")
            for label in labels
        )
    ):
        raise ConfigError(name, f"expected an IP address or a host name, got {raw!r}")
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


def parse_redis_url(name: str, raw: str) -> Secret:
    """A redis://, rediss:// or unix:// URL. It may carry a password: errors name the variable
    and the problem, never the value."""
    value = raw.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        raise ConfigError(name, "malformed URL (check the port)") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(name, "expected a redis://, rediss:// or unix:// URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(name, "expected a host in the URL")
    return Secret(value)


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
    if not value.startswith("/") or any(c in value for c in "?#% \\") or "//" in value:
        raise ConfigError(name, f"expected a path starting with '/', got {raw!r}")
    segments = value.split("/")
    if any(s in (".", "..") for s in segments):
        raise ConfigError(name, f"must not contain '.' or '..' segments, got {raw!r}")
    return value.rstrip("/") or "/"


def parse_admin_prefix(name: str, raw: str) -> str:
    value = parse_path_prefix(name, raw)
    if value == "/":
        raise ConfigError(name, "must not be '/': the admin API would shadow every route")
    return value


def parse_sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, (s.strip() for s in raw.split(","))):
        if "@" in item or "//" in item:
            # A credential here would be printed wherever the address is; never echo the item.
            raise ConfigError(
                name,
                "expected host:port items without credentials or scheme (the password is REDIS_PASSWORD)",
            )
        host, _, port = item.rpartition(":")
        if not host:
            raise ConfigError(name, f"expected host:port items, got {item!r}")
        sentinels.append((host.strip("[]"), parse_port(name, port)))
    return tuple(sentinels)


def parse_rate_limit_key(name: str, raw: str) -> str:
    parts = [p.strip() for p in raw.split("+")]
    for part in parts:
        if part in RATE_LIMIT_KEYS:
            continue
        if part.lower().startswith("header:") and len(part) > len("header:"):
            continue
        raise ConfigError(name, f"expected ip, route, global or header:<Name> joined by '+', got {raw!r}")
    return "+".join(parts)


def parse_error_statuses(name: str, raw: str) -> frozenset[int]:
    """Which error statuses (4xx/5xx) a route may store: ``false`` (none beyond the defaults),
    ``true`` (every one) or a comma-separated list such as ``500,503``."""
    value = raw.strip().lower()
    if value in _FALSE or not value:
        return frozenset()
    if value in _TRUE:
        return ERROR_STATUSES
    statuses = set()
    for item in filter(None, (p.strip() for p in value.split(","))):
        if not item.isdigit() or int(item) not in ERROR_STATUSES:
            raise ConfigError(name, f"expected true, false or a list of statuses 400-599, got {item!r}")
        statuses.add(int(item))
    return frozenset(statuses)


def env(variable: str, parse: Parser, default: T) -> T:
    """A settings field read from the environment variable `variable` with `parse`."""
    return field(default=default, metadata={"env": variable, "parse": parse})


def routes_only(parse: Parser, default: T) -> T:
    """A field only the routes file sets (per route), parsed with `parse`."""
    return field(default=default, metadata={"parse": parse})


_DEFAULT_COST: Mapping[str, int] = MappingProxyType({"*": 1})


# -- the settings ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Global cache settings (environment); a route's `cache:` section overrides any field."""

    enabled: bool = env("GATEWAY_CACHE_ENABLED", parse_bool, True)
    ttl: float = env("GATEWAY_CACHE_TTL", parse_float, 0.0)
    max_object_bytes: int = env("GATEWAY_CACHE_MAX_OBJECT_BYTES", parse_positive_int, 8 * MiB)
    stale_while_revalidate: float = env("GATEWAY_CACHE_STALE_WHILE_REVALIDATE", parse_float, 0.0)
    stale_if_error: float = env("GATEWAY_CACHE_STALE_IF_ERROR", parse_float, 0.0)
    ignore_query_params: frozenset[str] = env("GATEWAY_CACHE_IGNORE_QUERY_PARAMS", parse_words, frozenset())
    allow_cookies: bool = env("GATEWAY_CACHE_ALLOW_COOKIES", parse_bool, False)
    force_ttl: bool = routes_only(parse_bool, False)
    lock_timeout: float = env("GATEWAY_CACHE_LOCK_TIMEOUT", parse_float, 5.0)
    # Off: a client's no-cache / max-age / min-fresh / Pragma never makes a stored answer
    # unusable, so a client cannot replace a fresh shared entry on demand (as Varnish).
    honor_client_no_cache: bool = env("GATEWAY_CACHE_HONOR_CLIENT_NO_CACHE", parse_bool, False)
    # Error statuses stored when the origin gives them explicit freshness, beyond 404, 405,
    # 410 and 414 (always allowed); never with the default TTL.
    cache_errors: frozenset[int] = env("GATEWAY_CACHE_ERRORS", parse_error_statuses, frozenset())


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """Global rate-limit settings (environment); a route's `rate_limit:` section overrides."""

    limits: str = env("GATEWAY_RATE_LIMIT", parse_text, "")
    key: str = env("GATEWAY_RATE_LIMIT_KEY", parse_rate_limit_key, "ip")
    strategy: str = env("GATEWAY_RATE_LIMIT_STRATEGY", choice(STRATEGIES), "sliding")
    fail_mode: str = env("GATEWAY_RATE_LIMIT_FAIL_MODE", choice(FAIL_MODES), "open")
    # the routes file's `cost:` (a number or a mapping of method to number): routes_file._cost
    cost: Mapping[str, int] = field(default_factory=lambda: _DEFAULT_COST, metadata={"parse": None})
    exempt: tuple[str, ...] = routes_only(parse_list, ())
    shadow: bool = routes_only(parse_bool, False)
    policy: str = routes_only(parse_text, "default")
    legacy_headers: bool = env("GATEWAY_RATE_LIMIT_LEGACY_HEADERS", parse_bool, True)


@dataclass(frozen=True, slots=True)
class Route:
    """A path prefix served by one upstream (or several, round-robin), with its own policies."""

    name: str
    prefix: str
    upstreams: tuple[str, ...]
    strip_prefix: bool = False
    cache: CacheSettings = field(default_factory=CacheSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    # Forwarding/override fields (lowercase names) this route passes on from any client.
    forward_headers: frozenset[str] = frozenset()
    allow_trace: bool = False  # TRACE/TRACK reach this route's upstream instead of a 405
    # More limit sets decided with `rate_limit` in one atomic step (routes file: a list).
    more_rate_limits: tuple[RateLimitSettings, ...] = ()

    @property
    def rate_limit_sets(self) -> tuple[RateLimitSettings, ...]:
        return (self.rate_limit, *self.more_rate_limits)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: Secret | None = env("REDIS_URL", parse_redis_url, None)  # may embed a password
    host: str | None = env("REDIS_HOST", parse_text, None)
    port: int = env("REDIS_PORT", parse_port, 6379)
    username: str | None = env("REDIS_USERNAME", parse_text, None)
    password: Secret | None = env("REDIS_PASSWORD", parse_secret, None)
    db: int = env("REDIS_DB", parse_int, 0)
    tls: bool = env("REDIS_TLS", parse_bool, False)
    mode: RedisMode = env("REDIS_MODE", choice(("standalone", "sentinel", "cluster")), "standalone")
    sentinels: tuple[tuple[str, int], ...] = env("REDIS_SENTINELS", parse_sentinels, ())
    sentinel_master: str = env("REDIS_SENTINEL_MASTER", parse_text, "mymaster")
    pool_max: int = env("REDIS_POOL_MAX", parse_positive_int, 20)
    connect_timeout: float = env("REDIS_CONNECT_TIMEOUT", parse_timeout, 0.25)
    command_timeout: float = env("REDIS_COMMAND_TIMEOUT", parse_timeout, 0.25)
    breaker_threshold: int = env("REDIS_BREAKER_THRESHOLD", parse_positive_int, 3)
    breaker_cooldown: float = env("REDIS_BREAKER_COOLDOWN", parse_timeout, 2.0)
    # None: the same as the data connections (REDIS_TLS, or a rediss:// REDIS_URL).
    sentinel_tls: bool | None = env("REDIS_SENTINEL_TLS", parse_bool, None)
    # TLS trust and client identity; empty: the system's CA store, no client certificate.
    tls_ca_file: str | None = env("REDIS_TLS_CA_FILE", parse_text, None)
    tls_cert_file: str | None = env("REDIS_TLS_CERT_FILE", parse_text, None)
    tls_key_file: str | None = env("REDIS_TLS_KEY_FILE", parse_text, None)
    #: Where an error or log line names these settings ("REDIS" or the counters' variable).
    origin: str = "REDIS"

    @property
    def configured(self) -> bool:
        return bool(self.url or self.host or self.sentinels)

    @property
    def data_tls(self) -> bool:
        """Whether connections to the data nodes use TLS (REDIS_TLS or a rediss:// URL)."""
        return self.tls or (self.url is not None and url_uses_tls(self.url))

    @property
    def sentinels_use_tls(self) -> bool:
        return self.data_tls if self.sentinel_tls is None else self.sentinel_tls


def url_uses_tls(url: Secret) -> bool:
    return url.get_secret_value().strip().lower().startswith("rediss://")


def separate_counters_redis(main: RedisSettings, url: Secret | None) -> RedisSettings | None:
    """The Redis the rate-limit counters live in when GATEWAY_RATE_LIMIT_REDIS_URL names one
    other than `main`: a standalone server reached by that URL, with the pool, deadline,
    breaker and TLS-file settings of `main`. Credentials in the URL win; without them,
    REDIS_USERNAME/REDIS_PASSWORD apply (so the password need not sit in a URL).
    None: the counters share `main`."""
    if url is None or (main.url is not None and main.url == url and main.mode == "standalone"):
        return None
    return replace(
        main,
        url=url,
        host=None,
        port=6379,
        db=0,
        tls=url_uses_tls(url),
        mode="standalone",
        sentinels=(),
        sentinel_tls=None,
        origin="GATEWAY_RATE_LIMIT_REDIS_URL",
    )


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """The HTTP front end: request-head limits, client deadlines, connection budgets and the
    optional admin listener (gateway/edge, docs/security/front-end.md)."""

    max_header_bytes: int = env("GATEWAY_MAX_HEADER_BYTES", parse_positive_int, 32 * 1024)
    max_headers: int = env("GATEWAY_MAX_HEADERS", parse_positive_int, 100)
    max_url_bytes: int = env("GATEWAY_MAX_URL_BYTES", parse_positive_int, 8 * 1024)
    header_timeout: float = env("GATEWAY_HEADER_TIMEOUT", parse_timeout, 10.0)
    keepalive_timeout: float = env("GATEWAY_KEEPALIVE_TIMEOUT", parse_timeout, 75.0)
    body_timeout: float = env("GATEWAY_BODY_TIMEOUT", parse_timeout, 60.0)
    max_connections: int = env("GATEWAY_MAX_CONNECTIONS", parse_positive_int, 1024)
    admin_host: str | None = env("GATEWAY_ADMIN_HOST", parse_listen_host, None)
    admin_port: int | None = env("GATEWAY_ADMIN_PORT", parse_port, None)
    admin_max_connections: int = env("GATEWAY_ADMIN_MAX_CONNECTIONS", parse_positive_int, 64)


@dataclass(frozen=True, slots=True)
class Settings:
    routes: tuple[Route, ...]
    host: str = env("GATEWAY_HOST", parse_listen_host, "0.0.0.0")
    port: int = env("GATEWAY_PORT", parse_port, 8080)
    workers: int = env("GATEWAY_WORKERS", parse_positive_int, 1)
    upstream_connect_timeout: float = env("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", parse_timeout, 5.0)
    upstream_timeout: float = env("GATEWAY_UPSTREAM_TIMEOUT", parse_timeout, 30.0)
    upstream_max_connections: int = env("GATEWAY_UPSTREAM_MAX_CONNECTIONS", parse_positive_int, 100)
    max_body_bytes: int = env("GATEWAY_MAX_BODY_BYTES", parse_int, 100 * MiB)  # 0: unlimited
    # Bodies up to this size are received whole before an upstream connection is taken
    # (nginx's request buffering); 0 streams every body as it arrives.
    request_buffer_bytes: int = env("GATEWAY_REQUEST_BUFFER_BYTES", parse_int, 64 * 1024)
    admin_prefix: str = env("GATEWAY_ADMIN_PREFIX", parse_admin_prefix, "/__gateway")
    admin_token: Secret | None = env("GATEWAY_ADMIN_TOKEN", parse_token, None)
    trusted_proxies: tuple[Network, ...] = env("GATEWAY_TRUSTED_PROXIES", parse_cidrs, ())
    log_level: str = env("GATEWAY_LOG_LEVEL", choice(LOG_LEVELS), "info")
    access_log: bool = env("GATEWAY_ACCESS_LOG", parse_bool, True)
    http_parser: str = env("GATEWAY_HTTP_PARSER", parse_http_parser, "httptools")
    merge_slashes: bool = env("GATEWAY_MERGE_SLASHES", parse_bool, True)
    path_escaped_slashes: str = env("GATEWAY_PATH_ESCAPED_SLASHES", choice(("reject", "keep")), "reject")
    cache: CacheSettings = field(default_factory=CacheSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    cache_memory_bytes: int = env("GATEWAY_CACHE_MEMORY_BYTES", parse_positive_int, 64 * MiB)
    # Per worker: bytes held while teeing misses into the store (and feeding their clients).
    cache_tee_bytes: int = env("GATEWAY_CACHE_TEE_BYTES", parse_positive_int, 64 * MiB)
    redis: RedisSettings = field(default_factory=RedisSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    # A second Redis for the rate-limit counters (noeviction), so cache writes never evict them.
    rate_limit_redis_url: Secret | None = env("GATEWAY_RATE_LIMIT_REDIS_URL", parse_redis_url, None)
    # A per-client-IP limit added to every route's own limit sets ("" = none).
    rate_limit_ip_ceiling: str = env("GATEWAY_RATE_LIMIT_IP_CEILING", parse_text, "")
    metrics_token: Secret | None = env("GATEWAY_METRICS_TOKEN", parse_token, None)
    # Failed admin-token attempts per client and minute before that client gets 429s.
    admin_auth_failures: int = env("GATEWAY_ADMIN_AUTH_FAILURES", parse_positive_int, 5)
    admin_auth_lockout: float = env("GATEWAY_ADMIN_AUTH_LOCKOUT", parse_timeout, 300.0)

    @property
    def counters_redis(self) -> RedisSettings | None:
        """The counters' own Redis, or None when they share `redis` (or the memory store)."""
        return separate_counters_redis(self.redis, self.rate_limit_redis_url)
