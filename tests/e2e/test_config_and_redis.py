"""Start-up configuration errors, check-config, readiness and secrets, with real processes."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import GatewayFactory
from tests.support.redis_server import RedisServer, env_without_redis, free_port
from tests.support.upstream import RecordingUpstream

SECRET = "s3cr3t-Pa55word"


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**env_without_redis(), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_ACCESS_LOG", "maybe"),
        ("GATEWAY_UPSTREAM_URL", "ftp://backend"),
        ("GATEWAY_UPSTREAM_URL", "http://[::1"),
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("GATEWAY_UPSTREAM_TIMEOUT", "soon"),
        ("REDIS_PORT", "redis"),
        ("REDIS_TLS", "sometimes"),
        ("GATEWAY_RATE_LIMIT", "ten per second"),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line(variable: str, value: str) -> None:
    env = {"GATEWAY_UPSTREAM_URL": "http://127.0.0.1:1", variable: value, "REDIS_PASSWORD": SECRET}
    result = run_cli(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0]
    assert SECRET not in result.stderr + result.stdout


def test_missing_upstream_is_a_configuration_error() -> None:
    result = run_cli({})
    assert result.returncode == 2 and "GATEWAY_UPSTREAM_URL" in result.stderr


def test_malformed_redis_url_never_echoes_the_password() -> None:
    result = run_cli(
        {"GATEWAY_UPSTREAM_URL": "http://127.0.0.1:1", "REDIS_URL": f"http://user:{SECRET}@host:6379"}
    )
    assert result.returncode == 2 and "REDIS_URL" in result.stderr
    assert SECRET not in result.stderr


def test_check_config_redacts_secrets_and_reports_unreachable_redis() -> None:
    result = run_cli(
        {
            "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:1",
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(free_port()),
            "REDIS_PASSWORD": SECRET,
            "GATEWAY_ADMIN_TOKEN": SECRET,
        },
        "check-config",
    )
    assert result.returncode == 0
    assert SECRET not in result.stdout + result.stderr
    assert "**********" in result.stdout
    assert "NOT reachable" in result.stdout


def test_ready_follows_redis_while_proxying_goes_on(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    server = RedisServer("--requirepass", SECRET).start()
    try:
        gw = gateway_factory(
            {
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(server.port),
                "REDIS_PASSWORD": SECRET,
                "GATEWAY_CACHE_ENABLED": "false",
            }
        )
        assert httpx.get(f"{gw.url}/__gateway/ready").status_code == 200
        server.stop()
        ready = httpx.get(f"{gw.url}/__gateway/ready")
        assert ready.status_code == 503
        assert SECRET not in ready.text
        assert httpx.get(f"{gw.url}/echo").status_code == 200  # proxying never stops
        server.start()
        for _ in range(50):
            if httpx.get(f"{gw.url}/__gateway/ready").status_code == 200:
                break
            import time

            time.sleep(0.1)
        else:
            raise AssertionError("readiness did not recover")
    finally:
        server.close()
    assert SECRET not in gw.logs()


def test_wrong_redis_password_is_not_ready_and_not_logged(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    with RedisServer("--requirepass", "the-right-one") as server:
        gw = gateway_factory(
            {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port), "REDIS_PASSWORD": SECRET}
        )
        assert httpx.get(f"{gw.url}/__gateway/ready").status_code == 503
        assert httpx.get(f"{gw.url}/echo").status_code == 200
    assert SECRET not in gw.logs()


def test_without_redis_it_says_the_store_is_per_process(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({})
    assert "per process" in gw.logs()
    assert httpx.get(f"{gw.url}/__gateway/ready").json()["store"] == "memory"
