"""The dependency internals the gateway relies on, one test each (docs/dependencies.md lists them).

These are the places where the code reaches below a library's documented surface, or relies on a
detail its documentation does not promise. A dependency update that moves one of them must fail
here, with a message that names the internal and the gateway code to review, rather than
somewhere deep in an end-to-end test (or not at all). They run against the locked versions
(`scripts/test`) and against the floors in pyproject.toml (`scripts/test --lowest`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import hiredis
import httpx
import limits
import pytest
import uvicorn
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError, ResponseError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from yarl import URL

from gateway.app import GatewayApp
from gateway.edge.protocol import EdgeProtocol

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def pack(args: tuple[object, ...]) -> bytes:
    """hiredis.pack_command; its stub types the argument as a 1-tuple (gateway/autopipeline.py
    silences the same stub gap)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def moved(library: str, internal: str, review: str) -> str:
    """The failure message: which internal changed and which gateway code depends on it."""
    return f"{library} internal changed: {internal}. Review {review} (see docs/dependencies.md)."


_WRITERS: dict[asyncio.Server, set[asyncio.StreamWriter]] = {}


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    writers: set[asyncio.StreamWriter] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    _WRITERS[server] = writers
    return server, server.sockets[0].getsockname()[1]


async def stop(server: asyncio.Server) -> None:
    """Close the server and every connection it accepted, before the test's loop closes (an
    open transport collected later is a ResourceWarning, an error in this suite)."""
    server.close()
    for writer in _WRITERS.pop(server, set()):
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)
    await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


# ---- redis-py and hiredis: gateway/autopipeline.py (AutoPipeline._run) ----------------------------


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[BlockingConnectionPool]:
    pool = BlockingConnectionPool.from_url(
        redis_url, max_connections=2, timeout=1.0, socket_timeout=0.2, protocol=2
    )
    yield pool
    await pool.aclose()


