"""The outermost layer: request id, route, client identity, timing, access log, last-resort
error handling, and headers other layers ask to add to the response."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import Route
from gateway.errors import GatewayError, send_error, send_problem
from gateway.http.headers import get, get_joined
from gateway.http.identity import is_trusted, resolve
from gateway.runtime import Runtime

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestInfo:
    """Per-request facts every layer reads; lives in `scope["gateway"]`."""

    __slots__ = (
        "admin",
        "cache_status",
        "client_ip",
        "extra_response_headers",
        "forwarded_for",
        "host",
        "peer_ip",
        "peer_trusted",
        "request_id",
        "route",
        "scheme",
        "started",
        "status",
    )

    def __init__(
        self, request_id: str, route: Route | None, client_ip: str, peer_ip: str,
        peer_trusted: bool, scheme: str, host: str, forwarded_for: bytes, admin: bool = True,
    ) -> None:
        self.request_id = request_id
        # May the admin endpoints answer? False on the main listener when the admin API has
        # a listener of its own (GATEWAY_ADMIN_PORT): such requests get a 404, never forwarded.
        self.admin = admin
        self.route = route
        self.client_ip = client_ip
        self.peer_ip = peer_ip
        self.peer_trusted = peer_trusted
        self.forwarded_for = forwarded_for  # the verified X-Forwarded-For chain, peer last
        self.scheme = scheme
        self.host = host
        self.started = time.perf_counter()
        self.cache_status = ""
        self.status = 0
        self.extra_response_headers: list[tuple[bytes, bytes]] = []


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        settings = runtime.settings
        self.trusted = settings.trusted_proxies
        self.admin_prefix = settings.admin_prefix.encode()
        self.access_log = settings.access_log
        self.admin_port = settings.edge.admin_port

    def _info(self, scope: Scope) -> RequestInfo:
        headers = scope["headers"]
        given = get(headers, b"x-request-id")
        request_id = (
            given.decode() if given is not None and _REQUEST_ID.fullmatch(given)
            else os.urandom(16).hex()  # 128 random bits, cheaper than uuid4()
        )
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        admin = raw_path == self.admin_prefix or raw_path.startswith(self.admin_prefix + b"/")
        if self.admin_port is not None:
            server = scope.get("server")
            on_admin = server is not None and server[1] == self.admin_port
            # The admin listener answers admin paths only; the main one never answers them.
            route = None if admin or on_admin else self.runtime.routes.match(raw_path)
            admin = admin and on_admin
        else:
            route = None if admin else self.runtime.routes.match(raw_path)
        peer = scope["client"][0] if scope.get("client") else "0.0.0.0"
        trusted = bool(self.trusted) and is_trusted(peer, self.trusted)
        scheme = scope.get("scheme", "http")
        host = get(headers, b"host") or b""
        if trusted:
            client, hops = resolve(peer, get_joined(headers, b"x-forwarded-for"), self.trusted)
            forwarded_for = ", ".join([*hops, peer]).encode()
            scheme = (get(headers, b"x-forwarded-proto") or scheme.encode()).decode("latin-1")
            host = get(headers, b"x-forwarded-host") or host
        else:
            client, forwarded_for = peer, peer.encode()
        return RequestInfo(
            request_id, route, client, peer, trusted, scheme, host.decode("latin-1"),
            forwarded_for, admin,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = self._info(scope)
        scope["gateway"] = info
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                info.status = message["status"]
                headers = [*message.get("headers", ()), *info.extra_response_headers]
                if not any(name == b"x-request-id" for name, _ in headers):  # upstream may echo it
                    headers.append((b"x-request-id", info.request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except GatewayError as exc:
            if started:
                raise
            await send_error(send_wrapper, exc, info.request_id, head=scope["method"] == "HEAD")
        except Exception:
            log.exception("unhandled error (request %s)", info.request_id)
            if started:
                raise
            await send_problem(
                send_wrapper, 500, "Internal Server Error", request_id=info.request_id
            )
        finally:
            self._record(scope, info)

    def _record(self, scope: Scope, info: RequestInfo) -> None:
        if info.route is not None:
            route = info.route.name
        else:
            path: str = scope["path"]
            admin = self.admin_prefix.decode()
            route = "admin" if path == admin or path.startswith(admin + "/") else "unrouted"
        self.runtime.metrics.responses[(route, info.status)] += 1
        if info.cache_status:
            self.runtime.metrics.cache[info.cache_status] += 1
        if self.access_log:
            entry: dict[str, Any] = {
                "ts": round(time.time(), 3), "request_id": info.request_id,
                "client": info.client_ip, "method": scope["method"],
                # the path only: query strings often carry tokens
                "path": scope["path"], "route": route, "status": info.status,
                "duration_ms": round((time.perf_counter() - info.started) * 1000, 2),
            }
            if info.cache_status:
                entry["cache"] = info.cache_status
            access_log.info(json.dumps(entry, separators=(",", ":")))


class RedisStateMiddleware:
    """Puts the worker's shared Redis client on the request: `request.state.redis`."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope.get("state")
            if state is None:
                scope["state"] = state = {}
            state["redis"] = self.runtime.redis
        await self.app(scope, receive, send)
