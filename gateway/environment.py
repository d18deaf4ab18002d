"""Reading `Settings` from environment variables: the one module that reads the environment.

Each settings field names its variable, parser and default once (`gateway.config.env`); this
module walks those fields. A variable that looks like ours (`GATEWAY_*`, `REDIS_*`) but is no
setting stops start-up with a "did you mean", so a typo can never switch a protection off.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import Field, fields
from typing import Any

from gateway.config import (
    CacheSettings,
    EdgeSettings,
    RateLimitSettings,
    RedisSettings,
    Route,
    Settings,
    parse_upstream_url,
)
from gateway.errors import ConfigError
from gateway.routes_file import load_routes_file

#: Variables read outside the settings fields: how routes are given.
UPSTREAM_URL = "GATEWAY_UPSTREAM_URL"
ROUTES_FILE = "GATEWAY_ROUTES_FILE"
_OWN_PREFIXES = ("GATEWAY_", "REDIS_")
#: Names other software puts into an environment under our prefixes and that are not ours:
#: Kubernetes service links for a Service named "gateway", "redis" or "redis-<anything>"
#: (`REDIS_COUNTERS_SERVICE_HOST`, `REDIS_PORT_6379_TCP_ADDR`, `REDIS_COUNTERS_PORT=tcp://...`).
_FOREIGN = re.compile(
    r"(GATEWAY|REDIS)(_[A-Z0-9]+)*_(SERVICE_(HOST|PORT)(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)"
)
_LINK_VALUE = ("tcp://", "udp://", "sctp://")


def _env_fields(cls: type) -> list[Field[Any]]:
    return [f for f in fields(cls) if "env" in f.metadata]


def known_variables() -> frozenset[str]:
    """Every variable the gateway reads."""
    names = {UPSTREAM_URL, ROUTES_FILE}
    for cls in (Settings, CacheSettings, RateLimitSettings, RedisSettings, EdgeSettings):
        names.update(f.metadata["env"] for f in _env_fields(cls))
    return frozenset(names)


def _given(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's value; blank counts as unset."""
    value = environ.get(name)
    return value if value is not None and value.strip() != "" else None


def _read(cls: type[Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields of `cls` whose variables are set, parsed."""
    values: dict[str, Any] = {}
    for f in _env_fields(cls):
        raw = _given(environ, f.metadata["env"])
        if raw is not None:
            values[f.name] = f.metadata["parse"](f.metadata["env"], raw)
    return values


def check_unknown(environ: Mapping[str, str]) -> None:
    known = known_variables()
    for name in sorted(environ):
        if not name.startswith(_OWN_PREFIXES) or name in known or _FOREIGN.fullmatch(name):
            continue
        if name.endswith("_PORT") and environ[name].strip().lower().startswith(_LINK_VALUE):
            continue  # <SERVICE>_PORT=tcp://ip:port of a service link
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else " (see the configuration reference)"
        raise ConfigError(name, f"is not a setting of the gateway{hint}")


def _redis(environ: Mapping[str, str]) -> RedisSettings:
    values = _read(RedisSettings, environ)
    if "mode" not in values and values.get("sentinels"):
        values["mode"] = "sentinel"
    redis = RedisSettings(**values)
    if redis.mode == "sentinel" and not redis.sentinels:
        raise ConfigError("REDIS_MODE", "sentinel mode needs REDIS_SENTINELS")
    if redis.mode == "cluster" and not (redis.host or redis.url):
        raise ConfigError("REDIS_MODE", "cluster mode needs REDIS_HOST or REDIS_URL (any node)")
    if redis.mode == "cluster" and redis.db != 0:
        raise ConfigError("REDIS_DB", "Redis Cluster has only database 0")
    if redis.tls and redis.url is not None and redis.url.get_secret_value().startswith("redis://"):
        # Never a silent downgrade: the URL's scheme decides TLS, and the two disagree.
        raise ConfigError("REDIS_TLS", "is true but REDIS_URL is redis:// (plaintext); use a rediss:// URL")
    if (
        redis.mode == "sentinel"
        and redis.data_tls
        and not redis.sentinels_use_tls
        and (redis.password is not None)
    ):
        # Sentinels are sent the same AUTH: over plaintext it would undo the data nodes' TLS.
        raise ConfigError(
            "REDIS_SENTINEL_TLS",
            "is false while the data connections use TLS: "
            "REDIS_PASSWORD would cross the network in plaintext",
        )
    return redis


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    """Parse the whole configuration; raises ConfigError naming the first bad variable."""
    check_unknown(environ)
    cache = CacheSettings(**_read(CacheSettings, environ))
    rate_limit = RateLimitSettings(**_read(RateLimitSettings, environ))
    top = _read(Settings, environ)
    admin_prefix = top.get("admin_prefix", Settings.__dataclass_fields__["admin_prefix"].default)
    routes: list[Route] = []
    routes_file = _given(environ, ROUTES_FILE)
    if routes_file is not None:
        routes.extend(load_routes_file(routes_file, cache, rate_limit, admin_prefix))
    upstream = _given(environ, UPSTREAM_URL)
    if upstream is not None:
        url = parse_upstream_url(UPSTREAM_URL, upstream)
        if not any(r.prefix == "/" for r in routes):
            routes.append(Route("default", "/", (url,), False, cache, rate_limit))
    if not routes:
        raise ConfigError(UPSTREAM_URL, f"is required (or {ROUTES_FILE} with at least one route)")
    return Settings(
        routes=tuple(sorted(routes, key=lambda r: len(r.prefix), reverse=True)),
        cache=cache,
        rate_limit=rate_limit,
        redis=_redis(environ),
        edge=_edge(environ, top),
        **top,
    )


def _edge(environ: Mapping[str, str], top: Mapping[str, Any]) -> EdgeSettings:
    edge = EdgeSettings(**_read(EdgeSettings, environ))
    if edge.admin_host is not None and edge.admin_port is None:
        raise ConfigError("GATEWAY_ADMIN_HOST", "is set but GATEWAY_ADMIN_PORT is not")
    port = top.get("port", Settings.__dataclass_fields__["port"].default)
    if edge.admin_port is not None and edge.admin_port == port:
        raise ConfigError("GATEWAY_ADMIN_PORT", f"must differ from GATEWAY_PORT ({port})")
    return edge
