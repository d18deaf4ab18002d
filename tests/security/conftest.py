"""A gateway process in front of a socket-level recording upstream (route `/`) and a canary
upstream (route `/canary`) that must never receive anything."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

# The end-to-end fixtures (a recording upstream, gateway processes), for the Redis/limit tests.
from tests.e2e.conftest import gateway_factory, upstream, upstream_server
from tests.security.upstreams import Canary, RawRecorder
from tests.support.gateway_process import GatewayProcess

pytestmark = pytest.mark.e2e

StartGateway = Callable[..., GatewayProcess]
__all__ = ["gateway_factory", "upstream", "upstream_server"]


@pytest.fixture(scope="session")
def recorder_server() -> Iterator[RawRecorder]:
    server = RawRecorder()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def canary_server() -> Iterator[Canary]:
    server = Canary()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def recorder(recorder_server: RawRecorder) -> RawRecorder:
    recorder_server.reset()
    return recorder_server


@pytest.fixture
def canary(canary_server: Canary) -> Iterator[Canary]:
    yield canary_server
    assert canary_server.accepted == 0 and not canary_server.received, "the canary was reached"


@pytest.fixture(scope="session")
def routes_file(recorder_server: RawRecorder, canary_server: Canary) -> Iterator[Path]:
    path = Path(tempfile.mkstemp(prefix="gw-routes-", suffix=".yaml")[1])
    path.write_text(
        "routes:\n"
        f"  - prefix: /canary\n    upstream: {canary_server.url}\n"
        f"  - prefix: /\n    upstream: {recorder_server.url}\n"
    )
    yield path
    path.unlink(missing_ok=True)


def gateway_env(routes_file: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    full = {
        "GATEWAY_ROUTES_FILE": str(routes_file),
        "GATEWAY_CACHE_ENABLED": "false",
        "GATEWAY_ACCESS_LOG": "false",
        "GATEWAY_HEADER_TIMEOUT": "5",
    }
    full.update(env or {})
    return full


@pytest.fixture
def start_gateway(routes_file: Path, recorder: RawRecorder, canary: Canary) -> Iterator[StartGateway]:
    """Start gateways with extra settings; all are stopped after the test."""
    started: list[GatewayProcess] = []

    def start(env: Mapping[str, str] | None = None) -> GatewayProcess:
        gateway = GatewayProcess(gateway_env(routes_file, env))
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def edge_gateway(routes_file: Path) -> Iterator[GatewayProcess]:
    """One gateway with the default front-end settings, shared by a module's tests."""
    with GatewayProcess(gateway_env(routes_file)) as gateway:
        yield gateway
