"""Helpers for the cache's end-to-end tests: targets on the recording upstream's `/cache/...`
endpoint, what Redis holds for them, Cache-Status members, polling with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import urlencode

import httpx
import redis

from gateway.cache.keys import target_form
from gateway.cache.redis_store import PREFIX

T = TypeVar("T")

TOKEN = "e2e-admin-token"


def target(name: str, cc: str | None = None, h: Iterable[str] = (), **params: str) -> str:
    """``/cache/<name>?cc=...&h=...``: the raw path and query the cache keys on."""
    query: list[tuple[str, str]] = []
    if cc is not None:
        query.append(("cc", cc))
    query += [("h", item) for item in h]
    query += list(params.items())
    return f"/cache/{name}" + (f"?{urlencode(query)}" if query else "")


def entries(redis_url: str, raw_target: str) -> list[str]:
    """Names of the entry hashes Redis holds for ``raw_target`` (any host, any route)."""
    path, _, query = raw_target.encode().partition(b"?")
    with redis.Redis.from_url(redis_url) as client:
        names = [name.decode() for name in client.keys(PREFIX + "{*")]
    return [name for name in names if name.startswith(f"{PREFIX}{{{target_form(path, query)}|")]


def expiries(redis_url: str, names: Iterable[str]) -> list[int]:
    with redis.Redis.from_url(redis_url) as client:
        return [int(client.pttl(name)) for name in names]


def members(response: httpx.Response) -> list[str]:
    """The gateway's Cache-Status member split into its parameters (RFC 9211)."""
    value = response.headers.get("cache-status", "")
    return [part.strip() for part in value.split(";")]


def purge(base_url: str, body: dict[str, object], token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{base_url}/__gateway/purge", json=body, headers=headers, timeout=5)


def poll(probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something other than None, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
