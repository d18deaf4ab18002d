"""The outermost layer: the normalised request view, request id, client identity, timing,
access log, last-resort error handling, and headers other layers ask to add to the response.

Everything the edge decides about a request is decided here, once, before any other layer
runs (docs/security/requests.md): the Host field is validated, the path normalised and written
back to the scope, TRACE and WebSocket upgrades refused, the route matched on the normalised
path, and the header list the upstream will receive computed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.parse
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotImplementedByGateway,
    problem_body,
    send_error,
    send_problem,
)
from gateway.http.fields import combined, header
from gateway.http.headers import cache_key_fields, forward_request_headers
from gateway.http.host import normalise_host
from gateway.http.identity import is_trusted, resolve
from gateway.http.paths import PathRejected, normalise_path
from gateway.http.request import SCOPE_KEY, RequestInfo
from gateway.runtime import Runtime

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
#: An absolute-form request target (RFC 9112 §3.2.2), as uvicorn's h11 protocol passes it on
#: in `raw_path`; httptools keeps only its path (the authority is then not visible here).
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
#: Methods refused unless a route allows them: TRACE echoes the request (credentials, cookies)
#: back (cross-site tracing); TRACK is IIS's alias. CONNECT makes no sense to a reverse proxy.
_REFUSED_METHODS = frozenset({"TRACE", "TRACK", "CONNECT"})
_ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_CLOSE = [(b"connection", b"close")]
_SCHEMES = {b"http": "http", b"https": "https"}
#: The fields the edge reads, collected in one pass (`_scan`).
_SCANNED = frozenset({b"host", b"x-request-id", b"content-length", b"transfer-encoding", b"upgrade"})
Fields = dict[bytes, list[bytes]]


def _bad_request(detail: str) -> BadRequest:
    return BadRequest(detail, headers=_CLOSE)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        settings = runtime.settings
        self.trusted = settings.trusted_proxies
        self.admin_prefix = settings.admin_prefix.encode()
        self.access_log = settings.access_log
        self.admin_port = settings.edge.admin_port
        self.merge_slashes = settings.merge_slashes
        self.keep_escaped_slashes = settings.path_escaped_slashes == "keep"
        self.allowed_headers = {
            r.name: frozenset(n.encode() for n in r.forward_headers) for r in settings.routes
        }

    def _host(self, scope: Scope, fields: Fields) -> str:
        """RFC 9112 §3.2: exactly one valid Host on HTTP/1.1; at most one on HTTP/1.0."""
        values = fields.get(b"host")
        if values is not None and len(values) > 1:
            raise _bad_request("More than one Host header field.")
        if values is None:
            if scope.get("http_version", "1.1") == "1.0":
                return ""
            raise _bad_request("HTTP/1.1 requests need a Host header field.")
        host = normalise_host(values[0])
        if host is None:
            raise _bad_request("The Host header field is not a valid host[:port].")
        return host

    def _target(self, scope: Scope, host: str) -> tuple[bytes, str, bool]:
        """The normalised path, the host (an absolute-form target's authority wins, RFC 9112
        §3.2.2) and whether the path was rewritten (then also in the scope)."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        absolute_form = not raw.startswith(b"/")
        if absolute_form:
            absolute = _ABSOLUTE.fullmatch(raw)
            if absolute is None or absolute.group(1).lower() not in _SCHEMES:
                raise _bad_request("The request target must be a path or an http(s) URL.")
            authority = normalise_host(absolute.group(2))
            if authority is None:
                raise _bad_request("The request target's authority is not a valid host[:port].")
            host, raw = authority, absolute.group(3) or b"/"
            scope["raw_path"] = raw  # the path alone, as for an origin-form target
            scope["path"] = urllib.parse.unquote(raw.decode("latin-1"))
        try:
            path = normalise_path(
                raw,
                merge_slashes=self.merge_slashes,
                keep_escaped_slashes=self.keep_escaped_slashes,
            )
        except PathRejected as exc:
            raise _bad_request(str(exc)) from None
        if path is raw:
            # An absolute-form target is another spelling of its path (`http://h/__gateway/x`
            # passes an outer proxy's check of the plain `/__gateway` prefix): a rewrite too.
            return path, host, absolute_form
        scope["raw_path"] = path
        scope["path"] = urllib.parse.unquote(path.decode("ascii"))
        return path, host, True

    def _info(self, scope: Scope, fields: Fields, request_id: str, started: float) -> RequestInfo:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        host = self._host(scope, fields)
        path, host, rewritten = self._target(scope, host)
        prefix = self.admin_prefix
        admin = path == prefix or (path.startswith(prefix) and path[len(prefix)] == 0x2F)
        if admin and rewritten:
            # An outer proxy may guard the admin API by its plain spelling; another spelling
            # that normalises into it is a bypass attempt, not a client to serve.
            raise _bad_request("The admin API answers only its canonical path.")
        if self.admin_port is not None:
            server = scope.get("server")
            on_admin = server is not None and server[1] == self.admin_port
            # The admin listener answers admin paths only; the main one never answers them
            # (both get a 404 from the proxy, which has no route for them).
            route = None if admin or on_admin else self.runtime.routes.match(path)
            admin = admin and on_admin
        else:
            route = None if admin else self.runtime.routes.match(path)
        method: str = scope["method"]
        if method in _REFUSED_METHODS and (method == "CONNECT" or route is None or not route.allow_trace):
            raise MethodNotAllowed(f"{method} is not allowed here.", headers=[(b"allow", _ALLOW)])
        upgrade = fields.get(b"upgrade")
        if upgrade is not None and b"websocket" in upgrade[0].lower():
            raise NotImplementedByGateway("WebSocket connections are not supported yet.")
        peer = scope["client"][0] if scope.get("client") else "0.0.0.0"
        trusted = bool(self.trusted) and is_trusted(peer, self.trusted)
        scheme: str = scope.get("scheme", "http")
        if trusted:
            client, hops = resolve(peer, combined(headers, b"x-forwarded-for"), self.trusted)
            forwarded_for = ", ".join([*hops, peer]).encode()
            proto = header(headers, b"x-forwarded-proto")
            if proto is not None:
                scheme = _SCHEMES.get(proto.strip().lower(), scheme)
            forwarded_host = header(headers, b"x-forwarded-host")
            if forwarded_host is not None:
                host = normalise_host(forwarded_host.strip()) or host
        else:
            client, forwarded_for = peer, peer.encode()
        info = RequestInfo(
            request_id=request_id,
            route=route,
            admin=admin,
            path=path,
            client_ip=client,
            peer_ip=peer,
            peer_trusted=trusted,
            scheme=scheme,
            host=host,
            forwarded_for=forwarded_for,
            headers=headers,
            body_length=_body_length(fields),
            started=started,
        )
        if route is not None:
            info.headers = scope["headers"] = forward_request_headers(
                headers,
                trusted_peer=trusted,
                forwarded_for=forwarded_for,
                scheme=scheme.encode(),
                host=host.encode(),
                request_id=request_id.encode(),
                allowed=self.allowed_headers[route.name],
            )
            if trusted or self.allowed_headers[route.name]:
                info.key_fields = cache_key_fields(info.headers, self.allowed_headers[route.name])
        return info

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._refuse_websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        fields = _scan(scope["headers"])
        request_id = _request_id(fields)
        try:
            info = self._info(scope, fields, request_id, started_at)
        except GatewayError as exc:
            # Refused at the edge: nothing below runs, nothing is forwarded.
            raw = scope.get("raw_path") or b""
            info = RequestInfo(
                request_id=request_id,
                route=None,
                path=raw,
                client_ip="",
                peer_ip="",
                peer_trusted=False,
                scheme="http",
                host="",
                forwarded_for=b"",
                headers=[],
                started=started_at,
            )
            info.status = exc.status
            await send_error(_with_request_id(send, info), exc, request_id, head=scope["method"] == "HEAD")
            self._record(scope, info, label="rejected")
            return
        scope[SCOPE_KEY] = info
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
            await send_problem(send_wrapper, 500, "Internal Server Error", request_id=info.request_id)
        finally:
            self._record(scope, info)

    async def _refuse_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """uvicorn hands `Upgrade: websocket` requests over as websocket scopes. Until the
        gateway relays WebSockets, the handshake is denied with a 501 problem (through the
        `websocket.http.response` extension where the server has it, else a close: 403)."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        request_id = _request_id(_scan(scope.get("headers", [])))
        if "websocket.http.response" in scope.get("extensions", {}):
            body = problem_body(
                501, "Not Implemented", "WebSocket connections are not supported yet.", request_id
            )
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 501,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"cache-control", b"no-store"),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
        self.runtime.metrics.responses[("websocket", 501)] += 1
        if self.access_log:
            access_log.info(
                json.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "request_id": request_id,
                        "client": scope["client"][0] if scope.get("client") else "",
                        "method": "GET",
                        "path": scope.get("path", ""),
                        "route": "websocket",
                        "status": 501,
                    },
                    separators=(",", ":"),
                )
            )

    def _record(self, scope: Scope, info: RequestInfo, label: str = "") -> None:
        if label:
            route = label
        elif info.route is not None:
            route = info.route.name
        else:
            path = info.path
            prefix = self.admin_prefix
            admin = path == prefix or path.startswith(prefix + b"/")
            route = "admin" if admin else "unrouted"
        self.runtime.metrics.responses[(route, info.status)] += 1
        if info.cache_status:
            self.runtime.metrics.cache[info.cache_status] += 1
        if self.access_log:
            entry: dict[str, Any] = {
                "ts": round(time.time(), 3),
                "request_id": info.request_id,
                "client": info.client_ip,
                "method": scope["method"],
                # the path only: query strings often carry tokens
                "path": scope["path"],
                "route": route,
                "status": info.status,
                "duration_ms": round((time.perf_counter() - info.started) * 1000, 2),
            }
            if info.cache_status:
                entry["cache"] = info.cache_status
            access_log.info(json.dumps(entry, separators=(",", ":")))


def _scan(headers: list[tuple[bytes, bytes]]) -> Fields:
    """The values of the fields the edge checks, in one pass over the header list."""
    fields: Fields = {}
    for key, value in headers:
        if key in _SCANNED:
            found = fields.get(key)
            if found is None:
                fields[key] = [value]
            else:
                found.append(value)
    return fields


def _request_id(fields: Fields) -> str:
    given = fields.get(b"x-request-id")
    if given is not None and _REQUEST_ID.fullmatch(given[0]):
        return given[0].decode()
    return os.urandom(16).hex()  # 128 random bits, cheaper than uuid4()


def _body_length(fields: Fields) -> int | None:
    """The declared body size: Content-Length, 0 without one, None when chunked."""
    length = fields.get(b"content-length")
    if length is not None:
        if not length[0].isdigit():
            raise _bad_request("Invalid Content-Length.")
        return int(length[0])
    return None if b"transfer-encoding" in fields else 0


def _with_request_id(send: Send, info: RequestInfo) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", info.request_id.encode())]
        await send(message)

    return wrapped


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