async def test_redis_pool_get_connection_needs_no_command_name(pool: BlockingConnectionPool) -> None:
    params = list(inspect.signature(pool.get_connection).parameters.values())
    required = [
        p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    assert not required, moved(
        "redis-py",
        f"BlockingConnectionPool.get_connection() now requires {required} "
        "(redis-py 5.2.x required command_name)",
        "gateway/autopipeline.py AutoPipeline._run",
    )
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        assert isinstance(conn, Connection), moved(
            "redis-py", "get_connection() no longer returns an asyncio Connection", "gateway/autopipeline.py"
        )
    finally:
        await pool.release(conn)


async def test_redis_connection_sends_hiredis_packed_bytes_and_reads_one_reply_each(
    pool: BlockingConnectionPool,
) -> None:
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command([pack(("SET", "gw:i", 7)), pack(("GET", "gw:i"))])
        replies = [await conn.read_response(timeout=math.inf) for _ in range(2)]
    finally:
        await pool.release(conn)
    assert replies == [b"OK", b"7"], moved(
        "redis-py",
        "Connection.send_packed_command(list of bytes) / read_response() per reply",
        "gateway/autopipeline.py AutoPipeline._run",
    )


async def test_redis_read_response_with_infinite_timeout_outlasts_socket_timeout(
    pool: BlockingConnectionPool,
) -> None:
    """The pipeline's own deadline bounds a batch; math.inf must mean "no per-read timer"."""
    assert "timeout" in inspect.signature(Connection.read_response).parameters, moved(
        "redis-py", "Connection.read_response() lost its timeout parameter", "gateway/autopipeline.py"
    )
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        # BLPOP answers after 0.5 s; the pool's socket_timeout is 0.2 s.
        await conn.send_packed_command([pack(("BLPOP", "gw:empty", "0.5"))])
        started = time.monotonic()
        reply = await conn.read_response(timeout=math.inf)
    finally:
        await pool.release(conn)
    assert reply is None and time.monotonic() - started >= 0.4, moved(
        "redis-py",
        "read_response(timeout=math.inf) no longer waits past socket_timeout",
        "gateway/autopipeline.py AutoPipeline._run",
    )


async def test_redis_error_reply_raises_from_read_response_and_noscript_is_a_response_error(
    pool: BlockingConnectionPool,
) -> None:
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command([pack(("EVALSHA", "0" * 40, 0))])
        with pytest.raises(ResponseError) as caught:
            await conn.read_response(timeout=math.inf)
    finally:
        await pool.release(conn)
    assert isinstance(caught.value, NoScriptError), moved(
        "redis-py",
        "a NOSCRIPT reply is no longer raised as NoScriptError (a ResponseError)",
        "gateway/autopipeline.py (script loading on first use)",
    )


async def test_redis_disconnect_takes_nowait(pool: BlockingConnectionPool) -> None:
    assert "nowait" in inspect.signature(Connection.disconnect).parameters, moved(
        "redis-py",
        "Connection.disconnect(nowait=...) is gone",
        "gateway/autopipeline.py (dropping a half-read connection)",
    )
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    await conn.disconnect(nowait=True)
    await pool.release(conn)
    assert not conn.is_connected


def test_redis_response_callbacks_are_keyed_by_upper_case_command(redis_url: str) -> None:
    callbacks = Redis.from_url(redis_url, protocol=2).response_callbacks
    assert {"SET", "PING", "SCAN"} <= set(callbacks), moved(
        "redis-py",
        "Redis.response_callbacks is no longer keyed by upper-case command names",
        "gateway/autopipeline.py (reply shapes of auto-pipelined commands)",
    )
    assert callbacks["SET"](b"OK") is True, moved(
        "redis-py", "the SET response callback no longer turns OK into True", "gateway/autopipeline.py"
    )


def test_hiredis_packs_exactly_as_redis_py() -> None:
    args = ("SET", b"gw:k\xff", 1, 1.5, "caf\u00e9")
    assert pack(args) == b"".join(Connection().pack_command(*args)), moved(
        "hiredis",
        "pack_command() output differs from redis-py's packer",
        "gateway/autopipeline.py AutoPipeline._run",
    )


def test_redis_cluster_pipeline_execute_takes_raise_on_error() -> None:
    params = inspect.signature(ClusterPipeline.execute).parameters
    assert "raise_on_error" in params, moved(
        "redis-py",
        "ClusterPipeline.execute(raise_on_error=...) is gone",
        "gateway/autopipeline.py AutoPipeline._run (cluster path)",
    )


# ---- Starlette: gateway/app.py (GatewayApp.build_middleware_stack) ----------------------------


class _Layer:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _stack(app: Starlette) -> list[type]:
    layers, layer = [], app.build_middleware_stack()
    while not isinstance(layer, Router):
        layers.append(type(layer))
        layer = layer.app  # type: ignore[attr-defined]
    return layers


def test_starlette_default_stack_is_what_gateway_app_mirrors() -> None:
    """GatewayApp rebuilds Starlette's stack minus ServerErrorMiddleware; a new layer in
    Starlette's own stack would be silently dropped by that override."""
    stack = _stack(Starlette(middleware=[Middleware(_Layer)]))
    assert stack == [ServerErrorMiddleware, _Layer, ExceptionMiddleware], moved(
        "Starlette",
        f"Starlette.build_middleware_stack() now builds {stack}",
        "gateway/app.py GatewayApp.build_middleware_stack",
    )


def test_gateway_app_is_a_starlette_with_the_override() -> None:
    assert issubclass(GatewayApp, Starlette)
    assert "build_middleware_stack" in vars(GatewayApp)


def test_starlette_builds_its_stack_through_build_middleware_stack() -> None:
    """GatewayApp replaces the whole stack by overriding build_middleware_stack() (and reads
    `router` and `debug`); Starlette must still build through that method."""
    from starlette.testclient import TestClient

    built: list[ASGIApp] = []

    class Probe(Starlette):
        def build_middleware_stack(self) -> ASGIApp:
            assert isinstance(self.router, Router) and isinstance(self.debug, bool)
            stack = super().build_middleware_stack()
            built.append(stack)
            return stack

    with TestClient(Probe()) as client:
        client.get("/")
    assert built, moved(
        "Starlette",
        "Starlette no longer calls build_middleware_stack() to build its stack",
        "gateway/app.py GatewayApp.build_middleware_stack",
    )


# ---- aiohttp and yarl: gateway/upstream.py ----------------------------------------------------


async def test_aiohttp_response_exposes_raw_headers_and_streams_undecoded_body() -> None:
    body = gzip.compress(b"hello" * 100)
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_head(reader))
        writer.write(
            b"HTTP/1.1 200 OK\r\nX-Mixed-Case: v\xc3\xa9\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with aiohttp.ClientSession(
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    ) as session:
        response = await session.request(
            "GET",
            URL(f"http://127.0.0.1:{port}/a%2Fb?q=%20", encoded=True),
            headers=[],
            allow_redirects=False,
            compress=None,
            chunked=None,
            expect100=False,
        )
        raw = response.raw_headers
        received = b""
        while chunk := await response.content.readany():
            received += chunk
        at_eof = response.content.at_eof()
        response.release()
    await stop(server)
    assert (b"X-Mixed-Case", b"v\xc3\xa9") in raw, moved(
        "aiohttp",
        "ClientResponse.raw_headers no longer holds the received (bytes, bytes) pairs",
        "gateway/upstream.py _AiohttpResponse",
    )
    assert received == body and at_eof, moved(
        "aiohttp",
        "response.content.readany()/at_eof() or auto_decompress=False changed",
        "gateway/upstream.py _AiohttpResponse.read",
    )
    assert seen[0].startswith(b"GET /a%2Fb?q=%20 HTTP/1.1\r\n"), moved(
        "yarl/aiohttp",
        "URL(..., encoded=True) no longer sends the target byte for byte",
        "gateway/upstream.py AiohttpUpstream.request",
    )
    assert b"user-agent" not in seen[0].lower() and b"accept" not in seen[0].lower(), moved(
        "aiohttp",
        "skip_auto_headers no longer suppresses the headers aiohttp invents",
        "gateway/upstream.py _SKIP_AUTO",
    )


