"""The cache's safety settings: safe defaults, the opt-ins from the environment and per route,
and bad values that stop start-up naming their place (a typo must never switch a defence off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ERROR_STATUSES, MiB, Settings
from gateway.environment import settings_from_env
from gateway.errors import ConfigError

BASE = {"GATEWAY_UPSTREAM_URL": "http://backend:3000"}


def settings(**env: str) -> Settings:
    return settings_from_env({**BASE, **env})


def test_the_defaults_refuse_client_refreshes_and_error_storage_and_bound_tee_memory() -> None:
    s = settings()
    assert s.cache.honor_client_no_cache is False
    assert s.cache.cache_errors == frozenset()
    assert s.cache_tee_bytes == 64 * MiB


def test_the_opt_ins_from_the_environment() -> None:
    s = settings(
        GATEWAY_CACHE_HONOR_CLIENT_NO_CACHE="true",
        GATEWAY_CACHE_ERRORS="500, 503",
        GATEWAY_CACHE_TEE_BYTES=str(8 * MiB),
    )
    assert s.cache.honor_client_no_cache and s.routes[0].cache.honor_client_no_cache
    assert s.cache.cache_errors == {500, 503}
    assert s.cache_tee_bytes == 8 * MiB


def test_the_opt_ins_per_route(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("""
routes:
  - {prefix: /live, upstream: "http://a:1", cache: {honor_client_no_cache: true}}
  - {prefix: /errs, upstream: "http://a:1", cache: {cache_errors: [500, 503]}}
  - {prefix: /all, upstream: "http://a:1", cache: {cache_errors: true}}
  - {prefix: /none, upstream: "http://a:1", cache: {cache_errors: false}}
""")
    routes = {r.prefix: r for r in settings(GATEWAY_ROUTES_FILE=str(path)).routes}
    assert routes["/live"].cache.honor_client_no_cache
    assert not routes["/errs"].cache.honor_client_no_cache
    assert routes["/errs"].cache.cache_errors == {500, 503}
    assert routes["/all"].cache.cache_errors == ERROR_STATUSES
    assert routes["/none"].cache.cache_errors == frozenset()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_CACHE_HONOR_CLIENT_NO_CACHE": "sometimes"}, "GATEWAY_CACHE_HONOR_CLIENT_NO_CACHE"),
        ({"GATEWAY_CACHE_ERRORS": "5xx"}, "GATEWAY_CACHE_ERRORS"),
        ({"GATEWAY_CACHE_ERRORS": "200"}, "GATEWAY_CACHE_ERRORS"),
        ({"GATEWAY_CACHE_TEE_BYTES": "0"}, "GATEWAY_CACHE_TEE_BYTES"),
        ({"GATEWAY_CACHE_TEE_BYTES": "64MiB"}, "GATEWAY_CACHE_TEE_BYTES"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**env)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{cache_errors: [200]}", "routes\\[0\\].cache.cache_errors"),
        ("{honor_client_nocache: true}", "routes\\[0\\].cache.honor_client_nocache"),
        ("{honor_client_no_cache: maybe}", "routes\\[0\\].cache.honor_client_no_cache"),
    ],
)
def test_bad_route_keys_stop_start_up_naming_their_place(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(f"routes: [{{prefix: /a, upstream: 'http://x', cache: {section}}}]")
    with pytest.raises(ConfigError, match=message):
        settings(GATEWAY_ROUTES_FILE=str(path))
