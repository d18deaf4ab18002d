"""The routes file (YAML or JSON): routes with their own upstreams, cache and rate-limit settings.

Every key is checked: an unknown one (a typo such as `rate_limt:` or an unsupported `timeout:`)
stops start-up naming its place, since silently ignoring it would switch a policy off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from gateway.config import (
    CacheSettings,
    RateLimitSettings,
    Route,
    parse_bool,
    parse_int,
    parse_path_prefix,
    parse_upstream_url,
)
from gateway.errors import ConfigError
from gateway.http.headers import GATEWAY_SET, HOP_BY_HOP

NAME = "GATEWAY_ROUTES_FILE"
TOP_LEVEL_KEYS = frozenset({"routes"})
ROUTE_KEYS = frozenset(
    {
        "name",
        "prefix",
        "upstream",
        "strip_prefix",
        "cache",
        "rate_limit",
        "forward_headers",
        "allow_trace",
    }
)
#: A header field name (RFC 9110 §5.1 token).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Fields `forward_headers` cannot name: the gateway sets or answers them itself, or they belong
#: to one hop only.
_NOT_FORWARDABLE = (
    GATEWAY_SET
    | HOP_BY_HOP
    | {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"via",
    }
)
S = TypeVar("S", CacheSettings, RateLimitSettings)


def load_routes_file(
    path: str, cache: CacheSettings, rate_limit: RateLimitSettings, admin_prefix: str
) -> list[Route]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(NAME, f"cannot read {path!r} ({exc.strerror})") from None
    try:
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(NAME, f"{path!r} is not valid YAML/JSON ({exc})") from None
    items = doc.get("routes") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigError(NAME, "expected a top-level 'routes' list")
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{NAME} {key}", "unknown key (expected 'routes')")
    routes = [
        _route(f"{NAME} routes[{i}]", item, cache, rate_limit, admin_prefix) for i, item in enumerate(items)
    ]
    prefixes = [r.prefix for r in routes]
    if len(set(prefixes)) != len(prefixes):
        raise ConfigError(NAME, "two routes share a prefix")
    names = [r.name for r in routes]
    for i, name in enumerate(names):
        if name in names[:i] or name == "default":
            # Route names key per-route state (upstream rotation, limits, cache keys, metrics);
            # "default" is the GATEWAY_UPSTREAM_URL route's.
            raise ConfigError(f"{NAME} routes[{i}].name", f"{name!r} is already used")
    return routes


def _route(
    where: str, item: Any, cache: CacheSettings, rate_limit: RateLimitSettings, admin_prefix: str
) -> Route:
    if not isinstance(item, dict):
        raise ConfigError(where, "expected a mapping")
    for key in item:
        if key not in ROUTE_KEYS:
            raise ConfigError(f"{where}.{key}", f"unknown key (expected {', '.join(sorted(ROUTE_KEYS))})")
    prefix = parse_path_prefix(f"{where}.prefix", str(item.get("prefix", "")))
    if prefix == admin_prefix or prefix.startswith(admin_prefix + "/"):
        raise ConfigError(
            f"{where}.prefix", f"is inside the admin prefix {admin_prefix}, which is never forwarded"
        )
    upstream = item.get("upstream")
    urls: list[Any] = upstream if isinstance(upstream, list) else [upstream]
    if not urls or any(not isinstance(u, str) for u in urls):
        raise ConfigError(f"{where}.upstream", "expected a URL or a list of URLs")
    first, *more = _rate_limit_sets(f"{where}.rate_limit", rate_limit, item.get("rate_limit"))
    return Route(
        name=str(item.get("name") or prefix),
        prefix=prefix,
        upstreams=tuple(parse_upstream_url(f"{where}.upstream", u) for u in urls),
        strip_prefix=parse_bool(f"{where}.strip_prefix", _text(item.get("strip_prefix", False))),
        cache=_overlay(f"{where}.cache", cache, item.get("cache")),
        rate_limit=first,
        more_rate_limits=tuple(more),
        forward_headers=_header_names(f"{where}.forward_headers", item.get("forward_headers", [])),
        allow_trace=parse_bool(f"{where}.allow_trace", _text(item.get("allow_trace", False))),
    )


def _header_names(where: str, value: Any) -> frozenset[str]:
    """A list of header names the route forwards from any client (lowercased)."""
    items: list[Any] = value if isinstance(value, list) else [value]
    names: set[str] = set()
    for item in items:
        if not isinstance(item, str) or not _TOKEN.fullmatch(item.strip()):
            raise ConfigError(where, f"expected a list of header names, got {item!r}")
        name = item.strip().lower()
        if name.encode() in _NOT_FORWARDABLE:
            raise ConfigError(where, f"{item!r} is set by the gateway itself or is hop-by-hop")
        names.add(name)
    return frozenset(names)


def _rate_limit_sets(where: str, base: RateLimitSettings, section: Any) -> list[RateLimitSettings]:
    """`rate_limit:` as one mapping (one set) or a list of mappings (several sets, decided
    together). In a list every set names its `limits` and its `policy` explicitly: inheriting
    the global limits twice, or two sets sharing a name (and so their counters), is a mistake."""
    if not isinstance(section, list):
        return [_overlay(where, base, section)]
    if not section:
        raise ConfigError(where, "an empty list: give one or more limit sets")
    sets: list[RateLimitSettings] = []
    for i, item in enumerate(section):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(here, "expected a mapping")
        for required in ("limits", "policy"):
            if required not in item:
                raise ConfigError(f"{here}.{required}", "is required for each set of a list")
        sets.append(_overlay(here, base, item))
    names = [s.policy for s in sets]
    if len(set(names)) != len(names):
        raise ConfigError(where, "two limit sets share a policy name")
    return sets


def _text(value: Any) -> str:
    """A YAML/JSON scalar or list as the text the environment would carry."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(_text, value))
    return str(value)


def _overlay(where: str, base: S, section: Any) -> S:
    """Per-route settings: the route's keys over the global defaults, each parsed by the
    field's own parser (the one its environment variable uses)."""
    if section is None:
        return base
    if isinstance(section, bool) and isinstance(base, CacheSettings):
        section = {"enabled": section}
    if not isinstance(section, dict):
        raise ConfigError(where, "expected a mapping")
    by_name = {f.name: f for f in fields(base)}
    changes: dict[str, Any] = {}
    for key, value in section.items():
        f = by_name.get(str(key))
        if f is None or "parse" not in f.metadata:
            raise ConfigError(f"{where}.{key}", "unknown setting")
        if key == "cost":
            changes[key] = _cost(f"{where}.cost", value)
        else:
            changes[f.name] = f.metadata["parse"](f"{where}.{key}", _text(value))
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