# ---- httpx: gateway/upstream_verbatim.py ---------------------------------------------------------


async def test_httpx_transport_sends_header_bytes_verbatim_and_streams_raw() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_head(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nRAW!")
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    transport = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
    url = httpx.URL(f"http://127.0.0.1:{port}").copy_with(raw_path=b"/a%2Fb?x=%20")
    request = httpx.Request(
        "GET",
        url,
        headers=[(b"x-latin", b"caf\xe9")],
        extensions={"timeout": {"connect": 5, "read": 5, "write": 5, "pool": 5}},
    )
    response = await transport.handle_async_request(request)
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream), moved(
        "httpx",
        "transport responses no longer carry an AsyncByteStream",
        "gateway/upstream_verbatim.py _VerbatimResponse",
    )
    received = b"".join([chunk async for chunk in stream])
    await response.aclose()
    await transport.aclose()
    await stop(server)
    assert seen[0].startswith(b"GET /a%2Fb?x=%20 HTTP/1.1\r\n"), moved(
        "httpx",
        "URL.copy_with(raw_path=...) no longer sends the target byte for byte",
        "gateway/upstream_verbatim.py VerbatimUpstream.request",
    )
    assert b"\r\nx-latin: caf\xe9\r\n" in seen[0], moved(
        "httpx", "header values are no longer written as the given bytes", "gateway/upstream_verbatim.py"
    )
    assert received == b"RAW!" and (b"Content-Encoding", b"gzip") in response.headers.raw, moved(
        "httpx", "the transport stream or Headers.raw changed", "gateway/upstream_verbatim.py"
    )


async def test_httpx_per_request_timeout_extension_is_honoured() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await reader.read()  # never answer; the client's read timeout closes the connection
        writer.close()

    server, port = await serve(silent)
    transport = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
    request = httpx.Request(
        "GET",
        f"http://127.0.0.1:{port}/",
        extensions={"timeout": {"connect": 5, "read": 0.2, "write": 5, "pool": 5}},
    )
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await transport.handle_async_request(request)
    elapsed = time.monotonic() - started
    await transport.aclose()
    await stop(server)
    assert elapsed < 3, moved(
        "httpx/httpcore",
        "request.extensions['timeout'] keys connect/read/write/pool ignored",
        "gateway/upstream_verbatim.py VerbatimUpstream",
    )


