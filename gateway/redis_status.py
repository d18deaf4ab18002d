"""The Redis servers' own report: their version and whether it carries the known fixes.

Read once per worker at start-up, bounded in time, and again by the readiness check while still
unknown (Redis was down at start-up). The verdict itself is `redis_version.verdict` (pure).
"""

from __future__ import annotations

import logging

from gateway.redis_client import describe, server_infos
from gateway.redis_version import verdict
from gateway.runtime import Runtime

log = logging.getLogger("gateway")


async def check_redis_versions(runtime: Runtime) -> None:
    """Ask each Redis its version (bounded: start-up never waits long for a slow Redis) and
    warn once about a server without the October 2025 Lua fixes. Unknown (Redis down) is
    asked again by the readiness check."""
    targets = (
        ("redis", runtime.redis, runtime.settings.redis),
        ("counters redis", runtime.counters_redis, runtime.settings.counters_redis),
    )
    for label, client, redis_settings in targets:
        if client is None or redis_settings is None or label in runtime.redis_verdicts:
            continue
        timeout = min(1.0, redis_settings.connect_timeout + redis_settings.command_timeout)
        try:
            infos = await server_infos(client, timeout)
        except Exception as exc:  # any failure means "unknown", never a crash
            log.info("could not read the version of the %s yet (%s)", label, type(exc).__name__)
            continue
        verdicts = [verdict(info) for info in infos]
        worst = next((v for v in verdicts if v.vulnerable), verdicts[0])
        runtime.redis_verdicts[label] = worst
        if worst.vulnerable:
            log.warning(
                "%s at %s is %s %s without the October 2025 Lua security fixes "
                "(CVE-2025-49844 and related): %s",
                label,
                describe(redis_settings),
                worst.product,
                worst.version,
                worst.advice,
            )
        else:
            log.info("%s is %s %s", label, worst.product, worst.version)
