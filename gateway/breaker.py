"""The circuit breaker in front of Redis: stop paying the deadline on every request while it is down.

After `threshold` consecutive failed flushes the circuit opens and callers fail at once; after
`cooldown` one flush probes, and its outcome closes the circuit or restarts the wait.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("gateway.redis")


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; lets one probe through after `cooldown`."""

    def __init__(self, threshold: int = 3, cooldown: float = 2.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self._probing or time.monotonic() - self.opened_at < self.cooldown:
            return False
        self._probing = True  # half-open: exactly one flush tests the water
        return True

    def success(self) -> None:
        if self.opened_at is not None:
            log.warning("redis is answering again; circuit closed")
        self.failures, self.opened_at, self._probing = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self.opened_at is not None:
            self.opened_at = time.monotonic()  # failed probe: wait another cooldown
        elif self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            log.warning(
                "redis failed %d times in a row; circuit open for %.1fs (bypassing it)",
                self.failures,
                self.cooldown,
            )
