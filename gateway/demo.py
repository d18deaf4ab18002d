"""A small demo upstream that ships with the gateway, for the quickstart and docker-compose.

python -m gateway.demo --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_counter = itertools.count(1)


async def hello(request: Request) -> Response:
    """Cacheable for 30 s: the second request within that window is a gateway HIT."""
    return JSONResponse(
        {"message": "hello from the demo upstream", "served": next(_counter), "time": time.time()},
        headers={"Cache-Control": "public, max-age=30"},
    )


async def echo(request: Request) -> Response:
    """Never cached: shows what reached the upstream (method, path, headers, body size)."""
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": {k: v for k, v in request.headers.items()},
            "body_bytes": len(body),
        },
        headers={"Cache-Control": "no-store"},
    )


async def slow(request: Request) -> Response:
    delay = min(float(request.query_params.get("seconds", "1")), 60.0)
    await asyncio.sleep(delay)
    return JSONResponse({"slept": delay}, headers={"Cache-Control": "no-store"})


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    return Response(json.dumps({"status": code}), status_code=code, media_type="application/json")


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/hello", hello),
        Route("/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/slow", slow),
        Route("/status/{code:int}", status),
    ]
)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="gateway.demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