# ---- uvicorn: gateway/cli.py (serve) and the edge protocol subclasses -------------------------


def _gateway_config(**overrides: object) -> uvicorn.Config:
    """The keyword arguments gateway/cli.py serve() passes to uvicorn.run."""
    kwargs: dict[str, object] = dict(
        factory=True,
        host="127.0.0.1",
        port=0,
        workers=1,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        access_log=False,
        log_config=None,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )
    kwargs.update(overrides)
    app = kwargs.pop("app", "gateway.cli:app_factory")
    return uvicorn.Config(app, **kwargs)  # type: ignore[arg-type]


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    """Config.load() imports the app; this one needs no gateway configuration."""


def test_uvicorn_config_accepts_the_gateway_serve_options() -> None:
    run_params = inspect.signature(uvicorn.run).parameters
    missing = {
        "factory",
        "server_header",
        "date_header",
        "proxy_headers",
        "log_config",
        "lifespan",
        "loop",
        "http",
        "timeout_graceful_shutdown",
    } - set(run_params)
    assert not missing, moved("uvicorn", f"uvicorn.run() lost {sorted(missing)}", "gateway/cli.py serve")
    config = _gateway_config()
    assert (config.server_header, config.date_header, config.proxy_headers) == (False,) * 3


@pytest.mark.parametrize(("name", "protocol"), [("httptools", HttpToolsProtocol), ("h11", H11Protocol)])
def test_uvicorn_http_names_load_the_protocol_classes(name: str, protocol: type) -> None:
    config = _gateway_config(app=_app, factory=False, http=name, loop="asyncio")
    config.load()
    assert config.http_protocol_class is protocol, moved(
        "uvicorn",
        f"http={name!r} no longer loads {protocol.__qualname__}",
        "gateway/cli.py serve (GATEWAY_HTTP_PARSER) and any protocol subclass",
    )


def test_uvicorn_http_accepts_a_protocol_subclass() -> None:
    """An edge protocol subclass is handed to uvicorn as the `http` class itself."""

    class Edge(HttpToolsProtocol):
        pass

    config = _gateway_config(app=_app, factory=False, http=Edge, loop="asyncio")
    config.load()
    assert config.http_protocol_class is Edge, moved(
        "uvicorn",
        "Config(http=<Protocol subclass>) is no longer used as given",
        "the uvicorn protocol subclasses",
    )


# ---- limits: gateway/ratelimit/policy.py (parse_limits) ---------------------------------------


def test_limits_parse_many_items_expose_amount_and_expiry() -> None:
    items = limits.parse_many("10/second;1000/hour")
    assert [(int(i.amount), int(i.get_expiry())) for i in items] == [(10, 1), (1000, 3600)], moved(
        "limits",
        "parse_many() items no longer expose amount and get_expiry()",
        "gateway/ratelimit/policy.py parse_limits",
    )
    with pytest.raises(ValueError):
        limits.parse_many("ten per sometimes")


# ---- uvicorn's httptools protocol: gateway/edge/protocol.py (EdgeProtocol) -------------------


def test_httptools_protocol_has_what_edge_protocol_overrides_and_reads() -> None:
    """EdgeProtocol feeds llhttp itself and extends these callbacks; a rename in uvicorn would
    silently bypass the front end's limits (the security suite would catch the behaviour, this
    names the cause)."""
    for name in (
        "data_received",
        "connection_made",
        "connection_lost",
        "eof_received",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_message_complete",
        "on_response_complete",
        "handle_websocket_upgrade",
        "_should_upgrade",
        "_unsupported_upgrade_warning",
    ):
        assert callable(getattr(HttpToolsProtocol, name, None)), moved(
            "uvicorn", f"HttpToolsProtocol.{name} is gone or renamed", "gateway/edge/protocol.py"
        )
    assert issubclass(EdgeProtocol, HttpToolsProtocol)
    source = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    for attribute in ("self.url", "self.scope", "self.parser"):
        assert attribute in source, moved(
            "uvicorn", f"on_headers_complete no longer uses {attribute}", "gateway/edge/protocol.py"
        )
