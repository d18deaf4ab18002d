"""Reference servers for the benchmark, run by uvicorn (`--app-dir bench`).

- `starlette_app`: the bare Starlette app the gateway is compared with: one route returning the
  1 KiB JSON body from memory. Everything the gateway adds over this is what the ratio measures.
- `raw_app`: a raw ASGI callable serving the same body; the fallback upstream when nginx is
  missing (cheaper than Starlette, so the upstream stays far faster than the gateway in front).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def make_body(size: int = 1024) -> bytes:
    """A JSON document of exactly `size` bytes (the benchmark's 1 KiB payload)."""
    skeleton = {"id": 1, "name": "benchmark", "tags": ["a", "b"], "padding": ""}
    base = len(json.dumps(skeleton, separators=(",", ":")).encode())
    skeleton["padding"] = "x" * max(0, size - base)
    body = json.dumps(skeleton, separators=(",", ":")).encode()
    assert len(body) == size
    return body


BODY = make_body()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def _payload(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


starlette_app = Starlette(routes=[Route("/{path:path}", _payload)])


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to set up
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})
