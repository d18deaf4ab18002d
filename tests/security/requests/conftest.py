"""Fixtures for the edge's security tests: a real gateway process with a routes file, in front
of a recording upstream (the route that should serve) and a canary upstream (must see nothing).

Routes (no catch-all, so an unclaimed path must be a 404 and reach nobody):
  /limited   -> recording upstream, 1 request per minute per X-Tenant value, no cache
  /api       -> recording upstream, strip_prefix, cached (ttl 60 s)
  /public    -> canary upstream + base path /base, strip_prefix: what it receives must stay
                under /base; bypass spellings aimed elsewhere must not reach it
  /trace     -> recording upstream, allow_trace, forward_headers: [X-Forwarded-Prefix]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.support.gateway_process import GatewayProcess
from tests.support.raw_http import raw_request
from tests.support.redis_server import free_port
from tests.support.upstream import RecordingUpstream, Seen

pytestmark = pytest.mark.e2e


class ReflectingUpstream(RecordingUpstream):
    """A recording upstream whose `/reflect...` answers echo every request field into a
    cacheable body (as link builders echo X-Forwarded-Host); `?vary=Name` adds a Vary."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or "/reflect" not in scope["path"]:
            await super().__call__(scope, receive, send)
            return
        while (await receive()).get("more_body", False):
            pass
        self.requests.append(
            Seen(scope["method"], scope["raw_path"], scope["query_string"], list(scope["headers"]))
        )
        self.hits[scope["path"]] += 1
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"public, max-age=60")]
        query = scope["query_string"].decode()
        if query.startswith("vary="):
            headers.append((b"vary", query[5:].encode()))
        doc = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = json.dumps({"n": self.hits[scope["path"]], "headers": doc}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Server:
    """An upstream app under uvicorn (h11: it takes any method, TRACE included) in a thread."""

    def __init__(self, app: RecordingUpstream) -> None:
        self.app = app
        app.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=app.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            http="h11",
            ws="none",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RecordingUpstream:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("upstream did not start")
            time.sleep(0.01)
        return self.app

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def recording_server() -> Iterator[RecordingUpstream]:
    with Server(ReflectingUpstream()) as app:
        yield app


@pytest.fixture(scope="session")
def canary_server() -> Iterator[RecordingUpstream]:
    with Server(RecordingUpstream()) as app:
        yield app


@pytest.fixture
def recording(recording_server: RecordingUpstream) -> RecordingUpstream:
    recording_server.reset()
    return recording_server


@pytest.fixture
def canary(canary_server: RecordingUpstream) -> RecordingUpstream:
    canary_server.reset()
    return canary_server


def routes_file(directory: Path, recording: RecordingUpstream, canary: RecordingUpstream) -> Path:
    path = directory / "routes.yaml"
    path.write_text(f"""
routes:
  - name: limited
    prefix: /limited
    upstream: {recording.url}
    cache: false
    rate_limit: {{limits: "1/minute", key: "header:X-Tenant"}}
  - name: api
    prefix: /api
    upstream: {recording.url}
    strip_prefix: true
    cache: {{enabled: true, ttl: 60}}
  - name: public
    prefix: /public
    upstream: {canary.url}/base
    strip_prefix: true
    cache: false
  - name: trace
    prefix: /trace
    upstream: {recording.url}
    cache: false
    allow_trace: true
    forward_headers: [X-Forwarded-Prefix]
""")
    return path


def start_gateway(
    tmp: Path, recording: RecordingUpstream, canary: RecordingUpstream, **env: str
) -> GatewayProcess:
    settings = {
        "GATEWAY_ROUTES_FILE": str(routes_file(tmp, recording, canary)),
        "GATEWAY_ACCESS_LOG": "false",
        "GATEWAY_ADMIN_TOKEN": "admin-secret",
        **env,
    }
    return GatewayProcess(settings).start()


@pytest.fixture(scope="module")
def edge_process(
    tmp_path_factory: pytest.TempPathFactory,
    recording_server: RecordingUpstream,
    canary_server: RecordingUpstream,
) -> Iterator[GatewayProcess]:
    """One gateway per test module, default edge settings (httptools parser)."""
    gw = start_gateway(tmp_path_factory.mktemp("edge"), recording_server, canary_server)
    yield gw
    gw.stop()


@pytest.fixture
def edge(
    edge_process: GatewayProcess, recording: RecordingUpstream, canary: RecordingUpstream
) -> GatewayProcess:
    """The module's gateway with both upstreams' records cleared."""
    return edge_process


def request(
    port: int,
    target: bytes,
    *,
    method: bytes = b"GET",
    headers: bytes = b"Host: edge.test\r\n",
    version: bytes = b"HTTP/1.1",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request of exact bytes (`headers` are raw CRLF-terminated lines); Connection: close."""
    status, fields, body = raw_request(
        port,
        method + b" " + target + b" " + version + b"\r\n" + headers + b"Connection: close\r\n\r\n",
    )
    return status, dict(fields), body
