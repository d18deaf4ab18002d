"""Admin tokens: constant-time comparison and a per-client throttle on failed attempts.

A wrong token costs its sender: after `max_failures` wrong tokens within `window` seconds a
client (its address as resolved through GATEWAY_TRUSTED_PROXIES) is answered 429 for `lockout`
seconds on every token-protected admin endpoint, whatever it sends, so guessing cannot go on
and a correct guess during the lockout reveals nothing. The count is kept in this process
(per worker): N workers allow up to N x `max_failures` guesses per window, which against a
token of 128 bits or more changes nothing. Pure apart from the caller's clock (`now`).
"""

from __future__ import annotations

import hmac
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from gateway.config import Secret
from gateway.errors import Forbidden, TooManyRequests, Unauthorized
from gateway.http.identity import client_group

BEARER_CHALLENGE = [(b"www-authenticate", b"Bearer")]


def token_matches(given: bytes, token: Secret) -> bool:
    """Constant time in the compared bytes: the answer's timing says nothing about how many
    leading bytes were right."""
    return hmac.compare_digest(given, token.get_secret_value().encode())


def bearer_credentials(authorization: str | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value (the client's bytes), else None."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or " " in credentials:
        return None
    # Header values arrive latin-1 decoded: re-encoding gives the client's bytes back.
    return credentials.encode("latin-1")


def client_key(scope: Mapping[str, Any]) -> str:
    """Whom failed attempts are counted against: the client as the context layer resolved it
    (through trusted proxies), IPv6 grouped by /64 so one host cannot rotate addresses."""
    info = scope.get("gateway")
    address = getattr(info, "client_ip", None)
    if not address:
        client = scope.get("client")
        address = client[0] if client else "unknown"
    return client_group(str(address))


class AdminGuard:
    """Checks admin tokens and throttles the clients that keep getting them wrong."""

    def __init__(
        self,
        max_failures: int = 5,
        lockout: float = 300.0,
        *,
        window: float = 60.0,
        max_clients: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.lockout = lockout
        self.window = window
        self.max_clients = max_clients  # bounds memory against many source addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked: dict[str, float] = {}  # client -> locked until

    def authorise(self, client: str, authorization: str | None, token: Secret, now: float) -> None:
        """Return when `authorization` carries `token`; otherwise raise 429 (locked out), 401
        (no bearer token) or 403 (a wrong one, which counts as a failure)."""
        until = self._locked.get(client)
        if until is not None:
            if now < until:
                wait = max(1, int(until - now + 0.999))
                raise TooManyRequests(
                    "too many failed admin token attempts; try again later",
                    headers=[(b"retry-after", str(wait).encode())],
                )
            del self._locked[client]
        given = bearer_credentials(authorization)
        if given is None:
            raise Unauthorized("send the token as 'Authorization: Bearer <token>'", headers=BEARER_CHALLENGE)
        if token_matches(given, token):
            return
        self._fail(client, now)
        raise Forbidden("the admin token is not valid")

    def is_locked(self, client: str, now: float) -> bool:
        until = self._locked.get(client)
        return until is not None and now < until

    def _fail(self, client: str, now: float) -> None:
        times = self._failures.pop(client, None) or deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            self._locked[client] = now + self.lockout
            if len(self._locked) > self.max_clients:
                live = sorted((t, c) for c, t in self._locked.items() if t > now)
                self._locked = {c: t for t, c in live[-self.max_clients :]}
            return
        self._failures[client] = times  # most recent last
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
