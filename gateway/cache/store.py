"""The cache's storage protocol, shared by the Redis store (the product) and the memory store.

A store knows nothing about HTTP: it keeps opaque serialized entries (`cache/entry.py`) under a
primary key, one blob per variant, plus the `Vary` header names that select the variant. The
primary key is built by `cache/keys.py` as ``"<path?query>|<scheme>|<host>|<route>"`` with every
field escaped, so it never contains a "|" of its own.

Implementations: `gateway.cache.redis_store.RedisCacheStore` and
`gateway.cache.memory_store.MemoryCacheStore`; both raise only `gateway.errors.StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Lookup:
    """What one lookup found for a primary key and one of its variants."""

    vary: str | None  # comma-separated lowercase header names stored for the key; None if unknown
    blob: bytes | None  # the serialized entry of the requested variant; None if absent
    purged_at: float | None  # soft-purge time (unix seconds): entries stored before it are stale


MISS = Lookup(None, None, None)


class CacheStore(Protocol):
    """Storage for cached responses. Every method raises `StoreUnavailable` on store trouble."""

    def lookup(self, key: str, variant: str) -> Awaitable[Lookup]:
        """Start fetching `key`'s vary list, soft-purge time and `variant`'s blob.

        Eager: the store request is issued when this is called, so it can share a round trip
        with other commands issued in the same event-loop tick. Awaiting it costs one round trip.
        Corrupt data reads as absent.
        """
        ...

    async def put(
        self, key: str, variant: str, vary: str, blob: bytes, ttl: float, tags: Sequence[str]
    ) -> None:
        """Store `blob` for `variant`; the key then lives at least `ttl` seconds.

        A `vary` different from the stored one replaces all of the key's variants (they were
        selected by other request headers). `tags` (from `Surrogate-Key`/`Cache-Tag`) make the key
        purgeable by tag. A `ttl` <= 0 stores nothing.
        """

    async def invalidate(self, key: str) -> None:
        """Delete every variant of `key` (RFC 9111 §4.4 invalidation)."""

    async def try_lock(self, key: str, ttl: float) -> str | None:
        """Take the collapsing lock of `key` for `ttl` seconds: a token, or None if it is held."""

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock if `token` still owns it (an expired lock may belong to another)."""

    async def purge(
        self,
        *,
        url: str | None = None,
        prefix: str | None = None,
        tag: str | None = None,
        soft: bool = False,
    ) -> int:
        """Delete (or, if `soft`, mark stale) keys and return how many primary keys it affected.

        `url` matches the target field of a key exactly, on every host and route; `prefix`
        matches keys whose target starts with it; both in key form (`keys.target_form`,
        `keys.prefix_form`); `tag` matches keys stored
        with that tag. Exactly one of them must be given.
        """

    async def ping(self) -> bool:
        """True if the store answers now."""


def key_matcher(url: str | None, prefix: str | None, tag: str | None) -> tuple[str, str]:
    """Validate purge arguments: ("url" | "prefix" | "tag", value) for the one that is set."""
    given = [(kind, v) for kind, v in (("url", url), ("prefix", prefix), ("tag", tag)) if v]
    if len(given) != 1:
        raise ValueError("purge needs exactly one non-empty url, prefix or tag")
    return given[0]


class Ready(Generic[T]):
    """An awaitable that is already complete; awaiting it never yields to the event loop."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, T]:
        return self._value
        yield  # unreachable: makes this a generator function, so `await` works
