"""End-to-end fixtures: a recording upstream and gateway subprocesses in front of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.support.gateway_process import GatewayProcess
from tests.support.upstream import RecordingUpstream, UpstreamServer


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[RecordingUpstream]:
    server = UpstreamServer()
    app = server.start()
    yield app
    server.stop()


@pytest.fixture
def upstream(upstream_server: RecordingUpstream) -> RecordingUpstream:
    upstream_server.reset()
    return upstream_server


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def gateway_factory(upstream: RecordingUpstream) -> Iterator[GatewayFactory]:
    """Start gateways in front of the recording upstream; all are stopped after the test."""
    started: list[GatewayProcess] = []

    def start(env: Mapping[str, str] | None = None, wait: bool = True) -> GatewayProcess:
        full = {"GATEWAY_UPSTREAM_URL": upstream.url, "GATEWAY_ACCESS_LOG": "true"}
        full.update(env or {})
        gw = GatewayProcess(full)
        started.append(gw)
        return gw.start(wait=wait)

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"GATEWAY_CACHE_ENABLED": "false"})
