"""What one worker shares between requests: settings and the clients built in the lifespan."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from gateway.admin_auth import AdminGuard
from gateway.config import Settings
from gateway.routing import RouteTable

if TYPE_CHECKING:
    from gateway.autopipeline import AutoPipeline
    from gateway.cache.store import CacheStore
    from gateway.ratelimit.limiter import Limiter
    from gateway.redis_client import RedisClient
    from gateway.redis_version import ServerVerdict
    from gateway.upstream import AiohttpUpstream


class Metrics:
    """Plain counters, rendered in Prometheus text format by the admin endpoint."""

    def __init__(self) -> None:
        self.responses: Counter[tuple[str, int]] = Counter()  # (route, status)
        self.cache: Counter[str] = Counter()  # HIT/MISS/STALE/...
        self.ratelimit: Counter[str] = Counter()  # admitted/limited/shadow/failed


class Runtime:
    """Filled in by the lifespan (one per worker) and read by every middleware per request."""

    #: The upstream client, created by the lifespan before the first request (so the hot path
    #: needs no None check); `opened` says whether it exists yet.
    upstream: AiohttpUpstream

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self.metrics = Metrics()
        self.redis: RedisClient | None = None
        self.pipeline: AutoPipeline | None = None
        self.cache_store: CacheStore | None = None
        self.limiter: Limiter | None = None  # None: the rate-limit layer counts in-process
        # The counters' own Redis (GATEWAY_RATE_LIMIT_REDIS_URL); None: they share `redis`.
        self.counters_redis: RedisClient | None = None
        self.counters_pipeline: AutoPipeline | None = None
        # What each Redis said about itself at start-up ("cache", "counters").
        self.redis_verdicts: dict[str, ServerVerdict] = {}
        self.admin_guard = AdminGuard(settings.admin_auth_failures, settings.admin_auth_lockout)

    @property
    def opened(self) -> bool:
        return hasattr(self, "upstream")
