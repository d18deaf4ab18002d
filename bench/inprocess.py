"""CPU time per request through the composed app, in-process: no server, no sockets, no load
generator, so the gateway's own Python cost per request is seen without the noise of a
loaded machine. The upstream is a real one on loopback (the demo app); the cache runs on the
embedded store.

    python bench/inprocess.py --upstream http://127.0.0.1:8000 [--limit] [--requests 50000]

Start the upstream first (`python -m gateway.demo --port 8000`). Compare two checkouts by
running the same command with PYTHONPATH pointing at each.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from gateway.app import create_app
from gateway.cli import load_settings


def _scope(path: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path.decode(),
        "raw_path": path,
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8080),
        "headers": [(b"host", b"localhost:8080"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "state": {},
    }


async def _measure(args: argparse.Namespace) -> float:
    env = {
        "GATEWAY_UPSTREAM_URL": args.upstream,
        "GATEWAY_CACHE_TTL": "60",
        "GATEWAY_ACCESS_LOG": "false",
        "GATEWAY_LOG_LEVEL": "warning",
    }
    if args.limit:
        env["GATEWAY_RATE_LIMIT"] = "1000000/second"
    app = create_app(load_settings(env))
    started: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})

    async def lifespan_send(message: dict[str, Any]) -> None:
        await started.put(message)

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, lifespan_send)
    )
    await started.get()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(3):  # the first fills the cache
        await app(_scope(args.path.encode()), receive, send)
    began = time.process_time()
    for _ in range(args.requests):
        await app(_scope(args.path.encode()), receive, send)
    spent = time.process_time() - began
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses {sorted(set(statuses))}")
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan
    return spent / args.requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--upstream", default="http://127.0.0.1:8000")
    parser.add_argument("--path", default="/hello", help="a cacheable path of the upstream")
    parser.add_argument("--limit", action="store_true", help="also apply a (never reached) rate limit")
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = [asyncio.run(_measure(args)) for _ in range(args.rounds)]
    print(
        f"{min(results):.1f} us CPU per request (best of {args.rounds}: "
        + ", ".join(f"{r:.1f}" for r in results)
        + ")"
    )


if __name__ == "__main__":
    main()
