"""The cache's view of one request, gathered once by the middleware and read by every step:
lookup, replay, relay, revalidation and collapsing."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config import CacheSettings
from gateway.http.cache_control import CacheControl
from gateway.types import Headers


@dataclass(slots=True)
class CacheRequest:
    """The facts about one cacheable request that every step needs."""

    key: str
    method: str
    headers: Headers
    settings: CacheSettings
    request_cc: CacheControl = field(default_factory=CacheControl)
