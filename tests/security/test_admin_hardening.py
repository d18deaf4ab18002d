"""Admin hardening: token guessing is throttled per client, tokens are compared in constant
time, and /metrics can require a token."""

from __future__ import annotations

import ast
import inspect

import httpx
import pytest

from gateway import admin_auth
from gateway.admin_auth import AdminGuard, token_matches
from gateway.config import Secret
from gateway.errors import Forbidden, TooManyRequests, Unauthorized
from tests.e2e.conftest import GatewayFactory
from tests.support.upstream import RecordingUpstream

TOKEN = "admin-token-0123456789abcdef0123456789abcdef"
METRICS = "metrics-token-fedcba9876543210"
PURGE = {"url": "/cache/x"}


def purge(gw_url: str, token: str, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.post(f"{gw_url}/__gateway/purge", json=PURGE, headers=headers)


def test_guessing_the_admin_token_is_throttled_with_429_and_even_the_right_token_waits(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_ADMIN_AUTH_LOCKOUT": "120"})
    statuses = [purge(gw.url, f"guess-{i}").status_code for i in range(7)]
    assert statuses == [403] * 5 + [429] * 2  # 5 failures lock the client out
    locked = purge(gw.url, TOKEN)
    assert locked.status_code == 429  # a correct guess during the lockout reveals nothing
    assert 100 <= int(locked.headers["retry-after"]) <= 120
    assert locked.headers["content-type"] == "application/problem+json"
    assert TOKEN not in gw.logs()
    assert upstream.requests == []  # admin paths are never forwarded


def test_one_clients_lockout_does_not_lock_out_another_client(
    gateway_factory: GatewayFactory,
) -> None:
    """Behind a trusted proxy each client is counted by its own address."""
    gw = gateway_factory({"GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"})
    for i in range(5):
        purge(gw.url, f"guess-{i}", forwarded_for="198.51.100.7")
    assert purge(gw.url, TOKEN, forwarded_for="198.51.100.7").status_code == 429
    assert purge(gw.url, TOKEN, forwarded_for="203.0.113.5").status_code == 200


def test_metrics_without_the_metrics_token_is_401_and_with_it_200(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory({"GATEWAY_METRICS_TOKEN": METRICS})
    bare = httpx.get(f"{gw.url}/__gateway/metrics")
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert "gateway_responses_total" not in bare.text
    wrong = httpx.get(f"{gw.url}/__gateway/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    good = httpx.get(f"{gw.url}/__gateway/metrics", headers={"Authorization": f"Bearer {METRICS}"})
    assert good.status_code == 200 and "gateway_responses_total" in good.text
    # Liveness and readiness stay open for probes.
    assert httpx.get(f"{gw.url}/__gateway/health").status_code == 200
    assert httpx.get(f"{gw.url}/__gateway/ready").status_code == 200


def test_guessing_the_metrics_token_is_throttled_too(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"GATEWAY_METRICS_TOKEN": METRICS, "GATEWAY_ADMIN_AUTH_FAILURES": "3"})
    statuses = [
        httpx.get(f"{gw.url}/__gateway/metrics", headers={"Authorization": f"Bearer g{i}"}).status_code
        for i in range(4)
    ]
    assert statuses == [403, 403, 403, 429]


def test_metrics_stays_open_without_a_metrics_token(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    assert httpx.get(f"{gw.url}/__gateway/metrics").status_code == 200


def test_failures_outside_the_window_do_not_add_up_and_the_lockout_ends() -> None:
    guard = AdminGuard(max_failures=3, lockout=30.0, window=60.0)
    token = Secret(TOKEN)
    for now in (0.0, 50.0):
        with pytest.raises(Forbidden):
            guard.authorise("c", "Bearer x", token, now)
    with pytest.raises(Forbidden):
        guard.authorise("c", "Bearer x", token, 120.0)  # the first failure has left the window
    guard.authorise("c", f"Bearer {TOKEN}", token, 121.0)
    for now in (130.0, 131.0):
        with pytest.raises(Forbidden):
            guard.authorise("c", "Bearer x", token, now)
    with pytest.raises(TooManyRequests):
        guard.authorise("c", f"Bearer {TOKEN}", token, 131.5)  # 3 in the window: locked
    guard.authorise("c", f"Bearer {TOKEN}", token, 161.5)  # lockout over


def test_a_missing_token_is_401_and_not_counted_as_a_guess() -> None:
    guard = AdminGuard(max_failures=1, lockout=30.0)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            guard.authorise("c", None, Secret(TOKEN), 0.0)
    guard.authorise("c", f"Bearer {TOKEN}", Secret(TOKEN), 0.0)


def test_many_guessing_addresses_cannot_grow_the_throttle_without_bound() -> None:
    guard = AdminGuard(max_failures=2, lockout=30.0, max_clients=100)
    for i in range(1000):
        for _ in range(2):
            with pytest.raises(Forbidden):
                guard.authorise(f"10.0.{i // 256}.{i % 256}", "Bearer x", Secret(TOKEN), 0.0)
    assert len(guard._failures) <= 100 and len(guard._locked) <= 100


def test_tokens_are_compared_in_constant_time_with_hmac_compare_digest() -> None:
    """Timing cannot be measured reliably on a loaded machine; the comparison itself is pinned:
    hmac.compare_digest, and no `==` on a token anywhere in the module."""
    source = inspect.getsource(token_matches)
    assert "hmac.compare_digest(" in source
    tree = ast.parse(inspect.getsource(admin_auth))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq) for op in node.ops):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & {"given", "token", "credentials"}, ast.unparse(node)
    assert token_matches(TOKEN.encode(), Secret(TOKEN))
    assert not token_matches(TOKEN[:-1].encode(), Secret(TOKEN))
    assert not token_matches(b"", Secret(TOKEN))
