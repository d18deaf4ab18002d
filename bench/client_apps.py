"""Minimal pass-through proxies, one per upstream client, for `bench/clients.py`.

Each is the naive Starlette proxy a Python team would write first: one shared client, the
request forwarded, the body read and returned. Only the client library differs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8000")
clients: dict[str, Any] = {}


@asynccontextmanager
async def _httpx_life(app: Starlette) -> AsyncIterator[None]:
    clients["c"] = httpx.AsyncClient(base_url=UPSTREAM, limits=httpx.Limits(max_connections=100))
    yield
    await clients["c"].aclose()


async def _httpx(request: Request) -> Response:
    upstream = await clients["c"].get(request.url.path)
    return Response(upstream.content, upstream.status_code, media_type="application/json")


@asynccontextmanager
async def _aiohttp_life(app: Starlette) -> AsyncIterator[None]:
    clients["c"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    yield
    await clients["c"].close()


async def _aiohttp(request: Request) -> Response:
    async with clients["c"].get(UPSTREAM + request.url.path) as upstream:
        body = await upstream.read()
    return Response(body, upstream.status, media_type="application/json")


httpx_app = Starlette(routes=[Route("/{p:path}", _httpx)], lifespan=_httpx_life)
aiohttp_app = Starlette(routes=[Route("/{p:path}", _aiohttp)], lifespan=_aiohttp_life)
