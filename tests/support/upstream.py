"""A real upstream HTTP server on loopback (uvicorn in a thread) that records what it received.

Endpoints (any method):
  /echo...            JSON: method, raw path, query, headers, body length and sha256
  /big?size=N         N bytes streamed in 64 KiB chunks
  /stream?chunks=N&interval=S   N chunks, S seconds apart; records when it was abandoned
  /slow?seconds=S     answers after S seconds
  /status/N           status N
  /cache/...?cc=...   counts hits per path; Cache-Control from `cc`, extra headers from `h`
                      (repeatable `h=Name:value`); `delay=S` answers after S seconds;
                      `size=N` pads the body to N bytes (`length=1` adds Content-Length);
                      `fail_after=N` answers 500 from the (N+1)th hit of the path on; an
                      `If-None-Match` equal to the answer's `ETag` gets a 304; request headers
                      `X-Answer-Status: N` and `X-Answer-Header: Name:value` set the status and
                      add a field (for unsafe methods whose target must stay the cached URL)
  anything else       200 "ok"
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn

from tests.support.redis_server import free_port


@dataclass
class Seen:
    method: str
    raw_path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body_len: int = 0

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class RecordingUpstream:
    requests: list[Seen] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    abandoned: list[int] = field(default_factory=list)
    port: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.hits.clear()
        self.abandoned.clear()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        params = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        digest, size = hashlib.sha256(), 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        seen = Seen(scope["method"], scope["raw_path"], scope["query_string"], list(scope["headers"]), size)
        self.requests.append(seen)
        self.hits[path] += 1

        async def answer(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        if path.startswith("/echo"):
            doc = {
                "method": seen.method,
                "raw_path": seen.raw_path.decode("latin-1"),
                "query": seen.query.decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in seen.headers],
                "body_len": size,
                "sha256": digest.hexdigest(),
            }
            await answer(
                200,
                json.dumps(doc).encode(),
                [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
            )
        elif path == "/big":
            total = int(params.get("size", "0"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/octet-stream"),
                        (b"content-length", str(total).encode()),
                    ],
                }
            )
            chunk = b"x" * 65536
            while total > 0:
                piece = chunk[: min(total, len(chunk))]
                total -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": total > 0})
        elif path == "/stream":
            count, interval = int(params.get("chunks", "10")), float(params.get("interval", "0.1"))
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
            )
            gone = asyncio.ensure_future(receive())  # uvicorn reports a closed peer here only
            for i in range(count):
                await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
                await asyncio.sleep(interval)
                if gone.done():
                    self.abandoned.append(i)
                    return
            gone.cancel()
            await send({"type": "http.response.body", "body": b""})
        elif path == "/slow":
            await asyncio.sleep(float(params.get("seconds", "1")))
            await answer(200, b"slow", [(b"content-type", b"text/plain")])
        elif path.startswith("/status/"):
            await answer(int(path.rsplit("/", 1)[1]), b"status", [(b"content-type", b"text/plain")])
        elif path.startswith("/cache/"):
            await self._cache(path, params, seen, answer)
        else:
            await answer(
                200,
                b"ok",
                [
                    (b"content-type", b"text/plain"),
                    (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
                    (b"server", b"recording-upstream"),
                ],
            )

    async def _cache(self, path: str, params: dict[str, str], seen: Seen, answer: Any) -> None:
        count = self.hits[path]
        if "delay" in params:
            await asyncio.sleep(float(params["delay"]))
        headers = [(b"content-type", b"text/plain")]
        if "cc" in params:
            headers.append((b"cache-control", params["cc"].encode()))
        fields = parse_qs(seen.query.decode()).get("h", [])
        extra = seen.header(b"x-answer-header")
        if extra is not None:
            fields.append(extra.decode("latin-1"))
        for item in fields:
            name, _, value = item.partition(":")
            headers.append((name.strip().lower().encode(), value.strip().encode()))
        status = int(seen.header(b"x-answer-status") or b"200")
        if "fail_after" in params and count > int(params["fail_after"]):
            status = 500
        etag = next((value for name, value in headers if name == b"etag"), None)
        if status == 200 and etag is not None and seen.header(b"if-none-match") == etag:
            await answer(304, b"", [item for item in headers if item[0] != b"content-type"])
            return
        body = f"{path} #{count}".encode()
        if "size" in params:
            body = body.ljust(int(params["size"]), b".")
        if params.get("length") == "1":
            headers.append((b"content-length", str(len(body)).encode()))
        await answer(status, body, headers)


class UpstreamServer:
    """Runs a RecordingUpstream under uvicorn in a background thread."""

    def __init__(self) -> None:
        self.app = RecordingUpstream(port=free_port())
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.app.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            date_header=False,
            server_header=False,
            http="h11",
        )  # h11 accepts any method token
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> RecordingUpstream:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("upstream did not start")
            time.sleep(0.01)
        return self.app

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
