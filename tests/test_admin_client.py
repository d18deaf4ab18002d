"""The CLI's admin client (httpx), with respx standing in for a running gateway."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from gateway.admin_client import admin_url, purge, ready
from gateway.cli import main
from gateway.config import Settings
from gateway.environment import settings_from_env

ENV = {"GATEWAY_UPSTREAM_URL": "http://backend:1", "GATEWAY_PORT": "9000", "GATEWAY_ADMIN_TOKEN": "tok-123"}


def settings() -> Settings:
    return settings_from_env(ENV)


def test_admin_url_defaults_to_the_local_listener() -> None:
    assert admin_url(settings(), None) == "http://127.0.0.1:9000/__gateway"
    assert admin_url(settings(), "https://gw.example/") == "https://gw.example/__gateway"


@respx.mock
def test_purge_sends_the_token_and_the_selector() -> None:
    route = respx.post("http://127.0.0.1:9000/__gateway/purge").mock(
        return_value=httpx.Response(200, json={"purged": 3, "soft": True})
    )
    status, doc = purge(settings(), prefix="/items/", soft=True)
    assert (status, doc) == (200, {"purged": 3, "soft": True})
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer tok-123"
    assert json.loads(sent.content) == {"prefix": "/items/", "soft": True}


@respx.mock
def test_purge_reports_refusals() -> None:
    respx.post("http://127.0.0.1:9000/__gateway/purge").mock(
        return_value=httpx.Response(403, json={"title": "Forbidden"})
    )
    assert purge(settings(), url="/x")[0] == 403


@respx.mock
def test_ready_reports_an_unreachable_gateway() -> None:
    respx.get("http://127.0.0.1:9000/__gateway/ready").mock(side_effect=httpx.ConnectError("no"))
    status, doc = ready(settings())
    assert status == 0 and doc["status"] == "unreachable"


@respx.mock
def test_cli_purge_exit_status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    respx.post("http://127.0.0.1:9000/__gateway/purge").mock(
        return_value=httpx.Response(200, json={"purged": 1, "soft": False})
    )
    assert main(["purge", "--url", "/a"]) == 0
    assert json.loads(capsys.readouterr().out) == {"purged": 1, "soft": False}
    with pytest.raises(SystemExit):
        main(["purge"])  # needs exactly one selector
